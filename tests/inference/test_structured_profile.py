"""Profile and bootstrap intervals of fits with structured random-effect
covariances or held parameters (issue 21; inference.profile_structured).

A profile interval's endpoint is where the criterion, with that parameter held
and every other free one re-optimized, is ``qchisq(0.95, 1)`` above its
minimum.  Each endpoint is checked by an independent re-fit that holds the
parameter there through ``fixed=`` (glmmTMB's ``map =``; the structured
optimizer of likelihood.structured_fit, not the profiler), and a fixed
effect's by a re-fit with its column moved into the offset (lme4's
``confint(profile(m))`` definition: ``-2 logLik`` of the constrained fit minus
``-2 logLik(m)`` equals ``qchisq(0.95, 1)``).  Fits as
tests/likelihood/test_structured_fit.py (sleepstudy ``cs(Days | Subject)``;
``ar1(0 + visit | subject) + (1 | rater)`` on tests/data/struct/struct_re.csv).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedanova as ma

HERE = Path(__file__).resolve().parent.parent
Q95 = float(stats.chi2.ppf(0.95, 1))
SLEEP = "Reaction ~ Days + cs(Days | Subject)"
AR1 = "y ~ time + arm + ar1(0 + visit | subject) + (1 | rater)"


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / "struct" / "struct_re.csv")


def _data(formula: str, visits: pd.DataFrame) -> pd.DataFrame:
    return ma.load_dataset("sleepstudy") if formula.startswith("Reaction") else visits


CASES = [(SLEEP, "REML", None), (AR1, "REML", {"subject: corr": 0.5}), (AR1, "ML", None),
         (AR1, "REML", {"sigma": 1.2})]


@pytest.mark.parametrize("formula,method,held", CASES,
                         ids=["sleep_cs", "ar1_held_corr", "ar1_ml", "ar1_held_sigma"])
def test_endpoints_are_the_chisq_cutoff_of_an_independent_held_refit(formula, method, held,
                                                                     visits):
    # -2 logLik(glmmTMB(..., map = <parameter held at the endpoint>)) - (-2 logLik(m))
    # = qchisq(0.95, 1) (REML criterion for a REML fit, ML for an ML fit), 1e-5
    data = _data(formula, visits)
    res = ma.lmm(formula, data, method=method, fixed=held)
    ci = res.conf_int(method="profile", parm="random", criterion=method)
    names = list(res.state.structured.parameters.names) + ["sigma"]
    assert list(ci.index) == names
    held = held or {}
    checked = 0
    for name, row in ci.iterrows():
        if name in held:  # held: no interval
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
            assert row["estimate"] == pytest.approx(held[name], rel=1e-12)
            continue
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
        for end in (row["ci_low"], row["ci_high"]):
            refit = ma.lmm(formula, data, method=method, fixed={**held, name: float(end)})
            assert refit.converged
            rise = -2.0 * refit.llf - (-2.0 * res.llf)
            assert rise == pytest.approx(Q95, abs=1e-5), (name, end)
            checked += 1
    assert checked == 2 * (len(names) - len(held))


@pytest.mark.parametrize("formula,column,reduced", [
    (SLEEP, "Days", "Reaction ~ 1 + cs(Days | Subject)"),
    (AR1, "time", "y ~ arm + ar1(0 + visit | subject) + (1 | rater)")])
def test_fixed_effect_endpoints_match_an_offset_refit(formula, column, reduced, visits):
    # ML deviance profiled (lme4's confint(profile(m)) for fixef): -2 logLik of the ML fit
    # with offset = endpoint * x_j and x_j dropped, minus -2 logLik(ML fit) = qchisq(0.95, 1)
    data = _data(formula, visits)
    res = ma.lmm(formula, data, method="REML")
    ml = ma.lmm(formula, data, method="ML")
    ci = res.conf_int(method="profile", parm=[column])
    lo, hi = ci.loc[column, ["ci_low", "ci_high"]]
    assert lo < res.fe_params[column] < hi
    for end in (lo, hi):
        refit = ma.lmm(reduced, data, method="ML", offset=end * data[column].to_numpy(float))
        assert -2.0 * refit.llf - (-2.0 * ml.llf) == pytest.approx(Q95, abs=1e-5)


def test_bootstrap_on_structured_and_held_fits(visits):
    # lme4::bootMer / confint(m, method = "boot") analogue: refits start from the structured
    # parameters (not lme4's theta); rows are fixed='s names; a held parameter gets NaN
    res = ma.lmm(AR1, visits, method="REML", fixed={"subject: corr": 0.5})
    ci = res.conf_int(method="boot", n_boot=8, seed=5)
    assert ci.attrs["failed"] == 0
    assert list(ci.index[:4]) == ["subject: variance", "subject: corr", "rater: (Intercept)",
                                  "sigma"]
    assert ci.loc["subject: corr", ["ci_low", "ci_high"]].isna().all()
    free = ci.drop(index="subject: corr")
    assert np.all(free["ci_low"] < free["ci_high"])
    sleep = ma.lmm(SLEEP, ma.load_dataset("sleepstudy"), method="REML")
    ci = sleep.conf_int(method="boot", n_boot=8, seed=5)
    assert ci.attrs["failed"] == 0
    assert np.all(ci["ci_low"] < ci["ci_high"])
    assert list(ci.index[:3]) == ["Subject: (Intercept)", "Subject: Days", "Subject: corr"]

