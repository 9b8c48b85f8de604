"""acc — transaction accounting and missed calls (SER's ``modules_s/acc``).

Two ways in, as in SER:

* script functions ``acc_log_request("comment")`` (2003: ``acc_request``)
  and ``acc_db_request("comment", "table")`` account the current request
  at once — the seed's "call to an off-line user" case;
* transaction accounting through tm: a request flagged with ``log_flag`` /
  ``db_flag`` before ``t_relay`` is reported when its final reply goes
  upstream (2xx; negative ones too with ``failed_transactions``); an INVITE
  flagged with ``log_missed_flag`` / ``db_missed_flag`` that ends negatively
  (busy, no answer, cancelled, failed downstream) is reported once as a
  missed call.  Flags are read from the transaction, so flags set in a
  failure_route count.

Records go to the log (``ACC: <what>: attr=value, …`` at ``log_level``; to
syslog as well with ``log_syslog``), to the ``acc`` / ``missed_calls``
tables of the database layer, and — a modern option — as JSON lines to
``json_file``.  Database writes run in the background and never hold up
SIP processing; a failed write is logged.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sipexpress.core.context import RequestContext
from sipexpress.core.logging import std_level
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

log = logging.getLogger("sipexpress.acc")

# log_fmt letters (acc.c fmt2strar) -> attribute names in the log line
_ATTR_NAMES = {
    "c": "call_id", "d": "totag", "f": "from", "i": "i-uri", "m": "method", "n": "cseq",
    "o": "o-uri", "p": "i-user", "r": "fromtag", "s": "code", "t": "to", "u": "uid",
    "0": "fromuser", "1": "touser", "F": "fromuri", "T": "touri", "U": "uid", "S": "code",
    "D": "domain", "X": "fromdomain",
}  # fmt: skip

NA = "n/a"


class Record:
    """What acc knows of one accounted request (every log_fmt letter)."""

    __slots__ = ("fields",)

    def __init__(
        self, req: SipMessage, ruri: str, status: str, reply: SipMessage | None, uid: str | None
    ) -> None:
        f: dict[str, str] = {}

        def get(fn: Any) -> str:
            try:
                v = fn()
            except (SipParseError, AttributeError, IndexError):
                return NA
            return NA if v is None or v == "" else str(v)

        from_ = _safe(lambda: req.from_)
        to = _safe(lambda: (reply or req).to)
        f["c"] = get(lambda: req.call_id)
        f["d"] = get(lambda: to.tag if to else None)
        f["f"] = get(lambda: req.header("from"))
        f["i"] = req.ruri
        f["m"] = req.method
        f["n"] = get(lambda: req.cseq.num)
        f["o"] = ruri or req.ruri
        f["r"] = get(lambda: from_.tag if from_ else None)
        f["s"] = status
        f["S"] = status[:3]
        f["t"] = get(lambda: req.header("to"))
        f["F"] = get(lambda: from_.uri if from_ else None)
        f["T"] = get(lambda: req.to.uri)
        f["u"] = uid or NA
        f["U"] = uid or f["F"]
        iuser, idomain = _user_host(req.ruri)
        fuser, fdomain = _user_host(f["F"])
        tuser, _ = _user_host(f["T"])
        f["p"], f["D"] = iuser, idomain
        f["0"], f["X"] = fuser, fdomain
        f["1"] = tuser
        self.fields = f

    def line(self, fmt: str) -> str:
        return ", ".join(f"{_ATTR_NAMES[c]}={self.fields.get(c, NA)}" for c in fmt if c in _ATTR_NAMES)

    def row(self, callee: bool, localtime: bool) -> dict[str, Any]:
        """A row for ``acc`` (caller's user/domain) or ``missed_calls`` /
        ``acc_db_request`` (callee's: the request URI's)."""
        f = self.fields
        now = datetime.now() if localtime else datetime.now(UTC).replace(tzinfo=None)

        def v(c: str) -> str:
            x = f.get(c, NA)
            return "" if x == NA else x

        return {
            "from_uri": v("F"), "to_uri": v("T"), "sip_method": v("m"), "i_uri": v("i"),
            "o_uri": v("o"), "sip_from": v("f"), "sip_callid": v("c"), "sip_to": v("t"),
            "sip_status": v("s"), "fromtag": v("r"), "totag": v("d"),
            "username": v("p") if callee else v("0"),
            "domain": v("D") if callee else v("X"),
            "time": now.replace(microsecond=0),
        }  # fmt: skip


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except (SipParseError, AttributeError):
        return None


def _user_host(uri: str) -> tuple[str, str]:
    if not uri or uri == NA:
        return NA, NA
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, _, host = rest.rpartition("@")
    host = host.split(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
    return (user or NA), (host or NA)


def _flag(v: Any) -> int:
    n = int(v)
    if not 0 <= n <= 31:
        raise ConfigError(f"acc: flag {n} out of range (0-31)")
    return n


def _fix_table(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    comment, table = str(args[0]), str(args[1]).strip()
    if not table:
        raise ConfigError("acc_db_request: empty table name")
    return (comment, table)


class AccModule(Module):
    name = "acc"
    params = (
        Param("log_flag", int, 0, "report transactions flagged with it to the log"),
        Param("log_missed_flag", int, 0, "report missed calls flagged with it to the log"),
        Param("db_flag", int, 0, "report transactions flagged with it to the acc table"),
        Param("db_missed_flag", int, 0, "report missed calls flagged with it to missed_calls"),
        Param("acc_flag", int, 0, "2003 name of log_flag"),
        Param("missed_flag", int, 0, "2003 name of log_missed_flag"),
        Param("log_level", int, 2, "SER debug level of the ACC lines (2 = notice)"),
        Param("log_fmt", str, "miocfs", "attributes of a log line, one letter each"),
        Param("early_media", int, 0, "also report 183 replies"),
        Param("failed_transactions", int, 0, "also report transactions that end >= 300"),
        Param("report_ack", int, 1, "report the ACK of an accounted INVITE"),
        Param("report_cancels", int, 0, "report CANCEL requests too"),
        Param("db_url", str, "", "database (empty: the global db_url)"),
        Param("db_table_acc", str, "acc"),
        Param("db_table_missed_calls", str, "missed_calls"),
        Param("db_localtime", int, 0, "time column in local time instead of GMT"),
        Param("log_syslog", int, 0, "also send ACC lines to syslog (LOG_DAEMON)"),
        Param("json_file", str, "", "append every record as a JSON line to this file"),
    )
    counters = (("records", "accounting records written (all sinks)"),)

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.records = 0  # how many records were written (all sinks)

    def functions(self) -> Sequence[ScriptFunction]:
        f = ScriptFunction
        rq = RouteType.REQUEST | RouteType.FAILURE
        return (
            f("acc_log_request", self.acc_log_request, (1,), None, rq, doc="Log the request now."),
            f("acc_request", self.acc_log_request, (1,), None, rq, doc="2003 name of acc_log_request."),
            f(
                "acc_db_request",
                self.acc_db_request,
                (2,),
                _fix_table,
                rq,
                doc="Insert the request into a table.",
            ),
        )

    # -- configuration -------------------------------------------------------
    async def start(self) -> None:
        v = self.values
        self.log_flag = _flag(v["log_flag"] or v["acc_flag"])
        self.log_missed_flag = _flag(v["log_missed_flag"] or v["missed_flag"])
        self.db_flag = _flag(v["db_flag"])
        self.db_missed_flag = _flag(v["db_missed_flag"])
        self.level = std_level(int(v["log_level"]))
        fmt = str(v["log_fmt"])
        bad = [c for c in fmt if c not in _ATTR_NAMES]
        if bad:
            raise ConfigError(f"acc: unknown log_fmt letter(s) {''.join(bad)!r}")
        self.fmt = fmt
        from sipexpress.db.engine import resolve_db_url

        self.db_url = resolve_db_url(str(v["db_url"]) or None, self.core.options)
        if v["log_syslog"] and os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler("/dev/log", logging.handlers.SysLogHandler.LOG_DAEMON)
            handler.setFormatter(logging.Formatter("ser: %(message)s"))
            log.addHandler(handler)
        tm: Any = self.core.module("tm")
        if tm is not None:
            tm.on_complete.append(self._on_complete)
            layer = getattr(tm, "layer", None)
            if layer is not None and hasattr(layer, "on_create"):
                layer.on_create.append(self._on_create)
        elif self.log_flag or self.db_flag or self.log_missed_flag or self.db_missed_flag:
            log.warning("acc: tm is not loaded; transaction flags will not be accounted")

    # -- script functions ------------------------------------------------------
    def _uid(self, ctx: RequestContext) -> str | None:
        cred = ctx.credentials
        return getattr(cred, "username", None) if cred is not None else None

    def _skip(self, msg: SipMessage) -> bool:
        return msg.method == "CANCEL" and not self.values["report_cancels"]

    def acc_log_request(self, ctx: RequestContext, comment: str) -> int:
        if self._skip(ctx.msg):
            return 1
        rec = Record(ctx.msg, ctx.ruri, comment, None, self._uid(ctx))
        self._log("request accounted", rec)
        return 1

    def acc_db_request(self, ctx: RequestContext, comment: str, table: str) -> int:
        if self._skip(ctx.msg):
            return 1
        rec = Record(ctx.msg, ctx.ruri, comment, None, self._uid(ctx))
        self._db(table, rec, callee=True)
        return 1

    # -- transaction accounting ------------------------------------------------
    def _on_create(self, t: Any) -> None:
        """Flagged INVITEs must not time out silently (SER's "noisy" mark)."""
        if t.is_invite and (
            self._flagged(t.flags, self.log_missed_flag) or self._flagged(t.flags, self.db_missed_flag)
        ):
            t.noisy = True

    def _on_complete(self, t: Any, code: int) -> None:
        req: SipMessage = t.request
        if self._skip(req) or req.method == "ACK":
            return
        flags: int = t.flags
        if t.is_invite and code >= 300:
            t.noisy = True
        winner = _winner(t)
        reply = winner.reply if winner is not None else None
        status = f"{code} {reply.reason}" if reply is not None else _reason(t, code)
        o_uri = winner.uri if winner is not None else t.ruri_at_relay
        rec: Record | None = None

        def record() -> Record:
            nonlocal rec
            if rec is None:
                rec = Record(req, o_uri, status, reply, getattr(t, "auth_user", None))
            return rec

        if 200 <= code < 300 or (code >= 300 and self.values["failed_transactions"]):
            if self._flagged(flags, self.log_flag):
                self._log("transaction answered", record())
            if self._flagged(flags, self.db_flag):
                self._db(str(self.values["db_table_acc"]), record(), callee=False)
        if t.is_invite and code >= 300:
            if self._flagged(flags, self.log_missed_flag):
                self._log("call missed", record())
            if self._flagged(flags, self.db_missed_flag):
                self._db(str(self.values["db_table_missed_calls"]), record(), callee=True)

    @staticmethod
    def _flagged(flags: int, n: int) -> bool:
        return n > 0 and bool(flags & (1 << n))

    # -- sinks -------------------------------------------------------------------
    def _log(self, what: str, rec: Record) -> None:
        self.records += 1
        log.log(self.level, "ACC: %s: %s", what, rec.line(self.fmt))
        self._json(what, None, rec)

    def _db(self, table: str, rec: Record, callee: bool) -> None:
        self.records += 1
        row = rec.row(callee, bool(self.values["db_localtime"]))
        self._json("db", table, rec)
        self.core.spawn(self._insert(table, row))

    async def _insert(self, table: str, row: dict[str, Any]) -> None:
        from sqlalchemy import MetaData, insert

        from sipexpress.db import schema
        from sipexpress.db.engine import DbError, run

        tbl = schema.metadata.tables.get(table)
        if tbl is None:
            tbl = schema.metadata.tables["missed_calls"].to_metadata(MetaData(), name=table)
        try:
            await run(self.db_url, lambda conn: conn.execute(insert(tbl).values(**row)))
        except DbError as e:
            log.error("acc: cannot write to table %s: %s", table, e)

    def _json(self, what: str, table: str | None, rec: Record) -> None:
        path = str(self.values["json_file"])
        if not path:
            return
        entry: dict[str, Any] = {"ts": time.time(), "event": what}
        if table:
            entry["table"] = table
        entry.update({_ATTR_NAMES[c]: v for c, v in rec.fields.items() if c in _ATTR_NAMES})
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError as e:
            log.error("acc: cannot append to %s: %s", path, e)


def _winner(t: Any) -> Any:
    best = None
    for br in getattr(t, "branches", ()):
        if br.status and (best is None or br.status == t.final_status):
            best = br
    return best


_LOCAL_REASONS = {
    408: "Request Timeout",
    487: "Request Terminated",
    404: "Not Found",
    500: "Server Internal Error",
}


def _reason(t: Any, code: int) -> str:
    return f"{code} {_LOCAL_REASONS.get(code, '')}".rstrip()
