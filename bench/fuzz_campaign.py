"""A long fuzzing campaign over the readers of untrusted input.

    python bench/fuzz_campaign.py [--hours H] [--target sip|cfg|fifo|jsonrpc ...]
                                  [--engine mutate|atheris] [--seed N]

Drives the targets of ``tests/fuzz/targets.py`` (the parser, the script
compiler, the FIFO reader, the JSON-RPC reader) for as long as asked, the
targets taking turns.  ``mutate`` (default, no dependencies) mutates the
seeds and the corpus: byte flips, inserts of protocol-special pieces,
deletions, duplicated and dropped lines, splices of two inputs;
``atheris`` (``pip install atheris``) adds coverage guidance, one target
per run.  Every input that breaks a target is written to
``tests/fuzz/corpus/<target>/crash-<sha1>.<ext>`` (the suite replays that
directory, so a finding stays a test once fixed) and the campaign goes on.
Prints executions per second and the findings at the end; exit status 1
when there were any.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.fuzz.targets import TARGETS  # noqa: E402

CORPUS = ROOT / "tests" / "fuzz" / "corpus"
EXT = {"sip": "sip", "cfg": "cfg", "fifo": "txt", "jsonrpc": "json"}
SPECIAL = [b":", b",", b";", b'"', b"<", b">", b"\\", b"\r\n", b"\n", b"\r\n ", b" ", b"\t", b"\x00", b"\xff",
           b"%", b"=", b"@", b"[", b"]", b"{", b"}", b"(", b")", b".", b"/", b"SIP/2.0", b"NaN", b"Infinity",
           b"9" * 20, b"-1", b"\r\n\r\n", b"route", b"if", b"==", b"=~", b'"jsonrpc": "2.0"', b":print:r\n"]  # fmt: skip


def seeds(target: str) -> list[bytes]:
    """Starting inputs: the examples the suite fuzzes from, and the corpus."""
    out = [
        p.read_bytes() for p in sorted((CORPUS / target).glob("*")) if p.is_file() and p.name != "README.md"
    ]
    if target == "sip":
        out += [p.read_bytes() for p in sorted((ROOT / "tests" / "data" / "rfc4475").glob("*.dat"))]
    elif target == "cfg":
        out += [p.read_bytes() for p in sorted((ROOT / "examples" / "cfg").rglob("*.cfg"))]
        out.append((ROOT / "etc" / "ser.cfg").read_bytes())
    elif target == "fifo":
        out += [b":uptime:r\n\n", b":t_uac_dlg:r\nMESSAGE\nsip:a@b\n.\nFrom: <sip:c@d>\n.\nhi\n.\n\n"]
    else:
        out += [
            b'{"jsonrpc": "2.0", "method": "uptime", "id": 1}',
            b'[{"jsonrpc": "2.0", "method": "which"}]',
        ]
    return out


def mutate(data: bytes, pool: list[bytes], rnd: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        n = len(buf)
        pos = rnd.randint(0, n)
        op = rnd.randrange(7)
        if op == 0 and n:
            buf[min(pos, n - 1)] = rnd.randrange(256)
        elif op == 1:
            buf[pos:pos] = rnd.choice(SPECIAL)
        elif op == 2:
            del buf[pos : pos + rnd.randint(1, 64)]
        elif op == 3:
            buf[pos:pos] = rnd.randbytes(rnd.randint(1, 16))
        elif op in (4, 5):
            lines = bytes(buf).split(b"\n")
            i = rnd.randrange(len(lines))
            if op == 4:
                lines.insert(i, lines[i] * rnd.randint(1, 3))
            elif len(lines) > 1:
                del lines[i]
            buf = bytearray(b"\n".join(lines))
        else:
            other = rnd.choice(pool)
            cut = rnd.randint(0, len(other))
            buf = buf[:pos] + other[cut:]
    return bytes(buf[: 1 << 17])


def record(target: str, data: bytes) -> Path:
    path = CORPUS / target / f"crash-{hashlib.sha1(data).hexdigest()[:16]}.{EXT[target]}"
    path.write_bytes(data)
    return path


def run_mutate(targets: list[str], seconds: float, rnd: random.Random) -> int:
    pools = {t: seeds(t) for t in targets}
    runs = dict.fromkeys(targets, 0)
    found: list[Path] = []
    end = time.monotonic() + seconds
    last_report = time.monotonic()
    while time.monotonic() < end:
        for t in targets:
            fn: Callable[[bytes], None] = TARGETS[t]
            pool = pools[t]
            for _ in range(50):
                data = mutate(rnd.choice(pool), pool, rnd)
                runs[t] += 1
                try:
                    fn(data)
                except Exception:
                    path = record(t, data)
                    found.append(path)
                    print(f"FOUND {t}: {path}\n{traceback.format_exc(limit=4)}", flush=True)
                else:
                    if len(pool) < 2000 and rnd.random() < 0.01:
                        pool.append(data)  # keep a few survivors as new starting points
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            print("  ".join(f"{t}: {n}" for t, n in runs.items()), flush=True)
    total = sum(runs.values())
    print(f"{total} executions in {seconds:g} s ({total / seconds:.0f}/s): {runs}; {len(found)} findings")
    return 1 if found else 0


def run_atheris(target: str, seconds: float) -> int:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]  # optional

    fn = TARGETS[target]

    def one(data: bytes) -> None:
        try:
            fn(data)
        except Exception:
            record(target, data)
            raise

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", str(CORPUS / target)], one)
    atheris.Fuzz()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--target", action="append", choices=sorted(TARGETS))
    ap.add_argument("--engine", choices=["mutate", "atheris"], default="mutate")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    logging.disable(logging.CRITICAL)  # the readers log every refusal; millions of lines say nothing
    targets = a.target or sorted(TARGETS)
    seconds = a.hours * 3600
    if a.engine == "atheris":
        if len(targets) != 1:
            ap.error("--engine atheris fuzzes one --target per run")
        return run_atheris(targets[0], seconds)
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    print(f"fuzzing {', '.join(targets)} for {seconds:g} s, seed {seed}", flush=True)
    return run_mutate(targets, seconds, random.Random(seed))


if __name__ == "__main__":
    sys.exit(main())
