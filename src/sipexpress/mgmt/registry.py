"""The one table of management commands every interface reads.

The FIFO server, JSON-RPC (HTTP and Unix socket), ``serctl`` and the web UI
all call :meth:`CommandRegistry.call`; a command exists for all of them or
for none.  Handlers never learn which transport called them.

Names are looked up case-insensitively (SER used ``strcasecmp``).
:meth:`CommandRegistry.names` lists them in SER's ``which`` order: the
reverse of registration order (SER prepended to a linked list), so with the
core built-ins registered first the module commands come first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply

log = logging.getLogger("sipexpress.mgmt")


class DuplicateCommand(ValueError):
    """Two commands with the same name (SER: "fifo command already registered")."""


def render_fifo(reply: MgmtReply) -> str:
    """A reply as SER wrote it into the reply FIFO: ``NNN reason\\n`` + text."""
    if reply.text or reply.eol:
        return f"{reply.code} {reply.reason}\n{reply.text}"
    return f"{reply.code} {reply.reason}"


def not_available(name: str) -> MgmtReply:
    return MgmtReply(500, f"command '{name}' not available")


class CommandRegistry:
    __slots__ = ("_aliases", "_by_name", "_order", "calls", "prepare")

    def __init__(self, commands: Iterable[MgmtCommand] = ()) -> None:
        self._by_name: dict[str, MgmtCommand] = {}
        self._order: list[str] = []
        self._aliases: dict[str, str] = {}
        self.calls = 0  # commands run (the mgmt:commands statistic)
        #: awaited before a command runs: with several worker processes,
        #: gathers the other workers' state (sipexpress.core.workers)
        self.prepare: Callable[[], Awaitable[None]] | None = None
        for cmd in commands:
            self.register(cmd)

    def register(self, cmd: MgmtCommand, listed: bool = True) -> None:
        """``listed=False`` keeps a command out of SER's ``which`` (the
        introspection methods of other systems)."""
        key = cmd.name.lower()
        if not key or any(c in cmd.name for c in ":\n\r"):
            raise ValueError(f"invalid management command name {cmd.name!r}")
        if key in self._by_name:
            raise DuplicateCommand(f"management command '{cmd.name}' already registered")
        self._by_name[key] = cmd
        if listed:
            self._order.append(cmd.name)
        else:
            self._aliases[cmd.name] = cmd.name

    def alias(self, alias: str, target: str) -> bool:
        """Make ``alias`` call the command ``target`` (another system's name
        for it, e.g. Kamailio's ``ul.dump`` for ``ul_dump``).  Aliases are
        not listed by :meth:`names` (SER's ``which`` stays SER's); False
        when ``target`` is not registered or a command already has the
        name (a module's own command wins over an alias)."""
        cmd = self.get(target)
        key = alias.lower()
        if cmd is None or key in self._by_name:
            return False
        self._by_name[key] = cmd
        self._aliases[alias] = cmd.name
        return True

    def aliases(self) -> dict[str, str]:
        """Names :meth:`names` leaves out -> the command each calls."""
        return dict(self._aliases)

    def get(self, name: str) -> MgmtCommand | None:
        return self._by_name.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __len__(self) -> int:
        return len(self._order)

    def names(self) -> list[str]:
        """Command names in SER's ``which`` order (last registered first)."""
        return self._order[::-1]

    async def call(self, name: str, params: list[str]) -> MgmtReply:
        """Run a command.  Unknown names give SER's ``500 command 'x' not
        available``; :class:`MgmtError` becomes its code and reason; any other
        exception is logged and becomes ``500 internal error``."""
        cmd = self._by_name.get(name.lower())
        if cmd is None:
            return not_available(name)
        self.calls += 1
        if self.prepare is not None:
            await self.prepare()
        return await run(cmd, params)


async def run(cmd: MgmtCommand, params: list[str]) -> MgmtReply:
    try:
        return await cmd.handler(params)
    except MgmtError as e:
        return MgmtReply(e.code, e.reason, eol=e.eol)
    except Exception:
        log.exception("management command '%s' failed", cmd.name)
        return MgmtReply(500, f"command '{cmd.name}' failed: internal error")
