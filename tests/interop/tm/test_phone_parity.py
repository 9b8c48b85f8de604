"""Call flows where ser must behave as the proxies phones already meet
(SER 0.9, Kamailio, the RFCs): SIPp phones through a ser running a
default-script-like route.

* a caller on TCP reaches a phone registered over UDP without a
  ``transport`` parameter (RFC 3263 §4.1: UDP for a numeric host);
* the transport changes, so ``record_route()`` puts two Record-Routes
  (``r2=on``) and the callee's in-dialog BYE finds the caller;
* rport with received (RFC 3581 §4), Max-Forwards 69 from a phone's 70;
* a dead TCP next hop is a 503 at once (RFC 3261 §16.9) and failure_route
  moves on without waiting for fr_timer;
* Timer C sends CANCEL and 408 (RFC 3261 §16.8), the first INVITE
  retransmission after T1 = 0.5 s;
* the CANCELs after a 2xx carry ``Reason: SIP;cause=200`` (RFC 3326) and
  the proxy's CANCEL/ACK the request's Max-Forwards;
* registrar raises a too-short expires (SIPp, sipsak ``-U``).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import SerProcess, SippPhone, free_port, need_tool, run_sipp

pytestmark = pytest.mark.interop

SIPP = Path(__file__).resolve().parents[2] / "data" / "sipp"

CFG = """
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
fifo="{fifo}"
loadmodule "sl"
loadmodule "tm"
loadmodule "rr"
loadmodule "maxfwd"
loadmodule "usrloc"
loadmodule "registrar"
modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 10)
modparam("tm", "fr_inv_timer", {fr_inv})
{params}
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (!method == "REGISTER") {{ record_route(); }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "REGISTER") {{ save("location"); break; }};
    if (uri =~ "^sip:dead@") {{ t_on_failure("1"); t_relay_to_tcp("127.0.0.1", "{dead}"); break; }};
    if (uri =~ "^sip:fork@" && method == "INVITE") {{
        rewritehostport("127.0.0.1:{uas}");
        append_branch("sip:fork@127.0.0.1:{uas2}");
        t_relay();
        break;
    }};
    if (uri =~ "^sip:(busy|ring|fork)@") {{ rewritehostport("127.0.0.1:{uas}"); t_relay(); break; }};
    if (uri =~ "^sip:stateless@") {{ forward_udp("127.0.0.1", "{uas}"); break; }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
failure_route[1] {{
    if (t_check_status("503")) {{ log(1, "failure_route: 503 from the dead next hop"); }};
    rewritehostport("127.0.0.1:{uas}");
    t_relay();
}}
"""


class Ports:
    def __init__(self) -> None:
        self.uas = free_port()
        self.uas2 = free_port()
        self.dead = free_port()


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
def ser(ser_factory: Callable[..., SerProcess], ports: Ports) -> Iterator[Callable[..., SerProcess]]:
    def make(fr_inv: int = 20, params: str = "") -> SerProcess:
        return ser_factory(CFG, fr_inv=fr_inv, params=params, uas=ports.uas, uas2=ports.uas2, dead=ports.dead)

    yield make


def caller(
    sp: SerProcess, workdir: Path, service: str, scenario: str = "uac", transport: str = "u1"
) -> SippPhone:
    return SippPhone(scenario, workdir, extra=["-s", service, "-t", transport], remote=f"{sp.host}:{sp.port}")


def messages(trace: str) -> list[tuple[datetime, str]]:
    """SIPp's -trace_msg log as (time, message text) pairs."""
    out = []
    parts = re.split(r"(?m)^-{20,} (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\n", trace)
    for stamp, body in zip(parts[1::2], parts[2::2], strict=True):
        out.append((datetime.strptime(re.sub(r"\s+", " ", stamp), "%Y-%m-%d %H:%M:%S.%f"), body))
    return out


def received(trace: str, start: str) -> list[tuple[datetime, str]]:
    """The messages SIPp received whose first line starts with ``start``."""
    found = []
    for when, text in messages(trace):
        head, _, msg = text.partition("\n\n")
        if "message received" in head and msg.startswith(start):
            found.append((when, msg))
    return found


def header(msg: str, name: str) -> list[str]:
    return re.findall(rf"(?im)^{name}:\s*(.*?)\r?$", msg)


def test_tcp_caller_to_udp_phone_double_rr_and_bye_from_callee(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser()
    args = ["-sf", str(SIPP / "register_15s.xml"), "-s", "bob", "-i", "127.0.0.1", "-p", str(ports.uas)]
    reg = run_sipp(
        [*args, "-m", "1", "-timeout", "10", "-timeout_error", f"{sp.host}:{sp.port}"],
        timeout=30,
    )
    assert reg.ok, reg.stdout + reg.stderr
    callee = SippPhone("uas_bye.xml", tmp_path / "bob", port=ports.uas)
    call = caller(sp, tmp_path / "alice", "bob", "uac_bye_from_callee.xml", transport="t1")
    call_rc, callee_rc = call.wait(20), callee.wait(20)
    trace = callee.received()
    assert (call_rc, callee_rc) == (0, 0), trace + call.received() + sp.log()
    (_, trying), *_ = received(call.received(), "SIP/2.0 100 ")
    assert re.search(r";rport=\d+;received=127\.0\.0\.1|;received=127\.0\.0\.1;rport=\d+", trying), trying
    (_, invite), *_ = received(trace, "INVITE ")
    # RFC 3263 §4.1: no transport and a numeric host: UDP, although the caller used TCP
    rr = header(invite, "Record-Route")
    assert len(rr) == 2, invite
    # the callee's side first (UDP), then the caller's (TCP), both r2=on (SER's enable_double_rr)
    assert f"127.0.0.1:{sp.port};r2=on" in rr[0] and ";transport=" not in rr[0], rr
    assert f"127.0.0.1:{sp.port};transport=tcp;r2=on" in rr[1], rr
    assert header(invite, "Max-Forwards") == ["69"]
    via = header(invite, "Via")
    # RFC 3581 §4: rport filled and received added, even with the same IP
    assert re.search(r";rport=\d+;received=127\.0\.0\.1|;received=127\.0\.0\.1;rport=\d+", via[1]), via


def test_stateless_forward_to_other_transport_double_rr(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser()
    callee = SippPhone("uas", tmp_path / "uas", port=ports.uas)
    call = caller(sp, tmp_path / "uac", "stateless", transport="t1")
    assert call.wait(20) == 0, call.received() + sp.log()
    callee.stop()
    (_, invite), *_ = received(callee.received(), "INVITE ")
    rr = header(invite, "Record-Route")
    assert len(rr) == 2 and ";transport=tcp;r2=on" in rr[1] and ";r2=on" in rr[0], rr


def test_dead_tcp_next_hop_503_at_once_and_failure_route_moves_on(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser()
    callee = SippPhone("uas", tmp_path / "uas", port=ports.uas)
    start = time.monotonic()
    call = caller(sp, tmp_path / "uac", "dead")
    rc = call.wait(20)
    took = time.monotonic() - start
    callee.stop()
    assert rc == 0, call.received() + sp.log()
    assert "failure_route: 503 from the dead next hop" in sp.log()
    assert took < 5, took  # fr_timer is 10 s


def test_timer_c_cancel_and_408_and_t1_retransmission(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser(fr_inv=2)  # SER's default noisy_ctimer=0 is not set: RFC 3261 §16.8 applies
    callee = SippPhone("uas_slow_ring.xml", tmp_path / "uas", port=ports.uas)
    call = caller(sp, tmp_path / "uac", "ring", "uac_408.xml")
    call_rc, callee_rc = call.wait(20), callee.wait(20)
    trace = callee.received()
    assert (call_rc, callee_rc) == (0, 0), trace + call.received() + sp.log()
    invites = received(trace, "INVITE ")
    # T1 = 0.5 s: the first retransmission half a second after the INVITE
    # (SER's 1 s before); the 180 at 1.1 s normally stops the next one
    assert len(invites) >= 2, invites
    gap = (invites[1][0] - invites[0][0]).total_seconds()
    assert 0.4 < gap < 0.8, gap
    (_, cancel), *_ = received(trace, "CANCEL ")
    assert header(cancel, "Max-Forwards") == header(invites[0][1], "Max-Forwards") == ["69"]


def test_cancel_after_2xx_has_reason(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser()
    answers = SippPhone("uas", tmp_path / "uas", port=ports.uas)
    rings = SippPhone("uas_ring_forever.xml", tmp_path / "ring", port=ports.uas2)
    call = caller(sp, tmp_path / "uac", "fork")
    assert call.wait(20) == 0, call.received() + sp.log()
    assert rings.wait(20) == 0, rings.received() + sp.log()
    answers.stop()
    (_, cancel), *_ = received(rings.received(), "CANCEL ")
    assert header(cancel, "Reason") == ['SIP;cause=200;text="Call completed elsewhere"']
    assert header(cancel, "Max-Forwards") == ["69"]


def test_ser_max_limit_16_and_ack_keeps_max_forwards(ser, ports: Ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser(params='modparam("maxfwd", "max_limit", 16)')
    busy = SippPhone("uas_busy.xml", tmp_path / "uas", port=ports.uas)
    call = caller(sp, tmp_path / "uac", "busy")
    call.wait(20)  # -sn uac does not expect the 486
    assert busy.wait(20) == 0, busy.received() + sp.log()
    trace = busy.received()
    (_, invite), *_ = received(trace, "INVITE ")
    (_, ack), *_ = received(trace, "ACK ")
    # SER 0.9's arithmetic: 70 above max_limit 16 leaves as 16
    assert header(invite, "Max-Forwards") == header(ack, "Max-Forwards") == ["16"]


def test_maxfwd_initial_value_above_max_limit_refused_at_load(tmp_path: Path) -> None:
    import sys

    cfg = tmp_path / "ser.cfg"
    cfg.write_text(
        'loadmodule "sl"\nloadmodule "maxfwd"\nmodparam("maxfwd", "max_limit", 16)\n'
        'route { if (!mf_process_maxfwd_header("20")) { sl_send_reply("483", "Too Many Hops"); }; }\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.ser", "-c", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and "greater than max_limit (16)" in p.stderr + p.stdout, p.stderr


def test_sipsak_register_15s_raised_to_min_expires(ser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = ser()
    sipsak = need_tool("sipsak")
    lport = free_port()
    # sipsak cuts five-digit ports in -s to four (peers.md): give it the proxy by -H/-r
    args = ["-U", "-C", f"sip:carol@127.0.0.1:{lport}", "-s", "sip:carol@127.0.0.1", "-H", "127.0.0.1"]
    p = subprocess.run(
        [sipsak, *args, "-r", str(sp.port), "-l", str(lport), "-vvv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr + sp.log()
    assert "expires=60" in p.stdout


def test_t_reply_any_three_digit_code_and_print(ser_factory: Callable[..., Any], tmp_path: Path) -> None:
    sp = ser_factory(
        'listen=udp:{host}:{port}\nloadmodule "sl"\nloadmodule "tm"\nloadmodule "print"\n'
        'route {{ print("print module here"); if (!t_newtran()) {{ sl_reply_error(); break; }}; '
        't_reply("999", "Beyond Six Hundred"); }}\n'
    )
    sipsak = need_tool("sipsak")
    p = subprocess.run(
        [sipsak, "-s", "sip:x@127.0.0.1", "-r", str(sp.port), "-vv"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "SIP/2.0 999 Beyond Six Hundred" in p.stdout, p.stdout + p.stderr + sp.log()
    assert "print module here\n" in sp.log()
