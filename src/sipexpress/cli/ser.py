"""``ser`` — the SIP Express Router daemon.

SER's command line (``main.c``)::

    ser [-f file] [-c] [-D] [-E] [-d]... [-l address]... [-p port] [-n N]
        [-P pidfile] [-V] [-h]

``-f`` takes a ser.cfg (compiled by :mod:`sipexpress.script.compiler`) or a
Python routing script (``*.py``, :mod:`sipexpress.script.pyroute`); without
``-f`` the packaged default configuration is used.  Without ``-D`` (and
unless ``fork=no``) the server daemonizes with a double fork.  SIGTERM and
SIGINT stop it cleanly (modules' ``stop()``, listeners closed, exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from sipexpress import __version__
from sipexpress.core.context import RequestContext, RouteTable
from sipexpress.core.logging import setup_logging
from sipexpress.core.options import OptionError, parse_socket_spec
from sipexpress.core.registry import ConfigError
from sipexpress.core.runner import Runner
from sipexpress.core.server import SERVER_NAME, Core

log = logging.getLogger("sipexpress.ser")
NOTICE = 25  # SER's L_NOTICE: shown at the default debug level

USAGE = """\
Usage: ser [-f file] [-c] [-D] [-E] [-d]... [-l address]... [-p port] [-n N] [-P pidfile] [-V] [-h|--help]
Options:
    -f file      Configuration file: ser.cfg syntax, or a Python routing
                 script (*.py) (default: the packaged etc/ser.cfg)
    -c           Check configuration file for errors and exit
    -D           Do not fork into daemon mode (stay in the foreground)
    -E           Log to stderr
    -d           Debugging mode (multiple -d increase the level)
    -l address   Listen on the specified address ([proto:]addr[:port]);
                 may be repeated; replaces listen= of the config
    -p port      Listen on the specified port (default 5060)
    -n processes Number of worker processes (default: children=, else one
                 per core)
    -P file      Create a pid file
    -V           Version number
    -h, --help   This help message

Stop it with Ctrl-C (SIGINT) or SIGTERM (kill PID); with mgmt_allow_kill=yes
also with the management command kill (serctl kill, FIFO, JSON-RPC).
"""


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # no SystemExit(2) with argparse's text
        raise _ArgError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ser", add_help=False)
    p.add_argument("-f", dest="cfg")
    p.add_argument("-c", dest="check", action="store_true")
    p.add_argument("-D", dest="foreground", action="count", default=0)
    p.add_argument("-E", dest="stderr", action="store_true")
    p.add_argument("-d", dest="debug", action="count", default=0)
    p.add_argument("-l", dest="listen", action="append", default=[])
    p.add_argument("-p", dest="port", type=int)
    p.add_argument("-n", dest="children", type=int)
    p.add_argument("-P", dest="pidfile")
    p.add_argument("-V", "--version", dest="version", action="store_true")
    p.add_argument("-h", "--help", dest="help", action="store_true")
    return p


# -- configuration ---------------------------------------------------------------
def default_config_path() -> Path | None:
    """The packaged default configuration (``sipexpress/etc/ser.cfg``)."""
    try:
        ref = resources.files("sipexpress").joinpath("etc/ser.cfg")
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    path = Path(str(ref))
    return path if path.is_file() else None


def _fallback_default(core: Core) -> None:
    """Used while no packaged ser.cfg exists: a stateless version of SER's
    default script (483 at Max-Forwards 0, 200 to OPTIONS for us, forward
    foreign requests, 404 otherwise) with the FIFO at /tmp/ser_fifo."""
    core.update_options({"fifo": "/tmp/ser_fifo"})
    core.load_module("sl")

    async def request_route(ctx: RequestContext) -> int:
        msg = ctx.msg
        if msg.max_forwards == 0:
            return ctx.core.send_reply(ctx, 483, "Too Many Hops")
        u = ctx.parsed_ruri
        if not ctx.core.is_myself(u.host, u.port):
            return await ctx.core.forward(ctx)
        if msg.method == "OPTIONS":
            return ctx.core.send_reply(ctx, 200, "OK")
        if msg.method != "ACK":
            return ctx.core.send_reply(ctx, 404, "Not Found")
        return 0

    core.set_routes(RouteTable({"0": request_route}, {}, {}, {}))


def load_config(core: Core, path: str | None) -> str:
    """Configure ``core`` from a file; returns a description of what was
    loaded.  Raises ConfigError (or OptionError) with a readable message."""
    if path is None:
        default = default_config_path()
        if default is None:
            _fallback_default(core)
            return "built-in default configuration"
        path = str(default)
    if path.endswith(".py"):
        from sipexpress.script.pyroute import load_script

        load_script(path, core)
        return path
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    from sipexpress.script.compiler import load_config as compile_config_file
    from sipexpress.script.reload import reload_command

    core.mgmt_commands.append(reload_command(core, os.path.abspath(path)))
    core.set_routes(compile_config_file(path, core).routes)
    return path


# -- process -------------------------------------------------------------------------
def daemonize() -> None:
    """Double fork, new session, stdio to /dev/null (SER's ``daemonize``)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with contextlib.suppress(OSError):
        os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def startup_summary(server: Runner) -> list[str]:
    """What listens where and how to stop, logged once the server runs."""
    core = server.core
    sip = [f"udp:{lst.address}" for lst in core.udp_listeners]
    sip += [f"{lst.proto.name.lower()}:{lst.address}" for lst in core.stream_listeners()]
    lines = [f"SIP       {'  '.join(sip)}"]
    mgmt = server.mgmt
    fifo = getattr(mgmt, "fifo", None)
    lines.append(f"FIFO      {fifo.path if fifo is not None else 'off (option fifo)'}")
    http, unix = getattr(mgmt, "http", None), getattr(mgmt, "unix", None)
    rpc = []
    if http is not None:
        rpc.append(f"{'https' if http.ssl else 'http'}://{http.host}:{http.port}/")
    if unix is not None:
        rpc.append(f"unix:{unix.path}")
    lines.append(f"JSON-RPC  {'  '.join(rpc) or 'off (option jsonrpc_http, jsonrpc_socket)'}")
    if core.options.get("web_listen"):
        from sipexpress.web.config import WebConfig

        web = WebConfig.from_options(core.options)
        lines.append(f"web       {'https' if web.certificate else 'http'}://{web.host}:{web.port}/")
    else:
        lines.append("web       off (option web_listen)")
    pid = core.worker.main_pid if core.worker is not None else os.getpid()
    stop = f"stop      Ctrl-C (SIGINT) or kill {pid} (SIGTERM)"
    if core.options.get("mgmt_allow_kill"):
        stop += "; management command kill (serctl kill)"
    lines.append(stop)
    return lines


#: seconds between two warnings about a default administrator password
DEFAULT_PASSWORD_REMINDER = 3600.0


async def warn_default_passwords(core: Core) -> None:
    """Warn while an administrator still has SER's default password."""
    from sipexpress.db.audit import SER_DEFAULT_PASSWORD, admins_with_default_password
    from sipexpress.db.engine import DbError, default_db_url

    url = str(core.options.get("web_db_url") or default_db_url(core.options))
    extra = str(core.options.get("web_admins") or "").replace(",", " ").split()
    while True:
        try:
            found = await admins_with_default_password(url, extra)
        except DbError as e:
            log.info("cannot check the administrators' passwords: %s", e)
            return
        if not found:
            return
        log.warning(
            "administrator %s still has SER's default password '%s': change it (serctl passwd USER PASSWORD)",
            ", ".join(found),
            SER_DEFAULT_PASSWORD,
        )
        await asyncio.sleep(DEFAULT_PASSWORD_REMINDER)


def run(core: Core) -> int:
    server = Runner(core)
    worker = core.worker

    def ready() -> None:
        if worker is not None:
            worker.notify_ready()
            if not worker.serves_mgmt:
                return
        for line in startup_summary(server):
            log.log(NOTICE, "%s", line)
        core.spawn(warn_default_passwords(core))

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        try:
            return runner.run(server.serve(ready))
        except KeyboardInterrupt:
            log.log(NOTICE, "stopping: interrupted")
            return 0
        finally:
            log.log(NOTICE, "stopped")


def run_workers(core: Core, children: int) -> int:
    """``children`` worker processes under a supervising main process
    (:mod:`sipexpress.core.workers`)."""
    from sipexpress.core.workers import WorkerInfo, bind_worker_sockets, supervise

    try:
        sockets = bind_worker_sockets(
            core.myself.listen_specs(), children, int(core.options.get("maxbuffer") or 0)
        )
    except OSError as e:
        log.error("ERROR: %s", e.strerror or e)
        return 1
    log.log(NOTICE, "starting %d worker processes (children)", children)

    def run_worker(info: WorkerInfo) -> int:
        core.worker = info
        return run(core)

    rc = supervise(children, sockets, run_worker)
    log.log(NOTICE, "main process: all workers stopped")
    return rc


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _ArgError as e:
        print(f"ser: {e}\n{USAGE}", file=sys.stderr)
        return 1
    if args.help:
        print(USAGE, end="")
        return 0
    if args.version:
        print(f"version: {SERVER_NAME}")
        print(f"sipexpress {__version__}, Python {sys.version.split()[0]}")
        return 0
    setup_logging(2 + args.debug, True)
    core = Core()
    overrides: dict[str, Any] = {}
    try:
        if args.listen:
            overrides["listen"] = [parse_socket_spec(x) for x in args.listen]
        if args.port is not None:
            if not 0 < args.port < 65536:
                raise OptionError(f"bad port {args.port}")
            overrides["port"] = args.port
        if args.children is not None:
            overrides["children"] = args.children
        core.cli_overrides = overrides
        core.update_options({})
        what = load_config(core, args.cfg)
        core.update_options({})  # re-apply command-line overrides
    except (ConfigError, OptionError) as e:
        # "FILE:LINE:COL: what is wrong" and the offending line come first
        print(e, file=sys.stderr)
        print("ERROR: bad config file", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"ERROR: bad config file ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    if args.check:
        print("config file ok, exiting...", file=sys.stderr)
        return 0
    opts = core.options
    debug = int(opts.get("debug", 2)) + args.debug
    setup_logging(
        debug,
        bool(args.stderr or opts.get("log_stderror")),
        str(opts.get("log_facility")),
        json_lines=str(opts.get("log_format")).lower() == "json",
    )
    if not args.foreground and opts.get("fork", True):
        daemonize()
    pidfile = args.pidfile
    if pidfile:
        try:
            Path(pidfile).write_text(f"{os.getpid()}\n")
        except OSError as e:
            log.error("cannot write pid file %s: %s", pidfile, e)
            return 1
    log.info("configuration: %s", what)
    children = int(opts.get("children") or 1)
    try:
        rc = run(core) if children < 2 else run_workers(core, children)
    except (ConfigError, OSError) as e:
        log.error("ERROR: %s", e)
        rc = 1
    finally:
        if pidfile:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
    return rc


if __name__ == "__main__":
    sys.exit(main())
