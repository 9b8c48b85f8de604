"""FIFO request framing (sans-I/O): SER's rules and our deliberate fixes."""

from __future__ import annotations

from sipexpress.mgmt.fifo import MAX_COMMAND_LINE, MAX_LINE, FifoRequest, RequestParser


def parser() -> RequestParser:
    return RequestParser(lambda name: "dotted" if name.lower() == "t_uac_dlg" else "lines")


def reqs(p: RequestParser, *chunks: bytes) -> list[FifoRequest]:
    out: list[FifoRequest] = []
    for c in chunks:
        out += p.feed(c)
    return out


def test_simple_request_and_params() -> None:
    p = parser()
    r = reqs(p, b":ul_rm:reply_1\nlocation\njiri@iptel.org\n\n")
    assert [(x.command, x.reply, x.params, x.error) for x in r] == [
        ("ul_rm", "reply_1", ["location", "jiri@iptel.org"], None)
    ]
    assert not p.pending


def test_crlf_trailing_blanks_and_leading_empty_lines() -> None:
    p = parser()
    r = reqs(p, b"\n\r\n:print:r \t\r\n  hello  \r\n\r\n\n\n")
    assert len(r) == 1
    assert r[0].reply == "r"
    assert r[0].params == ["  hello"]  # right-trimmed only


def test_request_split_over_many_chunks() -> None:
    data = b":print:r\nabc\n\n"
    p = parser()
    r = reqs(p, *[data[i : i + 1] for i in range(len(data))])
    assert [(x.command, x.params) for x in r] == [("print", ["abc"])]


def test_no_reply_name() -> None:
    r = reqs(parser(), b":uptime:\n\n")
    assert r[0].reply is None and r[0].error is None


def test_forbidden_reply_names_are_not_answered() -> None:
    for name in (b"../etc/passwd", b"/tmp/x", b"reply.fifo", b"a\\b"):
        r = reqs(parser(), b":uptime:" + name + b"\n\n")
        assert len(r) == 1
        assert r[0].reply is None and r[0].error == "forbidden reply file name"


def test_malformed_command_lines_are_dropped_and_next_request_served() -> None:
    p = parser()
    r = reqs(p, b"uptime:r\n\n::r\n\n:x\n\n:\n\n\x00\xff\xfe garbage\n\n:uptime:r\n\n")
    assert [(x.command, x.reply) for x in r] == [("uptime", "r")]


def test_missing_final_empty_line_does_not_swallow_next_request() -> None:
    p = parser()
    r = reqs(p, b":print:r1\nfirst\n:print:r2\nsecond\n\n")
    assert [(x.command, x.reply, x.params) for x in r] == [
        ("print", "r1", ["first"]),
        ("print", "r2", ["second"]),
    ]


def test_unfinished_request_ends_at_timeout() -> None:
    p = parser()
    assert reqs(p, b":print:r\nonly\n") == []
    assert p.pending
    r = p.expire()
    assert [(x.command, x.params) for x in r] == [("print", ["only"])]
    assert not p.pending


def test_unterminated_line_dropped_at_timeout_and_does_not_glue() -> None:
    p = parser()
    assert reqs(p, b"junk without newline") == []
    assert p.expire() == []
    r = reqs(p, b":uptime:r\n\n")
    assert [(x.command, x.reply) for x in r] == [("uptime", "r")]


def test_overlong_command_line_dropped() -> None:
    p = parser()
    long = b":uptime:" + b"r" * MAX_COMMAND_LINE + b"\n\n"
    assert reqs(p, long + b":uptime:ok\n\n")[0].reply == "ok"


def test_overlong_parameter_line_is_an_error_reply() -> None:
    p = parser()
    r = reqs(p, b":print:r\n" + b"x" * (MAX_LINE + 10) + b"\n\n:uptime:r2\n\n")
    assert [(x.command, x.error) for x in r] == [("print", "line too long"), ("uptime", None)]


def test_endless_line_without_newline_is_not_buffered() -> None:
    p = parser()
    p.feed(b":print:r\n")
    for _ in range(100):
        p.feed(b"y" * 65536)
    assert len(p._buf) <= MAX_LINE
    r = p.feed(b"\n\n:uptime:r\n\n")
    assert [(x.command, x.error) for x in r] == [("print", "line too long"), ("uptime", None)]


def test_dotted_reader_t_uac_dlg() -> None:
    body = (
        b":t_uac_dlg:r\nMESSAGE\nsip:joe@iptel.org\n.\nFrom: sip:a@b\nTo: sip:joe@iptel.org\n.\n"
        b"Hello\n\nworld\n.\n\n"
    )
    r = reqs(parser(), body)
    assert r[0].params == [
        "MESSAGE",
        "sip:joe@iptel.org",
        ".",
        "From: sip:a@b",
        "To: sip:joe@iptel.org",
        ".",
        "Hello",
        "",
        "world",
        ".",
    ]


def test_dotted_without_final_empty_line_then_next_request() -> None:
    # send_im.php and the seed's shell IM example omit the final empty line
    p = parser()
    r = reqs(p, b":t_uac_dlg:r\nMESSAGE\nsip:x@y\n.\nFrom: a\nTo: b\n.\nhi\n.\n:uptime:r2\n\n")
    assert [x.command for x in r] == ["t_uac_dlg", "uptime"]
    assert r[0].params[-2:] == ["hi", "."]


def test_dotted_headers_ended_by_empty_line_and_body_closed_at_timeout() -> None:
    p = parser()
    assert reqs(p, b":T_UAC_DLG:r\nOPTIONS\nsip:x@y\n.\nFrom: a\nTo: b\n\n") == []
    r = p.expire()
    assert r[0].params == ["OPTIONS", "sip:x@y", ".", "From: a", "To: b", ".", "."]


def test_dotted_short_request() -> None:
    r = reqs(parser(), b":t_uac_dlg:r\nMESSAGE\n\n")
    assert r[0].params == ["MESSAGE"]


def test_too_many_lines() -> None:
    p = parser()
    r = reqs(p, b":print:r\n" + b"x\n" * 10001 + b"\n")
    assert r[0].error == "too many lines" and r[0].params == []


def test_binary_garbage_never_raises() -> None:
    import random

    rnd = random.Random(7)
    p = parser()
    for _ in range(300):
        p.feed(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))))
        if rnd.random() < 0.1:
            p.expire()
    p.expire()
    p.feed(b"\n\n")
    assert [x.command for x in p.feed(b":uptime:r\n\n")] == ["uptime"]


def test_unterminated_last_line_followed_by_next_write() -> None:
    p = parser()
    assert p.feed(b":print:r\nno newline at end", True) == []
    r = p.feed(b":uptime:r2\n\n", True)
    assert [(x.command, x.params) for x in r] == [("print", ["no newline at end"]), ("uptime", [])]


def test_continuation_of_a_long_write_is_not_split() -> None:
    p = parser()
    assert p.feed(b":print:r\nabc", True) == []
    r = p.feed(b"def\n\n", False)
    assert [(x.command, x.params) for x in r] == [("print", ["abcdef"])]
