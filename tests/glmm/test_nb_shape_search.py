"""Negative binomial shape where the Poisson start gives an infinite theta.ml.

tests/reference/glmm_nb_plateau.json (tests/reference/r/glmm_nb_plateau.R): the
random intercept absorbs the overdispersion of the Poisson fit, so MASS's
``theta.ml`` at its means runs to its limit; from there the profile over the
shape is flat to rounding.  glmer.nb stops at shape ~137; the joint optimum of
the same Laplace likelihood is at ~75 (glmer at fixed shapes and glmmTMB's
nbinom2 fit agree on it).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

import mixedanova as ma

HERE = Path(__file__).resolve().parents[1]
REF = json.loads((HERE / "reference" / "glmm_nb_plateau.json").read_text())
DATA = pd.read_csv(HERE / "data" / "glmm" / "nb_plateau.csv")
F = "y ~ x + (1 | g)"


def _fit(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ma.glmm(F, DATA, family="negative_binomial", **kw)


def test_shape_search_leaves_the_plateau():
    res = _fit()
    fixed = REF["glmer_fixed_shape"]
    assert res.converged
    assert 60 < res.family.param < 90
    # -2 * logLik(glmer(y ~ x + (1|g), family = negative.binomial(75))): the
    # profile at 75 is within 1e-3 of ours (our shape is the profile's minimum)
    assert res.minus_2_loglik <= fixed["m2ll"][1] + 1e-6
    assert res.minus_2_loglik == pytest.approx(fixed["m2ll"][1], abs=1e-3)
    # below -2 * logLik(glmer.nb(y ~ x + (1|g))), which stops at shape ~137
    assert res.minus_2_loglik < REF["glmer_nb"]["m2ll"] - 0.05


@pytest.mark.slow  # ~9 s: the observed-information fit has no analytic gradient
def test_observed_information_matches_glmmtmb():
    res = _fit(information="observed")
    tmb = REF["glmmTMB"]
    # -2 * logLik(glmmTMB(y ~ x + (1|g), family = nbinom2)), sigma(m) the shape
    assert res.minus_2_loglik == pytest.approx(tmb["m2ll"], abs=1e-5)
    assert res.family.param == pytest.approx(tmb["shape"], rel=1e-3)
    # fixef(m)$cond
    assert res.fe_params.to_numpy() == pytest.approx(tmb["beta"], rel=1e-4)
