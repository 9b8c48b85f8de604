"""Fixtures: start ``ser`` on an example config (or a config text) with
the stub mail on PATH; each gets its own work directory and free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.exec.helpers import ExecSer, example_cfg, ser_env
from tests.support import free_port

StartSer = Callable[..., ExecSer]


@pytest.fixture
def start_ser(tmp_path: Path) -> Iterator[StartSer]:
    started: list[ExecSer] = []

    def start(
        example: str | None = None,
        *,
        text: str | None = None,
        subst: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> ExecSer:
        workdir = tmp_path / f"ser{len(started)}"
        workdir.mkdir()
        if example is not None:
            cfg = example_cfg(example, workdir, subst)
        else:
            assert text is not None
            cfg = workdir / "ser.cfg"
            cfg.write_text(text)
        sp = ExecSer(cfg, "127.0.0.1", free_port(), workdir, env=ser_env(workdir, **(env or {})))
        started.append(sp)
        sp.start(extra_args)
        return sp

    yield start
    for sp in started:
        sp.stop()
