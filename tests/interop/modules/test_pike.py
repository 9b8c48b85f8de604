"""pike against a real ``ser``: a flooding source is refused while another
one is served; the block is logged once and listed by ``pike_list``."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.modules.pike import BLOCKED, NEWLY_BLOCKED, OK, PikeTable
from tests.support import SerProcess, options_request

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

CFG = """\
fork=no
listen=udp:{host}:{port}
fifo="{fifo}"
fifo_dir="{workdir}/"
loadmodule "sl"
loadmodule "pike"
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", 5)
modparam("pike", "remove_latency", 4)
route {{
    if (!pike_check_req()) {{ break; }};
    sl_send_reply("200", "OK");
}}
"""


def answered(sp: SerProcess, src: str, count: int) -> int:
    """Send ``count`` OPTIONS from ``src`` at once; how many got a reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((src, 0))
        for _ in range(count):
            u.sendto(options_request(sp.host, sp.port, rport=True), (sp.host, sp.port))
        u.settimeout(0.5)
        got = 0
        try:
            while True:
                u.recv(65535)
                got += 1
        except TimeoutError:
            return got


def test_flooding_source_is_refused_while_others_are_served(ser_factory: StartSer) -> None:
    sp = ser_factory(CFG)
    flood = answered(sp, "127.0.0.1", 60)
    assert 1 <= flood <= 10  # at most one unit's allowance on each side of a boundary
    assert answered(sp, "127.0.0.2", 3) == 3
    assert sp.log().count("pike: 127.0.0.1 sends more than 5 requests in 2 s: blocked") == 1
    assert answered(sp, "127.0.0.1", 2) == 0  # still blocked
    listed = fifo_request(sp.fifo, "pike_list", reply_dir=f"{sp.workdir}/")
    assert listed == "200 ok\n127.0.0.1\n"


def test_table_unblocks_after_a_quiet_unit_and_forgets_silent_sources() -> None:
    t = PikeTable(unit=2, density=3, latency=10, max_sources=2)
    assert [t.check("a", 100.0) for _ in range(5)] == [OK, OK, OK, NEWLY_BLOCKED, BLOCKED]
    assert t.check("a", 102.5) == BLOCKED  # the previous unit was over the density
    assert t.check("a", 104.5) == OK  # 102-104 was quiet enough
    assert t.check("b", 104.6) == OK
    assert t.check("c", 104.7) == OK and "c" not in t.sources  # full: passes untracked
    assert t.check("c", 120.0) == OK and "c" in t.sources and "b" not in t.sources  # silent ones forgotten
