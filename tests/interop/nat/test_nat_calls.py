"""A phone behind a real NAT (tests/netns.py): it registers through the
masquerading router with its private address in Contact; the shipped
examples/nat/nathelper.cfg saves the NAT's public address as the binding's
``received``; a call from outside reaches the phone through the NAT.  The
router forgets an idle binding after a short conntrack timeout: without
keep-alives the call then fails, with ``natping_interval`` it goes through.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.netns import HOME_IP, OUTSIDE_IP, PROXY_IP, NatLab, nat_lab, sipp_trace
from tests.support import ROOT, SIPP_SCENARIOS, wait_for

pytestmark = pytest.mark.interop

NAT_CFG = ROOT / "examples" / "nat" / "nathelper.cfg"
UDP_TIMEOUT = (
    3  # the router's conntrack timeout (s); natping every 1 s leaves 2 s of slack on a loaded machine
)


def nat_cfg(workdir: Path, natping: int) -> str:
    """The shipped config with a private FIFO, the keep-alive interval of
    the test and a short tm timer (a call into a closed NAT times out)."""
    text = NAT_CFG.read_text()
    subs = [
        (r'(?m)^fifo=".*"$', f'fifo="{workdir}/ser_fifo"'),
        (
            r'(?m)^modparam\("nathelper", "natping_interval", \d+\)$',
            f'modparam("nathelper", "natping_interval", {natping})',
        ),
        (
            r"(?m)^modparam\(\"usrloc\", \"db_mode\", 0\)$",
            'modparam("usrloc", "db_mode", 0)\nmodparam("tm", "fr_timer", 2)',
        ),
        (r"(?m)^listen=.*$", f"listen=udp:{PROXY_IP}:5060"),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text)
        assert n == 1, pattern
    return text


def register_phone(lab: NatLab, workdir: Path) -> None:
    reg = lab.sipp(
        lab.home,
        HOME_IP,
        [
            "-sf",
            str(SIPP_SCENARIOS / "register.xml"),
            "-s",
            "phone",
            "-m",
            "1",
            "-timeout",
            "10",
            f"{PROXY_IP}:5060",
        ],
        workdir / "reg",
    )
    assert reg.wait(20) == 0, sipp_trace(workdir / "reg")


def binding_open(lab: NatLab) -> bool:
    return f"src={HOME_IP} dst={PROXY_IP} sport=5060 dport=5060" in lab.conntrack()


def call_phone(lab: NatLab, workdir: Path) -> int:
    """The phone answers (SIPp uas, auto-answering the keep-alive OPTIONS);
    a caller outside calls it through the proxy: the caller's exit code."""
    phone = lab.sipp(
        lab.home, HOME_IP, ["-sn", "uas", "-aa", "-m", "100", "-timeout", "15"], workdir / "phone"
    )
    caller = lab.sipp(
        lab.public,
        OUTSIDE_IP,
        ["-sn", "uac", "-s", "phone", "-m", "1", "-timeout", "12", "-mp", "6100", f"{PROXY_IP}:5060"],
        workdir / "caller",
    )
    rc_caller = caller.wait(30)
    # the phone lingers seconds after its call (SIPp's own timers): its
    # trace says what it got
    phone.kill()
    phone.wait(5)
    return rc_caller


@pytest.mark.parametrize("natping", [0, 1], ids=["no-keepalive", "keepalive"])
def test_call_through_nat_after_conntrack_timeout(tmp_path: Path, natping: int) -> None:
    with nat_lab(udp_timeout=UDP_TIMEOUT) as lab:
        ser = lab.ser(nat_cfg(tmp_path, natping), tmp_path / "ser")
        register_phone(lab, tmp_path)
        assert binding_open(lab), lab.conntrack()
        registered = time.monotonic()
        if natping:
            # the keep-alives hold the binding past several timeouts
            assert wait_for(lambda: time.monotonic() - registered > UDP_TIMEOUT + 1.5, 10, 0.1)
            assert binding_open(lab), f"keep-alives did not hold the binding:\n{lab.conntrack()}\n{ser.log()}"
        else:
            assert wait_for(lambda: not binding_open(lab), 5 * UDP_TIMEOUT, 0.1), lab.conntrack()
        rc_caller = call_phone(lab, tmp_path)
        trace = sipp_trace(tmp_path / "phone")
        if natping:
            assert rc_caller == 0, sipp_trace(tmp_path / "caller") + ser.log() + lab.conntrack()
            assert "INVITE sip:phone@" in trace and "SIP/2.0 200 OK" in trace
        else:
            assert rc_caller != 0
            assert "INVITE" not in trace, trace
