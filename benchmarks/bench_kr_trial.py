"""Kenward-Roger type III table on a 40,000-row trial (issue 17's speed check).

Run:  python benchmarks/bench_kr_trial.py [--repeats N]

A simulated trial: 5,000 patients in 50 sites, 8 visits each (40,000 rows), two
arms; ``y ~ arm * visit + (visit | patient) + (1 | site)`` fitted by REML, then
``res.anova(type=3, ddf="kenward-roger")`` timed on a fresh results object each
repeat (pbkrtest's ``KRmodcomp`` per term; 10,050 random effects).  Prints the fit
time and the median time of the table (target: under 2 s).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mixedanova as ma  # noqa: E402


def trial(seed: int = 17) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patients, visits, sites = 5000, 8, 50
    pid = np.repeat(np.arange(patients), visits)
    visit = np.tile(np.arange(visits, dtype=float), patients)
    site_of = rng.integers(0, sites, patients)
    arm_of = rng.integers(0, 2, patients)
    b0 = rng.normal(0, 2.0, patients)
    b1 = 0.3 * b0 / 2.0 + rng.normal(0, 0.4, patients)
    s = rng.normal(0, 1.0, sites)
    y = (10 + 0.5 * visit + 0.3 * arm_of[pid] * visit + b0[pid] + b1[pid] * visit
         + s[site_of[pid]] + rng.normal(0, 1.5, len(pid)))
    return pd.DataFrame({"y": y, "visit": visit, "arm": np.where(arm_of[pid], "B", "A"),
                         "patient": pid, "site": site_of[pid]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    df = trial()
    t = time.perf_counter()
    res = ma.lmm("y ~ arm * visit + (visit | patient) + (1 | site)", df)
    fit = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        fresh = ma.lmm("y ~ arm * visit + (visit | patient) + (1 | site)", df,
                       start=res.state.theta)
        t = time.perf_counter()
        table = fresh.anova(type=3, ddf="kenward-roger")
        times.append(time.perf_counter() - t)
    print(f"trial: {len(df)} rows, 5000 patients x 8 visits, 50 sites; REML fit {fit:.2f} s "
          f"(converged={res.converged})")
    print(f"Kenward-Roger type III table: median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{x:.2f}' for x in times)})")
    print(table.to_string())


if __name__ == "__main__":
    main()
