"""Nothing under src/sipexpress/sip/ may do I/O (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import sipexpress.sip

FORBIDDEN = {"asyncio", "socket", "selectors"}
SIP_DIR = Path(sipexpress.sip.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value.split(".")[0])
    return found


def test_sip_package_is_sans_io() -> None:
    files = sorted(SIP_DIR.rglob("*.py"))
    assert any(f.name == "message.py" for f in files)
    bad = {str(f.relative_to(SIP_DIR)): sorted(_imports(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_detector_works(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import asyncio.events\nfrom socket import AF_INET\nimport os\n")
    assert _imports(p) & FORBIDDEN == {"asyncio", "socket"}
