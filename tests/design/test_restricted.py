"""Restricted formulas (issue 23): hostile formulas are refused before anything runs,
legitimate ones give exactly the fit they give unrestricted."""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from pathlib import Path
from mixedanova.design.formula import parse_formula
from mixedanova.design.restricted import ALLOWED_CALLS, MAX_LENGTH, check_code, check_restricted
from mixedanova.errors import DesignError, FormulaError

from _hostile import ENV, make_canary, payloads, transforms


@pytest.fixture(scope="module")
def sleep():
    s = ma.load_dataset("sleepstudy")
    return s.assign(**{f"Days{i}": s["Days"] for i in range(2, 16)})


def _placements(code: str) -> list[str]:
    """``code`` in the response, the fixed part, a random term and an offset."""
    return [f"{code} ~ Days + (1|Subject)",
            f"Reaction ~ {code} + (1|Subject)",
            f"Reaction ~ Days + ({code}|Subject)",
            f"Reaction ~ Days + offset({code}) + (1|Subject)"]


def _hostile_formulas(path: str) -> list[str]:
    out = []
    for code in payloads(path):
        out += _placements(f"I({code})")
    for code in transforms(path):
        out += _placements(code)
    return out


def test_battery_is_large_enough(tmp_path):
    # issue 23 asks for at least 40 hostile formulas in each of the four places
    assert len(payloads("p")) + len(transforms("p")) >= 40
    assert len(_hostile_formulas(str(tmp_path))) >= 160


def test_hostile_formulas_are_refused_before_anything_runs(sleep, tmp_path, monkeypatch):
    path, intact = make_canary(tmp_path, monkeypatch)
    ma.lmm("Reaction ~ Days + (1|Subject)", sleep, restricted=True)  # imports done
    slow = []
    for formula in _hostile_formulas(path):
        start = time.perf_counter()
        with pytest.raises(FormulaError) as err:
            ma.lmm(formula, sleep, restricted=True)
        elapsed = time.perf_counter() - start
        assert intact(), formula
        assert "restricted formula" in str(err.value), (formula, str(err.value))
        if elapsed >= 1.0:
            slow.append((formula[:60], elapsed))
    assert not slow


def test_refusal_points_at_the_expression(sleep):
    formula = "Reaction ~ Days + I(__import__('os').getcwd()) + (1|Subject)"
    with pytest.raises(FormulaError) as err:
        ma.lmm(formula, sleep, restricted=True)
    e = err.value
    assert e.formula == formula and formula[e.pos:].startswith("__import__('os').getcwd")
    assert "\"__import__('os').getcwd\" is refused: calls are limited to" in str(e)
    assert str(e).splitlines()[-1].strip().startswith("^")


def test_the_canary_would_see_the_payload_unrestricted(sleep, tmp_path, monkeypatch):
    # the battery can fail: unrestricted, a formula does run its code
    path, intact = make_canary(tmp_path, monkeypatch)
    formula = (f"Reaction ~ I(__import__('os').environ.__setitem__('{ENV}', 'pwned') or Days)"
               " + (1|Subject)")
    with pytest.raises(FormulaError):
        ma.lmm(formula, sleep, restricted=True)
    assert intact()
    ma.lmm(formula, sleep)
    assert os.environ[ENV] == "pwned" and not intact()


def test_names_must_be_columns_of_the_data(sleep):
    for formula, name in [("Reaction ~ Days.values + (1|Subject)", "Days.values"),
                          ("Reaction ~ I(open) + (1|Subject)", "open"),
                          ("Reaction ~ np.log(Days + np) + (1|Subject)", "np"),
                          ("Reaction ~ Days + (1|Subject.x)", "Subject.x")]:
        with pytest.raises(FormulaError, match=f"'{name}' is not a column of the data"):
            ma.lmm(formula, sleep, restricted=True)


def test_bounds_on_length_depth_and_sizes():
    with pytest.raises(FormulaError, match=f"at most {MAX_LENGTH} are accepted"):
        check_restricted("y ~ " + " + ".join(["x"] * 2000))
    with pytest.raises(FormulaError, match="nested more than 32 brackets deep"):
        check_restricted("y ~ " + "(" * 40 + "x" + ")" * 40)
    with pytest.raises(FormulaError, match="nested more than 32 levels deep"):
        check_restricted("y ~ I(" + "-" * 100 + "x)")
    with pytest.raises(FormulaError, match="expands to more than 1024 terms"):
        check_restricted("y ~ " + "*".join(f"x{i}" for i in range(11)))
    with pytest.raises(FormulaError, match="the power of terms must be a whole number"):
        check_restricted("y ~ (a + b)**11")
    with pytest.raises(FormulaError, match="integer literals are limited to 15 digits"):
        check_restricted("y ~ I(x * 1234567890123456)")
    with pytest.raises(FormulaError, match="poly\\(\\)'s degree"):
        check_restricted("y ~ poly(x, 21)")
    with pytest.raises(FormulaError, match="constant exponent"):
        check_restricted("y ~ I(x ** 101)")
    check_restricted("y ~ I(x ** 100) + I(2 ** x) + I(x ** y) + poly(x, 20) + (a + b)**10")


def test_checker_accepts_the_allowed_grammar():
    check_restricted("cbind(s, n - s) ~ x + (1 | g)")
    check_restricted("y ~ x + offset(np.log(t)) + (x || g) + (1 | a/b) + (1 | a:b)")
    check_restricted("y ~ C(g, Treatment('b')) + C(g, contr.sum) + C(g, levels=['a', 'b'])")
    check_restricted("y ~ I(g == 'a') + I(x >= 2) + scale(x, center=True, scale=False)")
    check_restricted("`my var` ~ Q('other var') + x:z + x %in% g + yield + (1|g)")
    check_restricted("y ~ np.log(x) + np.sqrt(x) + log2(x) + exp(x) + abs(x) + center(x)")
    for name in ALLOWED_CALLS:
        args = "'x'" if name == "Q" else ("x, z" if name == "cbind" else "x")
        check_restricted(f"y ~ {name}({args}) + (1|g)")
    with pytest.raises(FormulaError, match=r"write np\.sqrt"):
        check_restricted("y ~ sqrt(x)")


def test_second_line_checks_what_formulaic_evaluates():
    check_code("np.log(x + 1)", "y ~ np.log(x + 1)")
    with pytest.raises(FormulaError, match="calls are limited to") as err:
        check_code("__import__('os').getcwd()", "y ~ ...")
    assert err.value.formula == "y ~ ..."


def test_cbind_response_needs_a_glmm(sleep):
    p = parse_formula("cbind(Reaction, Days) ~ 1 + (1|Subject)", restricted=True)
    assert p.response == "cbind(Reaction, Days)" and p.restricted
    with pytest.raises(DesignError, match=r"binomial GLMM \(ma.glmm, not yet available\)"):
        ma.lmm("cbind(Reaction, Days) ~ 1 + (1|Subject)", sleep, restricted=True)


def _oats():
    return ma.load_dataset("oats")


LEGIT = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),
    ("sleepstudy", "Reaction ~ 0 + Days + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days - 1 + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ Days + I(Days**2) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.log(Days + 1) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ log(Days + 1) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.log2(Days + 1) + log2(Days + 2) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ log10(Days + 1) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.log10(Days + 1) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.log1p(Days) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.sqrt(Days) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ exp(Days / 10) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ np.exp(Days / 10) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ abs(Days - 4.5) + np.abs(Days - 2) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ scale(Days) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ center(Days) + (center(Days) | Subject)"),
    ("sleepstudy", "Reaction ~ poly(Days, 2) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ C(Days) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ C(Days, Sum) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ C(Days, contr.helmert) + (1 | Subject)"),
    ("sleepstudy", "Reaction ~ I(Days > 4) + I(Days % 3 == 0) + (1 | Subject)"),
    ("sleepstudy", "np.log(Reaction) ~ Days + (1 | Subject)"),
    ("sleepstudy", "I(Reaction / 1000) ~ Days + (0 + Days | Subject) + (1 | Subject)"),
    ("sleepstudy", "`Reaction` ~ `Days` + (1 | `Subject`)"),
    ("sleepstudy", "Reaction ~ Days + offset(np.log(Days + 1)) + (1 | Subject)"),
    ("oats", "yield ~ Variety * nitro_f + (1 | Block/Variety)"),
    ("oats", "yield ~ Variety + nitro + I(nitro**2) + (1 | Block) + (1 | Block:Variety)"),
    ("oats", "yield ~ C(Variety, levels=['Victory', 'Golden Rain', 'Marvellous']) + nitro"
             " + (1 | Block)"),
    ("oats", "yield ~ C(Variety, Treatment('Victory')) + nitro + (1 | Block)"),
    ("oats", "yield ~ Variety:nitro + (1 | Block)"),
    ("oats", "yield ~ (Variety + nitro_f)**2 + (1 | Block)"),
    ("region_rates", "y ~ program + year + offset(log_exposure) + (1 | region)"),
    ("region_rates", "y ~ program + scale(year, scale=False) + (1 | region)"),
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("pastes", "strength ~ 1 + (1 | batch/cask)"),
    ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)"),
    ("subject_item", "rt ~ condition + np.log(freq) + (1 | subject) + (1 | item)"),
    ("subject_item", "Q('rt') ~ C(condition, Sum) + (1 | subject)"),
]


def test_legit_battery_is_large_enough():
    assert len(LEGIT) >= 30


@pytest.mark.parametrize("dataset, formula", LEGIT)
def test_legit_formulas_fit_exactly_as_unrestricted(dataset, formula):
    data = ma.load_dataset(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = ma.lmm(formula, data)
        safe = ma.lmm(formula, data, restricted=True)
    assert safe.model.design.formula.restricted and not free.model.design.formula.restricted
    assert safe.reml_criterion == free.reml_criterion
    assert list(safe.fe_params.index) == list(free.fe_params.index)
    assert np.array_equal(safe.fe_params.to_numpy(), free.fe_params.to_numpy())
    assert np.array_equal(safe.theta, free.theta)


def test_update_keeps_restricted_mode(sleep):
    res = ma.lmm("Reaction ~ Days + (1|Subject)", sleep, restricted=True)
    with pytest.raises(FormulaError, match="restricted formula"):
        res.update("Reaction ~ Days + I(__import__('os').getcwd()) + (1|Subject)")
    assert res.update(". ~ . + I(Days**2)").model.design.formula.restricted


# ---------------------------------------------- no message echoes data values
SECRET = "s3cr3t-" + "x" * 200


def test_non_numeric_transform_is_the_package_error(sleep, tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\nsecond line\n")
    for formula in [f"Reaction ~ I(open({str(path)!r}).read()) + (1|Subject)",
                    f"I(open({str(path)!r}).read()) ~ Days + (1|Subject)",
                    f"Reaction ~ Days + offset(I(open({str(path)!r}).read())) + (1|Subject)"]:
        with pytest.raises(DesignError) as err:
            ma.lmm(formula, sleep)
        msg = str(err.value).replace(str(path), "")
        assert "is not numeric" in msg and "a transform must give numbers" in msg, msg
        assert "s3cr3t-xxx" in msg and SECRET[:60] not in msg and "second line" not in msg


def test_unseen_level_and_mixed_values_are_short_excerpts(sleep):
    s = sleep.assign(g=np.where(sleep["Subject"] % 2 == 0, "a", "b"))
    res = ma.lmm("Reaction ~ g + (1|Subject)", s)
    new = s.head(2).assign(g=[SECRET, "c"])
    with pytest.raises(DesignError) as err:
        res.predict(new, re_form=None)
    msg = str(err.value)
    assert "not seen in the fit" in msg and "(and 1 more)" in msg and SECRET[:40] not in msg
    big = 7 * 10 ** 60  # an int and a str that print alike
    mixed = s.assign(m=pd.Series([big] + [str(big)] * (len(s) - 1), dtype=object))
    with pytest.raises(DesignError, match="mixes values that print alike") as err:
        ma.lmm("Reaction ~ m + (1|Subject)", mixed)
    assert str(big)[:40] not in str(err.value) and str(big)[:30] in str(err.value)


def test_foreign_error_detail_is_cut():
    from mixedanova.design.data_checks import excerpt, foreign_detail
    assert excerpt("x" * 100) == repr("x" * 37 + "...")
    detail = foreign_detail(ValueError(f"could not convert string to float: {SECRET!r}\nmore"))
    assert detail.startswith("could not convert string to float: 's3cr3t-")
    assert SECRET[:40] not in detail and "more" not in detail and len(detail) <= 160


def test_glmm_and_lmm_many_take_the_restricted_mode(tmp_path, monkeypatch):
    # issue 23: ma.glmm and the batch entry point turn the mode on with restricted=True
    import numpy as np
    import pandas as pd
    path, intact = make_canary(tmp_path, monkeypatch)
    sleep = ma.load_dataset("sleepstudy")
    cbpp = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "glmm" / "cbpp.csv")
    Y = np.random.default_rng(1).normal(size=(len(sleep), 2))
    for code in payloads(path):
        with pytest.raises(ma.FormulaError):
            ma.glmm(f"cbind(incidence, size - incidence) ~ period + I({code}) + (1|herd)",
                    cbpp, restricted=True)
        with pytest.raises(ma.FormulaError):
            ma.lmm_many(f"~ Days + I({code}) + (1|Subject)", sleep, Y, restricted=True)
        assert intact()
    # legitimate formulas fit exactly as unrestricted
    f = "cbind(incidence, size - incidence) ~ period + (1|herd)"
    a, b = ma.glmm(f, cbpp, restricted=True), ma.glmm(f, cbpp)
    assert a.minus_2_loglik == b.minus_2_loglik
    a = ma.lmm_many("~ Days + (1|Subject)", sleep, Y, restricted=True)
    b = ma.lmm_many("~ Days + (1|Subject)", sleep, Y)
    assert a.fit_info["criterion"].tolist() == b.fit_info["criterion"].tolist()
