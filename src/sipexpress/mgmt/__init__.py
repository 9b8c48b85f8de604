"""Management interfaces: one command registry, several transports.

ser's runner (:mod:`sipexpress.core.runner`) builds a :class:`Manager`
once the modules have started, and stops it on shutdown.  A manager
gathers SER's built-in commands and every loaded module's
``Module.commands()`` into one :class:`CommandRegistry`, then starts the
transports the global options ask for:

==========================  ===============================================
option                      meaning
==========================  ===============================================
``fifo``                    request FIFO path (SER); unset/"" = no FIFO
``fifo_dir``                reply FIFO directory, default ``/tmp/``
``fifo_mode``               FIFO permissions, default ``0660``
                            (aliases ``sock_mode``, ``file_mode``)
``fifo_user``/``fifo_group``  chown of the FIFO (aliases ``sock_user``/``sock_group``)
``fifo_timeout``            seconds a half-written request may stay
                            unfinished before it is ended/dropped (0.5)
``jsonrpc_http``            ``host:port`` of JSON-RPC over HTTP; unset = off;
                            ``yes`` = ``127.0.0.1:5080``
``jsonrpc_socket``          path of the JSON-RPC Unix stream socket; unset = off
``jsonrpc_socket_mode``     its permissions, default ``fifo_mode`` (``0660``);
                            owner ``fifo_user``/``fifo_group`` as the FIFO
``jsonrpc_secret``          the token (``Authorization: Bearer``/``X-Auth-Token``)
``jsonrpc_secret_file``     file holding the token, created 0600 if missing
                            (neither: a token only the built-in web UI knows)
``jsonrpc_user``/``jsonrpc_password``  HTTP basic credentials
``jsonrpc_allow_origin``    space/comma separated Origins allowed (default none)
``jsonrpc_metrics_auth``    ``GET /metrics`` on ``jsonrpc_http`` asks for the
                            same credentials as JSON-RPC (default no:
                            Prometheus scrapes without them)
``mgmt_allow_kill``         register the ``kill`` command (default no)
==========================  ===============================================

A non-local ``jsonrpc_http`` address requires a configured token or basic
credentials.  ``Manager`` can also be used on its own (tests, the web UI):
``Manager(options, modules)``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.exposition import generate_latest

from sipexpress.core.registry import MgmtCommand, MgmtReply, Module, Statistic
from sipexpress.core.stats import StatsRegistry
from sipexpress.mgmt.builtin import builtin_commands, provisioning_command
from sipexpress.mgmt.fifo import FifoError, FifoServer
from sipexpress.mgmt.jsonrpc import Dispatcher, HttpServer, JsonRpcError, UnixServer, parse_address
from sipexpress.mgmt.kamailio import add_kamailio_names
from sipexpress.mgmt.metrics import registry_for
from sipexpress.mgmt.registry import CommandRegistry, render_fifo
from sipexpress.mgmt.statistics import statistics_commands
from sipexpress.mgmt.token import TokenError, server_token

__all__ = [
    "CommandRegistry",
    "FifoError",
    "FifoServer",
    "JsonRpcError",
    "Manager",
    "MgmtStartError",
    "current",
    "render_fifo",
    "start",
    "stop",
]

log = logging.getLogger("sipexpress.mgmt")

DEFAULT_HTTP = "127.0.0.1:5080"
_ALIASES = {
    "fifo_mode": ("fifo_mode", "sock_mode", "file_mode"),
    "fifo_user": ("fifo_user", "sock_user"),
    "fifo_group": ("fifo_group", "sock_group"),
}


class MgmtStartError(Exception):
    """A management interface could not start (FIFO path taken, bad address...)."""


def _opt(options: Mapping[str, Any], name: str, default: Any = None) -> Any:
    for n in _ALIASES.get(name, (name,)):
        v = options.get(n)
        if v is not None and v != "":
            return v
    return default


def _mode(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise MgmtStartError(f"invalid permission mode {value!r} (octal, e.g. 0660)") from None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "yes", "true", "on", "enable")
    return bool(value)


class Manager:
    """The registry plus the transports configured by ``options``."""

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        modules: Iterable[Module] = (),
        extra_commands: Iterable[MgmtCommand] = (),
        processes: Callable[[], list[tuple[int, str]]] | None = None,
        statistics: StatsRegistry | None = None,
    ) -> None:
        self.options: Mapping[str, Any] = options if options is not None else {}
        self._processes = processes
        self.started = int(time.time())
        self.registry = CommandRegistry()
        for cmd in builtin_commands(self, allow_kill=_flag(self.options.get("mgmt_allow_kill", 0))):
            self.registry.register(cmd)
        modules = list(modules)
        # the server's registry (``core.statistics``); on its own, the modules'
        self.statistics = statistics if statistics is not None else StatsRegistry(lambda: modules)
        registry = self.registry
        self.statistics.add_group(
            "mgmt",
            (Statistic("commands", lambda: registry.calls, "management commands run (all transports)"),),
        )
        # between SER's built-ins and the modules' commands: `which` keeps both ends as SER listed them
        for cmd in statistics_commands(self.statistics):
            self.registry.register(cmd)
        for mod in modules:
            for cmd in mod.commands():
                self.registry.register(cmd)
        self.prometheus = registry_for(self.statistics.snapshot)
        for cmd in extra_commands:
            self.registry.register(cmd)
        self.registry.register(provisioning_command(self.options), listed=False)
        add_kamailio_names(self.registry)
        self.dispatcher = Dispatcher(self.registry)
        self.fifo: FifoServer | None = None
        self.http: HttpServer | None = None
        self.unix: UnixServer | None = None
        self.rpc_token: str | None = None  # what HTTP clients must send (also the built-in web UI)

    async def call(self, name: str, params: list[str] | None = None) -> MgmtReply:
        """Run a command in-process (web UI, tests)."""
        return await self.registry.call(name, params or [])

    def metrics(self) -> bytes:
        """The Prometheus text exposition of every statistic."""
        return generate_latest(self.prometheus)

    def processes(self) -> list[tuple[int, str]]:
        """The ``ps`` rows: the server's (``processes``), else this
        manager's own."""
        if self._processes is not None:
            return self._processes()
        pid = os.getpid()
        rows = [(pid, "attendant")]
        if self.fifo is not None:
            rows.append((pid, "fifo server"))
        if self.unix is not None:
            rows.append((pid, "unix domain socket server"))
        if self.http is not None:
            rows.append((pid, f"jsonrpc http server @ {self.http.host}:{self.http.port}"))
        return rows

    async def start(self) -> None:
        o = self.options
        self.started = int(time.time())
        try:
            path = _opt(o, "fifo")
            if path:
                reply_dir = str(_opt(o, "fifo_dir", "/tmp/"))
                if not reply_dir.endswith("/"):
                    reply_dir += "/"
                self.fifo = FifoServer(
                    str(path),
                    self.registry,
                    reply_dir=reply_dir,
                    mode=_mode(_opt(o, "fifo_mode"), 0o660),
                    user=_opt(o, "fifo_user"),
                    group=_opt(o, "fifo_group"),
                    request_timeout=float(_opt(o, "fifo_timeout", 0.5)),
                )
                await self.fifo.start()
            http = _opt(o, "jsonrpc_http")
            if http and http not in (0, "0", "no", "off"):
                addr = DEFAULT_HTTP if http in (1, "1", "yes", "on", True) else str(http)
                host, port = parse_address(addr)
                secret, secret_file = _opt(o, "jsonrpc_secret"), _opt(o, "jsonrpc_secret_file")
                if secret:
                    self.rpc_token = str(secret)
                elif secret_file:
                    self.rpc_token = server_token(str(secret_file))
                else:
                    self.rpc_token = secrets.token_hex(32)
                origins = str(_opt(o, "jsonrpc_allow_origin", ""))
                self.http = HttpServer(
                    self.dispatcher,
                    host,
                    port,
                    token=self.rpc_token,
                    explicit=bool(secret or secret_file),
                    user=_opt(o, "jsonrpc_user"),
                    password=_opt(o, "jsonrpc_password"),
                    allow_origins=frozenset(x for x in re.split(r"[\s,]+", origins) if x),
                    metrics=self.metrics,
                    metrics_auth=_flag(_opt(o, "jsonrpc_metrics_auth", 0)),
                    certificate=_opt(o, "jsonrpc_certificate"),
                    private_key=_opt(o, "jsonrpc_private_key"),
                )
                await self.http.start()
            sock = _opt(o, "jsonrpc_socket")
            if sock:
                self.unix = UnixServer(
                    self.dispatcher,
                    str(sock),
                    _mode(_opt(o, "jsonrpc_socket_mode") or _opt(o, "fifo_mode"), 0o660),
                    user=_opt(o, "fifo_user"),
                    group=_opt(o, "fifo_group"),
                )
                await self.unix.start()
        except (FifoError, JsonRpcError, TokenError, OSError) as e:
            await self.stop()
            raise MgmtStartError(str(e)) from e

    async def stop(self) -> None:
        for srv in (self.http, self.unix, self.fifo):
            if srv is not None:
                try:
                    await srv.stop()
                except Exception:
                    log.exception("stopping a management listener failed")
        self.fifo = self.http = self.unix = None
