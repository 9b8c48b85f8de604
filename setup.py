"""The build: pure Python, plus the hot modules compiled with mypyc.

pyproject.toml holds the metadata; this file only adds the extension
modules.  sipexpress/_build.py lists them and, at run time, decides which
build is used.  No compiled build is made when ``SIPEXPRESS_PURE`` is set,
when mypyc cannot be imported, or when compiling fails (no C compiler):
the extensions are optional, so ``pip install`` still gives a working,
pure-Python sipexpress.  ``python setup.py build_ext --inplace -j 2``
rebuilds them in the work tree (only changed modules are recompiled).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PKG = HERE / "src" / "sipexpress"
BUILD = runpy.run_path(str(PKG / "_build.py"))


class BuildExt(build_ext):
    """Optional extensions, built in parallel, then the stamp that tells
    sipexpress/_build.py which sources they were compiled from."""

    def finalize_options(self) -> None:
        # mypyc type-checks and writes the C sources here, only when
        # extensions are built (not for pip's metadata and requirements)
        if not self.distribution.ext_modules:
            self.distribution.ext_modules = extensions()
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        built = [Path(self.get_ext_fullpath(e.name)) for e in self.extensions]
        if not all(p.exists() for p in built):
            print("sipexpress: compiling failed; the pure-Python build will be used", file=sys.stderr)
            return
        stamp = {rel: BUILD["source_crc"](PKG / rel) for rel in BUILD["COMPILED"]}
        # the package's folder in the build (or, --inplace, the source tree)
        target = Path(self.get_ext_fullpath("sipexpress._stamp")).parent
        target.mkdir(parents=True, exist_ok=True)
        (target / BUILD["STAMP"]).write_text(json.dumps(stamp, indent=0, sort_keys=True) + "\n")

    def get_outputs(self) -> list[str]:
        outputs: list[str] = super().get_outputs()
        if self.extensions:
            outputs.append(str(Path(self.get_ext_fullpath("sipexpress._stamp")).parent / BUILD["STAMP"]))
        return outputs


def extensions() -> list[Any]:
    if os.environ.get(BUILD["PURE_ENV"], "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("sipexpress: mypyc not found; pure-Python build", file=sys.stderr)
        return []
    os.chdir(HERE)  # mypyc writes its C sources to ./build
    exts: list[Any] = mypycify(
        [
            # the build needs only the compiled modules' own types; the
            # project's strict settings are for `mypy src`, and the build
            # environment may lack third-party packages' stubs
            "--config-file=",
            "--python-version=3.11",
            "--ignore-missing-imports",
            "--follow-imports=silent",
            *(f"src/sipexpress/{rel}" for rel in BUILD["COMPILED"]),
        ],
        # gcc -O1: 30 % less compile time than -O3 for 1 % more instructions per
        # message (bench/README.md, "compiled build")
        opt_level="1",
        debug_level="0",
        separate=[
            ([f"src/sipexpress/{rel}" for rel in group], f"sipexpress_{name}")
            for name, group in BUILD["GROUPS"].items()
        ],
    )
    for ext in exts:
        ext.optional = True  # no C compiler: build_ext warns and goes on
    return exts


class MaybeBinary(Distribution):
    """Has extension modules (made by ``BuildExt``) unless ``SIPEXPRESS_PURE``."""

    def has_ext_modules(self) -> bool:
        return os.environ.get(BUILD["PURE_ENV"], "") in ("", "0")


setup(distclass=MaybeBinary, cmdclass={"build_ext": BuildExt})
