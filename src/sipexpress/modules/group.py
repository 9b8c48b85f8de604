"""group — group membership from the ``grp`` table (SER 0.9 ``modules_s/group``).

Script functions (request route):

``is_user_in("source", "group")``
    ``source`` is ``Request-URI``, ``To``, ``From`` or ``Credentials``
    (case-insensitive; checked when the script is loaded).  The user (and,
    with ``use_domain``, the host) of that URI — or the authorized digest
    user and realm — must have a row (``user_column``, ``group_column`` =
    group [, ``domain_column``]) in ``table`` → 1, else −1 (also when
    nothing was authorized or the database failed; logged).
``is_in_group("group")``
    The 2003 spelling (``pstn.cfg``): ``is_user_in("Credentials", "group")``.

Parameters: ``db_url``, ``db_timeout`` (ms), ``table`` ``grp``,
``user_column`` ``username``, ``domain_column`` ``domain``,
``group_column`` ``grp``, ``use_domain`` 0.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core.registry import ConfigError, FixupEnv, Module, Param, RouteType, ScriptFunction
from sipexpress.db.engine import DbError
from sipexpress.modules._dbquery import DB_PARAMS, DbLookup, ident, make_table
from sipexpress.modules.uri import authorized_credentials
from sipexpress.sip.errors import SipParseError
from sipexpress.sip.uri import SipUri

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.group")


class Source(enum.IntEnum):
    REQUEST_URI = 1
    TO = 2
    FROM = 3
    CREDENTIALS = 4


_SOURCES = {
    "request-uri": Source.REQUEST_URI,
    "to": Source.TO,
    "from": Source.FROM,
    "credentials": Source.CREDENTIALS,
}


def fixup_is_user_in(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    src = _SOURCES.get(str(args[0]).strip().lower())
    if src is None:
        raise ConfigError(
            f"is_user_in: unsupported header field identifier {args[0]!r} "
            "(Request-URI, To, From or Credentials)"
        )
    # a plain int: the cfg compiler embeds fixed arguments as literals
    return (int(src), str(args[1]))


def fixup_group(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    return (str(args[0]),)


class GroupModule(Module):
    name = "group"
    params = (
        *DB_PARAMS,
        Param("table", str, "grp", "group membership table"),
        Param("user_column", str, "username", ""),
        Param("domain_column", str, "domain", ""),
        Param("group_column", str, "grp", ""),
        Param("use_domain", int, 0, "1: match the domain too"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self.db = DbLookup(self)

    def functions(self) -> Sequence[ScriptFunction]:
        r = RouteType.REQUEST
        return (
            ScriptFunction(
                "is_user_in", self.is_user_in, (2,), fixup_is_user_in, r, True, "user is in group"
            ),
            ScriptFunction(
                "is_in_group", self.is_in_group, (1,), fixup_group, r, True, "2003: credentials in group"
            ),
        )

    async def start(self) -> None:
        self.prepare()
        await self.db.check_versions({self.values["table"]: 2} if self.values["table"] == "grp" else {})

    def prepare(self) -> None:
        """Check the parameters (start without the version check)."""
        for name in ("table", "user_column", "domain_column", "group_column"):
            self.values[name] = ident(str(self.values[name]))
        self.db.configure()

    async def is_in_group(self, ctx: RequestContext, group: str) -> int:
        return await self.is_user_in(ctx, Source.CREDENTIALS, group)

    async def is_user_in(self, ctx: RequestContext, source: Source | int | str, group: str) -> int:
        if isinstance(source, int) and not isinstance(source, Source):
            source = Source(source)
        elif not isinstance(source, Source):
            src = _SOURCES.get(str(source).strip().lower())
            if src is None:
                log.error("is_user_in: unsupported source %r", source)
                return -1
            source = src
        if source is Source.CREDENTIALS:
            creds = authorized_credentials(ctx, "is_user_in")
            if creds is None:
                return -1
            user, domain = creds.user, creds.realm or ""
        else:
            try:
                if source is Source.REQUEST_URI:
                    puri = ctx.parsed_ruri
                elif source is Source.TO:
                    puri = SipUri.parse(ctx.msg.to.uri)
                else:
                    puri = SipUri.parse(ctx.msg.from_.uri)
            except SipParseError as e:
                log.error("is_user_in: error while parsing the %s URI: %s", source.name, e)
                return -5
            user, domain = puri.user or "", puri.host
        v = self.values
        pairs = [(v["user_column"], user), (v["group_column"], group)]
        if v["use_domain"]:
            pairs.append((v["domain_column"], domain))
        t = make_table(v["table"], v["user_column"], v["group_column"], v["domain_column"])
        try:
            found = await self.db.exists(t, pairs)
        except DbError as e:
            log.error("is_user_in: error while querying database: %s", e)
            return -5
        if not found:
            log.debug("is_user_in: user '%s' is not in group '%s'", user, group)
            return -6
        return 1
