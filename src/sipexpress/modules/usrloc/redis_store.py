"""usrloc in Redis: :class:`RedisLocationStore`, a :class:`LocationStore`
that several ``ser`` nodes share (``db_url "redis://host:port/db"``).

Key layout (the shape Kamailio's ``db_redis`` gives the ``location`` table
with ``keys "location=entry:ruid&usrdom:username,domain"``, so ``redis-cli``
reads the same way for an operator of either; we have no ruid, so an entry
is keyed by user, domain and contact):

* ``<table>:entry::<user>:<domain>:<contact>`` — a hash, one per binding.
  Its fields are the :class:`Ucontact` fields by name (``aor``, ``uri``,
  ``expires`` (absolute, epoch seconds), ``q`` (thousandths, -1
  unspecified), ``callid``, ``cseq``, ``flags``, ``user_agent``,
  ``received``, ``path``, ``socket``, ``source`` …); a field that is
  ``None`` is absent.  The key carries the binding's expiry as a Redis TTL
  (``PEXPIREAT expires``): Redis removes an expired contact by itself.
  Permanent bindings (``FL_PERMANENT``) have no TTL.
* ``<table>:usrdom::<user>:<domain>`` — a set of the AOR's entry keys.  Its
  TTL is that of its longest-living contact, so the whole AOR goes with its
  last contact.  ``<domain>`` is empty without ``use_domain``.

An optional key prefix (``redis://…/0?prefix=site1:``, an extension) keeps
several independent location services in one Redis database.

Every change of a batch (up to :data:`WRITE_CHUNK` AORs: a write-back
flush of more is several) is one Lua script (atomic, one round trip); the
look-up of an AOR is one script too.  Fields a hash has that this version's
:class:`Ucontact` does not know (a newer node's) are ignored on reading.  The fields are written from the
dataclass's fields and read back through their type hints: a field another
module adds to :class:`Ucontact` is stored without a change here.

Errors: unreachable, slow (past ``timeout``) or refusing Redis raises
:class:`DbUnavailable`/:class:`DbTimeout`, as the SQL store does; the
client reconnects by itself when Redis is back.  Needs Redis >= 7.0
(``PEXPIRETIME``); scripts touch keys they find in the index set, so the
store wants one Redis (or a primary with replicas), not a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError as RedisDataError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sipexpress.core.registry import ConfigError
from sipexpress.db.engine import DEFAULT_TIMEOUT, DbDataError, DbTimeout, DbUnavailable
from sipexpress.modules.usrloc.records import FL_PERMANENT, CState, Ucontact

T = TypeVar("T")

# -- Ucontact <-> hash fields, from the dataclass itself ----------------------------
Codec = tuple[Callable[[Any], str], Callable[[str], Any]]


def _codec(tp: Any) -> Codec:
    """How a field of type ``tp`` becomes a hash value and back: numbers and
    strings as text (what an operator reads in redis-cli), enums by value,
    anything else as JSON.  ``X | None``: None is an absent field."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _codec(args[0] if len(args) == 1 else Any)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        enum_type = tp
        return (lambda v: str(int(v)), lambda s: enum_type(int(s)))
    if tp is int:
        return (str, int)
    if tp is float:
        return (repr, float)
    if tp is str:
        return (str, str)
    if typing.get_origin(tp) is tuple:
        return (json.dumps, lambda s: tuple(json.loads(s)))
    return (json.dumps, json.loads)


#: every Ucontact field but the state towards the store (always "in sync"
#: when read back)
FIELDS: dict[str, Codec] = {
    f.name: _codec(hint)
    for f in dataclasses.fields(Ucontact)
    for hint in [typing.get_type_hints(Ucontact)[f.name]]
    if f.name != "state"
}


def encode(c: Ucontact) -> list[str]:
    """``[field, value, field, value …]`` of the fields that are not None."""
    out: list[str] = []
    for name, (enc, _) in FIELDS.items():
        v = getattr(c, name)
        if v is not None:
            out += (name, enc(v))
    return out


def decode(h: dict[str, str]) -> Ucontact:
    kw = {name: FIELDS[name][1](v) for name, v in h.items() if name in FIELDS}
    return Ucontact(**kw, state=CState.CS_SYNC)


# -- Lua: each a single atomic step --------------------------------------------------
# KEYS: per AOR its set, the entry keys to delete, the entry keys to write.
# ARGV[1]: number of AORs; per AOR: ndel, nup; per write: expire-at (ms, 0 =
# permanent), number of fields, field, value ...
# Afterwards the set lives as long as its longest-living contact.
WRITE_LUA = """
local k, a = 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local set = KEYS[k]
  k = k + 1
  local ndel, nup = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, ndel do
    redis.call('DEL', KEYS[k])
    redis.call('SREM', set, KEYS[k])
    k = k + 1
  end
  for _ = 1, nup do
    local key = KEYS[k]
    k = k + 1
    local at, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(ARGV, a + 2, a + 1 + 2 * n))
    if at > 0 then redis.call('PEXPIREAT', key, at) end
    redis.call('SADD', set, key)
    a = a + 2 + 2 * n
  end
  local last = 0
  for _, key in ipairs(redis.call('SMEMBERS', set)) do
    local t = redis.call('PEXPIRETIME', key)
    if t == -2 then
      redis.call('SREM', set, key)
    elseif t == -1 then
      last = -1
    elseif last ~= -1 and t > last then
      last = t
    end
  end
  if last == -1 then
    redis.call('PERSIST', set)
  elseif last > 0 then
    redis.call('PEXPIREAT', set, last)
  end
end
return 0
"""

# KEYS[1]: an AOR's set -> the hashes (flat field/value arrays) of its contacts
GET_LUA = """
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HGETALL', key)
  if #h > 0 then out[#out + 1] = h end
end
return out
"""

# KEYS[1]: an AOR's set: remove it and its contacts
DELETE_AOR_LUA = """
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', key) end
return redis.call('DEL', KEYS[1])
"""

#: AORs per write script: a write-back flush of 100 000 bindings must not
#: hold Redis (single-threaded) for seconds
WRITE_CHUNK = 500
SCAN_COUNT = 1000
#: connections to Redis per process
MAX_CONNECTIONS = 32


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def split_url(url: str) -> tuple[str, str]:
    """``redis://h:p/db?prefix=x:`` -> (URL for redis-py, key prefix)."""
    base, sep, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    prefix = "".join(v for k, v in pairs if k == "prefix")
    rest = urlencode([(k, v) for k, v in pairs if k != "prefix"])
    return base + (sep + rest if rest else ""), prefix


class RedisLocationStore:
    """usrloc tables in one Redis database (see the module doc)."""

    def __init__(self, url: str, use_domain: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.use_domain = use_domain
        self.timeout = timeout
        client_url, self.prefix = split_url(url)
        try:
            parts = urlsplit(client_url)
            where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
            self.shown = f"redis {where}" + ("" if parts.scheme == "unix" else parts.path or "/0")
            pool = self._pool(client_url, timeout)
        except ValueError as e:  # the URL, as urllib and redis-py read it
            raise ConfigError(f"usrloc: invalid Redis db_url: {e}") from None
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._write = self.client.register_script(WRITE_LUA)
        self._get = self.client.register_script(GET_LUA)
        self._delete_aor = self.client.register_script(DELETE_AOR_LUA)

    @staticmethod
    def _pool(client_url: str, timeout: float) -> aioredis.BlockingConnectionPool:
        """Requests beyond MAX_CONNECTIONS in flight wait for a connection
        (bounded by the timeout) instead of failing: a REGISTER storm
        queues, it does not open a connection per request."""
        return aioredis.BlockingConnectionPool.from_url(
            client_url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # one immediate retry: a pooled connection that died with a
            # restarted Redis is replaced; a Redis that is down fails fast
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )

    # -- keys --------------------------------------------------------------------------
    def _user_domain(self, aor: str) -> str:
        if self.use_domain:
            user, _, dom = aor.partition("@")
            return f"{user}:{dom}"
        return f"{aor}:"

    def aor_key(self, table: str, aor: str) -> str:
        return f"{self.prefix}{table}:usrdom::{self._user_domain(aor)}"

    def entry_key(self, table: str, aor: str, uri: str) -> str:
        return f"{self.prefix}{table}:entry::{self._user_domain(aor)}:{uri}"

    # -- errors ------------------------------------------------------------------------
    async def _run(self, op: Awaitable[T], timeout: float | None = None) -> T:
        """``op`` bounded by the timeout, redis-py's errors as ours."""
        limit = timeout or self.timeout
        try:
            # a task of its own (wait_for): the core may run a route outside
            # any task, and redis-py's reads need one for their timeouts
            return await asyncio.wait_for(op, limit)
        except (TimeoutError, RedisTimeoutError):
            raise DbTimeout(f"{self.shown} did not answer within {limit:g} s") from None
        except RedisDataError as e:
            raise DbDataError(f"{self.shown}: {e}") from e
        except (RedisConnectionError, RedisError, OSError) as e:
            raise DbUnavailable(f"{self.shown}: {e}") from e

    # -- LocationStore -----------------------------------------------------------------
    async def prepare(self, table: str) -> None:
        """No schema: check that Redis answers."""
        await self._run(self.client.ping())

    async def get(self, table: str, aor: str) -> list[Ucontact]:
        hashes = await self._run(self._get(keys=[self.aor_key(table, aor)]))
        return [decode(dict(zip(h[::2], h[1::2], strict=True))) for h in hashes]

    async def write(
        self, table: str, upserts: Sequence[Ucontact], deletes: Iterable[tuple[str, str]]
    ) -> None:
        by_aor: dict[str, tuple[list[str], list[Ucontact]]] = {}
        for aor, uri in deletes:
            by_aor.setdefault(aor, ([], []))[0].append(uri)
        for c in upserts:
            by_aor.setdefault(c.aor, ([], []))[1].append(c)
        groups = list(by_aor.items())
        for i in range(0, len(groups), WRITE_CHUNK):
            keys: list[str] = []
            args: list[str | int] = [len(groups[i : i + WRITE_CHUNK])]
            for aor, (dels, ups) in groups[i : i + WRITE_CHUNK]:
                keys.append(self.aor_key(table, aor))
                keys += (self.entry_key(table, aor, uri) for uri in dels)
                keys += (self.entry_key(table, aor, c.uri) for c in ups)
                args += (len(dels), len(ups))
                for c in ups:
                    fields = encode(c)
                    args += (0 if c.flags & FL_PERMANENT else int(c.expires) * 1000, len(fields) // 2)
                    args += fields
            await self._run(self._write(keys=keys, args=args), max(self.timeout, len(groups) / 1000))

    async def delete_aor(self, table: str, aor: str) -> None:
        await self._run(self._delete_aor(keys=[self.aor_key(table, aor)]))

    async def delete_expired(self, table: str, now: float) -> int:
        """Nothing to do: Redis drops expired keys itself (TTLs)."""
        return 0

    async def _scan(self, pattern: str) -> list[str]:
        return [k async for k in self.client.scan_iter(match=pattern, count=SCAN_COUNT)]

    async def count_aors(self, table: str) -> int:
        pattern = _glob_escape(f"{self.prefix}{table}:usrdom::") + "*"
        return len(await self._run(self._scan(pattern), max(self.timeout, 30.0)))

    async def load(self, table: str, now: float) -> list[Ucontact]:
        pattern = _glob_escape(f"{self.prefix}{table}:entry::") + "*"

        async def op() -> list[Ucontact]:
            keys = await self._scan(pattern)
            out: list[Ucontact] = []
            for i in range(0, len(keys), SCAN_COUNT):
                pipe = self.client.pipeline(transaction=False)
                for k in keys[i : i + SCAN_COUNT]:
                    pipe.hgetall(k)
                out += (decode(h) for h in await pipe.execute() if h)
            return [c for c in out if c.valid(now)]

        return await self._run(op(), max(self.timeout, 30.0))

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
