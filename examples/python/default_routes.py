"""SER 0.9's default script (etc/ser.cfg) written as a Python routing script.

Run it with ``ser -f examples/python/default_routes.py``.  Every function of
a loaded module and every core action is imported by its ser.cfg name and
called with the request context first; the return values follow SER's
contract (positive = true, negative = false, 0 = stop).  Functions that may
wait (``t_relay``, ``save``, ``lookup``) are awaited.
"""

from __future__ import annotations

from sipexpress.core.context import RequestContext
from sipexpress.script.pyroute import (  # type: ignore[attr-defined]
    append_hf,
    lookup,
    loose_route,
    mf_process_maxfwd_header,
    record_route,
    save,
    sl_reply_error,
    sl_send_reply,
    t_relay,
)

OPTIONS = {"port": 5060, "fifo": "/tmp/ser_fifo", "check_via": 0, "dns": 0, "rev_dns": 0}
MODULES = ["sl", "tm", "rr", "maxfwd", "usrloc", "registrar", "textops"]
MODPARAMS = [("usrloc", "db_mode", 0), ("rr", "enable_full_lr", 1)]


async def request_route(ctx: RequestContext) -> int:
    # initial sanity checks: Max-Forwards exhausted, excessively long requests
    if mf_process_maxfwd_header(ctx, "10") < 0:
        sl_send_reply(ctx, "483", "Too Many Hops")
        return 0
    if len(ctx.msg.raw) >= 2048:
        sl_send_reply(ctx, "513", "Message too big")
        return 0
    # record-route everything but REGISTER, so the dialog comes back here
    if ctx.msg.method != "REGISTER":
        record_route(ctx)
    # requests within a dialog follow their route set
    if loose_route(ctx) > 0:
        append_hf(ctx, "P-hint: rr-enforced\r\n")
        return await relay(ctx)
    if not ctx.core.is_myself(ctx.parsed_ruri.host, ctx.parsed_ruri.port):
        append_hf(ctx, "P-hint: outbound\r\n")
        return await relay(ctx)
    if ctx.msg.method == "REGISTER":
        await save(ctx, "location")
        return 0
    await lookup(ctx, "aliases")
    if not ctx.core.is_myself(ctx.parsed_ruri.host, ctx.parsed_ruri.port):
        append_hf(ctx, "P-hint: outbound alias\r\n")
        return await relay(ctx)
    if await lookup(ctx, "location") < 0:
        sl_send_reply(ctx, "404", "Not Found")
        return 0
    append_hf(ctx, "P-hint: usrloc applied\r\n")
    return await relay(ctx)


async def relay(ctx: RequestContext) -> int:
    """route[1]: stateful forwarding."""
    if await t_relay(ctx) < 0:
        sl_reply_error(ctx)
    return 0
