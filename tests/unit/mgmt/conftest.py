"""Management unit-test fixtures: an in-process Manager on real named pipes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipexpress.mgmt import Manager


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    m = Manager({"fifo": str(tmp_path / "ser_fifo"), "fifo_dir": f"{tmp_path}/", "fifo_timeout": 0.2})
    await m.start()
    yield m
    await m.stop()
