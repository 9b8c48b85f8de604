"""Which build runs: the hot modules compiled with mypyc, or pure Python.

``setup.py`` compiles :data:`COMPILED` (when mypyc and a C compiler are
there and ``SIPEXPRESS_PURE`` is not set) and writes :data:`STAMP` beside
them: the CRC of each source it compiled.  :func:`select` runs first thing
on ``import sipexpress`` and decides once for the whole process:

- no compiled modules: pure Python;
- ``SIPEXPRESS_PURE`` set (not ``0``/empty): pure Python although compiled
  modules are there (the A/B switch, and how the suite runs on both);
- a compiled module missing, or a source changed since the build (an edit,
  a merge): pure Python with a warning -- a stale extension module would
  otherwise shadow the edited source, and the compiled modules call one
  another natively, so it is all of them or none;
- else the compiled modules.

"Pure Python" while extension modules are present means a finder ahead of
the standard one that gives ``sipexpress.*`` their ``.py`` source.  This
module imports nothing of sipexpress (setup.py reads :data:`COMPILED`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: the modules setup.py compiles (paths under src/sipexpress), in groups
#: that compile in parallel (a group is one C library; calls inside it are
#: native): the receive, route, reply and forward path of the everyday
#: ser.cfg (bench/README.md, "compiled build", has what each group saves).
#: Package ``__init__`` modules stay pure, and so does usrloc/records.py:
#: the Redis store reads ``Ucontact``'s field annotations as text and fills
#: it from JSON (lists for tuples), which a compiled dataclass refuses.
GROUPS: dict[str, tuple[str, ...]] = {
    "core": (
        "sip/cache.py",
        "sip/errors.py",
        "sip/forwarding.py",
        "sip/headers.py",
        "sip/message.py",
        "sip/uri.py",
        "core/context.py",
        "core/driver.py",
        "core/forward.py",
        "core/myself.py",
        "core/server.py",
        "script/runtime.py",
        "modules/maxfwd.py",
        "modules/rr.py",
        "modules/sl.py",
    ),
    "tm": (
        "sip/transaction.py",
        "modules/registrar.py",
        "modules/usrloc/udomain.py",
        "modules/tm/cell.py",
        "modules/tm/forking.py",
        "modules/tm/module.py",
        "modules/tm/proxy.py",
        "modules/tm/replies.py",
        "modules/tm/stats.py",
        "modules/tm/table.py",
        "modules/tm/timers.py",
    ),
}
COMPILED: tuple[str, ...] = tuple(rel for group in GROUPS.values() for rel in group)
#: written by setup.py beside the compiled modules: {path: CRC-32 of the source}
STAMP = "_compiled.json"
PURE_ENV = "SIPEXPRESS_PURE"
PACKAGE = Path(__file__).resolve().parent


def source_crc(path: Path) -> int:
    return zlib.crc32(path.read_bytes())


def _extension(rel: str) -> Path | None:
    """The compiled module of ``rel`` (a path under the package), if built."""
    stem = PACKAGE / rel[:-3]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = stem.with_name(stem.name + suffix)
        if p.exists():
            return p
    return None


def stale_reason() -> str | None:
    """Why the compiled modules cannot be used as built (None: they can)."""
    try:
        stamp: dict[str, int] = json.loads((PACKAGE / STAMP).read_text())
    except (OSError, ValueError):
        return f"no {STAMP} beside them"
    for rel in COMPILED:
        if _extension(rel) is None:
            return f"{rel} was not compiled"
        try:
            if stamp.get(rel) != source_crc(PACKAGE / rel):
                return f"{rel} changed since the build"
        except OSError:
            return f"{rel} is missing"
    return None


class SourceOnlyFinder(importlib.abc.MetaPathFinder):
    """Finds ``sipexpress.*`` as source (or bytecode) only, never as an
    extension module."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("sipexpress.") or path is None:
            return None
        for entry in path:
            finder = importlib.machinery.FileFinder(
                entry,
                (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
                (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
            )
            spec = finder.find_spec(fullname)
            if spec is not None:
                return spec
        return None


#: what :func:`select` chose: "compiled", or "pure" (and why, in REASON)
KIND = "pure"
REASON = ""


def select() -> str:
    """Decide which build this process uses (see the module docstring)."""
    global KIND, REASON
    if not any(_extension(rel) for rel in COMPILED):
        KIND, REASON = "pure", "no compiled modules"
        return KIND
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        REASON = f"{PURE_ENV} is set"
    else:
        reason = stale_reason()
        if reason is None:
            KIND, REASON = "compiled", ""
            return KIND
        REASON = f"compiled modules out of date ({reason})"
        warnings.warn(
            f"sipexpress: {REASON}: running pure Python; rebuild with "
            "`pip install -e .` or `python setup.py build_ext --inplace`",
            RuntimeWarning,
            stacklevel=2,
        )
    if not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder())
    KIND = "pure"
    return KIND
