"""auth_db — digest authorization against the subscriber table (SER
``modules_s/auth_db``).

Script functions (request route):

``www_authorize("realm", "table")`` / ``proxy_authorize("realm", "table")``
    Check the ``Authorization`` (``Proxy-Authorization``) credentials for
    ``realm`` (empty: To host for REGISTER, From host otherwise) against
    ``table`` (usually ``subscriber``).

    * 1 — authorized; the credentials are remembered on ``ctx.credentials``
      for ``is_user``, ``check_to``/``check_from``,
      ``is_user_in("Credentials", …)`` and ``consume_credentials``.
    * −1 — no credentials for the realm, unknown user, wrong password,
      stale nonce, replayed nonce count, nonce not ours, qop downgrade,
      algorithm other than MD5.  The script then challenges (with
      ``stale=true`` where the password was right).
    * 0 — a reply was sent already and the script stops: 400 for
      malformed or incomplete credentials, a digest ``uri`` that is not the
      Request-URI (RFC 2617 §3.2.2.5); 500 when the database failed or did
      not answer within ``db_timeout``.

Lookup (bound parameters only)::

    SELECT <password_column> [, rpid] FROM <table>
     WHERE <user_column> = :digest_user [AND <domain_column> = :realm]

``password_column`` (``ha1``) holds md5(user:realm:password);
``password_column_2`` (``ha1b``) md5(user@domain:realm:password) and is used
when the digest username carries ``@domain``.  With ``calculate_ha1`` = 1
the column read (``password_column``) holds the clear-text password and
H(A1) is computed from it.  The domain condition is used with
``use_domain`` = 1 only.

Parameters: ``db_url`` (empty = global), ``db_timeout`` (ms, 3000),
``user_column`` ``username``, ``domain_column`` ``domain``,
``password_column`` ``ha1``, ``password_column_2`` ``ha1b``,
``calculate_ha1`` 0, ``use_domain`` 0, ``avps_column_int`` ``domn``,
``avps_column_str`` ``uuid|rpid`` (SER 0.9's defaults; the values of these
columns are stored in ``ctx.data["auth_db.avps"]`` after a success, and
``rpid`` feeds auth's Remote-Party-ID helpers; set both to "" for a table
without them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, select

from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError
from sipexpress.modules._dbquery import DB_PARAMS, DbLookup, ident, make_table
from sipexpress.modules.auth import NOTICE, PROXY, WWW, AuthModule, AuthResult, send_reply, who
from sipexpress.sip.digest import calc_ha1

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.auth_db")


def fixup_authorize(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    realm, tbl = str(args[0]), str(args[1])
    if not tbl:
        raise ConfigError("auth_db: table name must not be empty")
    ident(tbl)
    return (realm, tbl)


def _split_cols(s: str) -> list[str]:
    return [ident(c) for c in s.replace(",", " ").replace("|", " ").split() if c.strip()]


class AuthDbModule(Module):
    name = "auth_db"
    depends = ("auth",)
    params = (
        *DB_PARAMS,
        Param("user_column", str, "username", "digest username column"),
        Param("username_column", str, "", "2003 name of user_column"),
        Param("domain_column", str, "domain", "realm column (use_domain=1)"),
        Param("password_column", str, "ha1", "HA1 column (or clear-text password with calculate_ha1=1)"),
        Param("password_column_2", str, "ha1b", "HA1B column for usernames with @domain"),
        Param("calculate_ha1", int, 0, "1: password_column holds the clear-text password"),
        Param("use_domain", int, 0, "1: match the realm against domain_column too"),
        Param("avps_column_int", str, "domn", "integer columns loaded after success ('|'-separated)"),
        Param("avps_column_str", str, "uuid|rpid", "string columns loaded after success ('|'-separated)"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.db = DbLookup(self)
        self._auth: AuthModule | None = None
        self._avps: list[str] = []
        self._stmts: dict[tuple[str, str], Select[Any]] = {}

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction(
                "www_authorize", self.www_authorize, (2,), fixup_authorize, r, True, "check Authorization"
            ),
            ScriptFunction(
                "proxy_authorize",
                self.proxy_authorize,
                (2,),
                fixup_authorize,
                r,
                True,
                "check Proxy-Authorization",
            ),
        )

    async def start(self) -> None:
        auth = self.core.module("auth")
        if not isinstance(auth, AuthModule):
            raise ConfigError('auth_db needs the auth module (loadmodule "auth.so" first)')
        self.prepare(auth)
        await self.db.check_versions({"subscriber": 3})

    def prepare(self, auth: AuthModule) -> None:
        """Bind to auth and check the parameters (start without the version check)."""
        self._auth = auth
        v = self.values
        if v["username_column"]:
            v["user_column"] = v["username_column"]
        for name in ("user_column", "domain_column", "password_column", "password_column_2"):
            v[name] = ident(str(v[name]))
        self._avps = _split_cols(str(v["avps_column_int"])) + _split_cols(str(v["avps_column_str"]))
        self.db.configure()

    # -- script functions ---------------------------------------------------
    async def www_authorize(self, ctx: RequestContext, realm: str, table: str) -> int:
        return await self.authorize(ctx, realm, table, WWW)

    async def proxy_authorize(self, ctx: RequestContext, realm: str, table: str) -> int:
        return await self.authorize(ctx, realm, table, PROXY)

    async def get_ha1(
        self, user: str, whole: str, realm: str, table: str, use_ha1b: bool
    ) -> tuple[str, dict[str, Any]] | None:
        """(H(A1), avp values) of a subscriber, None if there is none.
        Raises DbError."""
        v = self.values
        calc = bool(v["calculate_ha1"])
        pw_col = v["password_column_2"] if (use_ha1b and not calc) else v["password_column"]
        avps = [c for c in self._avps if c != pw_col]
        key = (table, pw_col)
        stmt = self._stmts.get(key)
        if stmt is None:
            # built once per (table, column); values are bound at execution
            t = make_table(table, v["user_column"], v["domain_column"], pw_col, *avps)
            cond = [t.c[v["user_column"]] == bindparam("user")]
            if v["use_domain"]:
                cond.append(t.c[v["domain_column"]] == bindparam("realm"))
            stmt = self._stmts[key] = select(t.c[pw_col], *(t.c[c] for c in avps)).where(*cond).limit(1)
        rows = await self.db.rows(stmt, {"user": user, "realm": realm})
        if not rows:
            return None
        row = rows[0]
        secret = "" if row[0] is None else str(row[0])
        ha1 = calc_ha1(whole, realm, secret) if calc else secret.strip()
        return ha1, dict(zip(avps, row[1:], strict=True))

    async def authorize(self, ctx: RequestContext, realm: str, table: str, hf: str) -> int:
        auth = self._auth
        if auth is None:
            log.error("auth_db: not started")
            return -1
        res, creds, realm, status = auth.pre_auth(ctx, realm, hf)
        if res is AuthResult.ERROR:
            return 0
        if res is AuthResult.NOT_AUTHORIZED:
            return -1
        if res is AuthResult.AUTHORIZED or creds is None:
            return 1
        try:
            found = await self.get_ha1(creds.user, creds.username or "", realm, table, bool(creds.domain))
        except DbError as e:
            log.error("auth_db: cannot look up '%s': %s %s", creds.username, e, who(ctx))
            send_reply(ctx, 500, "Server Internal Error")
            return 0
        if found is None:
            log.log(
                NOTICE,
                "auth_db: no such user '%s' in realm '%s' (table %s) %s",
                creds.username,
                realm,
                table,
                who(ctx),
            )
            return -1
        ha1, avps = found
        if len(ha1) != 32:
            log.error("auth_db: unusable H(A1) stored for '%s'@'%s'", creds.username, realm)
            return -1
        rpid = avps.get("rpid")
        res = auth.post_auth(ctx, creds, ha1, status, None if rpid is None else str(rpid))
        if res is AuthResult.AUTHORIZED:
            if avps:
                ctx.data["auth_db.avps"] = avps
            return 1
        return 0 if res is AuthResult.ERROR else -1
