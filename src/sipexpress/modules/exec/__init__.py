"""exec — run external programs from the routing script (SER ``modules_s/exec``).

Script functions (request route and failure_route):

``exec_msg("cmd")``
    Runs ``cmd`` with ``/bin/sh -c``, writes the request **exactly as
    received** (``msg.raw``) to its stdin, then EOF.  stdout/stderr are
    inherited from the server.  True (1) when the command exits with status
    0, false (−1) otherwise.
``exec_dset("cmd")`` (historic spellings ``exec_dst``, ``exec_uri``)
    Runs ``cmd`` + one space + the current Request-URI, unquoted (the shell
    sees the URI; scripts rely on that, e.g. ``…;echo>/dev/null``), with
    nothing on stdin.  Every non-empty output line (trailing CR/LF/TAB/space
    stripped) is a URI: the first one replaces the Request-URI, each further
    one becomes an extra branch.  True when the command exits 0 and printed
    at least one URI.  URIs already applied stay applied when it fails
    later (as SER).
``exec_user("cmd")``
    The 2002 variant of ``exec_dset`` that passes only the user part of the
    Request-URI as the argument.

Environment (``setvars=1``, the default): the server's own environment plus
``SIP_HF_<NAME>`` for every header field of the received request (compact
forms under their full name, ``Call-ID`` as ``SIP_HF_CALLID``; repeated
fields merged with ``,`` in SER's order: first, then the others reversed),
``SIP_SRCIP``, ``SIP_RURI``, ``SIP_USER``, ``SIP_ORUI`` and ``SIP_ORURI``
(same value: SER's real name and the documented one), ``SIP_OUSER``,
``SIP_TID`` (SER's MD5 transaction key) and ``SIP_DID`` (To-tag).  See
``../shared/spec/exec.md`` §2 and :mod:`.env`.

Parameters: ``setvars`` (1), ``time_to_kill`` (0 = never; otherwise a
command still running after that many seconds is killed together with its
process group and the function returns false), ``max_concurrent`` (64:
commands running at once, 0 = no limit; further calls wait for a free slot
and a warning is logged, once per episode).

Improvement over SER
--------------------
SER ran the command with ``popen()`` inside the worker process that handled
the request: while ``sleep 5`` ran, that worker processed nothing else, and
with all workers busy the whole server stood still.  Here the command runs
as a subprocess in its own session/process group (``start_new_session``)
watched by the event loop (:mod:`.process`); the script that called ``exec_*`` still waits
for it — the synchronous semantics are kept (the next action sees the exit
status and the new destination set) — but the event loop keeps serving
every other request, including other ``exec_*`` calls, meanwhile.
SER's ``time_to_kill`` was declared but never killed anything; here it
kills the command's whole process group (no orphan keeps running) and
reaps the child (no zombie).  When the server stops, commands still
running get SIGTERM, and SIGKILL a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core.errors import E_EXEC, E_TOO_MANY_BRANCHES, SER_ERROR_KEY
from sipexpress.core.registry import (
    ConfigError,
    FixupEnv,
    MgmtCommand,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
    Statistic,
    StatKind,
)
from sipexpress.modules.exec import process
from sipexpress.modules.exec.env import (
    dialog_id,
    hf_var_name,
    sip_environment,
    strip_nul,
    transaction_id,
    uri_user,
)

if TYPE_CHECKING:
    from sipexpress.core.api import CoreAPI
    from sipexpress.core.context import RequestContext

log = logging.getLogger("sipexpress.modules.exec")


# The bytes dictionary behind os.environ on POSIX (putenv/os.environ
# updates change it in place): copying it takes 0.2 us, dict(os.environ),
# which decodes every entry, 60 us.
_ENV_DATA = getattr(os.environ, "_data", None)
if not (isinstance(_ENV_DATA, dict) and all(isinstance(k, bytes) for k in _ENV_DATA)):
    _ENV_DATA = None


def _base_environment() -> dict[bytes, bytes]:
    """A copy of the server's current environment."""
    if _ENV_DATA is not None:
        return dict(_ENV_DATA)
    return dict(os.environb)


def _fixup_command(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    cmd = args[0]
    if not isinstance(cmd, str) or not cmd.strip():
        raise ConfigError("exec: the command must be a non-empty string")
    return (cmd,)


class ExecModule(Module):
    name = "exec"
    params = (
        Param("setvars", int, 1, "1: export SIP_* variables to the command; 0: plain environment"),
        Param(
            "time_to_kill",
            int,
            0,
            "seconds after which a still running command is killed with its process group (0: never)",
        ),
        Param(
            "max_concurrent",
            int,
            64,
            "commands running at once (0: no limit); further exec calls wait for a free slot (logged)",
        ),
    )
    counters = (
        ("started", "commands started"),
        ("failed", "commands that could not start"),
        ("killed", "commands killed after time_to_kill"),
        ("waited", "exec calls that waited for a free slot"),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self._sem: asyncio.Semaphore | None = None
        self._running: set[process.Child] = set()
        self._saturated = False
        self._stopping = False
        self.started = 0
        self.failed = 0
        self.killed = 0
        self.waited = 0

    # -- declarations -------------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        rt = RouteType.REQUEST | RouteType.FAILURE
        fx = _fixup_command
        dset = "run 'cmd <RURI>'; output lines become the new RURI and extra branches"
        return (
            ScriptFunction(
                "exec_msg", self.exec_msg, (1,), fx, rt, True, "run cmd with the request on stdin"
            ),
            ScriptFunction("exec_dset", self.exec_dset, (1,), fx, rt, True, dset),
            ScriptFunction("exec_dst", self.exec_dset, (1,), fx, rt, True, "old name of exec_dset"),
            ScriptFunction("exec_uri", self.exec_dset, (1,), fx, rt, True, "2002 name of exec_dset"),
            ScriptFunction(
                "exec_user", self.exec_user, (1,), fx, rt, True, "exec_dset with the RURI's user part"
            ),
        )

    def commands(self) -> Sequence[MgmtCommand]:
        return (MgmtCommand("exec_stats", self._cmd_stats, "exec module counters"),)

    def statistics(self) -> Sequence[Statistic]:
        running = Statistic("running", lambda: len(self._running), "commands running now", StatKind.GAUGE)
        return (*super().statistics(), running)

    async def _cmd_stats(self, params: list[str]) -> MgmtReply:
        data = {
            "running": len(self._running),
            "started": self.started,
            "failed": self.failed,
            "killed": self.killed,
            "waited": self.waited,
            "max_concurrent": self.values["max_concurrent"],
        }
        text = "".join(f"{k}: {v}\n" for k, v in data.items())
        return MgmtReply(200, "ok", data, text)

    # -- life cycle ---------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        limit = int(self.values["max_concurrent"])
        self._sem = asyncio.Semaphore(limit if limit > 0 else 1 << 30)

    async def stop(self) -> None:
        """Terminate what still runs (SIGTERM, SIGKILL after 1 s) so that
        no command outlives the server as an orphan."""
        self._stopping = True
        children = [c for c in self._running if c.returncode is None]
        if not children:
            return
        log.warning("exec: stopping, terminating %d running command(s)", len(children))
        for c in children:
            process.killpg(c, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 1.0)
        for c in children:
            process.killpg(c, signal.SIGKILL)

    # -- script functions ---------------------------------------------------
    async def exec_msg(self, ctx: RequestContext, cmd: str) -> int:
        status = await self._run(cmd, self._environment(ctx), ctx.msg.raw, None)
        if status is None:
            ctx.data[SER_ERROR_KEY] = E_EXEC
            return -1
        return 1 if status == 0 else -1

    async def exec_dset(self, ctx: RequestContext, cmd: str) -> int:
        return await self._exec_str(ctx, cmd, ctx.ruri)

    async def exec_user(self, ctx: RequestContext, cmd: str) -> int:
        user = uri_user(ctx.ruri)
        if user is None:
            log.error("exec: invalid URI passed to exec_user: %s", ctx.ruri)
            return -1
        return await self._exec_str(ctx, cmd, user)

    async def _exec_str(self, ctx: RequestContext, cmd: str, param: str) -> int:
        """SER's exec_str(): ``cmd param`` with stdout lines -> destination set."""
        cmd_line = f"{cmd} {param}"
        out = bytearray()
        status = await self._run(cmd_line, self._environment(ctx), None, out)
        if status is None:
            ctx.data[SER_ERROR_KEY] = E_EXEC
            return -1
        ret = 1
        n = 0
        for raw in out.decode("utf-8", "surrogateescape").split("\n"):
            uri = raw.rstrip("\r\t ")
            if not uri:
                continue
            if n == 0:
                ctx.set_ruri(uri)
            elif not ctx.append_branch(uri):
                log.error("exec: append_branch failed; too many URIs from %s", cmd_line)
                ctx.data[SER_ERROR_KEY] = E_TOO_MANY_BRANCHES
                ret = -1
                break
            n += 1
        if n == 0:
            log.error("exec: no uri from %s", cmd_line)
            ret = -1
        if status != 0:
            ret = -1
        return ret

    # -- machinery ----------------------------------------------------------
    def _environment(self, ctx: RequestContext) -> dict[bytes, bytes]:
        """The server's environment plus (setvars) the SIP_* variables, as
        bytes (values keep undecodable bytes of the request as received)."""
        env = _base_environment()
        if self.values["setvars"]:
            for k, v in strip_nul(sip_environment(ctx)).items():
                env[k.encode()] = v.encode("utf-8", "surrogateescape")
        return env

    async def _run(
        self, cmd: str, env: dict[bytes, bytes], stdin_data: bytes | None, out: bytearray | None
    ) -> int | None:
        """Run ``/bin/sh -c cmd`` in its own process group; its exit status
        (a negative signal number when killed), or None if it could not be
        started.  ``out`` collects stdout as it arrives: what a killed
        command printed first counts, as SER's fgets() loop applied each
        line it got."""
        sem = self._sem
        if sem is None:  # used without start() (a unit test, a tool)
            await self.start()
            sem = self._sem
            assert sem is not None
        if sem.locked():
            self.waited += 1
            if not self._saturated:
                self._saturated = True
                log.warning(
                    "exec: limit of %d concurrent commands reached (modparam exec max_concurrent); "
                    "'%s' waits for a free slot",
                    self.values["max_concurrent"],
                    cmd,
                )
        async with sem:
            try:
                child = await process.spawn(cmd, env, stdin_data is not None, out is not None)
            except (OSError, ValueError) as e:
                self.failed += 1
                log.error("exec: cannot run %s: %s", cmd, e)
                return None
            self.started += 1
            self._running.add(child)
            if self._stopping:  # started while stop() ran: it did not see this one
                process.killpg(child, signal.SIGKILL)
            timeout = int(self.values["time_to_kill"])
            try:
                if timeout > 0:
                    rc = await asyncio.wait_for(child.communicate(stdin_data, out), timeout)
                else:
                    rc = await child.communicate(stdin_data, out)
            except TimeoutError:
                self.killed += 1
                log.error(
                    "exec: command still running after time_to_kill=%d s, killing its process group: %s",
                    timeout,
                    cmd,
                )
                process.killpg(child, signal.SIGKILL)
                await child.wait()
                return -signal.SIGKILL
            except BaseException:
                # cancelled (the server is stopping): leave nothing running;
                # the child is still reaped when it dies
                process.killpg(child, signal.SIGKILL)
                raise
            finally:
                child.close()
                self._running.discard(child)
                if self._saturated and not sem.locked():
                    self._saturated = False
            if rc < 0:
                log.error("exec: command killed by signal %d: %s", -rc, cmd)
            return rc


__all__ = ["ExecModule", "dialog_id", "hf_var_name", "sip_environment", "transaction_id"]
