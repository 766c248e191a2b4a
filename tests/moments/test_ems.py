"""Classical EMS rules on textbook designs (no data).

Sources of the expected values:
* Montgomery, Design and Analysis of Experiments (8th ed.), ch. 13 "Experiments with
  random factors": sec. 13.5 "Rules for expected mean squares" (two-factor fixed
  model; two-factor mixed model, restricted and unrestricted; three-factor random
  model and the approximate F test of sec. 13.6) and ch. 14 (nested designs).
* Schultz (1955), "Rules of thumb for determining expectations of mean squares",
  Biometrics 11, 123-135 (the 0 / 1 / level-count table).
* The issue's three-stage nested example: 15 batches x 2 samples x 2 tests.
Every expected number below is typed from those sources, never computed by the
module under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mixedanova.moments.ems import Factor, ems_rules, subscript_table
from mixedanova.moments.ems_table import coef_column, error_terms, f_tests, format_ems
from mixedanova.moments.moments import moments_from_mean_squares, varcomp_ci


def coefs(table, source):
    """Nonzero EMS coefficients of a source as {component: k}."""
    out = {}
    for col in table.columns:
        if col.startswith("s2_") and table.at[source, col] != 0:
            out[col] = table.at[source, col]
    return out


# ---------------------------------------------------------------- fixed x fixed
def test_two_factor_fixed_rules_table():
    # Montgomery sec. 13.5, two-factor fixed effects model (a=3, b=4, n=2):
    # rows tau_i: 0 b n; beta_j: a 0 n; (tau beta)_ij: 0 0 n; eps_(ij)k: 1 1 1
    tab = subscript_table([Factor("A", 3), Factor("B", 4)], replicates=2)
    assert tab.loc["A"].tolist() == [0, 4, 2]
    assert tab.loc["B"].tolist() == [3, 0, 2]
    assert tab.loc["A:B"].tolist() == [0, 0, 2]
    assert tab.loc["Residual"].tolist() == [1, 1, 1]


def test_two_factor_fixed_ems():
    # Montgomery sec. 13.5: E(MS_A) = s2 + bn sum tau^2/(a-1), E(MS_B) = s2 + an sum beta^2/(b-1),
    # E(MS_AB) = s2 + n sum (tau beta)^2/((a-1)(b-1)), E(MS_E) = s2; every F test uses MS_E
    t = ems_rules([Factor("A", 3), Factor("B", 4)], replicates=2)
    assert list(t.index) == ["A", "B", "A:B", "Residual"]
    assert t["df"].tolist() == [2, 3, 6, 12]
    assert t["ems"].tolist() == ["s2_e + Q(A)", "s2_e + Q(B)", "s2_e + Q(A:B)", "s2_e"]
    assert t["Q_coef"].iloc[:3].tolist() == [8, 6, 2]  # bn, an, n
    assert t["Q"].tolist() == [True, True, True, False]
    for src in ["A", "B", "A:B"]:
        assert coefs(t, src) == {"s2_e": 1}
        assert t.at[src, "error_term"] == "Residual"
        assert t.at[src, "test"] == "exact"
        assert t.at[src, "den_df"] == 12


# ----------------------------------------------------- A fixed x B random (mixed)
MIXED = [Factor("A", 3), Factor("B", 4, random=True)]


def test_mixed_two_factor_restricted():
    # Montgomery sec. 13.3/13.5, restricted mixed model (a=3, b=4, n=2):
    # E(MS_A) = s2 + n s2_AB + bn sum tau^2/(a-1); E(MS_B) = s2 + an s2_B;
    # E(MS_AB) = s2 + n s2_AB; F_A = MS_A/MS_AB, F_B = MS_B/MS_E, F_AB = MS_AB/MS_E
    tab = subscript_table(MIXED, replicates=2, ems="restricted")
    assert tab.loc["A:B"].tolist() == [0, 1, 2]  # rule 3 restricted: fixed column -> 0
    t = ems_rules(MIXED, replicates=2, ems="restricted")
    assert t.at["A", "ems"] == "s2_e + 2 s2_A:B + Q(A)"
    assert t.at["A", "Q_coef"] == 8
    assert t.at["B", "ems"] == "s2_e + 6 s2_B"
    assert t.at["A:B", "ems"] == "s2_e + 2 s2_A:B"
    assert coefs(t, "B") == {"s2_B": 6, "s2_e": 1}
    assert [t.at[s, "error_term"] for s in ["A", "B", "A:B"]] == ["A:B", "Residual", "Residual"]
    assert [t.at[s, "den_df"] for s in ["A", "B", "A:B"]] == [6, 12, 12]


def test_mixed_two_factor_unrestricted():
    # Montgomery sec. 13.3 (unrestricted mixed model): E(MS_B) = s2 + n s2_AB + an s2_B,
    # so B is tested against MS_AB; A and AB as in the restricted model
    tab = subscript_table(MIXED, replicates=2, ems="unrestricted")
    assert tab.loc["A:B"].tolist() == [1, 1, 2]  # random row -> 1 for every live subscript
    t = ems_rules(MIXED, replicates=2)  # default is unrestricted
    assert t.attrs["ems_model"] == "unrestricted"
    assert t.at["A", "ems"] == "s2_e + 2 s2_A:B + Q(A)"
    assert t.at["B", "ems"] == "s2_e + 2 s2_A:B + 6 s2_B"
    assert t.at["A:B", "ems"] == "s2_e + 2 s2_A:B"
    assert [t.at[s, "error_term"] for s in ["A", "B", "A:B"]] == ["A:B", "A:B", "Residual"]


# ------------------------------------------------------ three random crossed (quasi-F)
RANDOM3 = [Factor("A", 4, random=True), Factor("B", 3, random=True), Factor("C", 5, random=True)]


def test_three_random_crossed_ems():
    # Montgomery sec. 13.6, three-factor random model (a=4, b=3, c=5, n=2):
    # E(MS_A) = s2 + n s2_ABC + cn s2_AB + bn s2_AC + bcn s2_A, etc.
    t = ems_rules(RANDOM3, replicates=2)
    assert coefs(t, "A") == {"s2_A": 30, "s2_A:B": 10, "s2_A:C": 6, "s2_A:B:C": 2, "s2_e": 1}
    assert coefs(t, "B") == {"s2_B": 40, "s2_A:B": 10, "s2_B:C": 8, "s2_A:B:C": 2, "s2_e": 1}
    # E(MS_C) = s2 + n s2_ABC + bn s2_AC + an s2_BC + abn s2_C
    assert coefs(t, "C") == {"s2_C": 24, "s2_A:C": 6, "s2_B:C": 8, "s2_A:B:C": 2, "s2_e": 1}
    assert coefs(t, "A:B") == {"s2_A:B": 10, "s2_A:B:C": 2, "s2_e": 1}
    assert coefs(t, "A:B:C") == {"s2_A:B:C": 2, "s2_e": 1}
    assert t["df"].tolist() == [3, 2, 4, 6, 12, 8, 24, 60]
    # no exact test for main effects: MS_AB + MS_AC - MS_ABC (Montgomery eq. 13.x, quasi-F)
    assert t.at["A", "error_term"] == "A:B + A:C - A:B:C"
    assert t.at["A", "test"] == "quasi-F (Satterthwaite)"
    assert t.at["C", "error_term"] == "A:C + B:C - A:B:C"
    assert t.at["A:B", "error_term"] == "A:B:C" and t.at["A:B", "test"] == "exact"
    assert error_terms(t)["A"] == {"A:B": 1.0, "A:C": 1.0, "A:B:C": -1.0}


def test_three_random_crossed_quasi_f_satterthwaite():
    # Montgomery sec. 13.6: F = MS_A / (MS_AB + MS_AC - MS_ABC) with
    # p = (MS_AB + MS_AC - MS_ABC)^2 / (MS_AB^2/f_AB + MS_AC^2/f_AC + MS_ABC^2/f_ABC)
    t = ems_rules(RANDOM3, replicates=2)
    ms = {"A": 50.0, "B": 20.0, "C": 30.0, "A:B": 8.0, "A:C": 6.0, "B:C": 4.0,
          "A:B:C": 3.0, "Residual": 1.0}
    out = f_tests(t, ms)
    den = 8.0 + 6.0 - 3.0
    nu = den**2 / (8.0**2 / 6 + 6.0**2 / 12 + 3.0**2 / 24)
    assert out.at["A", "F"] == pytest.approx(50.0 / den, rel=1e-6)
    assert out.at["A", "den_df"] == pytest.approx(nu, rel=1e-6)
    from scipy.stats import f as f_dist
    assert out.at["A", "p"] == pytest.approx(f_dist.sf(50.0 / den, 3, nu), rel=1e-6)
    # exact test of A:B against A:B:C
    assert out.at["A:B", "F"] == pytest.approx(8.0 / 3.0, rel=1e-6)
    assert out.at["A:B", "den_df"] == 24


def test_three_factor_mixed_restricted():
    # Montgomery sec. 13.6, three-factor mixed model, A fixed, B and C random, restricted:
    # E(MS_A) = s2 + n s2_ABC + cn s2_AB + bn s2_AC + Q(A)   (quasi-F)
    # E(MS_B) = s2 + an s2_BC + acn s2_B;  E(MS_AB) = s2 + n s2_ABC + cn s2_AB
    f = [Factor("A", 2), Factor("B", 3, random=True), Factor("C", 4, random=True)]
    t = ems_rules(f, replicates=2, ems="restricted")
    assert coefs(t, "A") == {"s2_A:B": 8, "s2_A:C": 6, "s2_A:B:C": 2, "s2_e": 1}
    assert t.at["A", "Q_coef"] == 24
    assert coefs(t, "B") == {"s2_B": 16, "s2_B:C": 4, "s2_e": 1}
    assert coefs(t, "B:C") == {"s2_B:C": 4, "s2_e": 1}
    assert coefs(t, "A:B") == {"s2_A:B": 8, "s2_A:B:C": 2, "s2_e": 1}
    assert t.at["A", "error_term"] == "A:B + A:C - A:B:C"
    assert t.at["B", "error_term"] == "B:C"


# -------------------------------------------------------------------- nesting
NESTED3 = [Factor("batch", 15, random=True),
           Factor("sample", 2, random=True, nested_in=("batch",))]


def test_three_stage_nested_ems():
    # issue's textbook table: 15 batches x 2 samples x 2 tests, all random:
    # E(MS_batch) = s2_e + 2 s2_sample + 4 s2_batch, E(MS_sample) = s2_e + 2 s2_sample,
    # E(MS_E) = s2_e
    t = ems_rules(NESTED3, replicates=2, naming="live")
    assert t["ems"].tolist() == ["s2_e + 2 s2_sample + 4 s2_batch", "s2_e + 2 s2_sample", "s2_e"]
    assert t["df"].tolist() == [14, 15, 30]
    assert t.at["batch", "error_term"] == "sample"
    assert t.at["sample", "error_term"] == "Residual"
    # lme4 naming of the same design
    t2 = ems_rules(NESTED3, replicates=2)
    assert t2.at["batch", "ems"] == "s2_e + 2 s2_batch:sample + 4 s2_batch"
    # the 0/1/levels table: dead subscript i in the sample row gets 1
    tab = subscript_table(NESTED3, replicates=2)
    assert tab.loc["batch:sample"].tolist() == [1, 1, 2]
    assert tab.loc["batch"].tolist() == [1, 2, 2]


def test_three_stage_nested_moments():
    # issue's textbook table: mean squares 86.495, 57.983, 0.917 give the moment
    # estimates s2_batch = (86.495 - 57.983)/4 = 7.128, s2_sample = (57.983 - 0.917)/2 = 28.533,
    # s2_e = 0.917
    t = ems_rules(NESTED3, replicates=2, naming="live")
    est = moments_from_mean_squares(t, {"batch": 86.495, "sample": 57.983, "Residual": 0.917})
    assert est.components == ("batch", "sample", "Residual")
    assert est.estimates["batch"] == pytest.approx(7.128, rel=1e-8)
    assert est.estimates["sample"] == pytest.approx(28.533, rel=1e-8)
    assert est.estimates["Residual"] == pytest.approx(0.917, rel=1e-8)
    # SE of (MS_batch - MS_sample)/4: sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2))  (issue, item 3)
    se = math.sqrt(2 * ((86.495 / 4) ** 2 / 16 + (57.983 / 4) ** 2 / 17))
    assert est.se["batch"] == pytest.approx(se, rel=1e-8)
    # Cochran-Satterthwaite df of the same combination
    ci = varcomp_ci(est, "s2_batch")
    nu = 7.128**2 / ((86.495 / 4) ** 2 / 14 + (57.983 / 4) ** 2 / 15)
    assert ci.df == pytest.approx(nu, rel=1e-8)


def test_fixed_a_random_b_nested():
    # Montgomery ch. 14, two-stage nested design, A fixed, B(A) random (a=3, b=4, n=2):
    # E(MS_A) = s2 + n s2_B + bn sum tau^2/(a-1); E(MS_B(A)) = s2 + n s2_B
    f = [Factor("A", 3), Factor("B", 4, random=True, nested_in=("A",))]
    for model in ("restricted", "unrestricted"):
        t = ems_rules(f, replicates=2, ems=model)
        assert t.at["A", "ems"] == "s2_e + 2 s2_A:B + Q(A)"
        assert t.at["A", "Q_coef"] == 8
        assert t.at["A:B", "ems"] == "s2_e + 2 s2_A:B"
        assert t["df"].tolist() == [2, 9, 12]  # a-1, a(b-1), ab(n-1)
        assert t.at["A", "error_term"] == "A:B"


def test_nested_and_crossed():
    # Montgomery ch. 14 (designs with nested and factorial factors): A fixed (a=2),
    # B fixed (b=3), C(B) random (c=4 per B), A x C(B) random, n=2.
    # Restricted: E(MS_B) = s2 + an s2_C(B) + Q(B); E(MS_A) = s2 + n s2_AC(B) + Q(A).
    # Unrestricted: the A x C(B) interaction also enters E(MS_B) with coefficient n.
    f = [Factor("A", 2), Factor("B", 3), Factor("C", 4, random=True, nested_in=("B",))]
    r = ems_rules(f, replicates=2, ems="restricted")
    u = ems_rules(f, replicates=2)
    assert list(u.index) == ["A", "B", "A:B", "B:C", "A:B:C", "Residual"]
    assert coefs(r, "B") == {"s2_B:C": 4, "s2_e": 1}
    assert coefs(u, "B") == {"s2_B:C": 4, "s2_A:B:C": 2, "s2_e": 1}
    assert coefs(r, "B:C") == {"s2_B:C": 4, "s2_e": 1}
    assert coefs(u, "B:C") == {"s2_B:C": 4, "s2_A:B:C": 2, "s2_e": 1}
    for t in (r, u):
        assert coefs(t, "A") == {"s2_A:B:C": 2, "s2_e": 1}
        assert coefs(t, "A:B") == {"s2_A:B:C": 2, "s2_e": 1}
        assert t["df"].tolist() == [1, 2, 2, 9, 9, 24]
        assert t.at["A", "error_term"] == "A:B:C"
    assert r.at["B", "error_term"] == "B:C"
    assert r.at["B:C", "error_term"] == "Residual"
    assert u.at["B:C", "error_term"] == "A:B:C"


# ------------------------------------------------------------------- helpers
def test_format_and_coef_column():
    # the EMS text convention of the issue: s2_e first, then inner components, then Q(term)
    assert coef_column("Residual") == "s2_e"
    assert coef_column("Block:Variety") == "s2_Block:Variety"
    text = format_ems({"Block": 0, "Block:Variety": 4, "Residual": 1}, "Variety")
    assert text == "s2_e + 4 s2_Block:Variety + Q(Variety)"


# ----------------------------------------------------------------- bad input
def test_term_without_its_parent_is_refused():
    with pytest.raises(ValueError, match=r"'sample'.*nested in batch"):
        ems_rules(NESTED3, terms=[("batch",), ("sample",)], replicates=2)


def test_unknown_factor_in_term():
    with pytest.raises(ValueError, match="unknown factor 'D'"):
        ems_rules(MIXED, terms=[("A",), ("D",)])


def test_bad_ems_option():
    with pytest.raises(ValueError, match="ems must be"):
        ems_rules(MIXED, ems="sas")


def test_circular_nesting():
    with pytest.raises(ValueError, match="circular nesting"):
        ems_rules([Factor("A", 2, nested_in=("B",)), Factor("B", 2, nested_in=("A",))])


def test_missing_mean_square():
    t = ems_rules(MIXED, replicates=2)
    with pytest.raises(ValueError, match=r"missing for source\(s\) \['A:B'\]"):
        f_tests(t, {"A": 1.0, "B": 1.0, "Residual": 1.0})


def test_zero_residual_df_gives_no_f():
    # one factor, one observation per level: N = 3, df_A = 2, residual df = N - 1 - 2 = 0,
    # so the (exact) test against the residual has no denominator df and no F
    t = ems_rules([Factor("A", 3)], replicates=1)
    assert t.at["Residual", "df"] == 0
    assert t.at["A", "error_term"] == "Residual"
    assert np.isnan(t.at["A", "F"])
