from __future__ import annotations

import pytest

from sipexpress import modules


@pytest.fixture(autouse=True)
def probe_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``loadmodule "probe"`` load the test module."""
    monkeypatch.setitem(modules.CATALOGUE, "probe", "tests.unit.script.helpers:ProbeModule")
