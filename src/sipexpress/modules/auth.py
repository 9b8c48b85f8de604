"""auth — digest challenges and the common half of authorization (SER
``modules_s/auth``).

Script functions (request route):

``www_challenge("realm", "qop")`` / ``proxy_challenge("realm", "qop")``
    Send ``401 Unauthorized`` with ``WWW-Authenticate`` (or ``407 Proxy
    Authentication Required`` with ``Proxy-Authenticate``)::

        Digest realm="<realm>", nonce="<nonce>"[, qop="auth"][, stale=true], algorithm=MD5

    ``qop`` "1" (any non-zero number) offers ``qop="auth"``; ``stale=true``
    is added when the credentials just checked were right but their nonce
    had expired, was not made by us (before a restart, by another server)
    or its nonce count was replayed (RFC 2617 §3.2.1).  Returns **0** (the
    script stops), −1 if the reply could not be sent.
``consume_credentials()``
    Remove the header field holding the authorized credentials → 1, −1
    when nothing was authorized.
``is_rpid_user_e164()``, ``append_rpid_hf()``, ``append_rpid_hf("prefix", "suffix")``
    Remote-Party-ID helpers over the ``rpid`` value auth_db loaded for the
    authorized user.

An empty realm means: the host of the To URI for a REGISTER challenged with
WWW-Authenticate, the host of the From URI otherwise, minus
``realm_prefix``.

The checks shared by every backend (finding credentials for the realm,
their sanity, nonce integrity and the final response/nonce-count check) are
the methods :meth:`AuthModule.pre_auth` and :meth:`AuthModule.post_auth`
that auth_db calls, as SER's auth exported ``pre_auth``/``post_auth``.
Nonces and nonce counts: :mod:`sipexpress.sip.digest`.

Parameters: ``secret`` (random per start when empty; set the same value on
servers that must accept each other's nonces), ``nonce_expire`` (300 s),
``rpid_prefix`` (""), ``rpid_suffix``
(``;party=calling;id-type=subscriber;screen=yes``), ``realm_prefix`` (""),
``nc_slots`` (65536: nonces with ``qop`` whose nonce counts are tracked at
once; an older one is answered with ``stale=true``).

2003 compatibility: before auth_db and group existed, this module also
exported ``www_authorize``, ``proxy_authorize``, ``is_user_in`` and
``is_in_group`` and took ``db_url`` (``sql://`` = ``mysql://``),
``calculate_ha1``, ``password_column`` … itself.  They are accepted: the
functions run auth_db's / group's code (the loaded module, or a private
instance configured from these parameters): :mod:`sipexpress.modules.auth_2003`.

Every refusal is logged with the reason, the digest username, the realm and
the source address (NOTICE; a request without credentials, the normal first
step of every registration, at INFO); passwords and responses never are.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.modules import auth_2003
from sipexpress.sip.digest import (
    Credentials,
    DigestResult,
    Nonces,
    NonceStatus,
    build_challenge,
    parse_credentials,
    precheck,
    verify,
)
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.auth")
NOTICE = 25

WWW = "Authorization"
PROXY = "Proxy-Authorization"

_STALE_KEY = "auth.stale"
_RPID_KEY = "auth.rpid"


class AuthResult(enum.Enum):
    """SER's ``auth_result_t``."""

    ERROR = "error"  # a reply was sent already (400/500): the script stops
    NOT_AUTHORIZED = "not authorized"  # −1: the script challenges
    DO_AUTHORIZATION = "do authorization"  # credentials found and sane: check them
    AUTHORIZED = "authorized"  # ACK/CANCEL, or success


def send_reply(ctx: RequestContext, code: int, reason: str, headers: list[str] | None = None) -> int:
    """Reply to the request; −1 (logged) when the reply cannot be sent."""
    try:
        return ctx.core.send_reply(ctx, code, reason, headers)
    except Exception:
        log.exception("auth: cannot send %d reply", code)
        return -1


def who(ctx: RequestContext) -> str:
    """The request's source and Call-ID, for the refusal logs of every backend."""
    rcv = ctx.rcv
    try:
        cid = ctx.msg.call_id
    except Exception:
        cid = "?"
    return f"from {rcv.src_ip}:{rcv.src_port} (Call-ID {cid})"


def get_realm(ctx: RequestContext, hf: str, prefix: str = "") -> str:
    """SER's ``get_realm``: the To host for REGISTER with Authorization,
    the From host otherwise, without ``prefix``.  Raises SipParseError."""
    msg = ctx.msg
    na = msg.to if (hf == WWW and msg.method == "REGISTER") else msg.from_
    host = SipUri.parse(na.uri).host
    if prefix and host.startswith(prefix):
        host = host[len(prefix) :]
    return host


def _is_e164(user: str) -> bool:
    return 2 < len(user) < 17 and user[0] == "+" and user[1:].isdigit() and user[1:].isascii()


def _fixup_challenge(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    realm, qop = str(args[0]), str(args[1]).strip()
    try:
        q = int(qop, 0) if qop else 0
    except ValueError:
        raise ConfigError(f"qop parameter must be a number, got {qop!r}") from None
    return (realm, bool(q))


class AuthModule(Module):
    name = "auth"
    params = (
        Param("secret", str, "", "nonce secret; random per start when empty"),
        Param("nonce_expire", int, 300, "seconds a nonce stays valid"),
        Param("rpid_prefix", str, "", "text before the rpid value in Remote-Party-ID"),
        Param(
            "rpid_suffix", str, ";party=calling;id-type=subscriber;screen=yes", "text after the rpid value"
        ),
        Param("realm_prefix", str, "", "prefix removed from a realm taken from To/From"),
        Param("nc_slots", int, 65536, "qop nonces whose nonce counts are tracked at once"),
        *auth_2003.PARAMS,
    )
    counters = (
        ("challenges", "401/407 challenges sent"),
        ("successes", "credentials that were right"),
        ("failures", "credentials that were wrong or stale"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.nonces: Nonces = Nonces()
        self.legacy = auth_2003.LegacyFunctions(self)
        self.challenges = 0
        self.successes = 0
        self.failures = 0

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction(
                "www_challenge", self.www_challenge, (2,), _fixup_challenge, r, False, "401 with a challenge"
            ),
            ScriptFunction(
                "proxy_challenge",
                self.proxy_challenge,
                (2,),
                _fixup_challenge,
                r,
                False,
                "407 with a challenge",
            ),
            ScriptFunction(
                "consume_credentials",
                self.consume_credentials,
                (0,),
                None,
                r,
                False,
                "remove the authorized credentials",
            ),
            ScriptFunction(
                "is_rpid_user_e164", self.is_rpid_user_e164, (0,), None, r, False, "rpid user is E.164"
            ),
            ScriptFunction(
                "append_rpid_hf", self.append_rpid_hf, (0, 2), None, r, False, "add Remote-Party-ID"
            ),
            *self.legacy.functions(),
        )

    async def start(self) -> None:
        expire = int(self.values["nonce_expire"])
        if expire <= 0:
            raise ConfigError("auth: nonce_expire must be positive")
        slots = int(self.values["nc_slots"])
        if slots <= 0:
            raise ConfigError("auth: nc_slots must be positive")
        secret = str(self.values["secret"]) or None
        self.nonces = Nonces(secret, expire, slots)

    # -- challenges -------------------------------------------------------
    def www_challenge(self, ctx: RequestContext, realm: str = "", qop: bool = False) -> int:
        return self._challenge(ctx, realm, bool(qop), 401, "Unauthorized", "WWW-Authenticate", WWW)

    def proxy_challenge(self, ctx: RequestContext, realm: str = "", qop: bool = False) -> int:
        return self._challenge(
            ctx, realm, bool(qop), 407, "Proxy Authentication Required", "Proxy-Authenticate", PROXY
        )

    def challenge_header(self, realm: str, qop: bool, stale: bool, name: str = "WWW-Authenticate") -> str:
        """A complete challenge header field (no CRLF) with a fresh nonce."""
        nonce = self.nonces.generate(time.time(), qop)
        return f"{name}: {build_challenge(realm, nonce, qop, stale)}"

    def _challenge(
        self, ctx: RequestContext, realm: str, qop: bool, code: int, reason: str, hname: str, hf: str
    ) -> int:
        if not realm:
            try:
                realm = get_realm(ctx, hf, self.values["realm_prefix"])
            except SipParseError as e:
                log.error("auth: cannot take the realm from the request: %s %s", e, who(ctx))
                return 0 if send_reply(ctx, 400, "Bad Request") > 0 else -1
        stale = bool(ctx.data.get(_STALE_KEY))
        hdr = self.challenge_header(realm, qop, stale, hname)
        if send_reply(ctx, code, reason, [hdr]) < 0:
            log.error("auth: cannot send %d challenge %s", code, who(ctx))
            return -1
        self.challenges += 1
        return 0

    # -- pre_auth / post_auth (used by auth_db) ----------------------------
    def find_credentials(self, ctx: RequestContext, realm: str, hf: str) -> Credentials | None:
        """The first Digest credentials in ``hf`` fields whose realm equals
        ``realm`` (case-insensitively).  Raises SipParseError on garbage."""
        for value in ctx.msg.header_all(hf):
            creds = parse_credentials(value)
            if not creds.is_digest:
                continue
            r = creds.realm
            if r is not None and r.lower() == realm.lower():
                creds.hf = hf
                creds.raw = value
                return creds
        return None

    def pre_auth(
        self, ctx: RequestContext, realm: str, hf: str
    ) -> tuple[AuthResult, Credentials | None, str, NonceStatus]:
        """SER's ``pre_auth``: (result, credentials, realm used, nonce status).

        ERROR means a 400 was sent; NOT_AUTHORIZED that the script should
        challenge; DO_AUTHORIZATION that the backend must fetch H(A1) and
        call :meth:`post_auth`."""
        msg = ctx.msg
        if msg.method in ("ACK", "CANCEL"):
            # they cannot be challenged (RFC 3261 §22.1)
            return AuthResult.AUTHORIZED, None, realm, NonceStatus.VALID
        ctx.data.pop(_STALE_KEY, None)
        if not realm:
            try:
                realm = get_realm(ctx, hf, self.values["realm_prefix"])
            except SipParseError as e:
                log.error("auth: cannot take the realm from the request: %s %s", e, who(ctx))
                send_reply(ctx, 400, "Bad Request")
                return AuthResult.ERROR, None, realm, NonceStatus.INVALID
        try:
            creds = self.find_credentials(ctx, realm, hf)
        except SipParseError as e:
            log.log(NOTICE, "auth: malformed %s header: %s %s", hf, e.reason, who(ctx))
            send_reply(ctx, 400, "Bad Request")
            return AuthResult.ERROR, None, realm, NonceStatus.INVALID
        if creds is None:
            # the first request of every registration: INFO, not NOTICE
            log.info("auth: no %s credentials for realm '%s' %s", hf, realm, who(ctx))
            return AuthResult.NOT_AUTHORIZED, None, realm, NonceStatus.INVALID
        problems = creds.problems()
        if problems:
            log.log(
                NOTICE,
                "auth: incomplete credentials of '%s' (%s) %s",
                creds.username,
                ", ".join(problems),
                who(ctx),
            )
            send_reply(ctx, 400, "Bad Request")
            return AuthResult.ERROR, creds, realm, NonceStatus.INVALID
        res, status = precheck(creds, self.nonces, time.time())
        if res is DigestResult.BAD_REQUEST:
            log.log(NOTICE, "auth: invalid nc '%s' from '%s' %s", creds.nc, creds.username, who(ctx))
            send_reply(ctx, 400, "Bad Request")
            return AuthResult.ERROR, creds, realm, status
        if res is not DigestResult.OK:
            log.log(NOTICE, "auth: %s for '%s'@'%s' %s", res.value, creds.username, realm, who(ctx))
            return AuthResult.NOT_AUTHORIZED, creds, realm, status
        if not self._uri_matches(ctx, creds.uri or ""):
            # RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI
            log.log(
                NOTICE,
                "auth: digest uri '%s' does not match Request-URI '%s' ('%s') %s",
                creds.uri,
                msg.ruri,
                creds.username,
                who(ctx),
            )
            send_reply(ctx, 400, "Bad Request")
            return AuthResult.ERROR, creds, realm, status
        return AuthResult.DO_AUTHORIZATION, creds, realm, status

    @staticmethod
    def _uri_matches(ctx: RequestContext, duri: str) -> bool:
        ruri = ctx.msg.ruri
        if duri == ruri:
            return True
        try:
            a = SipUri.parse(duri)
            b = SipUri.parse(ruri)
        except SipParseError:
            return False
        # same resource: scheme, user, host and port; parameters may be
        # rendered differently by the UA
        return (
            a.scheme == b.scheme
            and a.user_unescaped == b.user_unescaped
            and a.host.lower() == b.host.lower()
            and a.port == b.port
        )

    def post_auth(
        self,
        ctx: RequestContext,
        creds: Credentials,
        ha1: str,
        status: NonceStatus,
        rpid: str | None = None,
    ) -> AuthResult:
        """Check the response against ``ha1``; on success remember the
        credentials on ``ctx.credentials`` (and the rpid)."""
        msg = ctx.msg
        try:
            key: str | None = f"{msg.via1.branch}\0{msg.call_id}\0{msg.cseq.num}"
        except SipParseError:
            key = None
        res = verify(creds, ha1, msg.method, self.nonces, time.time(), msg.body, status, key)
        if res is DigestResult.OK:
            ctx.credentials = creds
            ctx.data[_RPID_KEY] = rpid or ""
            ctx.data.pop(_STALE_KEY, None)
            log.debug("auth: '%s' authorized for realm '%s'", creds.username, creds.realm)
            self.successes += 1
            return AuthResult.AUTHORIZED
        self.failures += 1
        if res is DigestResult.STALE:
            ctx.data[_STALE_KEY] = True
            log.log(
                NOTICE,
                "auth: stale nonce or replayed nonce count %s from '%s' (nonce %s; right password: "
                "challenged with stale=true) %s",
                creds.nc or "-",
                creds.username,
                status.value,
                who(ctx),
            )
        elif res is DigestResult.WRONG_RESPONSE:
            log.log(
                NOTICE,
                "auth: wrong password/response of '%s'@'%s' %s",
                creds.username,
                creds.realm,
                who(ctx),
            )
        else:
            log.log(NOTICE, "auth: %s for '%s' %s", res.value, creds.username, who(ctx))
        return AuthResult.NOT_AUTHORIZED

    # -- consume_credentials ------------------------------------------------
    def consume_credentials(self, ctx: RequestContext) -> int:
        creds = ctx.credentials
        if not isinstance(creds, Credentials) or not creds.hf:
            if ctx.msg.method not in ("ACK", "CANCEL"):
                log.error("auth: consume_credentials: no authorized credentials found (error in script)")
            return -1
        msg = ctx.msg
        values = msg.header_all(creds.hf)
        if creds.raw not in values:
            return -1
        msg.remove_header(creds.hf)
        skipped = False
        for v in values:
            if v == creds.raw and not skipped:
                skipped = True
                continue
            msg.insert_header(creds.hf, v, first=False)
        return 1

    # -- Remote-Party-ID ------------------------------------------------------
    def is_rpid_user_e164(self, ctx: RequestContext) -> int:
        rpid = str(ctx.data.get(_RPID_KEY) or "")
        if not rpid:
            return -1
        text = rpid
        if "<" in text:
            lt = text.find("<")
            gt = text.find(">", lt)
            if gt < 0:
                return -1
            text = text[lt + 1 : gt]
        user = text
        if text[:4].lower() == "sip:":
            try:
                user = SipUri.parse(text).user or ""
            except SipParseError:
                return -1
        return 1 if _is_e164(user) else -1

    def append_rpid_hf(
        self, ctx: RequestContext, prefix: str | None = None, suffix: str | None = None
    ) -> int:
        rpid = str(ctx.data.get(_RPID_KEY) or "")
        if not rpid:
            return 1
        if prefix is None:
            prefix = str(self.values["rpid_prefix"])
        if suffix is None:
            suffix = str(self.values["rpid_suffix"])
        ctx.msg.append_header_raw(f"Remote-Party-ID: {prefix}{rpid}{suffix}\r\n")
        return 1
