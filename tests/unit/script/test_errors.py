"""Compile-time errors a user can act on, each at file:line:col."""

from __future__ import annotations

import logging

import pytest

from sipexpress.core.context import Proto
from sipexpress.core.options import SocketSpec
from sipexpress.script.compiler import check_config
from sipexpress.script.errors import CfgError
from tests.unit.script.helpers import Script

HDR = 'loadmodule "probe"\n'


@pytest.mark.parametrize(
    ("text", "line", "col", "needle"),
    [
        ("route {\n  nosuch();\n}", 2, 3, "unknown function 'nosuch'"),
        ('route {\n  sl_send_reply("404", "x");\n}', 2, 3, "exported by module 'sl', which is not loaded"),
        (HDR + 'route {\n  probe("1", "2", "3");\n}', 3, 3, "takes 1 or 2 argument(s), 3 given"),
        (HDR + 'route {\n  probe("x");\n}', 3, 9, "'x' is not a number"),
        (HDR + "route {\n  t_relay;\n}", 3, 3, "needs parentheses"),
        ('loadmodule "/usr/lib/ser/modules/nosuch.so"\n', 1, 12, "unknown module 'nosuch'"),
        ('modparam("tm", "fr_timer", 10)\n', 1, 10, "no loaded module matches 'tm'"),
        (HDR + 'modparam("probe", "nosuch", 10)\n', 2, 19, "has no parameter 'nosuch'"),
        (HDR + 'modparam("probe", "level", "abc")\n', 2, 19, "expects a number"),
        ("route {\n  route(7);\n}", 2, 9, "no route[7]"),
        ('route {\n  if (uri=~"(") drop;\n}', 2, 12, "bad regular expression"),
        ("route {\n  setflag(32);\n}", 2, 11, "out of range"),
        ('route {\n  strip("x");\n}', 2, 9, "must be a number"),
        ("route {\n  forward();\n}", 2, 3, "takes 1 or 2 arguments"),
        ('route {\n  if (src_port=="x") drop;\n}', 2, 17, "a number is expected"),
        ('route {\n  if (method>"x") drop;\n}', 2, 13, "cannot be used with method"),
        ("route {\n  if (proto==sctp) drop;\n}", 2, 14, "udp, tcp, tls, ws or wss"),
        ("route {\n  if (return) drop;\n}", 2, 7, "cannot be used in a condition"),
        (HDR + "route {\n  probe_failure();\n}", 3, 3, "Command cannot be used in the block"),
        ("nosuchoption=3\n", 1, 1, "unknown option 'nosuchoption'"),
        (HDR + 'route {\n  t_on_failure("3");\n}', 3, 16, "there is no failure_route[3] block"),
        ("debug=abc\n", 1, 7, "expects a number"),
        ("listen=udp:1.2.3.4:99999\n", 1, 8, "port out of range"),
        ('route {\n  append_branch("sip:a@b", "2");\n}', 2, 28, "out of range"),
    ],
)
def test_located_compile_errors(text: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(CfgError) as ei:
        Script(text)
    e = ei.value
    assert needle in e.message, str(e)
    assert (e.line, e.col) == (line, col), str(e)
    assert str(e).startswith(f"test.cfg:{line}:{col}: ")
    assert e.source_line is not None


def test_function_allowed_in_its_block() -> None:
    Script(HDR + "failure_route[1] { probe_failure(); }")


def test_route_references_that_exist() -> None:
    Script(HDR + 'route { t_on_failure("1"); t_on_failure("0"); } failure_route[1] { ; }')
    Script(HDR + 'route { t_on_failure("2"); } reply_route[2] { ; }')


def test_options_are_normalized() -> None:
    lc = check_config(
        'debug=4\nfork=no\nlog_stderror=yes\nlisten=udp:127.0.0.1:5070 tcp:127.0.0.1\nalias="foo.bar:5060"\n'
        'alias=other.org\nport=5070\nfifo="/tmp/x"\nfifo_mode=0600\nsock_user="ser"\ncheck_via=on\n'
    )
    o = lc.options
    assert o["debug"] == 4 and o["fork"] is False and o["log_stderror"] is True and o["check_via"] is True
    assert o["listen"] == [SocketSpec(Proto.UDP, "127.0.0.1", 5070), SocketSpec(Proto.TCP, "127.0.0.1", 0)]
    assert [a.host for a in o["alias"]] == ["foo.bar", "other.org"]
    assert o["port"] == 5070 and o["fifo"] == "/tmp/x" and o["fifo_mode"] == 0o600 and o["fifo_user"] == "ser"


def test_option_without_effect_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from sipexpress.script import compiler

    compiler._logged_no_effect.discard("mhomed")
    caplog.set_level(logging.INFO, logger="sipexpress")
    check_config("mhomed=yes\n")
    check_config("mhomed=yes\n")
    msgs = [r.getMessage() for r in caplog.records if "mhomed" in r.getMessage()]
    assert len(msgs) == 1 and "no effect" in msgs[0]


# -- issue 23: errors that point at what was written -------------------------------


def test_unclosed_brace_is_reported_where_it_was_opened() -> None:
    text = (
        'route {\n  if (method=="INVITE") {\n    sl_send_reply("200", "ok");\n\n}\nroute[1] {\n  break;\n}\n'
    )
    with pytest.raises(CfgError) as ei:
        check_config(text, "u.cfg")
    e = ei.value
    assert (e.line, e.col) == (2, 25), str(e)
    assert "'{' is never closed" in e.message and "line 6" in e.message, str(e)


def test_unclosed_brace_at_end_of_file() -> None:
    with pytest.raises(CfgError) as ei:
        check_config("route {\n  break;\n\nroute[1] {\n  drop;\n}\n", "u.cfg")
    assert (ei.value.line, ei.value.col) == (1, 7) and "never closed" in ei.value.message, str(ei.value)


@pytest.mark.parametrize(
    ("text", "line", "col", "needle"),
    [
        ('loadmodule "sl"\nroute {\n  sl_send_rply("404", "x");\n}', 3, 3, "did you mean 'sl_send_reply'?"),
        ('loadmodule "usrloc"\nloadmodule "registrar"\nroute {\n  sve("location");\n}', 4, 3, "'save'?"),
        ('loadmodule "usrlc"\n', 1, 12, "did you mean 'usrloc'?"),
        (
            'loadmodule "registrar"\nmodparam("registrar", "default_expire", 3)\n',
            2,
            23,
            "did you mean 'default_expires'?",
        ),
        ('fifx="/tmp/x"\n', 1, 1, "did you mean 'fifo'?"),
        ("route {\n  route(lokup);\n}\nroute[lookup] {\n  break;\n}\n", 2, 9, "did you mean 'lookup'?"),
        (
            'loadmodule "tm"\nroute {\n  t_on_failure("busy");\n}\nfailure_route[bussy] { break; }\n',
            3,
            16,
            "did you mean 'bussy'?",
        ),
    ],
)
def test_misspelled_names_get_a_suggestion(text: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(CfgError) as ei:
        check_config(text, "t.cfg")
    e = ei.value
    assert needle in e.message, str(e)
    assert (e.line, e.col) == (line, col), str(e)


@pytest.mark.parametrize(
    "text",
    [
        'fifo "/tmp/x"\nroute { break; }\n',
        'port=5070\nfifo "/tmp/x"\nroute { break; }\n',
        'listen=udp:127.0.0.1:5070\nfifo "/tmp/x"\nroute { break; }\n',
    ],
)
def test_option_without_equals_names_the_option_written(text: str) -> None:
    with pytest.raises(CfgError) as ei:
        check_config(text, "o.cfg")
    e = ei.value
    line = text.splitlines().index('fifo "/tmp/x"') + 1
    assert "option 'fifo'" in e.message and "'='" in e.message, str(e)
    assert "port" not in e.message and "listen" not in e.message, str(e)
    assert (e.line, e.col) == (line, 1), str(e)


def test_misspelled_keyword_at_top_level() -> None:
    with pytest.raises(CfgError) as ei:
        check_config("rute {\n  break;\n}\n", "k.cfg")
    assert ei.value.message == "syntax error: unexpected 'rute' (did you mean 'route'?)", str(ei.value)
