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
``../shared/spec/exec.md`` §2.

Parameters: ``setvars`` (1), ``time_to_kill`` (0 = never; otherwise a
command still running after that many seconds is killed together with its
process group and the function returns false), ``max_concurrent`` (64:
commands running at once; further calls wait for a free slot and a warning
is logged).

Improvement over SER
--------------------
SER ran the command with ``popen()`` inside the worker process that handled
the request: while ``sleep 5`` ran, that worker processed nothing else, and
with all workers busy the whole server stood still.  Here the command runs
as an asyncio subprocess in its own session/process group
(``start_new_session=True``); the script that called ``exec_*`` still waits
for it — the synchronous semantics are kept (the next action sees the exit
status and the new destination set) — but the event loop keeps serving
every other request, including other ``exec_*`` calls, meanwhile.
SER's ``time_to_kill`` was declared but never killed anything; here it
kills the command's whole process group (no orphan keeps running) and
reaps the child (no zombie).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sipexpress.core.errors import E_EXEC, E_TOO_MANY_BRANCHES, SER_ERROR_KEY
from sipexpress.core.registry import (
    FixupEnv,
    MgmtCommand,
    MgmtReply,
    Module,
    Param,
    RouteType,
    ScriptFunction,
)

if TYPE_CHECKING:
    from sipexpress.core.context import CoreAPI, RequestContext
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.modules.exec")

SHELL = "/bin/sh"

# Header types SER's 0.9 parser knows with a compact form: always exported
# under one canonical name, whichever spelling the message used.
_CANONICAL: dict[str, str] = {
    "via": "VIA",
    "v": "VIA",
    "content-type": "CONTENT_TYPE",
    "c": "CONTENT_TYPE",
    "from": "FROM",
    "f": "FROM",
    "call-id": "CALLID",
    "i": "CALLID",
    "supported": "SUPPORTED",
    "k": "SUPPORTED",
    "content-length": "CONTENT_LENGTH",
    "l": "CONTENT_LENGTH",
    "contact": "CONTACT",
    "m": "CONTACT",
    "to": "TO",
    "t": "TO",
    "event": "EVENT",
    "o": "EVENT",
}

# Characters SER's canonize_headername() turns into "_" silently
# (UNRESERVED_MARK, HNV_UNRESERVED, ESCAPE); anything else non-alphanumeric
# becomes "_" too, with an error log.
_LEGAL_SYMBOLS = frozenset("-_.!~*'()[]/?:+$%")
_NAME_CACHE_MAX = 512
_name_cache: dict[str, str] = {}


def hf_var_name(name: str) -> str:
    """The environment variable for a header field name (``Max-Forwards`` ->
    ``SIP_HF_MAX_FORWARDS``, ``i`` -> ``SIP_HF_CALLID``)."""
    key = name.lower()
    var = _name_cache.get(key)
    if var is not None:
        return var
    canon = _CANONICAL.get(key)
    if canon is None:
        out = []
        for c in name:
            if "a" <= c <= "z":
                out.append(chr(ord(c) - 32))
            elif "A" <= c <= "Z" or "0" <= c <= "9":
                out.append(c)
            else:
                if c not in _LEGAL_SYMBOLS:
                    log.error("exec: unexpected char %r in header field name %r", c, name)
                out.append("_")
        canon = "".join(out)
    var = "SIP_HF_" + canon
    if len(_name_cache) < _NAME_CACHE_MAX:
        _name_cache[key] = var
    return var


def _uri_user(uri: str) -> str | None:
    """The user part of a SIP URI, or None when the URI does not parse."""
    try:
        from sipexpress.sip.uri import SipUri

        return SipUri.parse(uri).user or ""
    except Exception:  # the parser's error for a malformed URI
        return None


def transaction_id(msg: SipMessage) -> str:
    """``SIP_TID``: SER's ``char_msg_val`` — MD5 (32 lower-case hex digits)
    over From, To and Call-ID bodies, the original Request-URI, the CSeq
    number, the top Via's host, port (as written) and branch, each stripped,
    no separators.  Empty when one of those headers is missing or broken."""
    try:
        frm = msg.header("from")
        to = msg.header("to")
        callid = msg.header("call-id")
        cseq = msg.header("cseq")
        if frm is None or to is None or callid is None or cseq is None or not cseq.split():
            return ""
        via = msg.via1
        port = via.port
        parts = [
            frm,
            to,
            callid,
            msg.ruri.strip(),
            cseq.split()[0],
            via.host,
            "" if port is None else str(port),
        ]
        branch = via.params.get("branch")
        if branch is not None:
            parts.append(branch)
    except Exception:  # malformed Via: SER logs and exports an empty TID
        return ""
    return hashlib.md5("".join(p.strip() for p in parts).encode("utf-8", "surrogateescape")).hexdigest()


def dialog_id(msg: SipMessage) -> str:
    """``SIP_DID``: the To-tag (empty for dialog-creating requests)."""
    try:
        tag = msg.to.params.get("tag")
    except Exception:
        return ""
    return tag or ""


def sip_environment(ctx: RequestContext) -> dict[str, str]:
    """The ``SIP_*`` variables for ``ctx`` (exec.md §2), without the
    server's own environment.

    Header fields and the original Request-URI come from the request as
    received: SER parsed ``msg->buf``, so script changes (``append_hf``,
    a Request-URI written into the message) are invisible.  Re-parsing
    ``raw`` costs microseconds next to starting a process."""
    from sipexpress.sip.message import SipMessage

    msg = SipMessage.parse(ctx.msg.raw)
    groups: dict[str, list[str]] = {}
    for name, value in msg.iter_headers():
        var = hf_var_name(name)
        vals = groups.get(var)
        if vals is None:
            groups[var] = [value.strip()]
        else:
            vals.append(value.strip())
    env: dict[str, str] = {}
    for var, vals in groups.items():
        if len(vals) == 1:
            env[var] = vals[0]
        else:
            # SER's insert_hf() links each new occurrence right after the
            # first one: v1,v2,v3 -> v1,v3,v2.
            vals[1:] = vals[:0:-1]
            env[var] = ",".join(vals)
    env["SIP_SRCIP"] = ctx.rcv.src_ip
    ruri = ctx.ruri
    env["SIP_RURI"] = ruri
    user = _uri_user(ruri)
    if user is not None:
        env["SIP_USER"] = user
    oruri = msg.ruri
    env["SIP_ORUI"] = oruri
    env["SIP_ORURI"] = oruri
    ouser = user if oruri == ruri else _uri_user(oruri)
    if ouser is not None:
        env["SIP_OUSER"] = ouser
    env["SIP_TID"] = transaction_id(msg)
    env["SIP_DID"] = dialog_id(msg)
    return env


def _strip_nul(env: dict[str, str]) -> dict[str, str]:
    # execve() cannot carry NUL bytes; SER's C strings ended there.
    for k, v in env.items():
        if "\0" in v:
            env[k] = v.split("\0", 1)[0]
    return env


def _fixup_command(args: Sequence[Any], env: FixupEnv) -> Sequence[Any]:
    cmd = args[0]
    if not isinstance(cmd, str) or not cmd.strip():
        from sipexpress.core.registry import ConfigError

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
            "commands running at once; further exec calls wait for a free slot (a warning is logged)",
        ),
    )

    def __init__(self, core: CoreAPI) -> None:
        super().__init__(core)
        self._sem: asyncio.Semaphore | None = None
        self._running: set[asyncio.subprocess.Process] = set()
        self._saturated = False
        self.started = 0
        self.failed = 0
        self.killed = 0
        self.waited = 0

    # -- declarations -------------------------------------------------------
    def functions(self) -> Sequence[ScriptFunction]:
        rt = RouteType.REQUEST | RouteType.FAILURE
        dset_doc = "run 'cmd <RURI>'; output lines become the new RURI and extra branches"
        return (
            ScriptFunction(
                "exec_msg",
                self.exec_msg,
                (1,),
                _fixup_command,
                rt,
                True,
                "run a shell command with the received request on stdin",
            ),
            ScriptFunction("exec_dset", self.exec_dset, (1,), _fixup_command, rt, True, dset_doc),
            ScriptFunction(
                "exec_dst", self.exec_dset, (1,), _fixup_command, rt, True, "old name of exec_dset"
            ),
            ScriptFunction(
                "exec_uri", self.exec_dset, (1,), _fixup_command, rt, True, "2002 name of exec_dset"
            ),
            ScriptFunction(
                "exec_user",
                self.exec_user,
                (1,),
                _fixup_command,
                rt,
                True,
                "as exec_dset, with the user part of the RURI as the argument",
            ),
        )

    def commands(self) -> Sequence[MgmtCommand]:
        return (MgmtCommand("exec_stats", self._cmd_stats, "exec module counters"),)

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
        limit = int(self.values["max_concurrent"])
        self._sem = asyncio.Semaphore(limit if limit > 0 else 1 << 30)

    async def stop(self) -> None:
        """Kill what still runs (SIGTERM, then SIGKILL after 1 s) so that
        no command outlives the server as an orphan."""
        procs = [p for p in self._running if p.returncode is None]
        if not procs:
            return
        log.warning("exec: stopping, terminating %d running command(s)", len(procs))
        for p in procs:
            _killpg(p, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 1.0)
        for p in procs:
            _killpg(p, signal.SIGKILL)

    # -- script functions ---------------------------------------------------
    async def exec_msg(self, ctx: RequestContext, cmd: str) -> int:
        env = self._environment(ctx)
        status = await self._run(cmd, env, ctx.msg.raw, None)
        if status is None:
            ctx.data[SER_ERROR_KEY] = E_EXEC
            return -1
        return 1 if status == 0 else -1

    async def exec_dset(self, ctx: RequestContext, cmd: str) -> int:
        return await self._exec_str(ctx, cmd, ctx.ruri)

    async def exec_user(self, ctx: RequestContext, cmd: str) -> int:
        user = _uri_user(ctx.ruri)
        if user is None:
            log.error("exec: invalid URI passed to exec_user: %s", ctx.ruri)
            return -1
        return await self._exec_str(ctx, cmd, user)

    async def _exec_str(self, ctx: RequestContext, cmd: str, param: str) -> int:
        cmd_line = f"{cmd} {param}"
        env = self._environment(ctx)
        out = bytearray()
        status = await self._run(cmd_line, env, None, out)
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
    def _environment(self, ctx: RequestContext) -> dict[str, str]:
        base = dict(os.environ)
        if self.values["setvars"]:
            base.update(_strip_nul(sip_environment(ctx)))
        return base

    async def _run(
        self, cmd: str, env: dict[str, str], stdin_data: bytes | None, out: bytearray | None
    ) -> int | None:
        """Run ``/bin/sh -c cmd``; return its exit status (a negative
        signal number if killed) or None if it could not be started.
        ``out`` collects stdout when given."""
        sem = self._sem
        if sem is None:  # used without start() (e.g. a unit test)
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
                proc = await asyncio.create_subprocess_exec(
                    SHELL,
                    "-c",
                    cmd,
                    stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if out is not None else None,
                    env=env,
                    start_new_session=True,
                )
            except (OSError, ValueError) as e:
                self.failed += 1
                log.error("exec: cannot run %s: %s", cmd, e)
                return None
            self.started += 1
            self._running.add(proc)
            try:
                timeout = int(self.values["time_to_kill"])
                try:
                    if timeout > 0:
                        await asyncio.wait_for(self._talk(proc, stdin_data, out), timeout)
                    else:
                        await self._talk(proc, stdin_data, out)
                except TimeoutError:
                    self.killed += 1
                    log.error(
                        "exec: command still running after time_to_kill=%d s, killing its process group: %s",
                        timeout,
                        cmd,
                    )
                    _killpg(proc, signal.SIGKILL)
                    await proc.wait()
                    return -signal.SIGKILL
                except BaseException:
                    # cancelled (server shutting down): leave nothing behind;
                    # asyncio's child watcher still reaps the child.
                    _killpg(proc, signal.SIGKILL)
                    raise
            finally:
                self._running.discard(proc)
                if self._saturated and not sem.locked():
                    self._saturated = False
            rc = proc.returncode
            assert rc is not None
            if rc < 0:
                log.error("exec: command killed by signal %d: %s", -rc, cmd)
            return rc

    @staticmethod
    async def _talk(
        proc: asyncio.subprocess.Process, stdin_data: bytes | None, out: bytearray | None
    ) -> None:
        if stdin_data is not None:
            stdin = proc.stdin
            assert stdin is not None
            # The command may not read its input at all (`true`, `echo … |
            # mail`) and may be gone already: SER's buffered fwrite() did
            # not notice either.  The exit status alone decides.  (uvloop
            # raises RuntimeError for a write on a pipe it closed.)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                if not stdin.is_closing():
                    stdin.write(stdin_data)
                    await stdin.drain()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                stdin.close()
                await stdin.wait_closed()
        if out is not None:
            # collected as it arrives: what a killed command printed before
            # counts, as SER's fgets() loop applied each line it got
            stdout = proc.stdout
            assert stdout is not None
            while chunk := await stdout.read(65536):
                out += chunk
        await proc.wait()


def _killpg(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Signal the command's process group (its pid: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


__all__ = ["ExecModule", "dialog_id", "hf_var_name", "sip_environment", "transaction_id"]
