"""usrloc — the user location tables (SER's ``usrloc`` module).

No script functions: registrar (``save``/``lookup``) and the management
commands (``ul_*``, fifo.md §6.3) use it through :class:`UsrlocModule`:

* ``register_domain(name)`` / ``domain(name)`` — a table (``location``,
  ``aliases``, any name a script uses), created on demand;
* :class:`Udomain` — ``get``/``fetch``/``apply``/``delete_record``.

Persistence is behind :class:`LocationStore`: SQL (SQLite, MariaDB/MySQL,
PostgreSQL) or Redis (``db_url "redis://…"``, :mod:`.redis_store`), chosen
by the scheme of ``db_url``.  See :mod:`.udomain` for the ``db_mode`` rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from sipexpress.core.periodic import Periodic
from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply, Module, Param, Statistic, StatKind
from sipexpress.db.engine import DEFAULT_TIMEOUT, DbError, redact, resolve_db_url
from sipexpress.modules.usrloc.records import (
    FIFO_CALLID,
    FIFO_CSEQ,
    FIFO_UA,
    FL_MEM,
    FL_NAT,
    FL_PERMANENT,
    Q_UNSPECIFIED,
    CState,
    Ucontact,
    Urecord,
    q2str,
    str2q,
    str2q_lenient,
)
from sipexpress.modules.usrloc.store import COLUMN_PARAMS, LocationStore, SqlLocationStore, is_redis_url
from sipexpress.modules.usrloc.udomain import DB_ONLY, NO_DB, WRITE_BACK, WRITE_THROUGH, Udomain

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.workers import Bus

log = logging.getLogger("sipexpress.usrloc")
#: records ul_dump renders between two yields to the event loop
DUMP_SLICE = 500

__all__ = [
    "DB_ONLY",
    "FL_MEM",
    "FL_NAT",
    "FL_PERMANENT",
    "NO_DB",
    "Q_UNSPECIFIED",
    "WRITE_BACK",
    "WRITE_THROUGH",
    "LocationStore",
    "SqlLocationStore",
    "Ucontact",
    "Udomain",
    "Urecord",
    "UsrlocModule",
    "q2str",
    "str2q",
]


class UsrlocModule(Module):
    name = "usrloc"
    params: ClassVar[tuple[Param, ...]] = (
        Param("db_mode", int, 0, "0 memory, 1 write-through, 2 write-back, 3 DB only"),
        Param("db_url", str, "", "database URL (SQL or redis://); empty = the global db_url option"),
        Param("timer_interval", int, 60, "seconds between expiry/sync runs"),
        Param("use_domain", int, 0, "AOR is user@domain (1) or user (0)"),
        Param("desc_time_order", int, 0, "newest contact first instead of by q"),
        Param("db_timeout", int, 3, "seconds a database operation may take (extension)"),
        Param("user_column", str, "username"),
        Param("domain_column", str, "domain"),
        Param("contact_column", str, "contact"),
        Param("expires_column", str, "expires"),
        Param("q_column", str, "q"),
        Param("callid_column", str, "callid"),
        Param("cseq_column", str, "cseq"),
        Param("method_column", str, "method"),
        Param("replicate_column", str, "replicate"),
        Param("state_column", str, "state"),
        Param("flags_column", str, "flags"),
        Param("user_agent_column", str, "user_agent"),
        Param("received_column", str, "received"),
    )

    def __init__(self, core: CoreAPI, clock: Callable[[], float] = time.time) -> None:
        super().__init__(core)
        self.clock = clock
        self.domains: dict[str, Udomain] = {}
        self.store: LocationStore | None = None
        self.db_url = ""
        self._timer: Periodic | None = None
        self._load_tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._replicate: Callable[[Udomain], None] | None = None

    # -- API for registrar and others ----------------------------------------
    @property
    def db_mode(self) -> int:
        return int(self.values["db_mode"])

    @property
    def use_domain(self) -> bool:
        return bool(self.values["use_domain"])

    def register_domain(self, name: str) -> Udomain:
        """The table ``name``, created when first asked for (SER's
        ``register_udomain``, called from save()/lookup() fix-ups)."""
        d = self.domains.get(name)
        if d is None:
            d = self.domains[name] = Udomain(
                name, self.db_mode, self._get_store(), bool(self.values["desc_time_order"])
            )
            if self._replicate:
                self._replicate(d)
            if self._started and d.db_mode != NO_DB:
                task = asyncio.get_running_loop().create_task(self._load(d))
                self._load_tasks.add(task)
                task.add_done_callback(self._load_tasks.discard)
        return d

    def domain(self, name: str) -> Udomain | None:
        return self.domains.get(name)

    def _get_store(self) -> LocationStore | None:
        if self.db_mode == NO_DB:
            return None
        if self.store is None:
            self.db_url = resolve_db_url(self.values["db_url"], self.core.options)
            timeout = float(self.values["db_timeout"] or DEFAULT_TIMEOUT)
            if is_redis_url(self.db_url):
                # imported only here: redis-py costs nothing to a server without it
                from sipexpress.modules.usrloc.redis_store import RedisLocationStore

                self.store = RedisLocationStore(self.db_url, self.use_domain, timeout)
                return self.store
            cols = {
                ours: self.values[p]
                for ours, p in COLUMN_PARAMS.items()
                if self.values[p] != ours and p in self.values
            }
            self.store = SqlLocationStore(self.db_url, self.use_domain, timeout, cols)
        return self.store

    # -- life cycle ------------------------------------------------------------
    async def start(self) -> None:
        if self.db_mode not in (NO_DB, WRITE_THROUGH, WRITE_BACK, DB_ONLY):
            from sipexpress.core.registry import ConfigError

            raise ConfigError(f"usrloc: invalid db_mode {self.db_mode}")
        if self.db_mode != NO_DB:
            from sipexpress.db.engine import SchemaVersionError
            from sipexpress.db.manage import check_versions

            store = self._get_store()
            assert store is not None
            try:
                if is_redis_url(self.db_url):  # no schema: is it there?
                    await store.prepare("location")
                else:  # SER's check: location >= 6 (7 here: + socket/path columns)
                    await check_versions(self.db_url, {"location": 7}, float(self.values["db_timeout"]))
            except SchemaVersionError as e:
                from sipexpress.core.registry import ConfigError

                raise ConfigError(f"usrloc: database {redact(self.db_url)}: {e}") from e
            except DbError as e:
                # unreachable: serve from memory, load when it comes back
                log.error("usrloc: database not available at start (%s); will retry loading", e)
            for d in list(self.domains.values()):
                await self._load(d)
        self._started = True
        self._timer = Periodic("usrloc: timer", max(1, int(self.values["timer_interval"])), self.run_timer)
        self._timer.start()
        worker = self.core.worker
        if worker is not None and worker.count > 1 and self.db_mode != DB_ONLY:
            bus = worker.bus
            bus.responders["usrloc_dump"] = self._dump
            if worker.restarted:  # the others' tables, then what they changed meanwhile
                for tables in (await bus.ask_all("usrloc_dump")).values():
                    if tables is not None:
                        for table, contacts in tables:
                            d = self.register_domain(table)
                            for t in contacts:
                                c = Ucontact.from_tuple(t)
                                d.apply_replica(c.aor, [c], ())
                        break
            self._replicate = self._replicator(bus)
            for d in self.domains.values():
                self._replicate(d)

    async def _dump(self, _arg: Any) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Every binding in memory (for a restarted worker)."""
        for d in self.domains.values():
            if d.before_read is not None:
                d.before_read()
        return [
            (n, [c.as_tuple() for r in d.records.values() for c in r.contacts])
            for n, d in self.domains.items()
        ]

    def _replicator(self, bus: Bus) -> Callable[[Udomain], None]:
        """Keep the memory tables of all worker processes equal: every
        change is sent to the other workers, which apply it to their copy;
        a read first applies what the others sent (their REGISTER was
        answered after the change was queued, so whoever asks after the
        200 OK finds the binding).  The database write stays with the
        worker that made the change."""

        def publish(table: str, aor: str, ups: Sequence[Ucontact], dels: Sequence[str]) -> None:
            bus.broadcast("usrloc", (table, aor, [c.as_tuple() for c in ups], list(dels)))

        def apply(src: int, change: tuple[str, str, list[tuple[Any, ...]], list[str]]) -> None:
            table, aor, ups, dels = change
            d = self.domains.get(table) or self.register_domain(table)
            d.apply_replica(aor, [Ucontact.from_tuple(t) for t in ups], dels)

        bus.on("usrloc", apply)

        def install(d: Udomain) -> None:
            d.on_change = publish
            d.before_read = bus.drain

        return install

    async def _load(self, d: Udomain) -> None:
        try:
            n = await d.load(self.clock())
            log.info("usrloc: loaded %d contacts into table '%s'", n, d.name)
        except DbError as e:
            log.error("usrloc: loading table '%s' failed (%s); retrying on the timer", d.name, e)
        finally:
            d.ready.set()  # serve from memory rather than wait for a dead database

    async def stop(self) -> None:
        for task in list(self._load_tasks):
            task.cancel()
        if self._timer is not None:
            await self._timer.stop()
        if self.db_mode == WRITE_BACK or self.db_mode == WRITE_THROUGH:
            for d in self.domains.values():
                try:
                    await d.flush()
                except DbError as e:
                    log.error("usrloc: final flush of '%s' failed: %s", d.name, e)
        if self.store is not None:
            await self.store.close()

    async def run_timer(self) -> None:
        now = self.clock()
        for d in list(self.domains.values()):
            if not d.loaded and d.ready.is_set():
                await self._load(d)
            try:
                await d.timer(now)
            except DbError as e:
                log.error("usrloc: timer on '%s': %s", d.name, e)
            except Exception:
                log.exception("usrloc: timer on '%s' failed", d.name)

    # -- management commands (fifo.md §6.3) ----------------------------------------
    def commands(self) -> Sequence[MgmtCommand]:
        return (
            MgmtCommand("ul_stats", self.ul_stats, "usrloc statistics per table"),
            MgmtCommand("ul_rm", self.ul_rm, "delete an AOR", "table\nAOR"),
            MgmtCommand("ul_rm_contact", self.ul_rm_contact, "delete one contact", "table\nAOR\ncontact"),
            MgmtCommand("ul_dump", self.ul_dump, "dump all tables"),
            MgmtCommand("ul_flush", self.ul_flush, "write all changes to the database"),
            MgmtCommand(
                "ul_add",
                self.ul_add,
                "add a contact",
                "table\nAOR\ncontact\nexpires\nq\n[replicate]\n[flags]",
            ),
            MgmtCommand("ul_show_contact", self.ul_show_contact, "list an AOR's contacts", "table\nAOR"),
        )

    def _aor(self, cmd: str, given: str, at_word: str = "username@domain") -> str:
        """SER: cut at '@' without use_domain, require it with; lower-case."""
        if self.use_domain:
            if "@" not in given:
                raise MgmtError(400, f"{cmd}: {at_word} expected")
            return given.lower()
        return given.split("@", 1)[0].lower()

    @staticmethod
    def _param(params: list[str], i: int) -> str:
        return params[i].strip() if len(params) > i else ""

    def _shown_user(self, given: str) -> str:
        """The user string as SER printed it: the AOR part lower-cased in
        place, the rest (a cut-off @domain) as given."""
        cut = len(given) if self.use_domain else len(given.split("@", 1)[0])
        return given[:cut].lower() + given[cut:]

    def statistics(self) -> Sequence[Statistic]:
        domains = self.domains
        g = StatKind.GAUGE
        return (
            Statistic(
                "users", lambda: {n: d.users for n, d in domains.items()}, "AORs registered", g, "domain"
            ),
            Statistic(
                "contacts",
                lambda: {n: sum(len(r.contacts) for r in d.records.values()) for n, d in domains.items()},
                "contacts registered (kept in memory: none with db_mode 3)",
                g,
                "domain",
            ),
            Statistic(
                "expired_contacts",
                lambda: {n: d.expired for n, d in domains.items()},
                "contacts removed by the timer",
                StatKind.COUNTER,
                "domain",
            ),
        )

    async def ul_stats(self, params: list[str]) -> MgmtReply:
        users, expired = self.statistic("users"), self.statistic("expired_contacts")
        data = [{"domain": name, "users": users[name], "expired": expired.get(name, 0)} for name in users]
        text = "Domain Registered Expired\n" + "".join(
            f"'{x['domain']}' {x['users']} {x['expired']}\n" for x in data
        )
        return MgmtReply(200, "ok", data, text)

    async def ul_rm(self, params: list[str]) -> MgmtReply:
        table = self._param(params, 0)
        if not table:
            raise MgmtError(400, "ul_rm: table name expected")
        user = self._param(params, 1)
        if not user:
            raise MgmtError(400, "ul_rm: user name expected")
        aor = self._aor("ul_rm", user)
        d = self.domains.get(table)
        if d is None:
            raise MgmtError(400, f"table ({table}) not found")
        shown = self._shown_user(user)
        try:
            await d.delete_record(aor)
        except DbError as e:
            log.error("ul_rm: %s", e)
            raise MgmtError(500, f"Error while deleting user {shown}") from e
        return MgmtReply(200, f"user ({table}, {shown}) deleted", {"table": table, "aor": aor}, "")

    async def ul_rm_contact(self, params: list[str]) -> MgmtReply:
        table = self._param(params, 0)
        if not table:
            raise MgmtError(400, "ul_rm_contact: table name expected")
        user = self._param(params, 1)
        if not user:
            raise MgmtError(400, "ul_rm_contact: user name expected")
        aor = self._aor("ul_rm_contact", user, "user@domain")
        contact = self._param(params, 2)
        if not contact:
            raise MgmtError(400, "ul_rm_contact: contact expected")
        d, rec, shown = await self._existing_record(table, user, aor)
        if rec.find(contact) is None:
            raise MgmtError(404, f"Contact {contact} in table {table} not found")
        try:
            await d.apply(aor, (), [contact])
        except DbError as e:
            raise MgmtError(500, f"ul_rm_contact: Error while deleting contact {contact}") from e
        return MgmtReply(
            200,
            f"Contact ({shown}, {contact}) deleted from table {table}",
            {"table": table, "aor": aor, "contact": contact},
            "",
        )

    async def _existing_record(self, table: str, user: str, aor: str) -> tuple[Udomain, Urecord, str]:
        """The table, the AOR's record and the user as SER printed it; the
        FIFO error replies of ul_rm_contact/ul_show_contact otherwise."""
        d = self.domains.get(table)
        if d is None:
            raise MgmtError(400, f"table ({table}) not found")
        shown = self._shown_user(user)
        try:
            rec = await d.fetch(aor)
        except DbError as e:
            raise MgmtError(500, f"Error while looking for username {shown} in table {table}") from e
        if rec is None:
            raise MgmtError(404, f"Username {shown} in table {table} not found")
        return d, rec, shown

    async def ul_show_contact(self, params: list[str]) -> MgmtReply:
        table = self._param(params, 0)
        if not table:
            raise MgmtError(400, "ul_show_contact: table name expected")
        user = self._param(params, 1)
        if not user:
            raise MgmtError(400, "ul_show_contact: user name expected")
        aor = self._aor("ul_show_contact", user, "user@domain")
        _, rec, _ = await self._existing_record(table, user, aor)
        now = self.clock()
        valid = rec.valid_contacts(now)
        if not valid:
            raise MgmtError(404, "No registered contacts found")
        data = [
            {"contact": c.uri, "q": q2str(c.q), "expires": c.remaining(now), "flags": c.flags} for c in valid
        ]
        text = "".join(f"<{x['contact']}>;q={x['q']};expires={x['expires']}\n" for x in data)
        return MgmtReply(200, "OK", data, text)

    async def ul_flush(self, params: list[str]) -> MgmtReply:
        for d in self.domains.values():
            try:
                await d.flush()
            except DbError as e:
                log.error("ul_flush: %s", e)
        # SER's reply has no trailing newline: "200 ul_flush completed"
        return MgmtReply(200, "ul_flush completed", None, "", eol=False)

    async def ul_add(self, params: list[str]) -> MgmtReply:
        names = ("table name", "aor name", None, "contact", "expires", "q")
        table = self._param(params, 0)
        if not table:
            raise MgmtError(400, f"ul_add: {names[0]} expected")
        user = self._param(params, 1)
        if not user:
            raise MgmtError(400, f"ul_add: {names[1]} expected")
        if self.use_domain and "@" not in user:
            raise MgmtError(400, "ul_add: username@domain expected")
        aor = (user if self.use_domain else user.split("@", 1)[0]).lower()
        contact, expires_s, q_s = self._param(params, 2), self._param(params, 3), self._param(params, 4)
        if not contact:
            raise MgmtError(400, "ul_add: contact expected")
        if not expires_s:
            raise MgmtError(400, "ul_add: expires expected")
        if not q_s:
            raise MgmtError(400, "ul_add: q expected")
        # 0.8.11 added the replicate line, 0.9 the flags line: both optional
        rep_s = self._param(params, 5) if len(params) > 5 else "0"
        flags_s = self._param(params, 6) if len(params) > 6 else "0"
        if len(params) > 5 and not rep_s:
            raise MgmtError(400, "ul_add: replicate expected")
        if len(params) > 6 and not flags_s:
            raise MgmtError(400, "ul_add: flags expected")
        d = self.domains.get(table)
        if d is None:
            raise MgmtError(
                400,
                f"Table '{table}' not found in memory, use save(\"{table}\") or "
                f'lookup("{table}") in the configuration script first',
            )
        if not expires_s.isdigit():
            raise MgmtError(400, "Invalid expires format")
        try:
            q = str2q_lenient(q_s)
        except ValueError:
            raise MgmtError(400, "Invalid q value") from None
        if not rep_s.isdigit():
            raise MgmtError(400, "Invalid replicate format")
        if not flags_s.isdigit():
            raise MgmtError(400, "Invalid flags format")
        expires, rep, flags = int(expires_s), int(rep_s), int(flags_s)
        failure = MgmtReply(
            500,
            "Error while adding contact",
            None,
            f" ('{aor}','{contact}') in table '{table}'\n",
        )
        if expires == 0 and not flags & FL_PERMANENT:
            log.error("ul_add: expires == 0 and not persistent contact, giving up")
            return failure
        now = int(self.clock())
        c = Ucontact(
            aor=aor,
            uri=contact,
            expires=now + expires,
            q=q,
            callid=FIFO_CALLID,
            cseq=FIFO_CSEQ,
            flags=flags,
            replicate=rep,
            user_agent=FIFO_UA,
            state=CState.CS_NEW,
        )
        try:
            await d.apply(aor, [c], ())
        except DbError as e:
            log.error("ul_add: %s", e)
            return failure
        return MgmtReply(
            200,
            "Added to table",
            {"table": table, "aor": aor, "contact": contact},
            f"('{aor}','{contact}') to '{table}'\n",
        )

    async def ul_dump(self, params: list[str]) -> MgmtReply:
        now = int(self.clock())
        out = ["===Domain list===\n"]
        data: list[dict[str, Any]] = []
        for d in list(self.domains.values()):
            try:
                recs = await d.snapshot(now)
            except DbError as e:
                log.error("ul_dump: %s", e)
                raise MgmtError(500, f"ul_dump: table {d.name}: database error") from e
            out.append(
                f"---Domain---\nname : '{d.name}'\nsize : 512\ntable: 0x{id(d):x}\n"
                f"d_ll {{\n    n    : {len(recs)}\n"
                f"    first: {self._ptr(recs[0] if recs else None)}\n"
                f"    last : {self._ptr(recs[-1] if recs else None)}\n}}\n\n"
            )
            drecs: list[dict[str, Any]] = []
            for n, r in enumerate(recs, 1):
                if n % DUMP_SLICE == 0:
                    await asyncio.sleep(0)  # a dump of 100 000 bindings must not stall SIP
                out.append(f"...Record({self._ptr(r)})...\ndomain: '{d.name}'\naor   : '{r.aor}'\n")
                cl: list[dict[str, Any]] = []
                for i, c in enumerate(r.contacts):
                    nxt = r.contacts[i + 1] if i + 1 < len(r.contacts) else None
                    prv = r.contacts[i - 1] if i > 0 else None
                    out.append(
                        f"~~~Contact({self._ptr(c)})~~~\n"
                        f"domain    : '{d.name}'\n"
                        f"aor       : '{c.aor}'\n"
                        f"Contact   : '{c.uri}'\n"
                        f"Expires   : {c.remaining(now)}\n"
                        f"q         : {q2str(c.q)}\n"
                        f"Call-ID   : '{c.callid}'\n"
                        f"CSeq      : {c.cseq}\n"
                        f"replic    : {c.replicate}\n"
                        f"User-Agent: '{c.user_agent}'\n"
                        f"received  : '{c.received or ''}'\n"
                        f"State     : {c.state.name}\n"
                        f"Flags     : {c.flags}\n"
                        f"next      : {self._ptr(nxt)}\n"
                        f"prev      : {self._ptr(prv)}\n"
                        "~~~/Contact~~~~\n"
                    )
                    cl.append(
                        {
                            "contact": c.uri,
                            "expires": c.remaining(now),
                            "q": q2str(c.q),
                            "callid": c.callid,
                            "cseq": c.cseq,
                            "user_agent": c.user_agent,
                            "received": c.received or "",
                            "socket": c.socket or "",
                            "source": source_address(c.source),
                            "flags": c.flags,
                            "state": c.state.name,
                        }
                    )
                out.append(".../Record...\n")
                drecs.append({"aor": r.aor, "contacts": cl})
            out.append("\n---/Domain---\n")
            data.append({"domain": d.name, "records": drecs})
        out.append("===/Domain list===\n")
        return MgmtReply(200, "ok", data, "".join(out))

    @staticmethod
    def _ptr(o: object | None) -> str:
        return "(nil)" if o is None else f"0x{id(o):x}"


def source_address(source: tuple[str, int] | None) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) of a binding's source, or ""."""
    if source is None:
        return ""
    ip, port = source
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
