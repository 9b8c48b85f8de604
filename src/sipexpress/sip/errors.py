"""Errors of the SIP message layer.

::

    SipError
     └── SipParseError      garbage or a malformed header from the wire
                            (.reason, .status: 400, 413, 416, 505 ...)

Anything received from the network that cannot be understood raises
:class:`SipParseError` -- never ``ValueError``, ``IndexError`` or the like.
The core turns it into a reply (``status`` + ``reason``) or a logged drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipexpress.sip.message import SipMessage

__all__ = ["SipError", "SipParseError"]


class SipError(Exception):
    """Root of every error raised by :mod:`sipexpress.sip`."""


class SipParseError(SipError):
    """A message (or one of its header fields) is malformed.

    ``reason`` is a short human-readable text fit for a reply's reason
    phrase; ``status`` the reply code a server should answer with (400
    unless a more specific code applies: 413, 414, 416, 420, 505 ...).

    ``msg`` is set by :meth:`SipMessage.parse` when the header block was
    framed but the start line is bad (e.g. RFC 4475 ``lwsstart``, ``badvers``):
    the partially parsed message still answers ``raw_header_lines()`` and
    friends, so a stateless error reply can be built from it.
    """

    def __init__(self, reason: str, status: int = 400, msg: SipMessage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.msg = msg

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"
