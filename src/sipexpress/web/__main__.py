"""``serweb`` — run the web interface on its own, next to a running ser.

    serweb [-f ser.cfg] [--listen host:port] [--jsonrpc URL|unix:/path]
           [--db-url URL] [--domain D] [--admins u@d,...] [--smtp host:port]
           [--mail-from addr] [--base-url URL] [--outbound sip:host:port]
           [--secret-file path] [--metrics-token T]

Options default to the ``web_*`` options (and ``jsonrpc_http``/
``jsonrpc_socket``, ``db_url``) of the ser.cfg given with ``-f``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from sipexpress.web.config import WebConfig


def _cfg_options(path: str) -> dict[str, Any]:
    from sipexpress.script.compiler import check_config

    with open(path) as f:
        return dict(check_config(f.read(), path).options)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="serweb", description="sipexpress web interface (serweb)")
    p.add_argument("-f", dest="cfg", help="read web_* options from this ser.cfg")
    flags = {
        "listen": "web_listen",
        "jsonrpc": "web_jsonrpc",
        "db_url": "web_db_url",
        "domain": "web_domain",
        "admins": "web_admins",
        "smtp": "web_smtp",
        "mail_from": "web_mail_from",
        "base_url": "web_base_url",
        "outbound": "web_outbound",
        "secret_file": "web_secret_file",
        "jsonrpc_secret": "web_jsonrpc_secret",
        "sample_interval": "web_sample_interval",
        "metrics_token": "web_metrics_token",
    }
    for flag in flags:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    options: dict[str, Any] = {}
    if a.cfg:
        try:
            options = _cfg_options(a.cfg)
        except Exception as e:
            print(f"serweb: {a.cfg}: {e}", file=sys.stderr)
            return 2
    for flag, opt in flags.items():
        v = getattr(a, flag)
        if v is not None:
            options[opt] = v
    cfg = WebConfig.from_options(options)
    from sipexpress.web import serve

    logging.getLogger("sipexpress.web").info(
        "serweb on http://%s:%d/ (ser at %s, database %s)", cfg.host, cfg.port, cfg.jsonrpc, cfg.db_url
    )
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print(f"serweb: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
