"""uri — checks and edits of URIs without a database (SER 0.9
``modules_s/uri``).

Script functions (request route):

``is_user("name")``
    1 if the user part of the authorized digest username (``www_authorize``
    / ``proxy_authorize`` ran and succeeded) is exactly ``name``, else −1.
``has_totag()``
    1 if the To header field has a non-empty tag (an in-dialog request).
``uri_param("p")`` / ``uri_param("p", "v")``
    1 if the current Request-URI has parameter ``p`` without a value /
    with exactly the value ``v``.  Parameter names are compared
    case-insensitively (RFC 3261 §19.1.4), values as written.
``add_uri_param("p=v")``
    Append ``;p=v`` to the Request-URI's parameters (before its headers) → 1.
``tel2sip()``
    ``tel:NUMBER[;params]`` → ``sip:NUMBER[;params]@<From host>;user=phone``
    (RFC 3261 §19.1.6); 1 also when the Request-URI is no tel URI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core.registry import FixupEnv, Module, RouteType, ScriptFunction
from sipexpress.sip.digest import Credentials
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.uri")

MAX_URI_SIZE = 1024


def authorized_credentials(ctx: RequestContext, who: str) -> Credentials | None:
    creds = ctx.credentials
    if isinstance(creds, Credentials):
        return creds
    log.error("%s: no authorized credentials found: call {www,proxy}_authorize first (error in script)", who)
    return None


def _fixup_strs(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    return tuple(str(a) for a in args)


class UriModule(Module):
    name = "uri"

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction("is_user", self.is_user, (1,), _fixup_strs, r, False, "digest user is"),
            ScriptFunction("has_totag", self.has_totag, (0,), None, r, False, "To has a tag"),
            ScriptFunction("uri_param", self.uri_param, (1, 2), _fixup_strs, r, False, "RURI has param"),
            ScriptFunction("add_uri_param", self.add_uri_param, (1,), _fixup_strs, r, False, "add param"),
            ScriptFunction("tel2sip", self.tel2sip, (0,), None, r, False, "tel: RURI to sip:"),
        )

    def is_user(self, ctx: RequestContext, name: str) -> int:
        creds = authorized_credentials(ctx, "is_user")
        if creds is None:
            return -1
        user = creds.user
        return 1 if user and user == name else -1

    def has_totag(self, ctx: RequestContext) -> int:
        try:
            tag = ctx.msg.to.tag
        except SipParseError as e:
            log.error("has_totag: To parsing failed: %s", e)
            return -1
        return 1 if tag else -1

    def uri_param(self, ctx: RequestContext, name: str, value: str | None = None) -> int:
        try:
            params = ctx.parsed_ruri.params
        except SipParseError as e:
            log.error("uri_param: ruri parsing failed: %s", e)
            return -1
        key = name.lower()
        if key not in params:
            return -1
        have = params[key]
        if value is None:
            return 1 if not have else -1
        return 1 if have == value else -1

    def add_uri_param(self, ctx: RequestContext, param: str) -> int:
        if not param:
            return 1
        try:
            parsed = ctx.parsed_ruri
        except SipParseError as e:
            log.error("add_uri_param: ruri parsing failed: %s", e)
            return -1
        if not parsed.headers:
            new = f"{ctx.ruri};{param}"
        else:
            u = parsed.copy()
            headers = u.headers
            u.headers = {}
            new = f"{u};{param}?" + "&".join(f"{k}={v}" for k, v in headers.items())
        if len(new) > MAX_URI_SIZE:
            log.error("add_uri_param: new ruri too long")
            return -1
        ctx.set_ruri(new)
        return 1

    def tel2sip(self, ctx: RequestContext) -> int:
        ruri = ctx.ruri
        if ruri[:4].lower() != "tel:":
            return 1
        try:
            host = SipUri.parse(ctx.msg.from_.uri).host
        except SipParseError as e:
            log.error("tel2sip: cannot parse the From URI: %s", e)
            return -1
        if not host:
            log.error("tel2sip: From URI has no host")
            return -1
        new = f"sip:{ruri[4:]}@{host};user=phone"
        log.debug("tel2sip: SIP URI is <%s>", new)
        ctx.set_ruri(new)
        return 1
