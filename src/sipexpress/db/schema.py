"""SER 0.9's database schema as SQLAlchemy Core tables.

Transcribed from ``scripts/ser_mysql.sh`` (SER 0.9, ``rel_0_9_0``): table
and column names, sizes and the defaults that ``sc`` and serweb rely on when
they insert partial rows.  MySQL's ``'0000-00-00 00:00:00'`` datetime
default is not portable; ``1900-01-01 00:00:00`` stands in for it.

Extensions (documented, additive, nullable): ``location``/``aliases`` carry
``socket`` (the local socket a binding arrived on, ``udp:1.2.3.4:5060``) and
``path`` (RFC 3327 Path header values), hence their version 7 instead of
SER's 6, and ``instance``/``reg_id`` (RFC 5626, as Kamailio's), version 8
(usrloc still accepts 7: without them the outbound identity is not kept).  ``migrate()`` adds those columns to a database made by SER's own
script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    CHAR,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.schema import SchemaItem

metadata = MetaData()

ZERO_DATE = "1900-01-01 00:00:00"  # stands in for MySQL's 0000-00-00
LOCATION_DEFAULT_EXPIRES = "2020-05-28 21:32:15"  # ser_mysql.sh's DEFAULT_LOCATION_EXPIRES
DEFAULT_CALLID = "Default-Call-ID"
DEFAULT_CSEQ = 42

# table -> version this code creates.  SER 0.9's values except location and
# aliases (7: + socket, path; 8: + instance, reg_id).
SCHEMA_VERSIONS: dict[str, int] = {
    "subscriber": 5,
    "reserved": 1,
    "phonebook": 1,
    "pending": 4,
    "missed_calls": 2,
    "location": 8,
    "grp": 2,
    "event": 1,
    "aliases": 8,
    "active_sessions": 1,
    "acc": 2,
    "config": 1,
    "silo": 3,
    "realm": 1,
    "domain": 1,
    "uri": 1,
    "server_monitoring": 1,
    "server_monitoring_agg": 1,
    "trusted": 1,
    "usr_preferences": 2,
    "preferences_types": 1,
    "admin_privileges": 1,
    "calls_forwarding": 1,
    "speed_dial": 2,
}

# the lowest version each user of a table accepts (modules.md "mysql")
REQUIRED_VERSIONS: dict[str, dict[str, int]] = {
    "usrloc": {"location": 7},
    "auth_db": {"subscriber": 3},
    "group": {"grp": 2},
    "domain": {"domain": 1},
    "uri_db": {"uri": 1, "subscriber": 3},
    "acc": {"acc": 2, "missed_calls": 2},
    "msilo": {"silo": 3},
}


def _zero_dt(name: str) -> Column[Any]:
    return Column(name, DateTime, nullable=False, server_default=text(f"'{ZERO_DATE}'"))


def _s(name: str, size: int, default: str = "", nullable: bool = False) -> Column[Any]:
    if nullable:
        return Column(name, String(size), nullable=True)
    return Column(name, String(size), nullable=False, server_default=default)


def _ts(name: str) -> Column[Any]:
    """MySQL ``timestamp(14)``: set to now on insert."""
    return Column(name, DateTime, nullable=False, server_default=func.current_timestamp())


version = Table(
    "version",
    metadata,
    Column("table_name", String(64), nullable=False),
    Column("table_version", SmallInteger, nullable=False, server_default="0"),
)


def _subscriber_like(name: str) -> Table:
    return Table(
        name,
        metadata,
        _s("phplib_id", 32),
        _s("username", 64),
        _s("domain", 128),
        _s("password", 25),
        _s("first_name", 25),
        _s("last_name", 45),
        _s("phone", 15),
        _s("email_address", 50),
        _zero_dt("datetime_created"),
        _zero_dt("datetime_modified"),
        _s("confirmation", 64),
        Column("flag", CHAR(1), nullable=False, server_default="o"),
        _s("sendnotification", 50),
        _s("greeting", 50),
        _s("ha1", 128),
        _s("ha1b", 128),
        Column("allow_find", CHAR(1), nullable=False, server_default="0"),
        _s("timezone", 128, nullable=True),
        _s("rpid", 128, nullable=True),
        Column("domn", Integer, nullable=True),
        _s("uuid", 64, nullable=True),
        PrimaryKeyConstraint("username", "domain"),
        UniqueConstraint("phplib_id", name=f"{name}_phplib_id"),
        Index(f"{name}_user_2", "username"),
    )


subscriber = _subscriber_like("subscriber")
pending = _subscriber_like("pending")


def location_columns() -> list[Column[Any]]:
    """The columns of a usrloc table (``location``, ``aliases``)."""
    return [
        _s("username", 64),
        _s("domain", 128),
        _s("contact", 255),
        _s("received", 255, nullable=True),
        Column("expires", DateTime, nullable=False, server_default=text(f"'{LOCATION_DEFAULT_EXPIRES}'")),
        Column("q", Float, nullable=False, server_default="1.0"),
        _s("callid", 255, DEFAULT_CALLID),
        Column("cseq", Integer, nullable=False, server_default=str(DEFAULT_CSEQ)),
        _ts("last_modified"),
        Column("replicate", Integer, nullable=False, server_default="0"),
        Column("state", SmallInteger, nullable=False, server_default="0"),
        Column("flags", Integer, nullable=False, server_default="0"),
        _s("user_agent", 50),
        _s("socket", 64, nullable=True),  # extension (version 7)
        _s("path", 255, nullable=True),  # extension (version 7)
        # RFC 5626 +sip.instance and reg-id, Kamailio's columns (version 8);
        # optional: usrloc works without them on a version 7 table
        _s("instance", 255, nullable=True),
        Column("reg_id", Integer, nullable=False, server_default="0"),
    ]


location = Table(
    "location", metadata, *location_columns(), PrimaryKeyConstraint("username", "domain", "contact")
)
aliases = Table(
    "aliases",
    metadata,
    *location_columns(),
    PrimaryKeyConstraint("username", "domain", "contact"),
    Index("aliases_contact", "contact"),
)


def _acc_like(name: str, deleted_flags: bool) -> Table:
    cols: list[SchemaItem] = [
        _s("sip_from", 128),
        _s("sip_to", 128),
        _s("sip_status", 128),
        _s("sip_method", 16),
        _s("i_uri", 128),
        _s("o_uri", 128),
        _s("from_uri", 128),
        _s("to_uri", 128),
        _s("sip_callid", 128),
        _s("username", 64),
        _s("domain", 128),
        _s("fromtag", 128),
        _s("totag", 128),
        _zero_dt("time"),
        _ts("timestamp"),
    ]
    if deleted_flags:
        cols += [
            Column("caller_deleted", CHAR(1), nullable=False, server_default="0"),
            Column("callee_deleted", CHAR(1), nullable=False, server_default="0"),
            Index(f"{name}_user", "username", "domain"),
            Index(f"{name}_sip_callid", "sip_callid"),
        ]
    else:
        cols.append(Index("mc_user", "username", "domain"))
    return Table(name, metadata, *cols)


acc = _acc_like("acc", True)
missed_calls = _acc_like("missed_calls", False)

active_sessions = Table(
    "active_sessions",
    metadata,
    _s("sid", 32),
    _s("name", 32),
    Column("val", Text, nullable=True),
    _s("changed", 14),
    PrimaryKeyConstraint("name", "sid"),
    Index("active_sessions_changed", "changed"),
)

event = Table(
    "event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _s("username", 64),
    _s("domain", 128),
    _s("uri", 255),
    _s("description", 255),
)

grp = Table(
    "grp",
    metadata,
    _s("username", 64),
    _s("domain", 128),
    _s("grp", 50),
    _zero_dt("last_modified"),
    PrimaryKeyConstraint("username", "domain", "grp"),
)

phonebook = Table(
    "phonebook",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _s("username", 64),
    _s("domain", 128),
    _s("fname", 32),
    _s("lname", 32),
    _s("sip_uri", 128),
)

reserved = Table(
    "reserved",
    metadata,
    Column("username", CHAR(64), nullable=False, server_default=""),
    UniqueConstraint("username", name="reserved_user2"),
)

config = Table(
    "config",
    metadata,
    Column("attribute", String(32), nullable=False),
    Column("value", String(128), nullable=False),
    _s("username", 64),
    _s("domain", 128),
    Column("modified", DateTime, nullable=True, server_default=func.current_timestamp()),
)

silo = Table(
    "silo",
    metadata,
    Column("mid", Integer, primary_key=True, autoincrement=True),
    _s("src_addr", 255),
    _s("dst_addr", 255),
    _s("r_uri", 255),
    _s("username", 64),
    _s("domain", 128),
    Column("inc_time", Integer, nullable=False, server_default="0"),
    Column("exp_time", Integer, nullable=False, server_default="0"),
    _s("ctype", 32, "text/plain"),
    Column("body", LargeBinary, nullable=True),
)

domain = Table(
    "domain",
    metadata,
    _s("domain", 128),
    _zero_dt("last_modified"),
    PrimaryKeyConstraint("domain"),
)

uri = Table(
    "uri",
    metadata,
    _s("username", 64),
    _s("domain", 128),
    _s("uri_user", 50),
    _zero_dt("last_modified"),
    PrimaryKeyConstraint("username", "domain", "uri_user"),
)

server_monitoring = Table(
    "server_monitoring",
    metadata,
    _zero_dt("time"),
    Column("id", Integer, nullable=False, server_default="0", autoincrement=False),
    _s("param", 32),
    Column("value", Integer, nullable=False, server_default="0"),
    Column("increment", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("id", "param"),
)

server_monitoring_agg = Table(
    "server_monitoring_agg",
    metadata,
    _s("param", 32),
    *(
        Column(n, Integer, nullable=False, server_default="0")
        for n in ("s_value", "s_increment", "last_aggregated_increment")
    ),
    Column("av", Float, nullable=False, server_default="0"),
    Column("mv", Integer, nullable=False, server_default="0"),
    Column("ad", Float, nullable=False, server_default="0"),
    *(
        Column(n, Integer, nullable=False, server_default="0")
        for n in ("lv", "min_val", "max_val", "min_inc", "max_inc")
    ),
    _zero_dt("lastupdate"),
    PrimaryKeyConstraint("param"),
)

usr_preferences = Table(
    "usr_preferences",
    metadata,
    _s("uuid", 64),
    _s("username", 100, "0"),
    _s("domain", 128),
    _s("attribute", 32),
    _s("value", 128),
    Column("type", Integer, nullable=False, server_default="0"),
    _ts("modified"),
    PrimaryKeyConstraint("attribute", "username", "domain"),
)

preferences_types = Table(
    "preferences_types",
    metadata,
    _s("att_name", 50),
    _s("att_rich_type", 32, "string"),
    Column("att_raw_type", Integer, nullable=False, server_default="2"),
    Column("att_type_spec", Text, nullable=True),
    _s("default_value", 100),
    PrimaryKeyConstraint("att_name"),
)

trusted = Table(
    "trusted",
    metadata,
    Column("src_ip", String(39), nullable=False),
    Column("proto", String(4), nullable=False),
    Column("from_pattern", String(64), nullable=False),
    PrimaryKeyConstraint("src_ip", "proto", "from_pattern"),
)

admin_privileges = Table(
    "admin_privileges",
    metadata,
    _s("username", 64),
    _s("domain", 128),
    _s("priv_name", 64),
    _s("priv_value", 64),
    PrimaryKeyConstraint("username", "priv_name", "priv_value", "domain"),
)

calls_forwarding = Table(
    "calls_forwarding",
    metadata,
    _s("username", 64),
    _s("domain", 128),
    _s("uri_re", 128),
    _s("purpose", 32),
    _s("action", 32),
    _s("param1", 128, nullable=True),
    _s("param2", 128, nullable=True),
    PrimaryKeyConstraint("username", "domain", "uri_re", "purpose"),
)

speed_dial = Table(
    "speed_dial",
    metadata,
    _s("username", 64),
    _s("domain", 128),
    _s("sd_username", 64),
    _s("sd_domain", 128),
    _s("new_uri", 192),
    _s("fname", 128),
    _s("lname", 128),
    _s("description", 64),
    PrimaryKeyConstraint("username", "domain", "sd_username", "sd_domain"),
)

# "realm" has a version row in SER 0.9 but no table; keep the row only.
TABLES_WITHOUT_DDL = frozenset({"realm"})


def usrloc_table(name: str, columns: dict[str, str] | None = None, without: Sequence[str] = ()) -> Table:
    """A free-standing Table object for a usrloc table named ``name``
    (``location``, ``aliases`` or any name a script uses), with the column
    names a module configured (usrloc's ``*_column`` parameters), less the
    columns ``without`` (our names: those an older table lacks)."""
    cols = [c for c in location_columns() if c.name not in without]
    if columns:
        for c in cols:
            c.name = c.key = columns.get(c.name, c.name)
    user_c, domain_c, contact_c = cols[0].name, cols[1].name, cols[2].name
    return Table(name, MetaData(), *cols, PrimaryKeyConstraint(user_c, domain_c, contact_c))
