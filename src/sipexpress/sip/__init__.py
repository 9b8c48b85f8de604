"""Sans-I/O SIP: messages, URIs, typed headers (and transactions, dialogs).

Nothing in this package does I/O or imports ``asyncio``, ``socket`` or
``selectors``; time enters as a ``now`` argument.
"""

from __future__ import annotations

from sipexpress.sip.errors import SipError, SipParseError
from sipexpress.sip.headers import AuthHeader, Contact, CSeq, NameAddr, Via
from sipexpress.sip.message import SipMessage, StreamFramer, build_reply, build_request
from sipexpress.sip.uri import SipUri

__all__ = [
    "AuthHeader",
    "CSeq",
    "Contact",
    "NameAddr",
    "SipError",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Via",
    "build_reply",
    "build_request",
]
