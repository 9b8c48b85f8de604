"""A stand-alone management server (built-in commands only), for tests,
benchmarks and trying clients without a SIP server::

    python -m sipexpress.mgmt fifo=/tmp/ser_fifo jsonrpc_http=127.0.0.1:0

Arguments are global options ``name=value``.  Prints ``ready http=<port>``
once listening; SIGTERM/SIGINT stop it (the FIFO is removed).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from sipexpress.mgmt import Manager, MgmtStartError


async def serve(options: dict[str, str]) -> int:
    mgr = Manager(options)
    try:
        await mgr.start()
    except MgmtStartError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = mgr.http.port if mgr.http is not None else 0
    print(f"ready http={port}", flush=True)
    await stop.wait()
    await mgr.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options: dict[str, str] = {}
    for a in sys.argv[1:] if argv is None else argv:
        name, sep, value = a.partition("=")
        if not sep:
            print(f"usage: python -m sipexpress.mgmt name=value ... (got {a!r})", file=sys.stderr)
            return 2
        options[name] = value
    try:
        import uvloop

        return uvloop.run(serve(options))
    except ImportError:
        return asyncio.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())
