"""SER's database driver modules (``mysql.so``, ``postgres.so``).

SER loaded a driver module before any module that used the database.  Here
the database layer picks its driver from each ``db_url``'s scheme, so these
modules only make old configs load; their SER parameters are accepted.
"""

from __future__ import annotations

from sipexpress.core.registry import Module, Param


class MysqlModule(Module):
    name = "mysql"
    params = (
        Param("ping_interval", int, 300, "accepted for SER compatibility; the pool checks connections"),
        Param("auto_reconnect", int, 1, "accepted for SER compatibility; the pool reconnects"),
    )


class PostgresModule(Module):
    name = "postgres"
    params = MysqlModule.params
