"""Newton's method for expensive evaluations (issue 11; likelihood/optimizer.py).

Crossed fits whose dense Schur complement has order ``NEWTON_ORDER`` or more start
with :func:`newton_descent`.  It must end where the quasi-Newton pipeline ends
(the same optimum lme4 reaches: ``lmer(y ~ 1 + x + (1|s) + (1|d))``), with fewer
factorizations, and hand anything it cannot finish (boundaries, indefinite
Hessians) back to that pipeline without harm: forced on the whole stress corpus,
every set still reaches lme4's best optimum.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
import mixedanova.likelihood.optimizer as optimizer
from _stress import load_manifest, score_set


def _crossed(n=6000, ns=1200, nd=1100, seed=5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s = np.concatenate([np.arange(ns), rng.integers(0, ns, n - ns)])
    d = np.concatenate([np.arange(nd), rng.integers(0, nd, n - nd)])
    x = rng.normal(size=n)
    y = 1 + 0.3 * x + rng.normal(0, 0.6, ns)[s] + rng.normal(0, 0.9, nd)[d] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "s": pd.Categorical(s), "d": pd.Categorical(d)})


def _fit_counting(df, monkeypatch, newton_order):
    from mixedanova.likelihood import crossed

    monkeypatch.setattr(optimizer, "NEWTON_ORDER", newton_order)
    counts = {"factor": 0}
    factor = crossed.CrossedSystem.factor

    def counted(self, lambdas):
        counts["factor"] += 1
        return factor(self, lambdas)

    monkeypatch.setattr(crossed.CrossedSystem, "factor", counted)
    res = ma.lmm("y ~ 1 + x + (1|s) + (1|d)", df)
    return res, counts["factor"]


def test_newton_reaches_the_quasi_newton_optimum(monkeypatch):
    """lmer(y ~ 1 + x + (1|s) + (1|d)): the Schur complement here has order 1103, so
    the default fit takes Newton's path; with it switched off, SLSQP + polish."""
    df = _crossed()
    newton, n_newton = _fit_counting(df, monkeypatch, 1000)
    assert newton.state.optimizer.message.startswith("Newton's method converged")
    slsqp, n_slsqp = _fit_counting(df, monkeypatch, 10**9)
    assert not slsqp.state.optimizer.message.startswith("Newton")
    assert newton.converged and slsqp.converged
    np.testing.assert_allclose(newton.state.theta, slsqp.state.theta, rtol=1e-7)
    assert newton.state.objective == pytest.approx(slsqp.state.objective, rel=1e-13)
    np.testing.assert_allclose(newton.fe_params, slsqp.fe_params, rtol=1e-8)
    assert n_newton < n_slsqp


def test_newton_hands_a_boundary_back(monkeypatch):
    """A variance that is 0 in truth: Newton's path stops short of the bound and the
    quasi-Newton pipeline takes over (lme4: isSingular(m) is TRUE, theta_d = 0)."""
    df = _crossed(n=3000, ns=1100, nd=40, seed=9)
    df["y"] = 1 + 0.3 * df.x + np.random.default_rng(1).normal(0, 0.6, 1100)[df.s.cat.codes] \
        + np.random.default_rng(2).normal(size=len(df))
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 0)
    with pytest.warns(ma.SingularFitWarning):
        res = ma.lmm("y ~ 1 + x + (1|s) + (1|d)", df)
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 10**9)
    with pytest.warns(ma.SingularFitWarning):
        ref = ma.lmm("y ~ 1 + x + (1|s) + (1|d)", df)
    assert res.converged and ref.converged
    assert not res.state.optimizer.message.startswith("Newton")
    np.testing.assert_allclose(res.state.theta, ref.state.theta, atol=1e-7)


SETS = load_manifest()


@pytest.mark.parametrize("entry", SETS, ids=[e["id"] for e in SETS])
def test_forced_newton_keeps_the_stress_corpus(entry, monkeypatch):
    """Every stress set (the corpus README's rule, as test_stress_corpus.py) with
    Newton's path forced on whatever the problem size.  Where Newton's method
    cannot finish, the fallback starts from the start again: from where Newton
    stopped, f_nested_10100 ended in a worse basin and said converged."""
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 0)
    out = score_set(entry)
    assert not out.error, out.error
    assert out.passed and out.converged, out


def test_newton_from_an_indefinite_start(monkeypatch):
    """lmer(y ~ x + (1|s) + (1 + x|d)) with no slope variance in truth: at lme4's
    start the Hessian is indefinite; the modified Newton steps still reach the
    quasi-Newton optimum, and the curvature reported at the end is recomputed."""
    rng = np.random.default_rng(7)
    n, ns, nd = 3000, 400, 120
    s, d, x = rng.integers(0, ns, n), rng.integers(0, nd, n), rng.normal(size=n)
    y = 1 + 0.3 * x + rng.normal(0, 0.7, ns)[s] + rng.normal(0, 0.5, nd)[d] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "s": pd.Categorical(s), "d": pd.Categorical(d)})
    seen = {}
    orig = optimizer.newton_descent

    def spy(dev, x0, **kw):
        H = optimizer.gradient_jacobian(dev, x0, np.arange(len(x0)), dev.gradient(x0))
        seen["start_min_eig"] = float(np.linalg.eigvalsh(H).min())
        return orig(dev, x0, **kw)

    monkeypatch.setattr(optimizer, "newton_descent", spy)
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 0)
    newton = ma.lmm("y ~ x + (1|s) + (1 + x|d)", df)
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 10**9)
    slsqp = ma.lmm("y ~ x + (1|s) + (1 + x|d)", df)
    assert seen["start_min_eig"] < 0
    assert newton.state.optimizer.message.startswith("Newton's method converged")
    assert newton.converged and slsqp.converged
    assert newton.state.objective == pytest.approx(slsqp.state.objective, rel=1e-12)
    np.testing.assert_allclose(newton.state.theta, slsqp.state.theta, rtol=1e-5, atol=1e-6)


def test_newton_precision_on_a_closed_form(monkeypatch):
    """Balanced one-way REML (Dyestuff; R: VarCorr(lmer(Yield ~ 1 + (1|Batch)))) equals
    the ANOVA estimators: through Newton's stage to its documented precision, theta
    to about 1e-8 (the SLSQP pipeline with its polish is tested to 1e-9 in
    tests/test_closed_forms.py)."""
    monkeypatch.setattr(optimizer, "NEWTON_ORDER", 0)
    df = ma.load_dataset("dyestuff")
    y, g = df["Yield"].to_numpy(float), df["Batch"].to_numpy()
    levels, codes = np.unique(g, return_inverse=True)
    n = len(y) // len(levels)
    means = np.bincount(codes, weights=y) / n
    msa = n * float(np.sum((means - y.mean()) ** 2)) / (len(levels) - 1)
    mse = float(np.sum((y - means[codes]) ** 2)) / (len(y) - len(levels))
    res = ma.lmm("Yield ~ 1 + (1|Batch)", df)
    assert res.state.optimizer.message.startswith("Newton's method converged")
    vc = res.varcomp.set_index("group")["vcov"]
    assert vc["Batch"] == pytest.approx((msa - mse) / n, rel=2e-8)
    assert vc["Residual"] == pytest.approx(mse, rel=2e-8)
