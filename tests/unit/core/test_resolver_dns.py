"""RFC 3263 resolution against a real (tiny, local) DNS server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from sipexpress.core.resolver import Resolver
from sipexpress.sip.locate import Target

ZONE: dict[tuple[str, str], list[str]] = {
    ("example.test.", "NAPTR"): [
        '20 10 "s" "SIP+D2U" "" _sip._udp.example.test.',
        '10 10 "s" "SIP+D2T" "" _sip._tcp.example.test.',
    ],
    ("_sip._tcp.example.test.", "SRV"): ["10 0 5070 127.0.0.1.", "20 0 5071 localhost."],
    ("_sip._udp.example.test.", "SRV"): ["10 0 5080 127.0.0.1."],
    ("srvonly.test.", "NAPTR"): [],
    ("_sip._udp.srvonly.test.", "SRV"): ["5 0 5090 127.0.0.1."],
    ("secure.test.", "NAPTR"): [
        '20 10 "s" "SIP+D2U" "" _sip._udp.secure.test.',
        '10 10 "s" "SIPS+D2T" "" _sips._tcp.secure.test.',
    ],
    ("_sips._tcp.secure.test.", "SRV"): ["10 0 5161 127.0.0.1."],
    ("_sip._udp.secure.test.", "SRV"): ["10 0 5160 127.0.0.1."],
    ("tlssrv.test.", "NAPTR"): [],
    ("_sips._tcp.tlssrv.test.", "SRV"): ["10 0 5261 127.0.0.1."],
    ("plain.test.", "A"): ["127.0.0.3"],
    ("plain.test.", "AAAA"): ["::1"],
}


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        question = q.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        self.queries.append(key)
        records = ZONE.get(key)
        if records:
            r.answer.append(
                dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, question.rdtype, *records)
            )
        elif records is None:
            r.set_rcode(3)  # NXDOMAIN
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[DnsServer, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield proto, port
    transport.close()


async def test_naptr_srv_a(dns_server: tuple[DnsServer, int]) -> None:
    server, port = dns_server
    res = Resolver(timeout=2, nameservers=["127.0.0.1"], dns_port=port)
    targets = await res.locate("example.test")
    # NAPTR order 10 (TCP) wins; SRV priority 10 before 20
    assert targets == [Target("tcp", "127.0.0.1", 5070), Target("tcp", "127.0.0.1", 5071)]
    assert server.queries[:2] == [("example.test.", "NAPTR"), ("_sip._tcp.example.test.", "SRV")]
    # answers are cached: no new queries
    n = len(server.queries)
    assert await res.locate("example.test") == targets
    assert len(server.queries) == n


async def test_transport_param_goes_to_srv_and_fallbacks(dns_server: tuple[DnsServer, int]) -> None:
    server, port = dns_server
    res = Resolver(timeout=2, nameservers=["127.0.0.1"], dns_port=port)
    assert await res.locate("example.test", transport="udp") == [Target("udp", "127.0.0.1", 5080)]
    assert ("example.test.", "NAPTR") not in server.queries  # transport given: SRV directly
    # no NAPTR records: SRV for the supported transports in order
    assert await res.locate("srvonly.test") == [Target("udp", "127.0.0.1", 5090)]
    # numeric host and explicit port: no DNS at all
    n = len(server.queries)
    assert await res.locate("127.0.0.1", 5999, "tcp") == [Target("tcp", "127.0.0.1", 5999)]
    assert await res.locate("localhost") == [Target("udp", "127.0.0.1", 5060)]
    assert len(server.queries) == n
    # no NAPTR, no SRV: A/AAAA of the host on 5060
    assert await res.locate("plain.test") == [Target("udp", "127.0.0.3", 5060), Target("udp", "::1", 5060)]
    assert await res.locate("plain.test", 5072, "tcp") == [
        Target("tcp", "127.0.0.3", 5072),
        Target("tcp", "::1", 5072),
    ]
    assert await res.locate("nothing.test") == []


async def test_sips_uses_naptr_sips_d2t_and_sips_tcp_srv(dns_server: tuple[DnsServer, int]) -> None:
    """RFC 3263 §4.1 for TLS: SIPS+D2T NAPTR records and ``_sips._tcp`` SRV."""
    server, port = dns_server
    with_tls = Resolver(timeout=2, nameservers=["127.0.0.1"], dns_port=port, supported=("udp", "tcp", "tls"))
    # a sips: URI: only the TLS NAPTR record counts
    assert await with_tls.locate("secure.test", secure=True) == [Target("tls", "127.0.0.1", 5161)]
    # a sip: URI, TLS supported: the NAPTR order decides (TLS has order 10)
    assert await with_tls.locate("secure.test") == [Target("tls", "127.0.0.1", 5161)]
    # without TLS the TLS record is skipped
    plain = Resolver(timeout=2, nameservers=["127.0.0.1"], dns_port=port)
    assert await plain.locate("secure.test") == [Target("udp", "127.0.0.1", 5160)]
    # no NAPTR: _sips._tcp SRV for sips:, and for transport=tls
    assert await with_tls.locate("tlssrv.test", secure=True) == [Target("tls", "127.0.0.1", 5261)]
    assert ("_sips._tcp.tlssrv.test.", "SRV") in server.queries
    assert await plain.locate("tlssrv.test", transport="tls") == [Target("tls", "127.0.0.1", 5261)]
    # no SRV either: the host's address on 5061
    assert await with_tls.locate("plain.test", secure=True) == [
        Target("tls", "127.0.0.3", 5061),
        Target("tls", "::1", 5061),
    ]
