"""``log_tail``: the server's recent log lines from a bounded ring, over
the FIFO (one line per log line) and as data for JSON-RPC."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sipexpress.core import logging as serlog
from sipexpress.mgmt import Manager
from tests.unit.mgmt.test_fifo_server import ask


@pytest.fixture
def ring() -> Iterator[serlog.RecentLines]:
    """A small ring on the ``sipexpress`` logger in place of the server's."""
    small = serlog.RecentLines(5)
    saved, level = serlog.recent, serlog.log.level
    serlog.recent = small
    serlog.log.addHandler(small)
    serlog.log.setLevel(logging.DEBUG)
    yield small
    serlog.log.removeHandler(small)
    serlog.log.setLevel(level)
    serlog.recent = saved


async def test_ring_keeps_the_last_lines_in_order(ring: serlog.RecentLines) -> None:
    for i in range(8):
        logging.getLogger("sipexpress.tm").info("line %d", i)
    reply = await Manager({}).call("log_tail")
    assert [x["message"] for x in reply.data] == [f"line {i}" for i in range(3, 8)]
    assert [x["seq"] for x in reply.data] == list(range(4, 9))
    assert reply.data[0]["logger"] == "sipexpress.tm" and reply.data[0]["level"] == "INFO"


async def test_count_level_and_after(ring: serlog.RecentLines) -> None:
    lg = logging.getLogger("sipexpress.usrloc")
    lg.debug("dbg one")
    lg.warning("warn two")
    lg.error("err three")
    lg.log(serlog.NOTICE, "notice four")
    m = Manager({})
    assert [x["message"] for x in (await m.call("log_tail", ["2"])).data] == ["err three", "notice four"]
    warn = (await m.call("log_tail", ["10", "WARN"])).data
    assert [x["message"] for x in warn] == ["warn two", "err three"]
    after = (await m.call("log_tail", ["10", "", str(warn[0]["seq"])])).data
    assert [x["message"] for x in after] == ["err three", "notice four"]
    assert (await m.call("log_tail", ["0"])).data == []


async def test_bad_parameters_are_refused(ring: serlog.RecentLines) -> None:
    m = Manager({})
    r = await m.call("log_tail", ["ten"])
    assert (r.code, r.reason) == (400, "log_tail: the number of lines must be a number")
    r = await m.call("log_tail", ["10", "loud"])
    assert r.code == 400 and "unknown level 'loud'" in r.reason
    r = await m.call("log_tail", ["10", "err", "-1"])
    assert r.code == 400


async def test_fifo_text_one_line_per_log_line(manager: Manager, ring: serlog.RecentLines) -> None:
    logging.getLogger("sipexpress.core").error("two\nlines %s", "here")
    out = await ask(manager, "log_tail")
    status, line, end = out.split("\n")
    assert status == "200 ok" and end == ""
    assert line.startswith("1 ") and line.endswith(" ERROR: sipexpress.core: two\\nlines here")


def test_setup_logging_adds_the_ring_once() -> None:
    saved = list(serlog.log.handlers), serlog.log.level, serlog.log.propagate
    try:
        serlog.setup_logging(3, True)
        serlog.setup_logging(3, True)
        assert serlog.log.handlers.count(serlog.recent) == 1
        n = len(serlog.recent.lines)
        logging.getLogger("sipexpress.x").info("kept")
        assert serlog.recent.lines[-1].message == "kept" and len(serlog.recent.lines) == min(n + 1, 1000)
        # inside a message the ring has the same Call-ID context as stderr
        serlog.handling.msg = SimpleNamespace(call_id="abc@host")
        try:
            logging.getLogger("sipexpress.x").info("in a call")
        finally:
            serlog.handling.msg = None
        assert serlog.recent.lines[-1].message == "in a call [abc@host]"
    finally:
        for h in list(serlog.log.handlers):
            serlog.log.removeHandler(h)
        for h in saved[0]:
            serlog.log.addHandler(h)
        serlog.log.setLevel(saved[1])
        serlog.log.propagate = saved[2]
