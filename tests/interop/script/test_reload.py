"""``serctl reload``: ser.cfg recompiled and swapped in a running ser, with
SIPp calling through it (issue 23).  A transaction keeps the routes it
started with; a config with errors changes nothing and says where."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import SerProcess, cfg_head, free_port, need_tool, options_request, udp_exchange

pytestmark = pytest.mark.interop

CFG = (
    cfg_head("sl", "tm")
    + """\
route {{
    if (method=="INVITE") {{
        t_on_failure("1");
        rewritehostport("127.0.0.1:{down}");
        t_relay();
        break;
    }};
    sl_send_reply("404", "{version}");
}}
failure_route[1] {{
    t_reply("{code}", "{version}");
}}
"""
)

CALL = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="call expecting {code}">
  <send retrans="500"><![CDATA[

      INVITE sip:bob@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv
      From: <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:bob@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="{code}"/>
  <send><![CDATA[

      ACK sip:bob@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv
      From: <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
"""


def reason_of(sp: SerProcess) -> str:
    reply = udp_exchange(options_request(sp.host, sp.port, rport=True), sp.host, sp.port, 3.0)
    assert reply is not None, sp.log()
    return reply.split(b"\r\n", 1)[0].decode()


def serctl(sp: SerProcess, rpc: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sipexpress.cli.serctl", "--fifo", sp.fifo, "--rpc-url"]
    return subprocess.run(
        [*cmd, f"http://127.0.0.1:{rpc}/", *args], capture_output=True, text=True, timeout=60
    )


class Downstream:
    """The next hop: takes the relayed INVITE and answers it when told."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(15)
        self.port: int = self.sock.getsockname()[1]

    def invite(self) -> tuple[str, tuple[str, int]]:
        while True:
            data, addr = self.sock.recvfrom(65535)
            if data.startswith(b"INVITE "):
                return data.decode(), addr

    def answer(self, invite: str, addr: tuple[str, int], code: int) -> None:
        head = invite.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        keep = [h for h in head if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
        to = next(h for h in head if h.lower().startswith("to:"))
        lines = [f"SIP/2.0 {code} Server Error", *keep, f"{to};tag=down", "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)


def test_reload_swaps_routes_keeps_transactions_and_refuses_errors(
    ser_factory: Callable[..., SerProcess], tmp_path: Path
) -> None:
    sipp = need_tool("sipp")
    down = Downstream()
    rpc = free_port()
    fmt = {"rpc": rpc, "down": down.port}
    sp = ser_factory(CFG, version="v1", code=486, **fmt)
    assert reason_of(sp) == "SIP/2.0 404 v1"

    def call(code: int) -> subprocess.Popen[str]:
        scen = tmp_path / f"call{code}.xml"
        scen.write_text(CALL.format(code=code))
        cmd = [sipp, "-sf", str(scen), "-m", "1", "-p", str(free_port()), "-mp", str(free_port())]
        cmd += ["-nostdin", "-timeout", "30", "-timeout_error", f"{sp.host}:{sp.port}"]
        return subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    # a call whose transaction (and failure_route[1]) starts under v1 ...
    first = call(486)
    invite, addr = down.invite()
    # ... the config changes while it waits for the next hop's answer
    new = CFG.format(host=sp.host, port=sp.port, fifo=sp.fifo, version="v2", code=603, **fmt)
    sp.cfg_path.write_text(new)
    r = serctl(sp, rpc, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"200 routes reloaded from {sp.cfg_path}\n"), r.stdout
    assert reason_of(sp) == "SIP/2.0 404 v2"  # new messages: the new routes
    down.answer(invite, addr, 500)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out + sp.log()[-3000:]  # 486 v1: the old failure_route ran

    second = call(603)  # a transaction started after the reload: the new failure_route
    invite, addr = down.invite()
    down.answer(invite, addr, 500)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out + sp.log()[-3000:]

    # a config with errors: nothing changes, the errors are located
    broken = new.replace('sl_send_reply("404", "v2");', 'sl_send_reply("404", "v3");\n    if (uri=~"x") {{\n')
    broken = broken.replace("{{", "{").replace("}}", "}")
    sp.cfg_path.write_text(broken)
    r = serctl(sp, rpc, "reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{sp.cfg_path}:" in r.stderr and "never closed" in r.stderr, r.stderr
    assert "the running routes stay" in r.stderr
    assert reason_of(sp) == "SIP/2.0 404 v2"

    # the same over JSON-RPC, with the location as data
    r = serctl(sp, rpc, "--json", "reload")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == 400 and "never closed" in err["data"]["text"]
    (where,) = err["data"]["data"]["errors"]
    assert where["file"] == str(sp.cfg_path) and where["line"] == 14 and "never closed" in where["message"]
    sp.cfg_path.write_text(
        broken.replace('sl_send_reply("404", "v3");\n    if (uri=~"x") {\n', 'sl_send_reply("404", "v4");')
    )
    r = serctl(sp, rpc, "--json", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["config"] == str(sp.cfg_path)
    assert reason_of(sp) == "SIP/2.0 404 v4"
