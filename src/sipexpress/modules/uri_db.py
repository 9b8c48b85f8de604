"""uri_db — checks of URIs against the database (SER 0.9 ``modules_s/uri_db``).

Script functions (request route):

``check_to()`` / ``check_from()``
    1 if the authorized digest user may use the user part of the To / From
    URI.  With ``use_uri_table`` = 1 the URI's host must equal the digest
    realm and a row (``uri_user_column`` = digest user,
    ``uri_domain_column`` = realm, ``uri_uriuser_column`` = URI user) must
    exist in ``uri_table``; otherwise the two usernames must be equal
    (case-insensitively).  −1 when not, when nothing was authorized, or on
    a database error (logged).
``does_uri_exist()``
    1 if the Request-URI's user exists: in ``subscriber_table``
    (``subscriber_user_column`` [, ``subscriber_domain_column`` = RURI host
    with ``use_domain``]) or, with ``use_uri_table``, in ``uri_table``
    (``uri_uriuser_column`` [, ``uri_domain_column``]).  −1 otherwise.

Parameters: ``db_url``, ``db_timeout`` (ms), ``uri_table`` ``uri``,
``uri_user_column`` ``username``, ``uri_domain_column`` ``domain``,
``uri_uriuser_column`` ``uri_user``, ``subscriber_table`` ``subscriber``,
``subscriber_user_column`` ``username``, ``subscriber_domain_column``
``domain``, ``use_uri_table`` 0, ``use_domain`` 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sipexpress.core.registry import Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError
from sipexpress.modules._dbquery import DB_PARAMS, DbLookup, ident, make_table
from sipexpress.modules.uri import authorized_credentials
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.uri_db")

_COLUMNS = (
    "uri_table",
    "uri_user_column",
    "uri_domain_column",
    "uri_uriuser_column",
    "subscriber_table",
    "subscriber_user_column",
    "subscriber_domain_column",
)


class UriDbModule(Module):
    name = "uri_db"
    params = (
        *DB_PARAMS,
        Param("uri_table", str, "uri", "table of the URI users a digest user may use"),
        Param("uri_user_column", str, "username", ""),
        Param("uri_domain_column", str, "domain", ""),
        Param("uri_uriuser_column", str, "uri_user", ""),
        Param("subscriber_table", str, "subscriber", ""),
        Param("subscriber_user_column", str, "username", ""),
        Param("subscriber_domain_column", str, "domain", ""),
        Param("use_uri_table", int, 0, "1: consult uri_table"),
        Param("use_domain", int, 0, "1: does_uri_exist matches the domain too"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.db = DbLookup(self)

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction("check_to", self.check_to, (0,), None, r, True, "digest user may use To"),
            ScriptFunction("check_from", self.check_from, (0,), None, r, True, "digest user may use From"),
            ScriptFunction("does_uri_exist", self.does_uri_exist, (0,), None, r, True, "RURI user exists"),
        )

    async def start(self) -> None:
        for name in _COLUMNS:
            self.values[name] = ident(str(self.values[name]))
        self.db.configure()
        required = {"subscriber": 3}
        if self.values["use_uri_table"]:
            required["uri"] = 1
        await self.db.check_versions(required)

    async def check_to(self, ctx: RequestContext) -> int:
        try:
            uri = ctx.msg.to.uri
        except SipParseError as e:
            log.error("check_to: error while parsing To: %s", e)
            return -1
        return await self._check_username(ctx, uri, "check_to")

    async def check_from(self, ctx: RequestContext) -> int:
        try:
            uri = ctx.msg.from_.uri
        except SipParseError as e:
            log.error("check_from: error while parsing From: %s", e)
            return -1
        return await self._check_username(ctx, uri, "check_from")

    async def _check_username(self, ctx: RequestContext, uri: str, who: str) -> int:
        creds = authorized_credentials(ctx, who)
        if creds is None:
            return -2
        try:
            puri = SipUri.parse(uri)
        except SipParseError as e:
            log.error("%s: error while parsing URI: %s", who, e)
            return -3
        if not puri.user:
            log.error("%s: username not found in URI %s", who, uri)
            return -4
        v = self.values
        if v["use_uri_table"]:
            realm = creds.realm or ""
            if puri.host.lower() != realm.lower():
                log.info("%s: digest realm '%s' and URI domain '%s' do not match", who, realm, puri.host)
                return -6
            t = make_table(
                v["uri_table"], v["uri_user_column"], v["uri_domain_column"], v["uri_uriuser_column"]
            )
            pairs = [
                (v["uri_user_column"], creds.user),
                (v["uri_domain_column"], realm),
                (v["uri_uriuser_column"], puri.user),
            ]
            try:
                found = await self.db.exists(t, pairs)
            except DbError as e:
                log.error("%s: error while querying database: %s", who, e)
                return -8
            if not found:
                log.info("%s: URI user '%s' is not allowed for '%s' (spoofed?)", who, puri.user, creds.user)
                return -9
            return 1
        if puri.user.lower() == creds.user.lower():
            return 1
        log.info("%s: digest username '%s' and URI username '%s' differ", who, creds.user, puri.user)
        return -10

    async def does_uri_exist(self, ctx: RequestContext) -> int:
        try:
            ruri = ctx.parsed_ruri
        except SipParseError as e:
            log.error("does_uri_exist: error while parsing URI: %s", e)
            return -1
        v = self.values
        if v["use_uri_table"]:
            tname, ucol, dcol = v["uri_table"], v["uri_uriuser_column"], v["uri_domain_column"]
        else:
            tname, ucol, dcol = (
                v["subscriber_table"],
                v["subscriber_user_column"],
                v["subscriber_domain_column"],
            )
        pairs = [(ucol, ruri.user or "")]
        if v["use_domain"]:
            pairs.append((dcol, ruri.host))
        try:
            found = await self.db.exists(make_table(tname, ucol, dcol), pairs)
        except DbError as e:
            log.error("does_uri_exist: error while querying database: %s", e)
            return -4
        return 1 if found else -5
