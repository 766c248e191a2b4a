"""Fit times of mixedanova, side by side with statsmodels MixedLM where installed.

Run:  python benchmarks/bench_fit.py [--repeats N] [--skip-insteval] [--no-r]

Prints, per model, the median wall time of ``ma.lmm(...)`` (formula parsing,
design, optimization, convergence check, results; warm process), the median
time of the optimizer alone, the number of objective evaluations (values and
gradients), the REML criterion, and
statsmodels' time for the same model.  Timings are in-process, after one warm-up
call.  Where ``Rscript`` with lme4 is on the PATH, ``lmer`` is timed on the same
data in the same run (``system.time``, median of the repeats, one warm-up fit;
InstEval-shaped: 3 fits) and the ratio printed (issue 11's target for InstEval:
mixedanova <= 0.04 x lme4); otherwise lme4's times recorded in
tests/reference/*.json (``fit_seconds``) are printed where present.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mixedanova as ma  # noqa: E402
from synthetic import insteval_like  # noqa: E402

REF = Path(__file__).resolve().parents[1] / "tests" / "reference"


def _median_time(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _statsmodels_time(kind: str, df, repeats: int) -> str:
    try:
        import statsmodels.formula.api as smf
    except ImportError:
        return "not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "sleepstudy":
            def fit():
                return smf.mixedlm("Reaction ~ Days", df, groups="Subject",
                                   re_formula="~Days").fit(reml=True)
        elif kind == "penicillin":
            d = df.assign(one=1)

            def fit():
                return smf.mixedlm("diameter ~ 1", d, groups="one", re_formula="0",
                                   vc_formula={"plate": "0 + C(plate)",
                                               "sample": "0 + C(sample)"}).fit(reml=True)
        else:
            return ("not run: MixedLM fits crossed factors through one dense "
                    "73,421 x 4,114 design of a single group")
        t, res = _median_time(fit, repeats)
    return f"{t * 1000:9.1f} ms (REML criterion {-2 * res.llf:.4f})"


def _lme4_same_run(formula: str, df, factors: list[str], repeats: int) -> float | None:
    """Median seconds of ``lmer(formula, REML = TRUE)`` on ``df`` via Rscript, or None."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/data.csv"
        df.to_csv(path, index=False)
        conv = "; ".join(f"d${f} <- factor(d${f})" for f in factors)
        script = (f"suppressMessages(library(lme4)); d <- read.csv('{path}'); {conv}; "
                  f"m <- lmer({formula}, d); "
                  f"t <- replicate({repeats}, system.time(lmer({formula}, d))[['elapsed']]); "
                  "cat(median(t), REMLcrit(m), '\\n')")
        try:
            out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                                 timeout=1800)
        except (OSError, subprocess.SubprocessError):
            return None
    if out.returncode:
        return None
    return float(out.stdout.split()[0])


def _lme4_seconds(case: str) -> str:
    path = REF / f"{case}.json"
    if not path.exists():
        return "n/a"
    return f"{json.loads(path.read_text())['fit_seconds'] * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-insteval", action="store_true")
    parser.add_argument("--no-r", action="store_true", help="do not time lme4 via Rscript")
    args = parser.parse_args()
    cases = [
        ("sleepstudy", "Reaction ~ Days + (Days|Subject)", ma.load_dataset("sleepstudy"),
         "sleepstudy_reml", args.repeats),
        ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", ma.load_dataset("penicillin"),
         "penicillin_crossed_reml", args.repeats),
    ]
    factors = {"sleepstudy": ["Subject"], "penicillin": ["plate", "sample"],
               "insteval": ["s", "d", "dept"]}
    if not args.skip_insteval:
        t = time.perf_counter()
        inst = insteval_like()
        print(f"InstEval-shaped data generated in {time.perf_counter() - t:.2f} s "
              f"({len(inst)} rows)")
        cases.append(("insteval", "y ~ 1 + service + (1|s) + (1|d) + (1|dept)", inst, "",
                      max(1, min(3, args.repeats))))
    print(f"{'model':12s} {'lmm() total':>12s} {'optimizer':>10s} {'evals':>6s} "
          f"{'REML crit':>14s}  {'lme4':>16s}  statsmodels MixedLM")
    for name, formula, df, case, repeats in cases:
        model = ma.LinearMixedModel.from_formula(formula, df)
        opt_seconds = []

        def fit():
            out = ma.lmm(formula, df)
            opt_seconds.append(out.optimizer.seconds)
            return out

        t_total, res = _median_time(fit, repeats)
        opt = res.optimizer
        t_opt = statistics.median(opt_seconds[1:])  # without the warm-up call
        lme4 = None if args.no_r else _lme4_same_run(formula, df, factors[name], repeats)
        lme4_text = (f"{lme4 * 1000:.0f} ms (x{t_total / lme4:.3f})" if lme4
                     else f"{_lme4_seconds(case)} (ref.)")
        print(f"{name:12s} {t_total * 1000:9.1f} ms {t_opt * 1000:7.1f} ms "
              f"{opt.feval:6d} {res.reml_criterion:14.4f}  {lme4_text:>16s}  "
              f"{_statsmodels_time(name, df, repeats)}")
        if name == "insteval":
            t = time.perf_counter()
            ma.LinearMixedModel.from_formula(formula, df)
            t_design = time.perf_counter() - t
            t = time.perf_counter()
            model.deviance_function(True)
            t_setup = time.perf_counter() - t
            print(f"{'':12s} of which design {t_design:.2f} s, cross-products and pair "
                  f"structure {t_setup:.2f} s, optimizer {t_opt:.2f} s "
                  f"({opt.feval} evaluations)")
    np.set_printoptions()


if __name__ == "__main__":
    main()
