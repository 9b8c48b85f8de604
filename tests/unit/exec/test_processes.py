"""Process control: time_to_kill, the concurrency limit, and that an exec
never blocks the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from sipexpress.modules.exec import ExecModule
from tests.unit.exec.conftest import MakeCtx


def pid_state(pid: int) -> str | None:
    """The /proc state letter of pid (Z = zombie), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def group_members(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, state, ppid) of every process in process group pgid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid:
                out.append((int(d), fields[0], int(fields[1])))
    return out


async def wait_group_dead(pgid: int, timeout: float = 3.0) -> list[tuple[int, str, int]]:
    """Wait until no process of the group is alive; return the zombies
    that are ours to reap (children of this process) and any survivor.
    A killed grandchild is re-parented to init and may stay a zombie a
    moment until init reaps it: not ours, not an orphan."""

    def bad() -> list[tuple[int, str, int]]:
        return [m for m in group_members(pgid) if m[1] != "Z" or m[2] == os.getpid()]

    deadline = time.monotonic() + timeout
    left = bad()
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        left = bad()
    return left


async def wait_gone(pid: int, timeout: float = 3.0) -> str | None:
    deadline = time.monotonic() + timeout
    state = pid_state(pid)
    while state is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        state = pid_state(pid)
    return state


async def started_module(make_ctx: MakeCtx, **params: int) -> ExecModule:
    mod = ExecModule(make_ctx().core)
    for k, v in params.items():
        mod.set_param(k, v)
    await mod.start()
    return mod


async def test_time_to_kill_kills_the_process_group(make_ctx: MakeCtx, tmp_path: Path) -> None:
    mod = await started_module(make_ctx, time_to_kill=1)
    # the shell starts a background grandchild and a foreground child
    cmd = (
        f"echo $$ > {tmp_path}/sh; sleep 30 & echo $! > {tmp_path}/bg; sleep 30; echo done > {tmp_path}/done"
    )
    t0 = time.monotonic()
    assert await mod.exec_msg(make_ctx(), cmd) == -1
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3.0
    sh = int((tmp_path / "sh").read_text())
    bg = int((tmp_path / "bg").read_text())
    # the shell was reaped (no zombie), nothing of its group survives
    # (no orphan), and it never reached its last command
    assert await wait_gone(sh) is None
    assert await wait_group_dead(sh) == []
    assert pid_state(bg) in (None, "Z")  # the background child died too
    assert not (tmp_path / "done").exists()
    assert mod.killed == 1


async def test_time_to_kill_applies_to_exec_dset(make_ctx: MakeCtx) -> None:
    mod = await started_module(make_ctx, time_to_kill=1)
    ctx = make_ctx()
    t0 = time.monotonic()
    assert await mod.exec_dset(ctx, "echo sip:early@a.b; sleep 30; :") == -1
    assert time.monotonic() - t0 < 3.0
    # false, but a URI read before the kill stays applied (as after a
    # non-zero exit: SER applied each line as it read it)
    assert ctx.ruri == "sip:early@a.b"


async def test_fast_command_is_not_killed(make_ctx: MakeCtx) -> None:
    mod = await started_module(make_ctx, time_to_kill=5)
    assert await mod.exec_msg(make_ctx(), "cat > /dev/null") == 1
    assert mod.killed == 0


async def test_no_zombies_after_many_calls(exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path) -> None:
    ctx = make_ctx()
    results = await asyncio.gather(
        *(exec_mod.exec_msg(ctx, f"echo $$ >> {tmp_path}/pids") for _ in range(20))
    )
    assert results == [1] * 20
    pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 20
    for pid in pids:
        assert await wait_gone(pid) is None


async def test_exec_does_not_block_the_loop(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    t0 = time.monotonic()
    # two sleeping commands and a quick one run side by side
    results = await asyncio.gather(
        exec_mod.exec_msg(make_ctx(), "sleep 1"),
        exec_mod.exec_msg(make_ctx(), "sleep 1"),
        exec_mod.exec_dset(make_ctx(), "echo sip:quick@a.b; :"),
    )
    elapsed = time.monotonic() - t0
    stop.set()
    await task
    assert results == [1, 1, 1]
    assert elapsed < 1.8  # concurrent, not 2 s in sequence
    assert ticks > 40  # the loop kept running meanwhile


async def test_concurrency_limit_waits_and_logs(make_ctx: MakeCtx, caplog: pytest.LogCaptureFixture) -> None:
    mod = await started_module(make_ctx, max_concurrent=2)
    caplog.set_level(logging.WARNING, logger="sipexpress.modules.exec")
    t0 = time.monotonic()
    results = await asyncio.gather(*(mod.exec_msg(make_ctx(), "sleep 0.4") for _ in range(4)))
    elapsed = time.monotonic() - t0
    assert results == [1] * 4
    assert elapsed >= 0.75  # two rounds of two
    assert mod.waited == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert any("limit of 2 concurrent commands reached" in m for m in msgs)
    # logged once per saturation episode, not per waiting call
    assert sum("limit of 2" in m for m in msgs) == 1


async def test_stop_terminates_running_commands(make_ctx: MakeCtx, tmp_path: Path) -> None:
    mod = await started_module(make_ctx)
    task = asyncio.create_task(mod.exec_msg(make_ctx(), f"echo $$ > {tmp_path}/sh; exec sleep 30"))
    for _ in range(200):
        if (tmp_path / "sh").exists() and (tmp_path / "sh").read_text():
            break
        await asyncio.sleep(0.01)
    sh = int((tmp_path / "sh").read_text())
    await mod.stop()
    assert await task == -1
    assert await wait_gone(sh) is None


async def test_cancelled_call_kills_its_command(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    task = asyncio.create_task(exec_mod.exec_msg(make_ctx(), f"echo $$ > {tmp_path}/sh; exec sleep 30"))
    for _ in range(200):
        if (tmp_path / "sh").exists() and (tmp_path / "sh").read_text():
            break
        await asyncio.sleep(0.01)
    sh = int((tmp_path / "sh").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(sh) is None


async def test_cancelled_while_starting_leaves_nothing(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    """Cancelled at any point, even before the child is known: no survivor."""
    for delay in (0, 0.001, 0.003, 0.01):
        out = tmp_path / f"sh{delay}"
        task = asyncio.create_task(exec_mod.exec_msg(make_ctx(), f"echo $$ > {out}; exec sleep 30"))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # a shell started before the cancel writes its pid: a window, not a wait
        if out.exists() and out.read_text().strip():
            assert await wait_gone(int(out.read_text())) is None, delay
