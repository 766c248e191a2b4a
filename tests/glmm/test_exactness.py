"""Exactness of the GLMM objectives on tiny problems, against dense computations.

* The Laplace value from PIRLS on the engine equals the Laplace formula
  ``-2 sum log p(y|mu) + |u|^2 + log det(Lambda'Z'WZ Lambda + I)`` evaluated
  densely at modes found independently (Newton's method on the dense penalized
  deviance) to 1e-10.
* The adaptive Gauss-Hermite value equals a brute-force numerical integration
  (scipy.integrate.quad per level) to 1e-8 with many nodes, and approaches it
  as nAGQ grows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import gammaln

import mixedanova as ma
from mixedanova.design.theta import ThetaLayout
from mixedanova.glmm.agq import AgqObjective
from mixedanova.glmm.families import make_family
from mixedanova.glmm.laplace import GlmmData, LaplaceObjective
from mixedanova.likelihood.blocked import TermData


def _tiny(family: str, link: str, crossed: bool, seed: int = 3):
    rng = np.random.default_rng(seed)
    n = 60
    g = rng.integers(0, 6, n)
    h = rng.integers(0, 4, n)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    eta = -0.3 + 0.7 * x + rng.normal(0, 0.8, 6)[g] + (rng.normal(0, 0.5, 4)[h] if crossed
                                                        else 0.0)
    if family == "binomial":
        trials = rng.integers(1, 6, n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))) / trials
        pw = trials
    elif link == "sqrt":  # counts well away from 0: the modes are inside eta > 0
        y = rng.poisson((6.0 + eta) ** 2).astype(float)
        pw = np.ones(n)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
        pw = np.ones(n)
    terms = [TermData(g, np.column_stack([np.ones(n), x]), 6)]
    groups, cols = ["g"], [("(Intercept)", "x")]
    if crossed:
        terms.append(TermData(h, np.ones((n, 1)), 4))
        groups.append("h")
        cols.append(("(Intercept)",))
    layout = ThetaLayout.from_terms(groups, cols)
    fam = make_family(family, link)
    return fam, GlmmData(y, pw, np.zeros(n), X, tuple(terms), layout)


def _dense_laplace(fam, d: GlmmData, theta, beta) -> float:
    """Independent evaluation: dense Z Lambda, Newton on the penalized deviance
    (observed information for the step, any converging method will do), then the
    Laplace formula with lme4's expected-information weights at the modes."""
    T = d.layout.templates(theta)
    blocks = []
    for t, Tk in zip(d.terms, T):
        Z = np.zeros((d.n, t.nlev * t.q))
        for j in range(t.q):
            Z[np.arange(d.n), t.codes * t.q + j] = t.zraw[:, j]
        blocks.append(Z @ np.kron(np.eye(t.nlev), Tk))
    ZL = np.hstack(blocks)
    eta0 = d.offset + d.X @ beta

    def pdev(u):
        mu = fam.link.linkinv(eta0 + ZL @ u)
        return -2 * fam.loglik(d.y, mu, d.pw) + u @ u

    u = np.zeros(ZL.shape[1])
    for _ in range(100):
        eta = eta0 + ZL @ u
        mu, me = fam.link.linkinv(eta), fam.link.mu_eta(eta)
        w = fam.weights(mu, me, d.pw)
        score = ZL.T @ (d.pw * (d.y - mu) * me / fam.variance(mu)) - u
        H = ZL.T @ (w[:, None] * ZL) + np.eye(len(u))
        step = np.linalg.solve(H, score)
        s = 1.0
        while pdev(u + s * step) > pdev(u) + 1e-13 and s > 1e-10:
            s /= 2
        u = u + s * step
        if np.max(np.abs(step)) < 1e-13:
            break
    eta = eta0 + ZL @ u
    mu, me = fam.link.linkinv(eta), fam.link.mu_eta(eta)
    w = fam.weights(mu, me, d.pw)
    M = ZL.T @ (w[:, None] * ZL) + np.eye(len(u))
    return -2 * fam.loglik(d.y, mu, d.pw) + u @ u + np.linalg.slogdet(M)[1]


@pytest.mark.parametrize("family,link", [("binomial", "logit"), ("binomial", "probit"),
                                         ("binomial", "cloglog"), ("poisson", "log"),
                                         ("poisson", "sqrt")])
@pytest.mark.parametrize("crossed", [False, True])
def test_laplace_equals_dense_formula(family, link, crossed):
    fam, d = _tiny(family, link, crossed)
    obj = LaplaceObjective(fam, d)
    theta = np.array([0.8, 0.3, 0.4] + ([0.6] if crossed else []))
    beta = np.array([-0.2, 0.5]) if link != "sqrt" else np.array([5.8, 0.6])
    got = obj.pirls(theta, beta).value
    assert abs(got - _dense_laplace(fam, d, theta, beta)) <= 1e-10


def _brute_force(fam, d: GlmmData, theta: float, beta) -> float:
    """-2 log of the integral over each level's scalar random effect (quad)."""
    t = d.terms[0]
    base = d.offset + d.X @ beta
    total = 0.0
    for j in range(t.nlev):
        rows = t.codes == j
        y, pw, b, z = d.y[rows], d.pw[rows], base[rows], t.zraw[rows, 0]
        # centre the integrand at its peak so that quad sees it
        grid = np.linspace(-8, 8, 1601)
        logf = np.array([fam.loglik(y, fam.link.linkinv(b + z * theta * v), pw) - v * v / 2
                         for v in grid])
        peak, top = grid[np.argmax(logf)], logf.max()

        def f(v):
            return np.exp(fam.loglik(y, fam.link.linkinv(b + z * theta * v), pw)
                          - v * v / 2 - top)

        val, _ = integrate.quad(f, peak - 12, peak + 12, epsabs=0, epsrel=1e-13, limit=200)
        total += -2 * (np.log(val) + top - 0.5 * np.log(2 * np.pi))
    return total


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_agq_converges_to_the_integral(family):
    rng = np.random.default_rng(11)
    n, L = 40, 5
    g = np.repeat(np.arange(L), n // L)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    eta = 0.2 + 0.5 * x + rng.normal(0, 1.2, L)[g]
    if family == "binomial":
        y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
    layout = ThetaLayout.from_terms(["g"], [("(Intercept)",)])
    fam = make_family(family)
    d = GlmmData(y, np.ones(n), np.zeros(n), X, (TermData(g, np.ones((n, 1)), L),), layout)
    lap = LaplaceObjective(fam, d)
    theta, beta = np.array([1.3]), np.array([0.1, 0.4])
    exact = _brute_force(fam, d, 1.3, beta)
    errors = [abs(AgqObjective(lap, k)(theta, beta) - exact) for k in (1, 7, 15, 25, 50)]
    assert errors[-1] <= 1e-8
    assert errors[0] > errors[1] > errors[2] > errors[3] > errors[-1]
    # one node is the Laplace approximation
    assert abs(AgqObjective(lap, 1)(theta, beta) - lap(theta, beta)) <= 1e-10


def test_agq_fit_on_laplace_scale():
    """An nAGQ > 1 fit keeps the saturated log-likelihood (unlike lme4's logLik),
    so its -2 logLik is comparable with the Laplace fit's."""
    d = pd.read_csv(__import__("pathlib").Path(__file__).resolve().parents[1]
                    / "data" / "glmm" / "cbpp.csv")
    f = "cbind(incidence, size - incidence) ~ period + (1|herd)"
    lap = ma.glmm(f, d, family="binomial")
    agq = ma.glmm(f, d, family="binomial", nAGQ=25)
    assert abs(agq.minus_2_loglik - lap.minus_2_loglik) < 0.2
    assert agq.nagq == 25


def test_loglik_includes_constants():
    fam = make_family("poisson")
    y = np.array([0.0, 3.0, 7.0])
    mu = np.array([0.5, 2.0, 6.0])
    # dpois(y, mu, log = TRUE)
    expected = y * np.log(np.where(mu > 0, mu, 1)) - mu - gammaln(y + 1)
    assert np.allclose(fam.loglik_terms(y, mu, np.ones(3)), expected, atol=1e-14)
