"""Python routing scripts (KEMI-style): ``ser -f routes.py``.

A routing script is a Python module that defines::

    from sipexpress.script.pyroute import sl_send_reply, forward

    OPTIONS = {"listen": "udp:127.0.0.1:5060", "debug": 3}   # global options
    MODULES = ["sl", "tm"]                                    # loadmodule
    MODPARAMS = [("tm", "fr_timer", 10)]                      # modparam

    async def request_route(ctx):                             # route{}
        if ctx.msg.method == "OPTIONS":
            return sl_send_reply(ctx, 200, "OK")
        return await forward(ctx, "127.0.0.1", 5080)

and optionally ``route_<n>``/``route_<name>``, ``failure_route_<n>``,
``onreply_route_<n>``, ``branch_route_<n>`` (``async def`` or plain
``def``; a plain function returning an int never suspends and is the
cheapest), and ``init(core)``, called once after the modules are loaded
and their parameters set (e.g. to add ``core.reply_hooks``).  Module
names are resolved at load time.

Every script function of a loaded module and every core action
(``forward``, ``rewritehost``, ``setflag``, ``log`` …) can be imported from
this module by its cfg name and is called as ``name(ctx, *args)``.
Arguments go through the function's fix-up once per distinct argument
tuple (numbers are passed as strings, as the cfg language would).
Functions declared ``is_async`` (``t_relay``, ``forward`` …) return a
coroutine: ``await`` them.  ``route(ctx, n)`` runs ``route_<n>`` with SER's
semantics (a 0 return becomes 1).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipexpress.core.context import Proto, RequestContext, RouteTable
from sipexpress.core.registry import ConfigError, FixupEnv, Module, RouteType, ScriptFunction

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.server import Core

__all__ = ["forward", "forward_tcp", "forward_udp", "load_script", "log", "route"]

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("failure_route_", "failure"),
    ("onreply_route_", "onreply"),
    ("branch_route_", "branch"),
    ("route_", "request"),
)


class _Bound:
    """A script function bound to one core: the handler and the fixed
    arguments per distinct argument tuple."""

    __slots__ = ("fixed", "func", "module")

    def __init__(self, func: ScriptFunction, module: Module) -> None:
        self.func = func
        self.module = module
        self.fixed: dict[tuple[Any, ...], tuple[Any, ...]] = {}


# (id(core), name, nargs) -> _Bound
_BOUND: dict[tuple[int, str, int], _Bound] = {}
_ROUTE_NAMES: dict[int, dict[str, set[str]]] = {}


def _find(core: CoreAPI, name: str, nargs: int) -> _Bound:
    key = (id(core), name, nargs)
    b = _BOUND.get(key)
    if b is not None:
        return b
    seen: set[int] = set()
    for mod in core.modules.values():
        if id(mod) in seen:  # a module is listed under its aliases too
            continue
        seen.add(id(mod))
        for f in mod.functions():
            if f.name == name and nargs in f.arities:
                b = _Bound(f, mod)
                _BOUND[key] = b
                return b
    raise ConfigError(f"unknown function '{name}' with {nargs} argument(s) (is its module loaded?)")


def _fix(core: CoreAPI, b: _Bound, args: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        fixed = b.fixed.get(args)
    except TypeError:  # unhashable arguments: fix them up every time
        fixed = None
    if fixed is None:
        sargs = [str(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args]
        if b.func.fixup is not None:
            env = FixupEnv(core, b.module, _ROUTE_NAMES.get(id(core), {}))
            fixed = tuple(b.func.fixup(sargs, env))
        else:
            fixed = tuple(sargs)
        if len(b.fixed) >= 1024:  # arguments computed per message: do not grow
            b.fixed.clear()
        with contextlib.suppress(TypeError):
            b.fixed[args] = fixed
    return fixed


def call(ctx: RequestContext, name: str, *args: Any) -> Any:
    """Call the script function ``name`` of a loaded module."""
    core = ctx.core
    b = _BOUND.get((id(core), name, len(args))) or _find(core, name, len(args))
    return b.func.handler(ctx, *_fix(core, b, args))


def _module_function(name: str) -> Callable[..., Any]:
    # the last core used, its fixed arguments by argument tuple and the
    # handler: a script runs against one core, so the per-call lookup by
    # (id(core), name, nargs) is skipped
    last_core: CoreAPI | None = None
    last_fixed: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    last_handler: Callable[..., Any] | None = None

    def fn(ctx: RequestContext, *args: Any) -> Any:
        nonlocal last_core, last_fixed, last_handler
        core = ctx.core
        if core is last_core:
            try:
                fixed = last_fixed[args]  # keyed by the whole tuple: nargs included
            except (KeyError, TypeError):
                pass
            else:
                return last_handler(ctx, *fixed)  # type: ignore[misc]
        b = _BOUND.get((id(core), name, len(args))) or _find(core, name, len(args))
        try:
            fixed = b.fixed[args]
        except (KeyError, TypeError):
            fixed = _fix(core, b, args)
        last_core, last_fixed, last_handler = core, b.fixed, b.func.handler
        return b.func.handler(ctx, *fixed)

    fn.__name__ = name
    fn.__qualname__ = name
    return fn


# -- core actions --------------------------------------------------------------
async def forward(ctx: RequestContext, host: str | None = None, port: int | None = None) -> int:
    """``forward(host, port)``; without host: ``forward(uri:host, uri:port)``."""
    return await ctx.core.forward(ctx, host, int(port) if port is not None else None, None)


async def forward_udp(ctx: RequestContext, host: str | None = None, port: int | None = None) -> int:
    return await ctx.core.forward(ctx, host, int(port) if port is not None else None, Proto.UDP)


async def forward_tcp(ctx: RequestContext, host: str | None = None, port: int | None = None) -> int:
    return await ctx.core.forward(ctx, host, int(port) if port is not None else None, Proto.TCP)


def log(ctx: RequestContext, level: int | str, text: str | None = None) -> int:
    """``log([level,] text)``; level is SER's (default 4 = DBG)."""
    from sipexpress.core.logging import std_level

    if text is None:
        level, text = 4, str(level)
    import logging

    logging.getLogger("sipexpress.script").log(std_level(int(level)), "%s", str(text).rstrip("\n"))
    return 1


async def route(ctx: RequestContext, name: str | int) -> int:
    """``route(n)``: run ``route_<n>``; 0 (drop/break) becomes 1."""
    res = await ctx.core.run_route(RouteType.REQUEST, str(name), ctx)
    return 1 if res == 0 else res


def __getattr__(name: str) -> Any:
    """Module functions and the remaining core actions by cfg name."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        from sipexpress.script.core_actions import CORE_ACTIONS
    except ImportError:
        CORE_ACTIONS = {}
    action = CORE_ACTIONS.get(name)
    if action is not None:
        handler: Callable[..., Any] = action.handler
        return handler
    fn = _module_function(name)
    globals()[name] = fn
    return fn


# -- loading -------------------------------------------------------------------
def load_script(path: str | Path, core: Core) -> RouteTable:
    """Import a routing script and configure ``core`` from it: options,
    modules, module parameters, routes.  Raises :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    modname = f"sipexpress_routes_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(modname, p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{p}: cannot load as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except ConfigError:
        raise
    except SyntaxError as e:
        raise ConfigError(f"{p}:{e.lineno}:{e.offset}: {e.msg}") from None
    except Exception as e:
        raise ConfigError(f"{p}: {type(e).__name__}: {e}") from e
    options = getattr(mod, "OPTIONS", {}) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{p}: OPTIONS must be a dict")
    try:
        core.update_options(options)
    except ValueError as e:
        raise ConfigError(f"{p}: OPTIONS: {e}") from None
    modules: Sequence[str] = getattr(mod, "MODULES", ()) or ()
    for name in modules:
        try:
            core.load_module(name)
        except LookupError:
            raise ConfigError(f"{p}: module '{name}' not found") from None
    for item in getattr(mod, "MODPARAMS", ()) or ():
        if len(item) != 3:
            raise ConfigError(f"{p}: MODPARAMS entries are (module, param, value): {item!r}")
        mname, param, value = item
        core.set_modparam(mname, param, value)
    init = getattr(mod, "init", None)
    if callable(init):
        # ``def init(core)``: after modules and parameters, before routes
        # (register hooks, precompute state ...)
        try:
            init(core)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{p}: init(core) failed: {type(e).__name__}: {e}") from e
    table = RouteTable({}, {}, {}, {})
    kinds = {
        "request": table.request,
        "failure": table.failure,
        "onreply": table.onreply,
        "branch": table.branch,
    }
    main = getattr(mod, "request_route", None)
    if main is not None and not callable(main):
        raise ConfigError(f"{p}: request_route is not callable")
    if main is not None:
        table.request["0"] = main
    for attr, value in vars(mod).items():
        if not callable(value) or attr in ("request_route",):
            continue
        if inspect.isclass(value) or getattr(value, "__module__", None) != modname:
            continue
        for prefix, kind in _PREFIXES:
            if attr.startswith(prefix) and len(attr) > len(prefix):
                kinds[kind][attr[len(prefix) :]] = value
                break
    if "0" not in table.request:
        raise ConfigError(f"{p}: no request_route defined")
    _ROUTE_NAMES[id(core)] = {k: set(v) for k, v in kinds.items()}
    core.set_routes(table)
    return table
