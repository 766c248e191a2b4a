"""The blocked factorizations against a dense computation with V = Z G Z' + sigma^2 I.

For several designs (one term, vector-valued terms, nested, crossed, crossed
with vector terms on either side) the profiled REML criterion and ML deviance,
the GLS fixed effects, the BLUPs and the conditional variances are computed both
ways.  The dense side uses only textbook formulas (Searle, Casella & McCulloch
ch. 6): REML = log|V| + log|X'V^-1 X| + r'V^-1 r + (n-p) log(2 pi) at the profiled
sigma, BLUP = G Z' V^-1 (y - X b).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sl

import mixedanova as ma
from mixedanova.likelihood.blocked import TermData
from mixedanova.likelihood.crossprod import cross_products
from mixedanova.likelihood.crossed import CrossedSystem
from mixedanova.likelihood.nested import NestedSystem, nesting_maps


def _data(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 240
    df = pd.DataFrame({
        "a": rng.integers(0, 6, n), "x": rng.normal(size=n), "t": rng.choice(["u", "v"], n),
        "g": rng.integers(0, 15, n), "h": rng.integers(0, 7, n)})
    df["b"] = df["a"] * 10 + rng.integers(0, 4, n)   # b nested in a
    df["c"] = df["b"] * 10 + rng.integers(0, 2, n)   # c nested in b
    df["y"] = (1 + 0.5 * df["x"] + rng.normal(size=6)[df["a"]] + rng.normal(size=60)[df["b"] % 60]
               + rng.normal(size=15)[df["g"]] * (1 + df["x"]) + rng.normal(size=n))
    return df


FORMULAS = [
    "y ~ x + (x | g)",
    "y ~ x + t + (1 | a/b/c)",
    "y ~ x + (1 | g) + (1 | h)",
    "y ~ x + (x | g) + (1 | h)",
    "y ~ x + (1 | g) + (x | h)",
    "y ~ x + (x || g) + (1 | a)",
]


def _dense(design, theta: np.ndarray, reml: bool):
    layout = design.theta_layout()
    Zs, Gs = [], []
    for b, T in zip(design.blocks, layout.templates(theta)):
        Zs.append(TermData(b.codes, b.zraw, b.nlev).sparse_z().toarray())
        Gs.append(np.kron(np.eye(b.nlev), T @ T.T))
    Z, G = np.hstack(Zs), sl.block_diag(*Gs)
    X, y = design.X, design.y
    n, p = X.shape
    H = Z @ G @ Z.T + np.eye(n)             # V / sigma^2
    Hi = np.linalg.inv(H)
    XHX = X.T @ Hi @ X
    beta = np.linalg.solve(XHX, X.T @ Hi @ y)
    r = y - X @ beta
    rss = r @ Hi @ r
    dof = n - p if reml else n
    s2 = rss / dof
    obj = (np.linalg.slogdet(H)[1] + dof * (1 + np.log(2 * np.pi * s2))
           + (np.linalg.slogdet(XHX)[1] if reml else 0.0))
    blup = G @ Z.T @ Hi @ r
    # conditional variance given beta: s2 (G - G Z' H^-1 Z G)
    condvar = s2 * (G - G @ Z.T @ Hi @ Z @ G)
    return obj, beta, blup, condvar, s2


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [True, False])
def test_blocked_equals_dense(formula, reml):
    df = _data()
    model = ma.LinearMixedModel.from_formula(formula, df)
    d = model.design
    dev = model.deviance_function(reml)
    rng = np.random.default_rng(1)
    theta = dev.layout.start() * rng.uniform(0.3, 1.5, dev.layout.size) \
        + np.where(dev.layout.lower == 0, 0.0, rng.normal(scale=0.3, size=dev.layout.size))
    obj, beta, blup, condvar, s2 = _dense(d, theta, reml)
    f = dev.factor(theta)
    assert dev.from_factor(f) == pytest.approx(obj, rel=1e-10)
    b_hat, u = f.solution()
    assert np.allclose(b_hat, beta, rtol=1e-8, atol=1e-10)
    lam = sl.block_diag(*[np.kron(np.eye(b.nlev), T)
                          for b, T in zip(d.blocks, dev.layout.templates(theta))])
    assert np.allclose(lam @ u, blup, rtol=1e-8, atol=1e-10)
    # conditional variances: s2 * T Omega^{-1} T' per level (diagonal blocks)
    pos = 0
    for b, T, D in zip(d.blocks, dev.layout.templates(theta), f.omega_inv_diag()):
        for lev in range(b.nlev):
            sl_ = slice(pos + lev * b.q, pos + (lev + 1) * b.q)
            assert np.allclose(s2 * T @ D[lev] @ T.T, condvar[sl_, sl_], rtol=1e-8, atol=1e-12)
        pos += b.nlev * b.q


@pytest.mark.parametrize("formula", ["y ~ x + t + (1 | a/b/c)", "y ~ x + (x || g)"])
def test_nested_and_crossed_layouts_agree(formula):
    # the nested layout's special structure against the general crossed layout
    df = _data()
    model = ma.LinearMixedModel.from_formula(formula, df)
    d = model.design
    terms = [TermData(b.codes, b.zraw, b.nlev) for b in d.blocks]
    cp = cross_products(terms, d.X, d.y)
    maps = nesting_maps(cp)
    assert maps is not None
    nested, crossed = NestedSystem(cp, maps), CrossedSystem(cp)
    layout = d.theta_layout()
    theta = layout.start() * 0.7 + 0.1 * (layout.lower != 0)
    fn, fc = nested.factor(layout.templates(theta)), crossed.factor(layout.templates(theta))
    for attr in ("ldL2", "ldRX2", "pwrss"):
        assert getattr(fn, attr) == pytest.approx(getattr(fc, attr), rel=1e-11)
    for sn, sc in zip(fn.inverse_block_sums(), fc.inverse_block_sums()):
        for a, b in zip(sn, sc):
            assert np.allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("formula", FORMULAS)
def test_analytic_gradient(formula):
    # the profiled objective's analytic gradient against central differences
    model = ma.LinearMixedModel.from_formula(formula, _data())
    for reml in (True, False):
        dev = model.deviance_function(reml)
        theta = dev.layout.start() * 0.8 + 0.15 * (dev.layout.lower != 0)
        g = dev.gradient(theta)
        h = 1e-5
        fd = np.array([(dev(theta + h * e) - dev(theta - h * e)) / (2 * h)
                       for e in np.eye(len(theta))])
        assert np.allclose(g, fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formula, theta", [
    ("y ~ x + (1 | a) + (1 | b) + (1 | c)", [1.0, 0.7, 0.4]),
    ("y ~ x + (1 | a) + (x | b)", [1.0, 0.3, 0.7, 0.9]),
    ("y ~ x + (x | a) + (1 | b)", [1.0, 0.3, 0.7, 0.9]),
])
def test_crossed_ways_of_forming_cct_agree(monkeypatch, formula, theta):
    """The crossed layout's four ways of forming C C' (pairs of entries sharing a
    first-term level, a dense C by BLAS, and for a scalar first term the sum over
    distinct level weights, which forms the entries of C only when asked, or a
    sparse product at each evaluation when the pairs are too many to store) give
    the same objective, gradient, Omega^-1 blocks and solution (beta, u): the
    dense V = Z G Z' + sigma^2 I side of this file checks the pairs way."""
    import mixedanova.likelihood.crossed as crossed

    rng = np.random.default_rng(11)
    n = 400
    df = pd.DataFrame({"a": rng.integers(0, 30, n), "b": rng.integers(0, 12, n),
                       "c": rng.integers(0, 5, n), "x": rng.normal(size=n)})
    df["y"] = rng.normal(size=n) + rng.normal(size=30)[df.a] + df.x * rng.normal(size=12)[df.b]
    theta = np.array(theta)
    out = {}
    for mode in ("pairs", "dense", "grouped", "sparse"):
        monkeypatch.setattr(crossed, "_PAIRS_PER_FLOP",
                            0.0 if mode in ("pairs", "sparse") else 1e12)
        monkeypatch.setattr(crossed, "_PAIR_STRUCTURE_LIMIT", -1 if mode == "sparse" else 8e6)
        monkeypatch.setattr(crossed, "_GROUPED_ENTRIES", 5e7 if mode == "grouped" else 0)
        monkeypatch.setattr(crossed, "_GROUPED_PER_PAIR", 1e12)
        dev = ma.LinearMixedModel.from_formula(formula, df).deviance_function(True)
        value, grad = dev.value_and_gradient(theta)
        out[mode] = (value, grad, dev.factor(theta).omega_inv_diag(),
                     dev.system.dense_c, dev.system.groups is not None,
                     np.concatenate(dev.factor(theta).solution()), dev.system.sparse_cc)
    assert not out["pairs"][3] and out["dense"][3]
    # the weight sum needs scalar terms only (a vector term falls back to a dense C)
    assert out["grouped"][4] == ("x |" not in formula)
    # the sparse product needs a scalar first term (a, the most levels)
    assert out["sparse"][6] == ("(x | a)" not in formula) and not out["pairs"][6]
    for mode in ("dense", "grouped", "sparse"):
        assert out[mode][0] == pytest.approx(out["pairs"][0], rel=1e-13)
        np.testing.assert_allclose(out[mode][1], out["pairs"][1], rtol=1e-9, atol=1e-9)
        for a, b in zip(out[mode][2], out["pairs"][2]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out[mode][5], out["pairs"][5], rtol=1e-9, atol=1e-11)
