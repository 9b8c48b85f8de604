"""path — an edge proxy's Path headers (RFC 3327) and Outbound flows (RFC 5626).

Kamailio's ``path`` module, for a proxy that forwards REGISTERs to a
registrar elsewhere:

* ``add_path([user])``: ``Path: <sip:[user@]us;lr>`` on top of the REGISTER;
* ``add_path_received([user])``: the same with ``;received=<source>``, the
  address the REGISTER came from (escaped), which the registrar
  (``path_use_received``) or this proxy (``use_received``) sends to later.

When the REGISTER's Contact asks for Outbound (``reg-id`` and
``+sip.instance``), the Path URI's user part is a flow token (the flow the
REGISTER came on: transport, our socket, the phone's public address; see
:mod:`sipexpress.sip.outbound`) and it carries ``;ob`` (RFC 5626 §5.1).

``record_route()`` (rr) writes a flow token too when the request goes down
a flow or comes from an Outbound UA (``;ob`` in its Contact URI), so the
dialog's later requests use the flow as well (RFC 5626 §5.3).

When a request comes back with one of our Route URIs, ``loose_route``
(the rr module) asks :meth:`PathModule.route_consumed`: a flow token sends
the request down its flow (``dst_uri`` and the socket; a forged token is
refused with 403, a TCP flow that closed with 430 Flow Failed, RFC 5626
§5.3); with ``use_received`` a ``received`` parameter becomes the next hop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from sipexpress.core.context import Proto, RequestContext
from sipexpress.core.options import SocketSpec
from sipexpress.core.registry import Module, Param, RouteType, ScriptFunction
from sipexpress.sip import nat
from sipexpress.sip.errors import SipError
from sipexpress.sip.headers import unquote
from sipexpress.sip.outbound import Flow, FlowTokens, outbound_contact
from sipexpress.sip.uri import SipUri, unescape

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

log = logging.getLogger("sipexpress.path")

# characters escaped in the received parameter's value (a URI inside a URI)
_ESCAPE = {ord(";"): "%3B", ord("="): "%3D", ord("%"): "%25", ord(","): "%2C", ord(">"): "%3E"}


#: ctx.data key: the Outbound flow route_consumed() sent the request down
FLOW_KEY = "outbound_flow"


def _contact_has_ob(ctx: RequestContext) -> bool:
    try:
        contacts = ctx.msg.contacts
        return any(";ob" in c.uri and "ob" in SipUri.parse(c.uri).params for c in contacts)
    except SipError:
        return False


class PathModule(Module):
    name = "path"
    params: ClassVar[tuple[Param, ...]] = (
        Param("use_received", int, 0, "loose_route sends to the received= of our own Route URI"),
    )
    counters = (
        ("flows_routed", "requests sent down an Outbound flow named by a flow token"),
        ("flow_tokens_refused", "Route URIs with a flow token that did not verify (403)"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.tokens = FlowTokens()
        self.flows_routed = 0
        self.flow_tokens_refused = 0

    def functions(self) -> Sequence[ScriptFunction]:
        rq = RouteType.REQUEST
        return (
            ScriptFunction(
                "add_path", self.add_path, (0, 1), None, rq, doc="Path: <sip:[user@]us;lr> on top"
            ),
            ScriptFunction(
                "add_path_received",
                self.add_path_received,
                (0, 1),
                None,
                rq,
                doc="add_path with ;received=<the REGISTER's source>",
            ),
        )

    # -- the REGISTER on its way to the registrar -----------------------------------
    def _flow(self, ctx: RequestContext) -> Flow:
        rcv = ctx.rcv
        return Flow(rcv.proto.token.lower(), rcv.dst_ip, rcv.dst_port, rcv.src_ip, rcv.src_port)

    def _path(self, ctx: RequestContext, user: str | None, received: bool) -> int:
        msg = ctx.msg
        if not msg.is_request:
            return -1
        ob = False
        with contextlib.suppress(SipError):
            ob = any(outbound_contact(c.params) for c in msg.contacts)
        if ob:
            user = self.tokens.encode(self._flow(ctx))
        rcv = ctx.rcv
        lst = ctx.core.pick_listener(ctx, rcv.proto, rcv.src_ip)
        host = lst.via_host if lst is not None else rcv.dst_ip
        port = lst.port if lst is not None else rcv.dst_port
        params = ";lr"
        if rcv.proto is not Proto.UDP:
            params += f";transport={rcv.proto.token.lower()}"
        if received:
            src = nat.received_uri(rcv.src_ip, rcv.src_port, rcv.proto.token)
            params += f";received={src.translate(_ESCAPE)}"
        if ob:
            params += ";ob"
        userpart = f"{user}@" if user else ""
        msg.insert_header("Path", f"<sip:{userpart}{host}:{port}{params}>", first=True)
        return 1

    def add_path(self, ctx: RequestContext, user: str | None = None) -> int:
        return self._path(ctx, user, False)

    def add_path_received(self, ctx: RequestContext, user: str | None = None) -> int:
        return self._path(ctx, user, True)

    # -- a request coming back through our Path / Record-Route ----------------------
    def route_consumed(self, ctx: RequestContext, uri: SipUri) -> int:
        """``loose_route`` removed our own Route ``uri``: 1 when it set the
        next hop (a flow, a received address), 0 when the URI says nothing,
        or a negative status answered here (-403, -430)."""
        if uri.user:
            flow = self.tokens.decode(uri.user)
            if flow is None:
                if "ob" in uri.params:
                    self.flow_tokens_refused += 1
                    ctx.core.send_reply(ctx, 403, "Forbidden")
                    return -403
            else:
                return self._to_flow(ctx, flow)
        if self.values["use_received"]:
            rcv = uri.params.get("received")
            if rcv:
                try:
                    ctx.dst_uri = unquote(unescape(rcv))
                except Exception:
                    return 0
                return 1
        return 0

    def _to_flow(self, ctx: RequestContext, flow: Flow) -> int:
        proto = Proto[flow.proto.upper()]
        if proto is not Proto.UDP:
            tcp = getattr(ctx.core, "tcp", None)
            if tcp is None or tcp.lookup(flow.remote_ip, flow.remote_port) is None:
                ctx.core.send_reply(ctx, 430, "Flow Failed")
                return -430
        ctx.dst_uri = flow.uri()
        ctx.send_socket = SocketSpec(proto, flow.local_ip, flow.local_port)
        ctx.data[FLOW_KEY] = flow
        self.flows_routed += 1
        return 1

    def rr_token(self, ctx: RequestContext) -> str | None:
        """The flow token ``record_route()`` writes as its user part: the
        flow this request is sent down (it came through our Path), or the
        one it came in on from an Outbound UA (Contact URI with ``;ob``),
        so that the dialog's later requests take the flow (RFC 5626 §5.3)."""
        flow = ctx.data.get(FLOW_KEY)
        if flow is None:
            if not _contact_has_ob(ctx):
                return None
            flow = self._flow(ctx)
        return self.tokens.encode(flow)


__all__ = ["PathModule"]
