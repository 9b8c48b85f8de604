"""Async engines from SER-style database URLs, with bounded waiting.

SER URLs name the database as SER did (``mysql://ser:heslo@localhost/ser``)
and we add ``sqlite:///path`` and ``postgres[ql]://``.  Each maps to an
async SQLAlchemy driver:

=====================================  ========================================
SER-style URL                          SQLAlchemy URL
=====================================  ========================================
``sqlite:///ser.sqlite`` (relative)    ``sqlite+aiosqlite:///ser.sqlite``
``sqlite:////var/lib/ser.sqlite``      ``sqlite+aiosqlite:////var/lib/ser.sqlite``
``mysql://user:pw@host[:port]/db``     ``mysql+asyncmy://…?charset=utf8mb4``
``postgres://`` / ``postgresql://``    ``postgresql+asyncpg://…``
=====================================  ========================================

The default database (global option ``db_url``; modules' ``db_url``
parameter, when empty, falls back to it) is :data:`DEFAULT_DB_URL`, the
SQLite file ``ser.sqlite`` in the working directory, unless the environment
variable ``SIPEXPRESS_DB_URL`` names another.

Nothing here may stall SIP processing: every operation made through
:func:`run` is bounded by a timeout (connect timeouts are set on the driver
too) and raises :class:`DbTimeout` / :class:`DbUnavailable`, both
:class:`DbError`.  Callers turn those into a 500 reply or a negative return.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

DEFAULT_DB_URL = "sqlite:///ser.sqlite"
DEFAULT_TIMEOUT = 3.0  # seconds any one database operation may take

T = TypeVar("T")


class DbError(Exception):
    """A database operation failed (root of this package's errors)."""


class DbUnavailable(DbError):
    """The database could not be reached or refused the operation."""


class DbTimeout(DbUnavailable):
    """The database did not answer in time."""


class DbDataError(DbError):
    """The database refused the data (too long, constraint, bad SQL): the
    database itself is fine, retrying the same statement will not help."""


class SchemaVersionError(DbError):
    """A table is missing or older than the code needs (run ``serctl db migrate``)."""


def default_db_url(options: dict[str, Any] | None = None) -> str:
    """The global default: option ``db_url``, else ``$SIPEXPRESS_DB_URL``,
    else :data:`DEFAULT_DB_URL`."""
    if options:
        url = options.get("db_url")
        if url:
            return str(url)
    return os.environ.get("SIPEXPRESS_DB_URL") or DEFAULT_DB_URL


def resolve_db_url(module_url: str | None, options: dict[str, Any] | None = None) -> str:
    """A module's ``db_url`` parameter, or the global default when empty."""
    return module_url or default_db_url(options)


def to_sqlalchemy_url(url: str) -> str:
    """Map a SER-style URL to an async SQLAlchemy URL (see the module doc).
    URLs that already name a driver (``scheme+driver://``) pass unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DbError(f"invalid database URL {url!r}")
    scheme = scheme.lower()
    if "+" in scheme:
        return url
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme == "mysql":
        u = f"mysql+asyncmy://{rest}"
        if "charset=" not in rest:
            u += ("&" if "?" in rest else "?") + "charset=utf8mb4"
        return u
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+asyncpg://{rest}"
    raise DbError(f"unsupported database URL scheme {scheme!r} in {url!r}")


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    try:
        return make_url(to_sqlalchemy_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<invalid database URL>"


def _connect_args(sa_url: str, timeout: float) -> dict[str, Any]:
    if sa_url.startswith("mysql+asyncmy"):
        return {"connect_timeout": max(1, int(timeout))}
    if sa_url.startswith("postgresql+asyncpg"):
        return {"timeout": timeout, "command_timeout": timeout}
    if sa_url.startswith("sqlite+aiosqlite"):
        return {"timeout": timeout}
    return {}


_engines: dict[tuple[str, int], AsyncEngine] = {}


def make_engine(url: str, timeout: float = DEFAULT_TIMEOUT) -> AsyncEngine:
    """A new async engine for a SER-style URL (caller disposes it)."""
    sa_url = to_sqlalchemy_url(url)
    kwargs: dict[str, Any] = {"connect_args": _connect_args(sa_url, timeout), "pool_pre_ping": False}
    if not sa_url.startswith("sqlite"):
        kwargs.update(pool_size=4, max_overflow=4, pool_timeout=timeout, pool_recycle=3600)
    engine = create_async_engine(sa_url, **kwargs)
    if sa_url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            # WAL survives a killed process; NORMAL sync keeps writes cheap.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def get_engine(url: str, timeout: float = DEFAULT_TIMEOUT) -> AsyncEngine:
    """The shared engine for ``url`` in the running event loop."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (url, loop_id)
    eng = _engines.get(key)
    if eng is None:
        eng = _engines[key] = make_engine(url, timeout)
    return eng


_autocommit_engines: dict[int, AsyncEngine] = {}


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The engine's autocommit view (same pool), made once."""
    ac = _autocommit_engines.get(id(engine))
    if ac is None:
        ac = _autocommit_engines[id(engine)] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return ac


async def dispose_engines() -> None:
    """Close every shared engine (at shutdown, and between tests)."""
    engines = list(_engines.values())
    _engines.clear()
    _autocommit_engines.clear()
    for e in engines:
        with contextlib.suppress(Exception):
            await e.dispose()


async def run(
    url: str,
    fn: Callable[[AsyncConnection], Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    write: bool = True,
    single: bool = False,
) -> T:
    """Run ``fn(conn)`` in a transaction (committed when ``write``) on the
    shared engine, bounded by ``timeout``.  ``single``: ``fn`` is one
    SELECT, which PostgreSQL then runs without BEGIN and ROLLBACK (one
    round trip instead of three: usrloc's db_mode 3 look-up).  Raises
    :class:`DbTimeout` or :class:`DbUnavailable` instead of driver errors."""
    engine = get_engine(url, timeout)
    if single and not write and engine.dialect.name == "postgresql":
        engine = _autocommit(engine)

    async def op() -> T:
        if write:
            async with engine.begin() as conn:
                return await fn(conn)
        async with engine.connect() as conn:
            return await fn(conn)

    try:
        return await asyncio.wait_for(op(), timeout)
    except TimeoutError:
        raise DbTimeout(f"database {redact(url)} did not answer within {timeout:g} s") from None
    except (DataError, IntegrityError, ProgrammingError) as e:
        raise DbDataError(f"database {redact(url)}: {_short(e)}") from e
    except (DBAPIError, OSError, SQLAlchemyError) as e:
        if _is_data_error(e):
            raise DbDataError(f"database {redact(url)}: {_short(e)}") from e
        raise DbUnavailable(f"database {redact(url)}: {_short(e)}") from e


def _is_data_error(e: BaseException) -> bool:
    """SQLSTATE class 22 (data), 23 (constraint) or 42 (syntax/schema), as
    asyncpg reports them through a generic DBAPIError."""
    state = getattr(getattr(e, "orig", None), "sqlstate", None)
    return isinstance(state, str) and state[:2] in ("22", "23", "42")


def _short(e: BaseException) -> str:
    msg = str(getattr(e, "orig", None) or e)
    return msg.splitlines()[0] if msg else type(e).__name__


def server_url(url: str) -> tuple[str, str]:
    """For MySQL/PostgreSQL: (URL of the server's maintenance database,
    database name).  Used to create or drop the database itself."""
    u = make_url(to_sqlalchemy_url(url))
    name = u.database or ""
    admin = u.set(database="postgres") if u.drivername.startswith("postgresql") else u.set(database="")
    return admin.render_as_string(hide_password=False), name


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None for other databases and ``:memory:``):
    readers check it exists first, since connecting creates an empty one."""
    u = make_url(to_sqlalchemy_url(url))
    if not u.drivername.startswith("sqlite") or u.database in (None, "", ":memory:"):
        return None
    return str(u.database)


def quote_ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise DbError(f"refusing odd database name {name!r}")
    return name


__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_TIMEOUT",
    "DbDataError",
    "DbError",
    "DbTimeout",
    "DbUnavailable",
    "SchemaVersionError",
    "default_db_url",
    "dispose_engines",
    "get_engine",
    "make_engine",
    "redact",
    "resolve_db_url",
    "run",
    "server_url",
    "sqlite_file",
    "to_sqlalchemy_url",
]
