"""NAT keep-alives with usrloc db_mode 3 (no memory copy of the location):
nathelper reads the NAT-flagged bindings from the store (Redis: its NAT
set; SQL: a query on the flags) and pings them; a binding saved without
the NAT flag is not pinged (``ping_nated_only``)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SerProcess
from tests.unit.db.dbfixtures import prepared_url

pytestmark = pytest.mark.interop

CFG = """\
listen=udp:{host}:{port}
loadmodule "sl"
loadmodule "usrloc"
loadmodule "registrar"
loadmodule "nathelper"
loadmodule "textops"
modparam("usrloc", "db_url", "{db_url}")
modparam("usrloc", "db_mode", 3)
modparam("registrar", "nat_flag", 6)
modparam("nathelper", "natping_interval", 1)
modparam("nathelper", "ping_nated_only", 1)
route {{
    if (method == "REGISTER") {{
        if (search("^From:.*natted")) {{ setflag(6); fix_nated_register(); }};
        save("location");
        break;
    }};
    sl_send_reply("404", "Not here");
}}
"""


@pytest.fixture(params=["redis", "sqlite"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from prepared_url(request.param, tmp_path)


def register(sp: SerProcess, phone: socket.socket, user: str) -> None:
    port = phone.getsockname()[1]
    msg = (
        f"REGISTER sip:{sp.host}:{sp.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{sp.host}>;tag=r1\r\n"
        f"To: <sip:{user}@{sp.host}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@test\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        "Expires: 600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    phone.sendto(msg, (sp.host, sp.port))
    r = phone.recv(65535)
    assert r.startswith(b"SIP/2.0 200"), r


def test_keepalives_from_the_store(ser_factory, location: str) -> None:  # type: ignore[no-untyped-def]
    sp: SerProcess = ser_factory(CFG, db_url=location)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as natted,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as direct,
    ):
        for s in (natted, direct):
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
        register(sp, direct, "direct")
        register(sp, natted, "natted")
        ping = natted.recv(65535)  # within a round (1 s) of the REGISTER
        assert ping.startswith(b"OPTIONS sip:natted@127.0.0.1:"), ping
        # the round that pinged the NAT-flagged binding skipped the other
        direct.settimeout(0.3)
        with pytest.raises(TimeoutError):
            direct.recv(65535)
