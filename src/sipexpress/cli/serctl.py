"""``serctl`` — SER's control utility (``scripts/sc``), re-created.

Every command of 0.9's sc with the same syntax and output shapes
(serctl.md): FIFO commands print the server's reply with a leading
``200 ok``/``200 OK`` line removed, as sc's ``filter_fl`` did; database
listings (which sc printed as mysql tables) are Rich tables.  Additions:
``rpc`` (JSON-RPC), ``db create|migrate``, ``--json`` for machine-readable
output, and exit codes: 0 success, 1 a command or user error (non-2xx reply,
unknown user ...), 2 the server is not reachable.

Environment as sc: ``SER_FIFO``, ``SIP_DOMAIN``, ``WATCH_PERIOD``,
``ACL_GROUPS``, ``PID_FILE``; plus ``SER_DB_URL``, ``SER_RPC_URL``,
``SER_RPC_SOCKET``, ``SER_RPC_SECRET``, ``SER_FIFO_DIR``.

The database is the server's: ``--db-url``/``SER_DB_URL``, else ``db_url``
(or ``web_db_url``) of the ``-f`` config, else what the running server
answers to ``provisioning`` over JSON-RPC — never a file in the current
directory.  The default domain likewise: ``--domain``/``SIP_DOMAIN``, the
config's ``web_domain``, the server's, else the one domain of the database.

``--json`` prints the data: a server command's structured result (over
JSON-RPC), a listing's rows, a change's outcome.  Questions (``ul show``
without a user) are only asked on a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from sipexpress import __version__
from sipexpress.core.registry import ConfigError
from sipexpress.mgmt.client import (
    FifoTimeout,
    MgmtClientError,
    RpcError,
    ServerNotRunning,
    fifo_request,
    rpc_call,
    split_reply,
)
from sipexpress.mgmt.token import TokenError, read_token
from sipexpress.uac.flows import CONTROLLER, click_to_dial, instant_message

T = TypeVar("T")

DEFAULT_ACL_GROUPS = "local ld int voicemail free-pstn prepaid"
URI_RE = re.compile(r"^sip(s)?:([a-zA-Z0-9_]+@)?.*\..*")
OK_RE = re.compile(r"^200 ok", re.IGNORECASE)
STATUS_RE = re.compile(r"^[0-9]{3} ")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Ctx:
    fifo: str
    reply_dir: str
    timeout: float
    domain: str | None
    db_url: str | None
    config: str | None
    json: bool
    rpc_url: str
    rpc_socket: str | None
    rpc_secret: str | None
    pid_file: str
    ser_bin: str | None
    provisioning: dict[str, Any] | None = None
    creating_db: bool = False


def fail(msg: str, code: int = 1) -> NoReturn:
    err.print(msg, markup=False)
    sys.exit(code)


def emit(text: str) -> None:
    """Print server text unchanged (no Rich markup, no added newline)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def say(c: Ctx, text: str, data: Any) -> None:
    """A command's outcome: ``text`` for people, ``data`` with ``--json``."""
    emit(json.dumps(data, default=str, ensure_ascii=False) + "\n" if c.json else text)


def _cfg_value(path: str, name: str) -> str | None:
    """``name = "value"`` (or unquoted) or ``modparam("…", "name", "value")``
    from a ser.cfg, comments ignored."""
    from sipexpress.script.parser import strip_comments

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = strip_comments(f.read(), path)
    except OSError:
        fail(f"cannot read config {path}")
    except ConfigError as e:
        fail(str(e))
    m = re.search(rf'^\s*{name}\s*=\s*(?:"([^"]*)"|([^\s;"]+))', text, re.MULTILINE)
    if m:
        return m.group(1) if m.group(1) is not None else m.group(2)
    m = re.search(rf'modparam\s*\(\s*"[^"]*"\s*,\s*"{name}"\s*,\s*"([^"]*)"', text)
    return m.group(1) if m else None


# -- FIFO ------------------------------------------------------------------


def fifo(c: Ctx, cmd: str, params: list[str] | None = None) -> tuple[int, str]:
    """sc's ``fifo_cmd``: (code, whole reply).  Exit 2 when the server is
    not reachable."""
    try:
        text = fifo_request(c.fifo, cmd, params or [], reply_dir=c.reply_dir, timeout=c.timeout)
    except ServerNotRunning as e:
        err.print(str(e), markup=False)
        fail(f"Make sure you have line fifo={c.fifo} in your config and ser is running", 2)
    except FifoTimeout as e:
        fail(str(e), 2)
    except OSError as e:
        fail(f"error opening read fifo in {c.reply_dir}: {e.strerror}", 2)
    return split_reply(text)[0], text


def filter_fl(text: str) -> str:
    """sc's ``filter_fl`` (awk): drop line 1 if it matches ``^200 ok`` (any
    case), print the other lines, each ended by a newline."""
    lines = text.splitlines()
    if lines and OK_RE.match(lines[0]):
        lines = lines[1:]
    return "".join(ln + "\n" for ln in lines)


def print_fifo(c: Ctx, cmd: str, params: list[str]) -> int:
    if c.json:
        return print_rpc(c, cmd, params)
    code, text = fifo(c, cmd, params)
    emit(filter_fl(text))
    return 0 if 200 <= code < 300 else 1


def rpc(c: Ctx, method: str, params: list[str]) -> Any:
    """A command's structured result over JSON-RPC (the FIFO carries only
    text).  Raises RpcError for a command error, MgmtClientError when the
    server cannot be reached."""
    return rpc_call(
        method, params, url=c.rpc_url, unix_path=c.rpc_socket, timeout=c.timeout, secret=c.rpc_secret
    )


def print_rpc(c: Ctx, method: str, params: list[str]) -> int:
    try:
        result = rpc(c, method, params)
    except RpcError as e:
        emit(json.dumps({"error": {"code": e.code, "message": e.message, "data": e.data}}) + "\n")
        return 1
    except MgmtClientError as e:
        fail(f"{e} (--json asks the server over JSON-RPC: --rpc-url, --rpc-socket or -f ser.cfg)", 2)
    emit(json.dumps(result, default=str, ensure_ascii=False) + "\n")
    return 0


# -- users and the database --------------------------------------------------


def set_user(c: Ctx, user: str) -> tuple[str, str]:
    """USER or USER@DOMAIN, checked as serweb checks them; the default
    domain is looked up only when USER has none."""
    from sipexpress.web.security import check_domain, check_username

    name, at, domain = user.partition("@")
    if not at:
        domain = default_domain(c)
    problem = check_username(name) or check_domain(domain)
    if problem:
        fail(f"error: '{user}': {problem}")
    return name, domain


def check_new_password(password: str) -> None:
    from sipexpress.web.security import check_password

    problem = check_password(password)
    if problem:
        fail(f"error: {problem}")


def server_provisioning(c: Ctx) -> dict[str, Any] | None:
    """The running server's database and default domain (JSON-RPC
    ``provisioning``), None when no server answers."""
    if c.provisioning is None:
        try:
            answer = rpc(c, "provisioning", [])
        except MgmtClientError:
            answer = None
        c.provisioning = answer if isinstance(answer, dict) else {}
    return c.provisioning or None


def default_domain(c: Ctx) -> str:
    if c.domain:
        return c.domain
    if c.config:
        domain = _cfg_value(c.config, "web_domain")
        if domain:
            return domain
    srv = server_provisioning(c)
    if srv and srv.get("domain"):
        return str(srv["domain"])
    from sipexpress.db.audit import served_domains

    domains = db(c, served_domains) if find_db_url(c) else []
    if len(domains) == 1:
        return domains[0]
    known = f" (the database has {', '.join(domains)})" if domains else ""
    fail(f"domain unknown: use usernames with domain or set default domain in SIP_DOMAIN{known}")


def find_db_url(c: Ctx) -> str | None:
    """The server's database (see the module doc), None if nobody says."""
    url = c.db_url
    if not url and c.config:
        url = _cfg_value(c.config, "db_url") or _cfg_value(c.config, "web_db_url")
    if not url:
        srv = server_provisioning(c)
        url = str(srv["db_url"]) if srv and srv.get("db_url") else None
    return url


def db_url(c: Ctx) -> str:
    """The server's database; a SQLite file must exist (connecting would
    leave an empty one behind), except for ``db create``."""
    url = find_db_url(c)
    if not url:
        where = f"{c.config} sets no db_url and no" if c.config else "no"
        fail(f"which database? {where} running ser answers over JSON-RPC: give --db-url or -f ser.cfg", 2)
    from sipexpress.db.engine import sqlite_file

    path = sqlite_file(url)
    if path is not None and not c.creating_db and not os.path.exists(path):
        fail(f"no database at {path} (create it with: serctl --db-url {url} db create)", 2)
    c.db_url = url
    return url


def db(c: Ctx, fn: Callable[[str], Awaitable[T]], sql_error: bool = False) -> T:
    """Run ``fn(url)``; a database error ends serctl with exit 2 (worded
    ``SQL Error`` where sc printed that when mysql failed)."""
    from sipexpress.db import DbError, UserExists, UserNotFound, dispose_engines

    async def go() -> T:
        try:
            return await fn(db_url(c))
        finally:
            await dispose_engines()

    try:
        return asyncio.run(go())
    except (UserExists, UserNotFound):
        raise
    except DbError as e:
        fail(f"{'SQL Error' if sql_error else 'database error'}: {e}", 2)


def check_alias(c: Ctx, user: str, domain: str) -> None:
    """sc's ``check_alias``: the name must not be an existing alias."""
    code, text = fifo(c, "ul_show_contact", ["aliases", f"{user}@{domain}"])
    status, _, body = text.partition("\n")
    if code == 404:
        return
    if code == 400:
        fail("error: 400; check if you use aliases in SER")
    if 200 <= code < 300 and body.strip():
        fail("error: Overlap with an existing alias")
    if not 200 <= code < 300:
        fail(f"error: {status}")


def table(rows: list[dict[str, Any]], columns: list[str], c: Ctx, title: str | None = None) -> None:
    if c.json:
        emit(json.dumps(rows, default=str) + "\n")
        return
    t = Table(*columns, title=title)
    for r in rows:
        t.add_row(*("NULL" if r.get(k) is None else str(r.get(k)) for k in columns))
    out.print(t)


# -- the command group -------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fifo", envvar="SER_FIFO", default="/tmp/ser_fifo", show_default=True, help="SER's FIFO")
@click.option(
    "--fifo-dir",
    "reply_dir",
    envvar="SER_FIFO_DIR",
    default="/tmp/",
    show_default=True,
    help="directory for the reply FIFO (the server's fifo_dir)",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds to wait for a reply")
@click.option("--domain", envvar="SIP_DOMAIN", help="default domain for user names [$SIP_DOMAIN]")
@click.option("--db-url", envvar="SER_DB_URL", help="database URL [$SER_DB_URL]")
@click.option(
    "-f",
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    help="the server's ser.cfg: fifo, fifo_dir, jsonrpc_http/_socket, db_url, web_domain",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--rpc-url", envvar="SER_RPC_URL", default="http://127.0.0.1:5080/", show_default=True)
@click.option("--rpc-socket", envvar="SER_RPC_SOCKET", help="JSON-RPC Unix socket (instead of HTTP)")
@click.option("--rpc-secret", envvar="SER_RPC_SECRET", help="JSON-RPC token")
@click.option(
    "--rpc-secret-file",
    envvar="SER_RPC_SECRET_FILE",
    help="file holding the JSON-RPC token (jsonrpc_secret_file= from --config)",
)
@click.option("--pid-file", envvar="PID_FILE", default="/var/run/ser.pid", show_default=True)
@click.option("--ser-bin", envvar="SERBIN", help="the ser program (default: ser next to serctl)")
@click.version_option(__version__, "-V", "--version-option")
@click.pass_context
def cli(
    ctx: click.Context,
    fifo: str,
    reply_dir: str,
    timeout: float,
    domain: str | None,
    db_url: str | None,
    config: str | None,
    as_json: bool,
    rpc_url: str,
    rpc_socket: str | None,
    rpc_secret: str | None,
    rpc_secret_file: str | None,
    pid_file: str,
    ser_bin: str | None,
) -> None:
    """SER control utility: users, ACLs, aliases, user location, monitoring.

    Commands that talk to the running server use its FIFO (--fifo,
    $SER_FIFO, or fifo= from --config); add/passwd/rm/mail/showdb/acl use
    the database (--db-url, $SER_DB_URL or db_url from --config).
    """
    if config:  # the server's own settings, unless given explicitly
        default = click.core.ParameterSource.DEFAULT
        if ctx.get_parameter_source("fifo") == default:
            fifo = _cfg_value(config, "fifo") or fifo
        if ctx.get_parameter_source("reply_dir") == default:
            reply_dir = _cfg_value(config, "fifo_dir") or reply_dir
        if (
            ctx.get_parameter_source("rpc_url") == default
            and ctx.get_parameter_source("rpc_socket") == default
        ):
            rpc_socket = _cfg_value(config, "jsonrpc_socket") or None
            http = _cfg_value(config, "jsonrpc_http")
            if http and http not in ("0", "no", "off"):
                from sipexpress.mgmt import DEFAULT_HTTP

                host, _, port = (DEFAULT_HTTP if http in ("1", "yes", "on") else http).rpartition(":")
                host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
                scheme = "https" if _cfg_value(config, "jsonrpc_certificate") else "http"
                rpc_url = f"{scheme}://{host}:{port}/"
        rpc_secret = rpc_secret or _cfg_value(config, "jsonrpc_secret")
        rpc_secret_file = rpc_secret_file or _cfg_value(config, "jsonrpc_secret_file")
    if not rpc_secret and rpc_secret_file:
        try:
            rpc_secret = read_token(rpc_secret_file)
        except TokenError as e:
            fail(str(e), 2)
    ctx.obj = Ctx(
        fifo,
        reply_dir,
        timeout,
        domain,
        db_url,
        config,
        as_json,
        rpc_url,
        rpc_socket,
        rpc_secret,
        pid_file,
        ser_bin,
    )


pass_ctx = click.make_pass_decorator(Ctx)


@cli.command("fifo", context_settings={"ignore_unknown_options": True})
@click.argument("command")
@click.argument("params", nargs=-1)
@pass_ctx
def fifo_cmd(c: Ctx, command: str, params: tuple[str, ...]) -> None:
    """Send a raw FIFO request: COMMAND with one parameter line per PARAM.

    Parameters are taken up to the first empty one (as sc did)."""
    p: list[str] = []
    for x in params:
        if not x:
            break
        p.append(x)
    sys.exit(print_fifo(c, command, p))


@cli.command("rpc", context_settings={"ignore_unknown_options": True})
@click.argument("method")
@click.argument("args", nargs=-1)
@pass_ctx
def rpc_cmd(c: Ctx, method: str, args: tuple[str, ...]) -> None:
    """Call METHOD over JSON-RPC (HTTP --rpc-url or --rpc-socket) and print the result as JSON."""
    try:
        result = rpc_call(
            method, list(args), url=c.rpc_url, unix_path=c.rpc_socket, timeout=c.timeout, secret=c.rpc_secret
        )
    except RpcError as e:
        if c.json:
            emit(json.dumps({"error": {"code": e.code, "message": e.message, "data": e.data}}) + "\n")
        else:
            err.print(f"{e.code} {e.message}", markup=False)
        sys.exit(1)
    except MgmtClientError as e:
        fail(str(e), 2)
    emit(json.dumps(result, indent=None if c.json else 2, ensure_ascii=False) + "\n")


@cli.command("reload")
@pass_ctx
def reload_cmd(c: Ctx) -> None:
    """Recompile the ser.cfg the server started with and swap its routes
    without a restart; a config with errors changes nothing (they are printed)."""
    if c.json:
        sys.exit(print_rpc(c, "reload", []))
    code, text = fifo(c, "reload")
    if 200 <= code < 300:
        emit(filter_fl(text))
        sys.exit(0)
    err.print(text.rstrip("\n"), markup=False)
    sys.exit(1)


@cli.command("ps")
@pass_ctx
def ps_cmd(c: Ctx) -> None:
    """Server processes: index, pid, description."""
    sys.exit(print_fifo(c, "ps", []))


@cli.command("stats")
@click.argument("selectors", nargs=-1)
@click.option("--reset", is_flag=True, help="start the selected counters again from zero")
@pass_ctx
def stats_cmd(c: Ctx, selectors: tuple[str, ...], reset: bool) -> None:
    """Statistics as group:name = value (Kamailio's stats.get_statistics).

    SELECTORS: all (default), GROUP: (e.g. tm:), or a statistic NAME."""
    command = "stats.reset_statistics" if reset else "stats.get_statistics"
    sys.exit(print_fifo(c, command, list(selectors) or ["all"]))


@cli.command("version")
@pass_ctx
def version_cmd(c: Ctx) -> None:
    """Print serctl's version."""
    say(c, f"{sys.argv[0]} sipexpress {__version__}\n", {"version": __version__})


@cli.command("online")
@pass_ctx
def online_cmd(c: Ctx) -> None:
    """Users online: the AORs in the server's user location (ul_dump)."""
    code, text = fifo(c, "ul_dump")
    if not 200 <= code < 300:
        fail(text.partition("\n")[0])
    body = text.partition("\n")[2]
    aors = sorted({ln.split()[2] for ln in body.splitlines() if "aor" in ln and len(ln.split()) >= 3})
    if c.json:
        emit(json.dumps([a.strip("'") for a in aors]) + "\n")
    else:
        emit("".join(a + "\n" for a in aors))


def _section(c: Ctx, cmd: str) -> str:
    """One FIFO reply for the monitor screen; when the server does not
    answer the screen says so and the monitor goes on (sc kept cycling)."""
    try:
        text = fifo_request(c.fifo, cmd, [], reply_dir=c.reply_dir, timeout=c.timeout)
    except (MgmtClientError, OSError) as e:
        return f"[{cmd}: {e}]\n"
    return filter_fl(text)


def _monitor_sample(c: Ctx, n: int) -> dict[str, Any]:
    """One cycle of ``monitor --json``: each command's data, or its error."""
    sample: dict[str, Any] = {"cycle": n}
    for cmd in ("version", "uptime", "t_stats", "sl_stats", "ul_stats"):
        try:
            sample[cmd] = rpc(c, cmd, [])
        except MgmtClientError as e:
            sample[cmd] = {"error": str(e)}
    return sample


@cli.command("monitor")
@click.argument("cycles", type=int, required=False)
@pass_ctx
def monitor_cmd(c: Ctx, cycles: int | None) -> None:
    """Live server statistics, refreshed every $WATCH_PERIOD seconds (Ctrl-C ends)."""
    period = float(os.environ.get("WATCH_PERIOD", "2"))
    n = 0
    tty = sys.stdout.isatty() and not c.json
    try:
        if tty:
            emit("\x1b[2J")
        while cycles is None or n < cycles:
            n += 1
            if c.json:
                emit(json.dumps(_monitor_sample(c, n), default=str) + "\n")
                if cycles is None or n < cycles:
                    time.sleep(period)
                continue
            screen = [f"[cycle #: {n}; if constant make sure server lives and fifo is on]\n"]
            screen.append(_section(c, "version").replace("\r\n", "\n"))
            screen.append(_section(c, "uptime"))
            for title, cmd in (
                ("Transaction Statistics", "t_stats"),
                ("Stateless Server Statistics", "sl_stats"),
                ("UsrLoc Stats", "ul_stats"),
            ):
                screen.append(f"\n{title}\n")
                screen.append(_section(c, cmd))
            emit(("\x1b[H" if tty else "") + "".join(screen))
            if cycles is None or n < cycles:
                time.sleep(period)
    except KeyboardInterrupt:
        emit("\nserctl monitor ^C-ed\n")


@cli.command("ping")
@click.argument("uri")
@pass_ctx
def ping_cmd(c: Ctx, uri: str) -> None:
    """Send OPTIONS to URI from the server (FIFO t_uac_dlg); print the reply's status line."""
    params = [
        "OPTIONS",
        uri,
        ".",
        f"From: sip:daemon@{socket.gethostname()}",
        f"To: <{uri}>",
        "Contact: <sip:daemon@!!>",
        ".",
        ".",
    ]
    c.timeout = max(c.timeout, 40.0)  # the reply comes when the transaction ends (Timer F: 32 s)
    code, text = fifo(c, "t_uac_dlg", params)
    lines = filter_fl(text).splitlines()
    first = lines[0] if lines else ""
    # sc: the filter removed a "200 OK" status line; anything else is printed
    status = first if STATUS_RE.match(first) else "200 OK"
    say(c, status + "\n", {"code": int(status[:3]), "status": status})
    sys.exit(0 if 200 <= code < 300 else 1)


# -- applications on t_uac_dlg: instant messages, click-to-dial -------------


def _uac_send(c: Ctx) -> Callable[[list[str]], str]:
    c.timeout = max(c.timeout, 190.0)  # the reply comes when the transaction ends (fr_inv_timer 120 s)
    return lambda lines: fifo(c, "t_uac_dlg", lines)[1]


@cli.command("im")
@click.argument("uri")
@click.argument("text", nargs=-1, required=True)
@click.option("--from", "sender", default=None, help="From URI (default: sip:serctl@<SIP_DOMAIN or host>)")
@pass_ctx
def im_cmd(c: Ctx, uri: str, text: tuple[str, ...], sender: str | None) -> None:
    """Send TEXT to URI as an instant message (MESSAGE through the server's
    FIFO t_uac_dlg); print the final reply as the FIFO returned it."""
    if not uri.startswith(("sip:", "sips:")):
        fail(f"'{uri}' is not a SIP URI (sip:user@host)")
    sender = sender or f"<sip:serctl@{c.domain or socket.gethostname()}>"
    send = _uac_send(c)
    raw: list[str] = []

    def keep(lines: list[str]) -> str:
        raw.append(send(lines))
        return raw[-1]

    res = instant_message(keep, uri, " ".join(text), sender)
    if c.json:
        emit(json.dumps({"code": res.code, "reason": res.reason}) + "\n")
    else:
        emit(raw[-1] if raw[-1].endswith("\n") else raw[-1] + "\n")
    sys.exit(0 if res.ok else 1)


@cli.command("ctd")
@click.argument("caller")
@click.argument("callee")
@click.option("--controller", default=CONTROLLER, show_default=True, help="From of the wrapper call")
@click.option("--outbound", default=".", help="outbound proxy URI for the wrapper call ('.' = none)")
@pass_ctx
def ctd_cmd(c: Ctx, caller: str, callee: str, controller: str, outbound: str) -> None:
    """Click-to-dial: call CALLER, then REFER it to CALLEE, then hang up the
    wrapper call (the seed's flow #1-#7, as examples/uac/ctd.sh)."""
    for u in (caller, callee):
        if not u.startswith(("sip:", "sips:", "tel:")):
            fail(f"'{u}' is not a SIP URI (sip:user@host)")
    result = click_to_dial(_uac_send(c), caller, callee, controller, outbound)
    if c.json:
        emit(json.dumps({"ok": result.ok, "steps": [list(s) for s in result.steps]}) + "\n")
    else:
        for (_name, ok, status), line in zip(result.steps, result.report(), strict=True):
            emit(line + ("" if ok else f" ({status})") + "\n")
    sys.exit(0 if result.ok else 1)


# -- user location and aliases ----------------------------------------------


def _ul_group(name: str, table_name: str, is_alias: bool) -> click.Group:
    @click.group(
        name,
        help=f"{'Aliases' if is_alias else 'User location'} in the server's in-memory table '{table_name}'.",
    )
    def grp() -> None:
        pass

    @grp.command("show")
    @click.argument("user", required=False)
    @click.option("-y", "--yes", is_flag=True, help="do not ask (implied when not on a terminal)")
    @pass_ctx
    def show(c: Ctx, user: str | None, yes: bool) -> None:
        """Contacts of USER; without USER dump the whole table."""
        if user is None:
            asking = not (yes or c.json) and sys.stdin.isatty() and sys.stderr.isatty()
            if asking and not click.confirm(
                "Dumping all contacts may take long: are you sure you want to proceed?", err=True
            ):
                sys.exit(1)
            sys.exit(print_fifo(c, "ul_dump", []))
        u, d = set_user(c, user)
        sys.exit(print_fifo(c, "ul_show_contact", [table_name, f"{u}@{d}"]))

    @grp.command("rm")
    @click.argument("user")
    @pass_ctx
    def rm(c: Ctx, user: str) -> None:
        """Remove all contacts of USER."""
        u, d = set_user(c, user)
        sys.exit(print_fifo(c, "ul_rm", [table_name, f"{u}@{d}"]))

    @grp.command("add")
    @click.argument("user")
    @click.argument("uri")
    @pass_ctx
    def add(c: Ctx, user: str, uri: str) -> None:
        """Add URI as a permanent contact of USER."""
        if not URI_RE.match(uri):
            fail(f"error: invalid URI: {uri}")
        u, d = set_user(c, user)
        if is_alias:
            from sipexpress.db import name_taken

            if db(c, lambda url: name_taken(url, u, d)):
                fail("overlap of alias with an existing subscriber name")
        check_alias(c, u, d)
        sys.exit(print_fifo(c, "ul_add", [table_name, f"{u}@{d}", uri, "0", "1.00", "0", "128"]))

    return grp


cli.add_command(_ul_group("ul", "location", False))
cli.add_command(_ul_group("alias", "aliases", True))


# -- subscribers --------------------------------------------------------------


@cli.command("add")
@click.argument("user")
@click.argument("password")
@click.argument("email")
@pass_ctx
def add_cmd(c: Ctx, user: str, password: str, email: str) -> None:
    """Add a new subscriber USER with PASSWORD and EMAIL address."""
    from sipexpress.db import UserExists, add_user

    u, d = set_user(c, user)
    check_new_password(password)
    from sipexpress.web.security import check_email

    problem = check_email(email)
    if problem:
        fail(f"error: {problem}")
    check_alias(c, u, d)
    try:
        db(c, lambda url: add_user(url, u, d, password, email))
    except UserExists:
        fail("user already exists")
    say(c, "new user added\nnew user into uri table added\n", {"added": f"{u}@{d}"})


@cli.command("passwd")
@click.argument("user")
@click.argument("password")
@pass_ctx
def passwd_cmd(c: Ctx, user: str, password: str) -> None:
    """Change USER's password."""
    from sipexpress.db import UserNotFound, set_password

    u, d = set_user(c, user)
    check_new_password(password)
    try:
        db(c, lambda url: set_password(url, u, d, password))
    except UserNotFound:
        fail("non-existent user")
    say(c, "password change succeeded\n", {"password_changed": f"{u}@{d}"})


@cli.command("rm")
@click.argument("user")
@pass_ctx
def rm_cmd(c: Ctx, user: str) -> None:
    """Delete USER: the subscriber, its rows in every per-user table and its current contacts."""
    from sipexpress.db import remove_user

    u, d = set_user(c, user)
    if not db(c, lambda url: remove_user(url, u, d)):
        fail("non-existent user")
    try:
        fifo_request(c.fifo, "ul_rm", ["location", f"{u}@{d}"], reply_dir=c.reply_dir, timeout=c.timeout)
    except MgmtClientError as e:
        err.print(f"warning: contacts not removed from the server: {e}", markup=False)
    say(c, "", {"removed": f"{u}@{d}"})


@cli.command("mail")
@click.argument("user")
@pass_ctx
def mail_cmd(c: Ctx, user: str) -> None:
    """Send an e-mail (text from stdin) to USER's address."""
    from sipexpress.db import get_user

    u, d = set_user(c, user)
    sub = db(c, lambda url: get_user(url, u, d))
    if sub is None:
        fail("non-existent user")
    if not c.json:
        emit(f"Write email to {u}: {sub.email_address} now ...\n")
    mailer = shutil.which("mail")
    if mailer is None:
        fail("sending message failed (no 'mail' program)")
    r = subprocess.run([mailer, "-s", f"Message from {d} SIP admin", sub.email_address], stdin=sys.stdin)
    if r.returncode:
        fail("sending message failed")
    say(c, "message sent\n", {"sent": sub.email_address})


@cli.command("showdb")
@click.argument("user", required=False)
@pass_ctx
def showdb_cmd(c: Ctx, user: str | None) -> None:
    """Users' contacts as stored in the database (may lag the server's cache)."""
    from sqlalchemy import select

    from sipexpress.db import run, schema

    loc, sub = schema.location, schema.subscriber

    async def q(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async def op(conn: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            if user is not None:
                u, d = set_user(c, user)
                e = await conn.execute(
                    select(sub.c.email_address).where(sub.c.username == u, sub.c.domain == d)
                )
                r1 = [dict(r._mapping) for r in e]
                e = await conn.execute(
                    select(loc).where(loc.c.username == u, loc.c.domain == d).order_by(loc.c.expires.desc())
                )
                return r1, [dict(r._mapping) for r in e]
            e = await conn.execute(
                select(loc.c.username, sub.c.email_address, loc.c.callid)
                .select_from(sub.join(loc, sub.c.username == loc.c.username))
                .order_by(loc.c.username)
            )
            return [], [dict(r._mapping) for r in e]

        result: tuple[list[dict[str, Any]], list[dict[str, Any]]] = await run(url, op, write=False)
        return result

    emails, rows = db(c, q)
    if c.json:
        say(c, "", {"email": [e["email_address"] for e in emails], "contacts": rows} if user else rows)
        return
    if emails:
        table(emails, ["email_address"], c)
    cols = (
        list(rows[0])
        if rows
        else (
            ["username", "email_address", "callid"]
            if user is None
            else ["username", "domain", "contact", "expires", "q", "callid"]
        )
    )
    table(rows, cols, c)
    if not c.json:
        emit("Note: Due to usage of cache, server's list may differ from DB list.\n")


cli.add_command(showdb_cmd, "userdb")


# -- ACLs ---------------------------------------------------------------------


@cli.group("acl")
def acl_grp() -> None:
    """Access control lists: group membership (table grp)."""


def _user_or_all(c: Ctx, user: str | None) -> tuple[str, str] | None:
    return None if user is None else set_user(c, user)


def _acl_show(c: Ctx, user: str | None) -> None:
    from sipexpress.db import group_rows

    who = _user_or_all(c, user)
    table(db(c, lambda url: group_rows(url, who)), ["username", "domain", "grp", "last_modified"], c)


@acl_grp.command("show")
@click.argument("user", required=False)
@pass_ctx
def acl_show(c: Ctx, user: str | None) -> None:
    """Groups of USER (all users without USER)."""
    _acl_show(c, user)


@acl_grp.command("grant")
@click.argument("user")
@click.argument("groups", nargs=-1, required=True)
@pass_ctx
def acl_grant(c: Ctx, user: str, groups: tuple[str, ...]) -> None:
    """Add USER to GROUPS (each must be one of $ACL_GROUPS)."""
    from sipexpress.db import grant

    u, d = set_user(c, user)
    allowed = os.environ.get("ACL_GROUPS", DEFAULT_ACL_GROUPS).split()
    ok = []
    for gname in groups:
        if os.environ.get("VERIFY_ACL", "1") != "0" and gname not in allowed:
            err.print(f"Invalid privilege: {gname} ignored", markup=False)
        else:
            ok.append(gname)
    db(c, lambda url: grant(url, u, d, ok))
    _acl_show(c, user)
    if not ok:
        sys.exit(1)


@acl_grp.command("revoke")
@click.argument("user")
@click.argument("group", required=False)
@pass_ctx
def acl_revoke(c: Ctx, user: str, group: str | None) -> None:
    """Remove USER from GROUP (from all groups without GROUP)."""
    from sipexpress.db import revoke

    u, d = set_user(c, user)
    db(c, lambda url: revoke(url, u, d, group))
    _acl_show(c, user)


# -- domains and remote-party IDs ------------------------------------------------


@cli.group("domain")
def domain_grp() -> None:
    """Domains served (table domain; the domain module with db_mode=1)."""


@domain_grp.command("show")
@pass_ctx
def domain_show(c: Ctx) -> None:
    """The server's cached domain list (FIFO domain_dump)."""
    sys.exit(print_fifo(c, "domain_dump", []))


def _domain_change(c: Ctx, domain: str, add: bool) -> None:
    from sipexpress.db import add_domain, remove_domain

    change = add_domain if add else remove_domain
    db(c, lambda url: change(url, domain), sql_error=True)
    sys.exit(print_fifo(c, "domain_reload", []))


@domain_grp.command("add")
@click.argument("domain")
@pass_ctx
def domain_add(c: Ctx, domain: str) -> None:
    """Add DOMAIN, then make the server reload the table."""
    _domain_change(c, domain, True)


@domain_grp.command("rm")
@click.argument("domain")
@pass_ctx
def domain_rm(c: Ctx, domain: str) -> None:
    """Remove DOMAIN, then make the server reload the table."""
    _domain_change(c, domain, False)


@cli.group("rpid")
def rpid_grp() -> None:
    """Remote-Party-ID of subscribers (subscriber.rpid)."""


def _set_rpid(c: Ctx, user: str, rpid: str | None) -> None:
    from sipexpress.db import set_rpid

    u, d = set_user(c, user)
    if not db(c, lambda url: set_rpid(url, u, d, rpid), sql_error=True):
        fail("non-existent user")
    _rpid_show(c, user)


def _rpid_show(c: Ctx, user: str | None) -> None:
    from sipexpress.db import rpid_rows

    who = _user_or_all(c, user)
    table(db(c, lambda url: rpid_rows(url, who), sql_error=True), ["username", "rpid"], c)


@rpid_grp.command("add")
@click.argument("user")
@click.argument("rpid")
@pass_ctx
def rpid_add(c: Ctx, user: str, rpid: str) -> None:
    """Set USER's Remote-Party-ID to RPID."""
    _set_rpid(c, user, rpid)


@rpid_grp.command("rm")
@click.argument("user")
@pass_ctx
def rpid_rm(c: Ctx, user: str) -> None:
    """Clear USER's Remote-Party-ID."""
    _set_rpid(c, user, None)


@rpid_grp.command("show")
@click.argument("user", required=False)
@pass_ctx
def rpid_show(c: Ctx, user: str | None) -> None:
    """Remote-Party-IDs of USER (all users without USER)."""
    _rpid_show(c, user)


# -- the database schema -------------------------------------------------------


@cli.group("db")
def db_grp() -> None:
    """Create or upgrade the database schema."""


@db_grp.command("create")
@click.option("--admin-domain", help="also add SER's initial admin user in this domain")
@pass_ctx
def db_create(c: Ctx, admin_domain: str | None) -> None:
    """Create the database and all tables (existing tables are kept)."""
    from sipexpress.db import create_all

    c.creating_db = True
    done = db(c, lambda url: create_all(url, admin_domain=admin_domain))
    say(c, "".join(x + "\n" for x in done) or "nothing to do\n", done)


@db_grp.command("migrate")
@pass_ctx
def db_migrate(c: Ctx) -> None:
    """Upgrade an existing database to the current schema."""
    from sipexpress.db import migrate

    done = db(c, migrate)
    say(c, "".join(x + "\n" for x in done) or "nothing to do\n", done)


# -- start / stop --------------------------------------------------------------


def _read_pid(path: str) -> int | None:
    try:
        return int(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ser_command(c: Ctx) -> list[str]:
    if c.ser_bin:
        return [c.ser_bin]
    near = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "ser")
    if os.access(near, os.X_OK):
        return [near]
    return [sys.executable, "-m", "sipexpress.cli.ser"]


def _start(c: Ctx, wait: float = 15.0) -> None:
    if os.path.exists(c.pid_file):
        pid = _read_pid(c.pid_file)
        if pid is not None and _alive(pid):
            fail(f"PID file exists! ({c.pid_file}) already running?")
        os.unlink(c.pid_file)  # stale
    cmd = [*_ser_command(c), "-P", c.pid_file, *os.environ.get("STARTOPTIONS", "").split()]
    if c.config:
        cmd += ["-f", c.config]
    if not c.json:
        emit("Starting SER : ")
    syslog = os.environ.get("SYSLOG", "1") != "0"
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if syslog else None,
            stderr=subprocess.DEVNULL if syslog else None,
            start_new_session=True,
        )
    except OSError as e:
        emit("\n")
        fail(f"SER binaries not found at {cmd[0]}: {e.strerror}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = _read_pid(c.pid_file)
        if pid is not None:
            say(c, f"started pid({pid})\n", {"started": pid})
            return
        if proc.poll():  # exit 0 is ser daemonizing: keep waiting for its PID file
            break
        time.sleep(0.1)
    emit("\n")
    fail(f"PID file {c.pid_file} does not exist -- SER start failed")


def _stop(c: Ctx, wait: float = 15.0) -> None:
    pid = _read_pid(c.pid_file)
    if pid is None:
        fail("No PID file found! SER probably not running")
    if not c.json:
        emit("Stopping SER : ")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        emit("\n")
        fail(f"ser (pid {pid}) did not stop within {wait:g} s")
    if os.path.exists(c.pid_file):
        os.unlink(c.pid_file)
    say(c, "stopped\n", {"stopped": pid})


@cli.command("start")
@pass_ctx
def start_cmd(c: Ctx) -> None:
    """Start ser in the background, writing --pid-file ($STARTOPTIONS are passed on)."""
    _start(c)


@cli.command("stop")
@pass_ctx
def stop_cmd(c: Ctx) -> None:
    """Stop the ser named by --pid-file."""
    _stop(c)


@cli.command("restart")
@pass_ctx
def restart_cmd(c: Ctx) -> None:
    """Stop, then start ser."""
    _stop(c)
    _start(c)


def main() -> None:
    cli(prog_name=os.path.basename(sys.argv[0]) or "serctl")


if __name__ == "__main__":
    main()
