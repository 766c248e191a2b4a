"""Kenward-Roger tests in batch fits (issue 20: "Kenward-Roger on request").

Each response's Kenward-Roger table must be the one ``ma.lmm`` gives for that
response alone (pbkrtest's ``KRmodcomp`` / lmerTest's
``anova(m, ddf = "Kenward-Roger")`` and ``summary(m, ddf = "Kenward-Roger")``,
as ``ma.lmm`` computes them), to 1e-8.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

FORMULA = "~ condition + age + (1|donor)"


def _data(n=60, nd=12, seed=11) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    donor = np.arange(n) % nd
    data = pd.DataFrame({"donor": pd.Categorical([f"d{i:02d}" for i in donor]),
                         "condition": np.where(rng.integers(0, 3, n) == 1, "B",
                                               np.where(rng.integers(0, 2, n) == 1, "C", "A")),
                         "age": rng.normal(40, 10, n)})
    Y = (1.0 + 0.4 * (data["condition"] == "B").to_numpy()[:, None]
         + rng.normal(0, 0.7, (nd, 4))[donor] + rng.normal(size=(n, 4)))
    return data, Y


def _single(data, y):
    d = data.copy()
    d["yy"] = y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ma.lmm("yy" + FORMULA, d)


@pytest.mark.parametrize("prepared", [True, False])
def test_kenward_roger_anova_and_fixed_per_response(prepared):
    data, Y = _data()
    res = ma.lmm_many(FORMULA, data, Y, ddf="kenward-roger" if prepared else "satterthwaite")
    tab = res.anova(type=3, ddf="kenward-roger")
    assert list(tab.columns) == ["response", "term", "sum_sq", "mean_sq", "num_df", "den_df",
                                 "F", "p"]
    fixed = res.fixed(ddf="kenward-roger")
    for j in (0, 3):
        single = _single(data, Y[:, j])
        # lmerTest: anova(m, type = 3, ddf = "Kenward-Roger")
        ref = single.anova(type=3, ddf="kenward-roger")
        mine = tab[tab["response"] == j]
        assert list(mine["term"]) == list(ref.index)
        for col in ("F", "num_df", "den_df", "p"):
            np.testing.assert_allclose(mine[col].to_numpy(), ref[col].to_numpy(), rtol=1e-8,
                                       atol=1e-12)
        # lmerTest: summary(m, ddf = "Kenward-Roger")$coefficients
        rf = single.fixed("kenward-roger")
        mf = fixed[fixed["response"] == j]
        for col in ("std_err", "df", "p"):
            np.testing.assert_allclose(mf[col].to_numpy(), rf[col].to_numpy(), rtol=1e-8,
                                       atol=1e-12)


def test_kenward_roger_needs_reml():
    data, Y = _data()
    res = ma.lmm_many(FORMULA, data, Y[:, :2], method="ML", ddf="satterthwaite")
    with pytest.raises(ma.errors.ArgumentError, match="REML"):
        res.anova(ddf="kenward-roger")
