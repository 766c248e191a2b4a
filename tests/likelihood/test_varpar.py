"""Exact derivatives of lmerTest's variance-parameter pieces (mixedanova.likelihood.varpar).

lmerTest (``as_lmerModLmerTest``) differentiates the deviance with ``sigma`` given
(``devfun_vp``) and ``vcov(beta)`` numerically in ``varpar = (theta, sigma)``.  The
package splits the deviance into ``a(theta)`` (``log|B|`` for REML, ``log|Omega|``
for ML), ``r(theta) = pwrss`` and ``vcov(beta) = sigma^2 U(theta)`` and takes the
theta derivatives of ``a``, ``log r`` and ``U`` exactly from dense matrices.  They are
checked here against Richardson-extrapolated central differences of the same
pieces computed by another code path (the blocked factorization of
``ProfiledDeviance.factor``), whose error is O(h^4) with h = 1e-2.
"""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from mixedanova.likelihood.varpar import DenseVarpar, exact_polish, interior

CASES = [("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
         ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
         ("pastes", "strength ~ 1 + (1|batch) + (1|batch:cask)")]


def _pieces(dev, theta):
    """``[a, log r, U.ravel()]`` from the blocked factor."""
    f = dev.factor(theta)
    a = f.ldL2 + (f.ldRX2 if dev.reml else 0.0)
    return np.concatenate([[a, np.log(f.pwrss)], f.vcov_unscaled().ravel()])


def _richardson(fun, x, h):
    """Gradient and Hessian by central differences extrapolated from h and h/2."""
    def central(hh):
        k = len(x)
        f0 = fun(x)
        g = np.empty((k, f0.size))
        H = np.empty((k, k, f0.size))
        for i in range(k):
            for j in range(k):
                ei, ej = np.zeros(k), np.zeros(k)
                ei[i], ej[j] = hh[i], hh[j]
                H[i, j] = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                           + fun(x - ei - ej)) / (4 * hh[i] * hh[j])
            g[i] = (fun(x + ei) - fun(x - ei)) / (2 * hh[i])
        return g, H

    g1, H1 = central(h)
    g2, H2 = central(h / 2)
    return (4 * g2 - g1) / 3, (4 * H2 - H1) / 3


@pytest.mark.parametrize("name,formula", CASES)
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_exact_derivatives_equal_extrapolated_differences(name, formula, method):
    data = ma.load_dataset(name)
    res = ma.lmm(formula, data, method)
    dev = res.model.deviance_function(reml=method == "REML")
    theta = res.state.theta
    d = DenseVarpar(dev.cp).derivatives(theta[None, :], np.zeros(1, int), dev.reml)
    g, H = _richardson(lambda t: _pieces(dev, t), theta, 1e-2 * np.maximum(np.abs(theta), 0.1))
    k, p = len(theta), res.design.p
    # lmerTest: numDeriv::hessian(devfun_vp, varpar) is built from these pieces
    np.testing.assert_allclose(d.grad_a[0], g[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.hess_a[0], H[:, :, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.grad_logr[0], g[:, 1], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d.hess_logr[0], H[:, :, 1], rtol=1e-5, atol=1e-7)
    # lmerTest: numDeriv::jacobian(vcov(beta)) at varpar
    scale = np.abs(g[:, 2:]).max()
    np.testing.assert_allclose(d.grad_u[0].reshape(k, p * p), g[:, 2:], rtol=1e-6,
                               atol=1e-8 * scale)


def test_exact_polish_reaches_a_zero_gradient():
    """Penicillin's plate variance: one exact Newton step from a point 1e-5 off the
    optimum leaves a gradient of rounding size."""
    res = ma.lmm("diameter ~ 1 + (1|plate) + (1|sample)", ma.load_dataset("penicillin"))
    dev = res.model.deviance_function(reml=True)
    dense = DenseVarpar(dev.cp)
    start = res.state.theta * (1 + 1e-5)
    assert interior(dense, start[None])[0]
    x = exact_polish(dense, start, np.zeros(1, int), True, dev.dof,
                     lambda th, _c: np.array([dev(t) for t in th]))[0]
    assert np.max(np.abs(dev.gradient(x))) < 1e-8
    assert np.max(np.abs(dev.gradient(start))) > 1e-5
    np.testing.assert_allclose(x, res.state.theta, rtol=1e-9)
