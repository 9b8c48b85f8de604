"""exec_msg with real /bin/sh subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sipexpress.core.errors import E_EXEC
from sipexpress.modules.exec import ExecModule, process
from tests.unit.exec.conftest import MakeCtx, request
from tests.unit.exec.seed import SEED_REQUEST, seed_environment


def read_env0(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in path.read_bytes().split(b"\0"):
        if item:
            k, _, v = item.decode("utf-8", "surrogateescape").partition("=")
            env[k] = v
    return env


def sip_vars(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("SIP_")}


async def test_seed_request_stdin_and_environment(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    ctx = make_ctx()
    cmd = f"cat > {tmp_path}/stdin; env -0 > {tmp_path}/env"
    assert await exec_mod.exec_msg(ctx, cmd) == 1
    assert (tmp_path / "stdin").read_bytes() == SEED_REQUEST
    env = read_env0(tmp_path / "env")
    assert sip_vars(env) == seed_environment()


async def test_server_environment_is_kept(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIPEXPRESS_EXEC_PROBE", "kept")
    monkeypatch.setenv("SIP_HF_FROM", "stale value from the server's environment")
    assert await exec_mod.exec_msg(make_ctx(), f"env -0 > {tmp_path}/env") == 1
    env = read_env0(tmp_path / "env")
    assert env["SIPEXPRESS_EXEC_PROBE"] == "kept"
    assert env["PATH"] == os.environ["PATH"]
    assert env["SIP_HF_FROM"] == seed_environment()["SIP_HF_FROM"]


async def test_setvars_0_gives_a_plain_environment(make_ctx: MakeCtx, tmp_path: Path) -> None:
    mod = ExecModule(make_ctx().core)
    mod.set_param("setvars", 0)
    await mod.start()
    assert await mod.exec_msg(make_ctx(), f"cat > {tmp_path}/stdin; env -0 > {tmp_path}/env") == 1
    assert sip_vars(read_env0(tmp_path / "env")) == {}
    assert (tmp_path / "stdin").read_bytes() == SEED_REQUEST


@pytest.mark.parametrize(("cmd", "expected"), [("true", 1), ("exit 0", 1), ("false", -1), ("exit 3", -1)])
async def test_exit_status(exec_mod: ExecModule, make_ctx: MakeCtx, cmd: str, expected: int) -> None:
    assert await exec_mod.exec_msg(make_ctx(), cmd) == expected


async def test_killed_by_signal_is_false(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    assert await exec_mod.exec_msg(make_ctx(), "kill -TERM $$") == -1


async def test_command_not_reading_stdin_is_not_an_error(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    # a request bigger than a pipe buffer, and a command that never reads it
    body = b"x" * 60000
    ctx = make_ctx(request(body=body, headers=None))
    assert await exec_mod.exec_msg(ctx, "exit 0") == 1
    assert await exec_mod.exec_msg(ctx, "echo 'body: call arrived' > /dev/null") == 1


async def test_stdin_is_the_received_request_not_the_modified_one(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    ctx = make_ctx()
    ctx.msg.append_header_raw("P-hint: usrloc applied\r\n")
    ctx.set_ruri("sip:jiri@192.0.2.7")
    assert await exec_mod.exec_msg(ctx, f"cat > {tmp_path}/stdin; env -0 > {tmp_path}/env") == 1
    assert (tmp_path / "stdin").read_bytes() == SEED_REQUEST
    env = read_env0(tmp_path / "env")
    assert env["SIP_RURI"] == "sip:jiri@192.0.2.7"
    assert env["SIP_ORUI"] == "sip:jiri@iptel.org"
    assert "SIP_HF_P_HINT" not in env


async def test_multiline_single_quoted_script(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    """The shape of exec_s3.cfg: a multi-line script, `exit 1` on no data."""
    script = f"""
        EMAIL=`grep -c nothing-matches /dev/null`;
        if [ "$EMAIL" = "0" ] ; then echo "$SIP_OUSER" > {tmp_path}/user; exit 1; fi ;
        echo never"""
    assert await exec_mod.exec_msg(make_ctx(), script) == -1
    assert (tmp_path / "user").read_text() == "jiri\n"


async def test_shell_that_cannot_start_sets_e_exec(
    exec_mod: ExecModule, make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "SHELL", "/nonexistent/sh")
    ctx = make_ctx()
    assert await exec_mod.exec_msg(ctx, "true") == -1
    assert ctx.data["ser_error"] == E_EXEC


async def test_failure_route_context(exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path) -> None:
    from sipexpress.core.registry import RouteType

    ctx = make_ctx(route_type=RouteType.FAILURE)
    assert await exec_mod.exec_msg(ctx, f"cat > {tmp_path}/stdin") == 1
    assert (tmp_path / "stdin").read_bytes() == SEED_REQUEST


def test_declarations(exec_mod: ExecModule) -> None:
    from sipexpress.core.registry import RouteType

    fns = {f.name: f for f in exec_mod.functions()}
    assert set(fns) == {"exec_msg", "exec_dset", "exec_dst", "exec_uri", "exec_user"}
    for f in fns.values():
        assert f.is_async and f.arities == (1,)
        assert f.route_types == RouteType.REQUEST | RouteType.FAILURE
        assert not f.route_types & RouteType.ONREPLY
    assert {p.name: p.default for p in exec_mod.params} == {
        "setvars": 1,
        "time_to_kill": 0,
        "max_concurrent": 64,
    }


async def test_command_exiting_at_once(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    """The command is gone before its stdin is written (uvloop then
    refuses the write on the closed pipe)."""
    ctx = make_ctx()
    for _ in range(5):
        assert await exec_mod.exec_msg(ctx, "exit 1") == -1
        assert await exec_mod.exec_msg(ctx, "exec 0<&-; exit 0") == 1


async def test_exec_stats_command(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    (cmd,) = exec_mod.commands()
    assert cmd.name == "exec_stats"
    await exec_mod.exec_msg(make_ctx(), "true")
    await exec_mod.exec_msg(make_ctx(), "false")
    reply = await cmd.handler([])
    assert reply.code == 200
    assert reply.data["started"] == 2 and reply.data["running"] == 0
    assert "started: 2\n" in reply.text
