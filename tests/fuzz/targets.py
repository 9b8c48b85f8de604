"""Fuzz targets: one function per reader of untrusted input, taking bytes
and asserting what must hold for any input (they raise AssertionError or an
unexpected exception when it does not).  The suite drives them briefly with
Hypothesis (``test_*_fuzz.py``) and replays the corpus of past findings
(``corpus/<target>/``, ``test_corpus.py``); ``bench/fuzz_campaign.py`` runs
them for hours and adds what it finds to that corpus.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from sipexpress.mgmt import Manager
from sipexpress.mgmt.fifo import FORBIDDEN_IN_REPLY, FifoRequest, RequestParser
from sipexpress.script.compiler import check_config
from sipexpress.script.errors import CfgError
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import SipMessage, build_reply
from sipexpress.sip.uri import SipUri


def only_parse_errors(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except SipParseError as e:
        assert isinstance(e.reason, str) and e.reason
        assert 400 <= e.status < 600


ACCESSORS = [
    "via1", "vias", "from_", "to", "call_id", "cseq", "max_forwards", "content_length", "expires", "date",
    "content_type", "contacts", "contact_star", "routes", "record_routes", "authorization", "proxy_authorization",
    "www_authenticate", "proxy_authenticate", "parsed_ruri", "body", "first_line",
]  # fmt: skip


def exercise(m: SipMessage) -> None:
    for name in ACCESSORS:
        only_parse_errors(lambda name=name: getattr(m, name))  # type: ignore[misc]
    only_parse_errors(lambda: [m.header(h) for h in ("via", "i", "x-unknown", "subject")])
    only_parse_errors(lambda: (m.values("via"), m.values("contact"), m.header_all("route")))
    only_parse_errors(lambda: (list(m.iter_headers()), m.header_names(), m.raw_header_lines("via")))
    only_parse_errors(m.validate)
    only_parse_errors(lambda: m.validate(strict=True))
    only_parse_errors(lambda: [SipUri.parse(c.uri) for c in m.contacts])
    only_parse_errors(lambda: build_reply(m, 400, "Bad", to_tag="t", received="192.0.2.1", rport=9))
    # modifications, then the result must parse back with the edits in place
    c = m.copy()

    def edit() -> None:
        if c.is_request:
            c.set_ruri("sip:new@example.com")
        c.add_via("SIP/2.0/UDP 192.0.2.250;branch=z9hG4bKfuzz")
        c.replace_header("Max-Forwards", "10")
        c.insert_header("X-Fuzz", "1", first=False)
        c.remove_header("subject")
        out = c.serialize()
        again = SipMessage.parse(out)
        assert again.via1.branch == "z9hG4bKfuzz"
        assert again.header("x-fuzz") == "1" and again.max_forwards == 10
        c.remove_top_via()
        c.set_body(b"xyz", "text/plain")
        assert SipMessage.parse(c.serialize()).body == b"xyz"

    only_parse_errors(edit)


def sip_message(data: bytes) -> None:
    """The parser: parse() raises only SipParseError (with a partial message
    usable for a reply), and every accessor and edit of what parsed does too."""
    try:
        m = SipMessage.parse(data)
    except SipParseError as e:
        assert e.reason
        partial, status, reason = e.msg, e.status, e.reason
        if partial is not None:  # a partial message must be usable for a reply
            only_parse_errors(lambda: partial.raw_header_lines("via"))
            only_parse_errors(lambda: build_reply(partial, status, reason))
        return
    assert m.serialize() == data.lstrip(b"\r\n")
    exercise(m)


def cfg_script(data: bytes) -> None:
    """The script compiler: a script loads or fails with a located CfgError."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        check_config(text, "fuzz.cfg")
    except CfgError as e:
        assert e.filename == "fuzz.cfg" and e.message
        rendered = str(e)
        assert rendered.startswith("fuzz.cfg")
        if e.line:
            assert rendered.startswith(f"fuzz.cfg:{e.line}:{e.col}: ")


def _reader_of(name: str) -> str:
    return "dotted" if name.lower() == "t_uac_dlg" else "lines"


def fifo_stream(data: bytes) -> None:
    """The FIFO reader: any byte stream, cut anywhere, frames into requests
    whose reply names cannot leave the reply directory; nothing is raised."""
    cuts = sorted({b % (len(data) + 1) for b in data[:8]} | {0, len(data)})
    parser = RequestParser(_reader_of)
    out: list[FifoRequest] = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        out += parser.feed(data[a:b], new_write=i % 2 == 1)
    out += parser.expire()
    assert not parser.pending
    for req in out:
        assert isinstance(req.command, str) and req.command
        assert req.reply is None or not any(c in FORBIDDEN_IN_REPLY for c in req.reply)
        assert all(isinstance(p, str) for p in req.params)


_manager: Manager | None = None


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in a JSON-RPC answer")

    return json.loads(text, parse_constant=refuse)


def jsonrpc_body(data: bytes) -> None:
    """The JSON-RPC reader (built-in commands): every body gets nothing (only
    notifications) or strict JSON-RPC 2.0 JSON, never an exception."""
    global _manager
    if _manager is None:
        _manager = Manager({})
    out = asyncio.run(_manager.dispatcher.handle_bytes(data))
    if out is None:
        return
    answer = _strict_json(out.decode("utf-8", "surrogateescape"))
    for one in answer if isinstance(answer, list) else [answer]:
        assert isinstance(one, dict) and one.get("jsonrpc") == "2.0" and "id" in one
        assert ("result" in one) != ("error" in one)
        assert one["id"] is None or isinstance(one["id"], str | int | float)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip": sip_message,
    "cfg": cfg_script,
    "fifo": fifo_stream,
    "jsonrpc": jsonrpc_body,
}
