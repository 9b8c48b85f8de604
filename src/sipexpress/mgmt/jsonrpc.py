"""JSON-RPC 2.0 over HTTP and over a Unix stream socket.

The method is a management command name (case-insensitive, as on the
FIFO); ``params`` is an array of scalars, passed to the handler as strings
(the FIFO's parameter lines).  The result is the command's ``data``, or its
FIFO ``text`` when the command has no structured data.  A command error
becomes a JSON-RPC error whose ``code`` is SER's code (400, 404, 500 ...),
``message`` SER's reason, and ``data`` ``{"ser_code", "reason", "text"}``.
An unknown method is ``-32601`` with SER's reason
``command 'x' not available``.  Batches and notifications are supported.

HTTP: ``POST`` (any path) with a JSON body; ``GET /metrics`` is the
Prometheus exposition of the statistics (without credentials unless
``jsonrpc_metrics_auth`` is set, so that Prometheus can scrape it); any other
``GET`` is refused.  Why a small
hand-written HTTP/1.1 handler and not Starlette + uvicorn: the endpoint is
one POST route; uvicorn's server wants to own signal handling and logging
set-up of the process (the core owns those), and a 150-line
``asyncio.start_server`` handler with explicit limits (header size, body
size, keep-alive) costs less per request and has no moving parts we do not
test.  The web UI (Starlette) can still call the same registry in-process.

Access over HTTP: every request (but ``GET /metrics``, above) needs the token (``Authorization: Bearer
<token>`` or ``X-Auth-Token: <token>``, see :mod:`sipexpress.mgmt.token`)
or the configured HTTP basic credentials; a browser page on the host
cannot use the endpoint: a request with an ``Origin`` not listed in
``jsonrpc_allow_origin`` or a cross-site ``Sec-Fetch-Site`` is refused
(403), so is a body that is not ``application/json`` (415), and, while the
listener is on loopback, a ``Host`` that is not a loopback name (403: DNS
rebinding).  Each refusal is logged with the peer's address.  HTTP binds
``127.0.0.1`` by default; another address needs an explicit
``jsonrpc_secret`` or basic credentials.  The Unix socket is protected by
its file mode, set before anyone can connect.  The Unix socket speaks
newline-delimited JSON: one request (or batch) per line, one response line
per request (none for notifications).

Batches hold at most ``MAX_BATCH`` calls and yield to the event loop
between calls, and a large answer is encoded in pieces
(:func:`dump_in_pieces`), so that one batch of heavy commands cannot stall
SIP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import ssl
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from sipexpress.core.registry import MgmtReply
from sipexpress.mgmt.fifo import owner_ids
from sipexpress.mgmt.metrics import CONTENT_TYPE as METRICS_TYPE
from sipexpress.mgmt.registry import CommandRegistry

log = logging.getLogger("sipexpress.mgmt.jsonrpc")

MAX_HEADER = 16384
MAX_BODY = 1 << 20
MAX_BATCH = 100
SLICE = 200  # parts of a large answer encoded between two yields to the event loop
IDLE_TIMEOUT = 30.0

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_CHALLENGE = 'WWW-Authenticate: Basic realm="ser"\r\n'


class JsonRpcError(Exception):
    """Configuration errors of the JSON-RPC listeners (start-up)."""


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": rid}


def _no_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON: a request using them is a parse error."""
    raise ValueError(f"{name} is not JSON")


def _valid_id(rid: Any) -> bool:
    return rid is None or (isinstance(rid, str | int | float) and not isinstance(rid, bool))


def _params(raw: Any) -> list[str] | None:
    if raw is None:
        return []
    if isinstance(raw, list):
        out = []
        for p in raw:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, bool):
                out.append("1" if p else "0")
            elif isinstance(p, int | float):
                out.append(str(p))
            else:
                return None
        return out
    return None


def _has_long_list(obj: Any, depth: int = 4) -> bool:
    if isinstance(obj, list):
        return len(obj) > SLICE or (depth > 0 and any(_has_long_list(x, depth - 1) for x in obj))
    if isinstance(obj, dict):
        return depth > 0 and any(_has_long_list(v, depth - 1) for v in obj.values())
    return False


async def dump_in_pieces(obj: Any) -> bytes:
    """The JSON text of an answer of any size, encoded piece by piece: the
    containers that hold a list longer than SLICE are walked, their small
    parts encoded whole, with a yield to the event loop every SLICE parts,
    so that ten ``ul_dump`` of 20 000 bindings (50 MB) do not stop SIP."""
    parts: list[bytes] = []
    done = 0

    async def encode(o: Any) -> None:
        nonlocal done
        if isinstance(o, list) and _has_long_list(o):
            parts.append(b"[")
            for i, x in enumerate(o):
                if i:
                    parts.append(b", ")
                await encode(x)
            parts.append(b"]")
        elif isinstance(o, dict) and _has_long_list(o):
            parts.append(b"{")
            for i, (k, v) in enumerate(o.items()):
                parts.append(b"%s%s: " % (b", " if i else b"", Dispatcher._dump(str(k))))
                await encode(v)
            parts.append(b"}")
        else:
            parts.append(Dispatcher._dump(o))
            done += 1
            if done % SLICE == 0:
                await asyncio.sleep(0)

    await encode(obj)
    return b"".join(parts)


class Dispatcher:
    """Transport-independent JSON-RPC 2.0 processing over the registry."""

    def __init__(self, registry: CommandRegistry) -> None:
        self.registry = registry

    async def handle_bytes(self, body: bytes) -> bytes | None:
        """One HTTP body or socket line in, the response out (None: nothing
        to send, i.e. only notifications)."""
        try:
            msg = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return self._dump(_error(None, PARSE_ERROR, "Parse error"))
        if isinstance(msg, list):
            if not msg:
                return self._dump(_error(None, INVALID_REQUEST, "Invalid Request"))
            if len(msg) > MAX_BATCH:
                return self._dump(
                    _error(None, INVALID_REQUEST, f"Invalid Request: more than {MAX_BATCH} calls")
                )
            results = []
            for m in msg:
                r = await self.handle(m)
                if r is not None:
                    results.append(r)
                await asyncio.sleep(0)  # let SIP run between the calls of a batch
            return await dump_in_pieces(results) if results else None
        result = await self.handle(msg)
        return None if result is None else await dump_in_pieces(result)

    @staticmethod
    def _dump(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, default=str, allow_nan=False).encode(
            "utf-8", "surrogateescape"
        )

    async def handle(self, msg: Any) -> dict[str, Any] | None:
        if (
            not isinstance(msg, dict)
            or msg.get("jsonrpc") != "2.0"
            or not isinstance(msg.get("method"), str)
            or not _valid_id(msg.get("id"))
        ):
            rid = msg.get("id") if isinstance(msg, dict) else None
            return _error(rid if _valid_id(rid) else None, INVALID_REQUEST, "Invalid Request")
        notification = "id" not in msg
        rid = msg.get("id")
        method: str = msg["method"]
        params = _params(msg.get("params"))
        if params is None:
            return (
                None if notification else _error(rid, INVALID_PARAMS, "Invalid params: an array of scalars")
            )
        cmd = self.registry.get(method)
        if cmd is None:
            reason = f"command '{method}' not available"
            if notification:
                return None
            return _error(rid, METHOD_NOT_FOUND, reason, {"ser_code": 500, "reason": reason})
        reply: MgmtReply = await self.registry.call(method, params)
        if notification:
            return None
        if not reply.ok:
            data = {"ser_code": reply.code, "reason": reply.reason, "text": reply.text}
            if reply.data is not None:  # e.g. reload's located errors
                data["data"] = reply.data
            return _error(rid, reply.code, reply.reason, data)
        result = reply.data if reply.data is not None else reply.text
        return {"jsonrpc": "2.0", "result": result, "id": rid}


def parse_address(value: str, default_port: int = 5080) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` or ``:port``."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise JsonRpcError(f"invalid JSON-RPC address {value!r} (expected host:port)") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _host_name(host_header: str) -> str:
    """``Host`` without its port (``[v6]:p``, ``name:p``, ``name``)."""
    if host_header.startswith("["):
        return host_header[: host_header.find("]") + 1].lower()
    return host_header.rpartition(":")[0].lower() if ":" in host_header else host_header.lower()


class HttpServer:
    """JSON-RPC over HTTP/1.1 POST, for callers holding the token."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        *,
        token: str,
        explicit: bool = False,
        user: str | None = None,
        password: str | None = None,
        allow_origins: frozenset[str] = frozenset(),
        metrics: Callable[[], bytes] | None = None,
        metrics_auth: bool = False,
        certificate: str | None = None,
        private_key: str | None = None,
    ) -> None:
        """``token`` is always required; ``explicit`` tells that it came from
        the configuration (needed to listen on a non-loopback address).
        With ``certificate`` (PEM) it is HTTPS."""
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.metrics_auth = metrics_auth
        self.host = host
        self.port = port
        self.secret = token
        self.basic = None
        if user:
            self.basic = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        self.allow_origins = allow_origins
        self.loopback = _is_loopback(host)
        if not self.loopback and not explicit and self.basic is None:
            raise JsonRpcError(
                f"JSON-RPC over HTTP on non-local address {host} needs jsonrpc_secret, "
                "jsonrpc_secret_file or jsonrpc_user/jsonrpc_password"
            )
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.ssl: ssl.SSLContext | None = None
        if certificate:
            from sipexpress.core.tls import TlsError, https_context

            try:
                self.ssl = https_context(certificate, private_key)
            except TlsError as e:
                raise JsonRpcError(f"JSON-RPC over HTTPS: {e}") from None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.host, self.port, limit=MAX_HEADER, ssl=self.ssl
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("JSON-RPC over %s on %s:%d", "HTTPS" if self.ssl else "HTTP", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()  # the handler sees end-of-file and finishes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if self.basic is not None and hmac.compare_digest(auth.encode(), self.basic.encode()):
            return True
        token = headers.get("x-auth-token") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        return bool(token) and hmac.compare_digest(token.encode(), self.secret.encode())

    def refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """Why this request may not run a command (status, reason), or None."""
        if method != "POST":
            return 405, "use POST"
        origin = headers.get("origin")
        if origin is not None and origin not in self.allow_origins:
            return 403, f"cross-origin request from {origin}"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request"
        if self.loopback and _host_name(headers.get("host", "localhost")) not in _LOOPBACK_NAMES:
            return 403, f"Host {headers.get('host')} is not this loopback listener"
        ctype = headers.get("content-type", "").partition(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, "Content-Type must be application/json"
        if not self._authorized(headers):
            return 401, "no valid credential"
        return None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except (asyncio.LimitOverrunError, ValueError):  # the header block exceeds MAX_HEADER
            self._log_refusal(writer, f"header block larger than {MAX_HEADER} bytes")
            with contextlib.suppress(Exception):
                await self._respond(writer, 431, b"header too large\n", close=True)
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _log_refusal(writer: asyncio.StreamWriter, reason: str) -> None:
        peer = writer.get_extra_info("peername")
        log.warning("JSON-RPC over HTTP: refused a request from %s: %s", peer, reason)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one HTTP request; False closes the connection."""
        async with asyncio.timeout(IDLE_TIMEOUT):  # cheaper than wait_for: no extra task
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._log_refusal(writer, "bad request line")
            await self._respond(writer, 400, b"bad request line\n", close=True)
            return False
        method, _, version = parts
        headers: dict[str, str] = {}
        for h in lines[1:]:
            if h:
                name, sep, value = h.partition(":")
                if not sep:
                    self._log_refusal(writer, "bad header line")
                    await self._respond(writer, 400, b"bad header\n", close=True)
                    return False
                headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        keep = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        if "transfer-encoding" in headers:
            self._log_refusal(writer, "Transfer-Encoding")
            await self._respond(writer, 411, b"Content-Length required\n", close=True)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._log_refusal(writer, f"Content-Length {headers.get('content-length')}")
            await self._respond(writer, 413 if length > 0 else 400, b"bad Content-Length\n", close=True)
            return False
        body = b""
        if length:
            async with asyncio.timeout(IDLE_TIMEOUT):
                body = await reader.readexactly(length)
        if method == "GET" and parts[1] == "/metrics" and self.metrics is not None:
            # scrapeable without the token unless jsonrpc_metrics_auth is set
            if self.metrics_auth and not self._authorized(headers):
                self._log_refusal(writer, "GET /metrics: no valid credential")
                await self._respond(writer, 401, b"unauthorized\n", close=not keep, extra=_CHALLENGE)
            else:
                prepare = self.dispatcher.registry.prepare
                if prepare is not None:
                    await prepare()
                await self._respond(writer, 200, self.metrics(), close=not keep, ctype=METRICS_TYPE)
            return keep
        refused = self.refusal(method, headers)
        if refused is not None:
            status, reason = refused
            self._log_refusal(writer, f"{method} {parts[1]}: {reason}")
            extra = {405: "Allow: POST\r\n", 401: _CHALLENGE}.get(status, "")
            await self._respond(
                writer, status, reason.encode("latin-1", "replace") + b"\n", close=not keep, extra=extra
            )
            return keep
        out = await self.dispatcher.handle_bytes(body)
        if out is None:
            await self._respond(writer, 204, b"", close=not keep)
        else:
            await self._respond(writer, 200, out, close=not keep, ctype="application/json")
        return keep

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        close: bool,
        ctype: str = "text/plain",
        extra: str = "",
    ) -> None:
        reason = {
            200: "OK",
            204: "No Content",
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            405: "Method Not Allowed",
            411: "Length Required",
            413: "Payload Too Large",
            415: "Unsupported Media Type",
            431: "Request Header Fields Too Large",
        }.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


class UnixServer:
    """JSON-RPC over a Unix stream socket, one JSON text per line."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        path: str,
        mode: int = 0o660,
        user: str | int | None = None,
        group: str | int | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.path = path
        self.mode = mode
        self.user = user
        self.group = group
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def _bind(self) -> socket.socket:
        """A listening socket at ``path`` that has its mode and owner from
        the first moment: bound in a private directory, then renamed into
        place (a chmod after bind() leaves a window with the umask's mode)."""
        private = tempfile.mkdtemp(prefix=".jsonrpc-", dir=os.path.dirname(os.path.abspath(self.path)))
        tmp = os.path.join(private, "sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            os.chmod(tmp, self.mode)
            if self.user is not None or self.group is not None:
                uid, gid = owner_ids(self.user, self.group)
                os.chown(tmp, uid, gid)
            sock.listen(100)
            os.rename(tmp, self.path)
        except BaseException:
            sock.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.rmdir(private)
        return sock

    async def start(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise JsonRpcError(f"{self.path} exists and is not a socket; refusing to remove it")
        self._server = await asyncio.start_unix_server(self._client, sock=self._bind(), limit=MAX_BODY)
        log.info("JSON-RPC on Unix socket %s (mode %04o)", self.path, self.mode)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()  # the handler sees end-of-file and finishes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    line = e.partial  # last request without a newline
                    if not line.strip():
                        break
                if not line.strip():
                    continue
                out = await self.dispatcher.handle_bytes(line)
                if out is not None:
                    writer.write(out + b"\n")
                    await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            with contextlib.suppress(Exception):
                writer.write(Dispatcher._dump(_error(None, INVALID_REQUEST, "request too large")) + b"\n")
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
