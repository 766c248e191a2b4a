"""Variance components from a published ANOVA table (no raw data).

The pigment paste study (Box, Hunter & Hunter, Statistics for Experimenters, 2nd ed.,
ch. 9: 15 batches x 2 samples x 2 tests) is known by its table: mean squares 86.495,
57.983, 0.917 on 14, 15, 30 df; the textbook's components are 7.128 (batches), 28.533
(samples), 0.917 (tests).  The expected values below are those published numbers and
hand formulas evaluated here with scipy, not the package's output.
"""
from __future__ import annotations

import math

import pytest
from scipy import stats

import mixedanova as ma
from mixedanova.moments.ems import Factor, ems_rules
from mixedanova.moments.published import ems_table_from_text, parse_ems

PIGMENT = {
    "batch": (14, 86.495, "s2_e + 2 s2_sample + 4 s2_batch"),
    "sample": (15, 57.983, "s2_e + 2 s2_sample"),
    "test": (30, 0.917, "s2_e"),
}


def _cs_interval(coefs_ms_df, level=0.95):
    """Cochran-Satterthwaite interval of sum a_i MS_i by hand."""
    est = sum(a * ms for a, ms, _ in coefs_ms_df)
    nu = est**2 / sum((a * ms) ** 2 / df for a, ms, df in coefs_ms_df)
    lo = nu * est / stats.chi2.ppf(1 - (1 - level) / 2, nu)
    hi = nu * est / stats.chi2.ppf((1 - level) / 2, nu)
    return est, nu, lo, hi


def test_pigment_estimates_ses_and_intervals():
    table = ems_table_from_text(PIGMENT)
    assert list(table.index) == ["batch", "sample", "Residual"]
    assert table["df"].tolist() == [14, 15, 30]
    mom = ma.moments_from_mean_squares(table)
    # textbook components
    assert mom.estimates.round(3).tolist() == [7.128, 28.533, 0.917]
    # SE: sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2))
    se_batch = math.sqrt(2 * ((86.495 / 4) ** 2 / 16 + (57.983 / 4) ** 2 / 17))
    se_sample = math.sqrt(2 * ((57.983 / 2) ** 2 / 17 + (0.917 / 2) ** 2 / 32))
    se_e = math.sqrt(2 * 0.917**2 / 32)
    assert mom.se.tolist() == pytest.approx([se_batch, se_sample, se_e], rel=1e-10)
    vc = mom.varcomp()
    for comp, parts in (("batch", [(0.25, 86.495, 14), (-0.25, 57.983, 15)]),
                        ("sample", [(0.5, 57.983, 15), (-0.5, 0.917, 30)]),
                        ("Residual", [(1.0, 0.917, 30)])):
        est, nu, lo, hi = _cs_interval(parts)
        assert vc.at[comp, "estimate"] == pytest.approx(est, rel=1e-10)
        assert vc.at[comp, "df"] == pytest.approx(nu, rel=1e-10)
        assert (vc.at[comp, "lower"], vc.at[comp, "upper"]) == pytest.approx((lo, hi), rel=1e-10)
    # residual: exact chi-square interval on 30 df
    assert vc.at["Residual", "lower"] == pytest.approx(30 * 0.917 / stats.chi2.ppf(0.975, 30))
    # total variance of one test: s2_batch + s2_sample + s2_e = (MS_b + MS_s + 2 MS_e) / 4
    tot = mom.ci("s2_batch + s2_sample + s2_e")
    est, nu, lo, hi = _cs_interval([(0.25, 86.495, 14), (0.25, 57.983, 15), (0.5, 0.917, 30)])
    assert (tot.estimate, tot.df, tot.lower, tot.upper) == pytest.approx((est, nu, lo, hi))


def test_pigment_f_tests_follow_from_the_ems():
    table = ems_table_from_text(PIGMENT)
    # batches tested against samples, samples against tests
    assert table.at["batch", "error_term"] == "sample"
    assert table.at["batch", "F"] == pytest.approx(86.495 / 57.983)
    assert table.at["batch", "p"] == pytest.approx(stats.f.sf(86.495 / 57.983, 14, 15))
    assert table.at["sample", "F"] == pytest.approx(57.983 / 0.917)


def test_same_answer_as_the_rules_table():
    # the balanced-design rules give the same EMS, hence the same estimates
    rules = ems_rules([Factor("batch", 15, random=True),
                       Factor("sample", 2, random=True, nested_in=("batch",))],
                      replicates=2, naming="live")
    a = ma.moments_from_mean_squares(rules, {"batch": 86.495, "sample": 57.983,
                                             "Residual": 0.917})
    b = ma.moments_from_mean_squares(ems_table_from_text(PIGMENT))
    assert a.estimates.tolist() == pytest.approx(b.estimates.tolist(), rel=1e-12)
    assert a.se.tolist() == pytest.approx(b.se.tolist(), rel=1e-12)


def test_dataframe_input_and_fixed_source():
    import pandas as pd
    # a mixed two-way table: A fixed (Q), B random, AB random, 3 x 4 x 2
    df = pd.DataFrame({"df": [2, 3, 6, 12], "mean_sq": [50.0, 20.0, 8.0, 2.0],
                       "ems": ["s2_e + 2 s2_AB + Q(A)", "s2_e + 2 s2_AB + 6 s2_B",
                               "s2_e + 2 s2_AB", "s2_e"]}, index=["A", "B", "AB", "Error"])
    t = ema = ems_table_from_text(df)
    assert list(t.index) == ["A", "B", "AB", "Residual"]
    assert t.at["A", "error_term"] == "AB"
    mom = ma.moments_from_mean_squares(ema)
    assert mom.estimates.tolist() == pytest.approx([(20 - 8) / 6, (8 - 2) / 2, 2.0])


def test_parse_ems():
    assert parse_ems("s2_e + 2*s2_sample + 4 s2_batch") == (
        {"Residual": 1.0, "sample": 2.0, "batch": 4.0}, None)
    assert parse_ems("s2_e + 3 s2_AB + Q(A)") == ({"Residual": 1.0, "AB": 3.0}, "A")


@pytest.mark.parametrize("bad, match", [
    ({"batch": (14, 86.5, "s2_e + 2 s2_sample")}, "no residual row"),
    ({"batch": (14, 86.5, "s2_e + four s2_batch"), "e": (30, 1.0, "s2_e")}, "cannot read"),
    ({"batch": (14, -1, "s2_e + 4 s2_batch"), "e": (30, 1.0, "s2_e")}, "'batch'.*mean square"),
    ({"batch": (14, 86.5, "s2_e + 2 s2_cask + 4 s2_batch"), "e": (30, 1.0, "s2_e")},
     "s2_cask are estimated by no source"),
    ({"batch": (14, 86.5, "s2_e + 4 s2_lot"), "lot": (3, 2.0, "s2_e + 2 s2_lot"),
      "e": (30, 1.0, "s2_e")}, "'batch'.*own component"),
])
def test_bad_tables_name_the_source(bad, match):
    with pytest.raises(ma.MixedAnovaError, match=match):
        ems_table_from_text(bad)
