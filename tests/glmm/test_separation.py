"""Separation in GLMMs: infinite fixed-effect estimates detected and named.

The check is the linear program of R's ``safeBinaryRegression`` /
``detectseparation::detect_separation`` (Konis 2007) on the fixed-effects
design; the expected answers come from data built to be (or not to be)
separated, so that the infinite coefficients are known by construction.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.glmm.separation import separating_direction, suspected

STRESS = Path(__file__).resolve().parents[1] / "data" / "stress_glmm" / "data"


def _data(seed=4, n=200):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 10, n)
    x = rng.normal(size=n)
    d = pd.DataFrame({"x": x, "g": [f"g{k}" for k in g]})
    d["z"] = np.where(rng.random(n) < 0.2, "b", "a")
    d["y"] = rng.binomial(1, 0.4, n)
    d["c"] = rng.poisson(3.0, n)
    return d


def test_lp_direction_complete_quasi_and_none():
    # detectseparation::detect_separation(y ~ x): complete when x splits y, quasi-complete
    # when a tie straddles the split, none when the classes overlap
    x = np.array([-2.0, -1.0, 1.0, 2.0])
    X = np.column_stack([np.ones(4), x])
    y = np.array([0, 0, 1, 1], bool)
    b, complete = separating_direction(X, y, ~y, np.zeros(4, bool))
    assert b is not None and complete and b[1] > 0
    # a 1 and a 0 at x = 0 (on the boundary): quasi-complete, only x infinite
    Xt = np.column_stack([np.ones(6), np.r_[x, 0.0, 0.0]])
    yt = np.array([0, 0, 1, 1, 1, 0], bool)
    b, complete = separating_direction(Xt, yt, ~yt, np.zeros(6, bool))
    assert b is not None and not complete and b[1] > 0 and b[0] == 0
    yo = np.array([0, 1, 0, 1], bool)
    assert separating_direction(X, yo, ~yo, np.zeros(4, bool))[0] is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_full_rank_equality_rows_need_no_linear_program(seed, monkeypatch):
    # detect_separation(c ~ x + z, poisson): rows with counts > 0 fix x'b = 0; when they
    # have full column rank only b = 0 is left, and the shortcut gives the linear
    # program's own answer (None); an all-0 level leaves a direction (z[T.b], -inf)
    rng = np.random.default_rng(seed)
    n = 60
    z = rng.random(n) < 0.3
    X = np.column_stack([np.ones(n), rng.normal(size=n), z])
    c = rng.poisson(2.0, n)
    from mixedanova.glmm import separation
    for counts, expect in ((c, None), (np.where(z, 0, c + 1), "direction")):
        lower, equal = counts <= 0, counts > 0
        fast = separating_direction(X, np.zeros(n, bool), lower, equal)
        with monkeypatch.context() as m:
            m.setattr(separation, "_FULL_RANK", np.inf)  # always the linear program
            lp = separating_direction(X, np.zeros(n, bool), lower, equal)
        assert (fast[0] is None) == (lp[0] is None) == (expect is None)
        if expect is not None:
            np.testing.assert_array_equal(fast[0], lp[0])
            assert fast[0][2] < 0 and fast[0][0] == 0 and fast[0][1] == 0


def test_complete_separation_is_named():
    # glm(y ~ x, binomial) on y = (x > 0): "fitted probabilities numerically 0 or 1";
    # here the fit stops with an error that names x
    d = _data()
    d["y"] = (d["x"] > 0).astype(int)
    with pytest.raises(ma.FitError, match=r"complete separation.*'x' \(\+inf\)"):
        ma.glmm("y ~ x + (1|g)", d)


def _fit_quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        return ma.glmm(*args, **kw)


def test_quasi_complete_separation_names_the_level():
    # detect_separation: a factor level whose responses are all 1 has coefficient +Inf;
    # the other estimates are those of the limit, i.e. glmer(y ~ x + (1|g)) on the rows
    # of the other level (the separated rows drop out of the likelihood)
    d = _data()
    d.loc[d["z"] == "b", "y"] = 1
    with pytest.warns(ma.SeparationWarning, match=r"quasi-complete.*'z\[T\.b\]' \(\+inf\)"):
        res = _fit_quiet("y ~ x + z + (1|g)", d)
    assert not res.converged
    assert res.separation.coefficients == {"z[T.b]": "+inf"}
    assert any("separation" in m for m in res.convergence_messages)
    assert np.isnan(res.bse_fe["z[T.b]"]) and res.fe_params["z[T.b]"] > 30
    sub = _fit_quiet("y ~ x + (1|g)", d[d["z"] == "a"])
    assert res.minus_2_loglik == pytest.approx(sub.minus_2_loglik, abs=1e-8)
    np.testing.assert_allclose(res.fe_params[["Intercept", "x"]], sub.fe_params, rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(res.bse_fe[["Intercept", "x"]], sub.bse_fe, rtol=1e-4)


def test_poisson_level_of_zero_counts_is_named():
    # glm(c ~ x + z, poisson) with every count 0 at z = b: coefficient -Inf; the rest is
    # the fit on the other rows
    d = _data()
    d.loc[d["z"] == "b", "c"] = 0
    with pytest.warns(ma.SeparationWarning, match=r"'z\[T\.b\]' \(-inf\)"):
        res = _fit_quiet("c ~ x + z + (1|g)", d, family="poisson")
    assert not res.converged
    sub = _fit_quiet("c ~ x + (1|g)", d[d["z"] == "a"], family="poisson")
    assert res.minus_2_loglik == pytest.approx(sub.minus_2_loglik, abs=1e-6)
    np.testing.assert_allclose(res.fe_params[["Intercept", "x"]], sub.fe_params, rtol=1e-5)


@pytest.mark.parametrize("set_id,formula", [("d_separation_60026", "y ~ x + z + (1 | g)"),
                                            ("d_separation_60029", "y ~ x + (1 | g)")])
def test_near_separation_is_not_flagged(set_id, formula):
    # the stress corpus' xsep / zsep sets: one row on the wrong side, so the
    # glmer estimates are finite (reference objective reached by lme4)
    d = pd.read_csv(STRESS / f"{set_id}.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ma.SeparationWarning)
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        res = ma.glmm(formula, d)
    assert res.separation is not None and not res.separation.separated
    assert res.converged


def test_all_zero_or_all_one_groups_are_noted_not_failed():
    # stress set d_separation_60025: group SD ~ 8, many groups all 0 or all 1; glmer
    # fits it (the random effects' penalty keeps the modes finite): a note, converged
    d = pd.read_csv(STRESS / "d_separation_60025.csv")
    with pytest.warns(ma.SeparationWarning, match="all 0 or all 1"):
        res = ma.glmm("y ~ x + (1 | g)", d)
    assert res.converged
    rep = res.separation
    assert not rep.separated
    by_level = d.groupby("g")["y"].agg(["min", "max"])
    extreme = sorted(by_level.index[(by_level["min"] == by_level["max"])])
    assert sorted(rep.extreme_groups["g"]) == extreme
    modes = res.random_effects["g"].iloc[:, 0]
    assert set(rep.runaway_groups["g"]) == {lv for lv in extreme if abs(modes[lv]) > 10}


def test_suspicion_rule_for_large_data():
    # the linear program runs on large data only after a suspicious fit
    d = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm("y ~ x + (1|g)", d)
    assert not suspected(res.fit, res.data.X)
    assert suspected(None, res.data.X)
