"""Power curve of a crossed subjects x items design with random slopes (issue 20, simr #223).

Design: every subject sees every one of 20 items once; the condition is
counterbalanced (``cond = +-0.5`` alternating over subjects and items), so it
varies within subjects and within items.  Model (random intercepts and slopes
for both factors)::

    y ~ cond + (1 + cond | subj) + (1 + cond | item)

with ``cond = 0.25``, subject covariance ``[[0.3, 0.035], [0.035, 0.1]]``,
item covariance ``[[0.2, 0], [0, 0.05]]`` and ``sigma = 1``.  The design starts
with 10 subjects and is extended along ``subj`` (simr's ``extend``) to the
breaks 10, 20, ..., 100; 1,000 simulations per break, each fitted by REML with
the Satterthwaite t test of ``cond`` (lmerTest's ``summary``) at alpha 0.05.
That is 10,000 mixed-model fits of 200 to 2,000 rows.

Prints the wall time and the CPU time (this process and its worker processes:
on a shared machine the wall time depends on the load, the CPU time much
less), and the curve (power, Clopper-Pearson 95% interval, failed or
non-converged fits per break).  With ``--r-peer`` it also times lme4 +
lmerTest on a few data sets per size (``benchmarks/bench_power_simr.R``) and
extrapolates to the 10,000 fits simr's ``powerCurve`` would make, one at a time.

    python benchmarks/bench_power_simr.py [--nsim 1000] [--jobs 2] [--r-peer]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mixedanova as ma  # noqa: E402

FORMULA = "~ cond + (1 + cond | subj) + (1 + cond | item)"
BREAKS = list(range(10, 101, 10))


def base_design(nsubj: int = 10, nitem: int = 20) -> pd.DataFrame:
    """Every subject x every item, ``cond`` counterbalanced (+-0.5)."""
    s, i = np.meshgrid(np.arange(nsubj), np.arange(nitem), indexing="ij")
    s, i = s.ravel(), i.ravel()
    return pd.DataFrame({"subj": pd.Categorical([f"s{k:03d}" for k in s]),
                         "item": pd.Categorical([f"i{k:02d}" for k in i]),
                         "cond": np.where((s + i) % 2 == 0, -0.5, 0.5)})


def model() -> "ma.SimulationModel":
    return ma.simulation_model(FORMULA, base_design(), fixed={"Intercept": 0.0, "cond": 0.25},
                               varcomp={"subj": [[0.3, 0.035], [0.035, 0.1]],
                                        "item": [[0.2, 0.0], [0.0, 0.05]]}, sigma=1.0)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def r_peer(per_size: int = 5) -> None:
    script = Path(__file__).with_suffix(".R")
    if shutil.which("Rscript") is None:
        print("R peer: Rscript not found")
        return
    out = subprocess.run(["Rscript", str(script), str(per_size)], capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr.strip()[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsim", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--r-peer", action="store_true")
    args = ap.parse_args()
    m = model()
    # warm-up (imports, first-call costs), not timed
    ma.power(m, "cond", nsim=3, seed=0, along="subj", breaks=[10])
    t0, c0 = time.perf_counter(), cpu_seconds()
    curve = ma.power(m, "cond", nsim=args.nsim, seed=args.seed, along="subj", breaks=BREAKS,
                     n_jobs=args.jobs)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    fits = args.nsim * len(BREAKS)
    print(f"{FORMULA}: 20 items, subjects {BREAKS[0]}..{BREAKS[-1]} ({len(BREAKS)} breaks) x "
          f"{args.nsim} simulations = {fits} REML fits, Satterthwaite t test of cond")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s (this process and its {args.jobs} workers); "
          f"{fits / wall:.0f} fits/s wall")
    with pd.option_context("display.width", 120):
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.r_peer:
        r_peer()


if __name__ == "__main__":
    main()
