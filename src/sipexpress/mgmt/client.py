"""Clients of the management interfaces, as ``sc``/serweb talked to SER.

:func:`fifo_request` does what ``sc``'s ``fifo_cmd`` did: create a reply
FIFO in the reply directory, open it for reading *before* writing the
request (so the server's non-blocking open finds a reader), write the whole
request with one ``write()``, read the reply to end-of-file, remove the
reply FIFO.  It never hangs: a server that is not reading its FIFO is
noticed at once (``ENXIO``), a reply that does not come in ``timeout``
seconds raises :class:`FifoTimeout`.

:func:`rpc_call` is a JSON-RPC 2.0 client over HTTP or a Unix socket.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import select
import socket
import stat
import time
from typing import Any

_seq = itertools.count()


class MgmtClientError(Exception):
    """The request could not be delivered or answered."""


class ServerNotRunning(MgmtClientError):
    pass


class FifoTimeout(MgmtClientError):
    pass


class RpcError(MgmtClientError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.data = data


def build_request(command: str, params: list[str], reply_name: str) -> bytes:
    """``:cmd:reply\\n`` + one line per parameter + the empty line."""
    return "".join([f":{command}:{reply_name}\n", *(p + "\n" for p in params), "\n"]).encode(
        "utf-8", "surrogateescape"
    )


def fifo_request(
    fifo: str,
    command: str,
    params: list[str] | None = None,
    *,
    reply_dir: str = "/tmp/",
    timeout: float = 10.0,
) -> str:
    """Send one request to SER's FIFO and return the whole reply text."""
    try:
        st = os.stat(fifo)
    except OSError:
        raise ServerNotRunning(f"Error opening ser's FIFO {fifo}: it does not exist") from None
    if not stat.S_ISFIFO(st.st_mode):
        raise ServerNotRunning(f"Error opening ser's FIFO {fifo}: not a FIFO")
    name = f"ser_receiver_{os.getpid()}_{next(_seq)}"
    if not reply_dir.endswith("/"):
        reply_dir += "/"
    path = reply_dir + name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.mkfifo(path, 0o666)
    try:
        os.chmod(path, 0o666)  # sc: chmod a+w
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            _write_request(fifo, build_request(command, params or [], name))
            return _read_reply(rfd, timeout).decode("utf-8", "surrogateescape")
        finally:
            os.close(rfd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _write_request(fifo: str, data: bytes) -> None:
    try:
        wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ServerNotRunning(f"ser is not reading its FIFO {fifo} (server not running?)") from None
        raise ServerNotRunning(f"Error opening ser's FIFO {fifo}: {e.strerror}") from None
    try:
        os.set_blocking(wfd, True)  # one write(); <= PIPE_BUF is atomic
        os.write(wfd, data)
    finally:
        os.close(wfd)


def _read_reply(rfd: int, timeout: float) -> bytes:
    """Read until the server closes its end.  Linux reports POLLHUP on a
    FIFO only after a writer has come and gone, so before the server opens
    the reply FIFO we just keep waiting."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(rfd, select.POLLIN | select.POLLHUP)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FifoTimeout(f"no reply from ser within {timeout:g} s")
        events = poller.poll(left * 1000)
        if not events:
            continue
        ev = events[0][1]
        if ev & select.POLLIN:
            try:
                data = os.read(rfd, 65536)
            except BlockingIOError:
                continue
            if data:
                chunks.append(data)
                continue
            return b"".join(chunks)
        if ev & (select.POLLHUP | select.POLLERR):
            return b"".join(chunks)


def split_reply(text: str) -> tuple[int, str, str]:
    """``"200 ok\\nbody"`` -> ``(200, "ok", "body")``; unparsable -> code 0."""
    status, _, body = text.partition("\n")
    code, _, reason = status.partition(" ")
    try:
        return int(code), reason, body
    except ValueError:
        return 0, status, body


def rpc_call(
    method: str,
    params: list[Any] | None = None,
    *,
    url: str | None = None,
    unix_path: str | None = None,
    timeout: float = 10.0,
    secret: str | None = None,
    auth: tuple[str, str] | None = None,
) -> Any:
    """Call one JSON-RPC method; returns ``result`` or raises
    :class:`RpcError` (``code`` = SER's code for command errors)."""
    req = {"jsonrpc": "2.0", "method": method, "params": params or [], "id": 1}
    body = json.dumps(req).encode()
    if unix_path:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(unix_path)
                s.sendall(body + b"\n")
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise ServerNotRunning(
                f"cannot reach ser's JSON-RPC socket {unix_path}: {e.strerror or e}"
            ) from None
        resp = json.loads(buf)
    else:
        import httpx

        headers = {"Content-Type": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        try:
            r = httpx.post(
                url or "http://127.0.0.1:5080/", content=body, headers=headers, auth=auth, timeout=timeout
            )
        except httpx.HTTPError as e:
            raise ServerNotRunning(f"cannot reach ser's JSON-RPC at {url}: {e}") from None
        if r.status_code != 200:
            raise RpcError(r.status_code, f"HTTP {r.status_code} {r.reason_phrase}")
        resp = r.json()
    if "error" in resp:
        err = resp["error"]
        raise RpcError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
    return resp.get("result")
