"""Power of a GLMM coefficient by simulation (issue 20: "GLMMs too").

``ma.power`` on ``simulation_model(..., family="binomial")`` must be exactly the
loop a user would write: the same simulated data sets (same seed), each fitted
by ``ma.glmm`` (lme4's ``glmer``, Laplace), the Wald z p value of the
coefficient (``coef(summary(glmer(...)))[, "Pr(>|z|)"]``) compared with alpha.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.errors import ArgumentError, UnknownNameError


def _model(family="binomial"):
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(12), 8)
    d = pd.DataFrame({"g": pd.Categorical([f"g{i:02d}" for i in g]),
                      "x": rng.normal(size=len(g))})
    fixed = {"Intercept": -0.3, "x": 0.8} if family == "binomial" else \
        {"Intercept": 0.5, "x": 0.3}
    return ma.simulation_model("~ x + (1|g)", d, fixed=fixed, varcomp={"g": 0.4},
                               family=family)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_glmm_power_is_the_direct_loop(family):
    m = _model(family)
    nsim = 4
    tab = ma.power(m, "x", nsim=nsim, seed=11, alpha=0.05)
    # the same draws: one generator, the design built once
    Y = m.simulate(nsim, np.random.default_rng(11), batch=m.design())
    hits, failed = 0, 0
    for j in range(nsim):
        d = m.data.copy()
        d["yy"] = Y[:, j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # lme4: coef(summary(glmer(yy ~ x + (1|g), family = family)))["x", "Pr(>|z|)"]
            r = ma.glmm("yy ~ x + (1|g)", d, family=family)
        if not r.converged:
            failed += 1
            continue
        hits += int(r.fixed().loc["x", "p"] < 0.05)
    assert int(tab.loc[0, "n_failed"]) == failed
    assert tab.loc[0, "power"] == pytest.approx(hits / (nsim - failed))
    assert list(tab.columns) == ["power", "ci_low", "ci_high", "nsim", "n_failed"]


def test_glmm_simulation_draws():
    """Bernoulli draws with the logit link: with no random-effect variance the
    share of ones is plogis(Intercept) (binomial mean, within 4 SEs)."""
    d = pd.DataFrame({"g": pd.Categorical(np.repeat(np.arange(10), 50))})
    m = ma.simulation_model("~ 1 + (1|g)", d, fixed={"Intercept": 0.4},
                            varcomp={"g": 0.0}, family="binomial")
    Y = m.simulate(40, 5)
    p = 1.0 / (1.0 + np.exp(-0.4))  # plogis(0.4)
    assert set(np.unique(Y)) <= {0.0, 1.0}
    assert abs(Y.mean() - p) < 4.0 * np.sqrt(p * (1 - p) / Y.size)
    mp = ma.simulation_model("~ 1 + (1|g)", d, fixed={"Intercept": 0.4},
                             varcomp={"g": 0.0}, family="poisson")
    Yp = mp.simulate(40, 5)
    lam = np.exp(0.4)  # Poisson mean exp(Intercept)
    assert abs(Yp.mean() - lam) < 4.0 * np.sqrt(lam / Yp.size)


def test_glmm_power_bad_input():
    m = _model()
    with pytest.raises(UnknownNameError, match="Wald z"):
        ma.power(m, "g", nsim=2)
    with pytest.raises(ArgumentError, match="family"):
        ma.simulation_model("~ x + (1|g)", m.data, fixed={"Intercept": 0, "x": 0},
                            varcomp={"g": 0.1}, family="gamma")
    with pytest.raises(ArgumentError, match="sigma"):
        ma.simulation_model("~ x + (1|g)", m.data, fixed={"Intercept": 0, "x": 0},
                            varcomp={"g": 0.1}, sigma=1.0, family="binomial")
