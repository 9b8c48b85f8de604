"""Worker processes: SER's ``children``.

Theory of operation
-------------------
``ser`` loads its configuration once, in the *main process*, then binds
every SIP socket there and forks ``children`` workers.  Each worker runs
the whole server (the :class:`~sipexpress.core.runner.Runner` with its own
event loop, modules and transactions); the main process only supervises.

Sockets, bound by the main process before the fork (:func:`bind_worker_sockets`):

* every UDP listen address gets one socket per worker, all bound with
  ``SO_REUSEPORT``.  The kernel picks the socket of a datagram by a hash of
  its source and destination (the 4-tuple): one phone's retransmissions,
  its CANCEL and the ACK of a negative reply land on the worker that holds
  its transaction, as long as the set of sockets stays the same.  The main
  process keeps every socket open, so a restarted worker reads the socket
  its predecessor read and the set never changes.
* every UDP listen address also gets one *private* socket per worker on a
  port of the kernel's choice.  A worker sends its requests (tm's branches,
  t_uac_dlg) from it and names its port in the Via it adds: the replies
  come back to the worker that holds the client transaction, whichever
  socket the peer would otherwise have hashed to.  Record-Route keeps the
  public port.
* a TCP (TLS, WS, WSS) listen address is one socket shared by all
  workers: any worker accepts a connection and then owns it.  Each worker tells the others
  which peer addresses its connections serve (``tcp`` messages on the bus);
  a request to a phone whose connection another worker holds is handed to
  that worker, which writes it on the connection (:class:`TcpOwners`).

The bus (:class:`Bus`): one ``AF_UNIX`` datagram socket pair per worker,
made before the fork (no name in the file system, so only this process
tree can use it).  A worker reads its pair's one end; everybody writes to
the other.  Payloads are pickled (the peers are our own processes).  It
carries usrloc's changes (applied by every other worker; a look-up first
drains the bus, so a binding saved through one worker before its 200 OK
left is seen by every worker after it), the management layer's questions
to the other workers (statistics, ``ps`` rows) and TCP hand-offs.

Worker 0 serves the FIFO, JSON-RPC and the web interface, and sums the
statistics of all workers before a command runs.

The supervisor (:func:`supervise`): SIGTERM/SIGINT stop every worker (exit
code 0 once all stopped cleanly), SIGHUP is ignored (as Kamailio's main
process does); a worker that dies before it has started
stops the server with exit code 1; a worker that dies later is logged and
restarted (Kamailio would stop the whole server instead), at most
``MAX_RESTARTS`` times a minute.  Every child is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import pickle
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from sipexpress.core.context import Proto, ReceiveInfo
from sipexpress.core.transport import TcpManager, bind_socket

if TYPE_CHECKING:
    from sipexpress.core.server import Core
    from sipexpress.sip.message import SipMessage

log = logging.getLogger("sipexpress.workers")

#: restarts of dead workers allowed within RESTART_WINDOW seconds
MAX_RESTARTS: Final = 10
RESTART_WINDOW: Final = 60.0
#: seconds the workers get to stop before SIGKILL
STOP_GRACE: Final = 15.0
#: seconds a question to another worker may take
ASK_TIMEOUT: Final = 3.0
_BUS_BUFFER: Final = 4 * 1024 * 1024
#: messages kept for a worker whose socket is full (or a kind not yet handled)
MAX_BACKLOG: Final = 100_000


# -- sockets -------------------------------------------------------------------
@dataclass
class WorkerSockets:
    """What one worker reads and sends from, bound by the main process."""

    #: (proto, ip, port) -> the socket of that listen address for this worker
    listen: dict[tuple[Proto, str, int], socket.socket] = field(default_factory=dict)
    #: (ip, port) of a UDP listen address -> this worker's private socket
    private: dict[tuple[str, int], socket.socket] = field(default_factory=dict)

    def all(self) -> list[socket.socket]:
        return [*self.listen.values(), *self.private.values()]


def bind_worker_sockets(
    specs: Sequence[tuple[Proto, str, int]], children: int, rcvbuf: int = 0
) -> list[WorkerSockets]:
    """Bind the sockets of ``children`` workers (see the module doc).
    Raises OSError naming the address that could not be bound."""
    out = [WorkerSockets() for _ in range(children)]
    made: list[socket.socket] = []
    try:
        for proto, ip, port in specs:
            where = f"{proto.name.lower()}:{ip}:{port}"
            try:
                if proto is Proto.UDP:
                    for ws in out:
                        s = bind_socket(ip, port, socket.SOCK_DGRAM, rcvbuf, reuse_port=True)
                        made.append(s)
                        ws.listen[(proto, ip, port)] = s
                        p = bind_socket(ip, 0, socket.SOCK_DGRAM, rcvbuf)
                        made.append(p)
                        ws.private[(ip, port)] = p
                else:  # TCP, TLS, WS, WSS: one listening socket, any worker accepts
                    s = bind_socket(ip, port, socket.SOCK_STREAM)
                    made.append(s)
                    for ws in out:
                        ws.listen[(proto, ip, port)] = s
            except OSError as e:
                raise OSError(e.errno, f"cannot bind {where}: {e.strerror}") from None
    except BaseException:
        for s in made:
            s.close()
        raise
    return out


# -- the bus ---------------------------------------------------------------------
Handler = Callable[[int, Any], None]
Responder = Callable[[Any], Awaitable[Any]]


class Bus:
    """Datagrams between the workers (see the module doc)."""

    def __init__(self, index: int, pairs: Sequence[tuple[socket.socket, socket.socket]]) -> None:
        self.index = index
        self.count = len(pairs)
        self._rx = pairs[index][0]
        self._tx = [p[1] for p in pairs]
        self.handlers: dict[str, Handler] = {}
        self.responders: dict[str, Responder] = {}
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._backlog: dict[int, list[bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        #: messages of a kind nobody handles yet (a module still starting),
        #: replayed in order by :meth:`on`
        self._unhandled: list[tuple[str, int, Any]] = []

    @staticmethod
    def pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
        """The socket pairs of ``count`` workers (made before the fork)."""
        out = []
        for _ in range(count):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUS_BUFFER)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUS_BUFFER)
                s.setblocking(False)
            out.append((a, b))
        return out

    def on(self, kind: str, handler: Handler) -> None:
        """Handle messages of ``kind`` from now on, first those that came
        before (in order)."""
        self.handlers[kind] = handler
        waiting = [m for m in self._unhandled if m[0] == kind]
        if waiting:
            self._unhandled = [m for m in self._unhandled if m[0] != kind]
            for k, src, payload in waiting:
                self._dispatch(k, src, payload)

    @property
    def others(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._rx.fileno(), self.drain)

    def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._rx.fileno())
        if self._retry is not None:
            self._retry.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()

    # -- sending -----------------------------------------------------------
    def send(self, dst: int, kind: str, payload: Any) -> None:
        """Queue ``(kind, payload)`` for worker ``dst`` (in order)."""
        self._send(dst, pickle.dumps((kind, self.index, payload), protocol=pickle.HIGHEST_PROTOCOL))

    def broadcast(self, kind: str, payload: Any) -> None:
        """:meth:`send` to every other worker."""
        data = pickle.dumps((kind, self.index, payload), protocol=pickle.HIGHEST_PROTOCOL)
        for dst in range(self.count):
            if dst != self.index:
                self._send(dst, data)

    def _send(self, dst: int, data: bytes) -> None:
        backlog = self._backlog.get(dst)
        if backlog:
            if len(backlog) >= MAX_BACKLOG:  # that worker reads nothing: it hangs
                log.error("bus: worker %d reads nothing; message dropped", dst)
                return
            backlog.append(data)
            return
        try:
            self._tx[dst].send(data)
        except BlockingIOError:
            self._backlog.setdefault(dst, []).append(data)
            self._schedule_retry()
        except OSError as e:
            log.error("bus: message to worker %d lost: %s", dst, e)

    def _schedule_retry(self) -> None:
        if self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(0.001, self._flush)

    def _flush(self) -> None:
        self._retry = None
        for dst, backlog in self._backlog.items():
            while backlog:
                try:
                    self._tx[dst].send(backlog[0])
                except BlockingIOError:
                    self._schedule_retry()
                    break
                except OSError as e:
                    log.error("bus: message to worker %d lost: %s", dst, e)
                backlog.pop(0)

    # -- receiving ---------------------------------------------------------
    def drain(self) -> None:
        """Handle everything that is waiting (the reader callback, and
        called before a look-up that must see the other workers' writes)."""
        rx = self._rx
        while True:
            try:
                data = rx.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # pragma: no cover - the pair is ours
                log.error("bus: %s", e)
                return
            try:
                kind, src, payload = pickle.loads(data)
            except Exception as e:
                log.error("bus: undecodable message: %r", e)
                continue
            self._dispatch(kind, src, payload)

    def _dispatch(self, kind: str, src: int, payload: Any) -> None:
        if kind == "?":
            rid, what, arg = payload
            responder = self.responders.get(what)
            if responder is None or self._loop is None:
                self.send(src, "=", (rid, None))
                return
            self._loop.create_task(self._answer(src, rid, responder, arg))
            return
        if kind == "=":
            rid, value = payload
            fut = self._waiting.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(value)
            return
        handler = self.handlers.get(kind)
        if handler is None:
            if len(self._unhandled) >= MAX_BACKLOG:
                log.error("bus: no handler for %r from worker %d; dropped", kind, src)
                return
            self._unhandled.append((kind, src, payload))
            return
        try:
            handler(src, payload)
        except Exception:
            log.exception("bus: handling %r from worker %d failed", kind, src)

    async def _answer(self, src: int, rid: int, responder: Responder, arg: Any) -> None:
        try:
            value = await responder(arg)
        except Exception:
            log.exception("bus: answering worker %d failed", src)
            value = None
        self.send(src, "=", (rid, value))

    # -- questions ---------------------------------------------------------
    async def ask_all(self, what: str, arg: Any = None, timeout: float = ASK_TIMEOUT) -> dict[int, Any]:
        """Ask every other worker (its responder ``what``); the answers by
        worker index.  A worker that does not answer in time is left out
        (and logged)."""
        loop = asyncio.get_running_loop()
        futs: dict[int, asyncio.Future[Any]] = {}
        for dst in self.others:
            rid = next(self._ids)
            fut = futs[dst] = loop.create_future()
            self._waiting[rid] = fut
            self.send(dst, "?", (rid, what, arg))
        if not futs:
            return {}
        done, _pending = await asyncio.wait(futs.values(), timeout=timeout)
        out: dict[int, Any] = {}
        for dst, fut in futs.items():
            if fut in done and not fut.cancelled():
                out[dst] = fut.result()
            else:
                log.warning("bus: worker %d did not answer %r", dst, what)
                fut.cancel()
        for rid in [r for r, f in self._waiting.items() if f.done()]:
            del self._waiting[rid]
        return out


@dataclass
class WorkerInfo:
    """What a worker knows of its place (``core.worker``; None = no workers)."""

    index: int
    count: int
    bus: Bus
    sockets: WorkerSockets
    main_pid: int
    ready_fd: int = -1
    #: a replacement for a worker that died: its state comes from the others
    restarted: bool = False

    @property
    def serves_mgmt(self) -> bool:
        return self.index == 0

    def notify_ready(self) -> None:
        """Tell the main process this worker has started."""
        if self.ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, bytes([self.index]))


# -- TCP connections of other workers ---------------------------------------------
Key = tuple[str, str, int]  # (protocol name, ip, port)


class TcpOwners:
    """Which worker holds the stream connection (TCP, TLS, WS, WSS) to a
    peer address, learnt from the bus; consulted only when this worker
    has no connection there."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.owner: dict[Key, int] = {}
        bus.on("tcp+", self._added)
        bus.on("tcp-", self._removed)
        bus.on("tcp0", self._forget)

    def _forget(self, src: int, _payload: None) -> None:
        """Worker ``src`` was restarted: its predecessor's connections are gone."""
        self.owner = {k: w for k, w in self.owner.items() if w != src}

    def _added(self, src: int, keys: list[Key]) -> None:
        for k in keys:
            self.owner[k] = src

    def _removed(self, src: int, keys: list[Key]) -> None:
        for k in keys:
            if self.owner.get(k) == src:
                del self.owner[k]

    def announcer(self, proto: str) -> Callable[[list[tuple[str, int]], bool], None]:
        """``TcpManager.announce`` for the connections of ``proto``."""

        def announce(keys: list[tuple[str, int]], present: bool) -> None:
            self.bus.broadcast("tcp+" if present else "tcp-", [(proto, ip, port) for ip, port in keys])

        return announce

    def lookup(self, proto: str, ip: str, port: int) -> int | None:
        self.bus.drain()
        return self.owner.get((proto, ip, port))


# -- the supervisor ------------------------------------------------------------------
def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM): a worker stops if the main process dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)


_SIGNALS: Final = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@dataclass
class _Slot:
    index: int
    pid: int = 0
    ready: bool = False
    restarts: list[float] = field(default_factory=list)


def supervise(
    children: int,
    sockets: list[WorkerSockets],
    run_worker: Callable[[WorkerInfo], int],
) -> int:
    """Fork ``children`` workers running ``run_worker`` and supervise them
    until SIGTERM/SIGINT; the exit code of ``ser``."""
    main_pid = os.getpid()
    pairs = Bus.pairs(children)
    ready_r, ready_w = os.pipe()
    os.set_blocking(ready_r, False)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    slots = [_Slot(i) for i in range(children)]
    by_pid: dict[int, _Slot] = {}

    def fork(slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            rc = 1
            try:
                os.close(ready_r)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                _die_with_parent()
                mine = sockets[slot.index]
                keep = {id(s) for s in mine.all()}
                for other in sockets:
                    for s in other.all():
                        if id(s) not in keep:
                            s.close()
                bus = Bus(slot.index, pairs)
                info = WorkerInfo(slot.index, children, bus, mine, main_pid, ready_w, bool(slot.restarts))
                rc = run_worker(info)
            except BaseException:
                log.exception("worker %d failed", slot.index)
            finally:
                logging.shutdown()
                os._exit(rc)
        slot.pid = pid
        slot.ready = False
        by_pid[pid] = slot

    for slot in slots:
        fork(slot)
    stopping = False
    rc = 0
    deadline: float | None = None
    announced = False
    while by_pid:
        info = signal.sigtimedwait(_SIGNALS, 0.5)
        with contextlib.suppress(BlockingIOError):
            for idx in os.read(ready_r, 256):
                slots[idx].ready = True
        if not announced and all(s.ready for s in slots):
            announced = True
            log.info("%d worker processes running: %s", children, " ".join(str(s.pid) for s in slots))
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            deadline = time.monotonic() + STOP_GRACE
            for pid in by_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        elif info is not None and info.si_signo == signal.SIGHUP:
            log.info("SIGHUP received: ignored (SIGTERM stops ser)")
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in by_pid:
                continue
            slot = by_pid.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                if code != 0:
                    rc = 1
                continue
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            if not slot.ready:
                log.error("worker %d (pid %d) died while starting (%s): stopping", slot.index, pid, how)
                rc = 1
                stopping = True
                deadline = time.monotonic() + STOP_GRACE
                for other in by_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGTERM)
                continue
            now = time.monotonic()
            slot.restarts = [t for t in slot.restarts if now - t < RESTART_WINDOW] + [now]
            if len(slot.restarts) > MAX_RESTARTS:
                log.error("worker %d (pid %d) died (%s) too often: stopping", slot.index, pid, how)
                rc = 1
                stopping = True
                deadline = now + STOP_GRACE
                for other in by_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGTERM)
                continue
            log.error("worker %d (pid %d) died (%s): restarting it", slot.index, pid, how)
            fork(slot)
        if stopping and deadline is not None and time.monotonic() > deadline:
            for pid in by_pid:
                log.error("worker pid %d did not stop: SIGKILL", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = None
            rc = 1
    os.close(ready_r)
    os.close(ready_w)
    return rc


# -- a worker's share of the server ------------------------------------------------
#: TCP requests handed to this worker whose replies go back to their sender
MAX_HANDED: Final = 10_000


class WorkerServices:
    """What a worker process adds to its core: the bus, TCP hand-offs and,
    in worker 0, the management layer's view of all workers."""

    def __init__(self, core: Core, info: WorkerInfo) -> None:
        self.core = core
        self.info = info
        self.bus = info.bus
        self.owners: TcpOwners | None = None
        #: branch of a request written for another worker -> that worker
        self._handed: dict[str, int] = {}
        #: ``ps`` rows of the other workers as of the last management command
        self.rows: dict[int, list[tuple[int, str]]] = {}
        self.local_rows: Callable[[], list[tuple[int, str]]] = list

    async def start(self) -> None:
        """After the listeners are open, before the modules start."""
        core, bus = self.core, self.bus
        assert core.loop is not None
        bus.start(core.loop)
        bus.responders["state"] = self._state
        managers = self._managers()
        if managers:
            self.owners = owners = TcpOwners(bus)
            for name, mgr in managers.items():
                mgr.announce = owners.announcer(name)
                mgr.hand_off = partial(self._hand_off, name)
                mgr.held_elsewhere = partial(self._held_elsewhere, name)
            bus.on("tcp>", self._write_for)
            bus.on("reply", self._reply_from_owner)
            bus.responders["tcp_owned"] = self._tcp_owned
            if self.info.restarted:
                bus.broadcast("tcp0", None)
                for src, keys in (await bus.ask_all("tcp_owned")).items():
                    owners._added(src, keys or [])

    def _managers(self) -> dict[str, TcpManager]:
        """The connection tables of the stream transports, by protocol."""
        core = self.core
        out: dict[str, TcpManager] = {}
        if core.tcp is not None:
            out[Proto.TCP.name] = core.tcp
        if core.tls is not None:
            out[Proto.TLS.name] = core.tls
        for proto, mgr in core.streams.items():
            out[proto.name] = mgr
        return out

    async def _tcp_owned(self, _arg: Any) -> list[Key]:
        return [
            (name, *k)
            for name, mgr in self._managers().items()
            for k, c in mgr.by_addr.items()
            if not c.closed
        ]

    def modules_started(self) -> None:
        """After the modules: our reply hook runs after tm's."""
        if self.owners is not None:
            self.core.reply_hooks.append(self._reply_hook)

    def stop(self) -> None:
        self.bus.stop()

    # -- worker 0: the whole server's view ----------------------------------------
    async def _state(self, _arg: Any) -> tuple[list[tuple[int, str]], dict[tuple[str, str], Any]]:
        return self.local_rows(), self.core.statistics.raw_values()

    async def gather(self) -> None:
        """Before a management command (worker 0): the other workers'
        statistics and ``ps`` rows, and their pending usrloc changes."""
        answers = await self.bus.ask_all("state")
        self.bus.drain()
        self.rows = {i: a[0] for i, a in answers.items() if a is not None}
        self.core.statistics.remote = [a[1] for a in answers.values() if a is not None]

    def process_table(self) -> list[tuple[int, str]]:
        rows = [(self.info.main_pid, f"main process: supervises {self.info.count} workers")]
        for i in range(self.info.count):
            if i == self.info.index:
                rows += self.local_rows()
            else:
                rows += self.rows.get(i) or [(0, f"worker {i}: not answering")]
        return rows

    # -- TCP connections held by another worker ----------------------------------
    def _held_elsewhere(self, proto: str, ip: str, port: int) -> bool:
        assert self.owners is not None
        owner = self.owners.lookup(proto, ip, port)
        return owner is not None and owner != self.info.index

    def _hand_off(self, proto: str, ip: str, port: int, data: bytes) -> bool:
        assert self.owners is not None
        owner = self.owners.lookup(proto, ip, port)
        if owner is None or owner == self.info.index:
            return False
        self.bus.send(owner, "tcp>", (proto, ip, port, data))
        return True

    def _write_for(self, src: int, msg: tuple[str, str, int, bytes]) -> None:
        """Another worker's message for a connection of ours."""
        proto, ip, port, data = msg
        mgr = self._managers().get(proto)
        conn = mgr.lookup(ip, port) if mgr is not None else None
        if conn is None:
            log.warning("%s hand-off from worker %d: no connection to %s:%d any more", proto, src, ip, port)
            return
        if not data.startswith(b"SIP/2.0 "):
            branch = _top_branch(data)
            if branch:
                handed = self._handed
                if len(handed) >= MAX_HANDED:
                    del handed[next(iter(handed))]
                handed[branch] = src
        conn.send(data)

    def _reply_hook(self, msg: SipMessage, rcv: ReceiveInfo) -> bool:
        """A reply on our connection to a request another worker sent
        through it goes to that worker (whose transaction it is)."""
        if not self._handed or rcv.proto is Proto.UDP:
            return False
        try:
            branch = msg.via1.branch
        except Exception:
            return False
        src = self._handed.get(branch or "")
        if src is None:
            return False
        reply = (msg.raw, rcv.proto.name, rcv.src_ip, rcv.src_port, rcv.dst_ip, rcv.dst_port, rcv.af)
        self.bus.send(src, "reply", reply)
        return True

    def _reply_from_owner(self, src: int, msg: tuple[bytes, str, str, int, str, int, int]) -> None:
        raw, proto, sip, sport, dip, dport, af = msg
        # not now: the bus may be drained in the middle of a route (a look-up)
        loop = self.core.loop
        assert loop is not None
        loop.call_soon(self.core.receive, raw, ReceiveInfo(Proto[proto], sip, sport, dip, dport, af, None))


def _top_branch(data: bytes) -> str | None:
    from sipexpress.sip.errors import SipParseError
    from sipexpress.sip.message import SipMessage

    try:
        return SipMessage.parse(data).via1.branch
    except SipParseError:
        return None
