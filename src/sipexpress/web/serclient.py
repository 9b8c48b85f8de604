"""The web app's only way to ser: management commands over JSON-RPC.

serweb wrote FIFO requests; we send the same commands as JSON-RPC over HTTP
(``http://host:port/``) or a Unix socket (``unix:/path``).  The app does
not care whether ser runs in the same process (loopback) or elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx

from sipexpress.mgmt.client import RpcError, ServerNotRunning, rpc_call


class SerError(Exception):
    """A management command failed; ``code`` is SER's code."""

    def __init__(self, code: int, reason: str, text: str = "") -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.text = text


class SerDown(SerError):
    """ser could not be reached."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "the SIP server is not reachable", detail)


class SerClient:
    def __init__(
        self, target: str, secret: str | None = None, timeout: float = 10.0, ca_list: str | None = None
    ) -> None:
        """``ca_list``: CAs trusted (besides the system's) for an ``https:`` target."""
        self.target = target
        self.ca_list = ca_list
        self.secret = secret
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._http: httpx.AsyncClient | None = None

    @property
    def unix_path(self) -> str | None:
        return self.target[5:] if self.target.startswith("unix:") else None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def call(self, method: str, params: list[str] | None = None, timeout: float | None = None) -> Any:
        """Run one command; its ``result``.  Raises :class:`SerError`."""
        req = {"jsonrpc": "2.0", "method": method, "params": params or [], "id": next(self._ids)}
        body = json.dumps(req).encode()
        t = timeout or self.timeout
        path = self.unix_path
        try:
            if path is not None:
                resp = await asyncio.wait_for(self._unix(path, body), t)
            else:
                if self._http is None:
                    headers = {"Content-Type": "application/json"}
                    if self.secret:
                        headers["Authorization"] = f"Bearer {self.secret}"
                    verify: Any = True
                    if self.target.startswith("https:"):
                        from sipexpress.core.tls import trust_context

                        verify = trust_context(self.ca_list)
                    self._http = httpx.AsyncClient(headers=headers, verify=verify)
                r = await self._http.post(self.target, content=body, timeout=t)
                if r.status_code != 200:
                    raise SerError(r.status_code, f"JSON-RPC HTTP {r.status_code}")
                resp = r.json()
        except (OSError, httpx.HTTPError, TimeoutError, ValueError) as e:
            raise SerDown(f"{self.target}: {e or type(e).__name__}") from None
        if "error" in resp:
            err = resp["error"]
            data = err.get("data") or {}
            code = int(data.get("ser_code") or err.get("code") or 500)
            raise SerError(code, str(err.get("message", "")), str(data.get("text") or ""))
        return resp.get("result")

    @staticmethod
    async def _unix(path: str, body: bytes) -> Any:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 22)
        try:
            writer.write(body + b"\n")
            await writer.drain()
            return json.loads(await reader.readline())
        finally:
            writer.close()

    async def t_uac_dlg(self, lines: list[str], outbound: str | None, timeout: float = 40.0) -> str:
        """Send one ``t_uac_dlg`` request without blocking; its completion
        text as :meth:`t_uac_dlg_sender`'s ``send`` gives it."""
        try:
            res = await self.call("t_uac_dlg", _via_outbound(lines, outbound), timeout)
        except SerDown as e:
            return f"503 {e.text}\n"
        except SerError as e:
            return f"{e.code} {e.reason}\n{e.text}"
        return completion_text(res)

    # -- the synchronous ``send(lines) -> completion text`` of uac.flows ------------
    def t_uac_dlg_sender(self, outbound: str | None, timeout: float = 40.0) -> Any:
        """A blocking callable for :mod:`sipexpress.uac.flows` (run it in a
        thread).  ``outbound`` replaces an empty (``.``) next-hop line."""

        def send(lines: list[str]) -> str:
            path = self.unix_path
            try:
                res = rpc_call(
                    "t_uac_dlg",
                    _via_outbound(lines, outbound),
                    url=None if path else self.target,
                    unix_path=path,
                    timeout=timeout,
                    secret=self.secret,
                )
            except RpcError as e:
                data = e.data if isinstance(e.data, dict) else {}
                return f"{data.get('ser_code', e.code)} {e.message}\n{data.get('text', '')}"
            except ServerNotRunning as e:
                return f"503 {e}\n"
            return completion_text(res)

        return send


def _via_outbound(lines: list[str], outbound: str | None) -> list[str]:
    """``outbound`` in place of an empty (``.``) next-hop line."""
    if outbound and len(lines) > 2 and lines[2] == ".":
        return [lines[0], lines[1], outbound, *lines[3:]]
    return list(lines)


def completion_text(res: Any) -> str:
    """A ``t_uac_dlg`` JSON-RPC result back in the FIFO's completion form."""
    if not isinstance(res, dict):
        return str(res)
    head = f"{res.get('code', 0)} {res.get('reason', '')}"
    if "headers" not in res:
        return head + "\n"
    routes = res.get("route") or []
    route = "Route: " + ", ".join(routes) + "\r" if routes else "."
    hdrs = "".join(f"{n}: {v}\n" for n, v in res.get("headers") or [])
    return f"{head}\n{res.get('ruri') or '.'}\n{res.get('next_hop') or '.'}\n{route}\n{hdrs}\n"
