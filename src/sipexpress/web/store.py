"""The web app's SQL: SER 0.9 tables (sipexpress.db.schema), bound
parameters only, LIMIT/OFFSET paging.  Every call is bounded by
:func:`sipexpress.db.engine.run` and raises ``DbError`` subclasses."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import provisioning, schema
from sipexpress.db.engine import run
from sipexpress.db.provisioning import add_subscriber_in, calc_ha1, now, subscriber_row

sub = schema.subscriber
DISABLED_GROUP = "disabled"
ADMIN_GROUP = "admin"
SORTABLE = ("username", "domain", "first_name", "last_name", "email_address", "datetime_created")


@dataclass(slots=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def _like(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Store:
    def __init__(self, url: str) -> None:
        self.url = url

    # -- log-in ------------------------------------------------------------------
    async def check_password(self, username: str, domain: str, password: str) -> bool:
        async def op(c: AsyncConnection) -> bool:
            row = (
                await c.execute(
                    select(sub.c.ha1, sub.c.password).where(
                        sub.c.username == username, sub.c.domain == domain
                    )
                )
            ).first()
            if row is None:
                calc_ha1(username, domain, password)  # same work for unknown users
                return False
            ha1, clear = row
            if ha1:
                return hmac.compare_digest(ha1.lower(), calc_ha1(username, domain, password))
            return bool(clear) and hmac.compare_digest(clear.encode(), password.encode())

        return await run(self.url, op, write=False)

    async def groups(self, username: str, domain: str) -> list[str]:
        return [r["grp"] for r in await provisioning.group_rows(self.url, (username, domain))]

    async def is_admin(self, username: str, domain: str) -> bool:
        ap = schema.admin_privileges

        async def op(c: AsyncConnection) -> bool:
            r = (
                await c.execute(
                    select(func.count())
                    .select_from(ap)
                    .where(
                        ap.c.username == username,
                        ap.c.domain == domain,
                        ap.c.priv_name == "is_admin",
                        ap.c.priv_value == "1",
                    )
                )
            ).scalar_one()
            return bool(r)

        return ADMIN_GROUP in await self.groups(username, domain) or await run(self.url, op, write=False)

    # -- account -----------------------------------------------------------------
    async def user(self, username: str, domain: str) -> dict[str, Any] | None:
        async def op(c: AsyncConnection) -> dict[str, Any] | None:
            row = (
                await c.execute(
                    select(
                        sub.c.username,
                        sub.c.domain,
                        sub.c.first_name,
                        sub.c.last_name,
                        sub.c.email_address,
                        sub.c.phone,
                        sub.c.datetime_created,
                    ).where(sub.c.username == username, sub.c.domain == domain)
                )
            ).first()
            return dict(row._mapping) if row else None

        return await run(self.url, op, write=False)

    async def reset_info(self, username: str, domain: str) -> tuple[str, str] | None:
        """(e-mail address, ha1) for a password-reset link."""

        async def op(c: AsyncConnection) -> tuple[str, str] | None:
            row = (
                await c.execute(
                    select(sub.c.email_address, sub.c.ha1).where(
                        sub.c.username == username, sub.c.domain == domain
                    )
                )
            ).first()
            return (str(row[0] or ""), str(row[1] or "")) if row else None

        return await run(self.url, op, write=False)

    async def update_profile(self, username: str, domain: str, **values: str) -> None:
        async def op(c: AsyncConnection) -> None:
            await c.execute(
                update(sub)
                .where(sub.c.username == username, sub.c.domain == domain)
                .values(datetime_modified=now(), **values)
            )

        await run(self.url, op)

    # -- admin: users ----------------------------------------------------------------
    async def search_users(
        self, q: str, page: int, size: int, sort: str = "username", desc: bool = False
    ) -> Page:
        cols = [sub.c.username, sub.c.domain, sub.c.first_name, sub.c.last_name, sub.c.email_address]
        cond: Any = None
        if q:
            pat = _like(q)
            cond = or_(*(col.like(pat, escape="\\") for col in cols))
        key = sub.c[sort] if sort in SORTABLE else sub.c.username
        order = [key.desc() if desc else key.asc(), sub.c.username, sub.c.domain]
        dis = schema.grp

        async def op(c: AsyncConnection) -> Page:
            cq = select(func.count()).select_from(sub)
            sq = select(*cols, sub.c.datetime_created)
            if cond is not None:
                cq, sq = cq.where(cond), sq.where(cond)
            total = (await c.execute(cq)).scalar_one()
            rows = [
                dict(r._mapping)
                for r in await c.execute(sq.order_by(*order).limit(size).offset((page - 1) * size))
            ]
            if rows:
                names = [r["username"] for r in rows]
                gq = select(dis.c.username, dis.c.domain, dis.c.grp).where(dis.c.username.in_(names))
                groups: dict[tuple[str, str], list[str]] = {}
                for u, d, g in await c.execute(gq):
                    groups.setdefault((u, d), []).append(g)
                for r in rows:
                    r["groups"] = sorted(groups.get((r["username"], r["domain"]), []))
            return Page(rows, total, page, size)

        return await run(self.url, op, write=False)

    async def set_group(self, username: str, domain: str, group: str, member: bool) -> None:
        if member:
            await provisioning.grant(self.url, username, domain, [group])
        else:
            await provisioning.revoke(self.url, username, domain, group)

    async def delete_user(self, username: str, domain: str) -> bool:
        """serweb's delete_sip_user: the same as ``serctl rm``."""
        return await provisioning.remove_user(self.url, username, domain)

    # -- sign-up -----------------------------------------------------------------
    async def name_taken(self, username: str, domain: str) -> bool:
        return await provisioning.name_taken(self.url, username, domain)

    async def add_pending(
        self, username: str, domain: str, password: str, email: str, first: str, last: str
    ) -> str:
        code = secrets.token_urlsafe(24)
        p = schema.pending

        async def op(c: AsyncConnection) -> None:
            # an unconfirmed reservation older than a day may be taken again
            await c.execute(
                delete(p).where(
                    p.c.username == username,
                    p.c.domain == domain,
                    p.c.datetime_created < now() - timedelta(days=1),
                )
            )
            await c.execute(
                insert(p).values(
                    **subscriber_row(username, domain, password, email, now()),
                    first_name=first,
                    last_name=last,
                    confirmation=code,
                )
            )

        await run(self.url, op)
        return code

    async def confirm(self, code: str) -> tuple[str, str] | None:
        """Move the pending row with this code into subscriber."""
        p = schema.pending
        names = [c.name for c in p.columns]

        async def op(c: AsyncConnection) -> tuple[str, str] | None:
            row = (
                await c.execute(
                    select(p).where(
                        p.c.confirmation == code, p.c.datetime_created >= now() - timedelta(days=1)
                    )
                )
            ).first()
            if row is None:
                return None
            values = {n: row._mapping[n] for n in names}
            u, d = values["username"], values["domain"]
            values.update(confirmation="", datetime_created=now(), datetime_modified=now())
            await add_subscriber_in(c, values)
            await c.execute(delete(p).where(p.c.username == u, p.c.domain == d))
            return u, d

        return await run(self.url, op)

    # -- phonebook -----------------------------------------------------------------
    async def phonebook(self, username: str, domain: str) -> list[dict[str, Any]]:
        pb = schema.phonebook

        async def op(c: AsyncConnection) -> list[dict[str, Any]]:
            rows = await c.execute(
                select(pb.c.id, pb.c.fname, pb.c.lname, pb.c.sip_uri)
                .where(pb.c.username == username, pb.c.domain == domain)
                .order_by(pb.c.lname, pb.c.fname, pb.c.id)
                .limit(500)
            )
            return [dict(r._mapping) for r in rows]

        return await run(self.url, op, write=False)

    async def phonebook_entry(self, username: str, domain: str, entry: int) -> dict[str, Any] | None:
        pb = schema.phonebook

        async def op(c: AsyncConnection) -> dict[str, Any] | None:
            row = (
                await c.execute(
                    select(pb.c.id, pb.c.fname, pb.c.lname, pb.c.sip_uri).where(
                        pb.c.id == entry, pb.c.username == username, pb.c.domain == domain
                    )
                )
            ).first()
            return dict(row._mapping) if row else None

        return await run(self.url, op, write=False)

    async def phonebook_add(self, username: str, domain: str, fname: str, lname: str, uri: str) -> None:
        async def op(c: AsyncConnection) -> None:
            await c.execute(
                insert(schema.phonebook).values(
                    username=username, domain=domain, fname=fname, lname=lname, sip_uri=uri
                )
            )

        await run(self.url, op)

    async def phonebook_delete(self, username: str, domain: str, entry: int) -> None:
        pb = schema.phonebook

        async def op(c: AsyncConnection) -> None:
            await c.execute(
                delete(pb).where(pb.c.id == entry, pb.c.username == username, pb.c.domain == domain)
            )

        await run(self.url, op)

    # -- call lists (acc, missed_calls) ------------------------------------------------
    async def calls(self, table: str, username: str, domain: str, page: int, size: int) -> Page:
        t = schema.missed_calls if table == "missed_calls" else schema.acc
        cond = and_(t.c.username == username, t.c.domain == domain)
        if table == "acc":
            cond = and_(cond, t.c.sip_method == "INVITE")

        async def op(c: AsyncConnection) -> Page:
            total = (await c.execute(select(func.count()).select_from(t).where(cond))).scalar_one()
            rows = await c.execute(
                select(
                    t.c.time,
                    t.c.from_uri,
                    t.c.to_uri,
                    t.c.sip_from,
                    t.c.sip_to,
                    t.c.sip_status,
                    t.c.sip_method,
                )
                .where(cond)
                .order_by(t.c.time.desc())
                .limit(size)
                .offset((page - 1) * size)
            )
            return Page([dict(r._mapping) for r in rows], total, page, size)

        return await run(self.url, op, write=False)
