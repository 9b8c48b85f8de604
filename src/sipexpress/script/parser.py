"""ser.cfg text -> :class:`~sipexpress.script.ast.Config`.

Comments and backslash-newlines are blanked out first (so that ``/* */``
may nest, which a regular lexer cannot do); the LALR parser built from
``grammar.lark`` then works on text of the same shape, so every token keeps
its line and column.  Any lark error becomes a :class:`CfgError`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from sipexpress.core.registry import did_you_mean
from sipexpress.script import ast
from sipexpress.script.errors import CfgError

GRAMMAR = Path(__file__).with_name("grammar.lark")


@functools.cache
def _parser() -> Lark:
    return Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# ---------------------------------------------------------------------------
# comments
def strip_comments(text: str, filename: str = "<config>") -> str:
    """Replace comments (``#…``, nesting ``/* … */``) and backslash-newline
    pairs outside strings with blanks, keeping newlines, so that positions
    in the result are positions in the original text."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif c == "'":
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "*":
            depth, j = 0, i
            while j < n:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            if depth:
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                raise CfgError("unterminated /* comment", filename, line, col, text.splitlines()[line - 1])
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c == "\\" and i + 1 < n and text[i + 1] == "\n":
            out[i] = " "
            i += 2
        else:
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------
# strings and numbers
_ESC = {"n": "\n", "r": "\r", "a": "\a", "t": "\t", '"': '"', "\\": "\\"}
_ESC_RE = re.compile(r"\\(\n|x[0-9a-fA-F]{1,2}|[0-7]{2,3}|.)", re.S)


def _unescape_match(m: re.Match[str]) -> str:
    e = m.group(1)
    if e == "\n":
        return ""
    if e in _ESC:
        return _ESC[e]
    if e[0] == "x" and len(e) > 1:
        return chr(int(e[1:], 16))
    if len(e) >= 2 and e[0] in "01234567":
        return chr(int(e, 8) & 0xFF)
    return "\\" + e  # unknown escape: keep both characters (regexes)


def unquote(tok: str) -> str:
    """The value of a STRING token, with cfg.lex's escape rules."""
    if tok[0] == "'":
        return tok[1:-1]
    return _ESC_RE.sub(_unescape_match, tok[1:-1])


def parse_number(text: str) -> int:
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if len(text) > 1 and text[0] == "0":
        return int(text, 8)
    return int(text)


# ---------------------------------------------------------------------------
def _pos(t: Any) -> tuple[int, int]:
    if isinstance(t, Token):
        return t.line or 0, t.column or 0
    if isinstance(t, ast.Node):
        return t.line, t.col
    meta = getattr(t, "meta", None)
    if meta is not None and not meta.empty:
        return meta.line, meta.column
    return 0, 0


def _value(tok: Any) -> ast.Value:
    """A token (or already built node) used as an argument/value."""
    if isinstance(tok, ast.Node):
        return tok  # type: ignore[return-value]
    line, col = _pos(tok)
    kind = tok.type
    s = str(tok)
    if kind == "STRING":
        return ast.Str(line, col, unquote(s))
    if kind == "NUMBER":
        try:
            return ast.Num(line, col, parse_number(s), s)
        except ValueError:
            raise CfgError(f"invalid number '{s}'", "", line, col) from None
    if kind == "IPV4":
        return ast.Ip(line, col, s)
    if kind == "IPV6":
        return ast.Ip(line, col, s.strip("[]"), True)
    if kind == "STAR":
        return ast.Star(line, col)
    if kind in ("URIHOST", "URIPORT", "MYSELF"):
        return ast.Keyword(line, col, s)
    return ast.Name(line, col, s)


@v_args(meta=True)
class _Build(Transformer[Token, Any]):
    """Parse tree -> ast nodes."""

    def start(self, meta: Any, items: list[Any]) -> list[Any]:
        return [i for i in items if i is not None]

    def str_val(self, meta: Any, c: list[Any]) -> ast.Value:
        return _value(c[0])

    def addr(self, meta: Any, c: list[Any]) -> ast.Value:
        parts = [_value(p) for p in c]
        if len(parts) == 1:
            return parts[0]
        return ast.Addr(parts[0].line, parts[0].col, parts)

    def option(self, meta: Any, c: list[Any]) -> ast.Option:
        line, col = _pos(c[0])
        return ast.Option(line, col, str(c[0]), [_value(v) for v in c[1:]])

    def loadmodule(self, meta: Any, c: list[Any]) -> ast.LoadModule:
        line, col = _pos(c[0])
        return ast.LoadModule(line, col, _value(c[1]))  # type: ignore[arg-type]

    def modparam(self, meta: Any, c: list[Any]) -> ast.ModParam:
        line, col = _pos(c[0])
        return ast.ModParam(line, col, _value(c[1]), _value(c[2]), _value(c[3]))  # type: ignore[arg-type]

    def route_kind(self, meta: Any, c: list[Any]) -> Token:
        tok: Token = c[0]
        return tok

    def block(self, meta: Any, c: list[Any]) -> list[Any]:
        return [s for s in c if s is not None]

    def route_block(self, meta: Any, c: list[Any]) -> ast.RouteBlock:
        kind, rid, body = c
        line, col = _pos(kind)
        if rid is None:
            return ast.RouteBlock(line, col, str(kind), "0", body, line, col)
        rline, rcol = _pos(rid)
        name = str(rid)
        if rid.type == "NUMBER":
            with contextlib.suppress(ValueError):
                name = str(parse_number(name))
        return ast.RouteBlock(line, col, str(kind), name, body, rline, rcol)

    # statements
    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        name, *args = c
        line, col = _pos(name)
        return ast.Call(line, col, str(name), [_value(a) for a in args if a is not None])

    def bare(self, meta: Any, c: list[Any]) -> ast.Call:
        line, col = _pos(c[0])
        return ast.Call(line, col, str(c[0]), [], bare=True)

    def return_(self, meta: Any, c: list[Any]) -> ast.Return:
        return self._ret("return", c)

    def exit_(self, meta: Any, c: list[Any]) -> ast.Return:
        return self._ret("exit", c)

    def _ret(self, kind: str, c: list[Any]) -> ast.Return:
        line, col = _pos(c[0])
        v = None if c[1] is None else parse_number(str(c[1]))
        return ast.Return(line, col, kind, v)

    def if_stmt(self, meta: Any, c: list[Any]) -> ast.If:
        # IF exp then [ELSE else]: branches arrive as a node or a list
        tok, cond, then = c[:3]
        orelse = c[4] if len(c) == 5 else None

        def as_list(b: Any) -> list[Any] | None:
            if b is None:
                return None
            return b if isinstance(b, list) else [b]

        line, col = _pos(tok)
        return ast.If(line, col, cond, as_list(then) or [], as_list(orelse))

    # expressions
    def or_(self, meta: Any, c: list[Any]) -> ast.Or:
        return ast.Or(*_pos(c[0]), c[0], c[1])

    def and_(self, meta: Any, c: list[Any]) -> ast.And:
        return ast.And(*_pos(c[0]), c[0], c[1])

    def not_(self, meta: Any, c: list[Any]) -> ast.Not:
        line, col = (meta.line, meta.column) if not meta.empty else _pos(c[0])
        return ast.Not(line, col, c[0])

    def call_cond(self, meta: Any, c: list[Any]) -> ast.CallCond:
        return ast.CallCond(*_pos(c[0]), c[0])

    def num_cond(self, meta: Any, c: list[Any]) -> ast.NumCond:
        return ast.NumCond(*_pos(c[0]), parse_number(str(c[0])))

    def operand(self, meta: Any, c: list[Any]) -> ast.Keyword:
        return ast.Keyword(*_pos(c[0]), str(c[0]))

    def netaddr(self, meta: Any, c: list[Any]) -> ast.Net:
        addr, mask = c
        line, col = _pos(addr)
        m: str | int | None = None
        if mask is not None:
            m = parse_number(str(mask)) if mask.type == "NUMBER" else str(mask).strip("[]")
        return ast.Net(line, col, str(addr).strip("[]"), m)

    def cmp(self, meta: Any, c: list[Any]) -> ast.Cmp:
        left, op, right = c
        if isinstance(left, Token):
            left = ast.Keyword(*_pos(left), str(left))
        line, col = _pos(left)
        return ast.Cmp(line, col, left, str(op), _value(right), *_pos(op))


# readable names for terminals in "expected ..." messages
_TERM_NAMES = {
    "SEMICOLON": "';'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "SLASH": "'/'",
    "STRING": "a string",
    "NUMBER": "a number",
    "ID": "a name",
    "HOST": "a host name",
    "IPV4": "an IPv4 address",
    "IPV6": "an IPv6 address",
    "OPTNAME": "an option name",
    "STAR": "'*'",
    "MSGLEN": "'msg:len'",
    "URIHOST": "'uri:host'",
    "URIPORT": "'uri:port'",
    "CMPOP": "an operator",
    "$END": "end of file",
}


@functools.cache
def _literals() -> dict[str, str]:
    """Terminal name -> its text, for terminals that are plain strings."""
    from lark.lexer import PatternStr

    return {t.name: t.pattern.value for t in _parser().terminals if isinstance(t.pattern, PatternStr)}


def _term(name: str) -> str:
    if name in _TERM_NAMES:
        return _TERM_NAMES[name]
    lit = _literals().get(name)
    if lit is not None:
        return f"'{lit}'"
    if name.startswith("_"):
        return ""
    return f"'{name.lower()}'"


def _expected(names: set[str] | frozenset[str]) -> str:
    words = sorted({w for w in (_term(n) for n in names) if w})
    if not words:
        return ""
    if len(words) > 8:
        words = [*words[:8], "..."]
    return ", expected " + " or ".join(words) if len(words) < 3 else ", expected one of " + ", ".join(words)


_TOP_LEVEL = re.compile(r"[ \t]*(?:(?:failure_|onreply_|reply_|branch_)?route\b|loadmodule\b|modparam\b)")


def _line_indent(text: str, pos: int) -> tuple[int, bool]:
    """The indentation of the line holding ``pos``, and whether the
    character at ``pos`` is the first one on that line."""
    start = text.rfind("\n", 0, pos) + 1
    first = start
    while first < pos and text[first] in " \t":
        first += 1
    return first - start, first == pos


def _unclosed_brace(clean: str) -> int | None:
    """The offset of a '{' that is never closed, or None.

    A missing '}' makes LALR report the next top-level block ("unexpected
    '[1]', missing ';'?"), far from the mistake.  Braces are matched as
    written, except that a '}' starting a line closes the block opened on
    the line with the same indentation: the deeper blocks it skips are the
    unclosed ones.  Comments are already blanked in ``clean``."""
    opened: list[tuple[int, int]] = []  # (offset, indentation of its line)
    i, n = 0, len(clean)
    while i < n:
        c = clean[i]
        if c == '"':
            i += 1
            while i < n and clean[i] != '"':
                i += 2 if clean[i] == "\\" else 1
        elif c == "'":
            j = clean.find("'", i + 1)
            i = n if j < 0 else j
        elif c == "{":
            opened.append((i, _line_indent(clean, i)[0]))
        elif c == "}" and opened:
            indent, first = _line_indent(clean, i)
            if first and opened[-1][1] > indent and any(ind <= indent for _, ind in opened):
                return opened[-1][0]
            opened.pop()
        elif c == "\n" and opened and _TOP_LEVEL.match(clean, i + 1):
            return opened[-1][0]
        i += 1
    return opened[-1][0] if opened else None


def _convert(e: UnexpectedInput, text: str, clean: str, filename: str) -> CfgError:
    lines = text.splitlines()
    line = getattr(e, "line", 0) or 0
    col = getattr(e, "column", 0) or 0
    brace = _unclosed_brace(clean) if clean.count("{") > clean.count("}") else None
    if brace is not None:
        where = "the end of the file" if isinstance(e, UnexpectedEOF) else f"line {line}"
        if isinstance(e, UnexpectedToken) and e.token.type == "$END":
            where = "the end of the file"
        bline = text.count("\n", 0, brace) + 1
        bcol = brace - (text.rfind("\n", 0, brace) + 1) + 1
        return CfgError(
            f"this '{{' is never closed (the parser noticed at {where})",
            filename,
            bline,
            bcol,
            lines[bline - 1],
        )
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "ID" and "OPTNAME" in e.expected:
            return CfgError(
                _top_level_word(str(tok)),
                filename,
                tok.line or line,
                tok.column or col,
                lines[(tok.line or line) - 1],
            )
        if tok.type == "$END":
            line = len(lines) or 1
            col = len(lines[-1]) + 1 if lines else 1
            msg = "unexpected end of file (missing '}' or ';'?)"
        else:
            line, col = tok.line or line, tok.column or col
            msg = f"syntax error: unexpected {_describe(tok)}{_expected(e.expected)}"
            if "SEMICOLON" in e.expected and tok.type not in ("SEMICOLON",):
                msg += " (missing ';'?)"
    elif isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        if ch in "\"'":
            msg = "unterminated string"
        else:
            msg = f"syntax error: unexpected character {ch!r}{_expected(e.allowed or set())}"
    elif isinstance(e, UnexpectedEOF):
        line = len(lines) or 1
        col = len(lines[-1]) + 1 if lines else 1
        msg = "unexpected end of file"
    else:
        msg = f"syntax error: {e}"
    src = lines[line - 1] if 1 <= line <= len(lines) else None
    return CfgError(msg, filename, line, col, src)


def _top_level_word(word: str) -> str:
    """A bare name where an option, loadmodule, modparam or route belongs."""
    from sipexpress.core.options import DEFAULTS, SYNONYMS

    if word in DEFAULTS or word in SYNONYMS:
        return f"option '{word}' needs '=': {word} = value"
    blocks = (
        "route",
        "failure_route",
        "onreply_route",
        "reply_route",
        "branch_route",
        "loadmodule",
        "modparam",
    )
    hint = did_you_mean(word, (*blocks, *DEFAULTS)) or " (an option is written name = value)"
    return f"syntax error: unexpected '{word}'{hint}"


def _describe(tok: Token) -> str:
    if tok.type == "STRING":
        return "string"
    if tok.type == "NUMBER":
        return f"number {tok}"
    return f"'{tok}'"


def parse_config(text: str, filename: str = "<config>") -> ast.Config:
    """Parse a ser.cfg text.  Raises :class:`CfgError` located in ``filename``."""
    clean = strip_comments(text, filename)
    try:
        tree = _parser().parse(clean)
        items = _Build().transform(tree)
    except UnexpectedInput as e:
        raise _convert(e, text, clean, filename) from None
    except VisitError as e:
        orig = e.orig_exc
        if isinstance(orig, CfgError):
            orig.filename = filename
            if orig.source_line is None and orig.line:
                lines = text.splitlines()
                if orig.line <= len(lines):
                    orig.source_line = lines[orig.line - 1]
            raise orig from None
        raise
    cfg = ast.Config(filename, text)
    for it in items:
        cfg.items.append(it)
        if isinstance(it, ast.Option):
            cfg.options.append(it)
        elif isinstance(it, ast.LoadModule):
            cfg.loads.append(it)
        elif isinstance(it, ast.ModParam):
            cfg.modparams.append(it)
        elif isinstance(it, ast.RouteBlock):
            cfg.routes.append(it)
    return cfg
