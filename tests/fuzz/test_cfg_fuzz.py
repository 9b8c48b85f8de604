"""Malformed scripts (mutations of the example configs) never crash the
parser or the compiler: each one loads, or fails with a located CfgError."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipexpress.script.compiler import check_config
from sipexpress.script.errors import CfgError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p.read_text() for p in sorted((ROOT / "examples" / "cfg").rglob("*.cfg"))]
SOURCES.append((ROOT / "etc" / "ser.cfg").read_text())
TOKENS = [
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ";",
    ",",
    ":",
    "=",
    "==",
    "!=",
    "=~",
    "!",
    "&&",
    "||",
    "|",
    "/*",
    "*/",
    "#",
    '"',
    "'",
    "\\",
    "\n",
    " ",
    "route",
    "if",
    "else",
    "drop",
    "break",
    "myself",
    "uri",
    "src_ip",
    "msg:len",
    "1.2.3.4",
    "0x",
    "09",
    "-",
    ".",
    "max_len",
    "route(9)",
    "t_relay()",
    "loadmodule",
    "modparam",
    "\x00",
    "é",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "dup"]))
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 40)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.text(max_size=5)) + text[j:]
        else:
            text = text[:i] + text[i:j] + text[i:]
    return text


def check(text: str) -> None:
    try:
        check_config(text, "fuzz.cfg")
    except CfgError as e:
        assert e.filename == "fuzz.cfg"
        assert e.message
        rendered = str(e)
        assert rendered.startswith("fuzz.cfg")
        if e.line:
            assert rendered.startswith(f"fuzz.cfg:{e.line}:{e.col}: ")
            assert e.source_line is not None and "^" in rendered


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_examples_never_crash(text: str) -> None:
    check(text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_token_soup_never_crashes(soup: str) -> None:
    check(f"route {{ {soup} }}")
    check(soup)


def test_ser_c_prints_located_error(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.cfg"
    cfg.write_text("route {\n  if (uri==myself {\n    drop;\n  };\n}\n")
    p = subprocess.run(
        [sys.executable, "-m", "sipexpress.cli.ser", "-c", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert f"{cfg}:2:19: syntax error" in out, out
    assert "if (uri==myself {" in out and "^" in out
    assert "Traceback" not in out


def _mutate(text: str, rnd: random.Random) -> str:
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randrange(len(text) + 1)
        j = min(len(text), i + rnd.randint(0, 30))
        op = rnd.choice(["delete", "insert", "dup"])
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + rnd.choice(TOKENS) + text[i:]
        else:
            text = text[:i] + text[i:j] + text[i:]
    return text


def test_ser_c_on_mutated_configs_never_shows_a_traceback(tmp_path: Path) -> None:
    rnd = random.Random(4711)
    paths = []
    for n in range(8):
        p = tmp_path / f"m{n}.cfg"
        p.write_text(_mutate(rnd.choice(SOURCES), rnd))
        paths.append(p)

    def check_cli(p: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sipexpress.cli.ser", "-c", "-f", str(p)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(check_cli, paths))
    failed = 0
    for p, r in zip(paths, results, strict=True):
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out
        assert r.returncode in (0, 1), out
        if r.returncode:
            failed += 1
            assert re.search(rf"{re.escape(str(p))}:\d+:\d+: ", out), out  # located
    assert failed  # the mutations did break something
