"""Digest authentication end to end: a ``ser`` subprocess doing
``www_authorize``/``www_challenge`` + ``save("location")``, real SIPp
(``[authentication]`` with users from an injection file) and sipsak
(``-a password``), on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipexpress.db import add_user, create_all, dispose_engines
from tests.support import SerProcess, need_tool, run_sipp
from tests.unit.db.dbfixtures import cleanup, new_db_url

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "scenarios"
DOMAIN = "iptel.org"

CFG = """\
debug=3
fork=no
log_stderror=yes
listen=udp:{host}:{port}
fifo="{fifo}"
fifo_dir="{workdir}/"
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "auth"
loadmodule "auth_db"
loadmodule "domain"
modparam("auth_db", "db_url", "{db_url}")
modparam("auth_db", "calculate_ha1", {calc})
modparam("auth_db", "password_column", "{pwcol}")
modparam("domain", "db_url", "{db_url}")
modparam("domain", "db_mode", 1)
modparam("usrloc", "db_mode", 0)

route {{
    if (method=="REGISTER") {{
        if (!www_authorize("", "subscriber")) {{
            www_challenge("", "1");
            break;
        }};
        consume_credentials();
        save("location");
        break;
    }};
    sl_send_reply("200", "OK");
}}
"""

PYROUTE = """\
from sipexpress.script.pyroute import save, sl_send_reply, www_authorize, www_challenge

OPTIONS = {{"listen": "udp:{host}:{port}", "debug": 3, "fifo": "{fifo}", "fifo_dir": "{workdir}/"}}
MODULES = ["sl", "usrloc", "registrar", "auth", "auth_db"]
MODPARAMS = [("auth_db", "db_url", "{db_url}"), ("auth", "nonce_expire", 60)]


async def request_route(ctx):
    if ctx.msg.method == "REGISTER":
        r = await www_authorize(ctx, "{realm}", "subscriber")
        if r == 0:
            return 0
        if r < 0:
            return www_challenge(ctx, "{realm}", "1")
        return await save(ctx, "location")
    return sl_send_reply(ctx, 200, "OK")
"""


def prepare_db(url: str, users: list[tuple[str, str, str]], domains: list[str] = ()) -> None:  # type: ignore[assignment]
    async def go() -> None:
        from sqlalchemy import insert

        from sipexpress.db import run, schema

        try:
            await create_all(url)
            for u, d, p in users:
                await add_user(url, u, d, p)
            if domains:
                await run(url, lambda c: c.execute(insert(schema.domain), [{"domain": d} for d in domains]))
        finally:
            await dispose_engines()

    asyncio.run(go())


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = new_db_url(request.param, tmp_path)
    yield url
    asyncio.run(cleanup(url))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[str]:
    url = new_db_url("sqlite", tmp_path)
    yield url


def fifo_cmd(sp: SerProcess, cmd: str, params: list[str] | None = None, timeout: float = 5.0) -> str:
    """One FIFO request (fifo.md §2) and its reply text."""
    name = f"reply_{uuid.uuid4().hex[:8]}"
    path = sp.workdir / name
    os.mkfifo(path)
    try:
        body = f":{cmd}:{name}\n" + "".join(p + "\n" for p in params or []) + "\n"
        fd = os.open(sp.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, body.encode())
        finally:
            os.close(fd)
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        out = b""
        deadline = time.monotonic() + timeout
        got_data = False
        while time.monotonic() < deadline:
            try:
                chunk = os.read(rfd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                out += chunk
                got_data = True
            elif chunk == b"" and got_data:
                break
            else:
                time.sleep(0.02)
        os.close(rfd)
        return out.decode()
    finally:
        path.unlink(missing_ok=True)


def users_csv(path: Path, users: list[tuple[str, str, str]]) -> Path:
    lines = ["SEQUENTIAL"] + [f"{u};[authentication username={u} password={p}];{d}" for u, d, p in users]
    path.write_text("\n".join(lines) + "\n")
    return path


def sipsak(
    sp: SerProcess, user: str, password: str, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = need_tool("sipsak")
    args = [exe, "-U", "-C", f"sip:{user}@127.0.0.1:9", "-s", f"sip:{user}@{sp.host}:{sp.port}"]
    args += ["-u", user, "-a", password, "-x", "3600", "-H", "127.0.0.1", *(extra or [])]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


StartSer = Callable[..., SerProcess]


def sipp_counter(stdout: str, name: str) -> int | None:
    """The cumulative value of a counter on SIPp's final statistics screen
    (``  Successful call  |  0  |  25``)."""
    value = None
    for line in stdout.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[0] == name:
            value = int(parts[-1].split()[0])
    return value


# ---------------------------------------------------------------------------


def test_sipp_registers_users_from_csv(ser_factory: StartSer, backend_url: str, tmp_path: Path) -> None:
    users = [(f"user{i:03d}", DOMAIN, f"pw{i}x") for i in range(25)]
    prepare_db(backend_url, users, [DOMAIN])
    sp = ser_factory(CFG, db_url=backend_url, calc=0, pwcol="ha1")
    res = run_sipp(
        [
            f"{sp.host}:{sp.port}",
            "-sf",
            str(SCENARIOS / "register_auth.xml"),
            "-inf",
            str(users_csv(tmp_path / "users.csv", users)),
            "-m",
            str(len(users)),
            "-r",
            "50",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-timeout",
            "30",
        ],
        timeout=60,
        cwd=tmp_path,
    )
    assert res.ok, res.stdout[-2000:] + res.stderr[-2000:]
    assert sipp_counter(res.stdout, "Successful call") == len(users), res.stdout[-1500:]
    dump = fifo_cmd(sp, "ul_dump")
    assert dump.startswith("200")
    for u, _, _ in users:
        assert f"'{u}" in dump, u
    # the domain module (db_mode 1) read the same database (fifo.md §6.4)
    from sipexpress.modules.domain import ser_hash

    assert fifo_cmd(sp, "domain_dump") == f"200 OK\n{ser_hash(DOMAIN):4d} {DOMAIN}\n"
    assert fifo_cmd(sp, "domain_reload") == "200 OK\n"


def test_sipp_wrong_password_never_gets_200(ser_factory: StartSer, sqlite_db: str, tmp_path: Path) -> None:
    prepare_db(sqlite_db, [("jiri", DOMAIN, "secret")], [DOMAIN])
    sp = ser_factory(CFG, db_url=sqlite_db, calc=0, pwcol="ha1")
    res = run_sipp(
        [
            f"{sp.host}:{sp.port}",
            "-sf",
            str(SCENARIOS / "register_auth.xml"),
            "-inf",
            str(users_csv(tmp_path / "users.csv", [("jiri", DOMAIN, "wrong")])),
            "-m",
            "3",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-timeout",
            "20",
        ],
        timeout=40,
        cwd=tmp_path,
    )
    assert not res.ok
    assert sipp_counter(res.stdout, "Successful call") == 0, res.stdout[-1500:]
    assert sipp_counter(res.stdout, "Failed call") == 3
    assert "wrong password/response of 'jiri'@'iptel.org'" in sp.log()
    assert "'jiri" not in fifo_cmd(sp, "ul_dump")


def test_sipsak_registers_with_password(ser_factory: StartSer, backend_url: str) -> None:
    prepare_db(backend_url, [("jiri", DOMAIN, "secret"), ("alice", DOMAIN, "wonder")], [DOMAIN])
    # sipsak puts the server address in To, so the realm is given explicitly
    # and H(A1) is computed from the clear-text password column
    cfg = CFG.replace('www_authorize("", ', f'www_authorize("{DOMAIN}", ').replace(
        'www_challenge("", ', f'www_challenge("{DOMAIN}", '
    )
    sp = ser_factory(cfg, db_url=backend_url, calc=1, pwcol="password")
    ok = sipsak(sp, "jiri", "secret")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = sipsak(sp, "alice", "nope")
    assert bad.returncode != 0
    log = sp.log()
    assert "wrong password/response of 'alice'@'iptel.org'" in log
    dump = fifo_cmd(sp, "ul_dump")
    assert "'jiri" in dump and "'alice" not in dump


def test_python_routing_script(ser_factory: StartSer, sqlite_db: str, tmp_path: Path) -> None:
    prepare_db(sqlite_db, [("jiri", "127.0.0.1", "secret")])
    sp = ser_factory(PYROUTE, suffix=".py", db_url=sqlite_db, realm="")
    # realm "" = the To host = the server address sipsak uses
    ok = sipsak(sp, "jiri", "secret")
    assert ok.returncode == 0, ok.stdout + ok.stderr + sp.log()
    bad = sipsak(sp, "ghost", "secret")
    assert bad.returncode != 0
    assert "no such user 'ghost'" in sp.log()


PROXY_CFG = """\
debug=3
fork=no
log_stderror=yes
listen=udp:{host}:{port}
loadmodule "sl"
loadmodule "auth"
loadmodule "auth_db"
loadmodule "uri"
loadmodule "uri_db"
loadmodule "group"
loadmodule "domain"
modparam("auth_db|uri_db|group|domain", "db_url", "{db_url}")
modparam("auth", "secret", "shared-secret")

route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    if (!is_uri_host_local()) {{ sl_send_reply("403", "Not local"); break; }};
    if (!is_from_local()) {{ sl_send_reply("403", "From not local"); break; }};
    if (!proxy_authorize("", "subscriber")) {{
        proxy_challenge("", "1");
        break;
    }};
    if (!check_from()) {{ sl_send_reply("403", "Use From=ID"); break; }};
    consume_credentials();
    if (uri_param("user", "phone")) {{ sl_send_reply("298", "Phone"); break; }};
    if (is_user_in("Credentials", "voicemail") && is_user("jiri")) {{
        sl_send_reply("299", "Voicemail jiri");
        break;
    }};
    if (!does_uri_exist()) {{ sl_send_reply("404", "Not Found"); break; }};
    sl_send_reply("200", "Would relay");
}}
"""


def test_cfg_proxy_checks(ser_factory: StartSer, sqlite_db: str) -> None:
    """Every function of the area from a compiled ser.cfg, driven over UDP."""
    from sqlalchemy import insert

    from sipexpress.db import run, schema
    from sipexpress.sip.message import SipMessage
    from tests.support import udp_exchange
    from tests.unit.auth.conftest import authorization, request

    prepare_db(sqlite_db, [("jiri", DOMAIN, "secret"), ("alice", DOMAIN, "wonder")], [DOMAIN])

    async def grp() -> None:
        try:
            await run(
                sqlite_db, lambda c: c.execute(insert(schema.grp).values(username="jiri", grp="voicemail"))
            )
        finally:
            await dispose_engines()

    asyncio.run(grp())
    sp = ser_factory(PROXY_CFG, db_url=sqlite_db)

    def ask(ruri: str, user: str, password: str | None, from_user: str | None = None) -> SipMessage:
        from_uri = f"sip:{from_user or user}@{DOMAIN}"
        first = udp_exchange(request("MESSAGE", ruri, from_uri=from_uri), sp.host, sp.port)
        assert first is not None
        ch = SipMessage.parse(first)
        if password is None or ch.status != 407:
            return ch
        hdr = authorization(ch, user, password, "MESSAGE", ruri, hf="Proxy-Authorization")
        second = udp_exchange(request("MESSAGE", ruri, from_uri=from_uri, extra=[hdr]), sp.host, sp.port)
        assert second is not None
        return SipMessage.parse(second)

    assert ask("sip:alice@elsewhere.net", "jiri", "secret").status == 403
    first = ask(f"sip:alice@{DOMAIN}", "jiri", None)
    assert first.status == 407
    assert (first.header("proxy-authenticate") or "").startswith(f'Digest realm="{DOMAIN}", nonce="')
    assert ask(f"sip:alice@{DOMAIN}", "jiri", "wrong").status == 407
    assert ask(f"sip:alice@{DOMAIN}", "jiri", "secret").status == 299
    assert ask(f"sip:alice@{DOMAIN}", "alice", "wonder").status == 200
    assert ask(f"sip:nobody@{DOMAIN}", "alice", "wonder").status == 404
    assert ask(f"sip:+4930123@{DOMAIN};user=phone", "alice", "wonder").status == 298
    spoof = ask(f"sip:bob@{DOMAIN}", "alice", "wonder", from_user="jiri")
    assert (spoof.status, spoof.reason) == (403, "Use From=ID")
