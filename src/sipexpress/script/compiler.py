"""ser.cfg -> loaded modules + compiled routes.

Theory of operation
-------------------
:func:`load_config` parses the file (:mod:`~sipexpress.script.parser`),
applies the global options, instantiates the modules named by
``loadmodule`` (in file order, so that ``modparam`` finds them), sets the
parameters, and compiles every route block into Python.

Compilation generates the source of one Python module holding, for each
route, an ``async def`` body (called by ``route(n)``) and an entry point
(what the core calls: it also turns an exception into a logged, located
error).  Constants, compiled regexes, module handlers and their fixed-up
arguments are globals of that module; nothing is looked up by name or
parsed per message.  ``await`` appears only for async handlers.

SER's return-value rules (cfg-language.md §6) map onto Python as follows:
an action returning 0 (``drop``/``break`` or a module function) ends the
whole route block (``return 0``) because a 0 stops every enclosing list;
a function used as a condition goes through :func:`runtime.cond`, which
raises :class:`runtime.StopScript` for 0, caught at the route boundary;
``route(n)`` maps a non-negative result to 1; ``exit`` raises
:class:`ScriptExit`, caught by the entry point.

Every statement's Python line is mapped back to its ``file:line:col`` so a
runtime error can name the script location without any per-message cost.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from sipexpress.core.api import CoreAPI, Listener, ReplyHook, RequestHook
from sipexpress.core.context import Proto, RequestContext, RouteTable
from sipexpress.core.registry import ConfigError, FixupEnv, Module, RouteType, ScriptFunction, did_you_mean
from sipexpress.core.resolver import Resolver
from sipexpress.core.stats import Stats, StatsRegistry
from sipexpress.script import ast, runtime
from sipexpress.script.core_actions import CORE_ACTIONS, MAX_LEN, ArgError
from sipexpress.script.errors import CfgError, ScriptExit
from sipexpress.script.parser import parse_config
from sipexpress.sip.errors import SipParseError

if TYPE_CHECKING:
    from sipexpress.core.workers import WorkerInfo

log = logging.getLogger("sipexpress.script")

__all__ = ["CheckCore", "LoadedConfig", "check_config", "compile_config", "load_config", "parse_config"]

# route block keyword -> (RouteTable attribute, RouteType)
_KINDS: dict[str, tuple[str, RouteType]] = {
    "route": ("request", RouteType.REQUEST),
    "failure_route": ("failure", RouteType.FAILURE),
    "reply_route": ("failure", RouteType.FAILURE),
    "onreply_route": ("onreply", RouteType.ONREPLY),
    "branch_route": ("branch", RouteType.BRANCH),
}

# options that are accepted (SER knew them) but change nothing here
_NO_EFFECT = {
    "memlog",
    "mhomed",
    "syn_branch",
    "user",
    "group",
    "chroot",
    "workdir",
    "unix_sock",
    "unix_sock_children",
    "unix_tx_timeout",
    "tcp_children",
    "disable_core_dump",
    "open_files_limit",
    "mcast_loopback",
    "mcast_ttl",
    "statistics",
    "fifo_db_url",
    "tls_log",
    "tls_send_timeout",
}
_logged_no_effect: set[str] = set()

_BOOL_WORDS = {"yes": 1, "true": 1, "on": 1, "enable": 1, "no": 0, "false": 0, "off": 0, "disable": 0}

RouteFn = Callable[[RequestContext], Awaitable[int]]


@dataclass
class LoadedConfig:
    """The result of loading a config: what the core needs to run it."""

    filename: str
    options: dict[str, Any]
    modules: list[Module]
    routes: RouteTable
    ast: ast.Config
    #: the generated Python source (for ``ser -c -v`` and debugging)
    source: str = ""
    compile_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def module(self, name: str) -> Module | None:
        for m in self.modules:
            if m.name == name or name in m.aliases:
                return m
        return None


class ConfigTarget(CoreAPI, Protocol):
    """What a config is compiled into: a core that also takes the global
    options and the modules the config loads."""

    def update_options(self, values: dict[str, Any]) -> None: ...

    def add_module(self, module: Module) -> None: ...


class CheckCore:
    """A core for checking configs (``ser -c``, tests): options and loaded
    modules, nothing on the network."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        from sipexpress.core.options import normalize_options

        self.options: dict[str, Any] = normalize_options(options or {})
        self.routes = RouteTable({}, {}, {}, {})
        self.modules: dict[str, Module] = {}
        self.stats = Stats()
        self.statistics = StatsRegistry(lambda: self.modules.values())
        self.resolver = Resolver()
        self.request_hooks: list[RequestHook] = []
        self.reply_hooks: list[ReplyHook] = []
        self.to_tag_prefix = "check"
        self.last_negative_reply = -1e9
        self.worker: WorkerInfo | None = None
        self.streams: dict[Proto, Any] = {}

    def add_module(self, module: Module) -> None:
        self.modules[module.name] = module

    def update_options(self, values: dict[str, Any]) -> None:
        from sipexpress.core.options import normalize_options

        self.options = normalize_options(values, self.options)

    def module(self, name: str) -> Module | None:
        return self.modules.get(name)

    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any:
        return None

    def spawn(self, coro: Awaitable[Any]) -> None:
        close = getattr(coro, "close", None)
        if close is not None:
            close()

    def drive(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        coro.close()

    def is_myself(self, host: str, port: int | None = None, proto: Proto | None = None) -> bool:
        return False

    def is_numeric(self, host: str) -> bool:
        return False

    def pick_listener(self, ctx: RequestContext | None, proto: Proto, dip: str) -> Listener | None:
        return None

    def connected(self, proto: Proto, ip: str, port: int) -> bool:
        return False

    async def host_destination(
        self, host: str, port: int | None, proto: Proto
    ) -> tuple[Proto, str, int] | int:
        return -1

    def fix_top_via(self, ctx: RequestContext) -> None:
        pass

    async def uri_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto, uri: Any = None
    ) -> tuple[Proto, str, int] | int:
        return -1

    def known_destination(
        self, uri_text: str, proto: Proto | None, rproto: Proto
    ) -> tuple[Proto, str, int] | None:
        return None

    def send(
        self, proto: Proto, ip: str, port: int, data: bytes, rcv: Any = None, on_error: Any = None
    ) -> bool:
        return False

    def build_reply(self, ctx: RequestContext, code: int, reason: str, *a: Any, **k: Any) -> bytes:
        return b""

    def send_reply(self, ctx: RequestContext, code: int, reason: str, *a: Any, **k: Any) -> int:
        return -1

    async def forward(
        self,
        ctx: RequestContext,
        host: str | None = None,
        port: int | None = None,
        proto: Proto | None = None,
    ) -> int:
        return -1

    async def run_route(self, kind: RouteType, name: str, ctx: RequestContext) -> int:
        return -1


# ---------------------------------------------------------------------------
def load_config(
    path: str | Path, core: ConfigTarget, apply_options: bool = True, running: bool = False
) -> LoadedConfig:
    """Read, parse and compile ``path`` for ``core`` (``running``: see
    :func:`compile_config`).  Raises :class:`CfgError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise CfgError(f"cannot read config: {e.strerror or e}", str(path)) from None
    return compile_config(parse_config(text, str(path)), core, apply_options, running)


def check_config(text: str, filename: str = "<config>") -> LoadedConfig:
    """Parse and compile against a :class:`CheckCore` (what ``ser -c`` does)."""
    return compile_config(parse_config(text, filename), CheckCore())


def compile_config(
    cfg: ast.Config, core: ConfigTarget, apply_options: bool = True, running: bool = False
) -> LoadedConfig:
    """``running``: compile for a server that runs (a reload): the routes
    are bound to the modules it already has, options are not applied, and a
    module or modparam the running server lacks is an error (a restart
    changes those)."""
    t0 = time.perf_counter()
    c = _Compiler(cfg, core, running)
    try:
        loaded = c.run(apply_options and not running)
    except CfgError as e:
        if e.filename in ("", "<config>"):
            e.filename = cfg.filename
        if e.source_line is None and e.line:
            e.source_line = cfg.source_line(e.line)
        raise
    loaded.compile_seconds = time.perf_counter() - t0
    return loaded


# ---------------------------------------------------------------------------
@dataclass
class _Block:
    kind: str  # RouteTable attribute
    rtype: RouteType
    name: str
    body: list[ast.Stmt]
    node: ast.RouteBlock
    auto_relay: bool = False  # 2003 reply_route
    calls: set[str] = field(default_factory=set)  # request routes it calls
    has_relay: bool = False


class _Compiler:
    def __init__(self, cfg: ast.Config, core: ConfigTarget, running: bool = False) -> None:
        self.cfg = cfg
        self.core = core
        self.running = running
        self.modules: list[Module] = []
        self.functions: dict[str, list[tuple[Module, ScriptFunction]]] = {}
        self.globals: dict[str, Any] = {}
        self.lines: list[str] = []
        self.linemap: dict[int, tuple[int, int]] = {}
        self.counter = 0
        self.blocks: dict[tuple[str, str], _Block] = {}
        self.warnings: list[str] = []

    # ---- errors ------------------------------------------------------------
    def err(self, msg: str, node: ast.Node | None) -> CfgError:
        line, col = (node.line, node.col) if node is not None else (0, 0)
        return CfgError(msg, self.cfg.filename, line, col, self.cfg.source_line(line) if line else None)

    # ---- driver --------------------------------------------------------------
    def run(self, apply_options: bool) -> LoadedConfig:
        raw = self.options()
        from sipexpress.core.options import normalize_options

        options = normalize_options(raw)
        if apply_options:
            self.core.update_options(raw)  # the core merges and re-applies command-line overrides
        for item in self.cfg.items:
            if isinstance(item, ast.LoadModule):
                self.loadmodule(item)
            elif isinstance(item, ast.ModParam):
                self.modparam(item)
        self.collect_blocks()
        routes = self.compile_routes()
        return LoadedConfig(
            self.cfg.filename,
            options,
            self.modules,
            routes,
            self.cfg,
            "\n".join(self.lines),
            warnings=self.warnings,
        )

    # ---- options ---------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        from sipexpress.core.options import DEFAULTS, SYNONYMS, OptionError, normalize_options

        known = set(DEFAULTS) | set(SYNONYMS) | _NO_EFFECT | {"tlslog", "log_stderr"}
        raw: dict[str, Any] = {}
        for opt in self.cfg.options:
            name = SYNONYMS.get(opt.name, opt.name)
            if opt.name not in known and name not in known:
                raise self.err(f"unknown option '{opt.name}'{did_you_mean(opt.name, DEFAULTS)}", opt)
            self.check_missing_equals(opt, known)
            if name in ("listen", "alias"):
                value: Any = [self.socket_text(v) for v in opt.values]
            else:
                if len(opt.values) != 1:
                    raise self.err(f"option '{opt.name}' takes one value", opt.values[1])
                value = self.option_value(opt.values[0], opt.name)
            try:
                single = normalize_options({name: value}, base={})
            except OptionError as e:
                raise self.err(str(e), opt.values[0]) from None
            if name in ("listen", "alias"):
                raw[name] = raw.get(name, []) + single[name]
            else:
                raw[name] = single[name]
            if name in _NO_EFFECT and name not in _logged_no_effect:
                _logged_no_effect.add(name)
                log.info("option '%s' is accepted but has no effect in sipexpress", opt.name)
        return raw

    def check_missing_equals(self, opt: ast.Option, known: set[str]) -> None:
        """``port=5060`` followed by ``fifo "x"`` parses as one option with
        three values; name the option whose '=' is missing, not ``port``."""
        for v in opt.values[1:]:
            if isinstance(v, ast.Name) and v.value in known and v.line > opt.line:
                raise self.err(f"option '{v.value}' needs '=': {v.value} = value", v)

    def option_value(self, v: ast.Value, name: str) -> Any:
        if isinstance(v, ast.Str):
            return v.value
        if isinstance(v, ast.Num):
            return v.value
        if isinstance(v, ast.Name):
            if v.value in _BOOL_WORDS:
                return bool(_BOOL_WORDS[v.value])
            return v.value
        if isinstance(v, ast.Ip):
            return v.value
        raise self.err(f"bad value for option '{name}'", v)

    def socket_text(self, v: ast.Value) -> str:
        if isinstance(v, ast.Str):
            return v.value
        if isinstance(v, ast.Addr):
            parts: list[str] = []
            for p in v.parts:
                if isinstance(p, ast.Ip) and p.v6:
                    parts.append(f"[{p.value}]")
                elif isinstance(p, ast.Star):
                    parts.append("*")
                elif isinstance(p, ast.Num):
                    parts.append(p.text or str(p.value))
                elif isinstance(p, (ast.Name, ast.Ip)):
                    parts.append(p.value)
                else:
                    raise self.err("bad address", p)
            return ":".join(parts)
        if isinstance(v, ast.Ip):
            return f"[{v.value}]" if v.v6 else v.value
        if isinstance(v, ast.Name):
            return v.value
        if isinstance(v, ast.Star):
            return "*"
        raise self.err("address expected ([proto:]host[:port])", v)

    # ---- modules -------------------------------------------------------------
    def loadmodule(self, item: ast.LoadModule) -> None:
        from sipexpress.modules import CATALOGUE, UnknownModule, load_module_class, module_name_from_path

        name = module_name_from_path(item.path.value)
        if not name:
            raise self.err(f"bad module path {item.path.value!r}", item.path)
        for m in self.modules:
            if m.name == name or name in m.aliases:
                log.warning("%s:%d: module '%s' loaded twice", self.cfg.filename, item.line, name)
                return
        if self.running:
            live = self.core.module(name)
            if live is None:
                raise self.err(
                    f"module '{name}' is not loaded in the running server: restart ser to add it", item
                )
            self.add_functions(live, item)
            return
        try:
            cls = load_module_class(name)
        except UnknownModule:
            raise self.err(
                f"unknown module '{name}' (loadmodule \"{item.path.value}\"): not available in sipexpress"
                + did_you_mean(name, CATALOGUE),
                item.path,
            ) from None
        except Exception as e:
            raise self.err(f"module '{name}' failed to load: {type(e).__name__}: {e}", item.path) from None
        try:
            mod = cls(self.core)
        except Exception as e:
            raise self.err(
                f"module '{name}' failed to initialise: {type(e).__name__}: {e}", item.path
            ) from None
        self.core.add_module(mod)
        self.add_functions(mod, item)

    def add_functions(self, mod: Module, item: ast.LoadModule) -> None:
        name = mod.name
        self.modules.append(mod)
        try:
            fns = list(mod.functions())
        except Exception as e:
            raise self.err(f"module '{name}': cannot list its functions: {e}", item.path) from None
        for fn in fns:
            self.functions.setdefault(fn.name, []).append((mod, fn))

    def modparam(self, item: ast.ModParam) -> None:
        pattern = item.module.value
        try:
            rx = re.compile(f"^(?:{pattern})$", re.IGNORECASE)
        except re.error as e:
            raise self.err(f"modparam: bad module regex {pattern!r}: {e}", item.module) from None
        v = item.value
        value: Any
        if isinstance(v, (ast.Str, ast.Num)):
            value = v.value
        elif isinstance(v, ast.Name) and v.value in _BOOL_WORDS:
            value = _BOOL_WORDS[v.value]
        else:
            raise self.err("modparam: value must be a string or a number", v)
        hit = False
        for m in self.modules:
            if any(rx.match(n) for n in (m.name, *m.aliases)):
                hit = True
                try:
                    if self.running:
                        self.check_unchanged(m, item, value)
                        continue
                    m.set_param(item.param.value, value)
                except ConfigError as e:
                    raise self.err(f"modparam: {e}", item.param) from None
                except Exception as e:
                    raise self.err(f"modparam: {type(e).__name__}: {e}", item.value) from None
        if not hit:
            raise self.err(
                f"modparam: no loaded module matches '{pattern}' (loadmodule must come first)", item.module
            )

    def check_unchanged(self, m: Module, item: ast.ModParam, value: Any) -> None:
        """A reload keeps modparams: refuse one whose value changed."""
        name = item.param.value
        before = m.values.get(name)
        m.set_param(name, value)  # the declared type's conversion, and its errors
        now = m.values[name]
        m.values[name] = before
        if now != before:
            raise self.err(
                f"modparam: {m.name}.{name} is {before!r} in the running server: restart ser to change it",
                item.value,
            )

    # ---- route blocks -----------------------------------------------------------
    def collect_blocks(self) -> None:
        for rb in self.cfg.routes:
            kind, rtype = _KINDS[rb.kind]
            name = rb.name
            if name.isdigit() and int(name) >= 1000:
                raise self.err(f"route number {name} out of range", ast.Node(rb.name_line, rb.name_col))
            key = (kind, name)
            blk = self.blocks.get(key)
            if blk is None:
                self.blocks[key] = _Block(kind, rtype, name, list(rb.body), rb, rb.kind == "reply_route")
            else:
                blk.body.extend(rb.body)  # same number: concatenated in file order
                blk.auto_relay = blk.auto_relay or rb.kind == "reply_route"

    def route_names(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {"request": set(), "failure": set(), "onreply": set(), "branch": set()}
        for kind, name in self.blocks:
            out[kind].add(name)
        return out

    def compile_routes(self) -> RouteTable:
        g = self.globals
        g.update(
            {
                "__name__": "sipexpress.script.compiled",
                "_cond": runtime.cond,
                "_Stop": runtime.StopScript,
                "_Exit": ScriptExit,
                "_rt": runtime,
                "_guard": runtime.guarded_call,
                "_P_UDP": Proto.UDP,
                "_P_TCP": Proto.TCP,
                "_P_TLS": Proto.TLS,
                "_P_WS": Proto.WS,
                "_P_WSS": Proto.WSS,
            }
        )
        self.env_routes = self.route_names()
        for blk in self.blocks.values():
            self.collect_calls(blk.body, blk)
        self.cyclic = self.cyclic_routes()
        # generate code for every block
        order = sorted(self.blocks.values(), key=lambda b: (b.node.line, b.node.col))
        bodies: dict[tuple[str, str], list[tuple[int, str, ast.Node | None]]] = {}
        for blk in order:
            self.cur = blk
            code: list[tuple[int, str, ast.Node | None]] = []
            self.stmts(blk.body, code, 1)
            bodies[(blk.kind, blk.name)] = code
        src: list[str] = []
        for blk in order:
            fname = self.fn_name(blk.kind, blk.name)
            code = bodies[(blk.kind, blk.name)]
            # body: called by route(n)
            self.emit(src, 0, f"async def B_{fname}(ctx):", None)
            self.emit(src, 1, "r = 1", None)
            self.emit(src, 1, "try:", None)
            for ind, line, node in code:
                self.emit(src, ind + 1, line, node)
            self.emit(src, 1, "except _Stop:", None)
            self.emit(src, 2, "return 0", None)
            self.emit(src, 1, "return r", None)
            # entry: called by the core
            self.emit(src, 0, f"async def E_{fname}(ctx):", None)
            self.emit(src, 1, "r = 1", None)
            self.emit(src, 1, "try:", None)
            for ind, line, node in code:
                self.emit(src, ind + 1, line, node)
            self.emit(src, 1, "except _Stop:", None)
            self.emit(src, 2, "return 0", None)
            self.emit(src, 1, "except _Exit as e:", None)
            self.emit(src, 2, "return e.code", None)
            self.emit(src, 1, "except Exception as e:", None)
            reraise = blk.kind == "request"
            self.emit(src, 2, f"return _report(e, {self.label(blk)!r}, ctx, {reraise})", None)
            self.emit(src, 1, "return r", None)
        self.lines = src
        filename = f"<ser.cfg {self.cfg.filename}>"
        g["_report"] = _Reporter(filename, self.linemap, self.cfg.filename)
        code_obj = compile("\n".join(src) + "\n", filename, "exec")
        exec(code_obj, g)
        table = RouteTable({}, {}, {}, {})
        for blk in order:
            fn = g[f"E_{self.fn_name(blk.kind, blk.name)}"]
            if blk.auto_relay and not blk.has_relay:
                fn = self.auto_relay(fn, blk)
            getattr(table, blk.kind)[blk.name] = fn
        return table

    def collect_calls(self, body: Sequence[ast.Stmt], blk: _Block) -> None:
        for st in body:
            if isinstance(st, ast.Call) and st.name == "route" and len(st.args) == 1:
                a = st.args[0]
                if isinstance(a, (ast.Num, ast.Str, ast.Name)):
                    blk.calls.add(str(a.value))
            elif isinstance(st, ast.If):
                self.collect_calls(st.then, blk)
                self.collect_calls(st.orelse or [], blk)
                self.collect_cond_calls(st.cond, blk)

    def collect_cond_calls(self, e: ast.Expr, blk: _Block) -> None:
        if isinstance(e, (ast.And, ast.Or)):
            self.collect_cond_calls(e.left, blk)
            self.collect_cond_calls(e.right, blk)
        elif isinstance(e, ast.Not):
            self.collect_cond_calls(e.operand, blk)
        elif isinstance(e, ast.CallCond):
            self.collect_calls([e.stmt], blk)

    def cyclic_routes(self) -> set[str]:
        graph = {name: blk.calls for (kind, name), blk in self.blocks.items() if kind == "request"}
        out: set[str] = set()
        for start in graph:
            seen: set[str] = set()
            stack = list(graph[start])
            while stack:
                n = stack.pop()
                if n == start:
                    out.add(start)
                    break
                if n in seen:
                    continue
                seen.add(n)
                stack.extend(graph.get(n, ()))
        return out

    def auto_relay(self, fn: RouteFn, blk: _Block) -> RouteFn:
        """2003 ``reply_route``: new branches were relayed after the block."""
        relay = None
        for mod, sf in self.functions.get("t_relay", []):
            if 0 in sf.arities:
                env = FixupEnv(self.core, mod, self.env_routes)
                args = tuple(sf.fixup((), env)) if sf.fixup else ()
                relay = (sf, args)
                break
        if relay is None:
            self.warnings.append(f"{self.label(blk)}: reply_route without tm's t_relay: no automatic relay")
            return fn
        sf, args = relay

        async def reply_route(ctx: RequestContext) -> int:
            r = await fn(ctx)
            if r != 0 and ctx.branches:
                res = sf.handler(ctx, *args)
                if sf.is_async:
                    await res  # type: ignore[misc]
            return r

        return reply_route

    def label(self, blk: _Block) -> str:
        kw = blk.node.kind
        return f"{kw}[{blk.name}]" if (kw != "route" or blk.name != "0") else "route"

    @staticmethod
    def ident(name: str) -> str:
        return re.sub(r"\W", "_", name)

    def fn_name(self, kind: str, name: str) -> str:
        return f"{kind}_{self.ident(name)}"

    def emit(self, src: list[str], indent: int, line: str, node: ast.Node | None) -> None:
        src.append("    " * indent + line)
        if node is not None:
            self.linemap[len(src)] = (node.line, node.col)

    def const(self, value: Any, prefix: str = "c") -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.globals[name] = value
        return name

    # ---- statements --------------------------------------------------------------
    def stmts(self, body: Sequence[ast.Stmt], out: list[tuple[int, str, ast.Node | None]], ind: int) -> None:
        if not body:
            out.append((ind, "r = 1", None))
            return
        for st in body:
            self.stmt(st, out, ind)

    def stmt(self, st: ast.Stmt, out: list[tuple[int, str, ast.Node | None]], ind: int) -> None:
        if isinstance(st, ast.If):
            self.if_stmt(st, out, ind)
        elif isinstance(st, ast.Return):
            v = 1 if st.value is None else st.value
            if st.kind == "return":
                out.append((ind, f"return {v}", st))
            else:
                out.append((ind, f"raise _Exit({v})", st))
        elif st.name == "route":
            out.append((ind, f"r = {self.route_call(st)}", st))
            out.append((ind, "if r >= 0: r = 1", st))  # 0 (break) and > 0 -> 1
        else:
            expr, stops = self.call_expr(st)
            if expr == "0":  # drop / break
                out.append((ind, "return 0", st))
                return
            out.append((ind, f"r = {expr}", st))
            if stops:
                out.append((ind, "if not r: return 0", st))

    def if_stmt(self, st: ast.If, out: list[tuple[int, str, ast.Node | None]], ind: int) -> None:
        cond = st.cond
        neg = False
        while isinstance(cond, ast.Not) and isinstance(cond.operand, ast.Not):
            cond = cond.operand.operand
        if isinstance(cond, ast.Not) and isinstance(cond.operand, ast.CallCond):
            neg, cond = True, cond.operand
        if isinstance(cond, ast.CallCond) and isinstance(cond.stmt, ast.Call):
            # the common shape: if (f()) / if (!f()): no helper call
            expr, stops = self.call_expr(cond.stmt, as_cond=True)
            if stops:
                out.append((ind, f"v = {expr}", cond))
                out.append((ind, "if not v: return 0", cond))
                test = "v < 0" if neg else "v > 0"
            else:  # route(n): 0 counts as 1
                test = f"{expr} {'<' if neg else '>='} 0"
        else:
            test = self.expr(cond)
        out.append((ind, f"if {test}:", st))
        self.stmts(st.then, out, ind + 1)
        out.append((ind, "else:", None))
        if st.orelse is None:
            out.append((ind + 1, "r = 1", None))
        else:
            self.stmts(st.orelse, out, ind + 1)

    def call_expr(self, st: ast.Stmt, as_cond: bool = False) -> tuple[str, bool]:
        """Python expression for an action and whether it can return 0."""
        if isinstance(st, ast.Return):
            raise self.err(f"'{st.kind}' cannot be used in a condition", st)
        if isinstance(st, ast.If):
            raise self.err("'if' cannot be used in a condition", st)
        assert isinstance(st, ast.Call)
        name = st.name
        if name == "route":
            return self.route_call(st), False  # never 0: see stmt()/expr()
        if name in ("t_relay", "t_relay_to_udp", "t_relay_to_tcp", "t_relay_to", "forward"):
            self.cur.has_relay = True
        action = CORE_ACTIONS.get(name)
        if action is not None:
            if st.bare and not action.bare_ok:
                raise self.err(f"'{name}' needs parentheses: {name}(...)", st)
            try:
                args = action.convert(list(st.args), st)
            except ArgError as e:
                raise self.err(str(e), e.node or st) from None
            if action.names[0] == "drop":
                return "0", True
            return self.handler_call(action.handler, args, action.is_async), action.can_stop
        return self.module_call(st)

    def handler_call(self, handler: Any, args: Sequence[Any], is_async: bool) -> str:
        f = self.const(handler, "f")
        parts = ["ctx"]
        for a in args:
            if a is None or isinstance(a, (bool, int)) or (isinstance(a, str) and len(a) < 200):
                parts.append(repr(a))
            else:
                parts.append(self.const(a, "a"))
        call = f"{f}({', '.join(parts)})"
        return f"(await {call})" if is_async else call

    def route_call(self, st: ast.Call) -> str:
        if len(st.args) != 1:
            raise self.err("route() takes one argument: a route number or name", st)
        a = st.args[0]
        if isinstance(a, ast.Num):
            name = str(a.value)
        elif isinstance(a, (ast.Str, ast.Name)):
            name = a.value
        else:
            raise self.err("route(): route number or name expected", a)
        if ("request", name) not in self.blocks:
            known = [n for kind, n in self.blocks if kind == "request"]
            raise self.err(f"route({name}): there is no route[{name}] block{did_you_mean(name, known)}", a)
        fn = f"B_request_{self.ident(name)}"
        if name in self.cyclic:
            return f"(await _guard({fn}, ctx))"
        return f"(await {fn}(ctx))"

    def module_call(self, st: ast.Call) -> tuple[str, bool]:
        cands = self.functions.get(st.name)
        if not cands:
            raise self.err(self.unknown_function(st.name), st)
        if st.bare:
            raise self.err(f"'{st.name}' needs parentheses: {st.name}(...)", st)
        nargs = len(st.args)
        chosen = None
        for mod, fn in cands:
            if nargs in fn.arities:
                chosen = (mod, fn)
                break
        if chosen is None:
            ar = sorted({a for _, f in cands for a in f.arities})
            want = " or ".join(str(a) for a in ar)
            raise self.err(f"function '{st.name}' takes {want} argument(s), {nargs} given", st)
        mod, fn = chosen
        if not (fn.route_types & self.cur.rtype):
            raise self.err(
                f"function '{st.name}' cannot be used in {self.cur.node.kind} blocks "
                "(Command cannot be used in the block)",
                st,
            )
        ref_kind = _ROUTE_REFS.get(st.name)
        if ref_kind is not None and st.args and isinstance(st.args[0], (ast.Str, ast.Num, ast.Name)):
            ref = str(st.args[0].value)
            if ref.isdigit():
                ref = str(int(ref))
            if ref != "0" and (ref_kind, ref) not in self.blocks:
                block = {"failure": "failure_route", "onreply": "onreply_route", "branch": "branch_route"}[
                    ref_kind
                ]
                known = [n for kind, n in self.blocks if kind == ref_kind]
                raise self.err(
                    f'{st.name}("{ref}"): there is no {block}[{ref}] block{did_you_mean(ref, known)}',
                    st.args[0],
                )
        args: list[Any] = []
        for a in st.args:
            if isinstance(a, ast.Str):
                args.append(a.value)
            elif isinstance(a, ast.Num):
                args.append(a.text or str(a.value))
            elif isinstance(a, (ast.Name, ast.Ip)):
                args.append(a.value)
            else:
                raise self.err(f"function '{st.name}': arguments must be strings", a)
        if fn.fixup is not None:
            env = FixupEnv(self.core, mod, self.env_routes)
            try:
                args = list(fn.fixup(tuple(args), env))
            except (ConfigError, ValueError, re.error) as e:
                raise self.err(f"{st.name}(): {e}", st.args[0] if st.args else st) from None
            except Exception as e:
                raise self.err(f"{st.name}(): {type(e).__name__}: {e}", st) from None
        return self.handler_call(fn.handler, args, fn.is_async), True

    def unknown_function(self, name: str) -> str:
        """'unknown function', naming the module that would provide it."""
        from sipexpress.modules import CATALOGUE, load_module_class

        loaded = {m.name for m in self.modules}
        for modname in CATALOGUE:
            if modname in loaded:
                continue
            try:
                inst = load_module_class(modname)(CheckCore())  # type: ignore[arg-type]
                if any(f.name == name for f in inst.functions()):
                    return f"unknown function '{name}' (it is exported by module '{modname}', which is not loaded)"
            except Exception:
                continue
        return f"unknown function '{name}'{did_you_mean(name, [*self.functions, *CORE_ACTIONS])}"

    # ---- expressions -------------------------------------------------------------
    def expr(self, e: ast.Expr) -> str:
        return self.expr2(e)[0]

    def expr2(self, e: ast.Expr) -> tuple[str, bool]:
        """Python code of a condition and whether it may be "error" (None):
        SER's eval_expr lets an error (−1) pass through ``!`` and stop
        ``||``; an error is false for ``if``."""
        if isinstance(e, ast.Or):
            (a, ea), (b, eb) = self.expr2(e.left), self.expr2(e.right)
            if ea:
                self.counter += 1
                t = f"_t{self.counter}"
                return f"({t} if ({t} := {a}) is not False else {b})", True
            return f"({a} or {b})", eb
        if isinstance(e, ast.And):
            (a, ea), (b, eb) = self.expr2(e.left), self.expr2(e.right)
            return f"({a} and {b})", ea or eb  # False/None short-circuit as themselves
        if isinstance(e, ast.Not):
            a, ea = self.expr2(e.operand)
            if ea and isinstance(e.operand, ast.Cmp):
                flipped = _flip(a)
                if flipped is not None:
                    return flipped, True
            return (f"_rt.neg({a})", True) if ea else (f"(not {a})", False)
        if isinstance(e, ast.NumCond):
            return ("True" if e.value else "False"), False
        if isinstance(e, ast.CallCond):
            expr, stops = self.call_expr(e.stmt, as_cond=True)
            if isinstance(e.stmt, ast.Call) and e.stmt.name == "route":
                return f"({expr} >= 0)", False
            return (f"_cond({expr})" if stops else f"(({expr}) > 0)"), False
        if isinstance(e, ast.Cmp):
            code = self.cmp(e)
            return code, code.startswith(_ERR_HELPERS)
        raise self.err("bad expression", e)

    def cmp(self, e: ast.Cmp) -> str:
        left, op, right = e.left.value, e.op, e.right
        if left == "myself":
            if not (isinstance(right, ast.Keyword) and right.value in _URI_OPERANDS | {"src_ip", "dst_ip"}):
                raise self.err("myself can be compared with uri, from_uri, to_uri, src_ip or dst_ip", right)
            left, right = right.value, ast.Keyword(e.line, e.col, "myself")
        opnode = ast.Node(e.op_line, e.op_col)
        if left in _URI_OPERANDS or left == "method":
            return self.cmp_str(left, op, right, opnode)
        if left in ("src_ip", "dst_ip"):
            return self.cmp_ip(left, op, right, opnode)
        if left in ("src_port", "dst_port", "af", "proto", "msg:len"):
            return self.cmp_int(left, op, right, opnode)
        raise self.err(f"unknown operand '{left}'", e)

    def _value_expr(self, left: str) -> str:
        rtype = self.cur.rtype
        if left == "method":
            return "ctx.msg.method" if rtype != RouteType.ONREPLY else "_rt.method(ctx)"
        if left == "uri":
            return "ctx.ruri" if rtype != RouteType.ONREPLY else "_rt.uri_or_status(ctx)"
        if left == "status":
            return "_rt.uri_or_status(ctx)"
        if left == "from_uri":
            return "_rt.from_uri(ctx)"
        if left == "to_uri":
            return "_rt.to_uri(ctx)"
        raise AssertionError(left)

    def regex(self, right: ast.Value) -> str:
        if isinstance(right, (ast.Str, ast.Name)):
            pattern = right.value
        else:
            raise self.err("=~ needs a regular expression string", right)
        try:
            rx = runtime.compile_regex(pattern)
        except re.error as ex:
            raise self.err(f"bad regular expression {pattern!r}: {ex}", right) from None
        return self.const(rx.search, "re")

    def cmp_str(self, left: str, op: str, right: ast.Value, opnode: ast.Node) -> str:
        if op not in ("==", "!=", "=~", "!~"):
            raise self.err(f"operator {op} cannot be used with {left} (==, !=, =~ expected)", opnode)
        value = self._value_expr(left)
        if isinstance(right, ast.Keyword) and right.value == "myself":
            if left == "method" or op not in ("==", "!="):
                raise self.err(f"{left} {op} myself is not a valid comparison", right)
            want = "True" if op == "==" else "False"
            if left == "uri" and self.cur.rtype != RouteType.ONREPLY:
                return f"_rt.ruri_myself(ctx, {want})"
            return f"_rt.value_myself(ctx, {value}, {want})"
        if op in ("=~", "!~"):
            rx = self.regex(right)
            if value == "ctx.msg.method" or value == "ctx.ruri":
                return f"({rx}({value}) {'is not' if op == '=~' else 'is'} None)"
            return f"_rt.{'re_match' if op == '=~' else 're_nomatch'}({value}, {rx})"
        if isinstance(right, (ast.Str, ast.Name, ast.Ip)):
            const = right.value.lower()
        elif isinstance(right, ast.Num):
            const = (right.text or str(right.value)).lower()
        else:
            raise self.err(f"{left} {op}: a string is expected", right)
        if value in ("ctx.msg.method", "ctx.ruri"):  # never None here: inline
            return f"({value}.lower() {op} {const!r})"
        return f"_rt.{'str_eq' if op == '==' else 'str_ne'}({value}, {const!r})"

    def cmp_ip(self, left: str, op: str, right: ast.Value, opnode: ast.Node) -> str:
        value = f"ctx.rcv.{left}"
        if op not in ("==", "!=", "=~", "!~"):
            raise self.err(f"operator {op} cannot be used with {left} (==, !=, =~ expected)", opnode)
        if isinstance(right, ast.Keyword) and right.value == "myself":
            if op not in ("==", "!="):
                raise self.err(f"{left} {op} myself is not a valid comparison", right)
            return f"_rt.ip_myself(ctx, {value}, {op == '=='})"
        if op in ("=~", "!~"):
            rx = self.regex(right)
            return f"({rx}({value}) {'is not' if op == '=~' else 'is'} None)"
        neg = "not " if op == "!=" else ""
        if isinstance(right, (ast.Ip, ast.Net)) or (isinstance(right, ast.Str) and _is_ip(right.value)):
            addr = right.value if isinstance(right, (ast.Ip, ast.Str)) else right.addr
            mask = right.mask if isinstance(right, ast.Net) else None
            try:
                if mask is None:
                    ip = runtime.norm_ip(str(ipaddress.ip_address(addr)))
                    return (
                        f"({neg}(_rt.norm_ip({value}) == {ip!r}))" if ":" in ip else f"({value} {op} {ip!r})"
                    )
                if isinstance(mask, int):
                    net = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
                else:
                    net = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
            except ValueError as ex:
                raise self.err(f"bad address or netmask: {ex}", right) from None
            c = self.const(runtime.IpNet(net), "net")
            return f"({value} {'not in' if neg else 'in'} {c})"
        if isinstance(right, (ast.Str, ast.Name)):
            c = self.const(runtime.HostMatch(right.value), "host")
            return f"({value} {'not in' if neg else 'in'} {c})"
        raise self.err(f"{left} {op}: IP address, network or host name expected", right)

    def cmp_int(self, left: str, op: str, right: ast.Value, opnode: ast.Node) -> str:
        if op in ("=~", "!~"):
            raise self.err(f"operator {op} cannot be used with {left}", opnode)
        if left == "proto":
            if isinstance(right, ast.Star):
                return "True" if op == "==" else "False"
            protos = {"udp": "_P_UDP", "tcp": "_P_TCP", "tls": "_P_TLS", "ws": "_P_WS", "wss": "_P_WSS"}
            if not (isinstance(right, (ast.Name, ast.Str)) and right.value.lower() in protos):
                raise self.err("proto: udp, tcp, tls, ws or wss expected", right)
            return f"(ctx.rcv.proto {op} {protos[right.value.lower()]})"
        if isinstance(right, ast.Num):
            n = right.value
        elif left == "af" and isinstance(right, ast.Name) and right.value.lower() in ("inet", "inet6"):
            n = 2 if right.value.lower() == "inet" else 10
        elif left == "msg:len" and isinstance(right, ast.Name) and right.value == "max_len":
            n = MAX_LEN
        else:
            raise self.err(f"{left} {op}: a number is expected", right)
        value = "len(ctx.msg.raw)" if left == "msg:len" else f"ctx.rcv.{left}"
        return f"({value} {op} {n})"


_URI_OPERANDS = {"uri", "status", "from_uri", "to_uri"}
# comparisons whose helper returns None for "cannot evaluate" (SER's -1)
_ERR_HELPERS = ("_rt.str_", "_rt.re_", "_rt.ruri_myself", "_rt.value_myself")
# module functions whose argument names a route block ("0" disarms)
_ROUTE_REFS = {
    "t_on_failure": "failure",
    "t_on_negative": "failure",
    "t_on_reply": "onreply",
    "t_on_branch": "branch",
}


def _flip(code: str) -> str | None:
    """The negation of one error-capable comparison helper call (an error
    stays an error), or None."""
    for a, b in (("_rt.str_eq(", "_rt.str_ne("), ("_rt.re_match(", "_rt.re_nomatch(")):
        if code.startswith(a):
            return b + code[len(a) :]
        if code.startswith(b):
            return a + code[len(b) :]
    if code.startswith(("_rt.ruri_myself(", "_rt.value_myself(")):
        if code.endswith(", True)"):
            return code[: -len(", True)")] + ", False)"
        if code.endswith(", False)"):
            return code[: -len(", False)")] + ", True)"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


class _Reporter:
    """Logs a runtime error of a route with the script location, maps it to
    "message dropped" (0)."""

    def __init__(self, pyfile: str, linemap: dict[int, tuple[int, int]], cfgfile: str) -> None:
        self.pyfile = pyfile
        self.linemap = linemap
        self.cfgfile = cfgfile

    def locate(self, tb: TracebackType | None) -> str:
        where = ""
        for frame, lineno in traceback.walk_tb(tb):
            if frame.f_code.co_filename == self.pyfile:
                pos = self.linemap.get(lineno)
                if pos is not None:
                    where = f"{self.cfgfile}:{pos[0]}:{pos[1]}"
        return where or self.cfgfile

    def __call__(self, e: BaseException, label: str, ctx: RequestContext, reraise: bool = False) -> int:
        where = self.locate(e.__traceback__)
        if reraise and isinstance(e, SipParseError):
            # a malformed header found by an action: the core answers 400
            log.info("%s: %s: malformed message: %s", where, label, e)
            raise e
        log.error("%s: error in %s: %s: %s (message dropped)", where, label, type(e).__name__, e)
        log.debug("traceback", exc_info=e)
        return 0
