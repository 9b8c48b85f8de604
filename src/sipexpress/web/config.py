"""The web interface's settings, from ser.cfg options or ``serweb``'s flags.

==========================  ===============================================
option                      meaning
==========================  ===============================================
``web_listen``              ``host:port`` of the web interface; unset = off
                            (``ser`` starts it in-process when set)
``web_jsonrpc``             how the web app reaches ser: ``http://h:p/`` or
                            ``unix:/path``; default: ser's own
                            ``jsonrpc_http`` / ``jsonrpc_socket``
``web_db_url``              the database (default: the global ``db_url``)
``web_domain``              default SIP domain for log-in and sign-up
``web_admins``              ``user@domain`` list (comma/space separated);
                            members of group ``admin`` in ``grp`` and
                            ``admin_privileges`` ``is_admin`` are admins too
``web_secret``              session signing key; else ``web_secret_file``
                            (default ``serweb.secret``, created 0600)
``web_smtp``                ``host[:port]`` for sign-up mail; unset = the
                            mail is written to the log
``web_mail_from``           From: of those mails
``web_base_url``            absolute URL prefix for links in mails
``web_outbound``            next hop for IM/click-to-dial (``sip:h:p``)
``web_sample_interval``     seconds between statistics samples (10)
``web_signup``              ``yes``: anyone may sign up (``/signup``); off by
                            default, so a new server has no open registration
``web_metrics_token``       ``/metrics`` wants ``Authorization: Bearer``
                            this token; unset = open (for Prometheus)
``web_certificate``         PEM certificate: the interface is HTTPS
``web_private_key``         its key (default: in the certificate file)
``web_jsonrpc_ca``          CAs trusted when ``web_jsonrpc`` is ``https:``
                            (default ``tls_ca_list``, then the system's)
==========================  ===============================================
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sipexpress.db.engine import default_db_url
from sipexpress.mgmt.token import configured_token

DEFAULT_LISTEN = "127.0.0.1:8080"


def _s(options: Mapping[str, Any], name: str) -> str | None:
    v = options.get(name)
    if v is None or v == "":
        return None
    return str(v)


def parse_listen(value: str) -> tuple[str, int]:
    value = value.strip()
    if value in ("1", "yes", "on", "true"):
        value = DEFAULT_LISTEN
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest.lstrip(":") or 8080)
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 8080
    return host or "127.0.0.1", int(port)


def load_secret(path: str) -> str:
    """The key in ``path``; a new random one is written (mode 0600) if the
    file does not exist yet, so sessions survive restarts."""
    try:
        with open(path) as f:
            key = f.read().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


@dataclass(slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    db_url: str = field(default_factory=lambda: default_db_url())
    jsonrpc: str = "http://127.0.0.1:5080/"
    jsonrpc_secret: str | None = None
    domain: str = "localhost"
    admins: frozenset[str] = frozenset()
    secret: str = ""
    smtp: str | None = None
    mail_from: str = "serweb@localhost"
    base_url: str | None = None
    outbound: str | None = None
    sample_interval: float = 10.0
    signup: bool = False
    metrics_token: str | None = None
    certificate: str | None = None  # HTTPS when set (PEM)
    private_key: str | None = None
    jsonrpc_ca: str | None = None  # CAs trusted for an https:// web_jsonrpc
    login_attempts: int = 5  # failed log-ins per window, per address and per user
    login_window: float = 300.0
    page_size: int = 25
    im_length: int = 1300  # serweb's im_length

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WebConfig:
        host, port = parse_listen(_s(options, "web_listen") or DEFAULT_LISTEN)
        rpc = _s(options, "web_jsonrpc")
        if rpc is None:
            sock = _s(options, "jsonrpc_socket")
            http = _s(options, "jsonrpc_http")
            if sock:
                rpc = "unix:" + sock
            elif http and http not in ("0", "no", "off"):
                addr = "127.0.0.1:5080" if http in ("1", "yes", "on", "True") else http
                h, _, p = addr.rpartition(":")
                if h in ("0.0.0.0", "", "::", "[::]"):
                    h = "127.0.0.1"
                scheme = "https" if _s(options, "jsonrpc_certificate") else "http"
                rpc = f"{scheme}://{h}:{p}/"
            else:
                rpc = "http://127.0.0.1:5080/"
        secret = _s(options, "web_secret") or load_secret(_s(options, "web_secret_file") or "serweb.secret")
        admins = frozenset(a.lower() for a in re.split(r"[\s,]+", _s(options, "web_admins") or "") if a)
        return cls(
            host=host,
            port=port,
            db_url=_s(options, "web_db_url") or default_db_url(dict(options)),
            jsonrpc=rpc,
            jsonrpc_secret=_s(options, "web_jsonrpc_secret") or configured_token(options),
            domain=_s(options, "web_domain") or "localhost",
            admins=admins,
            secret=secret,
            smtp=_s(options, "web_smtp"),
            mail_from=_s(options, "web_mail_from") or "serweb@localhost",
            base_url=_s(options, "web_base_url"),
            outbound=_s(options, "web_outbound"),
            sample_interval=float(options.get("web_sample_interval") or 10.0),
            signup=str(options.get("web_signup")).lower() in ("1", "yes", "true", "on", "enable"),
            metrics_token=_s(options, "web_metrics_token"),
            certificate=_s(options, "web_certificate"),
            private_key=_s(options, "web_private_key"),
            jsonrpc_ca=_s(options, "web_jsonrpc_ca") or _s(options, "tls_ca_list"),
        )
