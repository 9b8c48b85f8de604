"""SIP over TLS with real peers: sipsak (``--transport=tls``) and Kamailio
5.6 with its tls module as a TLS hop in both directions, with the
connection between them reused both ways (Via ``alias``, RFC 5923)."""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import SerProcess, free_port, need_tool, tcp_listening, wait_for
from tests.tls_support import Issued, TestCA, relay_via_udp, start_tls_ser

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]

KAMAILIO_CFG = """\
debug=2
log_stderror=yes
children=1
tcp_children=1
enable_tls=yes
tcp_accept_aliases=yes
listen=udp:127.0.0.1:{udp}
listen=tls:127.0.0.1:{tls}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "tls.so"
modparam("tls", "config", "{workdir}/tls.cfg")
request_route {{
    if ($rU == "kam") {{ sl_send_reply("200", "kamailio got it over $pr"); exit; }}
    t_relay();
}}
"""

KAMAILIO_TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = no
certificate = {cert}
private_key = {key}
ca_list = {ca}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {cert}
private_key = {key}
ca_list = {ca}
"""


@dataclass
class Kamailio:
    udp: int
    tls: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def kamailio(tmp_path: Path, ca: TestCA) -> Iterator[Kamailio]:
    binary = need_tool("kamailio")
    if not Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists():
        pytest.fail("kamailio's tls module is missing (Debian kamailio-tls-modules)")
    cert = ca.issue("kamailio")
    udp, tls = free_port(), free_port()
    (tmp_path / "tls.cfg").write_text(KAMAILIO_TLS_CFG.format(cert=cert.cert, key=cert.key, ca=ca.cert_path))
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(udp=udp, tls=tls, workdir=tmp_path))
    log_path = tmp_path / "kamailio.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8", "-w", str(tmp_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    k = Kamailio(udp, tls, proc, log_path)
    try:
        assert wait_for(lambda: proc.poll() is not None or tcp_listening(tls), 20), k.log()
        assert proc.poll() is None, k.log()
        yield k
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def established_to(port: int) -> int:
    """Established TCP connections on 127.0.0.1 with ``port`` at either end
    (counted once per connection: the side whose local port it is)."""
    want = f"{int.from_bytes(socket.inet_aton('127.0.0.1'), 'little'):08X}:{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[1] == want and r[3] == "01")


def test_ser_to_kamailio_then_back_on_the_same_connection(
    ser_factory: StartSer, ca: TestCA, server_cert: Issued, kamailio: Kamailio
) -> None:
    sp = start_tls_ser(ser_factory, ca, server_cert)
    ser_tls = sp.tls_port  # type: ignore[attr-defined]
    # ser -> kamailio over TLS (ser checks kamailio's certificate; kamailio ours as a client's)
    reply = relay_via_udp(sp, f"sip:kam@127.0.0.1:{kamailio.tls};transport=tls")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 kamailio got it over tls"), (reply, sp.log())
    # kamailio -> ser: kamailio honours our Via alias and sends on ser's connection
    reply = relay_via_udp(_as_kamailio(sp, kamailio), f"sip:127.0.0.1:{ser_tls};transport=tls", "OPTIONS")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), (reply, kamailio.log())
    assert b"X-Proto: tls" in reply
    assert established_to(ser_tls) == 0  # kamailio never connected to ser's TLS port
    assert established_to(kamailio.tls) == 1


def test_kamailio_to_ser_then_back_on_the_same_connection(
    ser_factory: StartSer, ca: TestCA, server_cert: Issued, kamailio: Kamailio
) -> None:
    sp = start_tls_ser(ser_factory, ca, server_cert)
    ser_tls = sp.tls_port  # type: ignore[attr-defined]
    # kamailio -> ser over TLS (kamailio checks our certificate, we check its client certificate)
    reply = relay_via_udp(_as_kamailio(sp, kamailio), f"sip:127.0.0.1:{ser_tls};transport=tls", "OPTIONS")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 ") and b"X-Proto: tls" in reply, (
        kamailio.log()
    )
    # ser -> kamailio: on the connection kamailio opened (its Via sent-by is an alias of it)
    reply = relay_via_udp(sp, f"sip:kam@127.0.0.1:{kamailio.tls};transport=tls")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 kamailio got it over tls"), (reply, sp.log())
    assert established_to(kamailio.tls) == 0  # ser never connected to kamailio's TLS port
    assert established_to(ser_tls) == 1


def _as_kamailio(sp: SerProcess, k: Kamailio) -> SerProcess:
    """A stand-in SerProcess whose UDP address is Kamailio's (relay_via_udp
    sends there)."""
    return SerProcess(sp.cfg_path, "127.0.0.1", k.udp, sp.workdir)


def sipsak_port() -> int:
    """sipsak cuts five-digit ports (peers.md): a free four-digit one."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(2000, 9999)
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free four-digit port")


def test_sipsak_over_tls(ser_factory: StartSer, ca: TestCA, server_cert: Issued) -> None:
    sipsak = need_tool("sipsak")
    # sipsak reads nothing after a TLS 1.3 handshake and checks the certificate
    # against "host:port" (peers.md): TLS 1.2 here, its check off
    sp = start_tls_ser(ser_factory, ca, server_cert, 'tls_method="TLSv1.2"\n', tls=sipsak_port())
    port = sp.tls_port  # type: ignore[attr-defined]
    out = subprocess.run(
        [sipsak, "--transport=tls", "--tls-ignore-cert-failure", "-vv", "-s", f"sip:127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "SIP/2.0 200 OK" in out.stdout, (out.stdout, out.stderr, sp.log())
    assert "X-Proto: tls" in out.stdout
