"""NAT traversal logic of SER's nathelper, sans-I/O.

A phone behind a NAT writes its private address into Via, Contact and the
SDP; the proxy sees the NAT's public address as the packet's source.  The
functions here compare the two (:func:`nat_uac_test`) and rewrite what the
phone wrote (:func:`fixed_contact_value`, :func:`received_param_value`,
:func:`fix_sdp`).  They take the message and the source address and return
results; the nathelper module (:mod:`sipexpress.modules.nathelper`) applies
them to the request being routed.

A malformed header makes the test that reads it false and a rewrite that
needs it fail (None): the phone's garbage never raises from here.
"""

from __future__ import annotations

import enum
import ipaddress
from functools import lru_cache

from sipexpress.sip import sdp as sdplib
from sipexpress.sip.errors import SipError
from sipexpress.sip.message import SipMessage
from sipexpress.sip.uri import SipUri

SIP_PORT = 5060


class NatTest(enum.IntFlag):
    """``nat_uac_test`` flag bits, as SER 0.9 / Kamailio nathelper number them."""

    C_1918 = 0x01  # Contact URI host is a private address
    RCVD = 0x02  # top Via host differs from the source IP
    V_1918 = 0x04  # top Via host is a private address
    S_1918 = 0x08  # an SDP c= address is private
    RPORT = 0x10  # top Via port differs from the source port
    O_1918 = 0x20  # (Kamailio) the source IP itself is private
    WS = 0x40  # (Kamailio) came over WebSocket (WS or WSS)
    C_PORT = 0x80  # (Kamailio) Contact URI port differs from the source port
    SDP_CLINE = 0x100  # (Kamailio) an SDP c= address differs from the source IP


class SdpFix(enum.IntFlag):
    """``fix_nated_sdp`` flag bits (SER 0.9 / Kamailio)."""

    ADD_ADIRECTION = 0x01  # add a=direction:active
    FIX_MEDIP = 0x02  # c= addresses := the source IP
    ADD_ANORTPPROXY = 0x04  # add a=nortpproxy:yes
    FIX_ORGIP = 0x08  # o= address := the source IP


# RFC 1918, plus RFC 6598 shared address space (carrier-grade NAT) and IPv6
# unique local addresses, as Kamailio's nets_1918 grew to include
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/29", "fc00::/7")
)


@lru_cache(maxsize=1024)
def is_private(host: str) -> bool:
    """Is host a literal address of a private network (not a name)?"""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in _PRIVATE if net.version == addr.version)


def _same_address(host: str, ip: str) -> bool:
    if host == ip:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def first_contact_uri(msg: SipMessage) -> SipUri | None:
    """The first Contact's URI, parsed; None when absent, ``*`` or malformed."""
    try:
        contacts = msg.contacts
        if not contacts:
            return None
        return SipUri.parse(contacts[0].uri)
    except SipError:
        return None


def nat_uac_test(msg: SipMessage, src_ip: str, src_port: int, flags: int, transport: str = "UDP") -> bool:
    """True when any test selected by ``flags`` says the sender is behind a
    NAT (SER's ``nat_uac_test``; the tests run in bit order, the first true
    one answers)."""
    via = None
    if flags & (NatTest.RCVD | NatTest.V_1918 | NatTest.RPORT):
        try:
            via = msg.via1
        except SipError:
            via = None
    if flags & NatTest.C_1918:
        uri = first_contact_uri(msg)
        if uri is not None and is_private(uri.host):
            return True
    if via is not None:
        if flags & NatTest.RCVD and not _same_address(via.host, src_ip):
            return True
        if flags & NatTest.V_1918 and is_private(via.host):
            return True
    if flags & NatTest.S_1918 and sdp_has_private(msg):
        return True
    if via is not None and flags & NatTest.RPORT and (via.port or SIP_PORT) != src_port:
        return True
    if flags & NatTest.O_1918 and is_private(src_ip):
        return True
    if flags & NatTest.WS and transport.upper() in ("WS", "WSS"):
        return True
    if flags & NatTest.C_PORT:
        uri = first_contact_uri(msg)
        if uri is not None and (uri.port or SIP_PORT) != src_port:
            return True
    if flags & NatTest.SDP_CLINE:
        sdp = sdp_body(msg)
        if sdp is not None and any(not _same_address(a, src_ip) for a in sdp.addresses()):
            return True
    return False


def sdp_body(msg: SipMessage) -> sdplib.Sdp | None:
    """The message's SDP, indexed; None without one or when it is broken."""
    try:
        body = msg.body
        if not body:
            return None
        ctype = msg.content_type
        if ctype is not None and "application/sdp" not in ctype.lower():
            return None
        return sdplib.parse(body)
    except SipError:
        return None


def sdp_has_private(msg: SipMessage) -> bool:
    sdp = sdp_body(msg)
    return sdp is not None and any(is_private(a) for a in sdp.addresses())


def hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def fixed_contact_value(msg: SipMessage, src_ip: str, src_port: int) -> str | None:
    """The Contact header value with the first contact's host and port
    replaced by the source address (SER's ``fix_nated_contact``); None
    without a usable Contact."""
    try:
        contacts = msg.contacts
        if not contacts:
            return None
        first = contacts[0]
        uri = SipUri.parse(first.uri)
    except SipError:
        return None
    if uri.scheme == "tel":
        return None
    uri.host = f"[{src_ip}]" if ":" in src_ip else src_ip
    uri.port = src_port
    # the private maddr means nothing any more (Kamailio removes it too)
    uri.params.pop("maddr", None)
    first.uri = str(uri)
    return ", ".join(str(c) for c in contacts)


def received_uri(src_ip: str, src_port: int, transport: str = "udp") -> str:
    """``sip:<src ip>:<src port>[;transport=..]``: what ``fix_nated_register``
    and ``add_rcv_param`` record as the contact's ``received``."""
    t = transport.lower()
    return f"sip:{hostport(src_ip, src_port)}" + ("" if t == "udp" else f";transport={t}")


def received_param_value(msg: SipMessage, received: str, in_uri: bool = False) -> str | None:
    """The Contact header value with ``;received="<received>"`` added to
    every contact (``add_rcv_param``; ``in_uri``: ``;received=<received>``
    to each contact URI instead, Kamailio's ``add_rcv_param(1)``).  None without contacts."""
    try:
        contacts = msg.contacts
        if not contacts:
            return None
        for c in contacts:
            if in_uri:
                uri = SipUri.parse(c.uri)
                uri.params["received"] = received  # unquoted in a URI (Kamailio)
                c.uri = str(uri)
            else:
                c.params["received"] = f'"{received}"'
    except SipError:
        return None
    return ", ".join(str(c) for c in contacts)


def fix_sdp(body: bytes, flags: int, ip: str, oldmediaip: bool = True) -> tuple[bytes, bool] | None:
    """What ``fix_nated_sdp(flags)`` makes of a body: ``(body, changed)``,
    or None when it is not SDP.  2: c= and RFC 3605 ``a=rtcp`` addresses
    := ``ip`` (on-hold 0.0.0.0 left alone), each replaced one recorded in
    ``a=oldmediaip:`` at the end (``oldmediaip``, SER 0.9 and Kamailio's
    ``append_sdp_oldmediaip``); 8: the o= address too; 1:
    ``a=direction:active`` at the end of each media section; 4:
    ``a=nortpproxy:yes`` at the end."""
    try:
        sdp = sdplib.parse(body)
    except SipError:
        return None
    changed = False
    old_ips: list[str] = []
    if flags & (SdpFix.FIX_MEDIP | SdpFix.FIX_ORGIP):
        for i, addr in sdp.rtcp_addresses():
            if not sdplib.is_null_address(addr) and not _same_address(addr, ip):
                sdp.set_rtcp_address(i, ip)
                changed = True
    if flags & SdpFix.FIX_MEDIP:
        for c in sdp.connections:
            if not sdplib.is_null_address(c.address) and not _same_address(c.address, ip):
                old_ips.append(c.address)
                sdp.set_connection(c, ip)
                changed = True
    if flags & SdpFix.FIX_ORGIP:
        old = sdp.origin_address
        if old is not None and not sdplib.is_null_address(old) and not _same_address(old, ip):
            sdp.set_origin_address(ip)
            changed = True
    if flags & SdpFix.ADD_ADIRECTION:
        sdp.add_media_attribute("direction:active")
        changed = True
    if flags & SdpFix.ADD_ANORTPPROXY and not sdp.has_attribute("nortpproxy:yes"):
        sdp.append("a=nortpproxy:yes")
        changed = True
    if oldmediaip:
        for old in old_ips:
            sdp.append(f"a=oldmediaip{'6' if ':' in old else ''}:{old}")
    return (sdp.to_bytes() if changed else body), changed


__all__ = [
    "NatTest",
    "SdpFix",
    "fix_sdp",
    "fixed_contact_value",
    "hostport",
    "is_private",
    "nat_uac_test",
    "received_param_value",
    "received_uri",
    "sdp_body",
]
