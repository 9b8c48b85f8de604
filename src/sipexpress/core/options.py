"""Global options (ser.cfg §3) with SER 0.9 defaults, and ``listen=`` parsing.

``Core.options`` is a plain ``dict[str, Any]``: the script compiler, a Python
routing script's ``OPTIONS`` and the ``ser`` command line all write into it;
:func:`normalize_options` maps SER's synonyms (``sock_mode`` →
``fifo_mode`` …) and turns ``listen``/``alias`` into lists of
:class:`SocketSpec`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sipexpress.core.context import Proto

SIP_PORT = 5060
SIPS_PORT = 5061
#: SER's BUF_SIZE: the largest message accepted (``max_len`` in scripts).
BUF_SIZE = 65535

DEFAULTS: dict[str, Any] = {
    "debug": 2,  # L_NOTICE
    "fork": True,
    "log_stderror": False,
    "log_facility": "LOG_DAEMON",
    # sipexpress extension: "json" writes JSON lines (sipexpress.core.logging)
    "log_format": "text",
    "listen": [],  # empty: all interfaces
    "alias": [],
    "port": SIP_PORT,
    "children": len(os.sched_getaffinity(0)),  # one worker process per core
    "check_via": False,
    "dns": False,
    "rev_dns": False,
    "syn_branch": True,
    "sip_warning": False,  # Kamailio's default: the Warning header tells internals to anyone
    "server_signature": True,
    "reply_to_via": False,
    "memlog": 4,
    "maxbuffer": 262144,
    "fifo": None,
    "fifo_dir": "/tmp/",
    "fifo_mode": 0o660,
    "fifo_user": None,
    "fifo_group": None,
    "fifo_db_url": None,
    # the default database of every module whose db_url is empty (sipexpress.db.engine)
    "db_url": None,
    # sipexpress management extensions (documented in sipexpress.mgmt)
    "fifo_timeout": 0.5,
    "jsonrpc_http": None,
    "jsonrpc_socket": None,
    "jsonrpc_socket_mode": None,  # None: fifo_mode
    "jsonrpc_secret": None,
    "jsonrpc_secret_file": None,
    "jsonrpc_allow_origin": None,
    "jsonrpc_user": None,
    "jsonrpc_password": None,
    "jsonrpc_metrics_auth": False,
    # HTTPS for JSON-RPC over HTTP (PEM files; unset: plain HTTP)
    "jsonrpc_certificate": None,
    "jsonrpc_private_key": None,
    "mgmt_allow_kill": False,
    # sipexpress web interface (documented in sipexpress.web.config)
    "web_listen": None,
    "web_jsonrpc": None,
    "web_jsonrpc_secret": None,
    "web_db_url": None,
    "web_domain": None,
    "web_admins": None,
    "web_secret": None,
    "web_secret_file": None,
    "web_smtp": None,
    "web_mail_from": None,
    "web_base_url": None,
    "web_outbound": None,
    "web_sample_interval": None,
    "web_signup": False,
    "web_metrics_token": None,
    # HTTPS for the web interface (PEM files; unset: plain HTTP), and the
    # CAs it trusts when it calls JSON-RPC over HTTPS (default tls_ca_list)
    "web_certificate": None,
    "web_private_key": None,
    "web_jsonrpc_ca": None,
    "unix_sock": None,
    "unix_sock_children": 1,
    "unix_tx_timeout": 500,
    "user": None,
    "group": None,
    "chroot": None,
    "workdir": None,
    "mhomed": False,
    "disable_tcp": False,
    "tcp_children": 1,
    "tcp_accept_aliases": False,
    "tcp_send_timeout": 10,
    "tcp_connect_timeout": 10,
    # seconds a TCP connection may stay idle before it is closed (SER's
    # TCP_CON_TIMEOUT / tcp_connection_lifetime)
    "tcp_connection_lifetime": 120,
    # connection limits (sipexpress.core.transport.TcpLimits)
    "tcp_max_connections": 2048,
    "tcp_max_connections_per_source": 128,
    "tcp_msg_read_timeout": 20,
    # TLS (sipexpress.core.tls): listen=tls: sockets need a certificate;
    # connections we open check the server's certificate unless tls_verify=no
    "disable_tls": False,
    "tls_port_no": 5061,
    "tls_certificate": None,
    "tls_private_key": None,
    "tls_ca_list": None,
    "tls_verify": True,
    "tls_require_certificate": False,
    "tls_method": "TLSv1.2+",
    "tls_handshake_timeout": 10,
    # SIP over WebSocket (listen=ws:/wss:, sipexpress.core.transport): the
    # Origin an upgrade must carry (a regular expression; unset: any), and
    # the seconds of idleness after which a connection is pinged (and
    # closed when the ping is not answered within as long again)
    "ws_origin": None,
    "ws_keepalive_interval": 60,
    "advertised_address": None,
    "advertised_port": None,
    "disable_core_dump": False,
    "open_files_limit": None,
    "mcast_loopback": False,
    "mcast_ttl": None,
    "statistics": None,
    # sipexpress extension: the largest SIP message accepted on any transport
    "max_msg_size": BUF_SIZE,
}

SYNONYMS: dict[str, str] = {
    "sock_mode": "fifo_mode",
    "file_mode": "fifo_mode",
    "sock_user": "fifo_user",
    "sock_group": "fifo_group",
    "uid": "user",
    "gid": "group",
    "wdir": "workdir",
    "tlslog": "tls_log",
    "log_stderr": "log_stderror",
    "mem_log": "memlog",
}

_BOOL_OPTIONS = {k for k, v in DEFAULTS.items() if isinstance(v, bool)}
_INT_OPTIONS = {k for k, v in DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)}
_BOOL_WORDS = {"yes": True, "true": True, "on": True, "enable": True, "no": False, "false": False}
_BOOL_WORDS.update({"off": False, "disable": False})


class OptionError(ValueError):
    """An option value that cannot be used."""


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """One ``listen=``/``alias=``/``-l`` entry: ``[proto:]addr[:port]``.

    ``proto`` None means every protocol (``*`` or omitted); ``port`` 0 means
    "not given" (listen: the ``port`` option; alias: any port)."""

    proto: Proto | None
    host: str
    port: int = 0

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{host}:{self.port}" if self.port else host
        return f"{self.proto.name.lower()}:{text}" if self.proto else text


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


_PROTOS = {"udp": Proto.UDP, "tcp": Proto.TCP, "tls": Proto.TLS, "ws": Proto.WS, "wss": Proto.WSS, "*": None}


def parse_socket_spec(text: str) -> SocketSpec:
    """Parse ``[proto:]addr[:port]``; IPv6 as ``[::1]``, ``[::1]:5060`` or
    bare ``::1`` (no port then).  Port ``*`` = any (0)."""
    s = text.strip()
    if not s:
        raise OptionError("empty address")
    proto: Proto | None = None
    head, sep, rest = s.partition(":")
    if sep and head.lower() in _PROTOS and not s.startswith("["):
        proto = _PROTOS[head.lower()]
        s = rest
    port_text = ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise OptionError(f"bad address {text!r}: missing ']'")
        host = s[1:end]
        tail = s[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise OptionError(f"bad address {text!r}")
            port_text = tail[1:]
    elif s.count(":") > 1:
        host = s  # bare IPv6, no port
    else:
        host, _, port_text = s.partition(":")
    if not host:
        raise OptionError(f"bad address {text!r}: no host")
    port = 0
    if port_text and port_text != "*":
        try:
            port = int(port_text)
        except ValueError:
            raise OptionError(f"bad port in {text!r}") from None
        if not 0 <= port <= 65535:
            raise OptionError(f"port out of range in {text!r}")
    if host == "*":
        host = "0.0.0.0"
    if ":" in host and not is_ip(host):
        raise OptionError(f"bad IPv6 address in {text!r}")
    return SocketSpec(proto, host.lower(), port)


def parse_socket_list(value: Any) -> list[SocketSpec]:
    """``listen``/``alias`` values: a string (space/comma separated), a
    :class:`SocketSpec`, a ``(proto, host, port)`` tuple or a list of any."""
    if value is None:
        return []
    if isinstance(value, SocketSpec):
        return [value]
    if isinstance(value, str):
        return [parse_socket_spec(p) for p in value.replace(",", " ").split()]
    if isinstance(value, tuple) and len(value) == 3 and not isinstance(value[0], (tuple, list)):
        proto, host, port = value
        if isinstance(proto, str):
            proto = _PROTOS[proto.lower()]
        return [SocketSpec(proto, str(host).strip("[]").lower(), int(port or 0))]
    if isinstance(value, Iterable):
        out: list[SocketSpec] = []
        for item in value:
            out.extend(parse_socket_list(item))
        return out
    raise OptionError(f"bad address list {value!r}")


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _BOOL_WORDS:
            return _BOOL_WORDS[word]
        try:
            return int(word, 0) != 0
        except ValueError:
            pass
    raise OptionError(f"option '{name}' expects yes/no, got {value!r}")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) > 1 and text.startswith("0") and text[1:].isdigit():
                return int(text, 8)  # SER: 0660 is octal
            return int(text, 0)
        except ValueError:
            pass
    raise OptionError(f"option '{name}' expects a number, got {value!r}")


def normalize_options(values: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return ``base`` (default: :data:`DEFAULTS`) updated with ``values``,
    synonyms mapped and types checked.  ``listen``/``alias`` accumulate
    (they are repeatable in ser.cfg); unknown names are kept as given."""
    out: dict[str, Any] = dict(DEFAULTS if base is None else base)
    out["listen"] = list(out.get("listen") or [])
    out["alias"] = list(out.get("alias") or [])
    for raw_name, value in values.items():
        name = SYNONYMS.get(raw_name, raw_name)
        if name in ("listen", "alias"):
            out[name] = out[name] + parse_socket_list(value)
        elif name in _BOOL_OPTIONS:
            out[name] = _to_bool(name, value)
        elif name in _INT_OPTIONS or name in ("fifo_mode",):
            out[name] = _to_int(name, value)
        elif name in ("fifo",) and value in ("", None):
            out[name] = None
        else:
            out[name] = value
    return out
