"""``t_uac_dlg``: transactions started by applications (SER's ``uac_fifo.c``).

Request lines (../shared/spec/t_uac_dlg.md §1): method, request URI, next
hop or ``.``, header lines up to ``.``, body lines up to ``.``.  We complete
what the caller left out (From tag, Call-ID, CSeq 10, Via, Content-Length,
User-Agent), substitute ``!!`` in the copied header lines with our
address, and run a client transaction through tm.  When it ends the reply
FIFO receives SER 0.9's completion reply: the status line, three dialog
lines (request URI and next hop for the next in-dialog request, the Route
header) for a 2xx, then the reply's header fields and body.  A locally
generated final reply (408 on timeout) is the status line alone.

As SER's local transactions did, the 2xx of an INVITE is ACKed here, along
the dialog's route set, so applications such as ``ctd.sh`` never send ACK.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import secrets
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sipexpress import SERVER_SIGNATURE
from sipexpress.core.context import Proto
from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply
from sipexpress.sip.dialog import Dialog, DialogTarget
from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI

log = logging.getLogger("sipexpress.uac")

DEFAULT_CSEQ = 10
MAX_METHOD = 64
MAX_URI = 1024
MAX_HEADERS = 16384  # SER had 1024; raised, as the spec allows
MAX_BODY = 65536


def _err(code: int, text: str) -> MgmtError:
    """SER's ``<code> fifo_uac_error: <text>`` — printed with a newline only
    where SER's text had one."""
    eol = text.endswith("\n")
    return MgmtError(code, "fifo_uac_error: " + text.rstrip("\n"), eol=eol)


@dataclass(slots=True)
class UacRequest:
    """A validated ``t_uac_dlg`` request."""

    method: str
    ruri: str
    next_hop: str | None
    headers: list[tuple[str, str]]  # copied verbatim (not From/To/Call-ID/CSeq)
    from_: str
    to: str
    call_id: str | None
    cseq: int | None
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


_SPECIAL = {
    "from": "from",
    "f": "from",
    "to": "to",
    "t": "to",
    "call-id": "call-id",
    "i": "call-id",
    "cseq": "cseq",
}


def parse_lines(params: list[str]) -> UacRequest:
    """Validate the FIFO lines ``[method, ruri, next_hop, header..., ".",
    body..., "."]`` in SER's order; raise :class:`MgmtError` with SER's
    texts."""
    it = iter(params)
    method = next(it, "").strip()
    if not method:
        raise _err(400, "method expected")
    if len(method) >= MAX_METHOD:
        raise _err(400, "method expected")
    ruri = next(it, None)
    if ruri is None or not ruri.strip() or ruri.strip() == ".":
        raise _err(400, "ruri expected")
    ruri = ruri.strip()
    try:
        if len(ruri) >= MAX_URI:
            raise SipParseError("too long")
        SipUri.parse(ruri)
    except SipParseError:
        raise _err(400, "ruri invalid\n") from None
    hop = next(it, None)
    if hop is None or not hop.strip():
        raise _err(400, "next hop address expected\n")
    hop = hop.strip()
    next_hop: str | None = None
    if hop != ".":
        try:
            SipUri.parse(hop)
        except SipParseError:
            raise _err(400, "next hop uri invalid\n") from None
        next_hop = hop
    header_lines: list[str] = []
    for line in it:
        if line == "." or not line:
            break
        header_lines.append(line)
    if not header_lines:
        raise _err(400, "HFs expected")
    body_lines = list(it)
    if not body_lines or body_lines[-1] != ".":
        raise _err(400, "body expected")
    body_lines.pop()
    if sum(len(x) + 2 for x in header_lines) > MAX_HEADERS:
        raise _err(400, "HFs unparseable")
    body = "".join(line + "\r\n" for line in body_lines).encode("utf-8", "surrogateescape")
    if len(body) > MAX_BODY:
        raise _err(400, "body expected")
    # the header block is parsed with the SIP parser, as SER did
    probe = "".join(line + "\r\n" for line in header_lines)
    try:
        msg = SipMessage.parse(f"{method} {ruri} SIP/2.0\r\n{probe}\r\n".encode("utf-8", "surrogateescape"))
        fields = list(msg.iter_headers())
    except (SipParseError, SipError):
        raise _err(400, "HFs unparseable") from None
    headers: list[tuple[str, str]] = []
    special: dict[str, str] = {}
    for name, value in fields:
        key = _SPECIAL.get(name.strip().lower())
        if key is None:
            headers.append((name, value))
        elif key not in special:
            special[key] = value
    lower = {n.lower() for n, _ in headers}
    if body:
        if "content-type" not in lower and "c" not in lower:
            raise _err(400, "Content-Type missing")
        if "content-length" in lower or "l" in lower:
            raise _err(400, "Content-Length disallowed")
    headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "l")]
    if "to" not in special:
        raise _err(400, "To missing")
    if "from" not in special:
        raise _err(400, "From missing")
    try:
        msg.from_  # noqa: B018 - parsed for validation
    except SipParseError:
        raise _err(400, "Error in From") from None
    cseq: int | None = None
    if "cseq" in special:
        num, _, cmethod = special["cseq"].strip().partition(" ")
        if not num.isdigit():
            raise _err(400, "non-numerical CSeq")
        if cmethod.strip() and cmethod.strip() != method:
            raise _err(400, "CSeq method mismatch")
        cseq = int(num)
    return UacRequest(
        method, ruri, next_hop, headers, special["from"], special["to"], special.get("call-id"), cseq, body
    )


@dataclass(slots=True)
class UacOutcome:
    """How a ``t_uac_dlg`` transaction ended."""

    status: int
    reason: str
    reply: SipMessage | None  # None for a locally generated final reply
    request: SipMessage | None
    dialog: Dialog | None = None

    def dialog_lines(self) -> tuple[str, str, str]:
        """Lines 2-4 of the completion reply (``print_uris``)."""
        if self.dialog is None or not 200 <= self.status < 299:
            return ".", ".", "."
        tgt: DialogTarget | None = self.dialog.target()
        if tgt is None:
            return ".", ".", "."
        route = "Route: " + ", ".join(tgt.routes) + "\r" if tgt.routes else "."
        return tgt.ruri, tgt.next_hop, route

    def render(self) -> MgmtReply:
        data: dict[str, Any] = {"code": self.status, "reason": self.reason}
        if self.reply is None:
            return MgmtReply(self.status, self.reason, data=data, text="")
        ruri, hop, route = self.dialog_lines()
        tgt = self.dialog.target() if self.dialog is not None and route != "." else None
        raw = self.reply.serialize()
        rest = raw[raw.find(b"\n") + 1 :].decode("utf-8", "surrogateescape")
        data.update(
            {
                "ruri": None if ruri == "." else ruri,
                "next_hop": None if hop == "." else hop,
                "route": list(tgt.routes) if tgt is not None else [],
                "to_tag": self.dialog.remote_tag if self.dialog is not None else None,
                "headers": [[n, v] for n, v in self.reply.iter_headers()],
                "body": self.reply.body.decode("utf-8", "replace"),
            }
        )
        return MgmtReply(self.status, self.reason, data=data, text=f"{ruri}\n{hop}\n{route}\n{rest}\n")


class FinalReply(Protocol):
    """How a local transaction ended (tm's ``UacResult``)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def reply(self) -> SipMessage | None: ...


class StatefulUac(Protocol):
    """What the service needs of tm (so that uac does not import tm, which
    declares the ``t_uac_dlg`` command made here)."""

    @property
    def core(self) -> CoreAPI: ...
    async def request(
        self, method: str, ruri: str, *, next_hop: str | None = None, raw: bytes | None = None
    ) -> FinalReply: ...


class UacService:
    """Builds and sends application-initiated requests through tm."""

    def __init__(self, tm: StatefulUac) -> None:
        self.tm = tm
        self.core = tm.core
        self._callid_counter = itertools.count(random.getrandbits(32))
        self._tag_seed: str | None = None

    # -- identifiers (callid.c, uac.c generate_fromtag) --------------------
    def _local_address(self, proto: Proto = Proto.UDP) -> tuple[str, int]:
        pick = self.core.pick_listener
        lst = pick(None, proto, "127.0.0.1")
        if lst is None and proto is not Proto.UDP:
            lst = pick(None, Proto.UDP, "127.0.0.1")
        if lst is None:
            return "127.0.0.1", 5060
        return str(lst.via_host), int(lst.port)

    def from_tag(self, call_id: str) -> str:
        if self._tag_seed is None:
            host, port = self._local_address()
            self._tag_seed = hashlib.md5(f"Long live SER server{host}{port}".encode()).hexdigest()
        return f"{self._tag_seed}-{zlib.crc32(call_id.encode()) & 0xFFFF:04x}"

    def new_call_id(self) -> str:
        host, _ = self._local_address()
        return f"{next(self._callid_counter) & 0xFFFFFFFFFFFFFFFF:016x}-{os.getpid()}@{host}"

    # -- sending ---------------------------------------------------------------
    def build(self, req: UacRequest) -> SipMessage:
        """The request as tm will send it (tm adds the Via)."""
        call_id = req.call_id or self.new_call_id()
        from_ = req.from_
        if ";tag=" not in from_.replace(" ", "").lower():
            from_ = f"{from_};tag={self.from_tag(call_id)}"
        cseq = req.cseq if req.cseq is not None else DEFAULT_CSEQ
        host, port = self._local_address(_proto_of(req.next_hop or req.ruri))
        me = f"{host}:{port}"
        lines = [
            f"{req.method} {req.ruri} SIP/2.0",
            f"To: {req.to}",
            f"From: {from_}",
            f"CSeq: {cseq} {req.method}",
            f"Call-ID: {call_id}",
            f"Content-Length: {len(req.body)}",
        ]
        if self.core.options.get("server_signature", 1):
            lines.append(f"User-Agent: {SERVER_SIGNATURE}")
        lines.extend(f"{n}: {v.replace('!!', me)}" for n, v in req.headers)
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + req.body
        return SipMessage.parse(raw)

    async def send(self, req: UacRequest) -> UacOutcome:
        msg = self.build(req)
        result = await self.tm.request(req.method, req.ruri, raw=msg.serialize(), next_hop=req.next_hop)
        if result.reply is None and result.reason.endswith("/TM)"):
            # the transaction could not even start (unresolvable, no socket)
            raise _err(result.status, result.reason[: -len("/TM)")] + "/FIFO/UAC)")
        out = UacOutcome(result.status, result.reason, result.reply, msg)
        if result.reply is not None and 200 <= result.status < 300:
            try:
                out.dialog = Dialog.from_uac_reply(msg, result.reply)
            except SipParseError as e:
                log.warning("t_uac_dlg: %s %s: no dialog from the reply: %s", req.method, req.ruri, e)
            if req.method == "INVITE" and out.dialog is not None:
                await self.ack(out.dialog, msg.cseq.num)
        return out

    async def ack(self, dlg: Dialog, cseq: int) -> bool:
        """ACK a 2xx along the dialog's route set (RFC 3261 §13.2.2.4)."""
        tgt = dlg.target()
        if tgt is None:
            return False
        hop = SipUri.parse(tgt.next_hop)
        proto_name = (hop.transport or "udp").lower()
        proto = {"tcp": Proto.TCP, "tls": Proto.TLS}.get(proto_name, Proto.UDP)
        targets = await self.core.resolver.locate(
            hop.maddr or hop.host, hop.port, proto_name, hop.scheme == "sips"
        )
        if not targets:
            log.error("t_uac_dlg: cannot resolve %s for the ACK", tgt.next_hop)
            return False
        t = targets[0]
        host, port = self._local_address(proto)
        branch = "z9hG4bK" + secrets.token_hex(8)
        lines = [f"ACK {tgt.ruri} SIP/2.0", f"Via: SIP/2.0/{proto.name} {host}:{port};branch={branch}"]
        lines += [f"{n}: {v}" for n, v in dlg.headers("ACK", cseq)]
        lines += ["Max-Forwards: 70", "Content-Length: 0"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return bool(self.core.send(proto, t.ip, t.port, data))

    # -- the management command -------------------------------------------------
    async def command(self, params: list[str]) -> MgmtReply:
        req = parse_lines(params)
        try:
            outcome = await self.send(req)
        except (SipParseError, SipError) as e:
            raise _err(400, f"HFs unparseable ({e})") from None
        return outcome.render()


def _proto_of(uri: str) -> Proto:
    try:
        t = SipUri.parse(uri).transport
    except SipParseError:
        return Proto.UDP
    return {"tcp": Proto.TCP, "tls": Proto.TLS}.get(t or "", Proto.UDP)


def t_uac_dlg_command(tm: StatefulUac) -> MgmtCommand:
    service = UacService(tm)
    return MgmtCommand(
        "t_uac_dlg",
        service.command,
        doc="Start a SIP transaction; the reply FIFO gets its final reply.",
        params_doc="method, request URI, next hop or '.', header lines, '.', body lines, '.'",
        fifo_reader="dotted",
    )
