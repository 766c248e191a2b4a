"""Command-line outputs added in issue 13: --version, --anova, --json, the datasets listing.

Numbers are checked against the R references: bhh_penicillin_reml.json holds
lmerTest's ``anova(m, type = 3)`` and ``summary(m)`` of ``yield ~ treat + (1|blend)``.
"""
from __future__ import annotations

import json

import pytest

import mixedanova as ma
from mixedanova.cli import main
from _refdata import load_reference

FORMULA = "yield ~ treat + (1|blend)"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"mixedanova {ma.__version__}"


def test_datasets_listing_has_descriptions(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ma.list_datasets():
        assert f"\n{name}: " in "\n" + out
    assert "plants_pots: Seedling heights" in out and "SIMULATED" in out
    assert "formula: height ~ moisture + (1|pot)" in out


def test_anova_option_matches_lmertest(capsys):
    ref = load_reference("bhh_penicillin_reml")["anova_type3"]["satterthwaite"]["table"][0]
    assert main(["fit", FORMULA, "--dataset", "bhh_penicillin", "--anova"]) == 0
    out = capsys.readouterr().out
    assert "Type III Analysis of Variance Table with Satterthwaite's method" in out
    # lmerTest: anova(m, type = 3)["treat", c("DenDF", "F value", "Pr(>F)")]
    cells = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["treat"])
    assert float(cells[4]) == pytest.approx(ref["den_df"], rel=1e-3)
    assert float(cells[5]) == pytest.approx(ref["F"], rel=1e-3)
    assert float(cells[6]) == pytest.approx(ref["p"], rel=1e-3)


def test_anova_type_and_ddf_options(capsys):
    assert main(["fit", FORMULA, "--dataset", "bhh_penicillin", "--anova", "--type", "1",
                 "--ddf", "kenward-roger"]) == 0
    assert "Type I Analysis of Variance Table with Kenward-Roger's method" in \
        capsys.readouterr().out


def test_json_holds_every_table(capsys):
    ref = load_reference("bhh_penicillin_reml")
    assert main(["fit", FORMULA, "--dataset", "bhh_penicillin", "--json", "--anova"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"fixed", "varcomp", "random_effects", "random_effects_sd", "anova",
            "criteria"} <= set(d)
    # lme4: REMLcrit(m)
    assert d["criteria"]["REML"] == pytest.approx(ref["reml_criterion"], rel=1e-6)
    fixed = dict(zip(d["fixed"]["index"], d["fixed"]["data"]))
    est_col = d["fixed"]["columns"].index("estimate")
    assert set(fixed) == {"Intercept", "treat[T.B]", "treat[T.C]", "treat[T.D]"}
    # lme4: fixef(m); lmerTest: summary(m)$coefficients[, "df"]
    assert [fixed[n][est_col] for n in fixed] == pytest.approx(ref["fixed"]["estimate"], rel=1e-4)
    df_col = d["fixed"]["columns"].index("df")
    assert [fixed[n][df_col] for n in fixed] == pytest.approx(ref["fixed"]["df_satterthwaite"],
                                                              rel=1e-3)
    assert d["random_effects"]["blend"]["columns"] == ["(Intercept)"]


def test_json_of_anova_fit_has_ems_table(capsys):
    assert main(["fit", FORMULA, "--dataset", "bhh_penicillin", "--method", "ANOVA",
                 "--json", "--anova"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "ANOVA"
    assert d["ems_table"]["index"] == ["treat", "blend", "Residual"]
    assert "moment_estimates" in d and d["anova"]["index"] == ["treat"]


def test_anova_error_is_reported_not_raised(capsys):
    assert main(["fit", FORMULA, "--dataset", "bhh_penicillin", "--method", "ANOVA",
                 "--anova", "--ddf", "satterthwaite"]) == 2
    assert "mixedanova: error: Satterthwaite df need a REML or ML fit" in capsys.readouterr().err
