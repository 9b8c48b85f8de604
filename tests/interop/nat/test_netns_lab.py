"""The NAT lab itself (tests/netns.py): the router masquerades, and a
binding that carries no packets expires after the short conntrack timeout."""

from __future__ import annotations

from tests.netns import HOME_IP, PROXY_IP, ROUTER_WAN_IP, nat_lab
from tests.support import wait_for


def test_masquerade_and_binding_expiry() -> None:
    with nat_lab(udp_timeout=1) as lab:
        server = lab.socket(lab.public)
        phone = lab.socket(lab.home)
        with server, phone:
            server.bind((PROXY_IP, 5060))
            server.settimeout(5)
            phone.bind((HOME_IP, 5060))
            phone.settimeout(5)
            phone.sendto(b"hello", (PROXY_IP, 5060))
            data, src = server.recvfrom(100)
            # the proxy sees the router's public address, never the private one
            assert data == b"hello" and src[0] == ROUTER_WAN_IP
            server.sendto(b"back", src)
            assert phone.recvfrom(100) == (b"back", (PROXY_IP, 5060))
            # idle past the timeout: the binding is gone, the packet is dropped
            assert wait_for(lambda: "dport=5060" not in lab.conntrack(), 15, 0.2), lab.conntrack()
            server.sendto(b"late", src)
            phone.settimeout(1)
            try:
                got = phone.recvfrom(100)
            except TimeoutError:
                got = None
            assert got is None
