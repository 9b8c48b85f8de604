"""db_mode 1 (write-through): a REGISTER retransmitted while the first
copy's database write is still pending is answered only after the binding
is stored (SER holds the udomain lock across save), never 200 from a memory
copy the database does not have yet (issue 5: SIPp retransmissions under
load left the location table one row short right after all 200s)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from sipexpress import db
from tests.unit.usrloc.harness import Harness


def _stored(path: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as c:
        return [tuple(r) for r in c.execute("SELECT username, contact FROM location")]


async def test_retransmission_waits_for_the_write(tmp_path: Path) -> None:
    path = tmp_path / "ul.sqlite"
    url = f"sqlite:///{path}"
    await db.create_all(url)
    h = Harness()
    await h.start(ul={"db_mode": 1, "db_url": url})
    try:
        # another writer holds SQLite's write lock: usrloc's write waits
        blocker = sqlite3.connect(path, timeout=5, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            req = h.register("jiri", ["<sip:j@10.0.0.1>"], 600, "cid-1@x", 1)
            assert h.transport is not None
            h.transport.sendto(req.encode(), ("127.0.0.1", h.port))
            await asyncio.sleep(0.1)  # the retransmission comes later, as a UA's would
            h.transport.sendto(req.encode(), ("127.0.0.1", h.port))  # the retransmission
            # neither copy is answered while the binding cannot be stored: a window, not a wait
            await asyncio.sleep(0.6)
            assert h.client.queue.empty(), await h.client.queue.get()
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        for _ in range(2):
            raw = await asyncio.wait_for(h.client.queue.get(), 5)
            assert raw.startswith(b"SIP/2.0 200 OK\r\n"), raw
            assert _stored(path) == [("jiri", "sip:j@10.0.0.1")]
        # a second AOR is not held up by the first one's lock table
        r = await h.send(h.register("alice", ["<sip:a@10.0.0.2>"], 600))
        assert r.status == 200
        loc = h.ul.domain("location")
        assert loc is not None and not loc._locks
    finally:
        await h.stop()
        await db.dispose_engines()
