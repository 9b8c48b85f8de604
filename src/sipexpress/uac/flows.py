"""Application flows on top of ``t_uac_dlg``: instant messages and
click-to-dial with REFER (the seed's call flow #1-#7, as ``ctd.sh`` does
it).  They talk to the server only through a ``send`` callable that takes
the ``t_uac_dlg`` parameter lines and returns the completion reply text, so
``serctl`` (over the FIFO) and the web interface (over JSON-RPC) share them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Send = Callable[[list[str]], str]

CONTROLLER = "<sip:controller@foo.bar>"
ON_HOLD_SDP = [
    "v=0",
    "o=click-to-dial 0 0 IN IP4 0.0.0.0",
    "s=session",
    "c=IN IP4 0.0.0.0",
    "b=CT:1000",
    "t=0 0",
    "m=audio 9 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
]


@dataclass(slots=True)
class Completion:
    """A parsed ``t_uac_dlg`` completion reply (SER 0.9 format)."""

    code: int
    reason: str
    ruri: str | None = None
    next_hop: str | None = None
    route: str | None = None  # the "Route: ..." line, if any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def status(self) -> str:
        return f"{self.code} {self.reason}"

    def header(self, *names: str) -> str | None:
        low = {n.lower() for n in names}
        for n, v in self.headers:
            if n.lower() in low:
                return v
        return None


def parse_completion(text: str) -> Completion:
    lines = text.split("\n")
    code_text, _, reason = lines[0].partition(" ")
    try:
        code = int(code_text)
    except ValueError:
        return Completion(0, lines[0] or "no reply")
    c = Completion(code, reason.strip())
    if len(lines) >= 4:
        c.ruri = None if lines[1] == "." else lines[1]
        c.next_hop = None if lines[2] == "." else lines[2]
        route = lines[3].rstrip("\r")
        c.route = None if route == "." else route
        for line in lines[4:]:
            line = line.rstrip("\r")
            if not line:
                break
            name, sep, value = line.partition(":")
            if sep and not name.startswith((" ", "\t")):
                c.headers.append((name.strip(), value.strip()))
    return c


def request_lines(
    method: str, ruri: str, headers: list[str], body: list[str] | None = None, next_hop: str = "."
) -> list[str]:
    return [method, ruri, next_hop, *headers, ".", *(body or []), "."]


def message_lines(to: str, text: str, sender: str, contact: str | None = None) -> list[str]:
    """The ``t_uac_dlg`` lines of a MESSAGE (for callers that send them
    asynchronously themselves)."""
    headers = [
        f"From: {sender}",
        f"To: <{to}>" if not to.startswith("<") else f"To: {to}",
        f"Contact: {contact or '<sip:daemon@!!>'}",
        "Content-Type: text/plain; charset=UTF-8",
    ]
    return request_lines("MESSAGE", to, headers, text.splitlines() or [""])


def instant_message(send: Send, to: str, text: str, sender: str, contact: str | None = None) -> Completion:
    return parse_completion(send(message_lines(to, text, sender, contact)))


@dataclass(slots=True)
class CtdResult:
    steps: list[tuple[str, bool, str]]  # (invitation|refer|bye, succeeded, status)

    @property
    def ok(self) -> bool:
        return len(self.steps) == 3 and all(ok for _, ok, _ in self.steps)

    def report(self) -> list[str]:
        return [f"{name} {'succeeded' if ok else 'failed'}" for name, ok, _ in self.steps]


def click_to_dial(
    send: Send,
    caller: str,
    callee: str,
    controller: str = CONTROLLER,
    outbound: str = ".",
) -> CtdResult:
    """#1 INVITE the caller (on-hold SDP), #4 REFER it to the callee, #6 BYE
    the wrapper call.  tm ACKs the 200 (#3) itself."""
    callid_nr = f"{int(time.time())}{os.getpid()}"
    fixed = [
        f"From: {controller};tag={callid_nr}",
        f"Call-ID: {callid_nr}.fifouacctd",
        "Contact: <sip:caller@!!>",
    ]
    steps: list[tuple[str, bool, str]] = []
    inv = parse_completion(
        send(
            request_lines(
                "INVITE",
                caller,
                [*fixed, f"To: <{caller}>", "CSeq: 1 INVITE", "Content-Type: application/sdp"],
                ON_HOLD_SDP,
                outbound,
            )
        )
    )
    steps.append(("invitation", inv.ok, inv.status))
    if not inv.ok or inv.ruri is None:
        return CtdResult(steps)
    to = inv.header("To", "t")
    dialog = [*([inv.route] if inv.route else []), f"To: {to}"]
    hop = inv.next_hop or "."
    refer = parse_completion(
        send(
            request_lines(
                "REFER",
                inv.ruri,
                [*dialog, *fixed, "CSeq: 2 REFER", f"Referred-By: {controller}", f"Refer-To: <{callee}>"],
                [],
                hop,
            )
        )
    )
    steps.append(("refer", refer.ok, refer.status))
    bye = parse_completion(send(request_lines("BYE", inv.ruri, [*dialog, *fixed, "CSeq: 3 BYE"], [], hop)))
    steps.append(("bye", bye.ok, bye.status))
    return CtdResult(steps)
