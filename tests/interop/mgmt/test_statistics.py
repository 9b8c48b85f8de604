"""Statistics after SIPp traffic with known counts: ``/metrics`` (parsed
with prometheus-client's own parser), JSON-RPC ``stats.get_statistics``
and ``serctl stats`` all say what SIPp did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipexpress.mgmt.client import RpcError, rpc_call
from tests.support import SIPP_SCENARIOS, SerProcess, free_port, need_tool, run_sipp

pytestmark = pytest.mark.interop

ROUTES = """
from sipexpress.script.pyroute import log, save, sl_send_reply, t_relay
OPTIONS = {{"listen": "udp:{host}:{port}", "fifo": "{fifo}", "fifo_dir": "{workdir}/", "jsonrpc_http": "127.0.0.1:{rpc}",
           "sip_warning": 0, "log_format": "json"}}
MODULES = ["sl", "tm", "usrloc", "registrar"]

async def request_route(ctx):
    method = ctx.msg.method
    if method == "REGISTER":
        return await save(ctx, "location")
    if method == "OPTIONS" and "@" not in ctx.ruri:
        return sl_send_reply(ctx, 200, "OK")
    ctx.set_ruri("sip:callee@{host}:{uas}")
    relayed = await t_relay(ctx)
    if method == "INVITE":
        log(ctx, -1, "relayed")
    return relayed
"""

CALLS = 20
REGISTRATIONS = 15
PROBES = 12
TIMED_INVITES = (CALLS + 15) // 16  # the 1st, 17th ... request of a method is timed


def sipp_client(scenario: list[str], ser: SerProcess, calls: int) -> None:
    res = run_sipp(
        [
            *scenario,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            f"127.0.0.1:{ser.port}",
            "-m",
            str(calls),
            "-r",
            "50",
            "-timeout",
            "30s",
            "-timeout_error",
        ],
        timeout=60,
    )
    assert res.ok and res.stats.get("Successful call") == str(calls), res.stdout[-2000:] + ser.log()[-2000:]


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def serctl_stats(ser: SerProcess, *selectors: str) -> dict[str, str]:
    env = dict(os.environ, SER_FIFO=ser.fifo, SER_FIFO_DIR=f"{ser.workdir}/")
    p = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", "stats", *selectors],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    return dict(line.split(" = ") for line in p.stdout.splitlines())


def test_counts_after_sipp_traffic_agree_everywhere(ser_factory: Callable[..., SerProcess]) -> None:
    sipp = need_tool("sipp")
    rpc, uas_port = free_port(), free_port()
    url = f"http://127.0.0.1:{rpc}/"
    ser = ser_factory(ROUTES, suffix=".py", rpc=rpc, uas=uas_port)
    # ser's readiness probes were counted too: start from zero
    assert rpc_call("stats.reset_statistics", ["all"], url=url)["reset"] > 10

    uas = subprocess.Popen(
        [
            *(sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-mp", str(free_port())),
            *("-m", str(CALLS), "-nostdin", "-timeout", "30"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sipp_client(["-sn", "uac"], ser, CALLS)
        assert uas.wait(30) == 0
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    sipp_client(["-sf", str(SIPP_SCENARIOS / "register_users.xml")], ser, REGISTRATIONS)
    sipp_client(["-sf", str(SIPP_SCENARIOS / "options.xml")], ser, PROBES)

    # what SIPp did: each call INVITE (180, 200), ACK, BYE (200); REGISTERs
    # and OPTIONS answered 200 statelessly
    expected = {
        "core:received_requests_invite": CALLS,
        "core:received_requests_ack": CALLS,
        "core:received_requests_bye": CALLS,
        "core:received_requests_register": REGISTRATIONS,
        "core:received_requests_options": PROBES,
        "core:received_requests": 3 * CALLS + REGISTRATIONS + PROBES,
        "core:received_replies_1xx": CALLS,
        "core:received_replies_2xx": 2 * CALLS,
        "core:forwarded_replies": 3 * CALLS,
        "tm:total": 2 * CALLS,
        "tm:replies_2xx": 2 * CALLS,
        "sl:replies_200": REGISTRATIONS + PROBES,
        "usrloc:contacts_location": REGISTRATIONS,
        "usrloc:users_location": REGISTRATIONS,
        "registrar:accepted_registrations": REGISTRATIONS,
        "core:request_processing_seconds_invite_count": TIMED_INVITES,
    }
    lines = rpc_call("stats.get_statistics", ["all"], url=url)
    by_rpc = dict(line.split(" = ") for line in lines)
    assert {k: int(by_rpc[k]) for k in expected} == expected
    assert by_rpc["tm:current"] == by_rpc["tm:waiting"]  # nothing in flight but wait-state leftovers

    by_serctl = serctl_stats(ser)
    assert {k: int(by_serctl[k]) for k in expected} == expected
    assert serctl_stats(ser, "registrar:") == {
        "registrar:accepted_registrations": str(REGISTRATIONS),
        "registrar:rejected_registrations": "0",
    }

    m = metrics(url)
    assert m[("sipexpress_core_received_requests_total", (("method", "INVITE"),))] == CALLS
    assert m[("sipexpress_core_received_requests_total", (("method", "OPTIONS"),))] == PROBES
    assert m[("sipexpress_core_received_requests_total", (("method", "REGISTER"),))] == REGISTRATIONS
    assert m[("sipexpress_core_received_replies_total", (("class", "1xx"),))] == CALLS
    assert m[("sipexpress_tm_replies_total", (("class", "2xx"),))] == 2 * CALLS
    assert m[("sipexpress_usrloc_contacts", (("domain", "location"),))] == REGISTRATIONS
    assert m[("sipexpress_registrar_accepted_registrations_total", ())] == REGISTRATIONS
    count = ("sipexpress_core_request_processing_seconds_count", (("method", "INVITE"),))
    inf = ("sipexpress_core_request_processing_seconds_bucket", (("le", "+Inf"), ("method", "INVITE")))
    assert m[count] == m[inf] == TIMED_INVITES
    assert m[("sipexpress_tm_transaction_duration_seconds_count", (("class", "2xx"),))] == 2 * CALLS
    assert m[("sipexpress_core_resident_memory_bytes", ())] > 10e6

    # the old SER commands read the same registry
    t_stats = rpc_call("t_stats", [], url=url)
    assert t_stats["total"] == 2 * CALLS and t_stats["2xx"] == 2 * CALLS
    assert rpc_call("sl_stats", [], url=url)["200"] == REGISTRATIONS + PROBES
    assert serctl_stats(ser, "--reset", "sl:") == {}
    assert serctl_stats(ser, "sl:replies") == {"sl:replies": "0", "sl:replies_200": "0"}
    assert rpc_call("sl_stats", [], url=url)["200"] == 0  # SER's command reads the registry
    assert rpc_call("ul_stats", [], url=url) == [{"domain": "location", "users": REGISTRATIONS, "expired": 0}]

    # reset: counters start again, gauges stay
    rpc_call("stats.reset_statistics", ["core:", "usrloc:"], url=url)
    after = dict(
        line.split(" = ") for line in rpc_call("stats.get_statistics", ["core:", "usrloc:"], url=url)
    )
    assert after["core:received_requests_invite"] == "0"
    assert after["usrloc:contacts_location"] == str(REGISTRATIONS)
    with pytest.raises(RpcError) as e:
        rpc_call("stats.get_statistics", ["nosuch"], url=url)
    assert e.value.data["ser_code"] == 404

    # JSON lines; a line written while handling a message names its Call-ID and transaction
    records = [json.loads(x) for x in Path(ser.log_path).read_text().splitlines() if x.startswith("{")]
    relayed = [r for r in records if r["message"] == "relayed"]
    assert len(relayed) == CALLS and len({r["call_id"] for r in relayed}) == CALLS
    assert all(r["level"] == "ERROR" and r["logger"] == "sipexpress.script" for r in relayed)
    assert all(r["transaction"].count(":") == 1 for r in relayed)
    started = next(r for r in records if "started" in r["message"])
    assert "call_id" not in started


def test_metrics_auth_is_configurable(ser_factory: Callable[..., SerProcess]) -> None:
    rpc = free_port()
    routes = ROUTES.replace(
        '"sip_warning": 0,', '"sip_warning": 0, "jsonrpc_secret": "s3", "jsonrpc_metrics_auth": 1,'
    )
    ser = ser_factory(routes, suffix=".py", rpc=rpc, uas=free_port())
    url = f"http://127.0.0.1:{rpc}/metrics"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 401
    req = urllib.request.Request(url, headers={"Authorization": "Bearer s3"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert b"sipexpress_core_received_requests_total" in r.read()
    assert ser.alive()
