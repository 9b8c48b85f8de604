"""One command table from the built-ins and loaded modules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply, Module
from sipexpress.mgmt import Manager
from sipexpress.mgmt.registry import CommandRegistry, DuplicateCommand, render_fifo


async def _ok(params: list[str]) -> MgmtReply:
    return MgmtReply(data=params, text="".join(p + "\n" for p in params))


async def _err(params: list[str]) -> MgmtReply:
    raise MgmtError(404, "Username jiri in table location not found\n".rstrip("\n"))


async def _flush(params: list[str]) -> MgmtReply:
    return MgmtReply(200, "ul_flush completed", eol=False)


async def _boom(params: list[str]) -> MgmtReply:
    raise RuntimeError("bug")


class FakeUsrloc(Module):
    name = "usrloc"

    def commands(self) -> Sequence[MgmtCommand]:
        return [MgmtCommand("ul_stats", _ok), MgmtCommand("ul_flush", _flush), MgmtCommand("ul_rm", _err)]


class FakeTm(Module):
    name = "tm"

    def commands(self) -> Sequence[MgmtCommand]:
        return [MgmtCommand("t_stats", _ok), MgmtCommand("t_uac_dlg", _ok, fifo_reader="dotted")]


def test_which_order_modules_first_last_registered_first() -> None:
    m = Manager({}, [FakeUsrloc(None), FakeTm(None)])  # type: ignore[arg-type]
    assert m.registry.names() == [
        "t_uac_dlg",
        "t_stats",
        "ul_rm",
        "ul_flush",
        "ul_stats",
        "stats.snapshot",
        "stats.reset_statistics",
        "stats.get_statistics",
        "log_tail",
        "ps",
        "which",
        "arg",
        "pwd",
        "version",
        "uptime",
        "print",
    ]


def test_kill_only_when_allowed() -> None:
    assert "kill" not in Manager({}).registry
    names = Manager({"mgmt_allow_kill": "yes"}).registry.names()
    assert names[names.index("ps") - 1] == "kill"  # the last built-in SER registered


def test_duplicate_and_invalid_names() -> None:
    r = CommandRegistry([MgmtCommand("x", _ok)])
    with pytest.raises(DuplicateCommand):
        r.register(MgmtCommand("X", _ok))
    with pytest.raises(ValueError):
        r.register(MgmtCommand("a:b", _ok))


async def test_call_maps_errors() -> None:
    r = CommandRegistry([MgmtCommand("ul_rm", _err), MgmtCommand("boom", _boom), MgmtCommand("f", _flush)])
    assert render_fifo(await r.call("UL_RM", [])) == "404 Username jiri in table location not found\n"
    assert render_fifo(await r.call("f", [])) == "200 ul_flush completed"
    reply = await r.call("boom", [])
    assert reply.code == 500 and "internal error" in reply.reason
    assert render_fifo(await r.call("nope", [])) == "500 command 'nope' not available\n"


async def test_start_gathers_module_commands(tmp_path: Path) -> None:
    options = {"fifo": str(tmp_path / "f"), "fifo_dir": f"{tmp_path}/"}
    mgr = Manager(options, [FakeUsrloc(None), FakeTm(None)])  # type: ignore[arg-type]
    await mgr.start()
    try:
        assert "t_stats" in mgr.registry and "ul_flush" in mgr.registry
        assert mgr.fifo is not None and (tmp_path / "f").exists()
        assert (await mgr.call("ul_stats", ["a"])).data == ["a"]
    finally:
        await mgr.stop()
    assert not (tmp_path / "f").exists()
