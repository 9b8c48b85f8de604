"""Logging set-up: SER's ``debug=`` levels on top of stdlib :mod:`logging`.

SER levels (``dprint.h``): ALERT −3, CRIT −2, ERR −1, WARN 1, NOTICE 2,
INFO 3, DBG 4; a message is written when ``debug >= level``.  We map each to
a stdlib level (NOTICE and ALERT are added as named levels) so that
``debug=N`` becomes the threshold :func:`threshold_for_debug` returns.
Output goes to stderr with ``log_stderror``/``-E``, otherwise to syslog
(``log_facility``).  Whatever is written also goes to :data:`recent`, a
bounded ring of the last lines that the ``log_tail`` management command
(and through it the web console's log viewer) reads.
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import os
import sys
from collections import deque
from dataclasses import dataclass

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
    message: str


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


def setup_logging(debug: int, to_stderr: bool, facility: str = "LOG_DAEMON", ident: str = "ser") -> None:
    """Configure the ``sipexpress`` logger (idempotent: replaces the output
    handler; the ring :data:`recent` is added once and keeps its lines)."""
    for h in list(log.handlers):
        if h is recent:
            continue
        log.removeHandler(h)
        h.close()
    handler: logging.Handler
    if to_stderr or not os.path.exists("/dev/log"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s " + ident + "[%(process)d]: %(levelname)s: %(name)s: %(message)s",
                "%b %d %H:%M:%S",
            )
        )
    else:
        fac = _FACILITIES.get(str(facility).upper(), logging.handlers.SysLogHandler.LOG_DAEMON)
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=fac)
        handler.setFormatter(logging.Formatter(ident + "[%(process)d]: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    if recent not in log.handlers:
        log.addHandler(recent)
    log.setLevel(threshold_for_debug(debug))
    log.propagate = False


def set_debug(debug: int) -> None:
    log.setLevel(threshold_for_debug(debug))
