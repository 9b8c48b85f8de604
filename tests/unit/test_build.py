"""Which build runs (sipexpress/_build.py): the mypyc-compiled hot modules
when they are built and current, pure Python with ``SIPEXPRESS_PURE`` or
when a source changed since the build.  CI builds the compiled modules
(``./dev test`` installs with ``pip install -e .``) and runs the suite on
them: under CI a pure build fails here."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sipexpress
from sipexpress import _build

SRC = Path(sipexpress.__file__).resolve().parent
SHOW = "import sipexpress, sipexpress.sip.message as m; print(sipexpress.BUILD, m.__file__)"


def run_python(code: str, pythonpath: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != _build.PURE_ENV}
    full.update(env, PYTHONPATH=str(pythonpath))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60, check=True
    )


def test_the_loaded_modules_are_the_chosen_build() -> None:
    pure = os.environ.get(_build.PURE_ENV, "") not in ("", "0")
    if os.environ.get("CI") and not pure:
        assert sipexpress.BUILD == "compiled", f"CI runs the compiled build: {_build.REASON}"
    for rel in _build.COMPILED:
        mod = importlib.import_module("sipexpress." + rel[:-3].replace("/", "."))
        compiled = mod.__file__ is not None and mod.__file__.endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES)
        )
        assert compiled == (sipexpress.BUILD == "compiled"), (rel, mod.__file__)


def test_sipexpress_pure_loads_the_sources() -> None:
    out = run_python(SHOW, SRC.parent, **{_build.PURE_ENV: "1"}).stdout.split()
    assert out[0] == "pure" and out[1].endswith("message.py")


def fake_build(tmp_path: Path) -> Path:
    """A copy of the package whose compiled modules are (empty) files, and
    the stamp setup.py writes for the sources as they are."""
    pkg = tmp_path / "sipexpress"
    shutil.copytree(SRC, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__", _build.STAMP))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for rel in _build.COMPILED:
        (pkg / (rel[:-3] + suffix)).write_bytes(b"")
    stamp = {rel: _build.source_crc(pkg / rel) for rel in _build.COMPILED}
    (pkg / _build.STAMP).write_text(json.dumps(stamp))
    return pkg


def test_a_current_build_is_chosen(tmp_path: Path) -> None:
    fake_build(tmp_path)
    out = run_python("import sipexpress; print(sipexpress.BUILD)", tmp_path)
    assert out.stdout.split() == ["compiled"] and not out.stderr


@pytest.mark.parametrize("change", ["edit", "missing"])
def test_a_stale_build_falls_back_to_the_sources(tmp_path: Path, change: str) -> None:
    pkg = fake_build(tmp_path)
    if change == "edit":  # as after an edit or a merge, before rebuilding
        with (pkg / "sip/message.py").open("a") as f:
            f.write("\n# edited\n")
    else:
        (pkg / ("modules/tm/cell" + importlib.machinery.EXTENSION_SUFFIXES[0])).unlink()
    out = run_python(SHOW, tmp_path)
    kind, path = out.stdout.split()
    assert kind == "pure" and path == str(pkg / "sip/message.py")
    assert "out of date" in out.stderr
