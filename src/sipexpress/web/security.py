"""Security pieces: response headers, CSRF tokens, server-side session
records, log-in rate limiting, input validation.  Output escaping is
Jinja2's autoescape."""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sipexpress.sip.errors import SipError
from sipexpress.sip.uri import SipUri

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds :data:`HEADERS` (and ``Cache-Control: no-store`` on pages) to
    every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(session: dict[str, Any]) -> str:
    tok = session.get("csrf")
    if not isinstance(tok, str):
        tok = session["csrf"] = secrets.token_urlsafe(24)
    return tok


def csrf_ok(session: dict[str, Any], given: object) -> bool:
    tok = session.get("csrf")
    return isinstance(tok, str) and isinstance(given, str) and hmac.compare_digest(tok, given)


class Sessions:
    """The log-ins behind the signed session cookies, kept on the server: a
    cookie counts only while its random id is listed for its user, so
    logging out or changing the password ends every session of that user
    at once (a signed cookie alone stays valid until it expires), and a
    restart ends all.  Bounded: ``per_user`` sessions per user (the oldest
    goes first) and ``max_users`` users (the least recently logged-in go)."""

    def __init__(self, per_user: int = 16, max_users: int = 20000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        self._by_user: dict[str, list[str]] = {}

    def start(self, user: str) -> str:
        sid = secrets.token_urlsafe(18)
        sids = self._by_user.pop(user, [])  # re-inserted last: most recent
        sids.append(sid)
        del sids[: -self.per_user]
        self._by_user[user] = sids
        while len(self._by_user) > self.max_users:
            del self._by_user[next(iter(self._by_user))]
        return sid

    def valid(self, user: str, sid: object) -> bool:
        return isinstance(sid, str) and sid in self._by_user.get(user, ())

    def end_all(self, user: str) -> None:
        self._by_user.pop(user, None)


class RateLimiter:
    """At most ``limit`` failures per ``window`` seconds per key."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> float:
        """Seconds to wait (0: allowed)."""
        now = time.monotonic()
        wait = 0.0
        for k in keys:
            q = self._recent(k, now)
            if len(q) >= self.limit:
                wait = max(wait, q[0] + self.window - now)
        return wait

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for k in keys:
            self._recent(k, now).append(now)
        if len(self._fails) > 10000:  # forget idle keys
            for k in [k for k, q in self._fails.items() if not q]:
                del self._fails[k]

    def reset(self, *keys: str) -> None:
        for k in keys:
            self._fails.pop(k, None)


# -- validation: each returns an error message or None --------------------------------

USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,63}")
DOMAIN_RE = re.compile(r"[A-Za-z0-9\[\]][A-Za-z0-9.\-:\[\]]{0,127}")
EMAIL_RE = re.compile(r"[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+|[^@\s<>\"']+@[A-Za-z0-9.\-]+")
GROUP_RE = re.compile(r"[A-Za-z0-9_.\-]{1,50}")


def check_username(v: str) -> str | None:
    if not v:
        return "Please enter a user name."
    if not USER_RE.fullmatch(v):
        return "A user name is 1-64 letters, digits, '.', '_', '-' or '+', starting with a letter or digit."
    return None


def check_domain(v: str) -> str | None:
    if not v:
        return "Please enter a domain."
    if not DOMAIN_RE.fullmatch(v):
        return "That is not a valid domain name."
    return None


def check_password(v: str, confirm: str | None = None) -> str | None:
    if not v:
        return "Please enter a password."
    if len(v) < 6:
        return "The password must have at least 6 characters."
    if len(v) > 25:
        return "The password may have at most 25 characters."
    if any(ord(ch) < 32 for ch in v):
        return "The password contains control characters."
    if confirm is not None and confirm != v:
        return "The two passwords differ."
    return None


def check_email(v: str, required: bool = True) -> str | None:
    if not v:
        return "Please enter an e-mail address." if required else None
    if len(v) > 50:
        return "The e-mail address may have at most 50 characters."
    if not EMAIL_RE.fullmatch(v):
        return "That is not a valid e-mail address."
    return None


def check_text(v: str, label: str, maxlen: int, required: bool = False) -> str | None:
    if not v:
        return f"Please enter {label}." if required else None
    if len(v) > maxlen:
        return f"{label[0].upper()}{label[1:]} may have at most {maxlen} characters."
    if any(ord(ch) < 32 and ch not in "\r\n\t" for ch in v):
        return f"{label[0].upper()}{label[1:]} contains control characters."
    return None


def check_uri(v: str, maxlen: int = 128) -> str | None:
    """A SIP/SIPS/tel URI without header parts."""
    if not v:
        return "Please enter a SIP address (sip:user@domain)."
    if len(v) > maxlen:
        return f"The address may have at most {maxlen} characters."
    if any(ch.isspace() or ch in '<>"' for ch in v):
        return "A SIP address contains no spaces, quotes or angle brackets."
    try:
        u = SipUri.parse(v)
    except SipError:
        return f"'{v}' is not a valid SIP address; write it like sip:user@example.com."
    if u.scheme not in ("sip", "sips", "tel"):
        return "Only sip:, sips: and tel: addresses are allowed."
    if u.headers:
        return "A SIP address with '?' headers is not allowed here."
    return None
