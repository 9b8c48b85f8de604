"""Checks of the provisioning data that ``ser`` warns about at start-up."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import schema
from sipexpress.db.engine import run, sqlite_file

#: the password ``ser_mysql.sh create`` (and ``serctl db create``) gives admin
SER_DEFAULT_PASSWORD = "heslo"


async def admins_with_default_password(url: str, extra_admins: Iterable[str] = ()) -> list[str]:
    """``user@domain`` of every administrator (``admin_privileges``
    ``is_admin``, group ``admin``, or listed in ``extra_admins``) whose
    password is still SER's default.  A SQLite file that does not exist is
    not created: it has no administrators."""
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        return []
    listed = {a.lower() for a in extra_admins}
    ap, grp, sub = schema.admin_privileges, schema.grp, schema.subscriber

    async def op(c: AsyncConnection) -> list[str]:
        admins = {
            (u, d)
            for u, d in await c.execute(
                select(ap.c.username, ap.c.domain).where(ap.c.priv_name == "is_admin", ap.c.priv_value == "1")
            )
        }
        admins |= {
            (u, d)
            for u, d in await c.execute(select(grp.c.username, grp.c.domain).where(grp.c.grp == "admin"))
        }
        rows = await c.execute(
            select(sub.c.username, sub.c.domain, sub.c.password, sub.c.ha1).where(
                or_(sub.c.password == SER_DEFAULT_PASSWORD, sub.c.password == "")
            )
        )
        found = []
        for user, domain, password, ha1 in rows:
            if (user, domain) not in admins and f"{user}@{domain}".lower() not in listed:
                continue
            default_ha1 = hashlib.md5(f"{user}:{domain}:{SER_DEFAULT_PASSWORD}".encode()).hexdigest()
            if password == SER_DEFAULT_PASSWORD or ha1 == default_ha1:
                found.append(f"{user}@{domain}")
        return sorted(found)

    return await run(url, op, write=False)


async def served_domains(url: str) -> list[str]:
    """The domains of table ``domain``, else those of the subscribers: where
    a user name without a domain belongs when there is only one."""
    dom, sub = schema.domain, schema.subscriber

    async def op(c: AsyncConnection) -> list[str]:
        rows = await c.execute(select(dom.c.domain).distinct().order_by(dom.c.domain))
        found = [r[0] for r in rows]
        if not found:
            rows = await c.execute(select(sub.c.domain).distinct().order_by(sub.c.domain))
            found = [r[0] for r in rows]
        return found

    return await run(url, op, write=False)
