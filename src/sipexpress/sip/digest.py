"""HTTP Digest authentication for SIP (RFC 2617, RFC 3261 §22.4), sans-I/O.

Theory of operation
-------------------
A server challenges with a *nonce* it can later recognise without keeping
state for it (SER 0.9 ``modules_s/auth/nonce.c``, Kamailio's auth)::

    nonce = hex8(issued) [ hex8(index·2 + qop) ] md5hex(head secret [NUL binding])

``issued`` is the Unix time the nonce was made; it is *stale* ``expire``
seconds later.  The MD5 binds it to the server ``secret`` (random per
start unless configured, so nonces of a previous run or another server are
refused) and, when asked (Kamailio's ``auth_checks_*``), to a *binding*:
parts of the challenged request such as the client's address or the
Call-ID, so the nonce is worthless elsewhere.  The 40-character form
(SER's) is reusable until it expires; the 48-character form carries an
``index``: the slot in a fixed-size :class:`NonceCounts` table that
remembers which nonce-count (``nc``) values were already used with it.
A ``qop`` nonce (``nonce_count``) accepts each ``nc`` once; a nonce
without ``qop`` that has an index is single-use (``one_time_nonce``).
An answer without ``qop`` to a ``qop`` challenge is refused (no
downgrade).  The table is bounded: an index whose slot was reused by a
newer nonce reads as stale, so the UA is challenged again (``stale=true``)
rather than let in.

Nothing here knows about sockets or clocks: time enters as ``now``.

Verification order (:func:`verify`): parse → sanity checks (400) → nonce
format → response digest (refused) → only then the nonce's integrity,
expiry and count, so that a party who cannot compute the response can
neither learn that a nonce is stale nor burn nonce counts.  A right
response to a nonce that is expired, replayed or not ours (made before a
restart, by another server) is answered with ``stale=true`` (RFC 2617
§3.2.1), so the UA retries without asking its user for the password.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from array import array
from dataclasses import dataclass, field

from sipexpress.sip.headers import AuthHeader

__all__ = [
    "NONCE_LEN",
    "NONCE_LEN_QOP",
    "Credentials",
    "DigestResult",
    "NonceCounts",
    "NonceStatus",
    "Nonces",
    "build_challenge",
    "calc_ha1",
    "calc_response",
    "check_nc",
    "md5_hex",
    "parse_credentials",
]

NONCE_LEN = 40  # SER 0.9: 8 hex expiry + 32 hex MD5
NONCE_LEN_QOP = 48  # + 8 hex: nonce-count slot index · 2 + (1 if qop was offered)
MAX_INDEX = 0x7FFFFFFF


def md5_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def calc_ha1(
    username: str,
    realm: str,
    password: str,
    algorithm: str = "MD5",
    nonce: str = "",
    cnonce: str = "",
) -> str:
    """H(A1) (RFC 2617 §3.2.2.2).  ``HA1B`` is this with ``user@domain``
    as the username (SER's ``ha1b`` column)."""
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = md5_hex(f"{ha1}:{nonce}:{cnonce}")
    return ha1


def calc_response(
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str = "",
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """request-digest (RFC 2617 §3.2.2.1); ``body`` is used for ``auth-int``."""
    a2 = f"{method}:{uri}"
    if qop.lower() == "auth-int":
        a2 += ":" + md5_hex(body)
    ha2 = md5_hex(a2)
    if qop:
        return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5_hex(f"{ha1}:{nonce}:{ha2}")


# ---------------------------------------------------------------------------
# Credentials (Authorization / Proxy-Authorization header value)
#
#   credentials      = "Digest" LWS digest-response *(COMMA dig-resp)
#   dig-resp         = username / realm / nonce / digest-uri / dresponse
#                      / algorithm / cnonce / opaque / message-qop
#                      / nonce-count / auth-param
#   auth-param       = token EQUAL ( token / quoted-string )
# (RFC 3261 §25.1)


@dataclass(slots=True)
class Credentials:
    """Parsed digest credentials.  ``user``/``domain`` split ``username`` at
    the first ``@`` (SER's ``parse_username``).  ``hf`` names the header
    field they came from (``Authorization`` / ``Proxy-Authorization``) and
    ``raw`` is that field's value, so that they can be removed again."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    hf: str = ""
    raw: str = ""

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    @property
    def username(self) -> str | None:
        return self.params.get("username")

    @property
    def user(self) -> str:
        u = self.params.get("username") or ""
        return u.split("@", 1)[0] if len(u) > 2 else u

    @property
    def domain(self) -> str:
        u = self.params.get("username") or ""
        if len(u) <= 2 or "@" not in u:
            return ""
        return u.split("@", 1)[1]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def uri(self) -> str | None:
        return self.params.get("uri")

    @property
    def response(self) -> str | None:
        return self.params.get("response")

    @property
    def qop(self) -> str:
        return self.params.get("qop") or ""

    @property
    def nc(self) -> str:
        return self.params.get("nc") or ""

    @property
    def cnonce(self) -> str:
        return self.params.get("cnonce") or ""

    @property
    def algorithm(self) -> str:
        return self.params.get("algorithm") or "MD5"

    def problems(self) -> list[str]:
        """SER's ``check_dig_cred``: what is missing or inconsistent
        (a non-empty list means 400 Bad Request)."""
        p = self.params
        out = [n for n in ("username", "realm", "nonce", "uri", "response") if p.get(n) is None]
        dom = self.domain
        if dom and self.realm is not None and dom.lower() != self.realm.lower():
            out.append("username domain differs from realm")
        qop = self.qop.lower()
        if qop in ("auth", "auth-int"):
            if p.get("cnonce") is None:
                out.append("cnonce")
            if p.get("nc") is None:
                out.append("nc")
        elif qop:
            out.append(f"unsupported qop {self.qop!r}")
        return out


def parse_credentials(value: str) -> Credentials:
    """Parse a ``Digest ...`` credentials header value (the SIP parser's
    :class:`~sipexpress.sip.headers.AuthHeader`: parameter names lower-cased,
    quoted values unquoted).  Raises :class:`SipParseError` on garbage."""
    h = AuthHeader.parse(value)
    return Credentials(h.scheme, h.params)


def build_challenge(realm: str, nonce: str, qop: bool = False, stale: bool = False) -> str:
    """The value of WWW-Authenticate / Proxy-Authenticate, in SER's order:
    ``Digest realm="…", nonce="…"[, qop="auth"][, stale=true], algorithm=MD5``."""
    out = f'Digest realm="{_quote(realm)}", nonce="{nonce}"'
    if qop:
        out += ', qop="auth"'
    if stale:
        out += ", stale=true"
    return out + ", algorithm=MD5"


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


# ---------------------------------------------------------------------------
# Nonces


class NonceStatus(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # ours, but expired
    FOREIGN = "foreign"  # well-formed, but not made with our secret (a previous run, another server, forged)
    INVALID = "invalid"  # malformed


_HEX = "0123456789abcdefABCDEF"


def _hex8(v: int) -> str:
    return f"{v & 0xFFFFFFFF:08x}"


class NonceCounts:
    """Nonce-count (``nc``) tracking for ``qop`` nonces (RFC 2617 §3.2.2).

    ``size`` slots; slot ``index % size`` belongs to the newest index that
    took it.  Each slot keeps the highest nc seen and a 64-bit window of
    the values just below it, so requests may arrive slightly out of order
    (pipelining, UDP) but none is accepted twice.

    A *retransmission* is not a replay: the last accepted nc of a slot is
    remembered with a key of its request (the caller's: a digest of the
    whole message and its source, so that another Contact or another
    sender is not "the same request") and accepted again for that key for
    :attr:`RETRANSMIT_WINDOW` seconds (RFC 3261 Timer F: 64·T1), as a
    transaction layer would have absorbed it.
    """

    WINDOW = 64
    RETRANSMIT_WINDOW = 32.0

    __slots__ = ("_bitmap", "_last_key", "_last_nc", "_last_t", "_max", "_next", "_owner", "size")

    def __init__(self, size: int = 65536) -> None:
        if size < 1:
            raise ValueError("nonce count table size must be positive")
        self.size = size
        self._owner = array("L", [0]) * size
        self._max = array("L", [0]) * size
        self._bitmap = array("Q", [0]) * size
        self._last_nc = array("L", [0]) * size
        self._last_t = array("d", [0.0]) * size
        self._last_key: list[str | None] = [None] * size
        self._next = secrets.randbelow(MAX_INDEX) + 1

    def allocate(self) -> int:
        """A fresh non-zero 31-bit index; its slot forgets the previous owner."""
        idx = self._next
        self._next = idx + 1 if idx < MAX_INDEX else 1
        slot = idx % self.size
        self._owner[slot] = idx
        self._max[slot] = 0
        self._bitmap[slot] = 0
        self._last_nc[slot] = 0
        self._last_key[slot] = None
        return idx

    def known(self, idx: int) -> bool:
        return idx != 0 and self._owner[idx % self.size] == idx

    def use(self, idx: int, nc: int, key: str | None = None, now: float = 0.0) -> bool:
        """Record nc for the nonce with this index; False if the index is no
        longer tracked, nc was used already (other than by a retransmission
        of the same request), or is too old for the window."""
        slot = idx % self.size
        if idx == 0 or self._owner[slot] != idx or nc <= 0 or nc > 0xFFFFFFFF:
            return False
        top = self._max[slot]
        if nc > top:
            shift = nc - top
            bm = self._bitmap[slot]
            bm = (bm << shift) & 0xFFFFFFFFFFFFFFFF if shift < self.WINDOW else 0
            self._bitmap[slot] = bm | 1
            self._max[slot] = nc
            self._remember(slot, nc, key, now)
            return True
        back = top - nc
        if back >= self.WINDOW:
            return False
        bit = 1 << back
        if self._bitmap[slot] & bit:
            return (
                key is not None
                and self._last_nc[slot] == nc
                and self._last_key[slot] == key
                and now - self._last_t[slot] <= self.RETRANSMIT_WINDOW
            )
        self._bitmap[slot] |= bit
        self._remember(slot, nc, key, now)
        return True

    def _remember(self, slot: int, nc: int, key: str | None, now: float) -> None:
        self._last_nc[slot] = nc
        self._last_key[slot] = key
        self._last_t[slot] = now


class Nonces:
    """Generates and checks nonces bound to ``secret`` (see module doc)."""

    __slots__ = ("counts", "expire", "secret")

    def __init__(self, secret: bytes | str | None = None, expire: int = 300, nc_slots: int = 65536) -> None:
        if secret is None or secret == "" or secret == b"":
            secret = secrets.token_bytes(16)
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.expire = expire
        self.counts = NonceCounts(nc_slots)

    def _mac(self, head: str, binding: str) -> str:
        data = head.encode("ascii") + self.secret
        if binding:
            data += b"\0" + binding.encode("utf-8", "surrogateescape")
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def generate(self, now: float, qop: bool = False, binding: str = "", one_time: bool = False) -> str:
        """A nonce valid for ``expire`` seconds from ``now``, bound to
        ``binding``; ``qop`` and ``one_time`` nonces get an nc slot."""
        head = _hex8(int(now))
        if qop or one_time:
            head += _hex8(self.counts.allocate() << 1 | qop)
        return head + self._mac(head, binding)

    @staticmethod
    def _split(nonce: str) -> tuple[str, int, int] | None:
        """(head, expires, index) of a well-formed nonce, else None."""
        if len(nonce) == NONCE_LEN:
            head = nonce[:8]
        elif len(nonce) == NONCE_LEN_QOP:
            head = nonce[:16]
        else:
            return None
        if nonce.strip(_HEX):
            return None
        issued = int(nonce[:8], 16)
        idx = int(nonce[8:16], 16) >> 1 if len(head) == 16 else 0
        return head, issued, idx

    def check(self, nonce: str, now: float, binding: str = "") -> NonceStatus:
        """Integrity, binding and age of a nonce (no nonce-count check)."""
        parts = self._split(nonce)
        if parts is None:
            return NonceStatus.INVALID
        head, issued, _ = parts
        if not hmac.compare_digest(self._mac(head, binding), nonce[len(head) :].lower()):
            return NonceStatus.FOREIGN
        if issued + self.expire < int(now):
            return NonceStatus.STALE
        return NonceStatus.VALID

    @staticmethod
    def index_of(nonce: str) -> int:
        """The nc slot index of a (checked) nonce; 0 for a reusable one."""
        return int(nonce[8:16], 16) >> 1 if len(nonce) == NONCE_LEN_QOP else 0

    @staticmethod
    def offered_qop(nonce: str) -> bool:
        """Whether the challenge that carried this nonce offered qop."""
        return len(nonce) == NONCE_LEN_QOP and int(nonce[15], 16) & 1 == 1


def check_nc(nc: str) -> int | None:
    """The value of an ``nc`` parameter: exactly 8 hex digits (RFC 2617
    ``nc-value = 8LHEX``), else None."""
    if len(nc) != 8 or nc.strip(_HEX):
        return None
    return int(nc, 16)


# ---------------------------------------------------------------------------
# Whole verification


class DigestResult(enum.Enum):
    """Outcome of :func:`verify`, mapped by auth_db to SER's return values."""

    OK = "ok"
    BAD_REQUEST = "bad request"  # 400: malformed or incomplete credentials
    INVALID_NONCE = "invalid nonce"  # malformed, or not ours and a wrong response: challenge again
    WRONG_RESPONSE = "wrong response"  # wrong password (or response): challenge again
    STALE = "stale"  # right response, but expired nonce / replayed nc: stale=true
    QOP_REQUIRED = "qop required"  # answer to a qop challenge without qop
    BAD_ALGORITHM = "unsupported algorithm"
    URI_MISMATCH = "digest uri mismatch"  # 400 (RFC 2617 §3.2.2.5)


def precheck(
    creds: Credentials, nonces: Nonces, now: float, binding: str = ""
) -> tuple[DigestResult, NonceStatus]:
    """Everything that can be checked before H(A1) is known; ``binding``
    is what the nonce must be bound to (see :class:`Nonces`)."""
    if creds.problems():
        return DigestResult.BAD_REQUEST, NonceStatus.INVALID
    if creds.algorithm.upper() != "MD5":
        return DigestResult.BAD_ALGORITHM, NonceStatus.INVALID
    nonce = creds.nonce or ""
    status = nonces.check(nonce, now, binding)
    if status is NonceStatus.INVALID:
        return DigestResult.INVALID_NONCE, status
    if status is not NonceStatus.FOREIGN and Nonces.offered_qop(nonce) and not creds.qop:
        return DigestResult.QOP_REQUIRED, status
    if creds.qop and check_nc(creds.nc) is None:
        return DigestResult.BAD_REQUEST, status
    return DigestResult.OK, status


def verify(
    creds: Credentials,
    ha1: str,
    method: str,
    nonces: Nonces,
    now: float,
    body: bytes = b"",
    status: NonceStatus | None = None,
    txn_key: str | None = None,
) -> DigestResult:
    """Check a response against H(A1); on success record the nonce count.

    ``status`` is the nonce status :func:`precheck` returned (it is
    recomputed, without binding, when omitted); ``txn_key`` identifies the
    request (a digest of its bytes and source) so that a retransmission is
    not taken for a replay."""
    if status is None:
        res, status = precheck(creds, nonces, now)
        if res is not DigestResult.OK:
            return res
    response = (creds.response or "").lower()
    expected = calc_response(
        ha1.lower(), creds.nonce or "", method, creds.uri or "", creds.qop, creds.nc, creds.cnonce, body
    )
    if len(response) != 32 or not hmac.compare_digest(expected, response):
        return DigestResult.INVALID_NONCE if status is NonceStatus.FOREIGN else DigestResult.WRONG_RESPONSE
    if status is not NonceStatus.VALID:
        # RFC 2617 §3.2.1: stale=TRUE when "the nonce is invalid but with a
        # valid digest for that nonce" -- the UA knows the password and may
        # retry with a fresh nonce without asking the user again (after our
        # restart with a new random secret, too)
        return DigestResult.STALE
    idx = Nonces.index_of(creds.nonce or "")
    if creds.qop:
        nc = check_nc(creds.nc)
        if nc is None:
            return DigestResult.BAD_REQUEST
        # a qop answer to a 40-char (no-qop) nonce has nothing to track:
        # accepted as SER did; a tracked nonce must present a fresh nc
        if idx and not nonces.counts.use(idx, nc, txn_key, now):
            return DigestResult.STALE
    elif idx and not nonces.counts.use(idx, 1, txn_key, now):
        return DigestResult.STALE  # a one-time nonce used by another request
    return DigestResult.OK
