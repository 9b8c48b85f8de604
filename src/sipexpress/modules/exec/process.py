"""Running one shell command without blocking the event loop.

Theory of operation
-------------------
:func:`spawn` starts ``/bin/sh -c <cmd>`` in a new session (so the command
and everything it starts form one process group that can be killed at
once) and returns a :class:`Child`.  ``Child.communicate`` writes the
request to its stdin and/or collects its stdout, then waits for the exit
status; the event loop serves other requests meanwhile.

Two spawners, one behaviour:

* **pidfd** (Linux >= 5.3, the default): :class:`subprocess.Popen` (CPython
  starts the child with vfork, and returns once it has exec'd), pipes made
  non-blocking and driven by ``loop.add_reader``/``add_writer``, and the
  exit learnt from a pidfd that becomes readable when the child ends --
  then ``Popen.poll()`` reaps it.  Three times faster than asyncio's
  subprocess transport on uvloop, the server's loop (bench/exec_bench.py:
  ~2.6 ms against ~8 ms for ``true``).
* **asyncio**: ``asyncio.create_subprocess_exec`` where ``os.pidfd_open``
  is missing.

Both reap every child they start (no zombies), also after a kill or when
the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import Protocol

SHELL = "/bin/sh"
USE_PIDFD = hasattr(os, "pidfd_open")

_PIPE_ERRORS = (BrokenPipeError, ConnectionResetError)


class Child(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def communicate(self, stdin_data: bytes | None, out: bytearray | None) -> int:
        """Feed stdin (then EOF), collect stdout, wait: the exit status
        (a negative signal number when killed)."""
        ...

    async def wait(self) -> int: ...

    def close(self) -> None:
        """Close our ends of the pipes (the child is not touched)."""
        ...


def killpg(child: Child, sig: int) -> None:
    """Signal the command's process group (its pid: a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


async def spawn(cmd: str, env: dict[bytes, bytes], stdin: bool, stdout: bool) -> Child:
    """Start ``/bin/sh -c cmd``.  Raises OSError/ValueError when it cannot."""
    if USE_PIDFD:
        return _PidfdChild(
            subprocess.Popen(
                [SHELL, "-c", cmd],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else None,
                env=env,
                start_new_session=True,
            )
        )
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            SHELL,
            "-c",
            cmd,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else None,
            env=env,
            start_new_session=True,
        )
    )
    try:
        proc = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # cancelled while starting: the command must not run on unseen
        starting.add_done_callback(_kill_started)
        raise
    return _AsyncioChild(proc)


def _kill_started(fut: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(fut.result().pid, signal.SIGKILL)


# -- pidfd --------------------------------------------------------------------------
class _PidfdChild:
    __slots__ = ("_exited", "_loop", "_pidfd", "_popen", "pid")

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        for f in (popen.stdin, popen.stdout):
            if f is not None:
                os.set_blocking(f.fileno(), False)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:  # e.g. out of descriptors: a thread waits instead
            self._pidfd = -1
            self._loop.run_in_executor(None, self._wait_in_thread)
        else:
            self._loop.add_reader(self._pidfd, self._on_exit)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _on_exit(self) -> None:
        rc = self._popen.poll()  # reaps
        if rc is None:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(rc)

    def _wait_in_thread(self) -> None:
        rc = self._popen.wait()
        self._loop.call_soon_threadsafe(self._set, rc)

    def _set(self, rc: int) -> None:
        if not self._exited.done():
            self._exited.set_result(rc)

    async def wait(self) -> int:
        # shielded: a cancelled waiter must not cancel the exit future
        return await asyncio.shield(self._exited)

    async def communicate(self, stdin_data: bytes | None, out: bytearray | None) -> int:
        if stdin_data is not None and self._popen.stdin is not None:
            await self._feed(self._popen.stdin.fileno(), stdin_data)
            self._popen.stdin.close()
        if out is not None and self._popen.stdout is not None:
            await self._drain(self._popen.stdout.fileno(), out)
        return await self.wait()

    async def _ready(self, fd: int, write: bool) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        if write:
            self._loop.add_writer(fd, wake)
        else:
            self._loop.add_reader(fd, wake)
        try:
            await fut
        finally:
            if write:
                self._loop.remove_writer(fd)
            else:
                self._loop.remove_reader(fd)

    async def _feed(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await self._ready(fd, True)
                continue
            except _PIPE_ERRORS:
                # the command did not read its input: not an error (SER's
                # buffered fwrite() did not notice either)
                return
            view = view[n:]

    async def _drain(self, fd: int, out: bytearray) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await self._ready(fd, False)
                continue
            if not chunk:
                return
            out += chunk

    def close(self) -> None:
        for f in (self._popen.stdin, self._popen.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


# -- asyncio subprocess (no pidfd) --------------------------------------------------
class _AsyncioChild:
    __slots__ = ("_proc", "pid")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        return await self._proc.wait()

    async def communicate(self, stdin_data: bytes | None, out: bytearray | None) -> int:
        stdin = self._proc.stdin
        if stdin_data is not None and stdin is not None:
            # uvloop raises RuntimeError for a write on a pipe it closed
            with contextlib.suppress(*_PIPE_ERRORS, RuntimeError):
                if not stdin.is_closing():
                    stdin.write(stdin_data)
                    await stdin.drain()
            with contextlib.suppress(*_PIPE_ERRORS, RuntimeError):
                stdin.close()
                await stdin.wait_closed()
        stdout = self._proc.stdout
        if out is not None and stdout is not None:
            while chunk := await stdout.read(65536):
                out += chunk
        return await self._proc.wait()

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(*_PIPE_ERRORS, RuntimeError):
                self._proc.stdin.close()


__all__ = ["SHELL", "USE_PIDFD", "Child", "killpg", "spawn"]
