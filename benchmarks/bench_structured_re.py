"""Structured random-effect covariances: fit times beside glmmTMB (issue 21).

Run:  python benchmarks/bench_structured_re.py [--repeats 3] [--no-r]

Times ``ma.lmm(formula, data)`` (REML) for the crossed models of
tests/reference/struct_re.json (``ar1``/``toep``/``cs``/``diag(0 + visit | subject)
+ (1 | rater)``, 304 rows), median of ``--repeats`` runs, wall and CPU
(``time.process_time``) seconds, and, when ``Rscript`` is on the PATH, the median
elapsed time of ``glmmTMB(formula, data, REML = TRUE)`` for the same models.
The machine is shared: wall times vary with the load, CPU times less.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, not an installed one

import mixedanova as ma  # noqa: E402

CSV = ROOT / "tests" / "data" / "struct" / "struct_re.csv"
KINDS = ("ar1", "toep", "cs", "diag")


def formula(kind: str) -> str:
    return f"y ~ time + arm + {kind}(0 + visit | subject) + (1 | rater)"


def ours(repeats: int) -> dict[str, tuple[float, float]]:
    data = pd.read_csv(CSV)
    out = {}
    for kind in KINDS:
        wall, cpu = [], []
        for _ in range(repeats):
            w, c = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ma.lmm(formula(kind), data)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        out[kind] = (statistics.median(wall), statistics.median(cpu))
    return out


def glmmtmb(repeats: int) -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    code = f"""
suppressMessages(library(glmmTMB))
d <- read.csv("{CSV}", stringsAsFactors = TRUE); d$subject <- factor(d$subject)
for (k in c({", ".join(f'"{k}"' for k in KINDS)})) {{
  f <- as.formula(paste0("y ~ time + arm + ", k, "(0 + visit | subject) + (1 | rater)"))
  t <- replicate({repeats}, system.time(suppressWarnings(glmmTMB(f, d, REML = TRUE)))[["elapsed"]])
  cat(k, median(t), "\\n")
}}"""
    try:
        run = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True,
                             timeout=600, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"glmmTMB timing failed: {exc}")
        return {}
    return {k: float(v) for k, v in (line.split() for line in run.stdout.splitlines() if line)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-r", action="store_true", help="skip the glmmTMB timings")
    args = ap.parse_args()
    mine = ours(args.repeats)
    peer = {} if args.no_r else glmmtmb(args.repeats)
    print(f"{'model':<48} {'wall s':>8} {'cpu s':>8} {'glmmTMB s':>10}")
    for kind in KINDS:
        w, c = mine[kind]
        r = peer.get(kind)
        print(f"{formula(kind)[len('y ~ time + arm + '):]:<48} {w:8.3f} {c:8.3f} "
              f"{'' if r is None else f'{r:10.3f}'}")


if __name__ == "__main__":
    main()
