"""Provisioning: what adding, changing and deleting a subscriber, its
groups, Remote-Party-ID and the served domains do to SER's tables.  serctl,
serweb and ``serctl db create`` all call these, so that "delete a user"
means one thing everywhere.

``ha1 = md5("user:domain:password")`` and
``ha1b = md5("user@domain:domain:password")`` (lower-case hex), as SER's
``gen_ha1`` computed them; auth_db compares against one of them.

Each call is one transaction (:func:`sipexpress.db.engine.run`) and raises
``DbError`` subclasses; the ``*_in`` helpers take an open connection, for
callers that provision as part of a larger transaction (serweb's sign-up
confirmation, ``db create``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sipexpress.db import schema
from sipexpress.db.engine import DEFAULT_TIMEOUT, DbError, run


class UserExists(DbError):
    pass


class UserNotFound(DbError):
    pass


# The tables whose rows belong to one subscriber, keyed by (username,
# domain): the union of what 0.9's ``sc rm`` (grp, uri; location through
# ``ul_rm``) and serweb's ``delete_sip_user`` removed.  ``acc`` stays: the
# caller's accounting records outlive the account, as they did in serweb.
USER_TABLES: tuple[Table, ...] = (
    schema.grp,
    schema.uri,
    schema.location,
    schema.phonebook,
    schema.missed_calls,
    schema.usr_preferences,
    schema.admin_privileges,
    schema.speed_dial,
    schema.calls_forwarding,
    schema.event,
    schema.silo,
)


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


def now() -> datetime:
    """A timestamp as SER's tables keep them (whole seconds, local time)."""
    return datetime.now().replace(microsecond=0)


def _of(t: Table, username: str, domain: str) -> ColumnElement[bool]:
    return (t.c.username == username) & (t.c.domain == domain)


def subscriber_row(username: str, domain: str, password: str, email: str, when: datetime) -> dict[str, Any]:
    """The columns of a new ``subscriber`` (or serweb ``pending``) row:
    the password with its HA1/HA1B digests, as SER's tools wrote them."""
    return {
        "username": username,
        "domain": domain,
        "password": password,
        "ha1": calc_ha1(username, domain, password),
        "ha1b": calc_ha1b(username, domain, password),
        "email_address": email,
        "datetime_created": when,
        "datetime_modified": when,
        "phplib_id": hashlib.md5(f"{username}{domain}{time.time()}{os.getpid()}".encode()).hexdigest(),
    }


async def subscriber_exists_in(conn: AsyncConnection, username: str, domain: str) -> bool:
    sub = schema.subscriber
    n = (
        await conn.execute(select(func.count()).select_from(sub).where(_of(sub, username, domain)))
    ).scalar_one()
    return bool(n)


async def name_taken(url: str, username: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether a new user or alias may not take this name: a subscriber, a
    sign-up awaiting confirmation (``pending``) or a ``reserved`` name."""
    pending, reserved = schema.pending, schema.reserved

    async def op(conn: AsyncConnection) -> bool:
        if await subscriber_exists_in(conn, username, domain):
            return True
        for q in (
            select(func.count()).select_from(pending).where(_of(pending, username, domain)),
            select(func.count()).select_from(reserved).where(reserved.c.username == username),
        ):
            if (await conn.execute(q)).scalar_one():
                return True
        return False

    return await run(url, op, timeout, write=False)


async def add_subscriber_in(conn: AsyncConnection, row: dict[str, Any], *, uri_entry: bool = True) -> None:
    """Insert a ``subscriber`` row (and, as 0.9's sc did, a ``uri`` row
    mapping the user to itself).  Raises :class:`UserExists`."""
    u, d = row["username"], row["domain"]
    if await subscriber_exists_in(conn, u, d):
        raise UserExists(f"user {u}@{d} already exists")
    await conn.execute(insert(schema.subscriber).values(**row))
    if uri_entry:
        await conn.execute(insert(schema.uri).values(username=u, domain=d, uri_user=u, last_modified=now()))


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
    """``serctl add``, serweb's admin "add user".  Raises :class:`UserExists`."""
    row = subscriber_row(username, domain, password, email, now())

    async def op(conn: AsyncConnection) -> None:
        await add_subscriber_in(conn, row, uri_entry=uri_entry)

    await run(url, op, timeout)


async def set_password(
    url: str, username: str, domain: str, password: str, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """``serctl passwd``, serweb's password change.  Raises :class:`UserNotFound`."""
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> None:
        r = await conn.execute(
            update(sub)
            .where(_of(sub, username, domain))
            .values(
                password=password,
                ha1=calc_ha1(username, domain, password),
                ha1b=calc_ha1b(username, domain, password),
                datetime_modified=now(),
            )
        )
        if not r.rowcount:
            raise UserNotFound(f"user {username}@{domain} not found")

    await run(url, op, timeout)


async def remove_user(url: str, username: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """``serctl rm``, serweb's "delete user": the subscriber and its rows in
    every :data:`USER_TABLES` table, the aliases that point to it, in one
    transaction.  True if a subscriber row was deleted.  (The caller also
    asks a running server to drop the contacts it holds in memory: FIFO
    ``ul_rm location <user>``.)"""
    me = f"sip:{username}@{domain}"

    async def op(conn: AsyncConnection) -> bool:
        for t in USER_TABLES:
            cond = _of(t, username, domain)
            if t is schema.location:  # usrloc without use_domain keeps the domain empty
                cond = (t.c.username == username) & or_(t.c.domain == domain, t.c.domain == "")
            await conn.execute(delete(t).where(cond))
        al = schema.aliases
        await conn.execute(delete(al).where(func.lower(al.c.contact) == me.lower()))
        sub = schema.subscriber
        r = await conn.execute(delete(sub).where(_of(sub, username, domain)))
        return bool(r.rowcount)

    return await run(url, op, timeout)


_SUBSCRIBER_COLUMNS = (
    schema.subscriber.c.username,
    schema.subscriber.c.domain,
    schema.subscriber.c.password,
    schema.subscriber.c.ha1,
    schema.subscriber.c.ha1b,
    schema.subscriber.c.email_address,
    schema.subscriber.c.rpid,
)


async def get_user(
    url: str, username: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT
) -> Subscriber | None:
    q = select(*_SUBSCRIBER_COLUMNS).where(_of(schema.subscriber, username, domain))

    async def op(conn: AsyncConnection) -> Subscriber | None:
        row = (await conn.execute(q)).first()
        return Subscriber(*row) if row else None

    return await run(url, op, timeout, write=False)


async def list_users(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> list[Subscriber]:
    sub = schema.subscriber
    q = select(*_SUBSCRIBER_COLUMNS).order_by(sub.c.domain, sub.c.username)

    async def op(conn: AsyncConnection) -> list[Subscriber]:
        return [Subscriber(*r) for r in await conn.execute(q)]

    return await run(url, op, timeout, write=False)


async def _rows(url: str, q: Any, timeout: float) -> list[dict[str, Any]]:
    async def op(conn: AsyncConnection) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in await conn.execute(q)]

    return await run(url, op, timeout, write=False)


# -- groups (ACLs, table grp) -----------------------------------------------------


async def group_rows(
    url: str, user: tuple[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """``serctl acl show``: the grp rows of ``(username, domain)``, or all."""
    g = schema.grp
    q = select(g).order_by(g.c.username, g.c.grp)
    if user is not None:
        q = q.where(_of(g, *user))
    return await _rows(url, q, timeout)


async def grant(
    url: str, username: str, domain: str, groups: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Make the user a member of ``groups`` (those it is in already stay as they are)."""
    g = schema.grp
    wanted = list(groups)

    async def op(conn: AsyncConnection) -> None:
        have = {r[0] for r in await conn.execute(select(g.c.grp).where(_of(g, username, domain)))}
        for name in wanted:
            if name not in have:
                have.add(name)
                await conn.execute(
                    insert(g).values(username=username, domain=domain, grp=name, last_modified=now())
                )

    await run(url, op, timeout)


async def revoke(
    url: str, username: str, domain: str, group: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Take the user out of ``group`` (out of every group when None)."""
    g = schema.grp
    cond = _of(g, username, domain)
    if group is not None:
        cond = cond & (g.c.grp == group)

    async def op(conn: AsyncConnection) -> None:
        await conn.execute(delete(g).where(cond))

    await run(url, op, timeout)


# -- Remote-Party-ID (subscriber.rpid) ----------------------------------------------


async def set_rpid(
    url: str, username: str, domain: str, rpid: str | None, *, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Set (None: clear) the user's Remote-Party-ID.  False if there is no such user."""
    sub = schema.subscriber

    async def op(conn: AsyncConnection) -> bool:
        r = await conn.execute(update(sub).where(_of(sub, username, domain)).values(rpid=rpid))
        return bool(r.rowcount)

    return await run(url, op, timeout)


async def rpid_rows(
    url: str, user: tuple[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    sub = schema.subscriber
    q = select(sub.c.username, sub.c.rpid).order_by(sub.c.username)
    if user is not None:
        q = q.where(_of(sub, *user))
    return await _rows(url, q, timeout)


# -- served domains (table domain) ----------------------------------------------------


async def add_domain(url: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    async def op(conn: AsyncConnection) -> None:
        await conn.execute(insert(schema.domain).values(domain=domain, last_modified=now()))

    await run(url, op, timeout)


async def remove_domain(url: str, domain: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    t = schema.domain

    async def op(conn: AsyncConnection) -> None:
        await conn.execute(delete(t).where(t.c.domain == domain))

    await run(url, op, timeout)
