"""Fit times with a residual structure: crossed subject x item + AR(1) within subject.

Run:  python benchmarks/bench_residual.py [--rows 10000 100000] [--repeats 1]

Simulates ``y = 1 + 0.5 cond + b_subject + b_item + e`` with AR(1) errors over the
trials of each subject (phi = 0.5, SDs 1.0 / 0.7 / 1.0; 20 items; subjects =
rows / 20), fits ``y ~ cond + (1|subject) + (1|item)`` with
``residual=ma.AR1(group="subject", order="trial")`` (and, for comparison, the
nested ``y ~ cond + (1|subject)`` with the same errors) and prints the wall time,
the outer (residual-parameter) and inner (theta) evaluation counts and the
estimates.  Timings are in-process and depend on the machine's load.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import pandas as pd

import mixedanova as ma


def simulate(n_rows: int, n_items: int = 20, phi: float = 0.5, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ns = n_rows // n_items
    sub = np.repeat(np.arange(ns), n_items)
    trial = np.tile(np.arange(1, n_items + 1), ns)
    item = np.argsort(rng.random((ns, n_items)), axis=1).ravel()
    z = rng.normal(size=(ns, n_items))
    e = np.empty_like(z)
    e[:, 0] = z[:, 0]
    for t in range(1, n_items):
        e[:, t] = phi * e[:, t - 1] + math.sqrt(1 - phi * phi) * z[:, t]
    cond = rng.integers(0, 2, ns * n_items).astype(float)
    y = (1.0 + 0.5 * cond + rng.normal(size=ns)[sub] + 0.7 * rng.normal(size=n_items)[item]
         + e.ravel())
    return pd.DataFrame({"y": y, "cond": cond, "subject": sub, "item": item, "trial": trial})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    for n in args.rows:
        df = simulate(n)
        for formula in ("y ~ cond + (1|subject) + (1|item)", "y ~ cond + (1|subject)"):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res = ma.lmm(formula, df, residual=ma.AR1(group="subject", order="trial"))
                times.append(time.perf_counter() - t0)
            info = res.state.residual.info
            k = len(res.design.blocks)
            sd = dict(zip(res.varcomp["group"][:k], np.round(res.varcomp["sdcor"][:k], 4)))
            print(f"{n:>7} rows, {formula}: {statistics.median(times):7.2f} s  (outer evals "
                  f"{info['outer_evals']}, theta evals {res.optimizer.feval})  phi "
                  f"{res.residual_params['phi']:.4f}  sd {sd}  sigma {res.sigma:.4f}  "
                  f"beta {np.round(res.fe_params.to_numpy(), 4)}")


if __name__ == "__main__":
    main()
