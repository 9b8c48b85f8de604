"""msilo — offline message store (SER 0.9's ``modules_s/msilo``).

SER's answer to "an instant message for someone who is offline":

* ``m_store(mode)`` (request and failure routes) keeps a MESSAGE in the
  ``silo`` table: From and To URIs, the user and domain it is for, the
  body and its type, arrival and expiry times.  ``mode`` picks the
  recipient: ``"0"`` the rewritten request URI (after ``lookup``) when it is
  an address of record, else ``"1"``: the request URI as received when it
  is one, else ``"2"``: the To URI.  An address of record has a user and a
  host that is not an IP address.  The message expires after
  ``expire_time`` seconds, or sooner when it carries a shorter ``Expires``.
  With ``registrar`` set, the sender gets a MESSAGE from that address
  saying the user is offline (to its Contact when ``use_contact``).
* ``m_dump()`` (on a REGISTER that does not remove bindings) sends each
  stored message for the To URI's user and domain as a new MESSAGE through
  tm: request URI the To URI, From and To as stored, body prefixed with
  ``[Offline message - <arrival ctime>]``.  It goes to the socket the
  REGISTER arrived on, so the routing script delivers it (``lookup`` finds
  the binding ``save`` just wrote) as it would any MESSAGE; SER sent it to
  the To URI's host, which is the same server when that host is ours.
  A 2xx deletes the message; anything else leaves it for the next
  REGISTER.
* Every ``check_time`` seconds, every ``clean_period``-th time, messages
  past their expiry are deleted.

Deviations from SER 0.9, each a defect there: a delivered message is
deleted when its 2xx arrives (SER waited for the next timer tick, and a
REGISTER in between sent it twice); expired messages are not delivered
while they wait for the cleaner; the delivered MESSAGE carries one
Content-Type (SER's header builder wrote two).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnClause, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.core.api import CoreAPI
from sipexpress.core.context import RequestContext
from sipexpress.core.periodic import Periodic
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError, run
from sipexpress.db.schema import REQUIRED_VERSIONS
from sipexpress.modules._dbquery import DB_PARAMS, DbLookup, ident, make_table
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.locate import is_numeric
from sipexpress.sip.uri import SipUri

log = logging.getLogger("sipexpress.msilo")

OFFLINE_NOTICE = "] is offline. The message will be delivered when user goes online."

# (parameter, default) of the column names, SER's sc_* parameters
_COLUMNS = (
    ("sc_mid", "mid"),
    ("sc_from", "src_addr"),
    ("sc_to", "dst_addr"),
    ("sc_uri_user", "username"),
    ("sc_uri_host", "domain"),
    ("sc_body", "body"),
    ("sc_ctype", "ctype"),
    ("sc_exp_time", "exp_time"),
    ("sc_inc_time", "inc_time"),
)


def _fix_mode(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    mode = str(args[0]).strip()
    if mode not in ("0", "1", "2"):
        raise ConfigError(f'm_store: mode must be "0", "1" or "2", not {args[0]!r}')
    return (int(mode),)


def _user_at_host(uri_text: str | None) -> SipUri | None:
    """The URI when it has a user and a host."""
    if not uri_text:
        return None
    try:
        uri = SipUri.parse(uri_text)
    except SipParseError:
        return None
    return uri if uri.user and uri.host else None


def _aor(uri_text: str | None) -> SipUri | None:
    """The URI when it names an address of record: a user at a host that
    is not an IP address (SER's test in m_store)."""
    uri = _user_at_host(uri_text)
    return None if uri is None or is_numeric(uri.host) else uri


def offline_body(inc_time: int, body: bytes) -> bytes:
    """SER's m_build_body: ``[Offline message - <ctime>] <body>``."""
    stamp = time.ctime(inc_time)
    return f"[Offline message - {stamp}]".encode() + (b" " + body if body else b"")


class MsiloModule(Module):
    name = "msilo"
    depends = ("tm",)
    params = (
        *DB_PARAMS,
        Param("db_table", str, "silo", "table of the stored messages"),
        Param("registrar", str, "", "From address of the 'user is offline' notice; empty: no notice"),
        Param("expire_time", int, 259200, "seconds a message is kept (72 hours)"),
        Param("check_time", int, 30, "seconds between two runs of the cleaner"),
        Param("clean_period", int, 5, "expired messages are deleted every clean_period-th run"),
        Param("use_contact", int, 1, "send the notice to the sender's Contact (0: its From URI)"),
        *(Param(name, str, column, f"column name ({column})") for name, column in _COLUMNS),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.db = DbLookup(self)
        self.table = make_table("silo")
        self.col: dict[str, ColumnClause[Any]] = {}  # sc_* parameter -> column
        self.registrar = ""
        self._in_flight: set[int] = set()  # mids sent and not answered yet
        self._cleaner: Periodic | None = None

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction(
                "m_store",
                self.m_store,
                arities=(1,),
                fixup=_fix_mode,
                route_types=RouteType.REQUEST | RouteType.FAILURE,
                is_async=True,
                doc="Store the MESSAGE for later delivery (mode 0, 1 or 2: where the recipient is taken from).",
            ),
            ScriptFunction(
                "m_dump",
                self.m_dump,
                arities=(0,),
                route_types=RouteType.REQUEST,
                is_async=True,
                doc="Send the stored messages of the user who registers.",
            ),
        )

    # -- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        for param in ("check_time", "clean_period", "expire_time"):
            if int(self.values[param]) <= 0:
                raise ConfigError(f"msilo: {param} must be positive")
        self.db.configure()
        names = {param: ident(str(self.values[param])) for param, _ in _COLUMNS}
        self.table = make_table(str(self.values["db_table"]), *names.values())
        self.col = {param: self.table.c[name] for param, name in names.items()}
        self.registrar = str(self.values["registrar"])
        if str(self.values["db_table"]).lower() == "silo":
            await self.db.check_versions(REQUIRED_VERSIONS["msilo"])
        # SER's clean-up: every clean_period-th check of check_time seconds
        period = int(self.values["check_time"]) * int(self.values["clean_period"])
        self._cleaner = Periodic("msilo: expired messages clean-up", period, self.clean_expired)
        self._cleaner.start()

    async def stop(self) -> None:
        if self._cleaner is not None:
            await self._cleaner.stop()

    async def _write(self, stmt: Any) -> Any:
        async def op(conn: AsyncConnection) -> Any:
            return await conn.execute(stmt)

        return await run(self.db.url, op, self.db.timeout)

    # -- m_store -------------------------------------------------------------------
    def _recipient(self, ctx: RequestContext, mode: int, to_uri: str) -> SipUri | None:
        uri = None
        if mode == 0 and ctx.new_uri is not None:
            uri = _aor(ctx.new_uri)
        if uri is None and mode <= 1:
            uri = _aor(ctx.original_ruri)
        return uri or _user_at_host(to_uri)

    async def m_store(self, ctx: RequestContext, mode: int) -> int:
        msg = ctx.msg
        try:
            body = msg.body
            to_uri = msg.to.uri
            from_uri = msg.from_.uri
            ctype = (msg.content_type or "text/plain").split(";", 1)[0].strip() or "text/plain"
            expires_hf = msg.header("expires")
        except SipParseError as e:
            log.error("m_store: cannot parse the request: %s", e)
            return -1
        if not body:
            log.debug("m_store: empty body, nothing stored")
            return -1
        if self.registrar and self.registrar.lower() in (to_uri.lower(), from_uri.lower()):
            return -1  # the notices themselves are never stored
        uri = self._recipient(ctx, mode, to_uri)
        if uri is None:
            log.error("m_store: no user and domain to store the message for (To: %s)", to_uri)
            return -1
        lifetime = int(self.values["expire_time"])
        if expires_hf and expires_hf.strip().isdigit() and int(expires_hf) > 0:
            lifetime = min(lifetime, int(expires_hf))
        now = int(time.time())
        col = self.col
        values = {
            col["sc_to"]: to_uri,
            col["sc_from"]: from_uri,
            col["sc_uri_user"]: uri.user,
            col["sc_uri_host"]: uri.host,
            col["sc_body"]: body,
            col["sc_ctype"]: ctype,
            col["sc_exp_time"]: now + lifetime,
            col["sc_inc_time"]: now,
        }
        try:
            await self._write(insert(self.table).values(values))
        except DbError as e:
            log.error("m_store: cannot store the message for %s@%s: %s", uri.user, uri.host, e)
            return -1
        log.info("m_store: message from %s stored for %s@%s", from_uri, uri.user, uri.host)
        if self.registrar:
            self._notify_sender(ctx, to_uri, from_uri)
        return 1

    def _notify_sender(self, ctx: RequestContext, to_uri: str, from_uri: str) -> None:
        target = from_uri
        if self.values["use_contact"]:
            try:
                contacts = ctx.msg.contacts
            except SipParseError:
                contacts = None
            if contacts and not contacts.star and contacts[0].uri.startswith("sip:"):
                target = contacts[0].uri
        headers = [
            ("From", f"<{self.registrar}>"),
            ("To", f"<{from_uri}>"),
            ("Contact", f"<{self.registrar}>;msilo=yes"),
        ]
        body = f"User [{to_uri}{OFFLINE_NOTICE}".encode()
        self.core.spawn(self._send("notice", target, headers, body, "text/plain", None))

    # -- m_dump --------------------------------------------------------------------
    async def m_dump(self, ctx: RequestContext) -> int:
        msg = ctx.msg
        try:
            to_uri = msg.to.uri
            uri = SipUri.parse(to_uri)
            expires = msg.expires
        except SipParseError as e:
            log.error("m_dump: cannot parse the REGISTER: %s", e)
            return -1
        if expires is not None and expires <= 0:
            return -1  # the user goes offline
        if not uri.user or not uri.host:
            log.error("m_dump: no user in the To URI %s", to_uri)
            return -1
        cols = [self.col[p] for p in ("sc_mid", "sc_from", "sc_to", "sc_body", "sc_ctype", "sc_inc_time")]
        stmt = select(*cols).where(
            self.col["sc_uri_user"] == uri.user,
            self.col["sc_uri_host"] == uri.host,
            self.col["sc_exp_time"] > int(time.time()),
        )
        try:
            rows = await self.db.rows(stmt.order_by(self.col["sc_mid"]))
        except DbError as e:
            log.error("m_dump: cannot read the messages of %s: %s", to_uri, e)
            return -1
        rcv = ctx.rcv
        host = f"[{rcv.dst_ip}]" if ":" in rcv.dst_ip else rcv.dst_ip
        via_us = f"sip:{host}:{rcv.dst_port};transport={rcv.proto.name.lower()}"
        for mid, src, dst, body, ctype, inc_time in rows:
            if mid in self._in_flight:
                continue
            self._in_flight.add(mid)
            headers = [("From", f"<{src}>"), ("To", f"<{dst}>"), ("Contact", f"<{src}>;msilo=yes")]
            data = offline_body(int(inc_time), bytes(body or b""))
            self.core.spawn(self._deliver(mid, to_uri, headers, data, str(ctype or "text/plain"), via_us))
        return 1

    async def _deliver(
        self, mid: int, ruri: str, headers: list[tuple[str, str]], body: bytes, ctype: str, next_hop: str
    ) -> None:
        try:
            status = await self._send("message", ruri, headers, body, ctype, next_hop)
            if 200 <= status < 300:
                await self._write(delete(self.table).where(self.col["sc_mid"] == mid))
                log.info("msilo: message %s delivered to %s and deleted", mid, ruri)
            else:
                log.info("msilo: message %s to %s not delivered (%s); kept", mid, ruri, status)
        except DbError as e:
            log.error("msilo: message %s delivered but not deleted: %s", mid, e)
        finally:
            self._in_flight.discard(mid)

    async def _send(
        self,
        what: str,
        ruri: str,
        headers: list[tuple[str, str]],
        body: bytes,
        ctype: str,
        next_hop: str | None,
    ) -> int:
        tm: Any = self.core.module("tm")
        result = await tm.request("MESSAGE", ruri, headers, body, ctype, next_hop=next_hop)
        status: int = result.status
        log.debug("msilo: %s to %s: %s", what, ruri, status)
        return status

    # -- expiry ----------------------------------------------------------------------
    async def clean_expired(self) -> int:
        """Delete the messages past their expiry; the number deleted."""
        try:
            result = await self._write(delete(self.table).where(self.col["sc_exp_time"] <= int(time.time())))
        except DbError as e:
            log.error("msilo: cannot delete expired messages: %s", e)
            return 0
        n = int(result.rowcount or 0)
        if n:
            log.info("msilo: %d expired message(s) deleted", n)
        return n
