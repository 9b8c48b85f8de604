"""sl — stateless replies (SER's ``modules/sl``: sl.c, sl_funcs.c, sl_stats.c).

Script functions ``sl_send_reply("code", "reason")`` and
``sl_reply_error()``; a pre-script hook that silently drops ACKs for our
own negative replies (``sl_filter_ACK``: To-tag carries the core's sl tag,
within 2 s of the last negative reply); the ``sl_stats`` management
command.  The reply itself is built and sent by the core
(``CoreAPI.send_reply``), which also keeps the per-code counters, so replies
sent by other modules (registrar, auth) are counted as SER counted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core import errors
from sipexpress.core.context import RequestContext
from sipexpress.core.registry import (
    ConfigError,
    FixupEnv,
    MgmtCommand,
    MgmtReply,
    Module,
    RouteType,
    ScriptFunction,
    Statistic,
    StatKind,
)

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

CLEANUP_EOL = "      \n"
ACK_FILTER_WINDOW = 2.0  # seconds sl filters ACKs to its negative replies

# (label, codes counted individually) per class, as sl_stats.c prints them
_ROWS: tuple[tuple[int, tuple[int, ...]], ...] = (
    (2, (200, 202)),
    (3, (300, 301, 302)),
    (4, (400, 401, 403, 404, 407, 408, 483)),
    (5, (500,)),
    (6, ()),
)


def _fixup_reply(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    code_arg, reason = args
    try:
        code = int(str(code_arg).strip())
    except ValueError:
        raise ConfigError(f"sl_send_reply: bad reply code {code_arg!r} (must be a number)") from None
    if not 100 <= code <= 699:
        raise ConfigError(f"sl_send_reply: reply code {code} out of range (100-699)")
    return (code, str(reason))


class SlModule(Module):
    name = "sl"
    aliases = ("sl_module",)

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self._hook_installed = False

    # -- script functions -------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        # the core's send_reply takes (ctx, code, reason) as sl_send_reply
        # does: scripts call it directly, one Python call less per reply
        return (
            ScriptFunction(
                "sl_send_reply",
                self.core.send_reply,
                arities=(2,),
                fixup=_fixup_reply,
                route_types=RouteType.REQUEST,
                doc="Send a stateless reply: sl_send_reply(code, reason).",
            ),
            ScriptFunction(
                "sl_reply_error",
                self.sl_reply_error,
                arities=(0,),
                route_types=RouteType.REQUEST,
                doc="Reply statelessly with the error of the last failed action.",
            ),
        )

    def sl_reply_error(self, ctx: RequestContext) -> int:
        err = ctx.data.get(errors.SER_ERROR_KEY, errors.E_UNSPEC)
        code, reason = errors.err2reason_phrase(int(err), "SL")
        return self.core.send_reply(ctx, code, reason)

    # -- ACK filter -------------------------------------------------------
    def filter_ack(self, ctx: RequestContext) -> bool:
        """True (consumed) for an ACK to one of our negative stateless
        replies (SER's ``sl_filter_ACK``)."""
        msg = ctx.msg
        if msg.method != "ACK":
            return False
        core = self.core
        if core.now() - core.last_negative_reply > ACK_FILTER_WINDOW:
            return False
        tag = msg.to.tag
        return tag is not None and tag.startswith(core.to_tag_prefix + "-")

    async def start(self) -> None:
        if not self._hook_installed:
            self.core.request_hooks.append(self.filter_ack)
            self._hook_installed = True

    async def stop(self) -> None:
        if self._hook_installed:
            self.core.request_hooks.remove(self.filter_ack)
            self._hook_installed = False

    # -- management -------------------------------------------------------
    def commands(self) -> Sequence[MgmtCommand]:
        return (MgmtCommand("sl_stats", self._sl_stats, doc="Counters of stateless replies."),)

    def statistics(self) -> Sequence[Statistic]:
        stats = self.core.stats  # the core sends the replies (send_reply) and counts them
        return (
            Statistic(
                "replies",
                lambda: {str(code): n for code, n in sorted(stats.sl_replies.items())},
                "stateless replies sent",
                StatKind.COUNTER,
                "code",
            ),
            Statistic("failures", lambda: stats.sl_failures, "stateless replies that could not be sent"),
        )

    def rows(self) -> dict[str, int]:
        """``sl_stats``'s rows (sl_stats.c), from the registry's values."""
        replies = {int(code): n for code, n in self.statistic("replies").items()}
        data: dict[str, int] = {}
        listed = {c for _, codes in _ROWS for c in codes}
        for cls, codes in _ROWS:
            for c in codes:
                data[str(c)] = replies.get(c, 0)
            data[f"{cls}xx"] = sum(n for c, n in replies.items() if c // 100 == cls and c not in listed)
        data["xxx"] = sum(n for c, n in replies.items() if not 200 <= c <= 699)
        data["failures"] = self.statistic("failures")
        return data

    async def _sl_stats(self, params: list[str]) -> MgmtReply:
        d = self.rows()
        lines = []
        for cls, codes in _ROWS:
            parts = [f"{c}: {d[str(c)]}" for c in codes] + [f"{cls}xx: {d[f'{cls}xx']}"]
            lines.append(" ".join(parts) + CLEANUP_EOL)
        lines.append(f"xxx: {d['xxx']}{CLEANUP_EOL}")
        lines.append(f"failures: {d['failures']}{CLEANUP_EOL}")
        return MgmtReply(200, "ok", data=d, text="".join(lines))
