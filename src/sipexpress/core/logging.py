"""Logging set-up: SER's ``debug=`` levels on top of stdlib :mod:`logging`.

SER levels (``dprint.h``): ALERT −3, CRIT −2, ERR −1, WARN 1, NOTICE 2,
INFO 3, DBG 4; a message is written when ``debug >= level``.  We map each to
a stdlib level (NOTICE and ALERT are added as named levels) so that
``debug=N`` becomes the threshold :func:`threshold_for_debug` returns.
Output goes to stderr with ``log_stderror``/``-E``, otherwise to syslog
(``log_facility``); ``log_format=json`` writes one JSON object per line.

Every line written while the core handles a message carries its Call-ID
and, when tm knows one, the transaction (``hash:label``): the core puts the
message into :data:`handling` while it runs the route, and into the
:data:`current_message` contextvar of the task when a route goes on after
waiting; :class:`MessageContext` reads the Call-ID (and asks tm for the
transaction) only when a line is actually written.

Whatever is written also goes to :data:`recent`, a bounded ring of the last
lines (with that context) that the ``log_tail`` management command (and
through it the web console's log viewer) reads.
"""

from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from typing import Any

NOTICE = 25
ALERT = 60
logging.addLevelName(NOTICE, "NOTICE")
logging.addLevelName(ALERT, "ALERT")

L_ALERT, L_CRIT, L_ERR, L_WARN, L_NOTICE, L_INFO, L_DBG = -3, -2, -1, 1, 2, 3, 4

_SER_TO_STD = {
    L_ALERT: ALERT,
    L_CRIT: logging.CRITICAL,
    L_ERR: logging.ERROR,
    0: logging.ERROR,
    L_WARN: logging.WARNING,
    L_NOTICE: NOTICE,
    L_INFO: logging.INFO,
    L_DBG: logging.DEBUG,
}

log = logging.getLogger("sipexpress")


class Handling:
    """The message the core handles right now, synchronously: a slot, set
    and cleared around each message (a contextvar costs some 10 times more
    on the receive path)."""

    __slots__ = ("msg",)

    def __init__(self) -> None:
        self.msg: Any = None


handling = Handling()
#: the message of a task started while the core handled it (a route that
#: went on after waiting, a database write it started ...)
current_message: ContextVar[Any] = ContextVar("sipexpress_message", default=None)


def task_context() -> Context | None:
    """The context for a task started now: one that names the message being
    handled, if any (``None``: the current context, as asyncio does)."""
    msg = handling.msg
    if msg is None:
        return None
    context = copy_context()
    context.run(current_message.set, msg)
    return context


#: message -> its transaction's id, or None (tm installs it); consulted only
#: when a line is written
transaction_of: list[Callable[[Any], str | None]] = []


class MessageContext(logging.Filter):
    """Adds ``call_id`` and ``transaction`` (``""`` outside a message) and
    ``context`` (`` [Call-ID tid]`` for text lines) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = handling.msg
        if msg is None:
            msg = current_message.get()
        call_id = tid = ""
        if msg is not None:
            try:
                call_id = msg.call_id
            except Exception:  # a malformed Call-ID: the line is still written
                call_id = "?"
            for lookup in transaction_of:
                tid = lookup(msg) or ""
                if tid:
                    break
        record.call_id = call_id
        record.transaction = tid
        record.context = f" [{call_id}{' ' + tid if tid else ''}]" if call_id else ""
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger,
    message, pid, and ``call_id``/``transaction`` inside a message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in ("call_id", "transaction"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def std_level(ser_level: int) -> int:
    """The stdlib level of a SER level (``log(level, "text")``)."""
    if ser_level >= L_DBG:
        return logging.DEBUG
    if ser_level <= L_ALERT:
        return ALERT
    return _SER_TO_STD[ser_level]


def threshold_for_debug(debug: int) -> int:
    """The lowest stdlib level written with ``debug=N``."""
    if debug >= L_DBG:
        return logging.DEBUG
    if debug < L_ALERT:
        return ALERT + 10  # nothing
    if debug == 0:
        # debug=0 logs ERR and worse (levels <= 0)
        return logging.ERROR
    return _SER_TO_STD[debug]


_FACILITIES = {
    name: getattr(logging.handlers.SysLogHandler, name)
    for name in dir(logging.handlers.SysLogHandler)
    if name.startswith("LOG_") and name[4:].lower() in logging.handlers.SysLogHandler.facility_names
}


RING_LINES = 1000
RING_LINE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int  # increases by one per line: a reader asks for lines after the last it saw
    time: float
    levelno: int
    level: str
    logger: str
    message: str  # with the `` [Call-ID transaction]`` context, as stderr shows it


class RecentLines(logging.Handler):
    """The last ``size`` log lines in memory (a deque: constant cost per
    line, bounded memory however long the server runs)."""

    def __init__(self, size: int = RING_LINES) -> None:
        super().__init__()
        self.lines: deque[LogLine] = deque(maxlen=size)
        self._seq = itertools.count(1)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        text += getattr(record, "context", "")
        self.lines.append(
            LogLine(
                next(self._seq),
                record.created,
                record.levelno,
                record.levelname,
                record.name,
                text[:RING_LINE_CHARS],
            )
        )

    def tail(self, count: int, min_level: int = 0, after: int = 0) -> list[LogLine]:
        """The last ``count`` lines at ``min_level`` or above with a
        sequence number above ``after``, oldest first."""
        self.acquire()  # emit() runs under the same lock, maybe in another thread
        try:
            lines = list(self.lines)
        finally:
            self.release()
        picked = [x for x in lines if x.seq > after and x.levelno >= min_level]
        return picked[-count:] if count > 0 else []


recent = RecentLines()


def setup_logging(
    debug: int, to_stderr: bool, facility: str = "LOG_DAEMON", ident: str = "ser", json_lines: bool = False
) -> None:
    """Configure the ``sipexpress`` logger (idempotent: replaces the output
    handler; the ring :data:`recent` keeps its lines and comes after it)."""
    for h in list(log.handlers):
        log.removeHandler(h)
        if h is not recent:
            h.close()
    handler: logging.Handler
    if to_stderr or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s " + ident + "[%(process)d]: %(levelname)s: %(name)s: %(message)s%(context)s",
                "%b %d %H:%M:%S",
            )
        )
    else:
        fac = _FACILITIES.get(str(facility).upper(), logging.handlers.SysLogHandler.LOG_DAEMON)
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=fac)
        handler.setFormatter(
            logging.Formatter(ident + "[%(process)d]: %(levelname)s: %(message)s%(context)s")
        )
    if json_lines:
        handler.setFormatter(JsonLines())
    handler.addFilter(MessageContext())
    log.addHandler(handler)
    log.addHandler(recent)  # after the handler whose filter adds the message context
    log.setLevel(threshold_for_debug(debug))
    log.propagate = False


def set_debug(debug: int) -> None:
    log.setLevel(threshold_for_debug(debug))
