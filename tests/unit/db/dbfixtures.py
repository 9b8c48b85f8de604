"""Database URLs for tests: a fresh, uniquely named database per test on
SQLite, MariaDB/MySQL (127.0.0.1:3306, root) and PostgreSQL (127.0.0.1:5432,
trust).  A server that is not running skips its tests, unless ``CI`` is
set: then they fail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipexpress.db import dispose_engines, drop_database
from tests.support import IN_CI

MYSQL_HOST = os.environ.get("SIPEXPRESS_TEST_MYSQL", "root@127.0.0.1:3306")
PG_HOST = os.environ.get("SIPEXPRESS_TEST_PG", "postgres@127.0.0.1:5432")

BACKENDS = ["sqlite", "mysql", "postgres"]


def _up(hostport: str) -> bool:
    host, _, port = hostport.rpartition("@")[2].partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def new_db_url(kind: str, tmp_path: Path) -> str:
    name = f"sipx_test_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.sqlite')}"
    hostport = MYSQL_HOST if kind == "mysql" else PG_HOST
    if not _up(hostport):
        if IN_CI:
            pytest.fail(f"{kind} server at {hostport} is required in CI")
        pytest.skip(f"{kind} server at {hostport} not running")
    scheme = "mysql" if kind == "mysql" else "postgresql"
    return f"{scheme}://{hostport}/{name}"


async def cleanup(url: str) -> None:
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
