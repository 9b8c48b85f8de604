"""rr — record routing and loose routing (SER's ``modules_s/rr``; RFC 3261 §16.4, §16.6, §16.12).

``record_route()`` puts ``Record-Route: <sip:ip:port;ftag=…;lr>`` on top of
the request so that in-dialog requests come back through us.
``loose_route()`` processes the Route set of an in-dialog request:

* the request URI is one of ours (the previous hop was a strict router and
  put our Record-Route value there): the last Route becomes the request URI
  and is removed (§16.4);
* the top Route is ours: it is removed;
* the next Route is a loose router (``;lr``): it becomes the next hop
  (``ctx.dst_uri``), the request URI is left alone;
* it is a strict router: it becomes the request URI, it is removed, and the
  old request URI is appended as the last Route (§16.6 step 6).

It returns 1 when the request had Route headers, −1 otherwise — the default
script's ``if (loose_route()) { route(1); break; }``.

With ``enable_double_rr`` (the default, as in SER 0.9 and Kamailio) a
request that leaves on another transport or socket than it came in on gets
two Record-Routes, one for each side, both with ``r2=on``: each peer then
reaches us over its own transport.  Where a branch leaves is known only
when it is sent, so ``record_route()`` puts the inbound side's value and
leaves a :class:`DoubleRecordRoute` in ``ctx.data["rr_double"]``, which
stateless forwarding and tm ask per branch (SER's conditional lumps,
``COND_IF_DIFF_REALMS``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipexpress.core.context import Proto, RequestContext
from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import NameAddr
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

log = logging.getLogger("sipexpress.rr")
#: a Route URI's transport parameter -> Proto
_PROTO_BY_TRANSPORT = {p.name.lower(): p for p in Proto}


# ctx.data key: the pending second Record-Route (read by core and tm)
RR_DOUBLE = "rr_double"


@dataclass(frozen=True, slots=True)
class DoubleRecordRoute:
    """The inbound side of a Record-Route and what the outbound one needs."""

    proto: Proto
    host: str
    port: int
    user: str  # "user@" or ""
    params: str  # ";ftag=…;lr"

    def value(self, proto: Proto, host: str, port: int, r2: bool) -> str:
        transport = "" if proto is Proto.UDP else f";transport={proto.name.lower()}"
        return f"<sip:{self.user}{host}:{port}{transport}{';r2=on' if r2 else ''}{self.params}>"

    def for_branch(self, msg: SipMessage, proto: Proto, host: str, port: int) -> SipMessage | None:
        """``msg`` with both Record-Routes when a branch leaves from
        proto/host/port, another side than it came in on; None when one is
        enough.  Our single Record-Route is the request's first one."""
        if proto is self.proto and host == self.host and port == self.port:
            return None
        out = msg.copy()
        out.remove_first("record-route")
        out.insert_header("Record-Route", self.value(self.proto, self.host, self.port, True), first=True)
        out.insert_header("Record-Route", self.value(proto, host, port, True), first=True)
        return out


def _fix_preset(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    text = str(args[0]).strip()
    if not text:
        raise ConfigError("record_route_preset: empty address")
    if text.startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    return (text,)


class RrModule(Module):
    name = "rr"
    params = (
        Param("enable_full_lr", int, 0, "write ;lr=on instead of ;lr"),
        Param("append_fromtag", int, 1, "add ;ftag=<From tag> to Record-Route"),
        Param("enable_double_rr", int, 1, "two Record-Routes when the request changes transport"),
        Param("add_username", int, 0, "put the request URI's user in Record-Route"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        # the path module, when loaded: Outbound flow tokens in Record-Route
        self._flows: Any = None

    async def start(self) -> None:
        path = self.core.module("path")
        self._flows = path if hasattr(path, "rr_token") else None

    def functions(self) -> Sequence[ScriptFunction]:
        f = ScriptFunction
        rq = RouteType.REQUEST
        return (
            f("record_route", self.record_route, (0,), None, rq, doc="Insert our Record-Route."),
            f(
                "record_route_preset",
                self.record_route_preset,
                (1,),
                _fix_preset,
                rq,
                doc="Record-Route with a given address.",
            ),
            f(
                "loose_route",
                self.loose_route,
                (0,),
                None,
                rq,
                doc="Route an in-dialog request by its Route set.",
            ),
            # 2003 names and the 0.8 default script's strict-routing calls
            f("strict_route", self.loose_route, (0,), None, rq, doc="Old name of loose_route()."),
            f("rewriteFromRoute", self.loose_route, (0,), None, rq, doc="0.8 name; same as loose_route()."),
            f("addRecordRoute", self.record_route, (0,), None, rq, doc="0.8 name; same as record_route()."),
        )

    # -- Record-Route -----------------------------------------------------
    def _rr_params(self, ctx: RequestContext) -> str:
        params = []
        if self.values["append_fromtag"]:
            try:
                tag = ctx.msg.from_.tag
            except SipParseError:
                tag = None
            if tag:
                params.append(f";ftag={tag}")
        params.append(";lr=on" if self.values["enable_full_lr"] else ";lr")
        return "".join(params)

    def _user(self, ctx: RequestContext) -> str:
        if not self.values["add_username"]:
            return ""
        try:
            user = ctx.parsed_ruri.user
        except SipParseError:
            return ""
        return f"{user}@" if user else ""

    def record_route(self, ctx: RequestContext) -> int:
        rcv = ctx.rcv
        core = ctx.core
        lst = core.pick_listener(ctx, rcv.proto, rcv.src_ip)
        host = lst.via_host if lst is not None else rcv.dst_ip
        port = lst.port if lst is not None else rcv.dst_port
        adv = ctx.data.get("advertised_address") or core.options.get("advertised_address")
        if adv:
            host = str(adv)
        user = self._user(ctx)
        if self._flows is not None:
            # RFC 5626 §5.3: a dialog with an Outbound UA keeps using its flow
            token = self._flows.rr_token(ctx)
            if token:
                user = f"{token}@"
        rr = DoubleRecordRoute(rcv.proto, host, port, user, self._rr_params(ctx))
        ctx.msg.insert_header("Record-Route", rr.value(rcv.proto, host, port, False), first=True)
        if self.values["enable_double_rr"]:
            ctx.data[RR_DOUBLE] = rr
        return 1

    def record_route_preset(self, ctx: RequestContext, address: str) -> int:
        ctx.msg.insert_header("Record-Route", f"<sip:{self._user(ctx)}{address}{self._rr_params(ctx)}>")
        return 1

    # -- Route processing -----------------------------------------------------
    def _is_mine(self, ctx: RequestContext, uri: SipUri) -> bool:
        proto = _PROTO_BY_TRANSPORT.get(uri.transport or "")
        return bool(ctx.core.is_myself(uri.host, uri.port, proto))

    def loose_route(self, ctx: RequestContext) -> int:
        msg = ctx.msg
        try:
            routes: list[NameAddr] = list(msg.routes)
        except SipParseError as e:
            log.error("loose_route: bad Route header: %s", e)
            return -1
        if not routes:
            return -1
        changed = False
        mine: NameAddr | None = None
        try:
            ruri = ctx.parsed_ruri
            # §16.4: our own Record-Route value in the request URI means the
            # previous hop was a strict router; the real target is the last Route.
            if (
                self._is_mine(ctx, ruri)
                and (ruri.lr or not ruri.user)
                and not self._is_mine_route(ctx, routes[0])
            ):
                last = routes.pop()
                ctx.set_ruri(last.uri)
                changed = True
            elif self._is_mine_route(ctx, routes[0]):
                mine = routes.pop(0)
                changed = True
                # enable_double_rr put two of ours on top
                if routes and self._is_mine_route(ctx, routes[0]):
                    mine = routes.pop(0)
            if routes:
                top = SipUri.parse(routes[0].uri)
                if top.lr:
                    ctx.dst_uri = routes[0].uri
                else:
                    # §16.6 step 6: strict next hop: its URI becomes the
                    # request URI and the old request URI the last Route.
                    old = ctx.ruri
                    ctx.set_ruri(routes.pop(0).uri)
                    routes.append(NameAddr(old))
                    changed = True
        except SipParseError as e:
            log.error("loose_route: bad URI in the route set: %s", e)
            return -1
        if changed:
            msg.remove_header("Route")
            for r in reversed(routes):
                msg.insert_header("Route", str(r), first=True)
        if mine is not None and not routes:
            text = mine.uri
            # a plain Record-Route of ours (the everyday case) names no flow
            if "@" in text or "received=" in text:
                return self._last_hop(ctx, mine)
        return 1

    @staticmethod
    def _last_hop(ctx: RequestContext, mine: NameAddr) -> int:
        """Our Route was the last: one the path module wrote (an Outbound
        flow token, a ``received`` address) names where the request goes
        (RFC 5626 §5.3, RFC 3327).  0 (stop) when it answered the request."""
        try:
            uri = SipUri.parse(mine.uri)
        except SipParseError:
            return 1
        if not uri.user and "received" not in uri.params:
            return 1
        path = ctx.core.module("path")
        consumed = getattr(path, "route_consumed", None)
        if consumed is None:
            return 1
        return 0 if consumed(ctx, uri) < 0 else 1

    def _is_mine_route(self, ctx: RequestContext, route: NameAddr) -> bool:
        try:
            return self._is_mine(ctx, SipUri.parse(route.uri))
        except SipParseError:
            return False
