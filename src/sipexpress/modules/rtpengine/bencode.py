"""Bencode (BitTorrent's BEP 3 encoding), the body of rtpengine's ng
control protocol.  Sans-I/O: bytes in, values out.

Grammar (BEP 3)::

    value   = integer / string / list / dict
    integer = "i" ["-"] 1*DIGIT "e"      ; no leading zeros, no "-0"
    string  = length ":" length*OCTET    ; length = 1*DIGIT
    list    = "l" *value "e"
    dict    = "d" *(string value) "e"    ; keys are strings

Values map to Python as ``int``, ``bytes``, ``list`` and ``dict[bytes, ...]``;
:func:`encode` also takes ``str`` (UTF-8) for strings and dict keys, and
sorts a dict's keys as BEP 3 asks (rtpengine does not care, but a
canonical form makes tests exact).

Invariant (h11's): :func:`decode` either returns a value or raises
:class:`BencodeError` -- never any other exception, whatever the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

#: a decoded value
Value: TypeAlias = "int | bytes | list[Value] | dict[bytes, Value]"
#: what :func:`encode` accepts
Encodable: TypeAlias = (
    "int | bytes | str | Sequence[Encodable] | Mapping[str, Encodable] | Mapping[bytes, Encodable]"
)

#: nesting deeper than this is refused (a datagram of "llll..." must not
#: exhaust the interpreter's stack)
MAX_DEPTH = 64

_DIGITS = b"0123456789"


class BencodeError(ValueError):
    """Input that is not bencode (or a value that cannot be encoded)."""


def encode(value: Encodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _key(k: object) -> bytes:
    if isinstance(k, str):
        return k.encode()
    if isinstance(k, bytes):
        return k
    raise BencodeError(f"dictionary key {k!r} is not a string")


def _encode(value: Encodable, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if isinstance(value, bool):
        raise BencodeError("booleans have no bencode form")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, str)):
        b = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(b))
        out.append(b)
    elif isinstance(value, Mapping):
        items = sorted((_key(k), v) for k, v in value.items())
        out.append(b"d")
        for k, v in items:
            out.append(b"%d:" % len(k))
            out.append(k)
            _encode(v, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for v in value:
            _encode(v, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot encode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The one value ``data`` holds; trailing bytes are an error."""
    value, end = decode_prefix(data, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def decode_prefix(data: bytes, start: int) -> tuple[Value, int]:
    """The value starting at ``start`` and the offset after it."""
    return _decode(data, start, 0)


def _decode(data: bytes, i: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i]
    if c == 0x69:  # i
        end = data.find(b"e", i + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        digits = data[i + 1 : end]
        body = digits[1:] if digits[:1] == b"-" else digits
        if not body or body.strip(_DIGITS) or (body[:1] == b"0" and (len(body) > 1 or digits[:1] == b"-")):
            raise BencodeError(f"bad integer at offset {i}")
        return int(digits), end + 1
    if c == 0x6C:  # l
        items: list[Value] = []
        i += 1
        while i < len(data) and data[i] != 0x65:
            v, i = _decode(data, i, depth + 1)
            items.append(v)
        if i >= len(data):
            raise BencodeError("unterminated list")
        return items, i + 1
    if c == 0x64:  # d
        d: dict[bytes, Value] = {}
        i += 1
        while i < len(data) and data[i] != 0x65:
            k, i = _decode(data, i, depth + 1)
            if not isinstance(k, bytes):
                raise BencodeError(f"dictionary key at offset {i} is not a string")
            d[k], i = _decode(data, i, depth + 1)
        if i >= len(data):
            raise BencodeError("unterminated dictionary")
        return d, i + 1
    if 0x30 <= c <= 0x39:
        colon = data.find(b":", i)
        if colon < 0 or data[i:colon].strip(_DIGITS) or (data[i] == 0x30 and colon > i + 1):
            raise BencodeError(f"bad string length at offset {i}")
        n = int(data[i:colon])
        end = colon + 1 + n
        if end > len(data):
            raise BencodeError("truncated string")
        return data[colon + 1 : end], end
    raise BencodeError(f"unexpected byte {bytes([c])!r} at offset {i}")
