"""The database layer: SER 0.9's schema (SQLAlchemy Core, async) on SQLite,
MySQL/MariaDB or PostgreSQL.

Public API (used by serctl, the web UI and the DB-backed modules;
provisioning in :mod:`sipexpress.db.provisioning`)::

    await create_all(url)              # serctl db create
    await migrate(url)                 # serctl db migrate
    await check_versions(url, {"location": 7})
    await add_user(url, "jiri", "iptel.org", "secret", "jiri@iptel.org")
    await set_password(url, user, domain, pw); await remove_user(url, user, domain)
    await grant(url, user, domain, ["ld"]); await set_rpid(url, user, domain, rpid)
    await run(url, lambda conn: ..., timeout)   # bounded, raises DbError
    get_engine(url); resolve_db_url(module_param, core.options)

URLs are SER-style (see :mod:`sipexpress.db.engine`); the default database
is ``sqlite:///ser.sqlite`` (a file in the working directory) unless the
global option ``db_url`` or ``$SIPEXPRESS_DB_URL`` says otherwise.
"""

from __future__ import annotations

from sipexpress.db.engine import (
    DEFAULT_DB_URL,
    DEFAULT_TIMEOUT,
    DbDataError,
    DbError,
    DbTimeout,
    DbUnavailable,
    SchemaVersionError,
    default_db_url,
    dispose_engines,
    get_engine,
    make_engine,
    redact,
    resolve_db_url,
    run,
    to_sqlalchemy_url,
)
from sipexpress.db.manage import (
    check_versions,
    create_all,
    create_database,
    drop_database,
    drop_tables,
    migrate,
    table_versions,
)
from sipexpress.db.provisioning import (
    USER_TABLES,
    Subscriber,
    UserExists,
    UserNotFound,
    add_domain,
    add_user,
    calc_ha1,
    calc_ha1b,
    get_user,
    grant,
    group_rows,
    list_users,
    name_taken,
    remove_domain,
    remove_user,
    revoke,
    rpid_rows,
    set_password,
    set_rpid,
)
from sipexpress.db.schema import REQUIRED_VERSIONS, SCHEMA_VERSIONS, metadata

__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_TIMEOUT",
    "REQUIRED_VERSIONS",
    "SCHEMA_VERSIONS",
    "USER_TABLES",
    "DbDataError",
    "DbError",
    "DbTimeout",
    "DbUnavailable",
    "SchemaVersionError",
    "Subscriber",
    "UserExists",
    "UserNotFound",
    "add_domain",
    "add_user",
    "calc_ha1",
    "calc_ha1b",
    "check_versions",
    "create_all",
    "create_database",
    "default_db_url",
    "dispose_engines",
    "drop_database",
    "drop_tables",
    "get_engine",
    "get_user",
    "grant",
    "group_rows",
    "list_users",
    "make_engine",
    "metadata",
    "migrate",
    "name_taken",
    "redact",
    "remove_domain",
    "remove_user",
    "resolve_db_url",
    "revoke",
    "rpid_rows",
    "run",
    "set_password",
    "set_rpid",
    "table_versions",
    "to_sqlalchemy_url",
]
