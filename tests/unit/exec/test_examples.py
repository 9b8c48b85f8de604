"""Every example of examples/exec loads (``ser -c -f``, in process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipexpress.cli.ser import load_config
from sipexpress.core.server import Core

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "exec"
CONFIGS = sorted(p for p in EXAMPLES.glob("*/*") if p.suffix in (".cfg", ".py"))


def test_all_examples_found() -> None:
    assert len(CONFIGS) == 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_loads(path: Path) -> None:
    core = Core()
    core.update_options({})
    load_config(core, str(path))
    assert "exec" in core.modules
    assert "0" in core.routes.request
