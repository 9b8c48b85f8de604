"""core.periodic: a failing round is logged and the next one still comes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipexpress.core.periodic import Periodic


async def test_rounds_go_on_after_a_failure_and_stop_ends_them(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("bad row")

    p = Periodic("test job", 0.01, job, at_start=True)
    with caplog.at_level(logging.ERROR, "sipexpress.core"):
        p.start()
        for _ in range(200):
            if len(rounds) >= 3:
                break
            await asyncio.sleep(0.01)
        await p.stop()
    assert len(rounds) >= 3
    assert "test job failed" in caplog.text
    done = len(rounds)
    await asyncio.sleep(0.05)
    assert len(rounds) == done


async def test_first_round_waits_one_interval_unless_at_start() -> None:
    ran: list[bool] = []

    async def job() -> None:
        ran.append(True)

    p = Periodic("late job", 10.0, job)
    p.start()
    await asyncio.sleep(0.05)
    await p.stop()
    assert ran == []
