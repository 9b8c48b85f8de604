"""The seed's exec steps 1-3 against a real ``ser`` (stateless parts)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.interop.exec.conftest import StartSer
from tests.interop.exec.helpers import (
    SDP,
    Phone,
    header,
    mails,
    need,
    sqlite_subscribers,
    status,
    wait_mails,
)
from tests.support import IN_CI, wait_for
from tests.unit.exec.seed import SEED_REQUEST, seed_environment

pytestmark = pytest.mark.interop

CAPTURE_CFG = """
loadmodule "sl"
loadmodule "exec"
route {{
    exec_msg("cat > {out}/stdin.tmp; env -0 > {out}/env; mv {out}/stdin.tmp {out}/stdin");
}}
"""


def send_from_loopback(data: bytes, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))


def read_env0(path: Path) -> dict[str, str]:
    env = {}
    for item in path.read_bytes().split(b"\0"):
        if item:
            k, _, v = item.decode("utf-8", "surrogateescape").partition("=")
            env[k] = v
    return env


def test_seed_request_environment_and_stdin(start_ser: StartSer, tmp_path: Path) -> None:
    """Acceptance: the seed's INVITE gives exactly the spec's environment
    and a byte-identical request on stdin."""
    out = tmp_path / "out"
    out.mkdir()
    ser = start_ser(text=CAPTURE_CFG.format(out=out))
    send_from_loopback(SEED_REQUEST, ser.port)
    assert wait_for(lambda: (out / "stdin").exists()), ser.log()
    assert (out / "stdin").read_bytes() == SEED_REQUEST
    env = read_env0(out / "env")
    sip = {k: v for k, v in env.items() if k.startswith("SIP_")}
    assert sip == seed_environment(src_ip="127.0.0.1")
    # the rest is ser's own environment, unchanged (SER appended to it)
    rest = {k: v for k, v in env.items() if not k.startswith("SIP_")}
    expected_rest = {k: v for k, v in ser.env.items() if not k.startswith("SIP_")}
    rest.pop("PWD", None), rest.pop("SHLVL", None), rest.pop("_", None)
    expected_rest.pop("PWD", None), expected_rest.pop("SHLVL", None), expected_rest.pop("_", None)
    assert rest == expected_rest


def test_step1_mail_for_jiri(start_ser: StartSer) -> None:
    ser = start_ser("step1-notify-jiri/ser.cfg")
    send_from_loopback(SEED_REQUEST, ser.port)
    got = wait_mails(ser.workdir, 1)
    assert len(got) == 1, ser.log()
    assert got[0]["argv"] == ["-s", "call for you", "jiri"]
    assert got[0]["stdin"] == "body: call arrived\n"
    # a request for somebody else sends nothing
    other = SEED_REQUEST.replace(b"INVITE sip:jiri@iptel.org", b"INVITE sip:bob@iptel.org", 1)
    send_from_loopback(other.replace(b"d10815e0", b"e10815e0"), ser.port)
    time.sleep(0.5)  # no mail may come: a window, not a wait
    assert len(mails(ser.workdir)) == 1


def test_step2_who_called_env(start_ser: StartSer) -> None:
    ser = start_ser("step2-who-called/ser.cfg")
    send_from_loopback(SEED_REQUEST, ser.port)
    got = wait_mails(ser.workdir, 1)
    assert len(got) == 1, ser.log()
    assert got[0]["argv"] == ["-s", "request for you", "jiri"]
    assert got[0]["stdin"] == (
        'request received from "alice" <sip:alice@iptel.org>;tag=76ff7a07-c091-4192-84a0-d56e91fe104f\n'
    )


def test_step2_who_called_grep(start_ser: StartSer) -> None:
    """The seed's e-mail: the From line grepped from stdin, then the text."""
    ser = start_ser("step2-who-called/ser-egrep.cfg")
    send_from_loopback(SEED_REQUEST, ser.port)
    got = wait_mails(ser.workdir, 1)
    assert len(got) == 1, ser.log()
    assert got[0]["subject"] == "request for you" and got[0]["to"] == ["jiri"]
    assert got[0]["stdin"] == (
        'From: "alice" <sip:alice@iptel.org>;tag=76ff7a07-c091-4192-84a0-d56e91fe104f\r\nrequest received\n'
    )
    # compact form f: is found too
    compact = SEED_REQUEST.replace(b"\r\nFrom: ", b"\r\nf: ").replace(b"d10815e0", b"f10815e0")
    send_from_loopback(compact, ser.port)
    got = wait_mails(ser.workdir, 2)
    assert got[1]["stdin"].startswith('f: "alice" <sip:alice@iptel.org>')  # type: ignore[union-attr]


def call(phone: Phone, user: str) -> tuple[bytes, bytes | None]:
    inv = phone.request("INVITE", f"sip:{user}@127.0.0.1:{phone.server[1]}", body=SDP)
    phone.send(inv)
    return inv, phone.recv_final(5.0)


def check_step3(
    ser_port: int,
    workdir: Path,
    email_of_jiri: str,
    refused: tuple[str, ...] = ("nobody", "noemail", "x'or'1'='1"),
) -> None:
    phone = Phone(ser_port)
    try:
        _, r = call(phone, "jiri")
        assert r is not None and status(r) == 600, r
        assert b"No messages for this user" in r.split(b"\r\n", 1)[0]
        got = wait_mails(workdir, 1)
        assert len(got) == 1
        assert got[0]["to"] == [email_of_jiri]
        assert got[0]["subject"] in ("request for you", "Message from 127.0.0.1 SIP admin")
        assert (
            got[0]["stdin"]
            == f'SIP request received from "alice" <sip:alice@127.0.0.1>;tag={phone.tag} for jiri\n'
        )
        # unknown subscriber, subscriber without address, hostile user part
        for user in refused:
            _, r = call(phone, user)
            assert r is not None and status(r) == 404, (user, r)
            assert r.split(b"\r\n", 1)[0] == b"SIP/2.0 404 User does not exist"
        time.sleep(0.3)  # the refused calls send no mail: a window, not a wait
        assert len(mails(workdir)) == 1
    finally:
        phone.close()


def test_step3_sqlite(start_ser: StartSer, tmp_path: Path) -> None:
    db = tmp_path / "ser.sqlite"
    sqlite_subscribers(db, {"jiri": "jiri@example.com", "noemail": ""})
    ser = start_ser("step3-any-user/ser-sqlite.cfg", env={"SER_SQLITE_DB": str(db)})
    check_step3(ser.port, ser.workdir, "jiri@example.com")


def test_step3_serctl(start_ser: StartSer, tmp_path: Path) -> None:
    db = tmp_path / "ser.sqlite"
    url = sqlite_subscribers(db, {"jiri": "jiri@example.com", "noemail": ""})
    ser = start_ser("step3-any-user/ser-serctl.cfg", env={"SER_DB_URL": url, "SIP_DOMAIN": "127.0.0.1"})
    # no SQL in this script: the hostile user name needs no test here
    check_step3(ser.port, ser.workdir, "jiri@example.com", ("nobody", "noemail"))


@pytest.mark.db
def test_step3_mysql(start_ser: StartSer) -> None:
    mysql = need("mysql")
    base = [mysql, "-h", "127.0.0.1", "-u", "root"]
    if subprocess.run([*base, "-e", "select 1"], capture_output=True, timeout=10).returncode != 0:
        if IN_CI:
            pytest.fail("MariaDB is required in CI")
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    name = "exec_" + uuid.uuid4().hex[:12]
    url = f"mysql://root@127.0.0.1/{name}"
    from tests.interop.exec.helpers import PY_BIN

    r = subprocess.run(
        [str(PY_BIN / "serctl"), "--db-url", url, "db", "create"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        subprocess.run(
            [
                *base,
                name,
                "-e",
                "insert into subscriber (phplib_id, username, domain, email_address) values "
                "('a', 'jiri', '127.0.0.1', 'jiri@example.org'), ('b', 'noemail', '127.0.0.1', '')",
            ],
            check=True,
            timeout=10,
        )
        ser = start_ser(
            "step3-any-user/ser-mysql.cfg",
            env={
                "SER_DB_HOST": "127.0.0.1",
                "SER_DB_USER": "root",
                "SER_DB_PASSWORD": "",
                "SER_DB_NAME": name,
            },
        )
        check_step3(ser.port, ser.workdir, "jiri@example.org")
    finally:
        subprocess.run([*base, "-e", f"drop database if exists {name}"], timeout=10)


def test_step3_is_stateless_every_retransmission_mails(start_ser: StartSer, tmp_path: Path) -> None:
    """The shortcoming step 4 fixes: each retransmission runs the program."""
    db = tmp_path / "ser.sqlite"
    sqlite_subscribers(db, {"jiri": "jiri@example.com"})
    ser = start_ser("step3-any-user/ser-sqlite.cfg", env={"SER_SQLITE_DB": str(db)})
    phone = Phone(ser.port)
    try:
        inv = phone.request("INVITE", f"sip:jiri@127.0.0.1:{ser.port}", body=SDP)
        for _ in range(4):
            phone.send(inv)
            r = phone.recv_final(5.0)
            assert r is not None and status(r) == 600
        assert len(wait_mails(ser.workdir, 4)) == 4
        assert header(r, "To") is not None
    finally:
        phone.close()
