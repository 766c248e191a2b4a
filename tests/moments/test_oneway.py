"""One-way random model closed forms (mixedanova.moments.oneway).

Formulas: Searle, Casella & McCulloch, Variance Components (1992), sec. 3.5-3.6
(ANOVA estimators for unbalanced one-way data) and the GLS mean of the one-way model.
Balanced values come from R (tests/reference/dyestuff*_reml.json, `moments`); unbalanced
values are computed here by hand with plain numpy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova.datasets
from mixedanova.moments.moments import fit_anova
from mixedanova.moments.oneway import oneway

REF = Path(__file__).resolve().parent.parent / "reference"
DATA = mixedanova.datasets.data_dir()


def load(name):
    return pd.read_csv(DATA / f"{name}.csv")


def unbalanced_dyestuff():
    return load("dyestuff").drop(index=[0, 1, 7, 8, 9, 13, 22]).reset_index(drop=True)


@pytest.mark.parametrize("case,name", [("dyestuff_reml", "dyestuff"),
                                       ("dyestuff2_reml", "dyestuff2"), ("rail_reml", "rail")])
def test_balanced_matches_r_moments(case, name):
    ref = json.loads((REF / f"{case}.json").read_text())
    d = load(name)
    y, g = ref["formula"].split("~")[0].strip(), next(iter(ref["n_groups"]))
    res = oneway(d[y], d[g])
    mom = ref["moments"]["estimates"]
    # R reference `moments$estimates` (equating MS to EMS of aov(y ~ 1 + Error(g)))
    assert res.s2_e == pytest.approx(mom["Residual"], rel=1e-8)
    assert res.s2_a_raw == pytest.approx(mom[g], rel=1e-8)
    truncated = ref["moments"]["estimates_truncated_at_zero"][g]
    assert res.s2_a == pytest.approx(truncated, rel=1e-8, abs=0)
    assert res.negative == (mom[g] < 0)
    # balanced: n0 is the common group size and the weighted mean is the grand mean
    assert res.n0 == pytest.approx(ref["nobs"] / ref["n_groups"][g], rel=1e-12)
    assert res.weighted_mean == pytest.approx(d[y].mean(), rel=1e-12)


def test_unbalanced_by_hand():
    # s2_A = (S^2 - s2_e) n (J-1) / (n^2 - sum n_j^2), S^2 = sum n_j (ybar_j - ybar)^2/(J-1)
    d = unbalanced_dyestuff()
    groups = [g.to_numpy(float) for _, g in d.groupby("Batch")["Yield"]]
    nj = np.array([len(g) for g in groups], float)
    n, big_j = nj.sum(), len(groups)
    means = np.array([g.mean() for g in groups])
    ybar = np.concatenate(groups).mean()
    s2 = np.sum(nj * (means - ybar) ** 2) / (big_j - 1)
    s2_e = sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - big_j)
    s2_a = (s2 - s2_e) * n * (big_j - 1) / (n**2 - np.sum(nj**2))
    res = oneway(d["Yield"], d["Batch"])
    assert res.nobs == 23 and res.n_groups == 6
    assert res.group_sizes.tolist() == nj.astype(int).tolist()
    assert res.ms_between == pytest.approx(s2, rel=1e-10)
    assert res.s2_e == pytest.approx(s2_e, rel=1e-10)
    assert res.s2_a == pytest.approx(s2_a, rel=1e-10)
    # weighted mean: weights (s2_A + s2_e/n_j)^-1, SE = (sum w_j)^(-1/2)
    w = 1.0 / (s2_a + s2_e / nj)
    assert res.weighted_mean == pytest.approx(np.sum(w * means) / np.sum(w), rel=1e-10)
    assert res.weighted_mean_se == pytest.approx(1 / math.sqrt(np.sum(w)), rel=1e-10)
    assert res.weights.sum() == pytest.approx(1.0, rel=1e-12)


def test_weighted_mean_is_gls():
    # GLS of mu with V = s2_A Z Z' + s2_e I (explicit n x n matrices), at the ANOVA estimates
    d = unbalanced_dyestuff()
    res = oneway(d["Yield"], d["Batch"])
    z = (d["Batch"].to_numpy()[:, None] == np.unique(d["Batch"])[None, :]).astype(float)
    v = res.s2_a * z @ z.T + res.s2_e * np.eye(len(d))
    vinv_1 = np.linalg.solve(v, np.ones(len(d)))
    mu = vinv_1 @ d["Yield"].to_numpy(float) / vinv_1.sum()
    assert res.weighted_mean == pytest.approx(mu, rel=1e-10)
    assert res.weighted_mean_se == pytest.approx(1 / math.sqrt(vinv_1.sum()), rel=1e-10)


@pytest.mark.parametrize("maker", [lambda: load("dyestuff"), unbalanced_dyestuff,
                                   lambda: load("dyestuff2")])
def test_agrees_with_fit_anova(maker):
    # issue item 5: the closed forms agree with method="ANOVA" on one-way data
    d = maker()
    res = oneway(d["Yield"], d["Batch"])
    st = fit_anova(d, "Yield", [], [("Batch",)])
    assert st.estimates["Residual"] == pytest.approx(res.s2_e, rel=1e-10)
    assert st.estimates["Batch"] == pytest.approx(res.s2_a_raw, rel=1e-10)
    assert st.estimates_truncated["Batch"] == pytest.approx(res.s2_a, rel=1e-10, abs=1e-12)
    assert st.table.at["Batch", "mean_sq"] == pytest.approx(res.ms_between, rel=1e-10)
    assert st.table.at["Batch", "s2_Batch"] == pytest.approx(res.n0, rel=1e-10)


def test_negative_estimate_truncated():
    # R reference dyestuff2_reml: moments estimate -1.321912768 -> 0; weights then ~ n_j
    d = load("dyestuff2")
    res = oneway(d["Yield"], d["Batch"])
    assert res.negative and res.s2_a == 0
    assert res.s2_a_raw == pytest.approx(-1.321912768, rel=1e-8)
    assert res.weighted_mean_se == pytest.approx(math.sqrt(res.s2_e / 30), rel=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match="y has 3 values but group has 2"):
        oneway([1.0, 2.0, 3.0], ["a", "b"])
    with pytest.raises(ValueError, match="y has 1 missing value"):
        oneway([1.0, np.nan, 3.0, 4.0], ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="group has 1 missing label"):
        oneway([1.0, 2.0, 3.0, 4.0], ["a", None, "b", "b"])
    with pytest.raises(ValueError, match="at least 2 groups"):
        oneway([1.0, 2.0], ["a", "a"])
    with pytest.raises(ValueError, match="no within-group degrees of freedom"):
        oneway([1.0, 2.0], ["a", "b"])
