"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SerProcess, free_port


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
