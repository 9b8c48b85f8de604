"""serctl as a new user meets it (issue 23): the server's database and
domain (never the current directory), serweb's validation, ``--json`` with
the data, no question off a terminal, Kamailio's RPC names."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipexpress.cli.serctl import cli
from tests.support import SerProcess, cfg_head, free_port

pytestmark = pytest.mark.interop

CFG = (
    cfg_head("sl", "tm", "usrloc", "registrar")
    + """\
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    lookup("aliases");
    sl_send_reply("404", "Not Here");
}}
"""
)

CLEAN_ENV = ("SER_DB_URL", "SIP_DOMAIN", "SIPEXPRESS_DB_URL", "SER_FIFO", "SER_RPC_URL", "SER_RPC_SOCKET")


def serctl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """serctl in ``cwd`` with a clean environment, stdin not a terminal:
    in-process through click's runner (one Python start-up per call costs
    seconds on this busy machine); ``real_serctl`` for a real process."""
    old = Path.cwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(cli, list(args), env={**dict.fromkeys(CLEAN_ENV), **env})
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def real_serctl(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # not a terminal
        timeout=60,
    )


@pytest.fixture
def running(ser_factory: Callable[..., SerProcess], tmp_path: Path) -> tuple[SerProcess, int, Path]:
    """A ser whose database is ./ser.sqlite in *its* working directory (no
    db_url: the default), created with SER's admin@localhost; serctl runs
    in another, empty directory."""
    rpc = free_port()
    sp = ser_factory(CFG, rpc=rpc, start=False)
    made = serctl(
        sp.workdir, "--db-url", "sqlite:///ser.sqlite", "db", "create", "--admin-domain", "localhost"
    )
    assert made.returncode == 0, made.stderr
    sp.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return sp, rpc, elsewhere


def subscribers(sp: SerProcess) -> set[tuple[str, str]]:
    with sqlite3.connect(sp.workdir / "ser.sqlite") as db:
        return {(u, d) for u, d in db.execute("SELECT username, domain FROM subscriber")}


def test_database_and_domain_come_from_the_server(running: tuple[SerProcess, int, Path]) -> None:
    sp, rpc, here = running
    env = {"SER_FIFO": sp.fifo, "SER_RPC_URL": f"http://127.0.0.1:{rpc}/"}
    r = real_serctl(here, "add", "bob", "secret-1", "bob@example.com", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("bob", "localhost") in subscribers(sp)  # the domain the database has
    assert list(here.iterdir()) == []  # no ser.sqlite left in the current directory

    # the same through -f: fifo and JSON-RPC from the config, the database from the server
    r = serctl(here, "-f", str(sp.cfg_path), "--json", "add", "dave", "secret-2", "dave@example.com")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"added": "dave@localhost"}
    assert ("dave", "localhost") in subscribers(sp)
    assert list(here.iterdir()) == []

    # names and passwords are checked as serweb checks them
    r = serctl(here, "add", "bad@@localhost", "secret-1", "x@example.com", **env)
    assert r.returncode == 1 and "not a valid domain" in r.stderr, r.stderr
    r = serctl(here, "add", "carol", "x", "carol@example.com", **env)
    assert r.returncode == 1 and "at least 6 characters" in r.stderr, r.stderr
    r = serctl(here, "add", "bad name", "secret-1", "x@example.com", **env)
    assert r.returncode == 1 and "A user name is" in r.stderr, r.stderr
    r = serctl(here, "add", "erin", "secret-1", "not-an-address", **env)
    assert r.returncode == 1 and "e-mail" in r.stderr, r.stderr
    assert subscribers(sp) == {("admin", "localhost"), ("bob", "localhost"), ("dave", "localhost")}


def test_json_is_data_no_question_off_a_terminal_kamailio_names(
    running: tuple[SerProcess, int, Path],
) -> None:
    sp, rpc, here = running
    env = {"SER_FIFO": sp.fifo, "SER_RPC_URL": f"http://127.0.0.1:{rpc}/"}
    r = serctl(here, "ul", "add", "bob", "sip:bob@127.0.0.1:5099", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = real_serctl(here, "ul", "show", **env)  # the whole table: asks only on a terminal
    assert r.returncode == 0 and "aor   : 'bob'" in r.stdout and "are you sure" not in r.stderr, r.stderr
    r = serctl(here, "--json", "ul", "show", **env)
    assert r.returncode == 0, r.stderr
    (location,) = [d for d in json.loads(r.stdout) if d["domain"] == "location"]
    (rec,) = location["records"]
    assert rec["aor"] == "bob" and rec["contacts"][0]["contact"] == "sip:bob@127.0.0.1:5099"
    r = serctl(here, "--json", "ul", "show", "bob", **env)
    assert [c["contact"] for c in json.loads(r.stdout)] == ["sip:bob@127.0.0.1:5099"]
    r = serctl(here, "--json", "ps", **env)
    assert sp.proc is not None and {row["pid"] for row in json.loads(r.stdout)} == {sp.proc.pid}
    r = serctl(here, "--json", "ul", "show", "nobody", **env)
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == 404

    # Kamailio's names for the same commands
    up = json.loads(serctl(here, "--json", "rpc", "core.uptime", **env).stdout)
    assert isinstance(up, dict) and up["up_since"], up
    methods = json.loads(serctl(here, "--json", "rpc", "system.listMethods", **env).stdout)
    for name in ("core.uptime", "core.version", "ul.dump", "ul.lookup", "tm.stats", "uptime", "ul_dump"):
        assert name in methods, methods
    helptext = json.loads(serctl(here, "--json", "rpc", "system.methodHelp", "ul.dump", **env).stdout)
    assert "dump all tables" in helptext and "ul_dump" in helptext
    tm = json.loads(serctl(here, "--json", "rpc", "tm.stats", **env).stdout)
    assert tm == json.loads(serctl(here, "--json", "rpc", "t_stats", **env).stdout)
    # the FIFO reads the same registry
    r = serctl(here, "fifo", "ul.lookup", "location", "nobody@localhost", **env)
    assert r.returncode == 1 and "not found" in r.stdout
    r = serctl(here, "fifo", "core.version", **env)
    assert r.returncode == 0 and "Sip EXpress router" in r.stdout
    # SER's which is unchanged
    which = serctl(here, "fifo", "which", **env).stdout.split()
    assert "ul_dump" in which and "ul.dump" not in which and "system.listMethods" not in which


def test_no_server_no_config_no_database_in_the_current_directory(tmp_path: Path) -> None:
    env = {"SER_FIFO": str(tmp_path / "nofifo"), "SER_RPC_URL": f"http://127.0.0.1:{free_port()}/"}
    r = serctl(tmp_path, "passwd", "eve", "secret-1", SIP_DOMAIN="example.com", **env)
    assert r.returncode == 2 and "which database?" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "ser.sqlite").exists()
