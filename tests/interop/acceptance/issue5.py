"""Issue 5's acceptance run, shared by the tests (test_issue5.py) and the
full-size bench (bench/acceptance_bench.py):

1. provision N subscribers in bulk (SQLAlchemy Core, ha1/ha1b computed as
   serctl does);
2. start ``ser`` with the shipped etc/ser.cfg, its commented auth lines
   enabled (auth + auth_db, ``www_authorize``/``www_challenge`` for
   REGISTER), usrloc and auth_db on the test database;
3. SIPp registers every user with digest auth (``[authentication]`` from
   an injection CSV), each Contact pointing at one SIPp UAS;
4. SIPp places calls to a sample of the users through the default script
   (record-routed INVITE/ACK/BYE), the UAS answers all of them;
5. the FIFO (``ul_dump``, ``ul_show_contact``) and, in db_mode 1, the
   ``location`` table show every registration.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import calc_ha1, calc_ha1b, create_all, dispose_engines, run, schema
from sipexpress.mgmt.client import fifo_request
from tests.support import SerProcess, free_port, need_tool, run_sipp, shipped_config, udp_bound, wait_for

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).parent / "scenarios"
REALM = "iptel.org"  # the realm etc/ser.cfg's commented www_authorize uses


def short_port() -> int:
    """A free UDP+TCP port below 10000.  sipsak 0.9.8.1 cuts a five-digit
    port in the -s URI to four digits in the Request-URI, From and To it
    builds (sip:u@127.0.0.1:55662 -> sip:127.0.0.1:5566), so a proxy that
    sipsak talks to must listen on a port of at most four digits."""
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(7100, 9990)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below 10000")


def user_name(i: int) -> str:
    return f"u{i:05d}"


def password(i: int) -> str:
    return f"pw{i}x"


def acceptance_cfg(db_url: str, db_mode: int, calculate_ha1: bool) -> str:
    """etc/ser.cfg as shipped, moved to a free port and a private FIFO, with
    its commented auth lines enabled and usrloc/auth_db on ``db_url``.
    Returns ser_factory text (``{port}``/``{fifo}`` placeholders)."""
    text = shipped_config("@PORT@", "@FIFO@")

    def sub(pattern: str, repl: str) -> None:
        nonlocal text
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n >= 1, f"etc/ser.cfg changed: {pattern!r} not found"

    sub(r'^#(loadmodule "auth(_db)?")', r"\1")
    sub(r'^modparam\("usrloc", "db_mode",\s+0\)', f'modparam("usrloc", "db_mode", {db_mode})')
    sub(r'^#(modparam\("usrloc\|auth_db", "db_url", )"[^"]*"\)', rf'\1"{db_url}")')
    if calculate_ha1:
        sub(r'^#(modparam\("auth_db", "calculate_ha1", yes\))', r"\1")
        sub(r'^#(modparam\("auth_db", "password_column", "password"\))', r"\1")
    # the www_authorize/www_challenge block of the REGISTER branch
    sub(r"^#(\t\t\t(if \(!www_authorize|\twww_challenge|\tbreak;|\};))", r"\1")
    assert 'www_authorize("iptel.org", "subscriber")' in text
    return text.replace("{", "{{").replace("}", "}}").replace("@PORT@", "{port}").replace("@FIFO@", "{fifo}")


def provision(url: str, n: int, extra: Sequence[tuple[str, str]] = ()) -> float:
    """Create the schema and bulk-insert n subscribers (+ ``extra`` (user,
    password) pairs) in realm REALM; returns the seconds it took."""
    users = [(user_name(i), password(i)) for i in range(n)] + list(extra)
    rows = [
        {
            "username": u,
            "domain": REALM,
            "password": p,
            "ha1": calc_ha1(u, REALM, p),
            "ha1b": calc_ha1b(u, REALM, p),
            "email_address": f"{u}@{REALM}",
            "phplib_id": hashlib.md5(f"{u}@{REALM}".encode()).hexdigest(),
        }
        for u, p in users
    ]

    async def go() -> float:
        t0 = time.monotonic()
        try:
            await create_all(url)
            for k in range(0, len(rows), 5000):

                async def insert(
                    conn: AsyncConnection, chunk: list[dict[str, str]] = rows[k : k + 5000]
                ) -> None:
                    await conn.execute(schema.subscriber.insert(), chunk)

                await run(url, insert, 120)
        finally:
            await dispose_engines()
        return time.monotonic() - t0

    return asyncio.run(go())


def location_rows(url: str) -> int:
    """Rows in the database's ``location`` table."""

    async def go() -> int:
        try:
            return int(await run(url, _count_location, 60))
        finally:
            await dispose_engines()

    return asyncio.run(go())


async def _count_location(conn: AsyncConnection) -> int:
    r = await conn.execute(select(func.count()).select_from(schema.location))
    return int(r.scalar_one())


def _counter(stdout: str, name: str) -> int:
    value = 0
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == name:
            value = int((parts[-1] or parts[-2]).split()[0])
    return value


def wait_started(sp: SerProcess, timeout: float = 15.0) -> None:
    """The core answers once its sockets are bound; the modules' start-up
    (database checks, usrloc preload, management interfaces) may still
    fail after that: wait for this process's "started" line."""
    assert sp.proc is not None
    mark = f"started (pid {sp.proc.pid})"
    deadline = time.monotonic() + timeout
    while mark not in sp.log():
        assert sp.alive() and time.monotonic() < deadline, sp.log()[-3000:]
        time.sleep(0.05)


def register_users(
    sp: SerProcess, n: int, rate: int, uas_port: int, workdir: Path
) -> tuple[int, int, float, str]:
    """SIPp REGISTERs users 0..n-1 with digest auth; (ok, failed, seconds, stdout)."""
    csv = workdir / "register.csv"
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{user_name(i)};[authentication username={user_name(i)} password={password(i)}];{REALM};{uas_port}\n"
            for i in range(n)
        )
    )
    t0 = time.monotonic()
    res = run_sipp(
        [
            f"{sp.host}:{sp.port}",
            "-sf", str(SCENARIOS / "register_auth_contact.xml"),
            "-inf", str(csv),
            "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
            "-m", str(n), "-r", str(rate), "-l", str(max(rate * 4, 100)),
            "-timeout", str(n // rate + 60),
        ],
        timeout=n / rate + 120,
        cwd=workdir,
    )  # fmt: skip
    wall = time.monotonic() - t0
    return (
        _counter(res.stdout, "Successful call"),
        _counter(res.stdout, "Failed call"),
        wall,
        res.stdout + res.stderr,
    )


def call_users(
    sp: SerProcess, users: list[str], rate: int, uas_port: int, workdir: Path
) -> tuple[int, int, float, str, int | None]:
    """A SIPp UAS on uas_port answers; SIPp calls every user in ``users``
    through the proxy.  (ok, failed, seconds, stdout, UAS exit code)."""
    exe = need_tool("sipp")
    csv = workdir / "call.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{u};\n" for u in users))
    uas_dir = workdir / "uas"
    uas_dir.mkdir(exist_ok=True)
    uas = subprocess.Popen(
        [
            exe, "-sf", str(ROOT / "tests" / "data" / "sipp" / "uas_rr.xml"),
            "-i", "127.0.0.1", "-p", str(uas_port), "-mp", str(free_port()),
            "-m", str(len(users)), "-nostdin", "-timeout", str(len(users) // rate + 60),
        ],
        cwd=uas_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: uas.poll() is not None or udp_bound(uas_port), 10.0)
        t0 = time.monotonic()
        res = run_sipp(
            [
                f"{sp.host}:{sp.port}",
                "-sf", str(SCENARIOS / "call_users_rr.xml"),
                "-inf", str(csv),
                "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
                "-m", str(len(users)), "-r", str(rate),
                "-timeout", str(len(users) // rate + 60),
            ],
            timeout=len(users) / rate + 120,
            cwd=workdir,
        )  # fmt: skip
        wall = time.monotonic() - t0
        try:
            uas_rc: int | None = uas.wait(15)
        except subprocess.TimeoutExpired:
            uas_rc = None
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(10)
    return (
        _counter(res.stdout, "Successful call"),
        _counter(res.stdout, "Failed call"),
        wall,
        res.stdout,
        uas_rc,
    )


def fifo(sp: SerProcess, cmd: str, params: list[str] | None = None, timeout: float = 30.0) -> str:
    # the default script sets no fifo_dir: reply FIFOs live in /tmp/
    return fifo_request(sp.fifo, cmd, params, timeout=timeout)


def dump_aors(text: str) -> set[str]:
    """The AORs of ``ul_dump``'s location table."""
    return set(re.findall(r"(?m)^aor   : '([^']*)'$", text.split("---Domain---\nname : 'aliases'")[0]))


def sipsak_register(sp: SerProcess, user: str, pw: str, contact: str) -> subprocess.CompletedProcess[str]:
    """``sipsak -U -C CONTACT -a PW -s sip:USER@proxy``: usrloc mode, REGISTER
    only (sipsak refuses -C together with -I/-M), digest auth on the 401.
    ``-u USER`` too: without it sipsak 0.9.8.1 sends ``username="USER@"``
    in its Authorization header, which no subscriber matches; and ``-x
    3600``: a longer binding than sipsak's own 15 s (raised to min_expires, 60)."""
    exe = need_tool("sipsak")
    args = [exe, "-U", "-C", contact, "-u", user, "-a", pw, "-s", f"sip:{user}@{sp.host}:{sp.port}"]
    args += ["-x", "3600", "-H", "127.0.0.1"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def sipsak_options_via_proxy(sp: SerProcess, user: str, lport: int) -> subprocess.CompletedProcess[str]:
    """sipsak, listening on ``lport`` (the contact it registered), sends an
    OPTIONS to ``sip:USER@proxy``: the default script looks the user up and
    relays the request to the registered contact -- sipsak itself, which
    prints it as "message received".  (sipsak 0.9.8.1's own find-me modes
    are unusable here: ``-U -I`` exits 2 before sending anything, ``-U -M``
    with ``-u`` crashes, and refuses ``-C``.)  Exit status 1: what came
    back is a request, not a 2xx."""
    exe = need_tool("sipsak")
    args = [exe, "-l", str(lport), "-s", f"sip:{user}@{sp.host}:{sp.port}", "-H", "127.0.0.1", "-vv"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)
