"""print — SER's example module (``modules_s/print``, export name ``print_stdout``).

``print("text")`` writes the text and a newline to ser's standard output
(not the log) and is true; SER 0.9's ``examples/msilo.cfg`` loads it.
``str_param`` and ``int_param`` are accepted and unused, as in SER.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sipexpress.core.context import RequestContext
from sipexpress.core.registry import Module, Param, RouteType, ScriptFunction


class PrintModule(Module):
    name = "print"
    aliases = ("print_stdout",)
    params = (
        Param("str_param", str, "", "unused (SER's example parameter)"),
        Param("int_param", int, 0, "unused (SER's example parameter)"),
    )

    def functions(self) -> Sequence[ScriptFunction]:
        return (
            ScriptFunction(
                "print",
                self.print_text,
                arities=(1,),
                route_types=RouteType.REQUEST,
                doc="Write the text and a newline to standard output.",
            ),
        )

    def print_text(self, ctx: RequestContext, text: str) -> int:
        out = sys.stdout
        out.write(f"{text}\n")
        out.flush()
        return 1
