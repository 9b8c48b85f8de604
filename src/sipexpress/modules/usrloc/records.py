"""usrloc's data model: an AOR (``Urecord``) with its bindings (``Ucontact``).

Pure data and ordering rules; time enters as ``now`` (seconds since the
epoch, as stored in the database).  q values are integer thousandths with
-1 meaning "unspecified" (SER 0.9's ``qvalue_t``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

FL_NONE = 0
FL_NAT = 1
FL_INVITE = 2
FL_PERMANENT = 128
FL_MEM = 256

Q_UNSPECIFIED = -1
Q_MAX = 1000

FIFO_CALLID = "The-Answer-To-The-Ultimate-Question-Of-Life-Universe-And-Everything"
FIFO_CSEQ = 42
FIFO_UA = "SIP Express Router FIFO"


class CState(enum.IntEnum):
    """Contact state towards the database (SER's ``cstate_t``)."""

    CS_NEW = 0  # not in the database yet
    CS_SYNC = 1  # same as in the database
    CS_DIRTY = 2  # changed since the last write


@dataclass(slots=True, eq=False)
class Ucontact:
    """One binding of an AOR."""

    aor: str
    uri: str
    expires: int  # absolute, seconds since the epoch
    q: int = Q_UNSPECIFIED
    callid: str = ""
    cseq: int = 0
    flags: int = 0
    replicate: int = 0
    user_agent: str = ""
    received: str | None = None
    socket: str | None = None
    path: str | None = None
    state: CState = CState.CS_NEW
    # where the REGISTER came from (ip, port); memory only, like SER's
    # usrloc has no column for it: None after a restart loads the table
    source: tuple[str, int] | None = None
    # SIP Outbound (RFC 5626): the binding's +sip.instance and reg-id, which
    # identify it instead of the contact URI; memory only
    instance: str | None = None
    reg_id: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        """The fields as plain values (5 times cheaper to pickle than the
        object: the worker processes exchange bindings this way)."""
        return (
            self.aor, self.uri, self.expires, self.q, self.callid, self.cseq, self.flags, self.replicate,
            self.user_agent, self.received, self.socket, self.path, int(self.state), self.source,
        )  # fmt: skip

    @classmethod
    def from_tuple(cls, t: tuple[Any, ...]) -> Ucontact:
        aor, uri, expires, q, callid, cseq, flags, replicate, ua, received, sock, path, state, source = t
        return cls(
            aor,
            uri,
            expires,
            q,
            callid,
            cseq,
            flags,
            replicate,
            ua,
            received,
            sock,
            path,
            CState(state),
            source,
        )

    def valid(self, now: float) -> bool:
        """SER's VALID_CONTACT: not expired, or permanent."""
        return self.expires > now or bool(self.flags & FL_PERMANENT)

    def remaining(self, now: float) -> int:
        return int(self.expires - int(now))


@dataclass(slots=True, eq=False)
class Urecord:
    """An address-of-record and its contacts, best first (descending q;
    among equal q the older first, or newest first with
    ``desc_time_order``)."""

    aor: str
    contacts: list[Ucontact] = field(default_factory=list)

    def find(self, uri: str) -> Ucontact | None:
        for c in self.contacts:
            if c.uri == uri:
                return c
        return None

    def place(self, c: Ucontact, desc_time_order: bool = False) -> None:
        """Insert ``c`` at its position (SER's ``mem_insert_ucontact``)."""
        if desc_time_order:
            self.contacts.insert(0, c)
            return
        for i, other in enumerate(self.contacts):
            if other.q < c.q:
                self.contacts.insert(i, c)
                return
        self.contacts.append(c)

    def reposition(self, c: Ucontact, desc_time_order: bool = False) -> None:
        """After an update: move to the front (time order) or re-sort by q."""
        self.contacts.remove(c)
        self.place(c, desc_time_order)

    def valid_contacts(self, now: float) -> list[Ucontact]:
        return [c for c in self.contacts if c.valid(now)]

    def expire(self, now: float) -> list[Ucontact]:
        """Remove and return the expired (non-permanent) contacts."""
        gone = [c for c in self.contacts if not c.valid(now)]
        if gone:
            self.contacts = [c for c in self.contacts if c.valid(now)]
        return gone


def q2str(q: int) -> str:
    """SER 0.9's ``q2str``: ``1``, ``0``, ``0.5``, ``0.25``, ``0.125``;
    empty for unspecified."""
    if q == Q_UNSPECIFIED:
        return ""
    if q >= Q_MAX:
        return "1"
    if q <= 0:
        return "0"
    return "0." + f"{q:03d}".rstrip("0")


def str2q(s: str) -> int:
    """Parse a q value (``0``, ``1``, ``1.0``, ``0.5``, ``.7``, up to 3
    decimals, 0..1).  Raises ValueError."""
    s = s.strip()
    if not s:
        raise ValueError("empty q")
    whole, dot, frac = s.partition(".")
    if whole not in ("", "0", "1") or (not whole and not dot):
        raise ValueError(f"invalid q {s!r}")
    if dot and (len(frac) > 3 or (frac and not frac.isdigit())):
        raise ValueError(f"invalid q {s!r}")
    q = (1000 if whole == "1" else 0) + (int(frac.ljust(3, "0")) if frac else 0)
    if q > 1000:
        raise ValueError(f"q out of range {s!r}")
    return q


def str2q_lenient(s: str) -> int:
    """q as the FIFO's ``ul_add`` accepts it (``1.00``: 2 decimals, more
    digits tolerated when they are zeros)."""
    s = s.strip()
    whole, dot, frac = s.partition(".")
    if dot and len(frac) > 3 and set(frac[3:]) <= {"0"}:
        frac = frac[:3]
    return str2q(whole + dot + frac)
