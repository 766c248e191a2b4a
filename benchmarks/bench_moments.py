"""Method of moments at scale (issue 11): time, peak memory, closed forms.

Run:  python benchmarks/bench_moments.py [--levels 100] [--reps 5] [--cases balanced,...]

Each case runs in a fresh subprocess, which prints its wall times and its own
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole
process: Python, numpy, pandas and the data included).  Cases:

* ``balanced``: ``y ~ 1 + (1|A) + (1|B) + (1|A:B)``, ``levels x levels`` cells,
  ``reps`` replicates (100 x 100 x 5 = 50,000 rows), ``method="ANOVA"``; the
  moment estimates are compared with the closed forms computed here from the
  cell and margin means (plain numpy, not the package).
* ``unbalanced``: same model and row count, each row in a random cell.
* ``covariate``: ``y ~ 1 + x + (1|A) + (1|B) + (1|A:B)`` with a numeric ``x``,
  ``levels x levels`` cells and 20 rows per cell (200,000 rows at 100 x 100).

Times are on a shared 2-core machine: noisy.  A warm-up fit on a tiny instance
pays the lazy imports first (printed apart).  ``fit_anova`` is the moment
engine alone; ``lmm`` is the whole pipeline (formula, design, moments, then GLS
fixed effects and BLUPs at the moment estimates through the likelihood engine).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMULA = "y ~ 1 + (1|A) + (1|B) + (1|A:B)"


def make_data(case: str, levels: int, reps: int, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a_eff = rng.normal(0, 2.0, levels)
    b_eff = rng.normal(0, 1.5, levels)
    ab_eff = rng.normal(0, 1.0, (levels, levels))
    if case == "balanced":
        a = np.repeat(np.arange(levels), levels * reps)
        b = np.tile(np.repeat(np.arange(levels), reps), levels)
    elif case == "unbalanced":
        n = levels * levels * reps
        a = rng.integers(0, levels, n)
        b = rng.integers(0, levels, n)
    else:
        a = np.repeat(np.arange(levels), levels * 20)
        b = np.tile(np.repeat(np.arange(levels), 20), levels)
    n = a.size
    y = 10 + a_eff[a] + b_eff[b] + ab_eff[a, b] + rng.normal(0, 3.0, n)
    df = pd.DataFrame({"A": [f"a{i:03d}" for i in a], "B": [f"b{i:03d}" for i in b]})
    if case == "covariate":
        df["x"] = rng.normal(0, 1, n)
        y = y + 0.5 * df["x"].to_numpy()
    df["y"] = y
    return df


def closed_forms(df: pd.DataFrame) -> dict[str, float]:
    """Balanced two-way random model: moment estimates from cell and margin means."""
    y = df["y"].to_numpy()
    a = df["A"].to_numpy()
    b = df["B"].to_numpy()
    au, ai = np.unique(a, return_inverse=True)
    bu, bi = np.unique(b, return_inverse=True)
    na, nb = au.size, bu.size
    n = y.size // (na * nb)
    cell = np.zeros((na, nb))
    np.add.at(cell, (ai, bi), y)
    cell /= n
    ma_, mb_, grand = cell.mean(axis=1), cell.mean(axis=0), cell.mean()
    ms_a = nb * n * np.sum((ma_ - grand) ** 2) / (na - 1)
    ms_b = na * n * np.sum((mb_ - grand) ** 2) / (nb - 1)
    inter = cell - ma_[:, None] - mb_[None, :] + grand
    ms_ab = n * np.sum(inter**2) / ((na - 1) * (nb - 1))
    ms_e = np.sum((y - cell[ai, bi]) ** 2) / (y.size - na * nb)
    return {"A": (ms_a - ms_ab) / (nb * n), "B": (ms_b - ms_ab) / (na * n),
            "A:B": (ms_ab - ms_e) / n, "Residual": ms_e}


def run_case(case: str, levels: int, reps: int) -> dict:
    t0 = time.perf_counter()
    import mixedanova as ma
    from mixedanova.moments.moments import fit_anova
    t_import = time.perf_counter() - t0
    # warm-up on a small instance: the lazy imports (scipy.stats, formulaic, the
    # likelihood engine) are paid here, not in the timings below
    small = make_data(case, 6, 2)
    fixed = [("x",)] if case == "covariate" else []
    formula = FORMULA.replace("1 +", "1 + x +") if case == "covariate" else FORMULA
    t0 = time.perf_counter()
    fit_anova(small, "y", fixed, [("A",), ("B",), ("A", "B")])
    ma.lmm(formula, small, method="ANOVA")
    t_warm = time.perf_counter() - t0
    df = make_data(case, levels, reps)
    out = {"case": case, "rows": len(df), "cells": int(df.groupby(["A", "B"]).ngroups),
           "import_s": t_import, "warmup_s": t_warm}
    t = time.perf_counter()
    st = fit_anova(df, "y", fixed, [("A",), ("B",), ("A", "B")])
    out["fit_anova_s"] = time.perf_counter() - t
    out["method"] = st.method
    out["estimates"] = {k: float(v) for k, v in st.estimates.items()}
    t = time.perf_counter()
    res = ma.lmm(formula, df, method="ANOVA")
    out["lmm_s"] = time.perf_counter() - t
    out["lmm_estimates"] = {k: float(v) for k, v in res.anova_state.estimates.items()} \
        if hasattr(res, "anova_state") else None
    if case == "balanced":
        cf = closed_forms(df)
        out["max_rel_diff_closed_form"] = max(abs(st.estimates[k] - v) / abs(v)
                                              for k, v in cf.items())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cases", default="balanced,unbalanced,covariate")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.levels, args.reps)))
        return
    limits = {"balanced": 10.0, "unbalanced": 20.0, "covariate": 10.0}
    for case in args.cases.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", case, "--levels",
                               str(args.levels), "--reps", str(args.reps)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{case:>10}: {r['rows']:,} rows, {r['cells']:,} cells, {r['method']}")
        print(f"            (import {r['import_s']:.2f} s, warm-up with the lazy imports "
              f"{r['warmup_s']:.2f} s)")
        print(f"            fit_anova {r['fit_anova_s']:.2f} s, whole lmm(method='ANOVA') "
              f"{r['lmm_s']:.2f} s (target <= {limits[case]:.0f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (target <= 1024 MB)")
        est = ", ".join(f"{k}={v:.6g}" for k, v in r["estimates"].items())
        print(f"            estimates: {est}")
        if r["lmm_estimates"]:
            gap = max(abs(r["lmm_estimates"][k] - v) for k, v in r["estimates"].items())
            print(f"            lmm(method='ANOVA') and fit_anova estimates differ by {gap:.1e}")
        if "max_rel_diff_closed_form" in r:
            print(f"            max relative difference from the closed forms: "
                  f"{r['max_rel_diff_closed_form']:.2e} (target <= 1e-8)")


if __name__ == "__main__":
    main()
