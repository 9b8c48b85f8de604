"""maxfwd — Max-Forwards processing (SER's ``modules_s/maxfwd``).

``mf_process_maxfwd_header("n")``: without a Max-Forwards header one with
value n is added (→ 1); a value of 0 is false (→ −1, the script replies
483); otherwise the value is lowered to ``max_limit`` when larger and
decremented in place (→ 1).  An unparsable value is left alone (→ 1), as
SER did.  The core and tm do not decrement again once this ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.sip.errors import SipParseError

# Core and tm skip their own Max-Forwards decrement when this key is set.
MAXFWD_DONE = "maxfwd"


def _fixup_max(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    try:
        n = int(str(args[0]).strip(), 0)
    except ValueError:
        raise ConfigError(f"mf_process_maxfwd_header: {args[0]!r} is not a number") from None
    if not 0 < n <= 255:
        raise ConfigError(f"mf_process_maxfwd_header: {n} is out of range (1-255)")
    return (n,)


class MaxfwdModule(Module):
    name = "maxfwd"
    aliases = ("maxfwd_module",)
    params = (Param("max_limit", int, 16, "incoming values above this are lowered to it"),)

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
        limit = self.values["max_limit"]  # an int: set_param converts
        if limit and value > limit:
            value = limit
        msg.replace_header("Max-Forwards", str(value - 1))
        return 1
