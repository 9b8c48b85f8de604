"""Digest replay against a real ``ser``: a captured Authorization reused on
another message (new Call-ID/branch/port, another Contact, another source)
is refused, and the shipped configuration, with its authentication lines
switched on, refuses alice's credentials on a REGISTER for admin."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sipexpress.sip.message import SipMessage
from tests.interop.auth.test_auth_interop import CFG, prepare_db
from tests.support import SerProcess, shipped_template
from tests.unit.auth.conftest import authorization
from tests.unit.db.dbfixtures import new_db_url

pytestmark = pytest.mark.interop

StartSer = Callable[..., SerProcess]


def register(
    sp: SerProcess,
    user: str,
    auth: str | None = None,
    *,
    to_user: str | None = None,
    contact_port: int = 5999,
    call_id: str | None = None,
    branch: str | None = None,
    src: str = "127.0.0.1",
    realm: str = "iptel.org",
    sock: socket.socket | None = None,
) -> tuple[SipMessage, bytes]:
    """Send one REGISTER from ``sock`` or a fresh socket on ``src``; (reply, request)."""
    lines = [
        f"REGISTER sip:{realm} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:9;branch={branch or 'z9hG4bK' + uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{realm}>;tag=1928301774",
        f"To: <sip:{to_user or user}@{realm}>",
        f"Call-ID: {call_id or uuid.uuid4().hex}@replay",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{to_user or user}@{src}:{contact_port}>",
        "Expires: 600",
        *([auth] if auth else []),
        "Content-Length: 0",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
        s = sock or fresh
        if sock is None:
            s.bind((src, 0))
        s.settimeout(3)
        s.sendto(data, (sp.host, sp.port))
        while True:
            reply = SipMessage.parse(s.recvfrom(65535)[0])
            if reply.status >= 200:
                return reply, data


def login(sp: SerProcess, user: str, password: str, **kw: object) -> tuple[str, SipMessage]:
    """Challenge, answer: the Authorization line that got a 200."""
    challenge, _ = register(sp, user, **kw)  # type: ignore[arg-type]
    assert challenge.status == 401
    auth = authorization(challenge, user, password)
    ok, _ = register(sp, user, auth, **kw)  # type: ignore[arg-type]
    return auth, ok


@pytest.fixture
def auth_ser(ser_factory: StartSer, tmp_path: Path) -> Callable[[str, str], SerProcess]:
    url = new_db_url("sqlite", tmp_path)
    prepare_db(url, [("alice", "iptel.org", "alicepw"), ("admin", "iptel.org", "adminpw")])

    def start(qop: str, modparams: str = "") -> SerProcess:
        cfg = CFG.replace('www_challenge("", "1")', f'www_challenge("", "{qop}")').replace(
            'modparam("usrloc", "db_mode", 0)', 'modparam("usrloc", "db_mode", 0)\n' + modparams
        )
        return ser_factory(cfg, db_url=url, calc=1, pwcol="password")

    return start


def test_nonce_without_qop_serves_one_request(auth_ser: Callable[[str, str], SerProcess]) -> None:
    sp = auth_ser("0", "")
    auth, ok = login(sp, "alice", "alicepw")
    assert ok.status == 200
    for _ in range(3):  # new Call-ID, branch and source port each time
        again, _ = register(sp, "alice", auth, contact_port=6666)
        assert again.status == 401 and "stale=true" in (again.header("www-authenticate") or "")
    assert "stale nonce or replayed nonce count" in sp.log()


def test_retransmission_is_not_a_replay(auth_ser: Callable[[str, str], SerProcess]) -> None:
    sp = auth_ser("1", "")
    challenge, _ = register(sp, "alice")
    auth = authorization(challenge, "alice", "alicepw")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        same = {"call_id": "c1", "branch": "z9hG4bKsame", "sock": phone}
        assert register(sp, "alice", auth, **same)[0].status == 200  # type: ignore[arg-type]
        assert register(sp, "alice", auth, **same)[0].status == 200  # type: ignore[arg-type]  # a retransmission
        # the same transaction key and nc with another Contact: not the same request
        other, _ = register(sp, "alice", auth, contact_port=6666, **same)  # type: ignore[arg-type]
        assert other.status == 401


def test_nonce_bound_to_the_source_address(auth_ser: Callable[[str, str], SerProcess]) -> None:
    sp = auth_ser("1", 'modparam("auth", "auth_checks_register", 8)')
    challenge, _ = register(sp, "alice")
    auth = authorization(challenge, "alice", "alicepw")
    stolen, _ = register(sp, "alice", auth, src="127.0.0.2")
    assert stolen.status == 401 and "stale=true" in (stolen.header("www-authenticate") or "")
    assert register(sp, "alice", auth)[0].status == 200


def test_shipped_config_refuses_a_register_for_someone_else(ser_factory: StartSer, tmp_path: Path) -> None:
    url = new_db_url("sqlite", tmp_path)
    prepare_db(url, [("alice", "iptel.org", "alicepw"), ("admin", "iptel.org", "adminpw")])

    def with_authentication(text: str) -> str:
        """What an administrator does to switch authentication on."""
        for line in ('loadmodule "auth"', 'loadmodule "auth_db"', 'loadmodule "uri_db"'):
            text = text.replace("#" + line, line)
        for param in ('"calculate_ha1", yes)', '"password_column", "password")'):
            text = text.replace(f'#modparam("auth_db", {param}', f'modparam("auth_db", {param}')
        text = re.sub(
            r'#modparam\("usrloc\|auth_db\|uri_db", "db_url", "[^"]*"\)',
            f'modparam("auth_db|uri_db", "db_url", "{url}")',
            text,
        )
        text = re.sub(r"(?m)^#(\t+.*)$", r"\1", text)  # the commented lines inside the REGISTER branch
        return 'alias="iptel.org"\n' + text

    cfg = shipped_template(with_authentication)
    sp = ser_factory(cfg)
    _, ok = login(sp, "alice", "alicepw")
    assert ok.status == 200
    challenge, _ = register(sp, "alice", to_user="admin")
    assert challenge.status == 401
    hijack, _ = register(sp, "alice", authorization(challenge, "alice", "alicepw"), to_user="admin")
    assert hijack.status == 403
