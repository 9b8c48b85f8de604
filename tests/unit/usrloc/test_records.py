"""usrloc records and the registrar's pure REGISTER planning (virtual clock)."""

from __future__ import annotations

import pytest

from sipexpress.modules.registrar import (
    ContactSpec,
    RegisterConfig,
    RegisterRequest,
    contact_header,
    plan_register,
)
from sipexpress.modules.usrloc import (
    FL_PERMANENT,
    Q_UNSPECIFIED,
    Ucontact,
    Urecord,
    q2str,
    source_address,
    str2q,
)
from sipexpress.modules.usrloc.records import str2q_lenient

NOW = 1_000_000.0
CFG = RegisterConfig()


@pytest.mark.parametrize(
    ("q", "text"),
    [(-1, ""), (1000, "1"), (0, "0"), (500, "0.5"), (250, "0.25"), (125, "0.125"), (100, "0.1")],
)
def test_q2str(q: int, text: str) -> None:
    assert q2str(q) == text


@pytest.mark.parametrize(
    ("text", "q"),
    [("1", 1000), ("1.0", 1000), ("0", 0), ("0.5", 500), (".7", 700), ("0.125", 125), ("1.000", 1000)],
)
def test_str2q(text: str, q: int) -> None:
    assert str2q(text) == q


@pytest.mark.parametrize("bad", ["", "2", "1.5", "0.1234", "abc", "-0.5", "0.x"])
def test_str2q_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        str2q(bad)


def test_str2q_lenient_fifo_format() -> None:
    assert str2q_lenient("1.00") == 1000
    assert str2q_lenient("0.50") == 500
    assert str2q_lenient("0.5000") == 500


def _c(uri: str, q: int = -1, expires: float = NOW + 100, callid: str = "c1", cseq: int = 1) -> Ucontact:
    return Ucontact("jiri", uri, int(expires), q, callid, cseq)


def test_record_order_by_q_then_age() -> None:
    r = Urecord("jiri")
    for c in (_c("a", 500), _c("b", 1000), _c("c", 500), _c("d", -1), _c("e", 700)):
        r.place(c)
    assert [c.uri for c in r.contacts] == ["b", "e", "a", "c", "d"]
    r2 = Urecord("jiri")
    for c in (_c("a", 500), _c("b", 1000), _c("c", 0)):
        r2.place(c, desc_time_order=True)
    assert [c.uri for c in r2.contacts] == ["c", "b", "a"]


def test_expiry_and_permanent() -> None:
    r = Urecord("jiri", [_c("old", expires=NOW - 1), _c("new"), _c("perm", expires=0)])
    r.contacts[2].flags = FL_PERMANENT
    assert [c.uri for c in r.valid_contacts(NOW)] == ["new", "perm"]
    gone = r.expire(NOW)
    assert [c.uri for c in gone] == ["old"]
    assert [c.uri for c in r.contacts] == ["new", "perm"]


def _req(*contacts: ContactSpec, **kw: object) -> RegisterRequest:
    base: dict[str, object] = {"aor": "jiri", "callid": "c1", "cseq": 2}
    base.update(kw)
    return RegisterRequest(contacts=list(contacts), **base)  # type: ignore[arg-type]


def test_new_binding_default_expires() -> None:
    p = plan_register(None, _req(ContactSpec("sip:j@1.2.3.4")), NOW, CFG)
    assert p.error is None
    assert [c.uri for c in p.upserts] == ["sip:j@1.2.3.4"]
    assert p.upserts[0].expires == int(NOW) + 3600
    assert p.upserts[0].q == Q_UNSPECIFIED
    assert p.result == p.upserts


def test_expires_precedence() -> None:
    p = plan_register(
        None, _req(ContactSpec("sip:a", expires="120"), ContactSpec("sip:b"), expires_hdr=300), NOW, CFG
    )
    assert {c.uri: c.expires - int(NOW) for c in p.upserts} == {"sip:a": 120, "sip:b": 300}
    # unparsable param counts as 3600 (SER)
    p = plan_register(None, _req(ContactSpec("sip:a", expires="soon")), NOW, CFG)
    assert p.upserts[0].expires - int(NOW) == 3600
    p = plan_register(None, _req(ContactSpec("sip:a", expires="99999999999999999999")), NOW, CFG)
    assert p.upserts[0].expires - int(NOW) == 3600


def test_min_expires_423_and_clamping() -> None:
    rfc = RegisterConfig(min_expires_mode=1)
    p = plan_register(None, _req(ContactSpec("sip:a", expires="30")), NOW, rfc)
    assert p.error is not None and p.error[0] == 423 and p.min_expires == 60 and not p.changes
    ser = RegisterConfig(max_expires=600)  # the default raises, as SER and Kamailio
    p = plan_register(
        None, _req(ContactSpec("sip:a", expires="30"), ContactSpec("sip:b", expires="7200")), NOW, ser
    )
    assert {c.uri: c.expires - int(NOW) for c in p.upserts} == {"sip:a": 60, "sip:b": 600}


def test_q_param() -> None:
    p = plan_register(None, _req(ContactSpec("sip:a", q="0.5"), ContactSpec("sip:b", q="1")), NOW, CFG)
    assert [(c.uri, c.q) for c in p.result] == [("sip:b", 1000), ("sip:a", 500)]
    p = plan_register(None, _req(ContactSpec("sip:a", q="7")), NOW, CFG)
    assert p.error == (400, "Invalid q param in contact")


def test_remove_with_expires_zero_and_refresh() -> None:
    rec = Urecord("jiri", [_c("sip:a", cseq=1), _c("sip:b", cseq=1)])
    p = plan_register(
        rec, _req(ContactSpec("sip:a", expires="0"), ContactSpec("sip:b", expires="600")), NOW, CFG
    )
    assert p.deletes == ["sip:a"]
    assert [c.uri for c in p.upserts] == ["sip:b"]
    assert [c.uri for c in p.result] == ["sip:b"]
    assert p.result[0].expires == int(NOW) + 600 and p.result[0].cseq == 2
    assert rec.contacts[0].uri == "sip:a"  # plan does not modify the record


def test_star() -> None:
    rec = Urecord("jiri", [_c("sip:a", cseq=1), _c("sip:b", callid="other", cseq=9)])
    p = plan_register(rec, _req(star=True, expires_hdr=0), NOW, CFG)
    assert sorted(p.deletes) == ["sip:a", "sip:b"] and p.result == []
    assert plan_register(rec, _req(star=True, expires_hdr=10), NOW, CFG).error == (
        400,
        "* used in contact and expires is not zero",
    )
    assert plan_register(rec, _req(star=True), NOW, CFG).error == (
        400,
        "* used in contact and expires is not zero",
    )
    # same Call-ID, CSeq not higher: nothing removed
    p = plan_register(rec, _req(star=True, expires_hdr=0, cseq=1), NOW, CFG)
    assert not p.changes and len(p.result) == 2


def test_callid_cseq_ordering() -> None:
    rec = Urecord("jiri", [_c("sip:a", cseq=5)])
    # out of order: lower CSeq, same Call-ID -> no change
    p = plan_register(rec, _req(ContactSpec("sip:a", expires="0"), cseq=4), NOW, CFG)
    assert not p.changes and p.error == (200, "Out of order request") and len(p.result) == 1
    # retransmission: same CSeq
    p = plan_register(rec, _req(ContactSpec("sip:a", expires="0"), cseq=5), NOW, CFG)
    assert not p.changes and p.error == (200, "Retransmission")
    # another Call-ID may remove it whatever its CSeq
    p = plan_register(rec, _req(ContactSpec("sip:a", expires="0"), callid="c2", cseq=1), NOW, CFG)
    assert p.deletes == ["sip:a"]


def test_max_contacts() -> None:
    cfg = RegisterConfig(max_contacts=2)
    rec = Urecord("jiri", [_c("sip:a"), _c("sip:b")])
    p = plan_register(rec, _req(ContactSpec("sip:c")), NOW, cfg)
    assert p.error == (503, "Too many registered contacts") and not p.changes
    # replacing one within the limit is fine; expired ones do not count
    rec2 = Urecord("jiri", [_c("sip:a"), _c("sip:b", expires=NOW - 5)])
    assert plan_register(rec2, _req(ContactSpec("sip:c")), NOW, cfg).error is None


def test_no_contact_lists_bindings() -> None:
    rec = Urecord("jiri", [_c("sip:a"), _c("sip:x", expires=NOW - 1)])
    p = plan_register(rec, _req(), NOW, CFG)
    assert not p.changes and [c.uri for c in p.result] == ["sip:a"]


def test_contact_header_format() -> None:
    a = _c("sip:a@1.2.3.4", q=500, expires=NOW + 60)
    b = _c("sip:b@5.6.7.8;transport=tcp", expires=NOW + 3600)
    b.received = "sip:9.9.9.9:5070"
    h = contact_header([a, b], NOW)
    assert h == (
        'Contact: <sip:a@1.2.3.4>;q=0.5;expires=60, <sip:b@5.6.7.8;transport=tcp>;expires=3600;received="sip:9.9.9.9:5070"\r\n'
    )
    assert contact_header([], NOW) is None


def test_bindings_keep_the_register_source() -> None:
    # one contact (the short path) and several: the Online page shows where each came from
    one = plan_register(None, _req(ContactSpec("sip:a"), source=("192.0.2.7", 5062)), NOW, CFG)
    assert [c.source for c in one.upserts] == [("192.0.2.7", 5062)]
    two = plan_register(
        None, _req(ContactSpec("sip:a"), ContactSpec("sip:b"), source=("2001:db8::1", 5060)), NOW, CFG
    )
    assert [c.source for c in two.upserts] == [("2001:db8::1", 5060)] * 2
    assert [source_address(c.source) for c in (*one.upserts, two.upserts[0])] == [
        "192.0.2.7:5062",
        "[2001:db8::1]:5060",
    ]
    assert source_address(None) == ""
