"""registrar/usrloc end to end: a real ``ser`` subprocess with a Python
routing script, real SIPp and sipsak, restarts with ``kill -9``, and the
RFC 4475 registrar torture messages."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from sipexpress import db
from tests.support import SerProcess, free_port, need_tool, run_sipp, udp_exchange, wait_for

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
from tests.support import RFC4475  # noqa: E402

# {port}/{workdir} are filled in by ser_factory; literal braces are doubled
SCRIPT = """
from sipexpress.script.pyroute import save, lookup, sl_send_reply, forward
{tm_import}

OPTIONS = {{"listen": "udp:{host}:{port}", "db_url": "sqlite:///{workdir}/ser.sqlite"}}
MODULES = ["sl", "usrloc", "registrar"{tm_module}]
MODPARAMS = [
    ("usrloc", "db_mode", {db_mode}),
    ("usrloc", "timer_interval", {timer}),
    ("registrar", "min_expires", 1),
]

async def request_route(ctx):
    m = ctx.msg
    if m.method == "REGISTER":
        await save(ctx, "location")
        return 0
    if m.method == "OPTIONS" and m.to.uri == "sip:{host}:{port}":
        sl_send_reply(ctx, 200, "OK")
        return 0
    if m.to.tag is not None:
        await forward(ctx)
        return 0
    rc = await lookup(ctx, "location")
    if rc < 0:
        sl_send_reply(ctx, 404, "Not Found " + str(rc))
        return 0
    if m.method == "INVITE" and {forward_invites}:
        await {relay}(ctx)
        return 0
    sl_send_reply(ctx, 302, "Moved Temporarily")
    return 0
"""


def start_ser(
    ser_factory, db_mode: int = 0, timer: int = 60, forward_invites: bool = False, tm: bool = False
) -> SerProcess:  # type: ignore[no-untyped-def]
    sp: SerProcess = ser_factory(
        SCRIPT,
        suffix=".py",
        start=False,
        db_mode=db_mode,
        timer=timer,
        forward_invites=forward_invites,
        tm_import="from sipexpress.script.pyroute import t_relay" if tm else "",
        tm_module=', "tm"' if tm else "",
        relay="t_relay" if tm else "forward",
    )
    if db_mode:
        asyncio.run(_create(f"sqlite:///{sp.workdir}/ser.sqlite"))
    sp.start()
    return sp


def location_rows(db_file: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        return int(conn.execute("SELECT count(*) FROM location").fetchone()[0])


async def _create(url: str) -> None:
    await db.create_all(url)
    await db.dispose_engines()


def register(sp: SerProcess, user: str, contact: str, expires: int = 3600, cseq: int = 1) -> bytes:
    msg = (
        f"REGISTER sip:{sp.host}:{sp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{sp.host}>;tag=r{cseq}\r\n"
        f"To: <sip:{user}@{sp.host}>\r\n"
        f"Call-ID: reg-{user}@test\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <{contact}>\r\n"
        f"Expires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    r = udp_exchange(msg, sp.host, sp.port)
    assert r is not None, sp.log()
    return r


def where(sp: SerProcess, user: str) -> bytes:
    """A MESSAGE to the user: 302 with the registered contacts, or 404."""
    msg = (
        f"MESSAGE sip:{user}@{sp.host}:{sp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{sp.host}>;tag=p\r\n"
        f"To: <sip:{user}@{sp.host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    r = udp_exchange(msg, sp.host, sp.port)
    assert r is not None, sp.log()
    return r


def test_sipsak_registers_and_is_found(ser_factory) -> None:  # type: ignore[no-untyped-def]
    sipsak = need_tool("sipsak")
    sp = start_ser(ser_factory)
    p = subprocess.run(
        [sipsak, "-U", "-C", f"sip:me@127.0.0.1:{sp.port}", "-s", f"sip:user@127.0.0.1:{sp.port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stdout + p.stderr + sp.log()
    r = where(sp, "user")
    assert r.startswith(b"SIP/2.0 302 "), r
    assert (
        f"Contact: <sip:me@127.0.0.1:{sp.port}>".encode() in r or f"sip:me@127.0.0.1:{sp.port}".encode() in r
    )


@pytest.mark.parametrize("relay", ["forward", "t_relay"])
def test_sipp_registers_many_users_then_calls_them(ser_factory, tmp_path: Path, relay: str) -> None:  # type: ignore[no-untyped-def]
    """Distinct users register (SIPp, injection file), then each is called
    through lookup() and a stateless forward() or tm's t_relay()."""
    need_tool("sipp")
    n = 200
    sp = start_ser(ser_factory, forward_invites=True, tm=relay == "t_relay")
    uas_port = free_port()
    csv = tmp_path / "users.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"user{i:04d};{uas_port}\n" for i in range(n)))
    uas = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(n), "-nostdin"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        res = run_sipp(
            [
                f"127.0.0.1:{sp.port}",
                "-sf",
                str(HERE / "scenarios" / "register_users.xml"),
                "-inf",
                str(csv),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                str(n),
                "-r",
                "200",
                "-timeout",
                "30",
            ],
            cwd=tmp_path,
        )
        assert res.ok, res.stdout[-3000:] + res.stderr + sp.log()[-3000:]
        # every user is now found, at its own contact
        for i in (0, n // 2, n - 1):
            r = where(sp, f"user{i:04d}")
            assert (
                f"<sip:user{i:04d}@127.0.0.1:{uas_port}>".encode() in r
                or f"sip:user{i:04d}@127.0.0.1:{uas_port}".encode() in r
            ), r
        calls = run_sipp(
            [
                f"127.0.0.1:{sp.port}",
                "-sf",
                str(HERE / "scenarios" / "call_users.xml"),
                "-inf",
                str(csv),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                str(n),
                "-r",
                "100",
                "-timeout",
                "40",
            ],
            cwd=tmp_path,
        )
        assert calls.ok, calls.stdout[-3000:] + calls.stderr + sp.log()[-3000:]
        assert uas.wait(10) == 0  # the UAS answered all n calls
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(10)


@pytest.mark.parametrize("db_mode", [1, 2])
def test_contacts_survive_kill9(ser_factory, db_mode: int) -> None:  # type: ignore[no-untyped-def]
    sp = start_ser(ser_factory, db_mode=db_mode, timer=1)
    assert b" 200 OK" in register(sp, "alice", "sip:alice@10.0.0.1:5060", 3600)
    registered = time.monotonic()
    assert b" 200 OK" in register(sp, "shortlived", "sip:s@10.0.0.2", 2)
    db_file = sp.workdir / "ser.sqlite"
    assert wait_for(lambda: location_rows(db_file) == 2, 10.0)  # write-back: at least one flush
    sp.stop(signal.SIGKILL)
    # shortlived's 2 s run out while ser is down: the passing time is the behaviour
    time.sleep(max(0.0, registered + 3.0 - time.monotonic()))
    sp.start()
    r = where(sp, "alice")
    assert r.startswith(b"SIP/2.0 302"), r
    assert b"sip:alice@10.0.0.1:5060" in r
    r = where(sp, "shortlived")
    assert r.startswith(b"SIP/2.0 404 Not Found -3"), r


def wait_started(sp: SerProcess, timeout: float = 10.0) -> None:
    """The core answers as soon as its sockets are bound, before start-up
    completes and before SIGTERM is handled; wait for the 'started' line of
    this process so that a SIGTERM means a clean stop."""
    assert sp.proc is not None
    mark = f"started (pid {sp.proc.pid})"
    deadline = time.monotonic() + timeout
    while mark not in sp.log():
        assert time.monotonic() < deadline, sp.log()
        time.sleep(0.05)


def test_write_back_loses_only_unflushed(ser_factory) -> None:  # type: ignore[no-untyped-def]
    sp = start_ser(ser_factory, db_mode=2, timer=30)
    assert b" 200 OK" in register(sp, "bob", "sip:bob@10.0.0.1")
    sp.stop(signal.SIGKILL)  # before the first flush
    sp.start()
    assert where(sp, "bob").startswith(b"SIP/2.0 404 Not Found -3")
    assert b" 200 OK" in register(sp, "bob", "sip:bob@10.0.0.1")
    wait_started(sp)
    sp.stop()  # a clean stop flushes
    sp.start()
    assert where(sp, "bob").startswith(b"SIP/2.0 302"), sp.log()


def _torture(sp: SerProcess, name: str) -> bytes:
    data = (RFC4475 / f"{name}.dat").read_bytes()
    r = udp_exchange(data, sp.host, sp.port)
    assert r is not None, sp.log()
    return r


def test_rfc4475_registrar_cases(ser_factory) -> None:  # type: ignore[no-untyped-def]
    sp = start_ser(ser_factory)
    # 3.3.8 regaut01: unknown Authorization scheme; a registrar that does not
    # authenticate ignores it: 200, no binding added (no Contact)
    r = _torture(sp, "regaut01")
    assert r.startswith(b"SIP/2.0 200 OK\r\n"), r
    assert b"\r\nContact:" not in r
    # 3.3.13 regescrt: the escaped Route header stays part of the stored
    # contact and is returned unchanged
    r = _torture(sp, "regescrt")
    assert r.startswith(b"SIP/2.0 200 OK\r\n"), r
    assert b"Contact: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=" in r
    # 3.1.2.13 regbadct: a URI with '?' outside <> is invalid: 400
    r = _torture(sp, "regbadct")
    assert r.startswith(b"SIP/2.0 400 "), r
    # and regbadct changed nothing: the binding from regescrt is the only one
    r = where(sp, "user")
    assert r.startswith(b"SIP/2.0 302"), r
    contact = [ln for ln in r.split(b"\r\n") if ln.lower().startswith(b"contact:")]
    # a URI with "?" is written in <> so its headers are not read as Contact params
    assert contact == [b"Contact: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>"], r


CFG = """
listen=udp:{host}:{port}
loadmodule "/usr/local/lib/ser/modules/sl.so"
loadmodule "/usr/local/lib/ser/modules/usrloc.so"
loadmodule "/usr/local/lib/ser/modules/registrar.so"
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "db_url", "sqlite:///{workdir}/ser.sqlite")
route {{
    if (method=="REGISTER") {{
        save("location");
        break;
    }};
    if (uri==myself & method=="OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        break;
    }};
    sl_send_reply("302", "Moved");
}}
"""


def test_ser_cfg_write_through_restart(ser_factory) -> None:  # type: ignore[no-untyped-def]
    """The same through a ser.cfg: save()/lookup() fix-ups register the
    table before start-up, which loads it from the database."""
    sp: SerProcess = ser_factory(CFG, start=False)
    asyncio.run(_create(f"sqlite:///{sp.workdir}/ser.sqlite"))
    sp.start()
    assert b" 200 OK" in register(sp, "carol", "sip:carol@10.0.0.7:5062", 600)
    sp.stop(signal.SIGKILL)
    sp.start()
    r = where(sp, "carol")
    assert r.startswith(b"SIP/2.0 302 Moved"), r
    assert b"sip:carol@10.0.0.7:5062" in r
    assert where(sp, "dave").startswith(b"SIP/2.0 404")
