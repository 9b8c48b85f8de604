"""The fuzz targets feed arbitrary bytes through code that logs what it
refuses; those lines carry the undecodable bytes as surrogate escapes,
which pytest-xdist cannot send between processes.  The properties here
are about return values and exceptions, never about log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_log_records() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
