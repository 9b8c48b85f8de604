"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import SerProcess, free_port

if TYPE_CHECKING:
    from tests.tls_support import Issued, TestCA

ROOT = Path(__file__).resolve().parents[1]
# what running tools may write into the work tree
TOOL_CACHES = (".hypothesis/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".benchmarks/")
_tree_at_start = pytest.StashKey[dict[str, int] | None]()


def work_tree_state() -> dict[str, int] | None:
    """Each path git reports as changed, untracked or ignored (tool caches
    aside), with its mtime: a test that writes into the repository shows as
    a new path or a new mtime.  None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "-z"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    state = {}
    entries = iter(out.split("\0"))
    for entry in entries:
        if entry[:1] in ("R", "C"):
            next(entries, None)  # the path it was renamed or copied from
        path = entry[3:]
        if not path or path.startswith(TOOL_CACHES) or "__pycache__" in path or path.endswith(".pyc"):
            continue
        try:
            state[path] = os.stat(ROOT / path).st_mtime_ns
        except OSError:
            state[path] = 0  # deleted
    return state


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_tree_at_start] = work_tree_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left the work tree different (tests write into
    tmp_path, never into the repository)."""
    before = session.stash.get(_tree_at_start, None)
    after = work_tree_state()
    if before is None or after is None:
        return
    # a developer editing source while a run goes on is no test writing
    changed = sorted(
        p for p in before.keys() | after.keys() if before.get(p) != after.get(p) and not p.endswith(".py")
    )
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "\nthe test run changed the work tree (tests must write only to tmp_path): "
                + ", ".join(changed),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A test certificate authority made for this run (no key is committed)."""
    from tests.tls_support import TestCA

    return TestCA(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="session")
def server_cert(ca: TestCA) -> Issued:
    """A certificate of ``ca`` for localhost and 127.0.0.1."""
    return ca.issue("ser")


@pytest.fixture
def ser_factory(tmp_path: Path) -> Iterator[object]:
    """``ser_factory(cfg_text, port=None)`` -> started :class:`SerProcess`.

    ``cfg_text`` may use ``{port}``, ``{host}``, ``{fifo}`` and ``{workdir}``
    placeholders (``str.format``; write ``{{``/``}}`` for literal braces).
    A ``.py`` routing script is used when ``suffix=".py"``.
    """
    started: list[SerProcess] = []

    def make(
        cfg_text: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        suffix: str = ".cfg",
        extra_args: list[str] | None = None,
        start: bool = True,
        **fmt: object,
    ) -> SerProcess:
        port = port or free_port()
        workdir = Path(tempfile.mkdtemp(dir=tmp_path))
        cfg = workdir / f"ser{suffix}"
        values = {"port": port, "host": host, "fifo": str(workdir / "ser_fifo"), "workdir": str(workdir)}
        values.update(fmt)
        cfg.write_text(cfg_text.format(**values))
        sp = SerProcess(cfg, host, port, workdir)
        started.append(sp)
        if start:
            sp.start(extra_args)
        return sp

    yield make
    for sp in started:
        sp.stop()
