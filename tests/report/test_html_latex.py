"""HTML and LaTeX forms of the reports, and readable reprs (issue 13).

The numbers shown are lme4's for sleepstudy (tests/reference/sleepstudy_reml.json:
``REMLcrit(m)``, ``VarCorr(m)``) and base R's ``aov()`` for the penicillin blocks.
"""
from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser

import pytest

import mixedanova as ma
from _refdata import load_reference

# lme4: as.data.frame(VarCorr(m))$vcov[1] of sleepstudy
REF_VAR = next(r["vcov"] for r in load_reference("sleepstudy_reml")["varcorr"]
               if r["var1"] == "(Intercept)" and r["var2"] is None)


class _Tables(HTMLParser):
    """Counts tables and collects cell texts; fails on unbalanced tags."""

    def __init__(self):
        super().__init__()
        self.stack, self.tables, self.cells, self._cell = [], 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("br",):
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables += 1
        if tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()
        if tag in ("td", "th"):
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    p.close()
    assert not p.stack
    return p


@pytest.fixture(scope="module")
def blocks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"),
                      method="ANOVA")


def test_summary_html(sleepstudy_fit):
    html = sleepstudy_fit.summary().as_html()
    assert sleepstudy_fit._repr_html_() == html == sleepstudy_fit.summary()._repr_html_()
    p = _parse(html)
    assert p.tables == 4  # criteria, scaled residuals, random effects, fixed effects
    assert "1743.6283" in p.cells          # lme4: REMLcrit(m)
    # VarCorr(m): the subject intercept variance follows its name cell, then the SD
    i = p.cells.index("(Intercept)", p.cells.index("Corr"))
    assert float(p.cells[i + 1]) == pytest.approx(REF_VAR, rel=1e-4)
    assert "0.07" in p.cells  # the correlation, 2 decimals as lme4 prints it
    assert "Days" in p.cells


def test_summary_text_is_the_print(sleepstudy_fit):
    s = sleepstudy_fit.summary()
    assert s.as_text() == str(s)


def test_summary_latex(sleepstudy_fit):
    tex = sleepstudy_fit.summary().as_latex()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 3
    assert r"Reaction \textasciitilde{} Days + (Days\textbar{}Subject)" in tex
    m = re.search(r"Subject & \(Intercept\) & ([0-9.]+) & ([0-9.]+)", tex)
    assert float(m.group(1)) == pytest.approx(REF_VAR, rel=1e-4)
    # every & outside tabular rows is escaped: no stray specials in the text lines
    body = [ln for ln in tex.splitlines() if "&" in ln]
    assert all(ln.rstrip().endswith(r"\\") for ln in body)


def test_anova_summary_html_has_ems_tables(blocks):
    p = _parse(blocks.summary().as_html())
    assert p.tables == 6
    assert "s2_e + 4 s2_blend" in p.cells
    # base R: summary(aov(yield ~ blend + treat))  F of blend
    assert "3.5044" in p.cells
    tex = blocks.summary().as_latex()
    assert tex.count(r"\begin{tabular}") == 5 and "s2\\_e + 4 s2\\_blend" in tex


def test_ems_and_anova_tables_display_with_heading(blocks, sleepstudy_fit):
    t = blocks.ems_table()
    assert t.attrs["method"] == "EMS rules (balanced)"
    html = t._repr_html_()
    assert html.startswith("<style>")  # the reports' style sheet, then the heading
    assert "<p><b>ANOVA table, EMS rules (balanced), unrestricted mixed model" in html
    _parse(html)
    assert "ANOVA table" in repr(t[["df", "ems"]])  # slices keep the heading
    a = sleepstudy_fit.anova()
    assert "Type III Analysis of Variance Table with Satterthwaite" in a._repr_html_()


def test_oneway_and_moments_print_readably():
    d = ma.load_dataset("dyestuff2")
    ow = ma.oneway(d["Yield"], d["Batch"])
    text = repr(ow)
    assert not text.startswith("OnewayResult(")
    assert re.search(r"s2_a \(raw\)\s+-1\.32", text)  # aov(): negative estimate
    assert "Groups:" in text and "<table" in ow._repr_html_()
    mom = ma.moments_from_mean_squares(ma.ems_table_from_text({
        "batch": (14, 86.495, "s2_e + 2 s2_sample + 4 s2_batch"),
        "sample": (15, 57.983, "s2_e + 2 s2_sample"), "test": (30, 0.917, "s2_e")}))
    assert repr(mom).startswith("MomentEstimates\n") and "28.533" in repr(mom)
    assert "<table" in mom._repr_html_()
