"""The module registry: how a SER module declares itself.

Every module (sl, tm, usrloc, registrar, exec, ...) is one Python module or
package under ``sipexpress.modules`` that exposes one subclass of
:class:`Module`.  The class declares, in one place:

* script functions (name, arities, fix-up run once at load time, route types
  where the function may be used, sync or async handler);
* typed parameters with defaults (``modparam("tm", "fr_timer", 10)``);
* management commands (the FIFO, JSON-RPC, ``serctl`` and the web UI all
  read the same table);
* statistics (Kamailio's ``mod_stats``): counters, gauges and histograms
  that ``stats.get_statistics``, ``/metrics`` and the module's own SER
  commands (``sl_stats``, ``t_stats``, ``ul_stats``) read;
* start/stop hooks.

The script compiler, ``modparam()``, the FIFO and JSON-RPC read nothing
else, so a function or command exists for all of them or for none.

Calling convention of a script function handler (SER's action contract):
``handler(ctx, *fixed_args) -> int`` where ``fixed_args`` is what the
fix-up returned (by default the literal string arguments).  A positive
result is true, a negative one false, and 0 stops the current route block.
Handlers flagged ``is_async`` are ``async def`` and are awaited.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI


class RouteType(enum.IntFlag):
    """Route blocks a function may be called from (SER's REQUEST_ROUTE ...)."""

    REQUEST = 1
    FAILURE = 2
    ONREPLY = 4
    BRANCH = 8
    ANY = REQUEST | FAILURE | ONREPLY | BRANCH


class ConfigError(Exception):
    """A problem in the configuration found at load time (fix-ups, modparam).

    The script compiler adds the ``file:line:col`` of the offending call.
    """


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'save'?)`` when one known name is close to a
    misspelled one, else an empty string; appended to "unknown ..." errors."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


Handler = Callable[..., "int | Awaitable[int]"]
Fixup = Callable[[Sequence[Any], "FixupEnv"], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class FixupEnv:
    """What a fix-up may consult: the core (listen sockets, options), the
    module instance it belongs to, and the route name table of the script
    (for ``t_on_failure("1")`` style references)."""

    core: CoreAPI
    module: Module
    route_names: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScriptFunction:
    name: str
    handler: Handler
    arities: tuple[int, ...] = (0,)
    fixup: Fixup | None = None
    route_types: RouteType = RouteType.REQUEST
    is_async: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Param:
    """A module parameter.  ``type`` is ``int`` or ``str`` (SER has only
    those two; ``yes``/``no`` arrive as numbers)."""

    name: str
    type: type
    default: Any
    doc: str = ""


@dataclass(slots=True)
class MgmtReply:
    """A management command's result.

    ``data`` is the structured result (JSON-RPC returns it as is);
    ``text`` is the FIFO rendering of the same data (the lines after the
    status line, exactly as SER printed them).  ``eol=False`` renders the
    status line without its newline, for the few SER replies that had none
    (``200 killing now...``, ``200 ul_flush completed``); it only matters
    when ``text`` is empty."""

    code: int = 200
    reason: str = "ok"
    data: Any = None
    text: str = ""
    eol: bool = True

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


class MgmtError(Exception):
    """Raised by a management command handler; becomes ``code reason``.
    ``eol=False``: SER printed this error without a newline."""

    def __init__(self, code: int, reason: str, eol: bool = True) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.eol = eol


MgmtHandler = Callable[[list[str]], Awaitable[MgmtReply]]


@dataclass(frozen=True, slots=True)
class MgmtCommand:
    """A management command.  ``params`` are the parameter lines of a FIFO
    request (or the positional JSON-RPC params, as strings).

    ``fifo_reader`` names how the FIFO collects parameter lines: ``"lines"``
    (up to the empty line, the default) or ``"dotted"`` for commands like
    ``t_uac_dlg`` whose sections end with a ``.`` line and may contain empty
    lines."""

    name: str
    handler: MgmtHandler
    doc: str = ""
    params_doc: str = ""
    fifo_reader: str = "lines"


class StatKind(enum.Enum):
    COUNTER = "counter"  # only grows (``stats.reset_statistics`` starts it again)
    GAUGE = "gauge"  # a level: current transactions, registered contacts
    HISTOGRAM = "histogram"  # a :class:`sipexpress.core.stats.Histogram`


@dataclass(frozen=True, slots=True)
class Statistic:
    """A statistic a module declares (Kamailio's ``stat_export_t``).

    The module counts into plain attributes on its hot path; ``read`` is
    called only when somebody asks (a management command, a scrape) and
    returns the value: a number, or, when ``label`` names a label (``method``,
    ``class``, ``domain``), a mapping of label value to number.  Histograms
    return a ``Histogram`` (or a mapping of them).  ``name`` is lower-case
    with underscores; the Prometheus name is ``sipexpress_<module>_<name>``
    (``_total`` added to counters)."""

    name: str
    read: Callable[[], Any]
    doc: str = ""
    kind: StatKind = StatKind.COUNTER
    label: str = ""


class Module:
    """Base class of every SER module.

    Subclasses set ``name`` (the export name that ``loadmodule`` and
    ``modparam`` use), optionally ``aliases`` (older export names such as
    ``sl_module``), and ``params``.  One instance exists per server; the
    instance gets parameter values before :meth:`start` runs.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    depends: ClassVar[tuple[str, ...]] = ()
    #: (name, doc) of counters kept in integer attributes of the same name
    counters: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, core: CoreAPI) -> None:
        self.core = core
        self.values: dict[str, Any] = {p.name: p.default for p in self.params}

    # -- declarations -----------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        return ()

    def commands(self) -> Sequence[MgmtCommand]:
        return ()

    def statistics(self) -> Sequence[Statistic]:
        """The declared ``counters``; modules with gauges, labels or
        histograms add theirs."""
        return tuple(Statistic(name, partial(getattr, self, name), doc) for name, doc in self.counters)

    def statistic(self, name: str) -> Any:
        """This module's statistic as every reader sees it (after
        ``stats.reset_statistics``): what its SER commands print."""
        return self.core.statistics.module_value(self, name)

    # -- parameters -------------------------------------------------------
    def set_param(self, name: str, value: Any) -> None:
        """``modparam``: check the type against the declaration."""
        for p in self.params:
            if p.name == name:
                break
        else:
            hint = did_you_mean(name, (p.name for p in self.params))
            raise ConfigError(f"module '{self.name}' has no parameter '{name}'{hint}")
        if p.type is int:
            if isinstance(value, str):
                try:
                    value = int(value, 0)
                except ValueError:
                    raise ConfigError(
                        f"parameter '{name}' of module '{self.name}' expects a number, got {value!r}"
                    ) from None
        elif p.type is str and not isinstance(value, str):
            raise ConfigError(f"parameter '{name}' of module '{self.name}' expects a string, got {value!r}")
        self.values[name] = value

    # -- life cycle -------------------------------------------------------
    async def start(self) -> None:
        """Called once after all modparams, before the first message."""

    async def stop(self) -> None:
        """Called on shutdown."""
