"""The registrar's fast paths give what the general code gives: the
one-Contact planner against the general planner, ``Udomain.apply_now``
against ``apply``, and a save in db_mode 0 that never suspends."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from sipexpress.core.context import Proto, ReceiveInfo, RequestContext
from sipexpress.core.registry import RouteType
from sipexpress.core.server import Core
from sipexpress.modules.registrar import (
    ContactSpec,
    RegisterConfig,
    RegisterPlan,
    RegisterRequest,
    RegistrarModule,
    _plan_general,
    _plan_one,
    contact_header,
)
from sipexpress.modules.usrloc import Ucontact, Udomain, Urecord
from sipexpress.sip.message import SipMessage

NOW = 1_000_000.5


def _key(c: Ucontact) -> tuple[Any, ...]:
    return dataclasses.astuple(c)


def _plan_key(p: RegisterPlan) -> tuple[Any, ...]:
    return ([_key(c) for c in p.upserts], p.deletes, [_key(c) for c in p.result], p.error, p.min_expires)


def _case(rnd: random.Random) -> tuple[Urecord | None, RegisterRequest, RegisterConfig]:
    contacts: list[Ucontact] = []
    for uri in rnd.sample(["sip:a", "sip:b", "sip:c"], rnd.choice([0, 1, 1, 2, 3])):
        contacts.append(
            Ucontact(
                "a",
                uri,
                int(NOW) + rnd.choice([-10, 0, 5, 100, 3600]),
                rnd.choice([-1, 0, 500, 1000]),
                rnd.choice(["c1", "c2"]),
                rnd.choice([1, 2, 3]),
                rnd.choice([0, 1, 128]),
                received=rnd.choice([None, "sip:x:5"]),
            )
        )
    rec = Urecord("a", contacts) if contacts or rnd.random() < 0.5 else None
    spec = ContactSpec(
        rnd.choice(["sip:a", "sip:b", "sip:d"]),
        rnd.choice([None, None, "0", "30", "3600", "x", '"70"']),
        rnd.choice([None, None, "0.5", "1", "7"]),
        rnd.choice([None, "r"]),
    )
    req = RegisterRequest(
        "a",
        rnd.choice(["c1", "c2"]),
        rnd.choice([1, 2, 3, 4]),
        False,
        [spec],
        rnd.choice([None, 0, 10, 3600]),
        "UA",
        rnd.choice([None, "rr"]),
        rnd.choice([0, 1]),
        "udp:127.0.0.1:5060",
    )
    cfg = RegisterConfig(
        default_q=rnd.choice([-1, 300]),
        min_expires=rnd.choice([0, 60]),
        max_expires=rnd.choice([0, 1000]),
        max_contacts=rnd.choice([0, 1, 2]),
        min_expires_mode=rnd.choice([0, 1]),
        desc_time_order=rnd.random() < 0.3,
    )
    return rec, req, cfg


def test_one_contact_plan_matches_the_general_plan() -> None:
    rnd = random.Random(5)
    fast = 0
    for _ in range(20_000):
        rec, req, cfg = _case(rnd)
        general = _plan_general(rec, req, NOW, cfg)
        one = _plan_one(rec, req, NOW, cfg)
        if one is None:  # left to the general code: a removal
            assert general.error is not None or general.deletes or not general.upserts
            continue
        fast += 1
        assert _plan_key(one) == _plan_key(general), (rec, req, cfg)
        assert contact_header(one.result, NOW) == contact_header(general.result, NOW)
    assert fast > 10_000


def _reference_apply(rec: Urecord, upserts: list[Ucontact], deletes: list[str], dto: bool) -> None:
    """usrloc's memory update as first written (remove, then place)."""
    for uri in deletes:
        old = rec.find(uri)
        if old is not None:
            rec.contacts.remove(old)
    for c in upserts:
        old = rec.find(c.uri)
        if old is not None:
            rec.contacts.remove(old)
        rec.place(c, dto)


def test_apply_now_and_apply_match_the_reference() -> None:
    rnd = random.Random(7)
    for _ in range(5_000):
        rec, req, cfg = _case(rnd)
        plan = _plan_general(rec, req, NOW, cfg)
        if plan.error is not None:
            continue
        ref = Urecord("a", list(rec.contacts) if rec is not None else [])
        _reference_apply(ref, plan.upserts, plan.deletes, cfg.desc_time_order)
        want = {"a": [_key(c) for c in ref.contacts]} if ref.contacts else {}
        for sync in (True, False):
            d = Udomain("location", desc_time_order=cfg.desc_time_order)
            if rec is not None and rec.contacts:
                d.records["a"] = Urecord("a", list(rec.contacts))
            if sync:
                assert d.sync_writes()
                d.apply_now("a", plan.upserts, plan.deletes)
            else:
                coro = d.apply("a", plan.upserts, plan.deletes)
                try:
                    coro.send(None)
                except StopIteration:
                    pass
                else:  # pragma: no cover - db_mode 0 never waits
                    raise AssertionError("apply suspended in db_mode 0")
            assert {aor: [_key(c) for c in r.contacts] for aor, r in d.records.items()} == want


class _Capture:
    proto = Proto.UDP
    af = 2
    ip = "127.0.0.1"
    port = via_port = 5060
    via_host = "127.0.0.1"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, ip: str, port: int) -> bool:
        self.sent.append(data)
        return True


def test_save_in_memory_mode_does_not_suspend() -> None:
    core = Core({"sip_warning": 0})
    core.load_module("usrloc")
    reg = core.load_module("registrar")
    assert isinstance(reg, RegistrarModule)
    cap = _Capture()
    rcv = ReceiveInfo(Proto.UDP, "127.0.0.1", 6000, "127.0.0.1", 5060, 2, cap)
    raw = (
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1\r\n"
        b"From: <sip:jiri@127.0.0.1>;tag=1\r\nTo: <sip:jiri@127.0.0.1>\r\n"
        b"Call-ID: c-1@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
        b"Contact: <sip:jiri@10.0.0.1:5060>;q=0.5\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
    ctx = RequestContext(core, SipMessage.parse(raw), rcv, RouteType.REQUEST)
    coro = reg.save(ctx, "location")
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value == 1
    else:  # pragma: no cover
        raise AssertionError("save suspended in db_mode 0")
    assert len(cap.sent) == 1 and cap.sent[0].startswith(b"SIP/2.0 200 OK\r\n")
    assert b"\r\nContact: <sip:jiri@10.0.0.1:5060>;q=0.5;expires=" in cap.sent[0]
    loc = reg.usrloc.domain("location")
    assert loc is not None and [c.uri for c in loc.records["jiri"].contacts] == ["sip:jiri@10.0.0.1:5060"]
