"""Text rendering of ANOVA / EMS tables (mixedanova.report.summary_anova)."""
from __future__ import annotations

import pandas as pd

import mixedanova.datasets
from mixedanova.moments.moments import fit_anova, varcomp_table
from mixedanova.report.summary_anova import render_ems_table, render_varcomp

DATA = mixedanova.datasets.data_dir()


def load(name):
    return pd.read_csv(DATA / f"{name}.csv")


def test_render_balanced_split_plot():
    st = fit_anova(load("oats"), "yield", [("Variety",), ("nitro_f",), ("Variety", "nitro_f")],
                   [("Block",), ("Block", "Variety")])
    text = render_ems_table(st.table)
    assert text.splitlines()[0] == "ANOVA table, EMS rules (balanced), unrestricted mixed model"
    # the EMS text of the R reference oats_splitplot_reml `ems` (Block row)
    assert "s2_e + 4 s2_Block:Variety + 12 s2_Block" in text
    assert "Q(term): quadratic form" in text
    vc = render_varcomp(varcomp_table(st))
    assert "Block:Variety" in vc and "95% lower" in vc


def test_render_says_method3_and_why():
    pen = load("penicillin").iloc[1:]
    st = fit_anova(pen, "diameter", [], [("plate",), ("sample",)])
    text = render_ems_table(st.table, note=st.note)
    assert "Henderson Method III (Type I SS)" in text.splitlines()[0]
    assert "1 empty" in text
    assert "Quasi-F (Satterthwaite denominator df) for: plate" in text


def test_render_flags_negative_estimate():
    d = load("dyestuff2")
    st = fit_anova(d, "Yield", [], [("Batch",)])
    vc = render_varcomp(varcomp_table(st))
    # R reference dyestuff2_reml moments: estimate -1.321912768 set to 0
    assert "negative estimate -1.3219 set to 0" in vc
