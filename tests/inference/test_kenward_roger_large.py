"""Kenward-Roger beyond 8,000 random effects (issue 11): component by component.

The random effects split into components that share no observation; the dense
algebra is done per component, so a grouping factor with many levels (or nested
factors) is no longer refused, and only a large crossed component is.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.errors import MixedAnovaError
from mixedanova.inference import kenward_roger
from _refdata import assert_close, fit_reference, load_reference


def test_one_way_with_9000_groups_is_the_exact_f_test():
    # Balanced one-way random model, a = 9000 groups x 2 (Q = 9000, refused before):
    # pbkrtest reproduces the exact test of the mean, KR df = a - 1 and
    # SE = sqrt(MS_A / (a n)) (the classical result; computed here from group means).
    # R: coef(summary(lmer(y ~ 1 + (1|g)), ddf = "Kenward-Roger"))
    rng = np.random.default_rng(5)
    a, n = 9000, 2
    g = np.repeat(np.arange(a), n)
    y = 3.0 + rng.normal(0, 1, a)[g] + rng.normal(0, 1, a * n)
    res = ma.lmm("y ~ 1 + (1|g)", pd.DataFrame({"g": g.astype(str), "y": y}))
    tab = res.fixed("kenward-roger")
    means = np.bincount(g, weights=y) / n
    ms_a = n * np.sum((means - y.mean()) ** 2) / (a - 1)
    assert_close(tab["df"], [a - 1], 1e-4, "KR df of the mean, balanced one-way")
    assert_close(tab["std_err"], [np.sqrt(ms_a / (a * n))], 1e-4, "KR SE of the mean")


def test_large_crossed_component_refused_with_reason(monkeypatch):
    # penicillin: 24 plates x 6 samples crossed -> one component of 30 random effects
    monkeypatch.setattr(kenward_roger, "_MAX_Q", 20)
    ref = load_reference("penicillin_crossed_reml")
    res = ma.lmm(ref["formula"], ma.load_dataset(ref["dataset"][:-4]))  # a fresh fit
    with pytest.raises(MixedAnovaError, match=r"30 x 30 .*satterthwaite"):
        res.fixed("kenward-roger")


def test_nested_components_below_the_limit(monkeypatch):
    # pastes: 10 batches, each with 3 casks -> 10 components of 4 random effects, so a
    # limit of 20 per component does not stop it; numbers still match pbkrtest.
    monkeypatch.setattr(kenward_roger, "_MAX_Q", 20)
    ref, res = fit_reference("pastes_nested_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = res.fixed("kenward-roger")
    # R: coef(summary(m, ddf = "Kenward-Roger"))[, c("df", "Std. Error")]
    assert_close(tab["df"], ref["fixed"]["df_kenward_roger"], 1e-3, "pastes: KR df")
    assert_close(tab["std_err"], ref["fixed"]["se_kenward_roger"], 1e-3, "pastes: KR SE")
