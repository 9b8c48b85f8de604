"""Every operator, left operand and core action through a running ``ser``:
requests go over UDP, answers come back as stateless replies (the reason
phrase tells which branch the script took) or arrive at a UDP socket that
plays the next hop."""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SerProcess, free_port

pytestmark = pytest.mark.interop

# The request-URI user picks the test case; "yes"/"no" replies report a
# condition, the next hop (port {hop}) receives what is forwarded.
CFG = r"""
debug=3
fork=no
log_stderror=yes
listen=udp:127.0.0.1:{port}
alias=alias.example:{port}
loadmodule "sl"

route {{
    if (uri=~"^sip:drop@") {{ drop; }};
    if (uri=~"^sip:c-") {{ route(1); break; }};
    if (uri=~"^sip:a-") {{ route(2); break; }};
    sl_send_reply("404", "no case");
}}

# ---- conditions: reply "yes" or "no"
route[1] {{
    if (uri=~"^sip:c-method@")          {{ if (method=="INFO" && method!="BYE" && method=~"^in" && !(method!~"F")) route(9); }}
    else if (uri=~"^sip:c-uri@")        {{ if (uri==myself && uri=~"c-URI@127\.0\.0\.1" && !uri=="sip:x@y") route(9); }}
    else if (uri=~"^sip:c-alias@")      {{ if (myself==uri) route(9); }}
    else if (uri=~"^sip:c-foreign@")    {{ if (uri!=myself) route(9); }}
    else if (uri=~"^sip:c-from@")       {{ if (from_uri=="sip:tester@example.com" && from_uri!=myself && to_uri=~"^sip:c-from@") route(9); }}
    else if (uri=~"^sip:c-srcip@")      {{ if (src_ip==127.0.0.1 && src_ip==127.0.0.0/8 && src_ip==127.0.0.0/255.0.0.0 && src_ip!=10.0.0.0/8 && src_ip=~"^127\." && src_ip==myself) route(9); }}
    else if (uri=~"^sip:c-dstip@")      {{ if (dst_ip==127.0.0.1 && dst_ip==myself && myself==dst_ip) route(9); }}
    else if (uri=~"^sip:c-ports@")      {{ if (src_port>1023 && src_port<=65535 && dst_port=={port} && dst_port>=1 && dst_port!=5) route(9); }}
    else if (uri=~"^sip:c-proto@")      {{ if (proto==udp && proto!=tcp && af==inet && af!=inet6) route(9); }}
    else if (uri=~"^sip:c-len@")        {{ if (msg:len>100 && msg:len<max_len && len_gt(100) && !len_gt(max_len)) route(9); }}
    else if (uri=~"^sip:c-logic@")      {{ if ((1 and not 0) && (0 || 1) | 0 & 1 or 0) route(9); }}
    else if (uri=~"^sip:c-flags@")      {{ setflag(3); setflag(7); resetflag(7); if (isflagset(3) && !isflagset(7)) route(9); }}
    else if (uri=~"^sip:c-routes@")     {{ route(3); if (isflagset(4) && !isflagset(5)) route(9); }}
    else if (uri=~"^sip:c-false@")      {{ if (method=="BYE" || src_port==1 || proto==tcp) route(9); }};
    sl_send_reply("200", "no");
}}
route[3] {{ setflag(4); break; setflag(5); }}
route[9] {{ sl_send_reply("200", "yes"); drop; }}

# ---- actions: forwarded to the next hop
route[2] {{
    if (uri=~"^sip:a-rewrite@") {{
        rewriteuser("bob"); prefix("00"); strip(1); strip_tail(1); rewritehostport("127.0.0.1:{hop}");
        forward(uri:host, uri:port);
    }} else if (uri=~"^sip:a-seturi@") {{
        seturi("sip:carol@127.0.0.1"); setport("{hop}"); forward_udp(uri:host, uri:port);
    }} else if (uri=~"^sip:a-sethost@") {{
        sethost("localhost"); rewriteport("{hop}"); forward(127.0.0.1, {hop});
    }} else if (uri=~"^sip:a-revert@") {{
        rewritehost("elsewhere.example"); revert_uri(); forward("127.0.0.1", {hop});
    }} else if (uri=~"^sip:a-userpass@") {{
        setuserpass("dave:pw"); forward(127.0.0.1, {hop});
    }} else if (uri=~"^sip:a-send@") {{
        rewriteuser("nobody"); send(127.0.0.1, {hop});
    }} else if (uri=~"^sip:a-log@") {{
        log(1, "MARKER-LOG-{marker}\n"); log("debug-only text"); error("x", "y"); sl_send_reply("200", "logged");
    }} else if (uri=~"^sip:a-exec@") {{
        exec("touch {workdir}/exec-ran"); sl_send_reply("200", "executed");
    }} else if (uri=~"^sip:a-branch@") {{
        append_branch("sip:b1@127.0.0.1:{hop}"); append_branch; force_rport(); sl_send_reply("200", "branched");
    }};
}}
"""


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, object]]:
    hop_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hop_sock.bind(("127.0.0.1", 0))
    hop = hop_sock.getsockname()[1]
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="ser-script-"))
    marker = uuid.uuid4().hex[:8]
    cfg = workdir / "ser.cfg"
    cfg.write_text(CFG.format(port=port, hop=hop, marker=marker, workdir=workdir))
    sp = SerProcess(cfg, "127.0.0.1", port, workdir)
    try:
        sp.start()
    except RuntimeError as e:
        hop_sock.close()
        pytest.fail(f"ser did not start: {e}")
    yield {"ser": sp, "hop": hop_sock, "port": port, "marker": marker, "workdir": workdir}
    sp.stop()
    hop_sock.close()


def req(port: int, user: str, method: str = "INFO", host: str = "127.0.0.1") -> bytes:
    return (
        f"{method} sip:{user}@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@example.com>;tag={uuid.uuid4().hex[:6]}\r\n"
        f"To: <sip:{user}@{host}:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@test\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recvfrom(65535)[0]
        except TimeoutError:
            return None


def status_line(reply: bytes | None) -> str:
    assert reply is not None, "no reply"
    return reply.split(b"\r\n", 1)[0].decode()


CONDITIONS = [
    ("c-method", "INFO", "127.0.0.1"),
    ("c-uri", "INFO", "127.0.0.1"),
    ("c-alias", "INFO", "alias.example"),
    ("c-foreign", "INFO", "foreign.example"),
    ("c-from", "INFO", "127.0.0.1"),
    ("c-srcip", "INFO", "127.0.0.1"),
    ("c-dstip", "INFO", "127.0.0.1"),
    ("c-ports", "INFO", "127.0.0.1"),
    ("c-proto", "INFO", "127.0.0.1"),
    ("c-len", "INFO", "127.0.0.1"),
    ("c-logic", "INFO", "127.0.0.1"),
    ("c-flags", "INFO", "127.0.0.1"),
    ("c-routes", "INFO", "127.0.0.1"),
]


@pytest.mark.parametrize(("user", "method", "host"), CONDITIONS, ids=[c[0] for c in CONDITIONS])
def test_condition_true(env: dict[str, object], user: str, method: str, host: str) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    reply = exchange(port, req(port, user, method, host))
    assert status_line(reply) == "SIP/2.0 200 yes"


def test_false_conditions_take_else(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    assert status_line(exchange(port, req(port, "c-false"))) == "SIP/2.0 200 no"


def test_drop_sends_nothing(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    assert exchange(port, req(port, "drop"), timeout=0.5) is None


def forwarded(env: dict[str, object], user: str) -> bytes:
    port = int(env["port"])  # type: ignore[call-overload]
    hop: socket.socket = env["hop"]  # type: ignore[assignment]
    hop.settimeout(3)
    data = req(port, user)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        got, _ = hop.recvfrom(65535)
    return got


@pytest.mark.parametrize(
    ("user", "ruri"),
    [
        ("a-rewrite", "sip:0bo@127.0.0.1:{hop}"),
        ("a-seturi", "sip:carol@127.0.0.1:{hop}"),
        ("a-sethost", "sip:a-sethost@localhost:{hop}"),
        ("a-revert", "sip:a-revert@127.0.0.1:{port}"),
        ("a-userpass", "sip:dave:pw@127.0.0.1:{port}"),
    ],
)
def test_forwarded_request_uri(env: dict[str, object], user: str, ruri: str) -> None:
    hop_port = env["hop"].getsockname()[1]  # type: ignore[attr-defined]
    got = forwarded(env, user)
    first = got.split(b"\r\n", 1)[0].decode()
    assert first == f"INFO {ruri.format(hop=hop_port, port=env['port'])} SIP/2.0"
    # stateless forwarding added our Via on top
    vias = [line for line in got.split(b"\r\n") if line.lower().startswith(b"via:")]
    assert len(vias) == 2 and b"127.0.0.1:9" in vias[1]


def test_send_forwards_the_original_message(env: dict[str, object]) -> None:
    got = forwarded(env, "a-send")
    port = env["port"]
    assert got.startswith(f"INFO sip:a-send@127.0.0.1:{port} SIP/2.0\r\n".encode())  # not rewritten
    assert got.count(b"Via:") == 1  # unmodified buffer


def test_log_and_error(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    sp: SerProcess = env["ser"]  # type: ignore[assignment]
    assert status_line(exchange(port, req(port, "a-log"))) == "SIP/2.0 200 logged"
    deadline = time.monotonic() + 3
    while f"MARKER-LOG-{env['marker']}" not in sp.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = sp.log()
    assert f"MARKER-LOG-{env['marker']}" in log
    assert "debug-only text" not in log  # log() without level is DBG; debug=3


def test_exec(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    assert status_line(exchange(port, req(port, "a-exec"))) == "SIP/2.0 200 executed"
    assert (Path(str(env["workdir"])) / "exec-ran").exists()


def test_branch_actions_run(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    assert status_line(exchange(port, req(port, "a-branch"))) == "SIP/2.0 200 branched"


def test_unknown_case_falls_through(env: dict[str, object]) -> None:
    port = int(env["port"])  # type: ignore[call-overload]
    assert status_line(exchange(port, req(port, "zzz"))) == "SIP/2.0 404 no case"
