"""SIP Outbound (RFC 5626) flow tokens, sans-I/O.

An edge proxy that forwards a REGISTER puts a Path (or, for dialogs, a
Record-Route) URI of its own whose user part identifies the *flow* the
request came in on: the transport, our socket and the UA's address (for a
phone behind a NAT: the NAT's public side; over TCP: the connection).  A
request that later comes back with that URI as its Route is sent down the
same flow, whatever the Request-URI (the phone's private Contact) says.

The token is the flow, HMAC-signed with a per-process key (RFC 5626 §5.2's
example construction) and base64url-encoded (unreserved characters: valid
in a URI's user part).  A token that does not verify is refused: a client
must not steer our requests to an address it chose (§5.3: 403).  Tokens do
not survive a restart, and neither do the flows they name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

_MAC_LEN = 10


@dataclass(frozen=True, slots=True)
class Flow:
    """Transport, our socket, the remote address (RFC 5626 §3.3)."""

    proto: str  # "udp", "tcp", "tls"
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int

    def uri(self) -> str:
        """The remote end as a URI to send to (``ctx.dst_uri``)."""
        host = f"[{self.remote_ip}]" if ":" in self.remote_ip else self.remote_ip
        t = "" if self.proto == "udp" else f";transport={self.proto}"
        return f"sip:{host}:{self.remote_port}{t}"


class FlowTokens:
    """Makes and checks flow tokens with one secret key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_LEN]

    def encode(self, flow: Flow) -> str:
        payload = (
            f"{flow.proto} {flow.local_ip} {flow.local_port} {flow.remote_ip} {flow.remote_port}".encode()
        )
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode()

    def decode(self, token: str) -> Flow | None:
        """The flow a token names; None when it is not one of ours (forged,
        cut, or from before a restart)."""
        if not token or len(token) > 200:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        mac, payload = raw[:_MAC_LEN], raw[_MAC_LEN:]
        if len(mac) != _MAC_LEN or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            proto, lip, lport, rip, rport = payload.decode().split(" ")
            return Flow(proto, lip, int(lport), rip, int(rport))
        except ValueError:
            return None


def outbound_contact(params: dict[str, str | None]) -> bool:
    """Does a Contact's parameter set ask for Outbound (``reg-id`` and
    ``+sip.instance``, RFC 5626 §4.2)?"""
    return params.get("reg-id") is not None and params.get("+sip.instance") is not None


__all__ = ["Flow", "FlowTokens", "outbound_contact"]
