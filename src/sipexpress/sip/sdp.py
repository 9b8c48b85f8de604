"""The few SDP (RFC 4566) lines a SIP proxy looks at, sans-I/O.

A proxy that helps phones behind NAT reads and rewrites the connection
addresses (``c=``), the origin (``o=``) and the media ports (``m=``) of a
body it otherwise leaves byte for byte.  :func:`parse` indexes those lines
without decoding the rest; the rewriting functions return a new body with
only the touched lines changed (line ends kept as received: CRLF, or the
bare LF some phones send).

Errors: a body that is not SDP (no ``v=`` first line), or a ``c=``/``o=``
/``m=`` line without its fields, raises :class:`SdpError` (a
:class:`~sipexpress.sip.errors.SipParseError` with status 400 hint).

::

    c=<nettype> <addrtype> <connection-address>        RFC 4566 §5.7
    o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>   §5.2
    m=<media> <port>[/<number of ports>] <proto> <fmt> ...                        §5.14
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipexpress.sip.errors import SipParseError


class SdpError(SipParseError):
    """A body that is not the SDP it claims to be."""


@dataclass(slots=True)
class Connection:
    """A ``c=`` line: ``line`` is its index in :attr:`Sdp.lines`; ``media``
    the index of the media section it belongs to (-1: session level)."""

    line: int
    nettype: str
    addrtype: str
    address: str
    media: int = -1


@dataclass(slots=True)
class Media:
    """An ``m=`` line and the index range of its section."""

    line: int
    kind: str
    port: int
    proto: str
    formats: list[str]
    end: int = 0  # index of the first line after the section


@dataclass(slots=True)
class Sdp:
    """The lines of a body (without their line ends), ``eol`` the line end
    used, and the lines a proxy cares about."""

    lines: list[str]
    eol: str
    origin: int | None = None  # index of the o= line
    connections: list[Connection] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    # -- reading ------------------------------------------------------------
    @property
    def origin_address(self) -> str | None:
        if self.origin is None:
            return None
        return self.lines[self.origin].split()[5]

    def addresses(self) -> list[str]:
        """Every connection address, session level first."""
        return [c.address for c in self.connections]

    def media_address(self, m: Media) -> str | None:
        """The address media ``m`` goes to: its own ``c=`` or the session's."""
        session = None
        for c in self.connections:
            if c.media == m.line:
                return c.address
            if c.media == -1:
                session = c.address
        return session

    # -- writing ------------------------------------------------------------
    def set_connection(self, c: Connection, address: str) -> None:
        addrtype = "IP6" if ":" in address else "IP4"
        self.lines[c.line] = f"c={c.nettype} {addrtype} {address}"
        c.address = address
        c.addrtype = addrtype

    def set_origin_address(self, address: str) -> None:
        if self.origin is None:
            return
        parts = self.lines[self.origin][2:].split()
        parts[4] = "IP6" if ":" in address else "IP4"
        parts[5] = address
        self.lines[self.origin] = "o=" + " ".join(parts)

    def set_media_port(self, m: Media, port: int) -> None:
        head, _, rest = self.lines[m.line][2:].partition(" ")
        _, _, after = rest.partition(" ")
        self.lines[m.line] = f"m={head} {port} {after}"
        m.port = port

    def has_attribute(self, text: str) -> bool:
        """Is ``a=<text>`` (e.g. ``nortpproxy:yes``) anywhere in the body?"""
        return f"a={text}" in self.lines

    def append(self, line: str) -> None:
        """Add a line at the end of the body (in the last media section)."""
        self.lines.append(line)
        if self.media:
            self.media[-1].end = len(self.lines)

    def add_media_attribute(self, text: str) -> None:
        """Add ``a=<text>`` at the end of every media section (at the end
        of the body without media)."""
        if not self.media:
            self.append(f"a={text}")
            return
        for m in reversed(self.media):
            self.lines.insert(m.end, f"a={text}")
        self._reindex()

    def rtcp_addresses(self) -> list[tuple[int, str]]:
        """(line index, address) of each ``a=rtcp:<port> IN IP4 <addr>``
        (RFC 3605) that names an address."""
        out = []
        for i, line in enumerate(self.lines):
            if line.startswith("a=rtcp:"):
                parts = line[7:].split()
                if len(parts) == 4:
                    out.append((i, parts[3]))
        return out

    def set_rtcp_address(self, i: int, address: str) -> None:
        parts = self.lines[i][7:].split()
        parts[2] = "IP6" if ":" in address else "IP4"
        parts[3] = address
        self.lines[i] = "a=rtcp:" + " ".join(parts)

    def _reindex(self) -> None:
        fresh = parse_text("\n".join(self.lines), self.eol)
        self.origin, self.connections, self.media = fresh.origin, fresh.connections, fresh.media

    def to_bytes(self) -> bytes:
        return (self.eol.join(self.lines) + self.eol).encode("utf-8", "surrogateescape")


def parse(body: bytes) -> Sdp:
    """Index an SDP body.  Raises :class:`SdpError`."""
    text = body.decode("utf-8", "surrogateescape")
    eol = "\r\n" if "\r\n" in text else "\n"
    return parse_text(text, eol)


def parse_text(text: str, eol: str) -> Sdp:
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not lines[0].startswith("v="):
        raise SdpError("not an SDP body (no v= line first)")
    sdp = Sdp(lines, eol)
    current = -1
    for i, line in enumerate(lines):
        kind = line[:2]
        if kind == "m=":
            parts = line[2:].split()
            if len(parts) < 3:
                raise SdpError(f"invalid m= line {line!r}")
            try:
                port = int(parts[1].partition("/")[0])
            except ValueError:
                raise SdpError(f"invalid port in {line!r}") from None
            if sdp.media:
                sdp.media[-1].end = i
            sdp.media.append(Media(i, parts[0], port, parts[2], parts[3:]))
            current = i
        elif kind == "c=":
            parts = line[2:].split()
            if len(parts) != 3:
                raise SdpError(f"invalid c= line {line!r}")
            # a multicast address carries /ttl: the address is before it
            sdp.connections.append(Connection(i, parts[0], parts[1], parts[2].partition("/")[0], current))
        elif kind == "o=":
            if len(line[2:].split()) != 6:
                raise SdpError(f"invalid o= line {line!r}")
            sdp.origin = i
    if sdp.media:
        sdp.media[-1].end = len(lines)
    return sdp


def is_null_address(address: str) -> bool:
    """``0.0.0.0`` / ``::``: the RFC 2543 way of putting a call on hold; a
    NAT helper leaves it alone."""
    return address in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")


__all__ = ["Connection", "Media", "Sdp", "SdpError", "is_null_address", "parse", "parse_text"]
