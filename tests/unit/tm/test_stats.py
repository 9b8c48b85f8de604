"""t_stats / t_hash texts as SER printed them (fifo.md §6.1)."""

from __future__ import annotations

import asyncio

from sipexpress.core.server import Core
from sipexpress.modules.tm import TmModule
from sipexpress.modules.tm.stats import TmStats


def test_t_stats_text_exact() -> None:
    st = TmStats()
    for slot in (1, 1, 7):
        st.created(slot, local=False)
    st.created(9, local=True)
    st.waiting += 2
    st.completion(200, 0.002)
    st.completion(486, 3.0)
    st.completion(603, 0.2)
    st.replied_locally = 1
    st.freed(1, waited=True)
    declared = {s.name: s.read for s in st.statistics()}
    durations = declared["transaction_duration_seconds"]()
    assert [h.count for h in durations.values()] == [1, 0, 1, 0, 1]  # 2xx..6xx
    assert durations["4xx"].sum == 3.0
    assert TmStats.t_stats_text(lambda name: declared[name]()) == (
        "Current: 3 (1 waiting) Total: 4 (1 local)      \n"
        "Replied localy: 1      \n"
        "Completion status 6xx: 1, 5xx: 0, 4xx: 1, 3xx: 0,2xx: 1      \n"
    )
    text = st.t_hash_text()
    lines = text.splitlines()
    assert lines[0] == "\tcurrent\ttotal"
    assert len(lines) == 65537
    assert lines[2] == "1.\t1\t2"
    assert lines[8] == "7.\t1\t1"
    assert st.t_hash_data() == [
        {"slot": 1, "current": 1, "total": 2},
        {"slot": 7, "current": 1, "total": 1},
        {"slot": 9, "current": 1, "total": 1},
    ]


def test_commands_declared_and_reply() -> None:
    core = Core()
    tm = TmModule(core)
    names = {c.name for c in tm.commands()}
    assert {"t_stats", "t_hash"} <= names
    cmd = {c.name: c for c in tm.commands()}["t_stats"]
    reply = asyncio.run(cmd.handler([]))
    assert reply.code == 200 and reply.reason == "ok"
    assert reply.text.startswith("Current: 0 (0 waiting) Total: 0 (0 local)")
    assert reply.data["total"] == 0


def test_functions_declared() -> None:
    tm = TmModule(Core())
    names = {f.name for f in tm.functions()}
    for n in (
        "t_relay",
        "t_relay_to_udp",
        "t_relay_to_tcp",
        "t_newtran",
        "t_reply",
        "t_release",
        "t_on_failure",
        "t_on_negative",
        "t_on_reply",
        "t_check_status",
        "t_lookup_request",
        "t_retransmit_reply",
    ):
        assert n in names


def test_strip_top_via_fast_paths() -> None:
    from sipexpress.modules.tm.replies import _strip_top_via, _top_branch
    from sipexpress.sip.message import SipMessage

    head = b"SIP/2.0 180 Ringing\r\n"
    tail = (
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    two_lines = b"Via: SIP/2.0/UDP p:5060;branch=z9hG4bKours\r\nv: SIP/2.0/UDP u:5;branch=z9hG4bKu\r\n"
    one_line = b"Via: SIP/2.0/UDP p:5060;Branch=z9hG4bKours , SIP/2.0/UDP u:5;branch=z9hG4bKu\r\n"
    for vias in (two_lines, one_line):
        m = SipMessage.parse(head + vias + tail)
        assert _top_branch(m) == "z9hG4bKours"
        out = SipMessage.parse(_strip_top_via(m))
        assert [v.branch for v in out.vias] == ["z9hG4bKu"]
        assert out.call_id == "x"
    req = b"INVITE sip:b@c SIP/2.0\r\nv: SIP/2.0/UDP u:5;branch=z9hG4bKu\r\n" + tail[:-4] + b"\r\n\r\n"
    m = SipMessage.parse(SipMessage.parse(req).serialize_with_via("SIP/2.0/UDP p:5060;branch=z9hG4bKours"))
    assert [v.branch for v in m.vias] == ["z9hG4bKours", "z9hG4bKu"]
