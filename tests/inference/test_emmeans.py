"""Estimated marginal means and pairwise comparisons against
tests/reference/oats_emmeans.json and oats_unbalanced_emmeans.json (emmeans 1.8.4)."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from _refdata import assert_close, load_reference

_SPECS = {"variety": "Variety", "nitro": "nitro_f", "variety_by_nitro": "Variety | nitro_f"}
_COLS = {"SE": "SE", "df": "df", "lower.CL": "lower_CL", "upper.CL": "upper_CL",
         "t.ratio": "t_ratio", "p.value": "p_value"}
_FITS = {}


def _fit(case):
    if case not in _FITS:
        ref = load_reference(case)
        _FITS[case] = (ref, ma.lmm(ref["formula"], ma.load_dataset(ref["dataset"][:-4])))
    return _FITS[case]


def _tables():
    for case in ("oats_emmeans", "oats_unbalanced_emmeans"):
        ref = load_reference(case)
        for block in ("satterthwaite", "kenward_roger"):
            for name in ref[block]:
                yield case, block, name


@pytest.mark.parametrize("case,block,name", list(_tables()))
def test_emmeans_table(case, block, name):
    ref, res = _fit(case)
    tab = ref[block][name]  # tab["r_call"], e.g. summary(pairs(emmeans(fit, ~ Variety), adjust = 'tukey'), infer = TRUE)
    ddf = block.replace("_", "-")
    if name.startswith("emmeans_"):
        got = res.emmeans(_SPECS[name[len("emmeans_"):]], ddf=ddf)
        est = "emmean"
        for col in tab["column_order"][:len(tab["column_order"]) - 7]:
            assert list(got[col]) == tab["columns"][col]
    else:
        key, adjust = name[len("pairs_"):].rsplit("_", 1)
        got = res.emmeans(_SPECS[key], ddf=ddf).pairs(adjust=adjust)
        est = "estimate"
        assert list(got["contrast"]) == tab["columns"]["contrast"]
        for by in tab["by"] or []:
            assert list(got[by]) == tab["columns"][by]
    cols = tab["columns"]
    assert_close(got[est], cols[tab["estimate_column"]], 1e-6, f"{name} estimate", atol=1e-9)
    assert_close(got["SE"], cols["SE"], 1e-4, f"{name} SE")
    assert_close(got["df"], cols["df"], 1e-3, f"{name} df")
    assert_close(got["lower_CL"], cols["lower.CL"], 1e-5, f"{name} lower.CL")
    assert_close(got["upper_CL"], cols["upper.CL"], 1e-5, f"{name} upper.CL")
    assert_close(got["t_ratio"], cols["t.ratio"], 1e-4, f"{name} t.ratio")
    # R's ptukey(lower.tail = FALSE) is 1 minus its lower-tail integral, accurate to
    # about 1e-12 absolute: tiny Tukey p values (4e-12 here) differ in that digit
    atol = 1e-11 if name.endswith("_tukey") else 0.0
    assert_close(got["p_value"], cols["p.value"], 1e-3, f"{name} p.value", atol=atol)


def test_emmeans_notes_and_by_argument():
    ref, res = _fit("oats_emmeans")
    a = res.emmeans("Variety", by="nitro_f")
    b = res.emmeans("~ Variety | nitro_f")
    assert np.allclose(a["emmean"], b["emmean"])
    ours = res.emmeans("Variety").notes
    theirs = ref["satterthwaite"]["emmeans_variety"]["emmeans_messages"]
    assert ours == theirs


def test_pairs_holm_and_custom_contrast():
    ref, res = _fit("oats_emmeans")
    em = res.emmeans("nitro_f")
    none = em.pairs(adjust="none")
    holm = em.pairs(adjust="holm")
    bonf = em.pairs(adjust="bonferroni")
    # Holm: step-down on the sorted raw p values, never above Bonferroni
    p = none["p_value"].to_numpy()
    order = np.argsort(p)
    m = len(p)
    expect = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    assert np.allclose(holm["p_value"].to_numpy()[order], expect)
    assert np.all(holm["p_value"] <= bonf["p_value"] + 1e-15)
    assert np.allclose(holm["lower_CL"], bonf["lower_CL"])  # intervals: Bonferroni
    # a custom linear trend over the four nitrogen means
    c = em.contrast({"linear": [-3, -1, 1, 3]})
    assert c["estimate"].iloc[0] == pytest.approx(
        float(np.dot([-3, -1, 1, 3], em["emmean"])), rel=1e-12)
    with pytest.raises(ma.MixedAnovaError, match="pairwise"):
        em.contrast({"linear": [-3, -1, 1, 3]}, adjust="tukey")
    with pytest.raises(ma.MixedAnovaError, match="4 coefficients"):
        em.contrast({"bad": [1, -1]})
    with pytest.raises(ma.MixedAnovaError, match="adjust must be one of"):
        em.pairs(adjust="scheffe")


def test_emmeans_bad_specs():
    ref, res = _fit("oats_emmeans")
    with pytest.raises(ma.DesignError, match="'Block' is not a variable of the fixed part"):
        res.emmeans("Block")
    with pytest.raises(ma.DesignError, match="at= names 'x'"):
        res.emmeans("Variety", at={"x": 1})


def test_tables_fit_80_columns_and_keep_their_notes():
    # issue 22: at pandas' default width pairs() hid its p values and dropped emmeans'
    # "P value adjustment" note; every column is shown, wrapped at 80 characters
    ref, res = _fit("oats_emmeans")
    for table in (res.emmeans("Variety"), res.emmeans("Variety", by="nitro_f"),
                  res.emmeans("Variety").pairs(), res.emmeans("Variety").pairs("holm")):
        text = repr(table)
        assert max(len(line) for line in text.splitlines()) <= 80
        for col in table.columns:
            assert col in text
    text = repr(res.emmeans("Variety").pairs())
    # emmeans 1.8.4: pairs(emmeans(m, ~ Variety))
    assert "P value adjustment: tukey method for comparing a family of 3 estimates" in text
    assert " 10 " in text  # Satterthwaite df 10.000003, rounded for display only
    text = repr(res.emmeans("Variety").pairs("bonferroni"))
    assert "P value adjustment: bonferroni method for 3 tests" in text
