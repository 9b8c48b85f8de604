"""SER's core management commands (``register_core_fifo`` in fifo_server.c).

``print uptime version pwd arg which ps``, our ``log_tail`` (the server's
recent log lines) and, only when the global option
``mgmt_allow_kill`` is set, ``kill`` (SIGTERM to the server's process group:
anybody who may write the FIFO could otherwise stop the server).

Reply texts are SER 0.9's, byte for byte (fifo.md §5); ``data`` carries the
same information structured for JSON-RPC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

from sipexpress import __version__
from sipexpress.core import logging as serlog
from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtHandler, MgmtReply
from sipexpress.mgmt.registry import CommandRegistry

PRINT_MAX = 255  # SER's print buffer: MAX_PRINT_TEXT 256 including the NUL
KILL_DELAY = 0.5  # leave time for the reply to reach its FIFO before SIGTERM
LOG_TAIL_DEFAULT = 100
#: log_tail's level names: SER's (``debug=`` levels) and the stdlib's
LOG_LEVELS = {
    "alert": serlog.ALERT,
    "crit": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "notice": serlog.NOTICE,
    "info": logging.INFO,
    "dbg": logging.DEBUG,
    "debug": logging.DEBUG,
}

VERSION_TEXT = f"Sip EXpress router (sipexpress {__version__} ({platform.machine()}/{sys.platform}))"

log = logging.getLogger("sipexpress.mgmt")


class BuiltinHost(Protocol):
    """What the built-ins need from the manager that serves them."""

    registry: CommandRegistry
    started: int  # time() when management started (SER: FIFO creation)

    def processes(self) -> list[tuple[int, str]]: ...


def ctime(t: float) -> str:
    """C's ``ctime()`` including its newline: ``Fri Dec  6 17:56:10 2002\\n``."""
    return time.ctime(t) + "\n"


def builtin_commands(host: BuiltinHost, allow_kill: bool = False) -> list[MgmtCommand]:
    """The core commands in SER's registration order."""

    async def print_(params: list[str]) -> MgmtReply:
        text = params[0] if params else ""
        if len(text) > PRINT_MAX:
            raise MgmtError(500, "print_fifo_cmd: too big text", eol=False)
        return MgmtReply(data=text, text=text + "\n")

    async def uptime(params: list[str]) -> MgmtReply:
        now = int(time.time())
        up = now - host.started
        text = f"Now: {ctime(now)}Up Since: {ctime(host.started)}Up time: {up} [sec]\n"
        data = {"now": now, "up_since": host.started, "uptime": up}
        return MgmtReply(data=data, text=text)

    async def version(params: list[str]) -> MgmtReply:
        return MgmtReply(
            data={"server": VERSION_TEXT, "version": __version__}, text=f"Server: {VERSION_TEXT}\r\n"
        )

    async def pwd(params: list[str]) -> MgmtReply:
        try:
            cwd = os.getcwd()
        except OSError:
            raise MgmtError(500, "getcwd failed") from None
        return MgmtReply(data=cwd, text=cwd + "\n")

    async def arg(params: list[str]) -> MgmtReply:
        argv = list(sys.argv)
        return MgmtReply(data=argv, text="".join(a + "\n" for a in argv))

    async def which(params: list[str]) -> MgmtReply:
        names = host.registry.names()
        return MgmtReply(data=names, text="".join(n + "\n" for n in names))

    async def ps(params: list[str]) -> MgmtReply:
        rows = host.processes()
        data = [{"idx": i, "pid": pid, "description": d} for i, (pid, d) in enumerate(rows)]
        return MgmtReply(data=data, text="".join(f"{i}\t{pid}\t{d}\n" for i, (pid, d) in enumerate(rows)))

    async def kill(params: list[str]) -> MgmtReply:
        log.log(25, "management command kill: SIGTERM to the process group")
        asyncio.get_running_loop().call_later(KILL_DELAY, _terminate_group)
        return MgmtReply(200, "killing now...", data="killing now...", eol=False)

    cmds: list[tuple[str, MgmtHandler, str]] = [
        ("print", print_, "echo the parameter line"),
        ("uptime", uptime, "server's current time, start time and running time"),
        ("version", version, "server version"),
        ("pwd", pwd, "server's working directory"),
        ("arg", arg, "server's command line"),
        ("which", which, "list of available management commands"),
        ("ps", ps, "server processes: index, pid, description"),
    ]
    if allow_kill:
        cmds.append(("kill", kill, "terminate the server (SIGTERM to its process group)"))
    # ours after all of SER's, so that `which` ends as SER's did
    cmds.append(("log_tail", log_tail, "the server's recent log lines (a ring of the last 1000)"))
    docs = {"print": "text", "log_tail": "[lines (100)] [lowest level: err|warn|notice|info|dbg] [after seq]"}
    return [MgmtCommand(name, h, doc=doc, params_doc=docs.get(name, "")) for name, h, doc in cmds]


async def log_tail(params: list[str]) -> MgmtReply:
    """``log_tail [lines] [level] [after]``: the last lines of the ring,
    oldest first; ``after`` (a sequence number) lets a reader poll for new
    lines only."""
    count_s = params[0].strip() if params else ""
    level_s = params[1].strip().lower() if len(params) > 1 else ""
    after_s = params[2].strip() if len(params) > 2 else ""
    if count_s and not count_s.isdigit():
        raise MgmtError(400, "log_tail: the number of lines must be a number")
    if level_s and level_s not in LOG_LEVELS:
        raise MgmtError(400, f"log_tail: unknown level '{level_s}' (one of {', '.join(LOG_LEVELS)})")
    if after_s and not after_s.isdigit():
        raise MgmtError(400, "log_tail: 'after' must be a sequence number")
    count = min(int(count_s), serlog.RING_LINES) if count_s else LOG_TAIL_DEFAULT
    lines = serlog.recent.tail(count, LOG_LEVELS.get(level_s, 0), int(after_s or 0))
    data = [
        {"seq": x.seq, "time": x.time, "level": x.level, "logger": x.logger, "message": x.message}
        for x in lines
    ]
    text = "".join(
        f"{x.seq} {time.strftime('%b %d %H:%M:%S', time.localtime(x.time))} {x.level}: {x.logger}: {_one_line(x.message)}\n"
        for x in lines
    )
    return MgmtReply(data=data, text=text)


def _one_line(text: str) -> str:
    """A message as one FIFO line (a newline would end the reply early for
    a line-by-line reader)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _terminate_group() -> None:
    """SER's ``kill(0, SIGTERM)``: the whole process group, so exec children
    and helpers go too."""
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except OSError:
        os.kill(os.getpid(), signal.SIGTERM)


def provisioning_command(options: Mapping[str, Any]) -> MgmtCommand:
    """``provisioning``: the database and default domain this server uses,
    so that ``serctl`` provisions users where the server will look for them
    (a relative SQLite path is made absolute against the server's working
    directory, not the caller's)."""

    async def provisioning(params: list[str]) -> MgmtReply:
        from sipexpress.db.engine import default_db_url, sqlite_file

        url = str(options.get("db_url") or options.get("web_db_url") or default_db_url(dict(options)))
        path = sqlite_file(url)
        if path is not None and not os.path.isabs(path):
            url = "sqlite:///" + os.path.join(os.getcwd(), path)
        domain = options.get("web_domain") or None
        data = {"db_url": url, "domain": domain}
        return MgmtReply(data=data, text=f"db_url {url}\ndomain {domain or ''}\n")

    return MgmtCommand("provisioning", provisioning, "the database and default domain of the server")
