"""/work/shared/bench/ser.cfg (issue 16's everyday route) written as a
Python routing script: the yardstick for the compiled cfg path
(``receive_bench.py twin-* --route py``).  Same modules, parameters and
decisions, in the same order; module functions are called as the cfg
would call them, only the control flow is Python's.

    ser -f bench/ser_cfg_twin.py -D -E -l 127.0.0.1 -p PORT
"""

from __future__ import annotations

from sipexpress.core.context import RequestContext
from sipexpress.script import pyroute as ser  # the cfg's functions by their cfg names

OPTIONS = {"check_via": 0, "dns": 0, "rev_dns": 0, "sip_warning": 0, "children": 1}
MODULES = ["sl", "tm", "rr", "maxfwd", "usrloc", "registrar", "uri"]
MODPARAMS = [
    ("usrloc", "db_mode", 0),
    ("rr", "enable_full_lr", 0),
    ("tm", "fr_timer", 30),
    ("tm", "fr_inv_timer", 120),
]


def _ruri_is_myself(ctx: RequestContext) -> bool:
    uri = ctx.parsed_ruri
    return ctx.core.is_myself(uri.host, uri.port if uri.port is not None else 5060)


async def request_route(ctx: RequestContext) -> int:
    if ser.mf_process_maxfwd_header(ctx, "10") < 0:
        ser.sl_send_reply(ctx, "483", "Too Many Hops")
        return 0
    method = ctx.msg.method
    if method == "OPTIONS" and _ruri_is_myself(ctx):
        ser.sl_send_reply(ctx, "200", "Keepalive")
        return 0
    if ser.has_totag(ctx) > 0:
        if ser.loose_route(ctx) > 0:
            return await relay(ctx)
        if method == "ACK":
            if ser.t_check_trans(ctx) > 0:
                await relay(ctx)
            return 0
        ser.sl_send_reply(ctx, "404", "Not here")
        return 0
    if method == "INVITE":
        ser.record_route(ctx)
    if method == "REGISTER":
        if await ser.save(ctx, "location") < 0:
            ser.sl_reply_error(ctx)
        return 0
    if not _ruri_is_myself(ctx):
        ser.sl_send_reply(ctx, "403", "Not relaying")
        return 0
    if await ser.lookup(ctx, "location") < 0:
        ser.sl_send_reply(ctx, "404", "Not Found")
        return 0
    return await relay(ctx)


async def relay(ctx: RequestContext) -> int:
    """route[1]"""
    if await ser.t_relay(ctx) < 0:
        ser.sl_reply_error(ctx)
    return 0
