"""Database URLs for tests: a fresh, uniquely named database per test on
SQLite, MariaDB/MySQL (127.0.0.1:3306, root) and PostgreSQL (127.0.0.1:5432,
trust), or a unique key prefix in Redis (127.0.0.1:6379).  A server that is not running skips its tests, unless ``CI`` is
set: then they fail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sipexpress.db import create_all, dispose_engines, drop_database
from tests.support import IN_CI

MYSQL_HOST = os.environ.get("SIPEXPRESS_TEST_MYSQL", "root@127.0.0.1:3306")
PG_HOST = os.environ.get("SIPEXPRESS_TEST_PG", "postgres@127.0.0.1:5432")

REDIS_HOST = os.environ.get("SIPEXPRESS_TEST_REDIS", "127.0.0.1:6379")

BACKENDS = ["sqlite", "mysql", "postgres"]


async def drop_redis_keys(url: str) -> None:
    """Remove every key under the URL's prefix (a test's whole location)."""
    import redis.asyncio as aioredis

    from sipexpress.modules.usrloc.redis_store import split_url

    client_url, prefix = split_url(url)
    assert prefix, "a test's Redis URL must have its own prefix"
    client = aioredis.Redis.from_url(client_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _up(hostport: str) -> bool:
    host, _, port = hostport.rpartition("@")[2].partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def new_db_url(kind: str, tmp_path: Path) -> str:
    """A fresh database: ``sqlite``, ``mysql``, ``postgres``, or ``redis``
    (a unique key prefix in database 0, removed by :func:`cleanup`)."""
    name = f"sipx_test_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.sqlite')}"
    hostport = {"mysql": MYSQL_HOST, "postgres": PG_HOST, "redis": REDIS_HOST}[kind]
    if not _up(hostport):
        if IN_CI:
            pytest.fail(f"{kind} server at {hostport} is required in CI")
        pytest.skip(f"{kind} server at {hostport} not running")
    if kind == "redis":
        return f"redis://{hostport}/0?prefix={name}:"
    scheme = "mysql" if kind == "mysql" else "postgresql"
    return f"{scheme}://{hostport}/{name}"


async def cleanup(url: str) -> None:
    if url.startswith("redis://"):
        await drop_redis_keys(url)
        return
    await dispose_engines()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(drop_database(url), 20)


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty, uniquely named database (created by the test
    through create_all/migrate) on each backend."""
    url = new_db_url(request.param, tmp_path)
    yield url
    await cleanup(url)


@pytest.fixture(params=[*BACKENDS, "redis"])
async def location_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """:func:`db_url` and Redis: where usrloc can keep its bindings.  The
    SQL databases have their tables (create_all)."""
    url = new_db_url(request.param, tmp_path)
    if request.param != "redis":
        await create_all(url)
    yield url
    await cleanup(url)


def prepared_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """For a synchronous fixture (a test that starts ``ser`` processes): a
    fresh database of ``kind`` with its tables (none needed in Redis),
    removed afterwards.  ``yield from prepared_url(...)``."""
    url = new_db_url(kind, tmp_path)

    async def create() -> None:
        try:
            await create_all(url)
        finally:
            await dispose_engines()

    if kind != "redis":
        asyncio.run(create())
    yield url
    asyncio.run(cleanup(url))
