"""JSON-RPC 2.0 over HTTP and a Unix socket, served in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply
from sipexpress.mgmt import Manager, MgmtStartError


async def _notfound(params: list[str]) -> MgmtReply:
    raise MgmtError(404, "Username jiri in table location not found")


@pytest.fixture
async def rpc(tmp_path: Path) -> AsyncIterator[Manager]:
    m = Manager(
        {"jsonrpc_http": "127.0.0.1:0", "jsonrpc_socket": str(tmp_path / "rpc.sock")},
        extra_commands=[MgmtCommand("ul_show_contact", _notfound)],
    )
    await m.start()
    yield m
    await m.stop()


def url(m: Manager) -> str:
    assert m.http is not None
    return f"http://127.0.0.1:{m.http.port}/"


def token_headers(m: Manager) -> dict[str, str]:
    return {"Authorization": f"Bearer {m.rpc_token}", "Content-Type": "application/json"}


async def post(m: Manager, body: object, **kw: object) -> httpx.Response:
    kw.setdefault("headers", token_headers(m))
    async with httpx.AsyncClient() as c:
        return await c.post(url(m), content=json.dumps(body), **kw)  # type: ignore[arg-type]


async def test_uptime_structured(rpc: Manager) -> None:
    r = await post(rpc, {"jsonrpc": "2.0", "method": "uptime", "id": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == 7 and set(body["result"]) == {"now", "up_since", "uptime"}


async def test_params_and_case(rpc: Manager) -> None:
    r = await post(rpc, {"jsonrpc": "2.0", "method": "PRINT", "params": ["hi"], "id": "a"})
    assert r.json() == {"jsonrpc": "2.0", "result": "hi", "id": "a"}
    r = await post(rpc, {"jsonrpc": "2.0", "method": "print", "params": [42], "id": 1})
    assert r.json()["result"] == "42"


async def test_which_lists_commands(rpc: Manager) -> None:
    r = await post(rpc, {"jsonrpc": "2.0", "method": "which", "id": 1})
    assert r.json()["result"][-1] == "print" and "ul_show_contact" in r.json()["result"]


async def test_errors_carry_ser_code(rpc: Manager) -> None:
    r = await post(rpc, {"jsonrpc": "2.0", "method": "foobar", "id": 1})
    assert r.json()["error"] == {
        "code": -32601,
        "message": "command 'foobar' not available",
        "data": {"ser_code": 500, "reason": "command 'foobar' not available"},
    }
    r = await post(
        rpc, {"jsonrpc": "2.0", "method": "ul_show_contact", "params": ["location", "jiri"], "id": 2}
    )
    err = r.json()["error"]
    assert err["code"] == 404 and err["message"] == "Username jiri in table location not found"
    assert err["data"]["ser_code"] == 404


async def test_protocol_errors(rpc: Manager) -> None:
    async with httpx.AsyncClient(headers=token_headers(rpc)) as c:
        r = await c.post(url(rpc), content=b"{not json")
        assert r.json()["error"]["code"] == -32700
        r = await c.post(url(rpc), json={"method": "uptime", "id": 1})
        assert r.json()["error"]["code"] == -32600
        r = await c.post(url(rpc), json={"jsonrpc": "2.0", "method": "print", "params": {"a": 1}, "id": 1})
        assert r.json()["error"]["code"] == -32602
        r = await c.post(url(rpc), json=[])
        assert r.json()["error"]["code"] == -32600
        r = await c.get(url(rpc))
        assert r.status_code == 405
    assert rpc.http is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", rpc.http.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 413 ")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", rpc.http.port)
    writer.write(b"GARBAGE\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 400 ")
    writer.close()


async def test_batch_and_notification(rpc: Manager) -> None:
    r = await post(
        rpc,
        [
            {"jsonrpc": "2.0", "method": "print", "params": ["a"], "id": 1},
            {"jsonrpc": "2.0", "method": "print", "params": ["n"]},
            {"jsonrpc": "2.0", "method": "nope", "id": 2},
        ],
    )
    out = r.json()
    assert [x["id"] for x in out] == [1, 2] and out[0]["result"] == "a" and out[1]["error"]["code"] == -32601
    r = await post(rpc, {"jsonrpc": "2.0", "method": "print", "params": ["n"]})
    assert r.status_code == 204 and r.content == b""


async def test_keep_alive_many_requests(rpc: Manager) -> None:
    async with httpx.AsyncClient(headers=token_headers(rpc)) as c:
        for i in range(50):
            r = await c.post(
                url(rpc), json={"jsonrpc": "2.0", "method": "print", "params": [str(i)], "id": i}
            )
            assert r.json()["result"] == str(i)


async def test_unix_socket(rpc: Manager, tmp_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "rpc.sock"))
    writer.write(b'{"jsonrpc":"2.0","method":"print","params":["x"],"id":1}\n')
    writer.write(b'{"jsonrpc":"2.0","method":"foobar","id":2}\n')
    writer.write(b"garbage\n")
    assert json.loads(await reader.readline())["result"] == "x"
    assert json.loads(await reader.readline())["error"]["data"]["ser_code"] == 500
    assert json.loads(await reader.readline())["error"]["code"] == -32700
    writer.close()
    await writer.wait_closed()


async def test_non_local_http_needs_auth() -> None:
    with pytest.raises(MgmtStartError, match="needs jsonrpc_secret"):
        await Manager({"jsonrpc_http": "0.0.0.0:0"}).start()


async def test_shared_secret_and_basic_auth() -> None:
    m = Manager(
        {
            "jsonrpc_http": "127.0.0.1:0",
            "jsonrpc_secret": "s3cret",
            "jsonrpc_user": "admin",
            "jsonrpc_password": "pw",
        }
    )
    await m.start()
    try:
        body = {"jsonrpc": "2.0", "method": "print", "params": ["ok"], "id": 1}
        js = {"Content-Type": "application/json"}
        assert (await post(m, body, headers=js)).status_code == 401
        assert (await post(m, body, headers={**js, "Authorization": "Bearer wrong"})).status_code == 401
        assert (await post(m, body, headers={**js, "Authorization": "Bearer s3cret"})).json()[
            "result"
        ] == "ok"
        assert (await post(m, body, headers={**js, "X-Auth-Token": "s3cret"})).json()["result"] == "ok"
        assert (await post(m, body, headers=js, auth=("admin", "pw"))).json()["result"] == "ok"
        assert (await post(m, body, headers=js, auth=("admin", "nope"))).status_code == 401
    finally:
        await m.stop()


async def test_deeply_nested_json_is_a_parse_error(rpc: Manager) -> None:
    r = await post(rpc, {"jsonrpc": "2.0", "method": "print", "params": ["x"], "id": 1})
    assert r.status_code == 200
    async with httpx.AsyncClient(headers=token_headers(rpc)) as c:
        r = await c.post(url(rpc), content=b"[" * 100000 + b"]" * 100000)
    assert r.json()["error"]["code"] == -32700
