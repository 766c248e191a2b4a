"""The printed report: lme4/lmerTest's layout carrying R's numbers.

The expected numbers come from tests/reference (lme4 1.1-31, lmerTest 3.1-3); the
test reads them back out of the printed text, so both the layout and the values
are checked against R, not against a snapshot of this package's own output.
"""
from __future__ import annotations

import re

import pytest

import mixedanova as ma
from mixedanova.cli import main
from _refdata import fit_reference


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", line)]


def _line(text: str, start: str) -> str:
    for line in text.splitlines():
        if line.lstrip().startswith(start):
            return line
    raise AssertionError(f"no line starting with {start!r} in\n{text}")


def test_sleepstudy_reml_summary_matches_lmertest():
    ref, res = fit_reference("sleepstudy_reml")
    text = str(res.summary())
    # R: summary(m) heading of lmerTest
    assert text.splitlines()[0] == ("Linear mixed model fit by REML. t-tests use "
                                    "Satterthwaite's method")
    # R: REML criterion at convergence: 1743.6
    assert _numbers(_line(text, "REML criterion"))[0] == pytest.approx(
        ref["reml_criterion"], abs=1e-4)
    # R: VarCorr(m): variances and SDs, correlation 0.07
    vc = {(r["var1"], r["var2"]): r for r in ref["varcorr"] if r["group"] == "Subject"}
    sub = _numbers(_line(text, "Subject"))
    assert sub[0] == pytest.approx(vc[("(Intercept)", None)]["vcov"], rel=1e-4)
    assert sub[1] == pytest.approx(vc[("(Intercept)", None)]["sdcor"], rel=1e-4)
    days = _numbers(_line(text, "Days   "))
    assert days[0] == pytest.approx(vc[("Days", None)]["vcov"], rel=1e-4)
    assert days[2] == pytest.approx(vc[("(Intercept)", "Days")]["sdcor"], abs=0.005)
    resid = _numbers(_line(text, "Residual"))
    assert resid[1] == pytest.approx(ref["sigma"], rel=1e-4)
    assert "Number of obs: 180, groups:  Subject, 18" in text
    # R: coef(summary(m)): Estimate, Std. Error, df, t value, Pr(>|t|)
    header = _line(text, "Estimate")
    assert header.split() == ["Estimate", "Std.", "Error", "df", "t", "value", "Pr(>|t|)"]
    f = ref["fixed"]
    days_row = [line for line in text.splitlines() if line.startswith("Days")][-1]
    est, se, df, t, p = _numbers(days_row)
    assert est == pytest.approx(f["estimate"][1], rel=1e-5)
    assert se == pytest.approx(f["se"][1], rel=1e-4)
    assert df == pytest.approx(f["df_satterthwaite"][1], abs=1e-3)
    assert t == pytest.approx(f["t"][1], rel=1e-4)
    assert p == pytest.approx(f["p_satterthwaite"][1], rel=1e-2)  # printed to 3 digits
    assert days_row.rstrip().endswith("***")
    # lme4 names the intercept "(Intercept)" in the fixed-effects table too (issue 22)
    assert "< 2e-16" in [l for l in text.splitlines() if l.startswith("(Intercept)")][0]


def test_ml_summary_shows_information_criteria():
    ref, res = fit_reference("sleepstudy_ml")
    text = str(res.summary())
    assert text.splitlines()[0].startswith("Linear mixed model fit by maximum likelihood")
    head = _line(text, "AIC").split()
    vals = _numbers(text.splitlines()[text.splitlines().index(_line(text, "AIC")) + 1])
    crit = dict(zip(head, vals))
    # R: AIC(m), BIC(m), logLik(m), deviance(m)
    assert crit["AIC"] == pytest.approx(ref["aic"], abs=1e-4)
    assert crit["BIC"] == pytest.approx(ref["bic"], abs=1e-4)
    assert crit["logLik"] == pytest.approx(ref["loglik"], abs=1e-4)
    assert crit["deviance"] == pytest.approx(ref["deviance"], abs=1e-4)


def test_cli_prints_the_summary(capsys):
    assert main(["fit", "yield ~ treat + (1|blend)", "--dataset", "bhh_penicillin"]) == 0
    out = capsys.readouterr().out
    assert "Linear mixed model fit by REML" in out
    assert "blend" in out and "treat[T.B]" in out
    assert main(["fit", "yield ~ treat + (1|blend", "--dataset", "bhh_penicillin"]) == 2
    assert "never closed" in capsys.readouterr().err


def test_cli_anova_method(capsys, tmp_path):
    path = tmp_path / "pen.csv"
    ma.load_dataset("bhh_penicillin").to_csv(path, index=False)
    assert main(["fit", "yield ~ treat + (1|blend)", "--data", str(path),
                 "--method", "anova"]) == 0
    out = capsys.readouterr().out
    assert "EMS rules (balanced)" in out and "s2_e + 4 s2_blend" in out


def test_correlation_of_fixed_effects_block(sleepstudy_fit):
    # print(summary(m), correlation = TRUE) on sleepstudy, lme4 1.1-31:
    #   Correlation of Fixed Effects:
    #        (Intr)
    #   Days -0.138
    text = str(sleepstudy_fit.summary(correlation=True)).splitlines()
    i = text.index("Correlation of Fixed Effects:")
    assert text[i + 1:i + 3] == ["     (Intr)", "Days -0.138"]
    assert "Correlation of Fixed Effects:" not in str(sleepstudy_fit.summary())


def test_r_abbreviate():
    # R 4.2.2: abbreviate(c("(Intercept)", "Days", "Variety", "VarietyMarvellous"),
    #                     minlength = 6) gives (Intr) Days Varity VrtyMr
    from mixedanova.report.summary import abbreviate
    names = ("(Intercept)", "Days", "Variety", "VarietyMarvellous")
    assert [abbreviate(n) for n in names] == ["(Intr)", "Days", "Varity", "VrtyMr"]


def test_html_summary_is_styled_with_a_legend(sleepstudy_fit):
    html = sleepstudy_fit.summary().as_html()
    assert "<style>" in html and "text-align: right" in html and "border" in html
    assert "tabular-nums" in html
    assert "Signif. codes" in html
    assert "<td>(Intercept)</td>" in html
