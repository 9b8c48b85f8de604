"""RFC 4475 torture messages thrown at a running ``ser`` over UDP and TCP."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.support import SerProcess, options_request, udp_exchange

pytestmark = pytest.mark.interop

from tests.support import RFC4475  # noqa: E402

# RFC 4475 §3.1.2 (syntactically invalid).  baddate and regbadct are left to
# the element that uses Date/Contact (a UA, a registrar): a stateless proxy
# core has nothing to say about them.
INVALID = {
    *("badinv01", "clerr", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri", "lwsstart"),
    *("trws", "escruri", "badaspec", "baddn", "badvers", "mismatch01", "mismatch02", "bigcode", "ncl"),
}
# §3.3 messages whose header problems a proxy must also reject with 400
INVALID_33 = {"insuf", "multi01", "mcl01"}

# On a stream, a Content-Length larger than the body means "wait for more"
# (clerr), and dblreq's second request has a wrong Content-Length: both are
# datagram cases.  inv2543 has no Content-Length, which RFC 3261 §18.3
# requires on streams: 400 there.
TCP_SKIP = {"clerr", "dblreq"}

ROUTES = """\
from sipexpress.script.pyroute import sl_send_reply

# check_via: replies whose top Via is not ours are dropped, never sent to
# the documentation addresses in the torture messages
OPTIONS = {{"listen": "udp:{host}:{port} tcp:{host}:{port}", "check_via": 1, "sip_warning": 0}}
MODULES = ["sl"]


async def request_route(ctx):
    if ctx.msg.method == "OPTIONS":
        return sl_send_reply(ctx, 200, "OK")
    if ctx.msg.method != "ACK":
        return sl_send_reply(ctx, 404, "Not Here")
    return 0
"""


def messages() -> list[tuple[str, bytes]]:
    files = sorted(RFC4475.glob("*.dat"))
    assert len(files) == 49, f"RFC 4475 messages missing in {RFC4475}"
    return [(f.stem, f.read_bytes()) for f in files]


def reply_due(data: bytes) -> bool:
    return not data.startswith(b"SIP/") and not data.startswith(b"ACK ")


def tcp_try(data: bytes, host: str, port: int, timeout: float) -> bytes | None:
    with socket.create_connection((host, port), timeout=3) as s:
        s.settimeout(timeout)
        s.sendall(data)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65535)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            pass
        return buf or None


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rfc4475_messages(ser_factory: Callable[..., SerProcess], transport: str) -> None:
    ser = ser_factory(ROUTES, suffix=".py")
    failures: list[str] = []
    for name, data in messages():
        if transport == "tcp":
            if name in TCP_SKIP:
                continue
            if b"\r\n\r\n" not in data:
                data += b"\r\n"  # baddn.dat lost its final empty line
        due = reply_due(data)
        timeout = 2.0 if due else 0.3
        if transport == "udp":
            reply = udp_exchange(data, ser.host, ser.port, timeout)
        else:
            reply = tcp_try(data, ser.host, ser.port, timeout)
        if not ser.alive():
            pytest.fail(f"ser died on {name}:\n{ser.log()[-3000:]}")
        if not due:
            if reply is not None:
                failures.append(f"{name}: unexpected reply {reply[:40]!r}")
            continue
        if reply is None:
            failures.append(f"{name}: no reply")
            continue
        code = status_of(reply)
        if name == "badvers":
            if code != 505:
                failures.append(f"{name}: expected 505, got {code}")
        elif name in INVALID or name in INVALID_33 or (transport == "tcp" and name == "inv2543"):
            if code != 400:
                failures.append(f"{name}: expected 400, got {code}")
        elif code == 400:
            first = reply.split(b"\r\n", 1)[0]
            failures.append(f"{name}: valid message rejected: {first!r}")
    assert not failures, "\n".join(failures) + "\n" + ser.log()[-2000:]
    # still serving
    again = udp_exchange(options_request(ser.host, ser.port), ser.host, ser.port, 2.0)
    assert again is not None and again.startswith(b"SIP/2.0 200 OK")
