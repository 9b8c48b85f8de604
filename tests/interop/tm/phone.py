"""A tiny raw-socket SIP phone for tm interop tests (precise control over
retransmissions, forks and timing that SIPp scenarios cannot give)."""

from __future__ import annotations

import socket
import time
import uuid

from sipexpress.sip.message import SipMessage
from tests.support import free_port


class Phone:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, self.port))
        self.received: list[SipMessage] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes | str, addr: tuple[str, int]) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendto(data, addr)

    def recv(self, timeout: float = 2.0) -> SipMessage | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        m = SipMessage.parse(data)
        self.received.append(m)
        return m

    def expect(self, what: str | int, timeout: float = 3.0) -> SipMessage:
        """Wait for a request with method ``what`` or a reply with status
        ``what``, skipping anything else."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.port}: no {what} within {timeout}s")
            m = self.recv(left)
            if m is None:
                continue
            if isinstance(what, int) and not m.is_request and m.status == what:
                return m
            if isinstance(what, str) and m.is_request and m.method == what:
                return m

    def drain(self, wait: float = 0.3) -> list[SipMessage]:
        out: list[SipMessage] = []
        while True:
            m = self.recv(wait)
            if m is None:
                return out
            out.append(m)

    def invite(self, ruri: str, branch: str | None = None, call_id: str | None = None, cseq: int = 1) -> str:
        self.branch = branch or "z9hG4bK" + uuid.uuid4().hex[:12]
        self.call_id = call_id or uuid.uuid4().hex
        self.from_tag = uuid.uuid4().hex[:8]
        self.ruri = ruri
        self.cseq = cseq
        return (
            f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={self.branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@{self.host}>;tag={self.from_tag}\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} INVITE\r\n"
            f"Contact: <sip:caller@{self.host}:{self.port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def hop_request(self, method: str, to: str | None = None) -> str:
        """ACK (for a non-2xx) or CANCEL of the last INVITE: same branch."""
        return (
            f"{method} {self.ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={self.branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@{self.host}>;tag={self.from_tag}\r\n"
            f"To: {to or '<' + self.ruri + '>'}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        )


def reply_to(
    req: SipMessage, status: int, reason: str, to_tag: str | None = "uas1", extra: str = ""
) -> bytes:
    """A UAS reply: the request's Via/From/To/Call-ID/CSeq copied."""
    lines = [f"SIP/2.0 {status} {reason}\r\n".encode()]
    lines += req.raw_header_lines("via")
    lines += req.raw_header_lines("from")
    to = req.header("to") or ""
    if to_tag and status > 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}\r\n".encode())
    lines += req.raw_header_lines("call-id")
    lines += req.raw_header_lines("cseq")
    if extra:
        lines.append(extra.encode())
    lines.append(b"Content-Length: 0\r\n\r\n")
    return b"".join(lines)


def reply_addr(req: SipMessage) -> tuple[str, int]:
    v = req.via1
    return (v.received or v.host, int(v.rport) if v.rport else (v.port or 5060))
