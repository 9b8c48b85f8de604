"""domain — is a domain one of ours? (SER 0.9 ``modules_s/domain``).

Script functions (request route):

``is_from_local()``
    1 if the host of the From URI is in the ``domain`` table, else −1.
``is_uri_host_local()``
    1 if the host of the current Request-URI is, else −1.

Domains are compared case-insensitively.  With ``db_mode`` = 0 every call
queries the table; with ``db_mode`` = 1 the table is read once at start
into memory and again on the management command ``domain_reload``
(``domain_dump`` lists the cache).  Both commands exist only with
``db_mode`` = 1, as in SER (fifo.md §6.4)::

    domain_reload  ->  "200 OK\\n"  or  "400 Domain table reload failed\\n"
    domain_dump    ->  "200 OK\\n" + one "%4d %s\\n" line per domain:
                       SER's hash bucket (0..127) and the domain as stored

A reload builds a new set and swaps it in whole, so lookups never see a
half-loaded table.  If the reload fails the old cache stays.

Parameters: ``db_url``, ``db_timeout`` (ms), ``db_mode`` 0,
``domain_table`` ``domain``, ``domain_col`` ``domain`` (2003:
``domain_domain_column``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from sipexpress.core.registry import (
    ConfigError,
    MgmtCommand,
    MgmtError,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
)
from sipexpress.db.engine import DbError
from sipexpress.modules._dbquery import DB_PARAMS, DbLookup, ident, make_table
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.domain")

HASH_SIZE = 128


def ser_hash(domain: str) -> int:
    """SER's ``hash()`` of ``modules_s/domain/hash.c``: h = h*31 + c over
    the (signed) chars, unsigned 32-bit, modulo 128."""
    h = 0
    for b in domain.encode("utf-8", "surrogateescape"):
        h = (h * 31 + (b - 256 if b >= 128 else b)) & 0xFFFFFFFF
    return h % HASH_SIZE


class DomainCache:
    """The in-memory copy of the domain table (``db_mode`` = 1)."""

    __slots__ = ("_buckets", "_names")

    def __init__(self, domains: Sequence[str] = ()) -> None:
        self._names = frozenset(d.lower() for d in domains)
        buckets: list[list[str]] = [[] for _ in range(HASH_SIZE)]
        for d in domains:
            buckets[ser_hash(d)].insert(0, d)  # SER prepends to the bucket's list
        self._buckets = buckets

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and host.lower() in self._names

    def __len__(self) -> int:
        return len(self._names)

    def dump(self) -> list[tuple[int, str]]:
        return [(i, d) for i, b in enumerate(self._buckets) for d in b]


class DomainModule(Module):
    name = "domain"
    params = (
        *DB_PARAMS,
        Param("db_mode", int, 0, "0: query the table every time; 1: cache it in memory"),
        Param("domain_table", str, "domain", "table of local domains"),
        Param("domain_col", str, "domain", "domain column"),
        Param("domain_domain_column", str, "", "2003 name of domain_col"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.db = DbLookup(self)
        self.cache = DomainCache()

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction("is_from_local", self.is_from_local, (0,), None, r, True, "From host is local"),
            ScriptFunction(
                "is_uri_host_local", self.is_uri_host_local, (0,), None, r, True, "RURI host is local"
            ),
        )

    def commands(self) -> Sequence[MgmtCommand]:
        if int(self.values["db_mode"]) != 1:
            return ()
        return (
            MgmtCommand("domain_reload", self._cmd_reload, "reload the domain table into the cache"),
            MgmtCommand("domain_dump", self._cmd_dump, "list the cached domains (hash bucket, domain)"),
        )

    async def start(self) -> None:
        v = self.values
        if v["domain_domain_column"]:
            v["domain_col"] = v["domain_domain_column"]
        v["domain_table"] = ident(str(v["domain_table"]))
        v["domain_col"] = ident(str(v["domain_col"]))
        if int(v["db_mode"]) not in (0, 1):
            raise ConfigError("domain: db_mode must be 0 or 1")
        self.db.configure()
        await self.db.check_versions({"domain": 1} if v["domain_table"] == "domain" else {})
        if int(v["db_mode"]) == 1:
            try:
                await self.reload()
            except DbError as e:
                raise ConfigError(f"domain: cannot load the domain table: {e}") from None

    # -- table access -------------------------------------------------------
    async def reload(self) -> int:
        """Read the whole table into a new cache and swap it in.  Raises DbError."""
        v = self.values
        t = make_table(v["domain_table"], v["domain_col"])
        rows = await self.db.rows(select(t.c[v["domain_col"]]))
        self.cache = DomainCache([str(r[0]) for r in rows if r[0] is not None])
        log.info("domain: %d domains loaded", len(self.cache))
        return len(self.cache)

    async def is_domain_local(self, host: str) -> int:
        """1 if ``host`` is in the domain table, −1 if not or on error."""
        v = self.values
        if int(v["db_mode"]) == 1:
            return 1 if host in self.cache else -1
        t = make_table(v["domain_table"], v["domain_col"])
        col = t.c[v["domain_col"]]
        try:
            rows = await self.db.rows(select(col).where(func.lower(col) == host.lower()).limit(1))
        except DbError as e:
            log.error("domain: error while querying database: %s", e)
            return -1
        return 1 if rows else -1

    # -- script functions -----------------------------------------------------
    async def is_from_local(self, ctx: RequestContext) -> int:
        try:
            host = SipUri.parse(ctx.msg.from_.uri).host
        except SipParseError as e:
            log.error("is_from_local: error while parsing From: %s", e)
            return -2
        return await self.is_domain_local(host)

    async def is_uri_host_local(self, ctx: RequestContext) -> int:
        try:
            host = ctx.parsed_ruri.host
        except SipParseError as e:
            log.error("is_uri_host_local: error while parsing URI: %s", e)
            return -1
        return await self.is_domain_local(host)

    # -- management -------------------------------------------------------------
    async def _cmd_reload(self, params: list[str]) -> MgmtReply:
        try:
            n = await self.reload()
        except DbError as e:
            log.error("domain_reload: %s", e)
            raise MgmtError(400, "Domain table reload failed") from None
        return MgmtReply(200, "OK", data={"domains": n})

    async def _cmd_dump(self, params: list[str]) -> MgmtReply:
        entries = self.cache.dump()
        text = "".join(f"{i:4d} {d}\n" for i, d in entries)
        return MgmtReply(200, "OK", data=[{"hash": i, "domain": d} for i, d in entries], text=text)
