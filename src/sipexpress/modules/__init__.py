"""Built-in SER modules.

``loadmodule "…/tm.so"`` and ``loadmodule "tm"`` pick a module here by the
file's base name.  Each entry names the Python module that holds the
:class:`~sipexpress.core.registry.Module` subclass; it is imported only
when a config loads it.
"""

from __future__ import annotations

import importlib

from sipexpress.core.registry import Module

# export name -> "python.module:ClassName"
CATALOGUE: dict[str, str] = {
    "sl": "sipexpress.modules.sl:SlModule",
    "tm": "sipexpress.modules.tm:TmModule",
    "usrloc": "sipexpress.modules.usrloc:UsrlocModule",
    "registrar": "sipexpress.modules.registrar:RegistrarModule",
    "auth": "sipexpress.modules.auth:AuthModule",
    "auth_db": "sipexpress.modules.auth_db:AuthDbModule",
    "textops": "sipexpress.modules.textops:TextopsModule",
    "maxfwd": "sipexpress.modules.maxfwd:MaxfwdModule",
    "rr": "sipexpress.modules.rr:RrModule",
    "uri": "sipexpress.modules.uri:UriModule",
    "uri_db": "sipexpress.modules.uri_db:UriDbModule",
    "group": "sipexpress.modules.group:GroupModule",
    "domain": "sipexpress.modules.domain:DomainModule",
    "acc": "sipexpress.modules.acc:AccModule",
    "exec": "sipexpress.modules.exec:ExecModule",
    "print": "sipexpress.modules.print_stdout:PrintModule",
    "msilo": "sipexpress.modules.msilo:MsiloModule",
    "pike": "sipexpress.modules.pike:PikeModule",
    "tls": "sipexpress.modules.tls:TlsModule",
    "rtpengine": "sipexpress.modules.rtpengine:RtpengineModule",
    "nathelper": "sipexpress.modules.nathelper:NathelperModule",
    "path": "sipexpress.modules.path:PathModule",
    # SER's database drivers: accepted so that old configs load; the
    # database layer itself is chosen by the db_url's scheme.
    "mysql": "sipexpress.modules.dbdriver:MysqlModule",
    "postgres": "sipexpress.modules.dbdriver:PostgresModule",
}

# file base names that differ from the export name (sl.so exports sl_module)
FILE_ALIASES: dict[str, str] = {"sl_module": "sl", "maxfwd_module": "maxfwd", "print_stdout": "print"}


class UnknownModule(LookupError):
    pass


def module_name_from_path(path: str) -> str:
    """``/usr/local/lib/ser/modules/tm.so`` -> ``tm``."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    if base.endswith(".so"):
        base = base[:-3]
    return FILE_ALIASES.get(base, base)


def load_module_class(name: str) -> type[Module]:
    """Import and return the module class for an export name.

    Raises :class:`UnknownModule` for a name we do not implement."""
    target = CATALOGUE.get(FILE_ALIASES.get(name, name))
    if target is None:
        raise UnknownModule(name)
    modpath, _, cls = target.partition(":")
    try:
        mod = importlib.import_module(modpath)
    except ModuleNotFoundError as e:
        if e.name == modpath:
            raise UnknownModule(name) from None
        raise
    result: type[Module] = getattr(mod, cls)
    return result
