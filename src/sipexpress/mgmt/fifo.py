"""SER's FIFO server: textual management requests over a named pipe.

Theory of operation (fifo.md)
-----------------------------
A client writes a whole request with one ``write()`` into the server FIFO::

    :<command>:<reply-fifo-name>\\n
    <parameter line>\\n ...
    \\n

then reads the reply from ``fifo_dir + reply-fifo-name`` (a FIFO it created
and opened for reading before writing).  The reply is ``NNN reason\\n`` plus
the command's text.

Two layers:

* :class:`RequestParser` is sans-I/O: bytes in (``feed``), complete
  requests out; ``expire()`` is called when the pipe has been quiet for
  ``request_timeout`` seconds with a request half read.  It never raises on
  input: garbage, over-long lines and unfinished requests become
  :class:`FifoRequest` objects with ``error`` set (logged, answered when the
  reply FIFO is known) or are dropped with a log line.
* :class:`FifoServer` is the asyncio adapter.  It reads the FIFO without
  blocking (``add_reader``) and keeps a dummy write descriptor open so that
  it never sees end-of-file between clients.  Each request is handed to its
  own task, created in arrival order, so a command that waits (``t_uac_dlg``
  waits for the SIP transaction to finish) never holds up the others, and
  commands that do not wait still run in the order they arrived.  Replies
  are opened ``O_WRONLY|O_NONBLOCK`` with SER's retries (4 more attempts, 80
  ms apart) done by ``asyncio.sleep``, and written without blocking.  At most
  ``max_inflight`` requests run at once; beyond that the server stops
  reading, so writers block on the full pipe instead of the server growing
  without bound.

Where we deliberately differ from SER (spec "Decisions"): a request that
lacks its final empty line does not swallow the first line of the next one.
A ``lines`` request ends at an empty line, at the next line shaped like a
command line (``:name:reply``), or when the pipe stays quiet for
``request_timeout``; after a failed command nothing further is consumed.
An unfinished last line (no newline) is dropped at the timeout so that it
cannot glue itself onto the next client's request.

Commands whose ``fifo_reader`` is ``"dotted"`` (``t_uac_dlg``) read three
lines (method, request-URI, next hop), header lines up to ``.`` or an empty
line, then body lines up to ``.`` (empty lines belong to the body).  Their
handler receives these lines normalised as
``[method, ruri, next_hop, header..., ".", body..., "."]``; an empty line
ending the header section becomes ``.``; sections left open at the timeout
are closed with ``.``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from sipexpress.core.registry import MgmtReply
from sipexpress.mgmt.registry import CommandRegistry, render_fifo

log = logging.getLogger("sipexpress.mgmt.fifo")

MAX_COMMAND_LINE = 511  # MAX_FIFO_COMMAND 512 including the NUL
MAX_LINE = 8191  # any parameter line
MAX_REQUEST_LINES = 10000
REPLY_RETRIES = 4  # FIFO_REPLY_RETRIES: attempts after the first
REPLY_WAIT = 0.08  # FIFO_REPLY_WAIT: 80 000 us
READ_CHUNK = 65536
FORBIDDEN_IN_REPLY = frozenset("./\\\0")


class FifoError(Exception):
    """The FIFO cannot be created or opened (a start-up error, said clearly)."""


@dataclass(slots=True)
class FifoRequest:
    command: str
    reply: str | None  # validated reply-FIFO name, None = no reply wanted/possible
    params: list[str] = field(default_factory=list)
    error: str | None = None  # set: do not run; answer "400 <error>" if reply is set


def _decode(line: bytes) -> str:
    # right-trim any mix of CR LF SP HT (SER's read_line); keep leading blanks
    return line.rstrip(b"\r\n \t").decode("utf-8", "surrogateescape")


def _command_shaped(line: str) -> bool:
    """``:name:reply`` with a plausible name: used to notice that a request
    without its final empty line has been followed by the next one."""
    if len(line) < 3 or line[0] != ":":
        return False
    end = line.find(":", 1)
    if end <= 1:
        return False
    name = line[1:end]
    return name.replace("_", "").replace(".", "").replace("-", "").isalnum() and " " not in line


# parser states
_IDLE, _LINES, _DOTTED_HEAD, _DOTTED_HDRS, _DOTTED_BODY = range(5)


class RequestParser:
    """Sans-I/O framing of FIFO requests.  ``reader_of(name)`` tells how a
    command reads its parameter lines (``"lines"`` or ``"dotted"``)."""

    def __init__(self, reader_of: Callable[[str], str]) -> None:
        self._reader_of = reader_of
        self._buf = b""
        self._skipping = False  # discarding an over-long line up to its newline
        self._state = _IDLE
        self._req: FifoRequest | None = None
        self._head_left = 0
        self._out: list[FifoRequest] = []

    @property
    def pending(self) -> bool:
        """A request or a line is half read (the idle timer should run)."""
        return self._state != _IDLE or bool(self._buf) or self._skipping

    def feed(self, data: bytes, new_write: bool = False) -> list[FifoRequest]:
        """``new_write``: the pipe was empty before ``data`` arrived.  A
        client writes a whole request at once, so an unfinished line left
        over from the previous write, followed by a write that starts like
        a command line, was the previous client's last line without its
        newline: it ends there instead of gluing onto the new request."""
        if new_write and self._buf and data[:1] == b":" and not self._skipping:
            self._line(self._buf)
            self._buf = b""
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
                self._line_too_long()
            else:
                self._line(buf[start:nl])
            start = nl + 1
        rest = buf[start:]
        if len(rest) > MAX_LINE:
            if not self._skipping:
                log.warning("FIFO: line longer than %d bytes, discarding it", MAX_LINE)
            self._skipping = True
            rest = b""
        self._buf = rest
        out, self._out = self._out, []
        return out

    def expire(self) -> list[FifoRequest]:
        """The writer went quiet with a request unfinished: an unterminated
        line is dropped; a request with complete lines ends here."""
        if self._buf or self._skipping:
            log.warning("FIFO: dropping an unterminated line (%d bytes) after timeout", len(self._buf))
            self._buf = b""
            self._skipping = False
        if self._req is not None:
            log.warning("FIFO: request '%s' did not end with an empty line; ending it", self._req.command)
            if self._state == _DOTTED_HDRS:
                self._req.params += [".", "."]
            elif self._state == _DOTTED_BODY:
                self._req.params.append(".")
            self._finish()
        out, self._out = self._out, []
        return out

    # -- internals -------------------------------------------------------
    def _finish(self) -> None:
        assert self._req is not None
        self._out.append(self._req)
        self._req = None
        self._state = _IDLE

    def _line_too_long(self) -> None:
        if self._req is not None:
            self._req.error = "line too long"
            if self._state != _LINES:
                # a dotted request cannot be re-synchronised: end it here
                self._finish()
        # in IDLE an over-long command line is only logged (SER: no reply)

    def _line(self, raw: bytes) -> None:
        if self._state == _IDLE:
            line = _decode(raw)
            if line:
                self._command_line(line, len(raw))
            return
        req = self._req
        assert req is not None
        if len(raw) > MAX_LINE:
            self._line_too_long()
            return
        line = _decode(raw)
        if self._state == _LINES:
            if not line:
                self._finish()
            elif _command_shaped(line):
                log.warning("FIFO: request '%s' not ended by an empty line", req.command)
                self._finish()
                self._command_line(line, len(raw))
            elif len(req.params) >= MAX_REQUEST_LINES:
                req.error = "too many lines"
                req.params.clear()
            elif req.error is None:
                req.params.append(line)
        elif self._state == _DOTTED_HEAD:
            if not line:
                self._finish()  # the handler reports what is missing
                return
            req.params.append(line)
            self._head_left -= 1
            if self._head_left == 0:
                self._state = _DOTTED_HDRS
        elif self._state == _DOTTED_HDRS:
            if not line or line == ".":
                req.params.append(".")
                self._state = _DOTTED_BODY
            else:
                self._append_dotted(req, line)
        else:  # _DOTTED_BODY
            if line == ".":
                req.params.append(".")
                self._finish()
            else:
                self._append_dotted(req, line)

    def _append_dotted(self, req: FifoRequest, line: str) -> None:
        if len(req.params) >= MAX_REQUEST_LINES:
            req.error = "too many lines"
            self._finish()
        else:
            req.params.append(line)

    def _command_line(self, line: str, rawlen: int) -> None:
        if rawlen > MAX_COMMAND_LINE:
            log.error("FIFO: command line too long (%d bytes), dropped", rawlen)
            return
        if line[0] != ":":
            log.error("FIFO: command must begin with ':' (got %r), dropped", line[:40])
            return
        end = line.find(":", 1)
        if end < 0 or end == 1 or len(line) < 3:
            log.error("FIFO: malformed command line %r, dropped", line[:60])
            return
        name = line[1:end]
        reply: str | None = line[end + 1 :]
        error = None
        if not reply:
            reply = None
        elif any(c in FORBIDDEN_IN_REPLY for c in reply):
            log.error("FIFO: forbidden reply file name %r for '%s'; no reply", reply, name)
            reply, error = None, "forbidden reply file name"
        self._req = FifoRequest(name, reply, error=error)
        if self._reader_of(name) == "dotted":
            self._state = _DOTTED_HEAD
            self._head_left = 3
        else:
            self._state = _LINES


# -- the asyncio server ------------------------------------------------------


def _looks_like_requests(path: str, st: os.stat_result) -> bool:
    """A regular file left where the FIFO belongs by a client that wrote to
    the path while no server ran (``cat > /tmp/ser_fifo``): ours, small,
    and nothing but FIFO requests.  Only such a file is removed."""
    if st.st_uid != os.geteuid() or st.st_size > 65536:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read().lstrip(b"\r\n")
    except OSError:
        return False
    return not head or head.startswith(b":")


def owner_ids(user: str | int | None, group: str | int | None) -> tuple[int, int]:
    """uid and gid for chown (-1: unchanged) from names or numbers."""
    try:
        uid = pwd.getpwnam(user).pw_uid if isinstance(user, str) else (-1 if user is None else user)
        gid = grp.getgrnam(group).gr_gid if isinstance(group, str) else (-1 if group is None else group)
    except KeyError as e:
        raise FifoError(f"fifo_user/fifo_group: no such user or group {e}") from None
    return uid, gid


def prepare_fifo(path: str, mode: int, user: str | int | None = None, group: str | int | None = None) -> int:
    """Create the request FIFO (SER 0.9: an old FIFO is replaced); returns
    its inode.  Refuses, with a clear :class:`FifoError`, to remove anything
    that is not safely ours: a FIFO another server is reading, a directory, a
    symlink, a device, or a regular file that is not a stale request dump."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise FifoError(f"cannot examine FIFO path {path}: {e.strerror}") from None
    if st is not None:
        if stat.S_ISFIFO(st.st_mode):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise FifoError(f"cannot examine FIFO {path}: {e.strerror}") from None
            else:
                os.close(fd)
                raise FifoError(f"FIFO {path} is being read by another process (another server running?)")
            log.info("FIFO: replacing old FIFO %s", path)
        elif stat.S_ISREG(st.st_mode) and _looks_like_requests(path, st):
            log.warning("FIFO: removing stale regular file %s (requests written while no server ran)", path)
        else:
            kind = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a symbolic link"
                if stat.S_ISLNK(st.st_mode)
                else "a regular file"
                if stat.S_ISREG(st.st_mode)
                else "a special file"
            )
            raise FifoError(
                f"fifo path {path} exists and is {kind}, not a FIFO; refusing to remove it "
                f"(remove it yourself or set fifo= to another path)"
            )
        try:
            os.unlink(path)
        except OSError as e:
            raise FifoError(f"cannot remove old {path}: {e.strerror}") from None
    try:
        os.mkfifo(path, mode)
        os.chmod(path, mode)  # mkfifo's mode is filtered by the umask
    except OSError as e:
        raise FifoError(f"cannot create FIFO {path}: {e.strerror}") from None
    if user is not None or group is not None:
        uid, gid = owner_ids(user, group)
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            raise FifoError(f"cannot chown FIFO {path}: {e.strerror}") from None
    return os.lstat(path).st_ino


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FifoServer:
    """Serves ``registry`` on the FIFO at ``path``."""

    def __init__(
        self,
        path: str,
        registry: CommandRegistry,
        *,
        reply_dir: str = "/tmp/",
        mode: int = 0o660,
        user: str | int | None = None,
        group: str | int | None = None,
        request_timeout: float = 0.5,
        reply_timeout: float = 10.0,
        max_inflight: int = 256,
    ) -> None:
        self.path = path
        self.registry = registry
        self.reply_dir = reply_dir
        self.mode = mode
        self.user = user
        self.group = group
        self.request_timeout = request_timeout
        self.reply_timeout = reply_timeout
        self.max_inflight = max_inflight
        self.parser = RequestParser(self._reader_of)
        self._rfd = -1
        self._wfd = -1
        self._ino = 0
        self._reading = False
        self._drained = True  # the last read emptied the pipe
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.served = 0  # requests answered (for tests and statistics)

    def _reader_of(self, name: str) -> str:
        cmd = self.registry.get(name)
        return cmd.fifo_reader if cmd is not None else "lines"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ino = prepare_fifo(self.path, self.mode, self.user, self.group)
        try:
            self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            # the dummy writer: without it every client's close is an EOF
            self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            self._close_fds()
            raise FifoError(f"cannot open FIFO {self.path}: {e.strerror}") from None
        self._resume()
        log.info("FIFO server listening on %s (replies in %s)", self.path, self.reply_dir)

    async def stop(self) -> None:
        self._pause()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=1.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._close_fds()
        with contextlib.suppress(OSError):
            if self._ino and os.lstat(self.path).st_ino == self._ino:
                os.unlink(self.path)  # SER 0.9 removes its FIFO at exit

    def _close_fds(self) -> None:
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = -1

    def _resume(self) -> None:
        if not self._reading and self._rfd >= 0 and self._loop is not None:
            self._loop.add_reader(self._rfd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._rfd)
            self._reading = False

    def _on_readable(self) -> None:
        for _ in range(16):  # bounded, so one busy writer cannot starve the loop
            try:
                data = os.read(self._rfd, READ_CHUNK)
            except BlockingIOError:
                self._drained = True
                break
            except OSError as e:
                log.error("FIFO: read failed: %s", e)
                break
            if not data:
                break
            for req in self.parser.feed(data, self._drained):
                self._dispatch(req)
            self._drained = len(data) < READ_CHUNK
            if self._drained:
                break
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.parser.pending and self._loop is not None:
            self._idle = self._loop.call_later(self.request_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if not self._reading:  # paused: the rest of the request may be waiting in the pipe
            self._arm_idle()
            return
        for req in self.parser.expire():
            self._dispatch(req)

    def _dispatch(self, req: FifoRequest) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._serve(req))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if len(self._tasks) >= self.max_inflight:
            self._pause()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) < self.max_inflight // 2 or not self._tasks:
            self._resume()

    async def _serve(self, req: FifoRequest) -> None:
        try:
            await self._serve_one(req)
        except Exception:  # never lose a task's error silently
            log.exception("FIFO: serving '%s' failed", req.command)

    async def _serve_one(self, req: FifoRequest) -> None:
        if req.error is not None:
            if req.reply is None:
                log.error("FIFO: request '%s' dropped: %s", req.command, req.error)
                return
            reply = MgmtReply(400, req.error)
        else:
            reply = await self.registry.call(req.command, req.params)
        self.served += 1
        if req.reply is None:
            log.info("FIFO: '%s' has no reply file; result: %s %s", req.command, reply.code, reply.reason)
            return
        await self.write_reply(req.reply, render_fifo(reply).encode("utf-8", "surrogateescape"))

    async def write_reply(self, name: str, data: bytes) -> bool:
        """Open ``reply_dir + name`` as SER did and write ``data``; False
        (logged) when the client is gone or the file is not a safe FIFO."""
        path = self.reply_dir + name
        fd = -1
        for attempt in range(REPLY_RETRIES + 1):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
                break
            except OSError as e:
                if e.errno == errno.ENXIO and attempt < REPLY_RETRIES:
                    await asyncio.sleep(REPLY_WAIT)
                    continue
                if e.errno == errno.ENXIO:
                    log.error("FIFO: no client at %s, reply dropped", path)
                else:
                    log.error("FIFO: cannot open reply FIFO %s: %s", path, e.strerror)
                return False
        try:
            if not self._safe_reply_fd(fd, path):
                return False
            return await self._write_all(fd, data, path)
        finally:
            os.close(fd)

    def _safe_reply_fd(self, fd: int, path: str) -> bool:
        """SER 0.8.11+'s checks: a FIFO, one link, not a symlink, and the
        path still names the file we opened; and not our own request FIFO
        (we would read the reply back as commands)."""
        try:
            fst = os.fstat(fd)
            lst = os.lstat(path)
        except OSError as e:
            log.error("FIFO: cannot check reply file %s: %s", path, e.strerror)
            return False
        if not stat.S_ISFIFO(fst.st_mode) or fst.st_nlink != 1 or stat.S_ISLNK(lst.st_mode):
            log.error("FIFO: reply file %s is not a plain FIFO, reply dropped", path)
            return False
        if (fst.st_ino, fst.st_dev) != (lst.st_ino, lst.st_dev):
            log.error("FIFO: reply file %s was replaced, reply dropped", path)
            return False
        if self._rfd >= 0:
            own = os.fstat(self._rfd)
            if (fst.st_ino, fst.st_dev) == (own.st_ino, own.st_dev):
                log.error("FIFO: reply file %s is the server's own FIFO, reply dropped", path)
                return False
        return True

    async def _write_all(self, fd: int, data: bytes, path: str) -> bool:
        assert self._loop is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError as e:  # EPIPE: the client went away (SIGPIPE is ignored)
                log.error("FIFO: writing reply to %s failed: %s", path, e.strerror)
                return False
            ready: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_writer(fd, _wake, ready)
            try:
                await asyncio.wait_for(ready, self.reply_timeout)
            except TimeoutError:
                log.error("FIFO: client at %s does not read its reply, dropped", path)
                return False
            finally:
                self._loop.remove_writer(fd)
        return True
