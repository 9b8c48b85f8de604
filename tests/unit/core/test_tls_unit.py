"""TLS settings, contexts and the sans-I/O TLS session (no sockets)."""

from __future__ import annotations

import contextlib
import functools
import ssl
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.core.options import normalize_options
from sipexpress.core.server import Core
from sipexpress.core.tls import (
    TlsError,
    TlsSession,
    TlsSettings,
    client_context,
    parse_method,
    server_context,
    server_hostname,
)
from sipexpress.script.compiler import load_config
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.message import StreamFramer
from tests.tls_support import Issued, TestCA


def test_settings_defaults_and_options() -> None:
    d = TlsSettings.from_options(normalize_options({}))
    assert (d.verify, d.require_certificate, d.method, d.certificate) == (True, False, "TLSv1.2+", None)
    s = TlsSettings.from_options(
        normalize_options(
            {
                "tls_certificate": "/c.pem",
                "tls_private_key": "/k.pem",
                "tls_ca_list": "/ca.pem",
                "tls_verify": "no",
                "tls_require_certificate": "yes",
                "tls_method": "TLSv1.3",
                "tls_handshake_timeout": "3",
            }
        )
    )
    assert s == TlsSettings("/c.pem", "/k.pem", "/ca.pem", False, True, "TLSv1.3", 3.0)
    assert s.can_serve and not d.can_serve
    with pytest.raises(ValueError, match="tls_method: unknown method 'TLSv9'"):
        TlsSettings.from_options({"tls_method": "TLSv9"})


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("SSLv23", ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED),
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
        ("tlsv1.2+", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED),
        ("TLSv1_3", ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
        ("TLSv1", ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1),
    ],
)
def test_parse_method(text: str, low: ssl.TLSVersion, high: ssl.TLSVersion) -> None:
    assert parse_method(text) == (low, high)


def _cfg(tmp_path: Path, text: str) -> Core:
    path = tmp_path / "ser.cfg"
    path.write_text(text)
    core = Core()
    load_config(path, core)
    return core


def test_ser09_options_and_kamailio_modparams_give_the_same_settings(tmp_path: Path) -> None:
    ser09 = _cfg(
        tmp_path,
        'listen=tls:127.0.0.1:5061\ntls_certificate="/c.pem"\ntls_private_key="/k.pem"\n'
        'tls_ca_list="/ca.pem"\ntls_verify=0\ntls_require_certificate=1\ntls_method=TLSv1.2\n'
        "route { drop; }\n",
    )
    kam = _cfg(
        tmp_path,
        'listen=tls:127.0.0.1:5061\nloadmodule "tls.so"\nmodparam("tls", "certificate", "/c.pem")\n'
        'modparam("tls", "private_key", "/k.pem")\nmodparam("tls", "ca_list", "/ca.pem")\n'
        'modparam("tls", "verify_certificate", 0)\nmodparam("tls", "require_certificate", 1)\n'
        'modparam("tls", "tls_method", "TLSv1.2")\nroute { drop; }\n',
    )
    expected = TlsSettings("/c.pem", "/k.pem", "/ca.pem", False, True, "TLSv1.2")
    assert TlsSettings.from_options(ser09.options) == expected
    assert TlsSettings.from_options(kam.options) == expected
    # listen=tls: is a socket to bind now (it was ignored with a warning)
    assert ser09.myself.listen_specs()[0][0].name == "TLS"


def test_tls_port_no_is_the_default_tls_port(tmp_path: Path) -> None:
    core = _cfg(tmp_path, "listen=tls:127.0.0.1\ntls_port_no=5071\nroute { drop; }\n")
    assert [(p.name, h, port) for p, h, port in core.myself.listen_specs()] == [("TLS", "127.0.0.1", 5071)]
    core = _cfg(tmp_path, "listen=tls:127.0.0.1\nroute { drop; }\n")
    assert core.myself.listen_specs()[0][2] == 5061


def handshake(client: TlsSession, server: TlsSession) -> bytes:
    """Shuttle bytes between two sessions until neither has more to say;
    what the server decrypted meanwhile."""
    to_server = client.start()
    got = b""
    for _ in range(10):
        plain, to_client = server.receive(to_server) if to_server else (b"", b"")
        got += plain
        _, to_server = client.receive(to_client) if to_client else (b"", b"")
        if not to_server and not to_client:
            break
    return got


def test_session_round_trip_and_held_data(ca: TestCA, server_cert: Issued) -> None:
    srv = TlsSession(server_context(TlsSettings(str(server_cert.cert), str(server_cert.key))), True)
    cli = TlsSession(client_context(TlsSettings(ca_list=str(ca.cert_path))), False, "localhost")
    assert cli.send(b"held until the handshake") == b""
    # what was held goes out with the client's last handshake flight
    assert handshake(cli, srv) == b"held until the handshake"
    assert cli.established and srv.established
    plain, _ = cli.receive(srv.send(b"SIP/2.0 200 OK\r\n\r\n"))
    assert plain == b"SIP/2.0 200 OK\r\n\r\n"


@pytest.mark.parametrize(
    ("issue", "name", "reason"),
    [
        ({"expired": True}, "localhost", "certificate refused: certificate has expired"),
        ({"names": ("other.example",), "ips": ("10.0.0.1",)}, "localhost", "Hostname mismatch"),
        ({"names": ("other.example",), "ips": ("10.0.0.1",)}, None, "IP address mismatch"),
    ],
)
def test_session_refuses_bad_certificates(
    ca: TestCA, issue: dict[str, object], name: str | None, reason: str
) -> None:
    bad = ca.issue("bad", **issue)  # type: ignore[arg-type]
    srv = TlsSession(server_context(TlsSettings(str(bad.cert), str(bad.key))), True)
    cli = TlsSession(
        client_context(TlsSettings(ca_list=str(ca.cert_path))), False, server_hostname(name, "127.0.0.1")
    )
    with pytest.raises(TlsError, match=reason):
        handshake(cli, srv)
    assert not cli.established


def test_session_tls_verify_no_accepts_any_certificate(ca: TestCA) -> None:
    bad = ca.issue("expired", expired=True)
    srv = TlsSession(server_context(TlsSettings(str(bad.cert), str(bad.key))), True)
    cli = TlsSession(client_context(TlsSettings(verify=False)), False, "localhost")
    handshake(cli, srv)
    assert cli.established


def test_session_unknown_ca_and_plain_sip(tmp_path: Path, server_cert: Issued) -> None:
    stranger = TestCA(tmp_path / "other")
    srv = TlsSession(server_context(TlsSettings(str(server_cert.cert), str(server_cert.key))), True)
    cli = TlsSession(client_context(TlsSettings(ca_list=str(stranger.cert_path))), False, "localhost")
    with pytest.raises(TlsError, match="unable to get local issuer certificate"):
        handshake(cli, srv)
    srv = TlsSession(server_context(TlsSettings(str(server_cert.cert), str(server_cert.key))), True)
    with pytest.raises(TlsError, match=r"no TLS handshake \(plain SIP: 'OPTIONS sip:'\) on a TLS port"):
        srv.receive(b"OPTIONS sip:a@b SIP/2.0\r\n")


def test_required_client_certificate(ca: TestCA, server_cert: Issued) -> None:
    settings = TlsSettings(
        str(server_cert.cert), str(server_cert.key), str(ca.cert_path), require_certificate=True
    )
    srv = TlsSession(server_context(settings), True)
    cli = TlsSession(client_context(TlsSettings(ca_list=str(ca.cert_path))), False, "localhost")
    with pytest.raises(TlsError):
        handshake(cli, srv)
        srv.receive(cli.send(b"x"))
    client_cert = ca.issue("client")
    srv = TlsSession(server_context(settings), True)
    cli = TlsSession(
        client_context(TlsSettings(str(client_cert.cert), str(client_cert.key), str(ca.cert_path))),
        False,
        "localhost",
    )
    handshake(cli, srv)
    assert srv.receive(cli.send(b"x"))[0] == b"x"
    assert srv.peer_name() == "localhost"


def test_server_context_needs_a_certificate() -> None:
    with pytest.raises(TlsError, match="set tls_certificate"):
        server_context(TlsSettings())
    with pytest.raises(TlsError, match=r"cannot load tls_certificate /nonexistent\.pem"):
        server_context(TlsSettings("/nonexistent.pem"))


def test_framer_refuses_a_tls_hello_on_a_plain_stream() -> None:
    with pytest.raises(SipParseError, match="TLS handshake on a plain stream"):
        StreamFramer().feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    # a message split in the middle still waits for its end
    assert StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\n") == []


def test_server_hostname() -> None:
    assert server_hostname("Example.COM", "1.2.3.4") == "example.com"
    assert server_hostname(None, "1.2.3.4") == "1.2.3.4"
    assert server_hostname("[::1]", "::1") == "::1"


@functools.cache
def _contexts(cert: str, key: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return server_context(TlsSettings(cert, key)), client_context(TlsSettings(verify=False))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4), hello=st.booleans())
def test_session_garbage_raises_only_tls_error(server_cert: Issued, chunks: list[bytes], hello: bool) -> None:
    """Whatever a client sends, the session either goes on or raises
    TlsError (the connection closes with a log line), never anything else."""
    srv_ctx, cli_ctx = _contexts(str(server_cert.cert), str(server_cert.key))
    srv = TlsSession(srv_ctx, True)
    if hello:  # a real ClientHello first, garbage after it
        cli = TlsSession(cli_ctx, False, "localhost")
        chunks = [cli.start(), *chunks]
    with contextlib.suppress(TlsError):
        for chunk in chunks:
            srv.receive(chunk)
