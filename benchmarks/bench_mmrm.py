"""MMRM speed: unstructured visit covariance with Kenward-Roger (issue 21).

Run:  python benchmarks/bench_mmrm.py [--repeats 3] [--subjects 10000] [--visits 10]

Times, in one process, the whole user call ``ma.lmm(...)`` followed by
``res.fixed(ddf="kenward-roger")`` (fit, Kenward-Roger adjusted vcov and df) for

* fev (mmrm's ``fev_data``: 197 subjects x 4 visits, 10 covariance parameters);
* bcva (mmrm's ``bcva_data``: 1,000 subjects x 10 visits, 55 parameters);
* a simulated trial (``--subjects`` x ``--visits``, about 10% of visits
  missing at random, unstructured covariance).

When ``Rscript`` with the mmrm package is installed, mmrm is timed in the same
run (median of ``--repeats`` calls of ``mmrm(..., method = "Kenward-Roger")``
on the same CSV, after one warm-up call); otherwise (or with ``--no-r``) the
times recorded with the references are used (``fit_seconds`` of
tests/reference/struct_fev_us.json and struct_bcva_us.json).  Issue 21 targets: fev <= 0.5 x mmrm, bcva <= 0.1 x
mmrm, the 10,000 x 10 simulation <= 10 s.  The machine is shared: times vary.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, not an installed one

import mixedanova as ma  # noqa: E402
DATA = ROOT / "tests" / "data" / "struct"
REF = ROOT / "tests" / "reference"


def simulate(n_subjects: int, n_visits: int, seed: int = 21) -> pd.DataFrame:
    """An MMRM-shaped trial: arm x visit means, a baseline covariate, an
    unstructured covariance (AR-like correlation, SD growing over visits)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_visits)
    sd = 4.0 + 0.3 * t
    corr = 0.6 ** np.abs(t[:, None] - t[None, :]) * 0.8 + 0.2 * np.eye(n_visits)
    L = np.linalg.cholesky(sd[:, None] * corr * sd[None, :])
    arm = rng.integers(0, 2, n_subjects)
    base = rng.normal(50, 10, n_subjects)
    e = rng.normal(size=(n_subjects, n_visits)) @ L.T
    y = 0.3 * base[:, None] + 1.5 * arm[:, None] * t[None, :] / n_visits + 0.5 * t + e
    keep = rng.random((n_subjects, n_visits)) > 0.1
    s, v = np.nonzero(keep)
    return pd.DataFrame({"USUBJID": s.astype(str), "AVISIT": [f"V{i + 1:02d}" for i in v],
                         "ARMCD": np.where(arm[s] == 1, "ARM_B", "ARM_A"),
                         "BASE": base[s], "Y": y[s, v]})


def run(formula: str, data: pd.DataFrame, repeats: int
        ) -> tuple[float, list[float], object, float]:
    """Median wall time, all wall times, the last fit and the median CPU time
    (``time.process_time``: all threads of this process; on a loaded machine it
    is the steadier figure)."""
    times, cpu = [], []
    res = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ma.lmm(formula, data, residual=ma.Unstructured(group="USUBJID", time="AVISIT"))
            res.fixed(ddf="kenward-roger")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, res, statistics.median(cpu)


_MMRM_R = r"""
suppressMessages(library(mmrm))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
d$AVISIT <- factor(d$AVISIT, levels = unique(d$AVISIT[order(d$AVISIT)]))
d$USUBJID <- factor(d$USUBJID)
f <- as.formula(paste(args[2], "+ us(AVISIT | USUBJID)"))
fit <- function() mmrm(f, data = d, method = "Kenward-Roger")
invisible(fit())
times <- replicate(as.integer(args[3]), system.time(fit())[["elapsed"]])
cat(median(times), "\n")
"""


def mmrm_seconds(csv: Path, formula: str, repeats: int) -> float | None:
    """mmrm's median time on ``csv`` (Rscript), or None without R or mmrm."""
    if shutil.which("Rscript") is None:
        return None
    try:
        out = subprocess.run(["Rscript", "-e", _MMRM_R, str(csv), formula, str(repeats)],
                             capture_output=True, text=True, timeout=900)
        return float(out.stdout.split()[-1]) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--visits", type=int, default=10)
    ap.add_argument("--no-r", action="store_true", help="use the recorded mmrm times")
    args = ap.parse_args()
    out = {}
    for case, csv, formula in (
            ("fev", "fev.csv", "FEV1 ~ RACE + SEX + ARMCD * AVISIT"),
            ("bcva", "bcva.csv", "BCVA_CHG ~ BCVA_BL + RACE + ARMCD * AVISIT")):
        ref = json.loads((REF / f"struct_{case}_us.json").read_text())
        med, times, res, cpu = run(formula, pd.read_csv(DATA / csv), args.repeats)
        same_run = None if args.no_r else mmrm_seconds(DATA / csv, formula, args.repeats)
        mmrm = ref["fit_seconds"] if same_run is None else same_run
        out[case] = {"seconds": med, "cpu_seconds": cpu, "all": times, "mmrm_seconds": mmrm,
                     "mmrm_source": "recorded" if same_run is None else "same run",
                     "ratio": med / mmrm, "cpu_ratio": cpu / mmrm,
                     "loglik_diff_vs_tight": res.llf - ref["tight_refit"]["loglik"]}
        print(f"{case}: {med:.3f} s wall, {cpu:.3f} s CPU (runs "
              f"{', '.join(f'{t:.3f}' for t in times)}); mmrm {mmrm:.3f} s "
              f"({out[case]['mmrm_source']}); ratio "
              f"{med / mmrm:.3f} (CPU {cpu / mmrm:.3f}); logLik - tight "
              f"{out[case]['loglik_diff_vs_tight']:.2e}")
    sim = simulate(args.subjects, args.visits)
    med, times, res, cpu = run("Y ~ BASE + ARMCD * AVISIT", sim, 1)
    out["simulated"] = {"subjects": args.subjects, "visits": args.visits, "rows": len(sim),
                        "seconds": med, "cpu_seconds": cpu}
    print(f"simulated {args.subjects} x {args.visits} ({len(sim)} rows, "
          f"{res.state.residual.u.size} covariance parameters): {med:.3f} s wall, "
          f"{cpu:.3f} s CPU")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
