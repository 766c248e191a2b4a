"""The analytic gradient of the Laplace -2 log L and the block solver of PIRLS.

* ``LaplaceGradient`` (dense coupling, any term shape) and
  ``ScalarBlocksGradient`` (sparse coupling, scalar terms; its small-problem
  dense variant too) equal central differences of the Laplace value (the same
  quantity lme4's ``glmer`` devfun returns for ``nAGQ = 1``, the objective whose
  optimum ``glmer`` reports) to 1e-6 relative, for canonical and non-canonical
  links (expected-information weights, as lme4).
* The block solver's joint system of ``(beta, u)`` (the ``nAGQ = 0`` modes the
  fit starts from) gives the engine's modes, ``ldL2`` and ``R_X``.
* PIRLS through the block solver reaches modes that satisfy the penalized score
  equation, and its ``log det(Lambda'Z'WZ Lambda + I)`` equals a dense
  ``slogdet`` at those modes (1e-10).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.design.theta import ThetaLayout
from mixedanova.glmm import scalar_blocks
from mixedanova.glmm.families import make_family
from mixedanova.glmm.gradient import JointBlockFactor, LaplaceGradient
from mixedanova.glmm.laplace import GlmmData, LaplaceObjective
from mixedanova.glmm.scalar_blocks import ScalarBlocksGradient
from mixedanova.likelihood.blocked import TermData


def _data(family: str, link: str, shape: str, seed: int = 5) -> tuple:
    """Tiny GLMMs: ``vector`` (x|g) + (1|h), ``scalar`` (1|g) + (1|h) + (1|k),
    ``nested`` (1|obs) + (1|h) + (1|k) (one level of obs per row, as grouseticks'
    INDEX: the later terms' Schur complement has a diagonal block)."""
    rng = np.random.default_rng(seed)
    n = 90
    g, h, k = rng.integers(0, 9, n), rng.integers(0, 5, n), rng.integers(0, 3, n)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    eta = -0.2 + 0.6 * x + rng.normal(0, 0.7, 9)[g] + rng.normal(0, 0.4, 5)[h]
    if family.startswith("binomial"):
        trials = rng.integers(1, 5, n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))) / trials
        pw = trials
        if family == "binomial_rounded":  # proportions stored to 3 digits: round(w y) != w y
            y = np.round(y, 3)
            family = "binomial"
    elif family == "gamma":  # mean exp(eta) or 1 / (2 + eta / 4), shape 1 / 0.3
        mu = np.exp(eta) if link == "log" else 1.0 / (2.0 + 0.25 * eta)
        y = rng.gamma(1 / 0.3, 0.3 * mu)
        pw = np.ones(n)
    elif family == "negative_binomial":  # NB2 with shape 3
        mu = np.exp(eta)
        y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu)).astype(float)
        pw = np.ones(n)
    elif link == "sqrt":
        y = rng.poisson((5.0 + eta) ** 2).astype(float)
        pw = np.ones(n)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
        pw = np.ones(n)
    if shape == "vector":
        terms = (TermData(g, np.column_stack([np.ones(n), x]), 9),
                 TermData(h, np.ones((n, 1)), 5))
        layout = ThetaLayout.from_terms(["g", "h"], [("(Intercept)", "x"), ("(Intercept)",)])
        theta = np.array([0.7, 0.2, 0.3, 0.5])
    elif shape == "nested":
        terms = (TermData(np.arange(n), np.ones((n, 1)), n),
                 TermData(h, np.ones((n, 1)), 5), TermData(k, np.ones((n, 1)), 3))
        layout = ThetaLayout.from_terms(["obs", "h", "k"], [("(Intercept)",)] * 3)
        theta = np.array([0.3, 0.4, 0.3])
    else:
        terms = (TermData(g, np.ones((n, 1)), 9), TermData(h, np.ones((n, 1)), 5),
                 TermData(k, np.ones((n, 1)), 3))
        layout = ThetaLayout.from_terms(["g", "h", "k"], [("(Intercept)",)] * 3)
        theta = np.array([0.7, 0.4, 0.3])
    beta = (np.array([5.5, 0.5]) if link == "sqrt" else
            np.array([2.0, 0.1]) if link == "inverse" else np.array([-0.1, 0.5]))
    param = {"gamma": 0.3, "negative_binomial": 3.0}.get(family)
    fam = make_family(family, link, param=param)
    return fam, GlmmData(y, pw, np.zeros(n), X, terms, layout), theta, beta


def _central(obj: LaplaceObjective, theta, beta) -> np.ndarray:
    x = np.concatenate([theta, beta])
    k = len(theta)
    out = np.empty_like(x)
    for i in range(len(x)):
        h = 1e-4 * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (obj((x + e)[:k], (x + e)[k:]) - obj((x - e)[:k], (x - e)[k:])) / (2 * h)
    return out


LINKS = [("binomial", "logit"), ("binomial", "probit"), ("binomial", "cloglog"),
         # glmer's logLik counts round(w y) successes, the modes w y (families.CountGap)
         ("binomial_rounded", "logit"), ("binomial_rounded", "cloglog"),
         ("poisson", "log"), ("poisson", "sqrt"),
         # a dispersion / shape held at a value: mu_eta != V, the general formulas
         ("gamma", "inverse"), ("gamma", "log"), ("negative_binomial", "log")]


@pytest.mark.parametrize("family,link", LINKS)
@pytest.mark.parametrize("variant", ["dense", "scalar_dense_b", "scalar_sparse_b",
                                     "scalar_nested", "scalar_nested_sparse_b"])
def test_gradient_equals_central_differences(family, link, variant):
    # d/d(theta, beta) of lme4's Laplace devfun (glmer nAGQ = 1, -2 log L)
    shape = "vector" if variant == "dense" else "nested" if "nested" in variant \
        else "scalar"
    fam, d, theta, beta = _data(family, link, shape)
    obj = LaplaceObjective(fam, d)
    grad = LaplaceGradient(obj) if variant == "dense" else ScalarBlocksGradient(obj)
    assert grad.available()
    if variant.endswith("sparse_b"):
        grad.dense_b = False
    if "nested" in variant:  # the diagonal block eliminated first
        assert grad.nested_m1 == 5
    ref = _central(obj, theta, beta)  # engine PIRLS values
    got = grad(obj.pirls(theta, beta))
    assert np.max(np.abs(got - ref)) <= 1e-6 * max(1.0, np.max(np.abs(ref))), (got, ref)
    obj.fast = grad.factor  # the same gradient from the block solver's modes
    got_fast = grad(obj.pirls(theta, beta))
    assert np.max(np.abs(got_fast - ref)) <= 1e-6 * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("family,link", LINKS)
@pytest.mark.parametrize("shape", ["vector", "scalar", "nested"])
def test_block_solver_modes_and_log_determinant(family, link, shape):
    # lme4's PIRLS modes (penalized score = 0) and ldL2 = log det(L_theta)^2
    fam, d, theta, beta = _data(family, link, shape)
    obj = LaplaceObjective(fam, d)
    grad = LaplaceGradient(obj) if shape == "vector" else ScalarBlocksGradient(obj)
    assert shape != "nested" or grad.nested_m1 == 5
    obj.fast = grad.factor
    st = obj.pirls(theta, beta)
    blocks = []
    for t, T in zip(d.terms, d.layout.templates(theta)):
        Z = np.zeros((d.n, t.nlev * t.q))
        for j in range(t.q):
            Z[np.arange(d.n), t.codes * t.q + j] = t.zraw[:, j]
        blocks.append(Z @ np.kron(np.eye(t.nlev), T))
    ZL = np.hstack(blocks)
    me = fam.link.mu_eta(st.eta)
    score = ZL.T @ (d.pw * (d.y - st.mu) * me / fam.variance(st.mu)) - st.u
    assert np.max(np.abs(score)) <= 1e-8 * max(1.0, np.max(np.abs(st.u)))
    w = fam.weights(st.mu, me, d.pw)
    M = ZL.T @ (w[:, None] * ZL) + np.eye(ZL.shape[1])
    assert abs(st.ldL2 - np.linalg.slogdet(M)[1]) <= 1e-10


@pytest.mark.parametrize("family,link", [("binomial", "logit"), ("poisson", "log"),
                                         ("gamma", "inverse")])
@pytest.mark.parametrize("variant", ["dense", "scalar_dense_b", "scalar_sparse_b",
                                     "scalar_nested", "scalar_nested_sparse_b"])
def test_joint_block_solver_equals_the_engine(family, link, variant):
    # lme4's nAGQ = 0 PIRLS (modes of beta and u jointly at theta): the block
    # solver's joint system gives the engine's modes, ldL2, value and R_X
    shape = "vector" if variant == "dense" else "nested" if "nested" in variant \
        else "scalar"
    fam, d, theta, _ = _data(family, link, shape)
    obj = LaplaceObjective(fam, d)
    grad = LaplaceGradient(obj) if variant == "dense" else ScalarBlocksGradient(obj)
    if variant.endswith("sparse_b"):
        grad.dense_b = False
        grad.bt = None
    ref = obj.pirls(theta, None, joint=True)  # the engine's joint system
    obj.fast_joint = grad.joint_factor
    got = obj.pirls(theta, None, joint=True)
    assert isinstance(got.factor, JointBlockFactor)  # the block solver, not the engine
    assert abs(got.value - ref.value) <= 1e-9 * max(1.0, abs(ref.value))
    assert abs(got.ldL2 - ref.ldL2) <= 1e-9
    assert np.max(np.abs(got.beta - ref.beta)) <= 1e-8
    assert np.max(np.abs(got.u - ref.u)) <= 1e-8
    rx, rx_ref = np.asarray(got.factor.rx()), np.asarray(ref.factor.rx())
    assert np.max(np.abs(rx - rx_ref)) <= 1e-8 * np.max(np.abs(rx_ref))


def test_large_design_path_reaches_the_optimum(monkeypatch):
    # the path for a million rows (sparse coupling, u-only start at the GLM's beta),
    # forced on a small crossed Bernoulli design: the fit is a minimum of lme4's
    # Laplace devfun (glmer nAGQ = 1), checked by central differences of the value
    # through the engine's PIRLS (not the gradient under test)
    monkeypatch.setattr(scalar_blocks, "_DENSE_B", 0)
    rng = np.random.default_rng(8)
    n, l1, l2 = 3000, 150, 20
    g1, g2 = rng.integers(0, l1, n), rng.integers(0, l2, n)
    x = rng.normal(size=n)
    eta = -0.4 + 0.5 * x + rng.normal(0, 0.7, l1)[g1] + rng.normal(0, 0.4, l2)[g2]
    df = pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float), "x": x,
                       "g1": pd.Categorical(g1), "g2": pd.Categorical(g2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.glmm("y ~ x + (1|g1) + (1|g2)", df, family="binomial")
    assert res.converged
    theta, beta = res.theta, res.fit.beta
    assert np.all(theta > 0.05)  # an interior optimum: the gradient must vanish
    fd = _central(res.objective, theta, beta)
    assert np.max(np.abs(fd)) <= 1e-4, fd
    assert abs(res.objective(theta, beta) - res.fit.value) <= 1e-8
