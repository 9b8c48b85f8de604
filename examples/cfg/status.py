"""Print the status table of the example configs (``ser -c`` on each).

python examples/cfg/status.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sipexpress.modules import module_name_from_path
from sipexpress.script.parser import parse_config

HERE = Path(__file__).resolve().parent


def main() -> None:
    print("| file | modules | `ser -c` |")
    print("|---|---|---|")
    for path in sorted(HERE.rglob("*.cfg")):
        mods = ", ".join(module_name_from_path(lm.path.value) for lm in parse_config(path.read_text()).loads)
        p = subprocess.run(
            [sys.executable, "-m", "sipexpress.cli.ser", "-c", "-f", str(path)],
            capture_output=True,
            text=True,
        )
        if p.returncode == 0:
            status = "loads"
        else:
            m = re.search(r"(unknown (module|function) '[^']+')", p.stderr + p.stdout)
            status = m.group(1) if m else (p.stderr.strip().splitlines() or ["error"])[0]
        print(f"| `{path.relative_to(HERE)}` | {mods or '—'} | {status} |")


if __name__ == "__main__":
    main()
