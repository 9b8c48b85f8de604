"""``ser -c`` on every example config: those whose modules all exist load,
the others fail naming the first missing module."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sipexpress.modules as modpkg
from sipexpress.modules import CATALOGUE, module_name_from_path
from sipexpress.script.parser import parse_config

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "cfg").rglob("*.cfg"))
CONFIGS = [*EXAMPLES, ROOT / "etc" / "ser.cfg"]
MODDIR = Path(modpkg.__file__).parent


def implemented(name: str) -> bool:
    target = CATALOGUE.get(name)
    if target is None:
        return False
    leaf = target.partition(":")[0].rsplit(".", 1)[-1]
    return (MODDIR / f"{leaf}.py").exists() or (MODDIR / leaf / "__init__.py").exists()


def first_missing(path: Path) -> str | None:
    cfg = parse_config(path.read_text(), str(path))
    for lm in cfg.loads:
        name = module_name_from_path(lm.path.value)
        if not implemented(name):
            return name
    return None


def ser_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.ser", "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def results() -> dict[Path, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(CONFIGS, pool.map(ser_check, CONFIGS), strict=True))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_ser_check(path: Path, results: dict[Path, subprocess.CompletedProcess[str]]) -> None:
    p = results[path]
    missing = first_missing(path)
    out = p.stdout + p.stderr
    if missing is None:
        assert p.returncode == 0, out
    else:
        assert p.returncode != 0, out
        assert f"unknown module '{missing}'" in out, out
        assert f"{path}:" in out  # located
