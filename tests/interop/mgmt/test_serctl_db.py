"""serctl's database commands on SQLite, MariaDB and PostgreSQL, against a
running ``ser`` whose auth_db then authenticates the user serctl added."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipexpress.cli.serctl import cli
from tests.support import SerProcess, need_tool
from tests.unit.db.dbfixtures import BACKENDS, cleanup, new_db_url

pytestmark = pytest.mark.interop

CFG = """
debug=3
fork=no
listen=127.0.0.1
port={port}
fifo="{fifo}"
fifo_dir="{workdir}/"
loadmodule "sl"
loadmodule "tm"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "auth"
loadmodule "auth_db"
loadmodule "domain"
modparam("auth_db|domain", "db_url", "{db_url}")
modparam("domain", "db_mode", 1)
route {{
    if (method=="REGISTER") {{
        if (!www_authorize("iptel.org", "subscriber")) {{
            www_challenge("iptel.org", "0");
            break;
        }};
        save("location");
        break;
    }};
    lookup("aliases");
    sl_send_reply("404", "Not Found");
}}
"""


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    u = new_db_url(request.param, tmp_path)
    yield u
    asyncio.run(cleanup(u))


def serctl(
    sp: SerProcess | None, url: str, *args: str, subprocess_: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run serctl: in-process through click's runner (the same code, without
    a Python start-up per call on this busy machine), or as a real process."""
    env = {"SER_DB_URL": url, "SIP_DOMAIN": "iptel.org"}
    if sp is not None:
        env.update(SER_FIFO=sp.fifo, SER_FIFO_DIR=f"{sp.workdir}/")
    if subprocess_:
        return subprocess.run(
            [sys.executable, "-m", "sipexpress.cli.serctl", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )
    res = CliRunner().invoke(cli, list(args), env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def test_serctl_users_acl_and_registration(ser_factory: Callable[..., SerProcess], url: str) -> None:
    r = serctl(None, url, "db", "create", subprocess_=True)
    assert r.returncode == 0, r.stderr
    assert "created table subscriber" in r.stdout
    sp = ser_factory(CFG, db_url=url)

    r = serctl(sp, url, "add", "jiri", "heslo-1", "jiri@iptel.org", subprocess_=True)
    assert (r.returncode, r.stdout) == (0, "new user added\nnew user into uri table added\n"), r.stderr
    r = serctl(sp, url, "add", "jiri", "other-pw", "jiri@iptel.org")
    assert r.returncode == 1 and "user already exists" in r.stderr

    r = serctl(sp, url, "passwd", "jiri@iptel.org", "secret")
    assert (r.returncode, r.stdout) == (0, "password change succeeded\n")
    r = serctl(sp, url, "passwd", "nobody", "secret")
    assert r.returncode == 1 and "non-existent user" in r.stderr

    # the password serctl set is the one auth_db accepts
    exe = need_tool("sipsak")
    reg = [
        exe,
        "-U",
        "-C",
        "sip:jiri@127.0.0.1:9",
        "-s",
        f"sip:jiri@127.0.0.1:{sp.port}",
        "-u",
        "jiri",
        "-x",
        "3600",
        "-H",
        "127.0.0.1",
        "-a",
    ]
    ok = subprocess.run([*reg, "secret"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr + sp.log()[-2000:]
    bad = subprocess.run([*reg, "heslo"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    r = serctl(sp, url, "ul", "show", "jiri")
    assert r.stdout.startswith("<sip:jiri@127.0.0.1:9>;q=")

    r = serctl(sp, url, "acl", "grant", "jiri", "local", "ld", "bogus")
    assert "Invalid privilege: bogus ignored" in r.stderr
    assert "local" in r.stdout and "ld" in r.stdout  # then shows the table
    r = serctl(sp, url, "--json", "acl", "show", "jiri")
    assert sorted(row["grp"] for row in json.loads(r.stdout)) == ["ld", "local"]
    serctl(sp, url, "acl", "revoke", "jiri", "ld")
    r = serctl(sp, url, "--json", "acl", "show", "jiri")
    assert [row["grp"] for row in json.loads(r.stdout)] == ["local"]

    r = serctl(sp, url, "showdb", "jiri")
    assert r.returncode == 0 and "jiri@iptel.org" in r.stdout
    assert r.stdout.endswith("Note: Due to usage of cache, server's list may differ from DB list.\n")

    r = serctl(sp, url, "--json", "rpid", "add", "jiri", "<sip:+49301234@iptel.org>")
    assert json.loads(r.stdout) == [{"username": "jiri", "rpid": "<sip:+49301234@iptel.org>"}]
    r = serctl(sp, url, "--json", "rpid", "rm", "jiri")
    assert json.loads(r.stdout) == [{"username": "jiri", "rpid": None}]
    assert serctl(sp, url, "rpid", "add", "nobody", "x").returncode == 1

    r = serctl(sp, url, "domain", "add", "iptel.org")
    assert r.returncode == 0, r.stdout + r.stderr
    r = serctl(sp, url, "domain", "show")
    assert re.fullmatch(r" {0,3}\d+ iptel\.org\n", r.stdout), r.stdout
    serctl(sp, url, "domain", "rm", "iptel.org")
    assert serctl(sp, url, "domain", "show").stdout == ""

    r = serctl(sp, url, "rm", "jiri")
    assert r.returncode == 0, r.stderr
    r = serctl(sp, url, "ul", "show", "jiri")
    assert r.stdout.startswith("404 ")  # rm also removed the contacts from the server
    r = serctl(sp, url, "--json", "acl", "show", "jiri")
    assert json.loads(r.stdout) == []
    r = serctl(sp, url, "rm", "jiri")
    assert r.returncode == 1 and "non-existent user" in r.stderr
    r = serctl(sp, url, "db", "migrate")
    assert r.returncode == 0, r.stderr


def test_database_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    from tests.support import free_port

    r = serctl(None, f"mysql://root@127.0.0.1:{free_port()}/ser", "passwd", "jiri", "secret")
    assert r.returncode == 2 and r.stderr.startswith("database error:")
