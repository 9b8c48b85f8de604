"""What a proxy does to a request before it leaves (RFC 3261 §16.6), sans I/O.

Stateless forwarding (:mod:`sipexpress.core.forward`) and the stateful
proxy (tm) both use these: Max-Forwards, the Via a request leaves with and
its branch, where a reply goes by its Via, the default port of a next hop,
and the hop-by-hop CANCEL and ACK built from a forwarded request.  Nothing
here sends, resolves or reads a clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from typing import TYPE_CHECKING, Any

from sipexpress.sip.errors import SipParseError
from sipexpress.sip.locate import DEFAULT_PORT

if TYPE_CHECKING:
    from sipexpress.sip.headers import Via
    from sipexpress.sip.message import SipMessage

SIP_PORT = 5060
SIPS_PORT = 5061


def default_port(transport: str) -> int:
    """The port of a next hop that names none: 5061 for TLS (and so for
    ``sips:``), else 5060 (RFC 3261 §19.1.2)."""
    return DEFAULT_PORT.get(transport.lower(), SIP_PORT)


def normalize_host(host: str) -> str:
    """Lower-case, brackets stripped, IPv6 in compressed form."""
    h = host.lower()
    if h.startswith("["):
        h = h[1:-1] if h.endswith("]") else h[1:]
    if ":" in h:
        with contextlib.suppress(ValueError):
            h = ipaddress.ip_address(h).compressed
    return h


def via_host(ip: str) -> str:
    """An address as a Via sent-by host: IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip


def via_prefix(
    transport: str,
    listen_host: str,
    listen_port: int,
    advertised_address: Any = None,
    advertised_port: Any = None,
) -> str:
    """``SIP/2.0/UDP host:port;branch=`` for a request leaving from a socket
    (``listen_host`` as a Via host), ``advertised_address``/``_port``
    (SER's options of that name) in place of the socket's.  Over TLS the
    Via carries ``alias`` (RFC 5923 §5): the next hop may send its requests
    to us on the connection this one opens."""
    host = via_host(str(advertised_address)) if advertised_address else listen_host
    alias = ";alias" if transport == "TLS" else ""
    return f"SIP/2.0/{transport} {host}:{advertised_port or listen_port}{alias};branch="


def stateless_branch(msg: SipMessage, out_uri: str) -> str:
    """RFC 3261 §16.11: a branch computed from what identifies the incoming
    request (its RFC 3261 branch, else the §8.1.1 tuple) and the outgoing
    URI, so a retransmission is forwarded with the same branch and
    CANCEL/ACK match the INVITE."""
    via = msg.via1
    branch = via.branch
    if branch and branch.startswith("z9hG4bK"):
        key = f"{branch}\0{via.sent_by}\0{out_uri}"
    else:
        key = (
            f"{msg.header('to') or ''}\0{msg.header('from') or ''}\0{msg.call_id}\0"
            f"{msg.cseq.num}\0{via.sent_by}\0{branch}\0{msg.ruri}\0{out_uri}"
        )
    return "z9hG4bK" + hashlib.md5(key.encode("utf-8", "surrogateescape")).hexdigest()[:16] + "0"


def decrement_max_forwards(msg: SipMessage) -> bool:
    """RFC 3261 §16.6 step 3: one hop less; False (and nothing changed) when
    the request has none left, which the caller answers with 483."""
    mf = msg.max_forwards
    if mf is None:
        return True
    if mf <= 0:
        return False
    msg.replace_header("Max-Forwards", str(mf - 1))
    return True


def via_with(via: Via, received: str | None, rport: int | None) -> str:
    """The Via header value with ``received``/``rport`` set (RFC 3261
    §18.2.1, RFC 3581)."""
    params = dict(via.params)
    if received is not None:
        params["received"] = received
    if rport is not None:
        params["rport"] = str(rport)
    text = f"{via.protocol}/{via.transport} {via.sent_by}"
    return text + "".join(f";{k}" if v is None or v == "" else f";{k}={v}" for k, v in params.items())


def via_destination(via: Via) -> tuple[str, int]:
    """Where a reply goes according to a Via (RFC 3261 §18.2.2, RFC 3581):
    ``received`` (else the sent-by host) and ``rport`` (else the sent-by
    port, else the transport's default port)."""
    ip = via.received or via.host
    rport = via.rport
    if rport:
        try:
            return normalize_host(ip), int(rport)
        except ValueError:
            pass
    return normalize_host(ip), via.port or default_port(via.transport)


def _hop_request(
    request: SipMessage, method: str, uri: str, via: str, to_line: bytes | None = None, extra: bytes = b""
) -> bytes:
    """A hop-by-hop request for one forwarded branch (RFC 3261 §9.1,
    §17.1.1.3): its Request-URI and Via, the request's Route, From, To (or
    ``to_line``), Call-ID, CSeq number and Max-Forwards (as Kamailio: a
    fresh 70 would let it travel further than the request it belongs to),
    then ``extra`` header lines."""
    out = [f"{method} {uri} SIP/2.0\r\nVia: {via}\r\n".encode("utf-8", "surrogateescape")]
    rhl = request.raw_header_lines
    out += rhl("route")
    out += rhl("from")
    out += [to_line] if to_line is not None else rhl("to")
    out += rhl("call-id")
    out.append(b"CSeq: %d %s\r\n" % (request.cseq.num, method.encode()))
    try:
        mf = request.max_forwards
    except SipParseError:
        mf = None
    out.append(b"Max-Forwards: %d\r\n" % (70 if mf is None else mf))
    out.append(extra)
    out.append(b"Content-Length: 0\r\n\r\n")
    return b"".join(out)


def build_cancel(request: SipMessage, uri: str, via: str, reason: bytes = b"") -> bytes:
    """CANCEL of a forwarded INVITE (RFC 3261 §9.1); ``reason`` a Reason
    header line (RFC 3326), e.g. for the branches a 2xx ended."""
    return _hop_request(request, "CANCEL", uri, via, extra=reason)


def build_ack(request: SipMessage, uri: str, via: str, reply: SipMessage | None) -> bytes:
    """ACK of a negative final reply to a forwarded INVITE (RFC 3261
    §17.1.1.3): its To (with the downstream tag) from the reply."""
    to_line: bytes | None = None
    if reply is not None:
        lines = reply.raw_header_lines("to")
        if lines:
            to_line = lines[0]
    return _hop_request(request, "ACK", uri, via, to_line)
