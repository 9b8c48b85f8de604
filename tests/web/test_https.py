"""serweb and JSON-RPC over HTTPS when a certificate is configured: the
web interface inside ``ser`` calls JSON-RPC over HTTPS too (its CA from
``tls_ca_list``); plain HTTP to either port gets nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, rpc_secret_file
from tests.tls_support import TestCA

pytestmark = pytest.mark.interop

CFG = """
listen=udp:127.0.0.1:{port}
jsonrpc_http="127.0.0.1:{rpc_port}"
jsonrpc_secret_file="{workdir}/jsonrpc.secret"
jsonrpc_certificate="{cert}"
jsonrpc_private_key="{key}"
tls_ca_list="{ca}"
web_listen="127.0.0.1:{web_port}"
web_certificate="{cert}"
web_private_key="{key}"
web_secret="test-secret"
web_db_url="sqlite:///{workdir}/web.sqlite"
loadmodule "sl"
route {{ sl_send_reply("200", "ok"); }}
"""


def wait_https(url: str, verify: Any, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2, verify=verify)
        except httpx.ConnectError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.1)


def test_web_and_jsonrpc_over_https(ser_factory: Any, tmp_path: Path) -> None:
    import ssl

    ca = TestCA(tmp_path / "ca")
    cert = ca.issue("web")
    rpc_port, web_port = free_port(), free_port()
    sp = ser_factory(CFG, rpc_port=rpc_port, web_port=web_port, cert=cert.cert, key=cert.key, ca=ca.cert_path)
    trust = ssl.create_default_context(cafile=str(ca.cert_path))
    r = wait_https(f"https://127.0.0.1:{web_port}/login", trust)
    assert r.status_code == 200 and "Log in" in r.text
    # the web interface reaches ser's JSON-RPC over HTTPS (/metrics asks it)
    r = httpx.get(f"https://localhost:{web_port}/metrics", verify=trust, timeout=10)
    assert r.status_code == 200 and "sipexpress_core_received_requests_total" in r.text, r.text[:500]
    # JSON-RPC itself, with the token
    token = Path(rpc_secret_file(sp.workdir)).read_text().strip()
    r = httpx.post(
        f"https://127.0.0.1:{rpc_port}/",
        json={"jsonrpc": "2.0", "method": "version", "id": 1},
        headers={"Authorization": f"Bearer {token}"},
        verify=trust,
        timeout=10,
    )
    assert r.status_code == 200 and "result" in r.json(), r.text
    # serctl -f ser.cfg finds it at https://, trusting the CA SSL_CERT_FILE names
    out = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.serctl", "-f", str(sp.cfg_path), "rpc", "version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SSL_CERT_FILE": str(ca.cert_path)},
    )
    assert out.returncode == 0 and "sipexpress" in out.stdout, (out.stdout, out.stderr)
    assert f"JSON-RPC  https://127.0.0.1:{rpc_port}/" in sp.log()
    assert f"web       https://127.0.0.1:{web_port}/" in sp.log()
    # plain HTTP is not served there; an untrusting client refuses the certificate
    for port in (rpc_port, web_port):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=3)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{web_port}/login", timeout=3)
    assert sp.alive()
