"""The whitened engine against dense linear algebra (issue 10).

``W'W = Rrel^{-1}`` and ``log|Rrel|`` for every structure, and the profiled REML
criterion / ML deviance of :class:`ResidualDeviance` (blocked, whitened,
nested and crossed layouts) against the textbook formulas with the dense
marginal covariance ``V = Z Lambda Lambda' Z' + Rrel``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.likelihood.residual import (CompoundSymmetry, ResidualStructure,
                                            SerialCorrelation, VarianceFunction)


def _dense_criterion(res_model, x: np.ndarray, reml: bool) -> float:
    """-2 log-likelihood (REML: restricted), profiled over beta and sigma, dense."""
    d = res_model.design
    rdev = res_model.deviance_function(reml=reml)
    theta, u = rdev.split(x)
    n, p = d.X.shape
    Zs = []
    for b, T in zip(d.blocks, d.theta_layout().templates(theta)):
        Z = np.zeros((n, b.nlev * b.q))
        for i in range(n):
            Z[i, b.codes[i] * b.q:(b.codes[i] + 1) * b.q] = b.zraw[i]
        Zs.append(Z @ np.kron(np.eye(b.nlev), T))
    ZL = np.hstack(Zs)
    V = ZL @ ZL.T + rdev.structure.covariance(u, np.arange(n))
    Vi = np.linalg.inv(V)
    XtViX = d.X.T @ Vi @ d.X
    beta = np.linalg.solve(XtViX, d.X.T @ Vi @ d.y)
    r = d.y - d.X @ beta
    q = float(r @ Vi @ r)
    ldV = np.linalg.slogdet(V)[1]
    if reml:
        return (ldV + np.linalg.slogdet(XtViX)[1]
                + (n - p) * (1 + math.log(2 * math.pi * q / (n - p))))
    return ldV + n * (1 + math.log(2 * math.pi * q / n))


def _small_crossed(seed: int = 3, ns: int = 12, ni: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sub = np.repeat(np.arange(ns), ni)
    item = np.concatenate([rng.permutation(ni) for _ in range(ns)])
    trial = np.tile(np.arange(1, ni + 1), ns)
    keep = rng.random(ns * ni) > 0.15  # gaps in the trial positions
    df = pd.DataFrame({"subject": [f"s{k:02d}" for k in sub], "item": [f"i{k}" for k in item],
                       "trial": trial, "x": rng.normal(size=ns * ni),
                       "arm": np.where(sub % 2 == 0, "a", "b"),
                       "dose": rng.uniform(0.5, 3.0, ns * ni)})
    df["y"] = (1 + 0.5 * df["x"] + rng.normal(size=ns)[sub] + 0.6 * rng.normal(size=ni)[item]
               + rng.normal(size=ns * ni))
    return df[keep].reset_index(drop=True)


@pytest.mark.parametrize("structure", [
    lambda g, t, v, s: SerialCorrelation("AR1", g, t),
    lambda g, t, v, s: SerialCorrelation("CAR1", g, t + 0.37 * (t % 3)),
    lambda g, t, v, s: CompoundSymmetry(g),
])
@pytest.mark.parametrize("variance", [None, "ident", "power", "exp"])
def test_whitener_inverts_rrel(structure, variance):
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(5), [1, 3, 4, 2, 5])
    rng.shuffle(g)
    t = np.zeros(len(g))
    for k in range(5):  # distinct positions with gaps
        idx = np.flatnonzero(g == k)
        t[idx] = np.sort(rng.choice(10, len(idx), replace=False)) + 1
    cor = structure(g, t, None, None)
    var = {None: None,
           "ident": VarianceFunction("VarIdent", (g % 3).astype(np.intp), ("a", "b", "c")),
           "power": VarianceFunction("VarPower", rng.uniform(0.5, 2.0, len(g))),
           "exp": VarianceFunction("VarExp", rng.normal(size=len(g)))}[variance]
    s = ResidualStructure(cor, var)
    u = s.start() + 0.3 * rng.normal(size=s.n_par)
    n = len(g)
    W, logdet = s.whitener(u, n)
    W = np.diag(W) if isinstance(W, np.ndarray) else W.toarray()
    R = s.covariance(u, np.arange(n))
    np.testing.assert_allclose(W.T @ W, np.linalg.inv(R), atol=1e-10)
    assert abs(logdet - np.linalg.slogdet(R)[1]) < 1e-10


@pytest.mark.parametrize("structure", [
    lambda g, t: SerialCorrelation("AR1", g, t),
    lambda g, t: SerialCorrelation("CAR1", g, t + 0.37 * (t % 3)),
    lambda g, t: CompoundSymmetry(g),
])
def test_decorrelate_whitens_each_group(structure):
    """The normalized-residual factors W_g (nlme's corFactor) satisfy
    W_g' W_g = C_g^{-1} for every group, rows taken in data order."""
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(6), [1, 3, 4, 3, 5, 4])
    rng.shuffle(g)
    t = np.zeros(len(g))
    for k in range(6):
        idx = np.flatnonzero(g == k)
        t[idx] = rng.permutation(np.sort(rng.choice(10, len(idx), replace=False)) + 1)
    s = ResidualStructure(structure(g, t), None)
    u = s.start() + 0.4
    n = len(g)
    W = np.column_stack([s.decorrelate(u, e) for e in np.eye(n)])  # the linear map
    C = s.covariance(u, np.arange(n))
    np.testing.assert_allclose(W.T @ W, np.linalg.inv(C), atol=1e-10)
    assert np.all(W[g[:, None] != g[None, :]] == 0.0)
    with pytest.raises(ValueError, match="correlation group has 5 rows"):
        s.decorrelate(u, np.ones(n), max_group=4)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula, residual, n_items", [
    ("y ~ x + (1|subject)", ma.AR1(group="subject", order="trial"), 6),
    ("y ~ x + (1|subject)", (ma.CAR1(group="subject", time="dose"), ma.VarIdent(by="arm")), 6),
    # crossed: the item term varies inside the AR(1) groups (whitened entries)
    ("y ~ x + (1|subject) + (1|item)", ma.AR1(group="subject", order="trial"), 6),
    ("y ~ x + (1|subject) + (1|item)", (ma.CompSymm(group="subject"), ma.VarPower("dose")), 6),
    ("y ~ x + (x|subject) + (1|item)", (ma.AR1(group="subject", order="trial"),
                                         ma.VarExp("dose")), 6),
    # more items than subjects: the design's first term (item) varies inside the AR(1)
    # groups, so the system factors subject first (likelihood.permuted)
    ("y ~ x + (1|subject) + (1|item)", ma.AR1(group="subject", order="trial"), 20),
    ("y ~ x + (x|subject) + (1|item)", (ma.AR1(group="subject", order="trial"),
                                         ma.VarIdent("arm")), 20),
])
def test_criterion_matches_dense(formula, residual, n_items, reml):
    df = _small_crossed(ns=8 if n_items > 6 else 12, ni=n_items)
    model = ma.LinearMixedModel.from_formula(formula, df, residual=residual)
    rdev = model.deviance_function(reml=reml)
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = rdev.layout.start() * rng.uniform(0.3, 1.5, rdev.k)
        off = rdev.layout.lower != 0.0
        theta[off] = rng.normal(scale=0.3, size=int(off.sum()))
        u = rdev.structure.start() + 0.4 * rng.normal(size=rdev.structure.n_par)
        x = np.concatenate([theta, u])
        assert abs(rdev(x) - _dense_criterion(model, x, reml)) < 1e-8 * abs(rdev(x))


def test_crossed_ar1_simulation_recovers_parameters():
    """Subject x item with AR(1) over trials within subject (seeded simulation)."""
    rng = np.random.default_rng(20261125)
    ns, ni, phi, s_sub, s_item, sigma = 60, 20, 0.5, 1.0, 0.7, 1.0
    sub = np.repeat(np.arange(ns), ni)
    trial = np.tile(np.arange(1, ni + 1), ns)
    item = np.concatenate([rng.permutation(ni) for _ in range(ns)])
    e = np.empty(ns * ni)
    for s in range(ns):
        z = rng.normal(size=ni)
        x = np.empty(ni)
        x[0] = z[0]
        for t in range(1, ni):
            x[t] = phi * x[t - 1] + math.sqrt(1 - phi * phi) * z[t]
        e[s * ni:(s + 1) * ni] = sigma * x
    cond = rng.integers(0, 2, ns * ni).astype(float)
    y = (1.0 + 0.5 * cond + s_sub * rng.normal(size=ns)[sub]
         + s_item * rng.normal(size=ni)[item] + e)
    df = pd.DataFrame({"y": y, "cond": cond, "subject": [f"s{k:03d}" for k in sub],
                       "item": [f"i{k:02d}" for k in item], "trial": trial})
    res = ma.lmm("y ~ cond + (1|subject) + (1|item)", df,
                 residual=ma.AR1(group="subject", order="trial"))
    iv = res.residual_intervals()
    assert iv.loc["phi", "lower"] < phi < iv.loc["phi", "upper"]
    ci = res.conf_int(parm="fixed")
    for name, truth in (("Intercept", 1.0), ("cond", 0.5)):
        assert ci.loc[name, "ci_low"] < truth < ci.loc[name, "ci_high"]
    # Wald intervals of the SDs (log scale) from the Satterthwaite Hessian
    from mixedanova.inference.satterthwaite import satterthwaite_setup

    setup = satterthwaite_setup(res, warn=False)
    k = res.state.theta.size
    z = 1.96
    sd = res.theta * res.sigma
    for j, truth in enumerate((s_sub, s_item)):
        # var(theta_j sigma) by the delta method
        g = np.zeros(len(setup.varpar))
        g[j] = res.sigma
        g[-1] = res.theta[j]
        se = math.sqrt(g @ setup.vcov_varpar @ g)
        assert sd[j] - z * se < truth < sd[j] + z * se
    se_sigma = math.sqrt(setup.vcov_varpar[-1, -1])
    assert res.sigma - z * se_sigma < sigma < res.sigma + z * se_sigma
    assert setup.varpar.size == k + 2  # theta, phi's u, sigma
    # the whitened item term has entries in two levels per row
    rdev = res.model.deviance_function(reml=True)
    assert rdev.constant == [True, False]


def test_outer_check_reports_a_missed_optimum():
    from mixedanova.likelihood.residual_fit import _check_outer

    def f(u):
        return float((u[0] - 0.1) ** 2 + u[1] ** 2)

    msgs = _check_outer(f, np.array([0.0, 0.0]), f(np.array([0.0, 0.0])), 1e-4)
    assert len(msgs) == 1 and "failed to converge: residual parameter 0" in msgs[0]
    assert _check_outer(f, np.array([0.1, 0.0]), f(np.array([0.1, 0.0])), 1e-4) == ()
    flat = _check_outer(lambda u: 1.0, np.array([0.3]), 1.0, 1e-4)
    assert "flat or not convex" in flat[0]


@pytest.mark.filterwarnings("ignore::mixedanova.SingularFitWarning")  # (x|subject) on noise
@pytest.mark.parametrize("n_items", [6, 20])
def test_fit_solution_matches_dense_gls_and_blups(n_items):
    """At the estimates: beta = GLS with V = Z G Z' + sigma^2 Rrel, b = G Z' V^{-1}(y - X beta),
    and vcov(beta) = (X'V^{-1}X)^{-1}, whichever term the crossed system factors first."""
    df = _small_crossed(ns=8 if n_items > 6 else 12, ni=n_items)
    res = ma.lmm("y ~ x + (x|subject) + (1|item)", df,
                 residual=(ma.AR1(group="subject", order="trial"), ma.VarIdent("arm")))
    d = res.design
    n = d.nobs
    fit = res.state.residual
    Zs, Gs = [], []
    for b, T in zip(d.blocks, d.theta_layout().templates(res.theta)):
        Z = np.zeros((n, b.nlev * b.q))
        for i in range(n):
            Z[i, b.codes[i] * b.q:(b.codes[i] + 1) * b.q] = b.zraw[i]
        Zs.append(Z)
        Gs.append(np.kron(np.eye(b.nlev), res.sigma ** 2 * T @ T.T))
    Z = np.hstack(Zs)
    G = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for g in Gs:
        G[o:o + len(g), o:o + len(g)] = g
        o += len(g)
    V = Z @ G @ Z.T + res.sigma ** 2 * fit.structure.covariance(fit.u, np.arange(n))
    Vi = np.linalg.inv(V)
    XtViX = d.X.T @ Vi @ d.X
    beta = np.linalg.solve(XtViX, d.X.T @ Vi @ d.y)
    np.testing.assert_allclose(res.fe_params.to_numpy(), beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.cov_fe.to_numpy(), np.linalg.inv(XtViX), rtol=1e-7)
    blup = G @ Z.T @ Vi @ (d.y - d.X @ beta)
    o = 0
    for b, vals in zip(d.blocks, res._blups):
        np.testing.assert_allclose(vals.ravel(), blup[o:o + b.nlev * b.q], rtol=1e-6, atol=1e-9)
        o += b.nlev * b.q
    # conditional covariance of b given y (beta known): G - G Z' V^{-1} Z G
    C = G - G @ Z.T @ Vi @ Z @ G
    o = 0
    for b, cov in zip(d.blocks, res.random_effects_cov):
        for lev in range(b.nlev):
            sl = slice(o + lev * b.q, o + (lev + 1) * b.q)
            np.testing.assert_allclose(cov[lev], C[sl, sl], rtol=1e-6, atol=1e-10)
        o += b.nlev * b.q


def test_joint_and_nested_strategies_agree():
    """The joint quasi-Newton start and the pure profile search end at the same optimum."""
    from mixedanova.likelihood.residual_fit import optimize_residual

    df = ma.load_dataset("trial_visits")
    model = ma.LinearMixedModel.from_formula(
        "y ~ visit * arm + (1|patient)", df,
        residual=(ma.AR1(group="patient", order="visit"), ma.VarIdent(by="arm")))
    rdev = model.deviance_function(reml=True)
    u1, o1, _ = optimize_residual(rdev, strategy="joint")
    u2, o2, _ = optimize_residual(rdev, strategy="nested")
    assert abs(o1.fmin - o2.fmin) < 1e-9
    np.testing.assert_allclose(u1, u2, atol=2e-5)


@pytest.mark.parametrize("reml", [True, False])
def test_gls_fit_is_the_dense_gls_optimum(reml):
    """ranova's model without random terms keeps the residual structure (nlme's gls):
    the value is the dense -2 logLik at the returned u, and u is a minimum."""
    from mixedanova.likelihood.residual_fit import gls_fit

    df = _small_crossed()
    model = ma.LinearMixedModel.from_formula(
        "y ~ x + (1|subject)", df,
        residual=(ma.AR1(group="subject", order="trial"), ma.VarIdent(by="arm")))
    s = model.deviance_function().structure
    X, y = model.design.X, model.design.y
    n, p = X.shape

    def dense(u):
        V = s.covariance(u, np.arange(n))
        Vi = np.linalg.inv(V)
        A = X.T @ Vi @ X
        beta = np.linalg.solve(A, X.T @ Vi @ y)
        r = y - X @ beta
        N = n - p if reml else n
        val = np.linalg.slogdet(V)[1] + N * (1 + math.log(2 * math.pi * float(r @ Vi @ r) / N))
        return val + (np.linalg.slogdet(A)[1] if reml else 0.0)

    value, u = gls_fit(s, X, y, reml)
    assert abs(value - dense(u)) < 1e-9 * abs(value)
    for i in range(len(u)):
        for h in (-1e-3, 1e-3):
            e = np.zeros(len(u))
            e[i] = h
            assert dense(u + e) > value
