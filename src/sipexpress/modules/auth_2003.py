"""The 2003 auth module's database half, kept for old scripts.

Before auth_db and group existed (``examples/cfg/2003/pstn.cfg``), auth
itself exported ``www_authorize``, ``proxy_authorize``, ``is_user_in`` and
``is_in_group`` and took ``db_url`` (``sql://`` = ``mysql://``),
``calculate_ha1``, ``password_column`` …  Each of these functions runs the
function of auth_db / group when that module is loaded, and otherwise a
private instance of it configured from auth's 2003 parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipexpress.core.registry import Module, Param, RouteType, ScriptFunction

if TYPE_CHECKING:
    from sipexpress.core.context import RequestContext
    from sipexpress.modules.auth import AuthModule

PARAMS = (
    Param("db_url", str, "", "2003: database of www_authorize/proxy_authorize/is_user_in"),
    Param("db_timeout", int, 3000, "2003: milliseconds one query may take"),
    Param("user_column", str, "username", "2003: digest username column"),
    Param("username_column", str, "", "2003: digest username column"),
    Param("domain_column", str, "domain", "2003: realm column"),
    Param("password_column", str, "ha1", "2003: HA1 (or password) column"),
    Param("password_column_2", str, "ha1b", "2003: HA1B column"),
    Param("calculate_ha1", int, 0, "2003: 1 = password_column holds the clear-text password"),
    Param("use_domain", int, 0, "2003: match the realm too"),
)


class LegacyFunctions:
    """The 2003 script functions of one auth module instance."""

    def __init__(self, auth: AuthModule) -> None:
        self.auth = auth
        self.private: dict[str, Module] = {}

    def functions(self) -> tuple[ScriptFunction, ...]:
        # auth_db and group import auth: imported here, when auth is complete
        from sipexpress.modules.auth_db import fixup_authorize
        from sipexpress.modules.group import fixup_group, fixup_is_user_in

        r = RouteType.REQUEST
        old = "2003 auth: as auth_db's / group's"
        return (
            ScriptFunction("www_authorize", self.www_authorize, (2,), fixup_authorize, r, True, old),
            ScriptFunction("proxy_authorize", self.proxy_authorize, (2,), fixup_authorize, r, True, old),
            ScriptFunction("is_user_in", self.is_user_in, (2,), fixup_is_user_in, r, True, old),
            ScriptFunction("is_in_group", self.is_in_group, (1,), fixup_group, r, True, old),
        )

    def delegate(self, name: str) -> Any:
        """The loaded auth_db / group module, else a private one."""
        auth = self.auth
        mod = auth.core.module(name)
        if mod is not None:
            return mod
        mod = self.private.get(name)
        if mod is None:
            from sipexpress.modules.auth_db import AuthDbModule
            from sipexpress.modules.group import GroupModule

            mod = AuthDbModule(auth.core) if name == "auth_db" else GroupModule(auth.core)
            v = auth.values
            url = str(v["db_url"])
            if url.startswith("sql://"):  # 2003 spelling of mysql://
                url = "mysql://" + url[6:]
            shared = {"db_url": url, "db_timeout": v["db_timeout"], "use_domain": v["use_domain"]}
            if name == "auth_db":
                shared.update(
                    user_column=v["username_column"] or v["user_column"],
                    domain_column=v["domain_column"],
                    password_column=v["password_column"],
                    password_column_2=v["password_column_2"],
                    calculate_ha1=v["calculate_ha1"],
                    avps_column_int="",
                    avps_column_str="",
                )
            for k, val in shared.items():
                mod.set_param(k, val)
            mod.prepare(auth) if isinstance(mod, AuthDbModule) else mod.prepare()
            self.private[name] = mod
        return mod

    async def www_authorize(self, ctx: RequestContext, realm: str, table: str) -> int:
        return int(await self.delegate("auth_db").www_authorize(ctx, realm, table))

    async def proxy_authorize(self, ctx: RequestContext, realm: str, table: str) -> int:
        return int(await self.delegate("auth_db").proxy_authorize(ctx, realm, table))

    async def is_user_in(self, ctx: RequestContext, source: Any, group: str) -> int:
        return int(await self.delegate("group").is_user_in(ctx, source, group))

    async def is_in_group(self, ctx: RequestContext, group: str) -> int:
        return int(await self.delegate("group").is_in_group(ctx, group))
