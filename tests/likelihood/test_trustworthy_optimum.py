"""A trustworthy optimum (issue 7): false boundaries, invariance to the response's
origin and scale, to row order and to level labels, degenerate data.

R: ``lmer(Reaction ~ Days + (Days | Subject), d)`` with lme4's default optimizer
reaches 1658.576 on the false-boundary example (checked against
``optimizer = "L-BFGS-B"`` here too); the invariances are properties of the REML
criterion and ML deviance, ``-2 log L(a + b y) = -2 log L(y) + 2 k log|b|`` with
``k = n - p`` (REML) or ``n`` (ML).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.likelihood.convergence import check_convergence


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ma.lmm(formula, data, **kw)


@pytest.fixture(scope="module")
def sleep10():
    ss = ma.load_dataset("sleepstudy")
    return ss[ss.Subject != 372].assign(Days=lambda d: d.Days * 10)


def test_false_boundary_is_left(sleep10):
    # R: REMLcrit(lmer(Reaction ~ Days + (Days | Subject), d)) = 1658.576 (issue 7)
    res = _fit("Reaction ~ Days + (Days|Subject)", sleep10)
    assert res.reml_criterion == pytest.approx(1658.576, abs=1e-3)
    assert res.converged and not res.is_singular
    other = _fit("Reaction ~ Days + (Days|Subject)", sleep10, optimizer="L-BFGS-B")
    assert res.reml_criterion <= other.reml_criterion + 1e-9


def test_check_rejects_the_false_boundary(sleep10):
    # the point the old optimizer stopped at: theta (0, -0.025, 6e-5), criterion 1679.86
    model = ma.LinearMixedModel.from_formula("Reaction ~ Days + (Days|Subject)", sleep10)
    dev = model.deviance_function(True)
    rep = check_convergence(dev, np.array([0.0, -0.025, 6e-5]))
    assert not rep.converged
    assert any("boundary" in m for m in rep.messages)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("b", [1e-6, 1e-3, 1.0, 1e3, 1e6, -2.5])
@pytest.mark.parametrize("a_sd", [0.0, 1e4, -1e8])
def test_invariant_to_origin_and_scale_of_y(method, b, a_sd):
    df = ma.load_dataset("sleepstudy")
    formula = "Reaction ~ Days + (Days|Subject)"
    ref = _fit(formula, df, method=method)
    y = df["Reaction"].to_numpy(float)
    a = a_sd * abs(b) * y.std()
    new = _fit(formula, df.assign(Reaction=a + b * y), method=method)
    assert new.converged
    np.testing.assert_allclose(new.theta, ref.theta, rtol=1e-6)
    k = (len(y) - 2) if method == "REML" else len(y)
    crit = "reml_criterion" if method == "REML" else "deviance"
    shift = 2.0 * k * math.log(abs(b))
    assert getattr(new, crit) == pytest.approx(getattr(ref, crit) + shift,
                                               rel=1e-10, abs=1e-8 * k)


def test_invariant_to_row_order_and_level_labels():
    df = pd.read_csv(__import__("_stress").CORPUS / "a_slope2x2_10002.csv")
    formula = "y ~ x + (x | g)"
    ref = _fit(formula, df)
    rng = np.random.default_rng(7)
    shuffled = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    levels = df["g"].unique()
    relabel = dict(zip(levels, [f"L{v}" for v in rng.permutation(len(levels))]))
    renamed = df.assign(g=df["g"].map(relabel))
    for other in (shuffled, renamed):
        res = _fit(formula, other)
        assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-8)
        # the covariance matrix, not its Cholesky factor's redundant entries
        assert res.varcomp["vcov"].to_numpy() == pytest.approx(
            ref.varcomp["vcov"].to_numpy(), rel=1e-8, abs=1e-12)


def test_constant_response_is_refused():
    df = ma.load_dataset("dyestuff").assign(Yield=3.0)
    with pytest.raises(ma.FitError, match="response is constant"):
        ma.lmm("Yield ~ 1 + (1|Batch)", df)


def test_exactly_fitted_response_is_refused():
    df = ma.load_dataset("sleepstudy")
    df = df.assign(Reaction=2.0 + 3.0 * df["Days"])
    with pytest.raises(ma.FitError, match="fit the response exactly"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_no_fixed_effects():
    # R: lmer(Yield ~ 0 + (1 | Batch), Dyestuff): REML = ML without fixed effects
    df = ma.load_dataset("dyestuff")
    reml = _fit("Yield ~ 0 + (1|Batch)", df)
    ml = _fit("Yield ~ 0 + (1|Batch)", df, method="ML")
    assert reml.reml_criterion == pytest.approx(ml.deviance, rel=1e-12)
    assert reml.converged and reml.fe_params.size == 0
    # closed form at the optimum: sigma^2 = MSW (within-batch SS / (n - J)) holds for
    # any between-batch variance estimate in a balanced one-way layout without mean
    g = df.groupby("Batch")["Yield"]
    msw = float(((df.Yield - g.transform("mean")) ** 2).sum()) / (len(df) - g.ngroups)
    assert reml.sigma ** 2 == pytest.approx(msw, rel=1e-9)


@pytest.mark.parametrize("start, what", [([math.nan], "non-finite"), ([1.0, 2.0], "2 values"),
                                         (["a"], "start must be"), ([-1.0], "lower bound")])
def test_bad_start(start, what):
    df = ma.load_dataset("dyestuff")
    with pytest.raises(ma.FitError, match=what):
        ma.lmm("Yield ~ 1 + (1|Batch)", df, start=start)


def test_bad_optimizer_name():
    with pytest.raises(ma.FitError, match="optimizer must be one of"):
        ma.lmm("Yield ~ 1 + (1|Batch)", ma.load_dataset("dyestuff"), optimizer="bogus")
