"""The HTML of an lmm, an ANOVA (``method="ANOVA"``) and a GLMM summary is
styled alike (issue 22): the reports' embedded style sheet (borders, numbers
right-aligned with tabular figures so decimals line up), number cells
right-aligned and text cells left-aligned, and the significance legend that
the text form prints (R's ``printCoefmat`` "Signif. codes" line).

The numbers are R's: lme4 ``summary(lmer(Reaction ~ Days + (Days|Subject)))``,
base R ``summary(aov(yield ~ blend + treat))`` for the penicillin blocks and
lme4 ``summary(glmer(cbind(incidence, size - incidence) ~ period + (1|herd),
cbpp, binomial))`` (tests/reference/glmm_cbpp_laplace.json).
"""
from __future__ import annotations

import json
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import mixedanova as ma

TESTS = Path(__file__).resolve().parents[1]
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^< ?2(\.2)?e-16$")


class _Cells(HTMLParser):
    """Cells as (tag, css class, text), and the style sheet's text."""

    def __init__(self):
        super().__init__()
        self.cells, self.style, self._cell, self._in_style = [], "", None, False
        self.legend = ""
        self._in_legend = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("td", "th"):
            self._cell = [tag, a.get("class", ""), ""]
        self._in_style = tag == "style"
        self._in_legend = tag == "p" and a.get("class") == "legend"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None
        self._in_style = self._in_legend = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data
        if self._in_style:
            self.style += data
        if self._in_legend:
            self.legend += data


def _parse(html: str) -> _Cells:
    p = _Cells()
    p.feed(html)
    return p


def _rules(style: str) -> dict[str, str]:
    """``{selector: declarations}`` of a style sheet."""
    return {sel.strip(): body for sels, body in re.findall(r"([^{}]+)\{([^}]*)\}", style)
            for sel in sels.split(",")}


def _check_styled(html: str, what: str) -> _Cells:
    p = _parse(html)
    rules = _rules(p.style)
    td = rules.get(".mixedanova-summary td", "")
    assert "text-align: right" in td and "border" in td, f"{what}: cells not right-aligned/bordered"
    assert "tabular-nums" in rules.get(".mixedanova-summary table", ""), what
    assert "text-align: left" in rules.get(".mixedanova-summary td.l", ""), what
    # every number cell is right-aligned (no left class); first column is the row label
    body = [c for c in p.cells if c[0] == "td"]
    numbers = [c for c in body if _NUMBER.match(c[2].strip())]
    assert len(numbers) > 10, what
    assert all("l" not in c[1].split() for c in numbers), \
        f"{what}: number cells marked left: {[c for c in numbers if c[1]]}"
    assert "Signif. codes: 0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1" in p.legend, what
    return p


def test_lmm_summary_html(sleepstudy_fit):
    # lme4: summary(m) of sleepstudy; REMLcrit(m) = 1743.6283
    p = _check_styled(sleepstudy_fit.summary().as_html(), "lmm")
    texts = [c[2] for c in p.cells]
    assert "1743.6283" in texts and "(Intercept)" in texts
    # the names of the random-effects table are text cells, left-aligned
    assert ("td", "l", "Days") in p.cells or ("td", "", "Days") in p.cells


def test_anova_summary_html():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"),
                     method="ANOVA")
    p = _check_styled(res.summary().as_html(), "ANOVA")
    # base R: summary(aov(yield ~ blend + treat)) F of blend; the EMS is a text cell
    assert ("td", "", "3.5044") in p.cells
    assert ("td", "l", "s2_e + 4 s2_blend") in p.cells


def test_glmm_summary_html():
    ref = json.loads((TESTS / "reference" / "glmm_cbpp_laplace.json").read_text())
    data = pd.read_csv(TESTS / "data" / "glmm" / ref["dataset_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.glmm(ref["formula"], data, family=ref["family"], link=ref["link"],
                      nAGQ=ref["nAGQ"])
    summary = res.summary()
    text = str(summary)
    assert "Signif. codes" in text and "(Intercept)" in text  # the text form
    html = summary.as_html()
    assert summary._repr_html_() == html
    # lme4 prints " Family: binomial  ( logit )" on a line of its own under the title
    assert "Approximation)<br> Family: binomial" in html
    p = _check_styled(html, "GLMM")
    texts = [c[2] for c in p.cells]
    # lme4: summary(m) prints -2 logLik as "deviance" 184.1 (exact Laplace optimum
    # 184.053; printed here with 4 decimals as the lmm summary's criteria)
    assert any(t.startswith("184.05") for t in texts) and "herd" in texts and "(Intercept)" in texts
    assert "***" in texts  # the stars column


def test_result_tables_share_the_style(sleepstudy_fit):
    # lmerTest: anova(m); emmeans: pairs(emmeans(m, ~ treat)); lme4: coef(m)$Subject
    pen = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"))
    pairs = pen.emmeans("treat").pairs(adjust="tukey")
    for what, html in [("anova", sleepstudy_fit.anova()._repr_html_()),
                       ("pairs", pairs._repr_html_()),
                       ("fixed", sleepstudy_fit.fixed()._repr_html_()),
                       ("coef", sleepstudy_fit.coef()["Subject"]._repr_html_())]:
        p = _parse(html)
        rules = _rules(p.style)
        assert "text-align: right" in rules.get(".mixedanova-summary td", ""), what
        numbers = [c for c in p.cells if c[0] == "td" and _NUMBER.match(c[2].strip())]
        assert numbers and all("l" not in c[1].split() for c in numbers), what
    assert "P value adjustment: tukey method for comparing a family of 4 estimates" in \
        pairs._repr_html_()
    assert ("td", "l", "A - B") in _parse(pairs._repr_html_()).cells  # text column left
    # Satterthwaite's den_df 17.000007 shows as 17 (display only)
    assert ("td", "", "17") in _parse(sleepstudy_fit.anova()._repr_html_()).cells
