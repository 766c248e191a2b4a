"""Responses outside the family's support: the package's own error naming the column
(R: glmer's family$initialize / validmu errors, e.g. "non-positive values not
allowed for the 'Gamma' family", "negative values not allowed for the negative
binomial family")."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


def _frame(values, n=40):
    rng = np.random.default_rng(1)
    return pd.DataFrame({"resp": np.resize(np.asarray(values, dtype=object), n),
                         "x": rng.normal(size=n), "g": np.repeat(list("abcdefgh"), n // 8)})


@pytest.mark.parametrize("family,values,match", [
    ("Gamma", [1.0, 2.0, 0.0, 3.0], "positive"),
    ("Gamma", [1.0, -2.0, 0.5, 3.0], "positive"),
    ("inverse.gaussian", [1.0, 2.0, 0.0, 3.0], "positive"),
    ("negative_binomial", [1, 2, -1, 3], "whole counts"),
    ("nbinom2", [1, 2, 2.5, 3], "whole counts"),
    ("poisson", [1, 2, 2.5, 3], "whole counts"),
    ("binomial", [0, 1, 1.5, 0], r"\[0, 1\]"),
])
def test_support_errors_name_the_column(family, values, match):
    d = _frame(values).astype({"resp": float})
    with pytest.raises(ma.DesignError, match=match) as info:
        ma.glmm("resp ~ x + (1|g)", d, family=family)
    assert "'resp'" in str(info.value)


def test_proportion_outside_0_1_with_weights():
    # glmer(prop ~ ..., weights = n, binomial): "y values must be 0 <= y <= 1"
    d = _frame([0.2, 0.5, 1.2, 0.0]).astype({"resp": float}).assign(n=10)
    with pytest.raises(ma.DesignError, match=r"'resp'.*\[0, 1\]"):
        ma.glmm("resp ~ x + (1|g)", d, weights="n")


def test_binomial_response_with_three_levels():
    # glmer(factor with 3 levels ~ ..., binomial) treats levels 2+ as success; here an error
    d = _frame(["lo", "mid", "hi", "lo"])
    with pytest.raises(ma.DesignError, match=r"'resp' has 3 levels"):
        ma.glmm("resp ~ x + (1|g)", d)


@pytest.mark.parametrize("family", ["poisson", "Gamma", "negative_binomial"])
def test_text_response_for_a_count_or_positive_family(family):
    d = _frame(["lo", "hi"])
    with pytest.raises(ma.DesignError, match=r"'resp' must be numeric"):
        ma.glmm("resp ~ x + (1|g)", d, family=family)


def test_cbind_is_for_the_binomial_family():
    d = _frame([1, 2]).astype({"resp": float}).assign(f=3.0)
    with pytest.raises(ma.DesignError, match="cbind"):
        ma.glmm("cbind(resp, f) ~ x + (1|g)", d, family="poisson")


def test_negative_trials_in_cbind_are_refused():
    d = _frame([1, 2]).astype({"resp": float}).assign(f=-1.0)
    with pytest.raises(ma.DesignError, match="'f'"):
        ma.glmm("cbind(resp, f) ~ x + (1|g)", d)
