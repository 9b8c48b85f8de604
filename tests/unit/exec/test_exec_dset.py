"""exec_dset and its historic names, with real /bin/sh subprocesses."""

from __future__ import annotations

from pathlib import Path

from sipexpress.core.errors import E_TOO_MANY_BRANCHES
from sipexpress.modules.exec import ExecModule
from tests.unit.exec.conftest import MakeCtx, request


def uris(ctx: object) -> list[str]:
    return [ctx.ruri] + [b.uri for b in ctx.branches]  # type: ignore[attr-defined]


async def test_exec_cfg_example(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    """examples/exec.cfg: the appended URI becomes an argument of the last echo."""
    ctx = make_ctx()
    cmd = "echo sip:mra@iptel.org;echo sip:mrb@iptel.org;echo>/dev/null"
    assert await exec_mod.exec_dset(ctx, cmd) == 1
    assert uris(ctx) == ["sip:mra@iptel.org", "sip:mrb@iptel.org"]
    assert ctx.branches[0].q == -1
    assert ctx.original_ruri == "sip:jiri@iptel.org"


async def test_uri_is_appended_raw_after_one_space(
    exec_mod: ExecModule, make_ctx: MakeCtx, tmp_path: Path
) -> None:
    # the shell sees "… sip:jiri@iptel.org;transport=udp": the `;` in the URI
    # ends the command and `transport=udp` runs as a shell assignment
    # (SER's behaviour, kept for compatibility)
    ctx = make_ctx(request("sip:jiri@iptel.org;transport=udp"))
    assert await exec_mod.exec_dset(ctx, f"echo sip:x@y.z; printf '[%s]' > {tmp_path}/args") == 1
    assert (tmp_path / "args").read_text() == "[sip:jiri@iptel.org]"
    assert uris(ctx) == ["sip:x@y.z"]


async def test_current_uri_is_passed(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    ctx.set_ruri("sip:jiri@192.0.2.7:5062")
    assert await exec_mod.exec_dset(ctx, "echo") == 1
    assert uris(ctx) == ["sip:jiri@192.0.2.7:5062"]


async def test_trimming_and_empty_lines(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    cmd = r"printf '\n  \n\tsip:one@a.b \t\r\n\n sip:two@a.b\r\nsip:three@a.b'; :"
    assert await exec_mod.exec_dset(ctx, cmd) == 1
    # only trailing whitespace is stripped
    assert uris(ctx) == ["\tsip:one@a.b", " sip:two@a.b", "sip:three@a.b"]


async def test_empty_output_leaves_uri_untouched(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    # `: <uri>` is the shell's no-op: the command succeeds without output
    assert await exec_mod.exec_dset(ctx, "true; :") == -1
    assert ctx.ruri == "sip:jiri@iptel.org" and ctx.new_uri is None and ctx.branches == []
    assert await exec_mod.exec_dset(ctx, "printf '\\n \\n'; :") == -1
    assert ctx.new_uri is None


async def test_failure_leaves_uri_untouched(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    assert await exec_mod.exec_dset(ctx, "exit 1; :") == -1
    assert ctx.new_uri is None and ctx.branches == []


async def test_nonzero_exit_after_output_is_false_but_applied(
    exec_mod: ExecModule, make_ctx: MakeCtx
) -> None:
    ctx = make_ctx()
    assert await exec_mod.exec_dset(ctx, "echo sip:a@b.c; echo sip:d@e.f; exit 2; :") == -1
    assert uris(ctx) == ["sip:a@b.c", "sip:d@e.f"]


async def test_too_many_branches(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    cmd = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13; do echo sip:u$i@example.com; done; :"
    assert await exec_mod.exec_dset(ctx, cmd) == -1
    assert ctx.ruri == "sip:u1@example.com"
    assert len(ctx.branches) == 11
    assert ctx.data["ser_error"] == E_TOO_MANY_BRANCHES
    ctx = make_ctx()
    cmd = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo sip:u$i@example.com; done; :"
    assert await exec_mod.exec_dset(ctx, cmd) == 1
    assert len(ctx.branches) == 11


async def test_environment_is_set_for_dset(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    """exec_dist.cfg computes a destination from $SIP_HF_CALLID and $SIP_USER."""
    ctx = make_ctx()
    assert await exec_mod.exec_dset(ctx, 'echo "sip:$SIP_USER@$SIP_SRCIP;tid=$SIP_TID"; :') == 1
    assert ctx.ruri == "sip:jiri@195.37.77.100;tid=3b6b8295db0835815847b1f35f3b29b8"


async def test_stdin_is_empty(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    assert await exec_mod.exec_dset(ctx, 'echo "sip:$(wc -c)@x.y"; :') == 1
    assert ctx.ruri == "sip:0@x.y"


async def test_exec_user_passes_the_user_part(exec_mod: ExecModule, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    ctx.set_ruri("sip:jiri@192.0.2.7:5062")
    assert await exec_mod.exec_user(ctx, "printf 'sip:%s@voicemail.example.com\\n'") == 1
    assert ctx.ruri == "sip:jiri@voicemail.example.com"
