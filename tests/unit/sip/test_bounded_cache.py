"""BoundedCache: the byte bound of the caches wire data fills."""

from __future__ import annotations

from sipexpress.sip.cache import OVERHEAD, BoundedCache
from sipexpress.sip.message import _LAYOUTS, SipMessage


def test_entries_over_max_entry_are_not_kept_and_the_total_stays_bounded() -> None:
    c: BoundedCache[str, int] = BoundedCache(1000, 200)
    c.put("big", 1, 500)
    assert "big" not in c
    for i in range(100):
        c.put(f"k{i}", i, 100)
        assert c.used <= 1000
    assert c.get("k99") == 99 and len(c) <= 1000 // (100 + OVERHEAD)
    c.put("k99", 7, 100)  # an expired entry may be replaced
    assert c["k99"] == 7


def test_a_message_with_thousands_of_own_header_names_leaves_no_layout() -> None:
    names = "".join(f"X-{i}-unique: v\r\n" for i in range(2000))
    raw = (
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        f"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n{names}Content-Length: 0\r\n\r\n"
    ).encode()
    msg = SipMessage.parse(raw)
    msg.validate()
    assert msg.raw_header_lines("call-id") == [b"Call-ID: c\r\n"]
    assert not any(len(k) > 100 for k in _LAYOUTS)
    assert _LAYOUTS.used <= _LAYOUTS.max_bytes
