"""Subscribers: what ``serctl add|passwd|rm`` and serweb do to the tables.

``ha1 = md5("user:domain:password")`` and
``ha1b = md5("user@domain:domain:password")`` (lower-case hex), as SER's
``gen_ha1`` computed them; auth_db compares against one of them.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import schema
from sipexpress.db.engine import DEFAULT_TIMEOUT, DbError, run


class UserExists(DbError):
    pass


class UserNotFound(DbError):
    pass


def calc_ha1(username: str, domain: str, password: str) -> str:
    return hashlib.md5(f"{username}:{domain}:{password}".encode()).hexdigest()


def calc_ha1b(username: str, domain: str, password: str) -> str:
    return hashlib.md5(f"{username}@{domain}:{domain}:{password}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Subscriber:
    username: str
    domain: str
    password: str
    ha1: str
    ha1b: str
    email_address: str
    rpid: str | None


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def subscriber_row(username: str, domain: str, password: str, email: str, now: datetime) -> dict[str, Any]:
    """The columns of a new ``subscriber`` (or serweb ``pending``) row:
    the password with its HA1/HA1B digests, as SER's tools wrote them."""
    return {
        "username": username,
        "domain": domain,
        "password": password,
        "ha1": calc_ha1(username, domain, password),
        "ha1b": calc_ha1b(username, domain, password),
        "email_address": email,
        "datetime_created": now,
        "datetime_modified": now,
        "phplib_id": hashlib.md5(f"{username}{domain}{time.time()}{os.getpid()}".encode()).hexdigest(),
    }


async def add_user(
    url: str,
    username: str,
    domain: str,
    password: str,
    email: str = "",
    *,
    uri_entry: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """``serctl add``: insert a subscriber (and, as 0.9's sc did, a ``uri``
    row mapping the user to itself).  Raises :class:`UserExists`."""
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> None:
        n = (
            await conn.execute(
                select(func.count())
                .select_from(sub)
                .where(sub.c.username == username, sub.c.domain == domain)
            )
        ).scalar_one()
        if n:
            raise UserExists(f"user {username}@{domain} already exists")
        now = _now()
        await conn.execute(insert(sub).values(**subscriber_row(username, domain, password, email, now)))
        if uri_entry:
            await conn.execute(
                insert(schema.uri).values(
                    username=username, domain=domain, uri_user=username, last_modified=now
                )
            )

    await run(url, op, timeout)


async def set_password(
    url: str, username: str, domain: str, password: str, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """``serctl passwd``.  Raises :class:`UserNotFound`."""
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> None:
        r = await conn.execute(
            update(sub)
            .where(sub.c.username == username, sub.c.domain == domain)
            .values(
                password=password,
                ha1=calc_ha1(username, domain, password),
                ha1b=calc_ha1b(username, domain, password),
                datetime_modified=_now(),
            )
        )
        if not r.rowcount:
            raise UserNotFound(f"user {username}@{domain} not found")

    await run(url, op, timeout)


async def remove_user(url: str, username: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """``serctl rm`` (SQL part): delete the user's grp, uri and subscriber
    rows.  True if a subscriber row was deleted.  (The caller also issues
    FIFO ``ul_rm location <user>``.)"""

    async def op(conn: AsyncConnection) -> bool:
        for t in (schema.grp, schema.uri):
            await conn.execute(delete(t).where(t.c.username == username, t.c.domain == domain))
        sub = schema.subscriber
        r = await conn.execute(delete(sub).where(sub.c.username == username, sub.c.domain == domain))
        return bool(r.rowcount)

    return await run(url, op, timeout)


async def get_user(
    url: str, username: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Subscriber | None:
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> Subscriber | None:
        row = (
            await conn.execute(
                select(
                    sub.c.username,
                    sub.c.domain,
                    sub.c.password,
                    sub.c.ha1,
                    sub.c.ha1b,
                    sub.c.email_address,
                    sub.c.rpid,
                ).where(sub.c.username == username, sub.c.domain == domain)
            )
        ).first()
        return Subscriber(*row) if row else None

    return await run(url, op, timeout, write=False)


async def list_users(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[Subscriber]:
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> list[Subscriber]:
        rows = await conn.execute(
            select(
                sub.c.username,
                sub.c.domain,
                sub.c.password,
                sub.c.ha1,
                sub.c.ha1b,
                sub.c.email_address,
                sub.c.rpid,
            ).order_by(sub.c.domain, sub.c.username)
        )
        return [Subscriber(*r) for r in rows]

    return await run(url, op, timeout, write=False)
