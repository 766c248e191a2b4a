"""lme4 formula syntax: expansion of bar terms and errors that point at the text."""
from __future__ import annotations

import pytest

from mixedanova.design.formula import FormulaError, parse_formula


def _terms(formula: str):
    return [(t.expr, t.factors) for t in parse_formula(formula).random]


def test_correlated_slope():
    # lme4: (Days | Subject) == (1 + Days | Subject)
    p = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert p.response == "Reaction" and p.fixed == "Days"
    assert _terms("y ~ x + (x | g)") == [("1 + x", ("g",))]
    assert _terms("y ~ x + (1 + x | g)") == [("1 + x", ("g",))]


def test_no_intercept_slope():
    assert _terms("y ~ x + (0 + x | g)") == [("0 + x", ("g",))]
    assert _terms("y ~ x + (x - 1 | g)") == [("x - 1", ("g",))]


def test_double_bar_splits_terms():
    # lme4's expandDoubleVerts: (x || g) == (1 | g) + (0 + x | g)
    assert _terms("y ~ x + (x || g)") == [("1", ("g",)), ("0 + x", ("g",))]
    assert _terms("y ~ (0 + x + z || g)") == [("0 + x", ("g",)), ("0 + z", ("g",))]


def test_nesting_and_interaction():
    # lme4's expandSlash: (1 | a/b) == (1 | a) + (1 | b:a); the nested factor
    # comes first, so that levels read "b1:a1" and VarCorr's group is "b:a"
    assert _terms("y ~ 1 + (1 | a/b)") == [("1", ("a",)), ("1", ("b", "a"))]
    assert _terms("y ~ 1 + (1 | a/b/c)") == [("1", ("a",)), ("1", ("b", "a")),
                                               ("1", ("c", "b", "a"))]
    assert _terms("y ~ 1 + (1 | a:b)") == [("1", ("a", "b"))]
    assert parse_formula("y ~ (1|a:b)").random[0].group == "a:b"
    # lme4: names(ranef(lmer(y ~ (1|a/b/c)))) has "c:(b:a)", "b:a", "a"
    assert [t.group for t in parse_formula("y ~ (1|a/b/c)").random] == ["a", "b:a", "c:(b:a)"]


def test_several_terms_and_fixed_part_left_to_formulaic():
    p = parse_formula("np.log(y) ~ C(t) * I(x**2) - 1 + (1|a) + (x|b)")
    assert p.response == "np.log(y)"
    assert p.fixed == "C(t) * I(x**2) - 1"
    assert [t.group for t in p.random] == ["a", "b"]


def test_only_random_terms_gives_intercept():
    assert parse_formula("y ~ (1|g)").fixed == "1"


@pytest.mark.parametrize("formula, message, caret", [
    ("y ~ x + (1|g", "'(' is never closed", "        ^"),
    ("y ~ x + 1|g)", "')' without '('", "           ^"),
    ("y ~ x + 1|g", "must be in parentheses", "        ^^^"),
    ("y ~ (|g)", "nothing left of '|'", "    ^^^^"),
    ("y ~ (1|)", "no grouping factor", "    ^^^^"),
    ("y ~ (1|g|h)", "too many '|'", "    ^^^^^^^"),
    ("y ~ x +  + (1|g)", "empty term", "        ^"),
    ("y ~ x - (1|g)", "cannot be subtracted", "        ^^^^^"),
    ("~ x + (1|g)", "no response", "^"),
    ("y ~ x + (1|g+h)", "grouping factor must be", "        ^^^^^^^"),
])
def test_malformed_formula_points_at_text(formula, message, caret):
    with pytest.raises(FormulaError) as err:
        parse_formula(formula)
    text = str(err.value)
    assert message in text
    assert formula in text
    assert text.splitlines()[-1] == "    " + caret


def test_missing_tilde():
    with pytest.raises(FormulaError, match="no '~'"):
        parse_formula("y x (1|g)")


def test_offset_terms_leave_the_fixed_part():
    # R: offset(log_exposure) is added to the linear predictor with coefficient 1
    p = parse_formula("y ~ program + offset(log_exposure) + year + offset( np.log(t) ) + (1|g)")
    assert p.fixed == "program + year"
    assert p.offsets == ("log_exposure", "np.log(t)")
    assert parse_formula("y ~ offset(o) + (1|g)").fixed == "1"
    with pytest.raises(FormulaError, match="offset"):
        parse_formula("y ~ x - offset(o) + (1|g)")
    with pytest.raises(FormulaError, match="offset"):
        parse_formula("y ~ x + offset() + (1|g)")
