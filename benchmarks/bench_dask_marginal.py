"""A marginal model (mmrm-style unstructured visit covariance) through Dask against
the in-memory fit (issue 19, "Residual structures").

Run:  python benchmarks/bench_dask_marginal.py [--subjects 100000] [--visits 6]
                                               [--partitions 16]

Simulates ``subjects`` subjects with up to ``visits`` visits (each visit missing
with probability 0.15, a subject keeps at least one), ``y ~ x + arm * visit`` with
an unstructured visit covariance, and fits
``ma.lmm("y ~ x + arm * visit", data, residual=ma.Unstructured(group="subj",
time="visit"))`` in memory and on a Dask frame of ``partitions`` partitions aligned
on the subject (local threads, 2), each in a fresh process: wall and CPU seconds,
peak RSS (``ru_maxrss``), and the differences of the REML criterion, mmrm's theta
and the fixed effects.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

FORMULA = "y ~ x + arm * visit"


def make_data(subjects: int, visits: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sd = np.linspace(1.0, 2.0, visits)
    rho = 0.6 ** np.abs(np.subtract.outer(np.arange(visits), np.arange(visits)))
    L = np.linalg.cholesky(rho * np.outer(sd, sd))
    e = rng.standard_normal((subjects, visits)) @ L.T
    keep = rng.uniform(size=(subjects, visits)) > 0.15
    keep[np.arange(subjects), rng.integers(0, visits, subjects)] = True
    s, v = np.nonzero(keep)
    arm = rng.integers(0, 2, subjects)[s]
    x = rng.standard_normal(len(s))
    y = 10 + 0.5 * x + 0.3 * arm * v + 0.2 * v + e[s, v]
    return pd.DataFrame({"y": y, "x": x, "arm": np.where(arm == 1, "B", "A"),
                         "visit": [f"V{k + 1}" for k in v], "subj": s})


def _fit(mode: str, subjects: int, visits: int, partitions: int) -> dict:
    import mixedanova as ma

    df = make_data(subjects, visits)
    residual = ma.Unstructured(group="subj", time="visit")
    data = df
    if mode == "dask":
        import dask
        import dask.dataframe as dd

        cuts = np.searchsorted(df["subj"].to_numpy(),
                               np.linspace(0, subjects, partitions + 1)[1:-1])
        pieces = np.split(np.arange(len(df)), cuts)  # whole subjects per partition
        data = dd.from_delayed([dask.delayed(df.iloc[idx]) for idx in pieces],
                               meta=df.iloc[:0]).persist()
        dask.config.set(scheduler="threads", num_workers=2)
    t0, c0 = time.perf_counter(), time.process_time()
    res = ma.lmm(FORMULA, data, residual=residual)
    out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
           "rows": int(res.nobs), "criterion": float(res.reml_criterion),
           "theta": res.residual_params.tolist(), "beta": res.fe_params.tolist(),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--visits", type=int, default=6)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--child", choices=["memory", "dask"])
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_fit(a.child, a.subjects, a.visits, a.partitions)))
        return
    runs = {}
    for mode in ("memory", "dask"):
        cmd = [sys.executable, __file__, "--child", mode, "--subjects", str(a.subjects),
               "--visits", str(a.visits), "--partitions", str(a.partitions)]
        runs[mode] = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                               check=True).stdout.strip().splitlines()[-1])
        r = runs[mode]
        print(f"{mode:7s} rows {r['rows']}  wall {r['wall']:.2f} s  cpu {r['cpu']:.2f} s  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    m, d = runs["memory"], runs["dask"]
    print(f"criterion rel diff {abs(d['criterion'] - m['criterion']) / abs(m['criterion']):.2e}"
          f"  theta max diff {np.max(np.abs(np.subtract(d['theta'], m['theta']))):.2e}"
          f"  beta max rel diff "
          f"{np.max(np.abs(np.subtract(d['beta'], m['beta'])) / np.abs(m['beta'])):.2e}")


if __name__ == "__main__":
    main()
