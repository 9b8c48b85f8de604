"""registrar + usrloc in a real Core over UDP on loopback (memory mode)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from sipexpress.core.registry import MgmtError
from tests.unit.usrloc.harness import Harness


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    hh = Harness()
    await hh.start()
    yield hh
    await hh.stop()


async def test_register_and_lookup(h: Harness) -> None:
    r = await h.send(h.register("Jiri", ["<sip:jiri@10.0.0.1:5060>;q=0.5", "<sip:jiri@10.0.0.2>;q=1"], 600))
    assert r.status == 200 and r.reason == "OK"
    assert r.header("contact") == (
        "<sip:jiri@10.0.0.2>;q=1;expires=600, <sip:jiri@10.0.0.1:5060>;q=0.5;expires=600"
    )
    assert h.core.stats.sl_replies[200] >= 1  # counted as an sl reply
    r = await h.send(h.invite("jiri"))
    assert r.status == 302
    rc, ruri, dst, branches = h.lookups[-1]
    assert rc == 1 and ruri == "sip:jiri@10.0.0.2" and dst is None
    assert branches == [("sip:jiri@10.0.0.1:5060", 500, None)]
    assert r.header("contact") == "sip:jiri@10.0.0.2, <sip:jiri@10.0.0.1:5060>;q=0.5"


async def test_lookup_codes(h: Harness) -> None:
    r = await h.send(h.invite("nobody"))
    assert r.status == 404 and r.reason == "Not Found -3"
    await h.send(h.register("gone", ["<sip:g@10.0.0.9>"], 3600))
    # expire it in memory without waiting
    rec = h.ul.domain("location").get("gone")  # type: ignore[union-attr]
    assert rec is not None
    rec.contacts[0].expires = int(h.ul.clock()) - 1
    r = await h.send(h.invite("gone"))
    assert r.reason == "Not Found -5"


async def test_unregister_star_and_fetch(h: Harness) -> None:
    cid = "callid-1"
    await h.send(h.register("bob", ["<sip:bob@10.0.0.1>", "<sip:bob@10.0.0.2>"], 300, cid, 1))
    r = await h.send(h.register("bob", callid=cid, cseq=2))
    assert r.status == 200 and r.header("contact") is not None and r.header("contact").count("expires=") == 2  # type: ignore[union-attr]
    r = await h.send(h.register("bob", ["*"], 0, cid, 3))
    assert r.status == 200 and r.header("contact") is None
    assert h.ul.domain("location").get("bob") is None  # type: ignore[union-attr]
    r = await h.send(h.register("bob", ["*"], 60, cid, 4))
    assert r.status == 400 and r.header("p-registrar-error") == "* used in contact and expires is not zero"
    r = await h.send(h.register("bob", ["*", "<sip:x@y>"], 0, cid, 5))
    assert r.status == 400 and r.header("p-registrar-error") == "* used in contact and more than 1 contact"


async def test_too_brief_raised_to_min_expires(h: Harness) -> None:
    r = await h.send(h.register("ann", ["<sip:a@10.0.0.1>"], 10))
    assert r.status == 200 and "expires=60" in (r.header("contact") or "")


async def test_interval_too_brief_when_asked() -> None:
    h = Harness()
    await h.start(reg={"min_expires_mode": 1})
    try:
        r = await h.send(h.register("ann", ["<sip:a@10.0.0.1>"], 10))
        assert r.status == 423 and r.reason == "Interval Too Brief" and r.header("min-expires") == "60"
        assert h.ul.domain("location").get("ann") is None  # type: ignore[union-attr]
    finally:
        await h.stop()


async def test_out_of_order_does_not_remove(h: Harness) -> None:
    await h.send(h.register("ooo", ["<sip:o@10.0.0.1>"], 300, "cid-o", 10))
    r = await h.send(h.register("ooo", ["<sip:o@10.0.0.1>;expires=0"], None, "cid-o", 9))
    assert r.status == 200 and "expires=" in (r.header("contact") or "")
    r = await h.send(h.register("ooo", ["<sip:o@10.0.0.1>;expires=0"], None, "cid-o", 11))
    assert r.status == 200 and r.header("contact") is None


async def test_bad_requests(h: Harness) -> None:
    r = await h.send(h.register("", ["<sip:a@10.0.0.1>"]).replace("<sip:@127.0.0.1>", "<sip:127.0.0.1>"))
    assert r.status == 400 and r.header("p-registrar-error") == "No username in To URI"
    r = await h.send(h.register("q", ["<sip:a@10.0.0.1>;q=2"]))
    assert r.status == 400 and r.header("p-registrar-error") == "Invalid q param in contact"


async def test_mgmt_commands(h: Harness) -> None:
    ul = h.ul
    await h.send(h.register("jiri", ["<sip:jiri@195.37.78.160:14519>"], 1012))
    rep = await ul.ul_show_contact(["location", "jiri@iptel.org"])
    assert (rep.code, rep.reason) == (200, "OK")
    assert rep.text in (
        "<sip:jiri@195.37.78.160:14519>;q=;expires=1012\n",
        "<sip:jiri@195.37.78.160:14519>;q=;expires=1011\n",
    )
    rep = await ul.ul_add(
        ["location", "Jiri@iptel.org", "sip:jiri@10.1.1.1", "1000", "1.00"]
    )  # 5 lines (2003)
    assert (rep.code, rep.reason, rep.text) == (
        200,
        "Added to table",
        "('jiri','sip:jiri@10.1.1.1') to 'location'\n",
    )
    rep = await ul.ul_add(["location", "jiri", "sip:perm@10.1.1.2", "0", "0.5", "0", "128"])  # 7 lines (0.9)
    assert rep.code == 200
    rep = await ul.ul_add(["location", "jiri", "sip:x@10.1.1.3", "0", "1.00", "0"])  # 6 lines, expires 0
    assert (rep.code, rep.reason, rep.text) == (
        500,
        "Error while adding contact",
        " ('jiri','sip:x@10.1.1.3') in table 'location'\n",
    )
    rep = await ul.ul_show_contact(["location", "jiri"])
    lines = rep.text.splitlines()
    assert lines[0] == "<sip:jiri@10.1.1.1>;q=1;expires=1000"
    assert re.fullmatch(r"<sip:perm@10\.1\.1\.2>;q=0\.5;expires=(0|-\d+)", lines[1])
    assert lines[2].startswith("<sip:jiri@195.37.78.160:14519>;q=;expires=")
    stats = await ul.ul_stats([])
    assert stats.text == "Domain Registered Expired\n'location' 1 0\n"
    dump = await ul.ul_dump([])
    assert "aor   : 'jiri'" in dump.text and dump.text.startswith("===Domain list===\n")
    assert next(ln.split()[2] for ln in dump.text.splitlines() if "aor" in ln) == "'jiri'"
    rep = await ul.ul_rm_contact(["location", "jiri", "sip:jiri@10.1.1.1"])
    assert rep.reason == "Contact (jiri, sip:jiri@10.1.1.1) deleted from table location"
    with pytest.raises(MgmtError) as ei:
        await ul.ul_rm_contact(["location", "jiri", "sip:nope"])
    assert (ei.value.code, ei.value.reason) == (404, "Contact sip:nope in table location not found")
    with pytest.raises(MgmtError) as ei:
        await ul.ul_show_contact(["location", "nobody"])
    assert (ei.value.code, ei.value.reason) == (404, "Username nobody in table location not found")
    with pytest.raises(MgmtError) as ei:
        await ul.ul_show_contact(["nosuch", "jiri"])
    assert (ei.value.code, ei.value.reason) == (400, "table (nosuch) not found")
    with pytest.raises(MgmtError) as ei:
        await ul.ul_add(["nosuch", "jiri", "sip:a", "10", "1"])
    assert ei.value.reason == (
        'Table \'nosuch\' not found in memory, use save("nosuch") or lookup("nosuch") in the configuration script first'
    )
    for params, reason in [
        ([], "ul_add: table name expected"),
        (["location"], "ul_add: aor name expected"),
        (["location", "j"], "ul_add: contact expected"),
        (["location", "j", "sip:a"], "ul_add: expires expected"),
        (["location", "j", "sip:a", "10"], "ul_add: q expected"),
        (["location", "j", "sip:a", "x", "1"], "Invalid expires format"),
        (["location", "j", "sip:a", "10", "q"], "Invalid q value"),
        (["location", "j", "sip:a", "10", "1", "r"], "Invalid replicate format"),
        (["location", "j", "sip:a", "10", "1", "0", "f"], "Invalid flags format"),
    ]:
        with pytest.raises(MgmtError) as ei:
            await ul.ul_add(params)
        assert (ei.value.code, ei.value.reason) == (400, reason)
    rep = await ul.ul_rm(["location", "JIRI@iptel.org"])
    assert rep.reason == "user (location, jiri@iptel.org) deleted"
    with pytest.raises(MgmtError) as ei:
        await ul.ul_show_contact(["location", "jiri"])
    assert ei.value.code == 404
    # a record whose contacts all expired
    await ul.ul_add(["location", "late", "sip:l@1.1.1.1", "100", "1"])
    ul.domain("location").get("late").contacts[0].expires = 1  # type: ignore[union-attr]
    with pytest.raises(MgmtError) as ei:
        await ul.ul_show_contact(["location", "late"])
    assert (ei.value.code, ei.value.reason) == (404, "No registered contacts found")
    await ul.run_timer()
    assert (await ul.ul_stats([])).text == "Domain Registered Expired\n'location' 0 1\n"
    assert (await ul.ul_flush([])).reason == "ul_flush completed"


async def test_mgmt_use_domain() -> None:
    hh = Harness()
    await hh.start(ul={"use_domain": 1}, reg={"use_domain": 1})
    try:
        with pytest.raises(MgmtError) as ei:
            await hh.ul.ul_rm(["location", "jiri"])
        assert ei.value.reason == "ul_rm: username@domain expected"
        with pytest.raises(MgmtError) as ei:
            await hh.ul.ul_show_contact(["location", "jiri"])
        assert ei.value.reason == "ul_show_contact: user@domain expected"
        await hh.send(hh.register("jiri", ["<sip:j@10.0.0.1>"], 100))
        rep = await hh.ul.ul_show_contact(["location", "jiri@127.0.0.1"])
        assert rep.text.startswith("<sip:j@10.0.0.1>;q=;expires=")
    finally:
        await hh.stop()


async def test_received_sets_dst_uri_and_nat_flag(h: Harness) -> None:
    r = await h.send(
        h.register(
            "nat",
            [
                '<sip:nat@192.168.1.2:5060>;q=0.9;received="sip:198.51.100.7:40000"',
                "<sip:nat@10.9.9.9>;q=0.1",
            ],
            600,
        )
    )
    assert r.status == 200
    assert 'received="sip:198.51.100.7:40000"' in (r.header("contact") or "")
    await h.send(h.invite("nat"))
    rc, ruri, dst, branches = h.lookups[-1]
    assert (rc, ruri, dst) == (1, "sip:nat@192.168.1.2:5060", "sip:198.51.100.7:40000")
    assert branches == [("sip:nat@10.9.9.9", 100, None)]


async def test_append_branches_off_and_max_contacts() -> None:
    hh = Harness()
    await hh.start(reg={"append_branches": 0, "max_contacts": 2, "retry_after": 30})
    try:
        await hh.send(hh.register("m", ["<sip:m@10.0.0.1>", "<sip:m@10.0.0.2>"], 600))
        r = await hh.send(hh.register("m", ["<sip:m@10.0.0.3>"], 600))
        assert (r.status, r.reason) == (503, "Service Unavailable")
        assert r.header("p-registrar-error") == "Too many registered contacts"
        assert r.header("retry-after") == "30"
        await hh.send(hh.invite("m"))
        assert hh.lookups[-1][3] == []  # no branches
    finally:
        await hh.stop()
