"""The management plane against a real ``ser``: JSON-RPC over HTTP needs the
token and refuses browsers' cross-origin and non-JSON requests (each refusal
logged), the Unix socket has the FIFO's mode from its first moment, the FIFO
does not answer into itself."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from sipexpress.mgmt.client import fifo_request
from sipexpress.mgmt.token import read_token
from tests.support import SerProcess, free_port, wait_for

pytestmark = pytest.mark.interop

CFG = """
debug=3
fork=no
listen=127.0.0.1
port={port}
fifo="{workdir}/ser_fifo"
fifo_dir="{workdir}/"
fifo_mode=0600
jsonrpc_http="127.0.0.1:{rpc_port}"
jsonrpc_socket="{workdir}/rpc.sock"
jsonrpc_secret_file="{workdir}/jsonrpc.secret"
loadmodule "sl"
route {{ sl_send_reply("200", "OK"); }}
"""

CALL = {"jsonrpc": "2.0", "method": "print", "params": ["hi"], "id": 1}


@pytest.fixture(scope="module")
def ser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerProcess]:
    workdir = tmp_path_factory.mktemp("mgmt_sec")
    port = free_port()
    cfg = workdir / "ser.cfg"
    cfg.write_text(CFG.format(port=port, workdir=workdir, rpc_port=free_port()))
    sp = SerProcess(cfg, "127.0.0.1", port, workdir)
    sp.start()
    yield sp
    sp.stop()


def rpc_url(sp: SerProcess) -> str:
    text = sp.cfg_path.read_text()
    port = text.split('jsonrpc_http="127.0.0.1:')[1].split('"')[0]
    return f"http://127.0.0.1:{port}/"


def token(sp: SerProcess) -> str:
    return read_token(str(sp.workdir / "jsonrpc.secret"))


def post(sp: SerProcess, headers: dict[str, str], body: bytes | None = None) -> httpx.Response:
    return httpx.post(rpc_url(sp), content=body or json.dumps(CALL).encode(), headers=headers, timeout=5)


def test_token_file_is_private(ser: SerProcess) -> None:
    st = os.stat(ser.workdir / "jsonrpc.secret")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert len(token(ser)) >= 32


def test_http_needs_token_json_and_same_origin(ser: SerProcess) -> None:
    good = {"Authorization": f"Bearer {token(ser)}", "Content-Type": "application/json"}
    assert post(ser, good).json()["result"] == "hi"
    before = ser.log().count("JSON-RPC over HTTP: refused")
    refused = [
        ({"Content-Type": "application/json"}, 401),
        ({**good, "Authorization": "Bearer guessed"}, 401),
        # what a no-cors fetch() from a web page can send: text/plain, an Origin
        ({**good, "Content-Type": "text/plain"}, 415),
        ({**good, "Origin": "http://evil.example"}, 403),
        ({**good, "Sec-Fetch-Site": "cross-site"}, 403),
        ({**good, "Host": "rebound.evil.example:5080"}, 403),  # DNS rebinding
    ]
    for headers, status in refused:
        r = post(ser, headers)
        assert r.status_code == status, (headers, r.text)
        assert "result" not in r.text
    assert wait_for(lambda: ser.log().count("JSON-RPC over HTTP: refused") == before + len(refused))
    assert "evil.example" in ser.log()


def test_serctl_reads_the_token_from_the_config(ser: SerProcess) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", "-c", str(ser.cfg_path), "--json", "rpc", "uptime"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert "uptime" in json.loads(r.stdout)


def test_nan_id_and_big_batch_and_big_header(ser: SerProcess) -> None:
    good = {"Authorization": f"Bearer {token(ser)}", "Content-Type": "application/json"}
    r = post(ser, good, b'{"jsonrpc": "2.0", "method": "print", "params": ["x"], "id": NaN}')
    assert "NaN" not in r.text
    assert (
        json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in the answer"))["error"]["code"]
        == -32700
    )
    batch = json.dumps([CALL] * 101).encode()
    assert post(ser, good, batch).json()["error"]["code"] == -32600
    assert len(post(ser, good, json.dumps([CALL] * 100).encode()).json()) == 100
    host, port = rpc_url(ser)[7:-1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")


def test_unix_socket_has_the_fifo_mode(ser: SerProcess) -> None:
    st = os.stat(ser.workdir / "rpc.sock")
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert not [p for p in os.listdir(ser.workdir) if p.startswith(".jsonrpc-")]  # no leftovers


def test_fifo_does_not_reply_into_itself(ser: SerProcess) -> None:
    fd = os.open(ser.workdir / "ser_fifo", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b":print:ser_fifo\nwhich\n\n")
    finally:
        os.close(fd)
    assert wait_for(lambda: "is the server's own FIFO, reply dropped" in ser.log())
    assert "command 'which'" not in ser.log()  # its reply was not read back as a command
    assert fifo_request(ser.fifo, "print", ["still here"], reply_dir=f"{ser.workdir}/").endswith(
        "still here\n"
    )
