"""The ser.cfg syntax tree.  Every node carries its ``line``/``col``
(1-based) so that the compiler can report ``file:line:col`` errors."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Node:
    line: int
    col: int


# ---- values --------------------------------------------------------------
@dataclass(slots=True)
class Str(Node):
    value: str


@dataclass(slots=True)
class Num(Node):
    value: int
    text: str = ""


@dataclass(slots=True)
class Name(Node):
    """An unquoted identifier or host name (``INVITE``, ``max_len``,
    ``udp``, ``backup.foo.bar``)."""

    value: str


@dataclass(slots=True)
class Ip(Node):
    value: str  # address text (IPv6 without brackets)
    v6: bool = False


@dataclass(slots=True)
class Net(Node):
    """``a.b.c.d``, ``a.b.c.d/bits`` or ``a.b.c.d/mask`` (right operand of
    ``src_ip ==``)."""

    addr: str
    mask: str | int | None = None


@dataclass(slots=True)
class Star(Node):
    pass


@dataclass(slots=True)
class Addr(Node):
    """``[proto:]host[:port]`` written unquoted (listen, alias,
    force_send_socket): the colon separated parts."""

    parts: list[Value]


@dataclass(slots=True)
class Keyword(Node):
    """``uri:host``, ``uri:port``, ``myself`` or an operand keyword used as
    a value (``myself == uri``)."""

    value: str


Value = Str | Num | Name | Ip | Net | Star | Addr | Keyword


# ---- top level -------------------------------------------------------------
@dataclass(slots=True)
class Option(Node):
    name: str
    values: list[Value]


@dataclass(slots=True)
class LoadModule(Node):
    path: Str


@dataclass(slots=True)
class ModParam(Node):
    module: Str
    param: Str
    value: Value


@dataclass(slots=True)
class RouteBlock(Node):
    kind: str  # route, failure_route, onreply_route, reply_route, branch_route
    name: str  # "0" for a plain route {}
    body: list[Stmt]
    name_line: int = 0
    name_col: int = 0


@dataclass(slots=True)
class Config:
    filename: str
    text: str
    options: list[Option] = field(default_factory=list)
    loads: list[LoadModule] = field(default_factory=list)
    modparams: list[ModParam] = field(default_factory=list)
    routes: list[RouteBlock] = field(default_factory=list)
    # top-level items in file order (loadmodule must precede modparam)
    items: list[Option | LoadModule | ModParam | RouteBlock] = field(default_factory=list)

    def source_line(self, line: int) -> str | None:
        lines = self.text.splitlines()
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return None


# ---- statements -----------------------------------------------------------
@dataclass(slots=True)
class Call(Node):
    """``name(args)`` or a bare keyword (``drop``, ``break``)."""

    name: str
    args: list[Value]
    bare: bool = False


@dataclass(slots=True)
class Return(Node):
    kind: str  # "return" or "exit"
    value: int | None


@dataclass(slots=True)
class If(Node):
    cond: Expr
    then: list[Stmt]
    orelse: list[Stmt] | None


Stmt = Call | Return | If


# ---- expressions ----------------------------------------------------------
@dataclass(slots=True)
class Not(Node):
    operand: Expr


@dataclass(slots=True)
class And(Node):
    left: Expr
    right: Expr


@dataclass(slots=True)
class Or(Node):
    left: Expr
    right: Expr


@dataclass(slots=True)
class Cmp(Node):
    left: Keyword  # operand keyword or "myself"
    op: str
    right: Value
    op_line: int = 0
    op_col: int = 0


@dataclass(slots=True)
class CallCond(Node):
    """An action used as a condition (module function, ``route(n)`` ...)."""

    stmt: Stmt


@dataclass(slots=True)
class NumCond(Node):
    value: int


Expr = Not | And | Or | Cmp | CallCond | NumCond
