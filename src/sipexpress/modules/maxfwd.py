"""maxfwd — Max-Forwards processing (SER's ``modules_s/maxfwd``).

``mf_process_maxfwd_header("n")``: without a Max-Forwards header one with
value n is added (→ 1); a value of 0 is false (→ −1, the script replies
483); a value above ``max_limit`` leaves as ``max_limit`` (SER 0.9 set it
to ``max_limit + 1`` before its decrement), any other value is decremented
in place (→ 1).  An unparsable value is left alone (→ 1), as SER did.  The
core and tm do not decrement again once this ran.

``max_limit`` defaults to 70, as Kamailio's: SER's 16 (from 2003) cuts a
phone's 70 down and ends long chains of proxies early; ``max_limit=16``
gives SER 0.9's numbers exactly.  As SER's fix-up, an initial value above
``max_limit`` is refused at load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.sip.errors import SipParseError

# Core and tm skip their own Max-Forwards decrement when this key is set.
MAXFWD_DONE = "maxfwd"


MAX_LIMIT_DEFAULT = 70


def _fixup_max(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    try:
        n = int(str(args[0]).strip(), 0)
    except ValueError:
        raise ConfigError(f"mf_process_maxfwd_header: {args[0]!r} is not a number") from None
    if not 0 < n <= 255:
        raise ConfigError(f"mf_process_maxfwd_header: {n} is out of range (1-255)")
    limit = int(env.module.values["max_limit"])
    if n > limit:
        raise ConfigError(f"mf_process_maxfwd_header: default value {n} greater than max_limit ({limit})")
    return (n,)


class MaxfwdModule(Module):
    name = "maxfwd"
    aliases = ("maxfwd_module",)
    params = (Param("max_limit", int, MAX_LIMIT_DEFAULT, "incoming values above this leave as it (1-255)"),)

    async def start(self) -> None:
        limit = int(self.values["max_limit"])
        if not 0 < limit <= 255:
            raise ConfigError(f"maxfwd: max_limit {limit} is out of range (1-255)")

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction(
                "mf_process_maxfwd_header",
                self.process,
                arities=(1,),
                fixup=_fixup_max,
                route_types=RouteType.REQUEST,
                doc="Add Max-Forwards if missing, else decrement it; false when it is 0.",
            ),
        )

    def process(self, ctx: RequestContext, initial: int) -> int:
        msg = ctx.msg
        if ctx.data.get(MAXFWD_DONE):
            return 1
        try:
            value = msg.max_forwards
        except SipParseError:
            return 1
        ctx.data[MAXFWD_DONE] = True
        if value is None:
            msg.insert_header("Max-Forwards", str(initial), first=False)
            return 1
        if value <= 0:
            return -1
        limit: int = self.values["max_limit"]  # an int: set_param converts
        msg.replace_header("Max-Forwards", str(limit if value > limit else value - 1))
        return 1
