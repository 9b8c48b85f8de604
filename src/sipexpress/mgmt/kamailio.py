"""Kamailio's RPC method names for SER's management commands.

A Kamailio user's tools (``kamcmd core.uptime``, ``kamctl rpc ul.dump``)
call the same commands under their Kamailio names over JSON-RPC, the FIFO
and ``serctl``: each name is an alias in the one
:class:`~sipexpress.mgmt.registry.CommandRegistry`, registered only when the
command it stands for is (``ul.*`` needs usrloc loaded).  ``stats.*`` is the
statistics commands' own name space.  ``system.listMethods`` and
``system.methodHelp`` are the XML-RPC introspection methods Kamailio's
``ctl`` module answers.
"""

from __future__ import annotations

from sipexpress.core.registry import MgmtCommand, MgmtError, MgmtReply
from sipexpress.mgmt.registry import CommandRegistry

#: Kamailio RPC name -> SER command
KAMAILIO_NAMES: dict[str, str] = {
    "core.echo": "print",
    "core.uptime": "uptime",
    "core.version": "version",
    "core.pwd": "pwd",
    "core.arg": "arg",
    "core.ps": "ps",
    "core.kill": "kill",
    "ul.dump": "ul_dump",
    "ul.lookup": "ul_show_contact",
    "ul.rm": "ul_rm",
    "ul.rm_contact": "ul_rm_contact",
    "ul.add": "ul_add",
    "ul.flush": "ul_flush",
    "ul.stats": "ul_stats",
    "tm.stats": "t_stats",
    "tm.hash_stats": "t_hash",
    "sl.stats": "sl_stats",
    "domain.reload": "domain_reload",
    "domain.dump": "domain_dump",
}


def add_kamailio_names(registry: CommandRegistry) -> None:
    """Register the aliases whose commands exist, and ``system.*``."""
    for alias, target in KAMAILIO_NAMES.items():
        registry.alias(alias, target)

    async def list_methods(params: list[str]) -> MgmtReply:
        names = sorted([*registry.names(), *registry.aliases()], key=str.lower)
        return MgmtReply(data=names, text="".join(n + "\n" for n in names))

    async def method_help(params: list[str]) -> MgmtReply:
        name = params[0].strip() if params else ""
        cmd = registry.get(name) if name else None
        if cmd is None:
            raise MgmtError(400, f"command '{name}' not available" if name else "method name expected")
        doc = cmd.doc or cmd.name
        if cmd.params_doc:
            doc += "\nparameters: " + cmd.params_doc.replace("\n", ", ")
        if name.lower() != cmd.name.lower():
            doc += f"\n(SER's {cmd.name})"
        return MgmtReply(data=doc, text=doc + "\n")

    registry.register(MgmtCommand("system.listMethods", list_methods, "every method and alias"), listed=False)
    registry.register(
        MgmtCommand("system.methodHelp", method_help, "a method's documentation", "method"), listed=False
    )
