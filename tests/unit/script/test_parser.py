"""Lexing and parsing of ser.cfg: comments, strings, numbers, statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipexpress.script import ast
from sipexpress.script.errors import CfgError
from sipexpress.script.parser import parse_config, strip_comments, unquote

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "cfg").rglob("*.cfg"))


def first_stmt(text: str) -> ast.Stmt:
    cfg = parse_config(f"route {{ {text} }}")
    return cfg.routes[0].body[0]


@pytest.mark.parametrize(
    "path", [*EXAMPLES, ROOT / "etc" / "ser.cfg"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_example_parses(path: Path) -> None:
    cfg = parse_config(path.read_text(), str(path))
    assert cfg.routes, "every example has a route block"


def test_nested_comments_keep_positions() -> None:
    text = 'a /* x /* y */ z */ b # c "d"\n"#no" /* "*/ e'
    out = strip_comments(text)
    assert len(out) == len(text)
    assert out.split() == ["a", "b", '"#no"', "e"]


def test_unterminated_comment_is_located() -> None:
    with pytest.raises(CfgError) as ei:
        parse_config("route {\n /* open /* nested */\n}", "x.cfg")
    assert (ei.value.line, ei.value.col) == (2, 2)
    assert "unterminated" in str(ei.value)


@pytest.mark.parametrize(
    ("token", "value"),
    [
        (r'"a\nb"', "a\nb"),
        (r'"tab\there"', "tab\there"),
        (r'"q\"q"', 'q"q'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\x41\x4a"', "AJ"),
        (r'"\101"', "A"),
        (r'"sip:\+?[0-9]+"', r"sip:\+?[0-9]+"),  # unknown escape kept
        (r'"\1"', r"\1"),  # single digit kept (subst back-references)
        ('"multi\nline"', "multi\nline"),
        ('"joined\\\nline"', "joinedline"),
        (r"'no \n escapes'", r"no \n escapes"),
    ],
)
def test_string_escapes(token: str, value: str) -> None:
    assert unquote(token) == value


@pytest.mark.parametrize(("text", "value"), [("0x1F", 31), ("017", 15), ("0", 0), ("42", 42), ("-1", -1)])
def test_numbers(text: str, value: int) -> None:
    cfg = parse_config(f"debug={text}")
    v = cfg.options[0].values[0]
    assert isinstance(v, ast.Num) and v.value == value


def test_options_and_listen_list() -> None:
    cfg = parse_config(
        'fork=no\nlisten=udp:127.0.0.1:5060 tcp:[::1]:5070 foo.bar\nport=5062\nfifo="/tmp/f"\n'
    )
    names = [o.name for o in cfg.options]
    assert names == ["fork", "listen", "port", "fifo"]
    assert len(cfg.options[1].values) == 3
    assert isinstance(cfg.options[1].values[0], ast.Addr)


def test_route_kinds_and_names() -> None:
    cfg = parse_config(
        "route { drop; } route[2] { break; } route[myname] { ; } failure_route[1] { ; }"
        " onreply_route[1] { ; } reply_route[3] { ; } branch_route[1] { ; } route[0x0A] { ; }"
    )
    assert [(r.kind, r.name) for r in cfg.routes] == [
        ("route", "0"),
        ("route", "2"),
        ("route", "myname"),
        ("failure_route", "1"),
        ("onreply_route", "1"),
        ("reply_route", "3"),
        ("branch_route", "1"),
        ("route", "10"),
    ]


def test_old_and_new_if_else_forms() -> None:
    new = first_stmt('if (method=="INVITE") route(1); else sl_send_reply("404", "Not Found");')
    old = first_stmt('if (method=="INVITE") route(1) else sl_send_reply("404", "Not Found");')
    for st in (new, old):
        assert isinstance(st, ast.If)
        assert isinstance(st.then[0], ast.Call) and st.then[0].name == "route"
        assert st.orelse is not None and isinstance(st.orelse[0], ast.Call)
        assert st.orelse[0].name == "sl_send_reply"


def test_else_if_chain_and_dangling_else() -> None:
    st = first_stmt("if (a()) if (b()) c(); else d(); else if (e()) f();")
    assert isinstance(st, ast.If)
    inner = st.then[0]
    assert isinstance(inner, ast.If) and inner.orelse is not None  # else binds to the nearest if
    assert st.orelse is not None and isinstance(st.orelse[0], ast.If)


def test_precedence_or_and_not() -> None:
    st = first_stmt("if (!a() || b() && not c() or d()) x();")
    assert isinstance(st, ast.If)
    c = st.cond
    # ((!a) || (b && !c)) || d
    assert isinstance(c, ast.Or) and isinstance(c.left, ast.Or)
    assert isinstance(c.left.left, ast.Not)
    assert isinstance(c.left.right, ast.And) and isinstance(c.left.right.right, ast.Not)


def test_all_operators_parse() -> None:
    st = first_stmt(
        'if (method=="X" | method!=Y & uri=~"a" || uri!~"b" || src_port>1 || dst_port<2'
        " || af>=2 || msg:len<=max_len || src_ip==1.2.3.0/24 || dst_ip!=10.0.0.0/255.0.0.0"
        ' || myself==uri || from_uri==myself || to_uri=~"x" || proto==udp || status=="200"'
        " || src_ip==backup.foo.bar || af==inet6 || 1) drop;"
    )
    assert isinstance(st, ast.If)


def test_keyword_args() -> None:
    st = first_stmt("forward(uri:host, uri:port);")
    assert isinstance(st, ast.Call)
    assert [a.value for a in st.args if isinstance(a, ast.Keyword)] == ["uri:host", "uri:port"]
    st = first_stmt("force_send_socket(udp:127.0.0.1:5060);")
    assert isinstance(st, ast.Call) and isinstance(st.args[0], ast.Addr)


def test_bare_keywords_and_extensions() -> None:
    body = (
        parse_config("route { drop; break; revert_uri; append_branch; return; return -1; exit 2; }")
        .routes[0]
        .body
    )
    assert [type(s).__name__ for s in body] == ["Call", "Call", "Call", "Call", "Return", "Return", "Return"]
    assert isinstance(body[5], ast.Return) and body[5].value == -1


@pytest.mark.parametrize(
    ("text", "line", "col", "needle"),
    [
        ("route {\n  foo()\n  bar();\n}", 3, 3, "missing ';'"),
        ("route {\n  if (uri==) drop;\n}", 2, 12, "unexpected ')'"),
        ('route {\n  log("x);\n}\n', 2, 7, "unterminated string"),
        ("route {\n  drop;\n", 1, 7, "never closed (the parser noticed at the end of the file)"),
        ("debug=3\nroute { @ }", 2, 9, "unexpected character '@'"),
    ],
)
def test_syntax_errors_are_located(text: str, line: int, col: int, needle: str) -> None:
    with pytest.raises(CfgError) as ei:
        parse_config(text, "bad.cfg")
    e = ei.value
    assert (e.line, e.col) == (line, col), str(e)
    assert needle in e.message
    rendered = str(e).splitlines()
    assert rendered[0].startswith(f"bad.cfg:{line}:{col}: ")
    assert rendered[2].index("^") == 4 + col - 1


def test_packaged_default_config_is_etc_ser_cfg() -> None:
    from importlib import resources

    packaged = resources.files("sipexpress").joinpath("etc/ser.cfg").read_text()
    assert packaged == (ROOT / "etc" / "ser.cfg").read_text()
