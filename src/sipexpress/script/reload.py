"""Reloading ser.cfg's routes in a running server (management ``reload``).

The file is parsed and compiled again against the modules the server
already runs (their state — contacts, transactions, counters — stays), and
the new route table replaces the old one in one assignment on the event
loop, so every message is routed entirely by one version.  A message that
started in the old routes finishes in them, and a transaction keeps the
table it started with: a ``failure_route`` armed before the reload runs as
it was written then.  A config that does not compile changes nothing; the
reply carries the located errors.  Loading a new module or changing a
modparam needs a restart; global options are read at start only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sipexpress.core.registry import ConfigError, MgmtCommand, MgmtReply

if TYPE_CHECKING:
    from sipexpress.core.server import Core

log = logging.getLogger("sipexpress.script")


def reload_command(core: Core, path: str) -> MgmtCommand:
    """``reload``: recompile ``path`` (the file ser started with, and no
    other: an error reply quotes the file's lines) and swap the routes."""

    async def reload(params: list[str]) -> MgmtReply:
        from sipexpress.script.compiler import load_config
        from sipexpress.script.errors import CfgError

        t0 = time.perf_counter()
        try:
            loaded = load_config(path, core, running=True)
        except ConfigError as e:
            where = (
                {"file": e.filename, "line": e.line, "col": e.col, "message": e.message}
                if isinstance(e, CfgError)
                else {"file": path, "line": 0, "col": 0, "message": str(e)}
            )
            log.error("reload of %s failed, the running routes stay: %s", path, e)
            return MgmtReply(400, "reload failed: the running routes stay", {"errors": [where]}, f"{e}\n")
        core.set_routes(loaded.routes)
        took = time.perf_counter() - t0
        r = loaded.routes
        counts = {
            "route": len(r.request),
            "failure_route": len(r.failure),
            "onreply_route": len(r.onreply),
            "branch_route": len(r.branch),
        }
        log.log(25, "routes reloaded from %s in %.3f s", path, took)
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        data = {"config": path, "seconds": round(took, 4), "blocks": counts}
        return MgmtReply(200, f"routes reloaded from {path}", data, f"{summary}\n")

    return MgmtCommand(
        "reload", reload, "recompile ser.cfg and swap the routes (running transactions keep theirs)"
    )
