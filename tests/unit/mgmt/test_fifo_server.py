"""The FIFO server in-process, with real named pipes."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipexpress.core.registry import MgmtCommand, MgmtReply
from sipexpress.mgmt import Manager, MgmtStartError
from sipexpress.mgmt.client import fifo_request
from tests.support import fifo_pending, read_when_there, wait_for_async

UPTIME_RE = re.compile(
    r"200 ok\nNow: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
    r"Up Since: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\nUp time: (\d+) \[sec\]\n\Z"
)


async def ask(m: Manager, cmd: str, params: list[str] | None = None, timeout: float = 5.0) -> str:
    assert m.fifo is not None
    return await asyncio.to_thread(
        fifo_request, m.fifo.path, cmd, params or [], reply_dir=m.fifo.reply_dir, timeout=timeout
    )


async def send_raw(m: Manager, data: bytes) -> None:
    assert m.fifo is not None
    fd = os.open(m.fifo.path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def test_uptime_byte_format(manager: Manager) -> None:
    r = await ask(manager, "uptime")
    m = UPTIME_RE.match(r)
    assert m, r
    assert int(m.group(1)) <= 2


async def test_which_lists_builtins_in_ser_order_without_kill(manager: Manager) -> None:
    assert await ask(manager, "which") == (
        "200 ok\nstats.snapshot\nstats.reset_statistics\nstats.get_statistics\n"
        "log_tail\nps\nwhich\narg\npwd\nversion\nuptime\nprint\n"
    )


async def test_unknown_command(manager: Manager) -> None:
    assert await ask(manager, "foobar") == "500 command 'foobar' not available\n"
    assert await ask(manager, "kill") == "500 command 'kill' not available\n"


async def test_case_insensitive_lookup(manager: Manager) -> None:
    assert UPTIME_RE.match(await ask(manager, "UpTime"))


async def test_print_and_its_limit(manager: Manager) -> None:
    assert await ask(manager, "print", ["Hello world $@"]) == "200 ok\nHello world $@\n"
    assert await ask(manager, "print", ["x" * 256]) == "500 print_fifo_cmd: too big text"


async def test_version_ends_with_crlf(manager: Manager) -> None:
    r = await ask(manager, "version")
    assert re.fullmatch(r"200 ok\nServer: Sip EXpress router \(sipexpress [\d.]+ \([^/]+/\w+\)\)\r\n", r), r


async def test_pwd_arg_ps(manager: Manager) -> None:
    assert await ask(manager, "pwd") == f"200 ok\n{os.getcwd()}\n"
    assert (await ask(manager, "arg")).startswith("200 ok\n")
    assert await ask(manager, "ps") == f"200 ok\n0\t{os.getpid()}\tattendant\n1\t{os.getpid()}\tfifo server\n"


async def test_fifo_mode_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "f"
    old = os.umask(0o077)
    try:
        m = Manager({"fifo": str(path), "fifo_mode": 0o666})
        await m.start()
    finally:
        os.umask(old)
    st = os.stat(path)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    await m.stop()
    assert not path.exists()


async def test_default_mode_0660_and_octal_string(tmp_path: Path) -> None:
    m = Manager({"fifo": str(tmp_path / "a")})
    await m.start()
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o660
    await m.stop()
    m = Manager({"fifo": str(tmp_path / "b"), "sock_mode": "0600"})
    await m.start()
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600
    await m.stop()


async def test_stale_fifo_replaced_and_stale_request_dump_removed(tmp_path: Path) -> None:
    p = tmp_path / "ser_fifo"
    os.mkfifo(p, 0o600)
    os.chmod(p, 0o600)
    m = Manager({"fifo": str(p), "fifo_dir": f"{tmp_path}/"})
    await m.start()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o660  # a new FIFO was made
    await m.stop()
    p.write_text(":uptime:x\n\n")  # `cat > /tmp/ser_fifo` while no server ran
    await m.start()
    assert stat.S_ISFIFO(os.stat(p).st_mode)
    assert UPTIME_RE.match(await ask(m, "uptime"))
    await m.stop()


@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
async def test_refuses_to_remove_what_is_not_ours(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "ser_fifo"
    if kind == "file":
        p.write_text("precious data\n")
    elif kind == "dir":
        p.mkdir()
    else:
        os.symlink(tmp_path / "elsewhere", p)
    with pytest.raises(MgmtStartError, match="not a FIFO; refusing"):
        await Manager({"fifo": str(p)}).start()
    assert os.path.lexists(p)
    if kind == "file":
        assert p.read_text() == "precious data\n"


async def test_refuses_fifo_read_by_another_server(manager: Manager) -> None:
    assert manager.fifo is not None
    with pytest.raises(MgmtStartError, match="another process"):
        await Manager({"fifo": manager.fifo.path}).start()
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MgmtStartError, match="cannot create FIFO"):
        await Manager({"fifo": str(tmp_path / "nodir" / "f")}).start()


# -- malformed requests and misbehaving clients: logged, dropped, server lives --


async def test_client_vanishes_before_reading_does_not_block(manager: Manager, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "gone")  # reply FIFO nobody ever opens
    await send_raw(manager, b":uptime:gone\n\n")
    t0 = time.monotonic()
    assert UPTIME_RE.match(await ask(manager, "uptime"))
    assert time.monotonic() - t0 < 0.3  # served during the 4x80 ms retries
    await asyncio.sleep(0.5)  # the retries run out: the timer is the behaviour
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_reply_fifo_does_not_exist(manager: Manager, caplog: pytest.LogCaptureFixture) -> None:
    await send_raw(manager, b":uptime:no_such_reply_fifo\n\n")
    assert UPTIME_RE.match(await ask(manager, "uptime"))
    assert await wait_for_async(lambda: "no_such_reply_fifo" in caplog.text)


async def test_regular_file_and_symlink_never_receive_replies(manager: Manager, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    os.mkfifo(tmp_path / "target")
    os.symlink(tmp_path / "target", tmp_path / "link")
    rfd = os.open(tmp_path / "target", os.O_RDONLY | os.O_NONBLOCK)
    try:
        await send_raw(manager, b":uptime:plain\n\n:uptime:link\n\n")
        assert UPTIME_RE.match(await ask(manager, "uptime"))
        await asyncio.sleep(0.1)  # nothing may be written: a window, not a wait
        assert (tmp_path / "plain").read_text() == ""
        assert os.read(rfd, 100) == b""  # no writer ever came: nothing written
    finally:
        os.close(rfd)


async def test_request_that_never_ends(manager: Manager, tmp_path: Path) -> None:
    await send_raw(manager, b":print:r\npartial line without newline")
    await asyncio.sleep(0.4)  # fifo_timeout 0.2 s: the fragment is dropped
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_request_without_final_empty_line_is_served(manager: Manager, tmp_path: Path) -> None:
    reply = tmp_path / "r_nl"
    os.mkfifo(reply)
    rfd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
    try:
        await send_raw(manager, b":print:r_nl\nlast words\n")
        assert await asyncio.to_thread(read_when_there, rfd, 1000) == b"200 ok\nlast words\n"
    finally:
        os.close(rfd)
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_binary_garbage(manager: Manager) -> None:
    await send_raw(manager, bytes(range(256)) * 20 + b"\n\x00\xff:\x00:\x01\n\n")
    fifo = manager.fifo
    assert fifo is not None
    assert await wait_for_async(lambda: fifo_pending(fifo.path) == 0)  # the garbage is read
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_overlong_lines(manager: Manager) -> None:
    await send_raw(manager, b":" + b"u" * 5000 + b":r\n\n")
    r = await ask(manager, "print", ["z" * 9000])
    assert r == "400 line too long\n"
    assert UPTIME_RE.match(await ask(manager, "uptime"))


async def test_forbidden_reply_name(manager: Manager, tmp_path: Path) -> None:
    await send_raw(manager, f":uptime:{tmp_path}/abs\n\n:uptime:../x\n\n".encode())
    assert UPTIME_RE.match(await ask(manager, "uptime"))
    assert not (tmp_path / "abs").exists()


async def test_non_utf8_parameters_round_trip(manager: Manager, tmp_path: Path) -> None:
    reply = tmp_path / "r8"
    os.mkfifo(reply)
    rfd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
    try:
        await send_raw(manager, b":print:r8\n\xff\xfeabc\n\n")
        assert await asyncio.to_thread(read_when_there, rfd, 100) == b"200 ok\n\xff\xfeabc\n"
    finally:
        os.close(rfd)


# -- commands that wait, big replies, module commands ----------------------


async def _slow(params: list[str]) -> MgmtReply:
    await asyncio.sleep(float(params[0]))
    return MgmtReply(text="slept\n")


async def _big(params: list[str]) -> MgmtReply:
    return MgmtReply(text="".join(f"{i}.\t0\t0\n" for i in range(65536)))


@pytest.fixture
async def manager_x(tmp_path: Path) -> AsyncIterator[Manager]:
    extra = [MgmtCommand("slow", _slow), MgmtCommand("t_hash_like", _big)]
    m = Manager(
        {"fifo": str(tmp_path / "ser_fifo"), "fifo_dir": f"{tmp_path}/", "fifo_timeout": 0.2}, (), extra
    )
    await m.start()
    yield m
    await m.stop()


async def test_waiting_command_does_not_hold_up_others(manager_x: Manager) -> None:
    slow = asyncio.create_task(ask(manager_x, "slow", ["1.0"]))
    fifo = manager_x.fifo
    assert fifo is not None
    assert await wait_for_async(lambda: len(fifo._tasks) == 1)  # slow runs
    t0 = time.monotonic()
    assert UPTIME_RE.match(await ask(manager_x, "uptime"))
    assert time.monotonic() - t0 < 0.5
    assert await slow == "200 ok\nslept\n"


async def test_big_reply_read_in_full(manager_x: Manager) -> None:
    r = await ask(manager_x, "t_hash_like")
    lines = r.splitlines()
    assert lines[0] == "200 ok" and len(lines) == 65537 and lines[-1] == "65535.\t0\t0"


async def test_client_not_reading_big_reply_is_dropped(manager_x: Manager, tmp_path: Path) -> None:
    assert manager_x.fifo is not None
    manager_x.fifo.reply_timeout = 0.3
    os.mkfifo(tmp_path / "lazy")
    rfd = os.open(tmp_path / "lazy", os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    try:
        await send_raw(manager_x, b":t_hash_like:lazy\n\n")
        assert UPTIME_RE.match(await ask(manager_x, "uptime"))
        await asyncio.sleep(0.5)  # reply_timeout (0.3 s) passes: the timer is the behaviour
        assert UPTIME_RE.match(await ask(manager_x, "uptime"))
    finally:
        os.close(rfd)


async def test_fifo_user_and_group(tmp_path: Path) -> None:
    import grp
    import pwd

    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        group = grp.getgrgid(user.pw_gid)
    else:
        user = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid())
    m = Manager({"fifo": str(tmp_path / "f"), "sock_user": user.pw_name, "fifo_group": group.gr_name})
    await m.start()
    st = os.stat(tmp_path / "f")
    await m.stop()
    assert (st.st_uid, st.st_gid) == (user.pw_uid, group.gr_gid)


async def test_unknown_fifo_user_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MgmtStartError, match="no such user or group"):
        await Manager({"fifo": str(tmp_path / "f"), "fifo_user": "no_such_user_xyz"}).start()


async def test_backpressure_when_too_many_requests_run(manager_x: Manager, tmp_path: Path) -> None:
    assert manager_x.fifo is not None
    manager_x.fifo.max_inflight = 2
    fds = []
    for i in range(6):
        os.mkfifo(tmp_path / f"bp{i}")
        fds.append(os.open(tmp_path / f"bp{i}", os.O_RDONLY | os.O_NONBLOCK))
    try:
        await send_raw(manager_x, b"".join(f":slow:bp{i}\n0.2\n\n".encode() for i in range(6)))
        # two run, the rest wait in the pipe
        fifo = manager_x.fifo
        assert await wait_for_async(lambda: not fifo._reading)
        deadline = time.monotonic() + 5
        got: dict[int, bytes] = {}
        while len(got) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for i, fd in enumerate(fds):
                try:
                    data = os.read(fd, 100)
                except BlockingIOError:
                    continue
                if data:
                    got[i] = data
        assert got == {i: b"200 ok\nslept\n" for i in range(6)}
        # reading resumes once the last request has finished (a loop turn later)
        deadline = time.monotonic() + 2
        while not manager_x.fifo._reading and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert manager_x.fifo._reading
    finally:
        for fd in fds:
            os.close(fd)
