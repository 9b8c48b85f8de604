"""A test CA and certificates made at test time (``cryptography``): no key
is ever committed.  Used by the TLS, WSS and HTTPS tests."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import SerProcess, free_port, wait_for

StartSer = Callable[..., SerProcess]


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """A throw-away certificate authority writing PEM files under ``dir``."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "sipexpress test CA") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.dir / "ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        names: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
        *,
        expired: bool = False,
    ) -> Issued:
        """A server/client certificate for ``names`` and ``ips``; ``expired``
        makes one whose validity ended yesterday."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
            if expired
            else (
                now - datetime.timedelta(days=1),
                now + datetime.timedelta(days=30),
            )
        )
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0] if names else ips[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        out = Issued(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out.key.chmod(0o600)
        return out


# -- a ser with a TLS listener, and SIP over TLS from Python -----------------

HEAD = """\
debug=3
fork=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
listen=tls:{host}:{tls}
tls_certificate="{cert}"
tls_private_key="{key}"
tls_ca_list="{ca}"
loadmodule "sl"
loadmodule "tm"
loadmodule "textops"
"""

#: OPTIONS to ser answered by ser (telling over which transport it came);
#: INFO relayed with t_relay_to_tls to localhost:{relay}; anything else
#: relayed statefully to its request URI
ROUTE = """\
route {{
    if (method == "OPTIONS" && uri == myself) {{
        if (proto == TLS) {{ append_to_reply("X-Proto: tls\\r\\n"); }}
        else {{ append_to_reply("X-Proto: other\\r\\n"); }}
        sl_send_reply("200", "OK");
        break;
    }}
    if (method == "INFO") {{
        if (!t_relay_to_tls("localhost", "{relay}")) {{ sl_reply_error(); }}
        break;
    }}
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""


def start_tls_ser(
    ser_factory: StartSer,
    ca: TestCA,
    cert: Issued,
    extra: str = "",
    tls: int | None = None,
    relay: int = 5061,
) -> SerProcess:
    """A ser with UDP and TCP on a free port and TLS on ``tls`` (another
    free port by default, as ``sp.tls_port``) answering OPTIONS to itself
    (``X-Proto: tls`` over TLS), relaying INFO to localhost:``relay`` with
    ``t_relay_to_tls`` and the rest to the request URI with ``t_relay``."""
    tls = tls or free_port()
    sp = ser_factory(
        HEAD + extra + ROUTE, tls=tls, relay=relay, cert=cert.cert, key=cert.key, ca=ca.cert_path
    )
    sp.tls_port = tls  # type: ignore[attr-defined]
    assert wait_for(lambda: f"listening on tls:127.0.0.1:{tls}" in sp.log(), 10)
    return sp


def sip_request(
    method: str, ruri: str, via_port: int, *, transport: str = "TLS", alias: bool = False, extra: str = ""
) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    params = ";alias" if alias else ""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{via_port}{params};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@probe\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def read_message(sock: socket.socket | ssl.SSLSocket, timeout: float = 5.0) -> bytes:
    """One SIP message from a stream (headers + Content-Length body)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def client_context(ca: TestCA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    return ctx


@contextlib.contextmanager
def tls_client(sp: SerProcess, ca: TestCA, name: str = "localhost") -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection((sp.host, sp.tls_port), timeout=5)  # type: ignore[attr-defined]
    sock = client_context(ca).wrap_socket(raw, server_hostname=name)
    try:
        yield sock
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def relay_via_udp(sp: SerProcess, ruri: str, method: str = "MESSAGE") -> bytes | None:
    """Send ``method`` to ser over UDP for ``ruri``; the final reply."""
    req = sip_request(method, ruri, 9, transport="UDP").replace(b";branch=", b";rport;branch=")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        s.sendto(req, (sp.host, sp.port))
        while True:
            try:
                data = s.recv(65535)
            except TimeoutError:
                return None
            if not data.startswith(b"SIP/2.0 1"):
                return data
