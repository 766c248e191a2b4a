"""Time of ``import mixedanova`` in a fresh interpreter (issue 11: target < 0.5 s).

Run:  python benchmarks/bench_import.py [--runs 7]

Prints the median and best wall time of ``python -c "import mixedanova"`` over
several runs, the same for ``python -c "pass"``, ``import numpy`` and ``import
pandas`` (the floor the package cannot go under), the cumulative import times
of the heaviest modules from ``python -X importtime`` (one run), and which of
scipy / formulaic / statsmodels the import pulls in.  Wall times on a shared
machine are noisy: compare the figures of one run with each other.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wall(code: str, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=_env())
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def importtime(top: int = 12) -> list[tuple[int, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mixedanova"],
                          capture_output=True, text=True, check=True, env=_env())
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    keep = [r for r in rows
            if r[1].strip().count(".") == 0 or r[1].strip().startswith("mixedanova")]
    return sorted(keep, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    for label, code in [("python -c pass", "pass"), ("import numpy", "import numpy"),
                        ("import pandas", "import pandas"),
                        ("import mixedanova", "import mixedanova")]:
        med, best = wall(code, args.runs)
        print(f"{label:>18}: median {med:.3f} s, best {best:.3f} s over {args.runs} runs")
    print("cumulative -X importtime (us), top-level modules and mixedanova's own:")
    for us, name in importtime():
        print(f"  {us / 1e6:7.3f} s  {name.strip()}")
    probe = ("import sys, mixedanova; print(sorted({m.split('.')[0] + ('.' + m.split('.')[1] "
             "if m.count('.') else '') for m in sys.modules if m.startswith(('scipy', "
             "'formulaic', 'statsmodels'))}))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, env=_env()).stdout.strip()
    print(f"heavy modules loaded by 'import mixedanova': {heavy}")


if __name__ == "__main__":
    main()
