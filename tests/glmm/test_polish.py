"""The Newton polish of the Laplace fit and its checks that do not read the
analytic gradient (``mixedanova.glmm.polish``).

* On a quadratic the central Hessian is exact and the value's slope from the
  Hessian's points equals the true gradient: with a gradient that is off, the
  polish stops where the wrong gradient vanishes and both checks (the slope from
  the Hessian's points and the directional central differences) predict the
  same, exact, further decrease.
* A fit whose analytic gradient is off is not reported converged: the checks
  read ``-2 log L`` itself (lme4's devfun value, glmer ``nAGQ = 1``), whose
  central differences see the slope the gradient misses.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.glmm import gradient as gradient_module
from mixedanova.glmm.polish import (CHECK_GAIN, SLOPE_GAIN, difference_check, newton_grad,
                                    value_slope_gain)

A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
B = np.array([1.0, -2.0, 0.5])


def _quadratic(bias: np.ndarray):
    def value(x):
        return 0.5 * x @ A @ x - B @ x

    def fg(x):
        return value(x), A @ x - B + bias

    return value, fg


@pytest.mark.parametrize("off", [0.0, 1e-2])
def test_checks_on_a_quadratic(off):
    # f = x'Ax/2 - b'x: Hessian A, gradient Ax - b; a gradient that is off by
    # `off` in its first entry stops the polish where Ax - b = -off e1
    bias = np.array([off, 0.0, 0.0])
    value, fg = _quadratic(bias)
    lower = np.full(3, -np.inf)
    res = newton_grad(fg, fg, np.array([0.3, -0.2, 0.1]), lower)
    assert res.converged
    np.testing.assert_allclose(res.hessian, A, rtol=1e-9)  # central: exact on a quadratic
    true_grad = A @ res.x - B
    np.testing.assert_allclose(res.value_slope, true_grad, atol=1e-8)
    gain = value_slope_gain(res.value_slope, res.hessian)
    full = difference_check(lambda x: (value(x), None), res.x, res.hessian, res.free)
    if off == 0.0:
        assert gain <= SLOPE_GAIN and full <= CHECK_GAIN
    else:  # (v'g)^2 / (2 v'Av) along the two fixed directions, g = -off e1
        assert gain > CHECK_GAIN
        assert gain == pytest.approx(full, rel=1e-6)


def _poisson_data(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 300
    a, b = rng.integers(0, 15, n), rng.integers(0, 8, n)
    x = rng.normal(size=n)
    eta = 0.8 + 0.4 * x + rng.normal(0, 0.6, 15)[a] + rng.normal(0, 0.4, 8)[b]
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x,
                         "a": [f"a{k}" for k in a], "b": [f"b{k}" for k in b]})


def test_a_wrong_gradient_is_not_reported_converged(monkeypatch):
    # glmer(y ~ x + (1|a) + (1|b), poisson): with the analytic gradient off by 0.5 in
    # the intercept, the search ends where the value still falls; the checks of the
    # value say so instead of converged=True
    df = _poisson_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = ma.glmm("y ~ x + (1|a) + (1|b)", df, family="poisson")
    assert good.converged
    orig = gradient_module.LaplaceGradient._gradient

    def off(self, st):
        g = orig(self, st)
        g[len(st.theta)] += 0.5  # d/d(Intercept)
        return g

    monkeypatch.setattr(gradient_module.LaplaceGradient, "_gradient", off)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = ma.glmm("y ~ x + (1|a) + (1|b)", df, family="poisson")
    assert not bad.converged
    assert any("central differences of the value" in m for m in bad.convergence_messages)
    assert -2 * bad.llf > -2 * good.llf  # it did stop short of the optimum
