"""A usrloc table ("domain" in SER's words): AOR -> record, kept in memory
and synchronised with a :class:`LocationStore` according to ``db_mode``.

Theory of operation
-------------------
* ``db_mode`` 0: memory only.
* 1 write-through: every change is written to the store and committed
  first, and only then applied in memory; the caller (registrar's 200 OK)
  continues only after the commit.  A failed or timed-out write changes
  nothing, is logged and reaches the caller as DbError (save replies 500),
  so a binding that was acknowledged survives a ``kill -9`` at any moment.
  The writes of concurrent requests share transactions (:class:`GroupCommit`):
  one commit per round instead of one per REGISTER, which is what lets a
  database that fsyncs every commit (SQLite) keep up with a registration
  storm.
* 2 write-back: changes are applied in memory and marked dirty; the timer
  (every ``timer_interval``) writes all dirty bindings in one transaction.
* 3 DB only: no memory copy; every read and write goes to the store, and
  errors reach the caller (lookup returns -2, save replies 500).

Changes are applied to memory synchronously (mode 1: right after the
commit), so concurrent requests for one AOR never see a half-applied update.  In
modes 0 and 2 (once loaded, :meth:`Udomain.sync_writes`) nothing needs an
``await`` at all: :meth:`Udomain.apply_now` is :meth:`Udomain.apply`
without suspending (registrar's REGISTER hot path).

In modes 1 and 3 a read-modify-write of one AOR (registrar's save: fetch,
plan, apply) awaits the store, so it runs under :meth:`Udomain.lock`
(SER's ``lock_udomain``): a second REGISTER for the AOR (a retransmission
above all) waits until the first one's write is committed instead of
answering 200 from a memory copy that is not stored yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from sipexpress.db.engine import DbDataError, DbError
from sipexpress.modules.usrloc.records import FL_MEM, CState, Ucontact, Urecord
from sipexpress.modules.usrloc.store import LocationStore

log = logging.getLogger("sipexpress.usrloc")

NO_DB, WRITE_THROUGH, WRITE_BACK, DB_ONLY = 0, 1, 2, 3


class _NoLock:
    """The lock of the memory modes: nothing to wait for."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


class _AorLock:
    """One AOR's lock, dropped from the table when nobody holds or waits."""

    __slots__ = ("aor", "locks")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], aor: str) -> None:
        self.locks = locks
        self.aor = aor

    async def __aenter__(self) -> None:
        entry = self.locks.get(self.aor)
        if entry is None:
            entry = self.locks[self.aor] = (asyncio.Lock(), [0])
        entry[1][0] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._drop(entry)
            raise

    async def __aexit__(self, *exc: object) -> None:
        entry = self.locks[self.aor]
        entry[0].release()
        self._drop(entry)

    def _drop(self, entry: tuple[asyncio.Lock, list[int]]) -> None:
        entry[1][0] -= 1
        if not entry[1][0]:
            del self.locks[self.aor]


class GroupCommit:
    """Write-through writes committed together: the writes queued while one
    transaction runs go into the next one; each caller returns once the
    commit holding its rows is done, or gets its DbError.  A data error
    (one row the database refuses) is retried write by write, so that it
    fails only its own request.  Concurrent writes never touch the same AOR
    (the caller holds the AOR's lock), so their order does not matter."""

    def __init__(self, store: LocationStore, table: str) -> None:
        self.store = store
        self.table = table
        self._queue: list[tuple[Sequence[Ucontact], Sequence[tuple[str, str]], asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def write(self, ups: Sequence[Ucontact], dels: Sequence[tuple[str, str]]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((ups, dels, fut))
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        await fut

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self.store.write(
                        self.table, [c for b in batch for c in b[0]], [d for b in batch for d in b[1]]
                    )
                except DbDataError as e:
                    if len(batch) == 1:
                        self._settle(batch[0][2], e)
                    else:
                        await self._one_by_one(batch)
                except DbError as e:
                    for *_, fut in batch:
                        self._settle(fut, e)
                else:
                    for *_, fut in batch:
                        self._settle(fut, None)
        finally:
            self._runner = None

    async def _one_by_one(
        self, batch: list[tuple[Sequence[Ucontact], Sequence[tuple[str, str]], asyncio.Future[None]]]
    ) -> None:
        for ups, dels, fut in batch:
            try:
                await self.store.write(self.table, ups, dels)
            except DbError as e:
                self._settle(fut, e)
            else:
                self._settle(fut, None)

    @staticmethod
    def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
        if fut.done():  # the request was cancelled (shutdown)
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class Udomain:
    def __init__(
        self,
        name: str,
        db_mode: int = NO_DB,
        store: LocationStore | None = None,
        desc_time_order: bool = False,
    ) -> None:
        self.name = name
        self.db_mode = db_mode if store is not None else NO_DB
        self.store = store
        self.desc_time_order = desc_time_order
        self.records: dict[str, Urecord] = {}
        # (aor, uri) -> binding to write, or None to delete (modes 1 and 2)
        self.dirty: dict[tuple[str, str], Ucontact | None] = {}
        self.expired = 0  # contacts removed by the timer (ul_stats)
        self.db_users = 0  # mode 3: AOR count as of the last timer run
        self.loaded = self.db_mode == NO_DB
        # Set once the first load attempt is over (success or not).  The
        # core may hand us requests before the modules' start-up finished,
        # and Python routing scripts register tables lazily: readers and
        # writers wait for the stored bindings instead of missing them.
        self.ready = asyncio.Event()
        if self.db_mode in (NO_DB, DB_ONLY):
            self.ready.set()
        # modes 1 and 3: aor -> (lock, [holders + waiters])
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.commits = GroupCommit(store, name) if store is not None else None
        # with several worker processes (UsrlocModule.replicate): told every
        # change of the memory table, called before every read of it
        self.on_change: Callable[[str, str, Sequence[Ucontact], Sequence[str]], None] | None = None
        self.before_read: Callable[[], None] | None = None

    def lock(self, aor: str) -> _AorLock | _NoLock:
        """``async with d.lock(aor):`` around a read-modify-write of the AOR
        whose write awaits the store (modes 1 and 3); a no-op otherwise."""
        if self.db_mode == WRITE_THROUGH or self.db_mode == DB_ONLY:
            return _AorLock(self._locks, aor)
        return _NO_LOCK

    # -- reading -------------------------------------------------------------
    @property
    def users(self) -> int:
        return self.db_users if self.db_mode == DB_ONLY else len(self.records)

    def get(self, aor: str) -> Urecord | None:
        """The live in-memory record (memory modes only)."""
        if self.before_read is not None:
            self.before_read()
        return self.records.get(aor)

    async def fetch(self, aor: str) -> Urecord | None:
        """The record, from memory or (mode 3) from the store.  In mode 3
        the result is a snapshot.  Raises DbError in mode 3."""
        if not self.ready.is_set():
            await self.ready.wait()
        if self.db_mode != DB_ONLY:
            if self.before_read is not None:
                self.before_read()
            return self.records.get(aor)
        assert self.store is not None
        rows = await self.store.get(self.name, aor)
        if not rows:
            return None
        rec = Urecord(aor)
        for c in sorted(rows, key=lambda c: -c.q):
            rec.contacts.append(c)
        return rec

    async def snapshot(self, now: float) -> list[Urecord]:
        """Every record (ul_dump): the live memory records, or in mode 3
        the store's valid bindings grouped by AOR.  Raises DbError in mode 3."""
        if self.db_mode != DB_ONLY:
            return list(self.records.values())
        assert self.store is not None
        out: dict[str, Urecord] = {}
        for c in sorted(await self.store.load(self.name, now), key=lambda c: (c.aor, -c.q)):
            out.setdefault(c.aor, Urecord(c.aor)).contacts.append(c)
        return list(out.values())

    # -- writing -------------------------------------------------------------
    def sync_writes(self) -> bool:
        """True when a read-modify-write needs no ``await`` (modes 0 and 2
        once loaded): :meth:`apply_now` then does all of :meth:`apply`."""
        return self.db_mode == NO_DB or (self.db_mode == WRITE_BACK and self.ready.is_set())

    def apply_now(self, aor: str, upserts: Sequence[Ucontact], deletes: Sequence[str]) -> None:
        """:meth:`apply` for modes 0 and 2 (memory, then write-back marks),
        without an ``await``.  Only when :meth:`sync_writes` is True."""
        self._apply_mem(aor, upserts, deletes)
        if self.db_mode == WRITE_BACK:
            ups = [c for c in upserts if not c.flags & FL_MEM]
            if ups or deletes:
                self._mark(ups, [(aor, uri) for uri in deletes])

    def _apply_mem(self, aor: str, upserts: Sequence[Ucontact], deletes: Sequence[str]) -> None:
        if self.on_change is not None:
            self.on_change(self.name, aor, upserts, deletes)
        self.apply_replica(aor, upserts, deletes)

    def apply_replica(self, aor: str, upserts: Sequence[Ucontact], deletes: Sequence[str]) -> None:
        """Change the memory table only (also: another worker's change)."""
        records = self.records
        rec = records.get(aor)
        if rec is None:
            if not upserts:
                return
            if len(upserts) == 1:  # a new AOR with one binding: the usual REGISTER
                records[aor] = Urecord(aor, [upserts[0]])
                return
            rec = records[aor] = Urecord(aor)
        contacts = rec.contacts
        for uri in deletes:
            old = rec.find(uri)
            if old is not None:
                contacts.remove(old)
        dto = self.desc_time_order
        for c in upserts:
            uri = c.uri
            if len(contacts) == 1 and contacts[0].uri == uri:  # a refresh
                contacts[0] = c
                continue
            old = rec.find(uri)
            if old is not None:
                contacts.remove(old)
            rec.place(c, dto)
        if not contacts:
            del records[aor]

    async def apply(self, aor: str, upserts: Sequence[Ucontact], deletes: Sequence[str]) -> None:
        """Replace/insert ``upserts`` and remove the contacts ``deletes`` of
        ``aor`` (memory and the store per db_mode).  Raises DbError in modes
        1 and 3, and then nothing has changed."""
        if not self.ready.is_set():
            await self.ready.wait()
        ups = [c for c in upserts if not c.flags & FL_MEM]
        dels = [(aor, uri) for uri in deletes]
        if self.db_mode in (WRITE_THROUGH, DB_ONLY) and (ups or dels):
            assert self.commits is not None
            try:
                await self.commits.write(ups, dels)
            except DbError as e:
                log.error("usrloc %s: writing %s failed, nothing changed: %s", self.name, aor, e)
                raise
            for c in ups:
                c.state = CState.CS_SYNC
        if self.db_mode != DB_ONLY:
            self._apply_mem(aor, upserts, deletes)
        if self.db_mode == WRITE_BACK and (ups or dels):
            self._mark(ups, dels)

    def _mark(self, ups: Sequence[Ucontact], dels: Sequence[tuple[str, str]]) -> None:
        for key in dels:
            self.dirty[key] = None
        for c in ups:
            c.state = CState.CS_DIRTY
            self.dirty[(c.aor, c.uri)] = c

    async def delete_record(self, aor: str) -> bool:
        """Remove the AOR and all its bindings.  False if it did not exist
        (memory modes).  Raises DbError in modes 1 and 3."""
        if self.db_mode == DB_ONLY:
            assert self.store is not None
            await self.store.delete_aor(self.name, aor)
            return True
        rec = self.records.get(aor)
        if rec is None:
            return False
        await self.apply(aor, (), [c.uri for c in rec.contacts])
        self.records.pop(aor, None)  # memory-only bindings go too
        return True

    # -- timer ---------------------------------------------------------------
    async def timer(self, now: float) -> None:
        """Expire bindings and synchronise with the store (SER's
        ``timer_udomain``)."""
        if self.db_mode != DB_ONLY:
            empty: list[str] = []
            for aor, rec in self.records.items():
                gone = rec.expire(now)
                if gone:
                    self.expired += len(gone)
                    if self.db_mode != NO_DB:
                        for c in gone:
                            self.dirty.pop((aor, c.uri), None)
                    if not rec.contacts:
                        empty.append(aor)
            for aor in empty:
                del self.records[aor]
        if self.db_mode == NO_DB or self.store is None:
            return
        await self.flush()
        n = await self.store.delete_expired(self.name, now)
        if self.db_mode == DB_ONLY:
            self.expired += n
            self.db_users = await self.store.count_aors(self.name)

    async def flush(self) -> None:
        """Write every dirty binding now (``ul_flush``; write-back timer)."""
        if not self.dirty or self.store is None:
            return
        batch, self.dirty = self.dirty, {}
        ups = [c for c in batch.values() if c is not None]
        dels = [k for k, c in batch.items() if c is None]
        try:
            await self.store.write(self.name, ups, dels)
        except DbDataError as e:
            # one bad row must not block every later flush: write them one
            # by one and drop (log) those the database refuses
            log.error("usrloc %s: batch write refused (%s); writing row by row", self.name, e)
            await self._write_each(ups, dels)
        except DbError:
            for k, c in batch.items():  # keep newer changes made meanwhile
                self.dirty.setdefault(k, c)
            raise
        for c in ups:
            if self.dirty.get((c.aor, c.uri)) is None:
                c.state = CState.CS_SYNC

    async def _write_each(self, ups: Sequence[Ucontact], dels: Sequence[tuple[str, str]]) -> None:
        assert self.store is not None
        for key in dels:
            try:
                await self.store.write(self.name, (), [key])
            except DbDataError as e:
                log.error("usrloc %s: dropping delete of %s: %s", self.name, key, e)
        for c in ups:
            try:
                await self.store.write(self.name, [c], ())
            except DbDataError as e:
                log.error("usrloc %s: dropping binding %s of %s: %s", self.name, c.uri, c.aor, e)

    async def load(self, now: float) -> int:
        """Fill memory from the store (start-up, modes 1 and 2)."""
        if self.db_mode == NO_DB or self.store is None:
            self.loaded = True
            return 0
        await self.store.prepare(self.name)
        if self.db_mode == DB_ONLY:
            self.db_users = await self.store.count_aors(self.name)
            self.loaded = True
            return 0
        rows = await self.store.load(self.name, now)
        for c in sorted(rows, key=lambda c: -c.q):
            rec = self.records.get(c.aor)
            if rec is None:
                rec = self.records[c.aor] = Urecord(c.aor)
            if rec.find(c.uri) is None:
                rec.contacts.append(c)
        self.loaded = True
        return len(rows)
