"""Property tests of the management readers: the FIFO request framer and
the JSON-RPC dispatcher take any bytes without raising, and answer only
what their protocol allows (see tests/fuzz/targets.py)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import fifo_stream, jsonrpc_body

FIFO_PIECES = [b":", b"\n", b"\r\n", b".", b"..", b"/", b"\x00", b"\xff", b" ", b"print", b"t_uac_dlg", b"ul_add",
               b"reply", b"x" * 300, b"MESSAGE", b"sip:a@b", b"From: a"]  # fmt: skip

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.sampled_from(["NaN"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
)


@st.composite
def rpc_calls(draw: st.DrawFn) -> dict[str, object]:
    call: dict[str, object] = {}
    if draw(st.booleans()):
        call["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))
    if draw(st.booleans()):
        call["method"] = draw(st.sampled_from(["print", "uptime", "which", "version", "PRINT", "nope", ""]))
    if draw(st.booleans()):
        call["params"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        call["id"] = draw(JSON_VALUES)
    return call


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FIFO_PIECES) | st.binary(max_size=6), max_size=30).map(b"".join))
def test_fifo_reader(data: bytes) -> None:
    fifo_stream(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(rpc_calls(), st.lists(rpc_calls(), max_size=4), JSON_VALUES))
def test_jsonrpc_reader_structured(body: object) -> None:
    jsonrpc_body(json.dumps(body).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80))
def test_jsonrpc_reader_bytes(data: bytes) -> None:
    jsonrpc_body(data)
