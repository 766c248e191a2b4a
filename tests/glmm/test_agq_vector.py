"""Adaptive Gauss-Hermite quadrature for one vector random-effects term.

glmer refuses ``nAGQ > 1`` for ``(x | g)``; ``ma.glmm`` integrates it with the
tensor-product rule.  No R function computes it (GLMMadaptive is the reference
package for it and is not in the R reference set), so the checks are against an
independent brute-force integral: per level, a Gauss-Legendre product rule of
240 x 240 points on a box of half-width 11 around the integrand's peak (on the
spherical scale ``u ~ N(0, I)``, ``b = Lambda u``), which for these analytic
integrands is exact to rounding.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.polynomial.legendre import leggauss

import mixedanova as ma
from mixedanova.design.theta import ThetaLayout
from mixedanova.glmm.agq import AgqObjective
from mixedanova.glmm.families import make_family
from mixedanova.glmm.laplace import GlmmData, LaplaceObjective
from mixedanova.likelihood.blocked import TermData


def _data(family: str, L: int = 4, m: int = 6, seed: int = 5):
    rng = np.random.default_rng(seed)
    n = L * m
    g = np.repeat(np.arange(L), m)
    x = rng.normal(size=n)
    eta = 0.2 + 0.5 * x + rng.normal(0, 1, L)[g] + rng.normal(0, 0.6, L)[g] * x
    if family == "binomial":
        y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
    X = np.column_stack([np.ones(n), x])
    layout = ThetaLayout.from_terms(["g"], [("(Intercept)", "x")])
    fam = make_family(family)
    d = GlmmData(y, np.ones(n), np.zeros(n), X,
                 (TermData(g, np.column_stack([np.ones(n), x]), L),), layout)
    return fam, d, pd.DataFrame({"y": y, "x": x, "g": [f"g{j}" for j in g]})


def _brute_force(fam, d: GlmmData, theta, beta) -> float:
    """-2 sum_j log of the level's 2-D integral, by a Gauss-Legendre product rule."""
    t = d.terms[0]
    T = d.layout.templates(np.asarray(theta, float))[0]
    nodes, weights = leggauss(240)
    base = d.offset + d.X @ beta
    total = 0.0
    for j in range(t.nlev):
        rows = t.codes == j
        y, pw, b0, z = d.y[rows], d.pw[rows], base[rows], t.zraw[rows]

        def logf(u1, u2):  # arrays of points
            B = np.stack([u1, u2], axis=-1) @ T.T            # (..., 2) random effects
            eta = b0 + B @ z.T                                # (..., rows)
            mu = fam.link.linkinv(eta)
            ll = fam.loglik_terms(np.broadcast_to(y, eta.shape), mu,
                                  np.broadcast_to(pw, eta.shape)).sum(axis=-1)
            return ll - 0.5 * (u1 * u1 + u2 * u2)

        coarse = np.linspace(-6, 6, 121)
        U1, U2 = np.meshgrid(coarse, coarse, indexing="ij")
        vals = logf(U1, U2)
        i, k = np.unravel_index(np.argmax(vals), vals.shape)
        c1, c2, top = coarse[i], coarse[k], vals.max()
        P1, P2 = np.meshgrid(c1 + 11 * nodes, c2 + 11 * nodes, indexing="ij")
        W = np.outer(weights, weights) * 11 * 11
        val = np.sum(W * np.exp(logf(P1, P2) - top))
        total += -2 * (np.log(val) + top - np.log(2 * np.pi))
    return total


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_vector_agq_converges_to_the_integral(family):
    # GLMMadaptive::mixed_model(nAGQ = k) integrand; reference: brute-force integral
    fam, d, _ = _data(family)
    lap = LaplaceObjective(fam, d)
    theta, beta = np.array([1.1, 0.4, 0.7]), np.array([0.1, 0.4])
    exact = _brute_force(fam, d, theta, beta)
    errors = [abs(AgqObjective(lap, k)(theta, beta) - exact) for k in (5, 9, 15, 25)]
    assert errors[-1] <= 1e-8
    assert errors[0] > errors[1] > errors[2] > errors[-1]
    # one node is the Laplace approximation (glmer's nAGQ = 1 deviance function)
    assert abs(AgqObjective(lap, 1)(theta, beta) - lap(theta, beta)) <= 1e-10


def test_vector_agq_fit_is_the_integrals_optimum():
    # the maximum of the exact marginal likelihood (what GLMMadaptive::mixed_model
    # maximizes): the fitted value equals the brute-force integral at the estimates,
    # and the brute-force integral is stationary there and does not decrease
    # around it
    fam, d, df = _data("binomial", L=10, m=8, seed=7)
    res = ma.glmm("y ~ x + (x | g)", df, family="binomial", nAGQ=15)
    assert res.converged and res.nagq == 15 and not res.is_singular
    theta, beta = np.asarray(res.theta, float), res.fe_params.to_numpy()
    assert abs(res.minus_2_loglik - _brute_force(fam, d, theta, beta)) <= 1e-6
    x0 = np.concatenate([theta, beta])
    h = 1e-4

    def f(x):
        return _brute_force(fam, d, x[:3], x[3:])

    f0 = f(x0)
    grad = np.array([(f(x0 + h * e) - f(x0 - h * e)) / (2 * h) for e in np.eye(5)])
    assert np.max(np.abs(grad)) < 2e-4
    rng = np.random.default_rng(0)
    for _ in range(3):
        step = rng.normal(size=5) * 1e-2
        assert f(x0 + step) >= f0 - 1e-9
    # and it is not the Laplace optimum: quadrature moves -2 logLik
    lap = ma.glmm("y ~ x + (x | g)", df, family="binomial")
    assert abs(lap.minus_2_loglik - res.minus_2_loglik) > 1e-3


def test_nagq_refusals_name_the_argument():
    _, _, df = _data("binomial")
    df["h"] = np.arange(len(df)) % 3
    with pytest.raises(ma.ArgumentError, match="nAGQ"):
        ma.glmm("y ~ x + (1 | g) + (1 | h)", df, family="binomial", nAGQ=5)
    with pytest.raises(ma.ArgumentError, match="nAGQ = 200"):
        ma.glmm("y ~ x + (x | g)", df, family="binomial", nAGQ=200)
