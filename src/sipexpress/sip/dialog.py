"""UAC dialog state, RFC 3261 §12 (sans-I/O).

A dialog is created from a 2xx (or 1xx with a To tag) to a request we sent
(§12.1.2): the route set is the reply's Record-Route list in reverse order,
the remote target its Contact, the remote tag its To tag.  Requests inside
the dialog (§12.2.1.1) go to the remote target; with a loose first route
they go to that route and carry the whole route set; with a strict first
route that route becomes the request URI and the remote target is appended
as the last Route.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.headers import NameAddr
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri


@dataclass(frozen=True, slots=True)
class DialogTarget:
    """Where the next in-dialog request goes (SER's ``print_uris``):
    ``ruri`` its request URI, ``next_hop`` the URI it is sent to, ``routes``
    the Route header values (name-addr text) it carries."""

    ruri: str
    next_hop: str
    routes: tuple[str, ...]


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_party: str  # From header value without its tag (as sent)
    remote_party: str  # To header value without its tag
    remote_target: str | None
    route_set: list[str] = field(default_factory=list)  # name-addr values, first hop first
    local_cseq: int = 1

    @classmethod
    def from_uac_reply(cls, request: SipMessage, reply: SipMessage) -> Dialog:
        """The dialog a reply to our request establishes (§12.1.2).  Raises
        :class:`SipParseError` when the reply lacks what a dialog needs."""
        to = reply.to
        fr = request.from_
        contacts = reply.contacts
        target = contacts[0].uri if len(contacts) else None
        routes = [str(r) for r in reversed(reply.record_routes)]
        local_tag = fr.tag
        if local_tag is None:
            raise SipParseError("our request has no From tag")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=to.tag,
            local_party=_without_tag(fr),
            remote_party=_without_tag(to),
            remote_target=target,
            route_set=routes,
            local_cseq=request.cseq.num,
        )

    def target(self) -> DialogTarget | None:
        """§12.2.1.1; None when the dialog has no remote target."""
        if self.remote_target is None:
            return None
        if not self.route_set:
            return DialogTarget(self.remote_target, self.remote_target, ())
        first = NameAddr.parse(self.route_set[0])
        if SipUri.parse(first.uri).lr:
            return DialogTarget(self.remote_target, first.uri, tuple(self.route_set))
        rest = (*self.route_set[1:], f"<{self.remote_target}>")
        return DialogTarget(first.uri, first.uri, rest)

    def headers(self, method: str, cseq: int | None = None) -> list[tuple[str, str]]:
        """From, To, Call-ID, CSeq and Route of the next request; ``cseq``
        defaults to one more than the last (the ACK of an INVITE reuses
        its CSeq number: pass it)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        to = self.remote_party + (f";tag={self.remote_tag}" if self.remote_tag else "")
        hdrs = [
            ("From", f"{self.local_party};tag={self.local_tag}"),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        tgt = self.target()
        if tgt is not None:
            hdrs.extend(("Route", r) for r in tgt.routes)
        return hdrs


def _without_tag(na: NameAddr) -> str:
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params.items() if k != "tag")
    if na.display is not None:
        return f'"{na.display}" <{na.uri}>{params}'
    return f"<{na.uri}>{params}"
