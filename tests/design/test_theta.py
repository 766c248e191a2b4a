"""ThetaLayout: lme4's theta (names, bounds, start, order of the template entries).

lme4 (``?getME``, Bates et al. 2015, JSS 67(1), sec. 2.2): each term's relative
covariance factor is a lower-triangular template whose entries are listed column by
column; diagonal entries have lower bound 0, the others -Inf; the default start
(``lmerControl``) is the identity, i.e. 1 on the diagonal and 0 below.
"""
from __future__ import annotations

import numpy as np
import pytest

from _refdata import load_reference
from mixedanova.design.build import build_design
from mixedanova.design.formula import parse_formula
from mixedanova.design.theta import ThetaLayout
from mixedanova.errors import FitError

INF = np.inf


@pytest.fixture()
def slope():
    """``(Days | Subject)``: one term with two columns."""
    return ThetaLayout.from_terms(["Subject"], [("(Intercept)", "Days")])


def test_names_bounds_and_start_of_a_correlated_slope(slope):
    # R: names(getME(m, "theta")); getME(m, "lower"); the default start
    assert slope.names == ("Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days")
    np.testing.assert_array_equal(slope.lower, [0.0, -INF, 0.0])
    np.testing.assert_array_equal(slope.start(), [1.0, 0.0, 1.0])
    assert slope.size == 3 and slope.qs == (2,) and slope.offsets == (0,)
    np.testing.assert_array_equal(slope.diagonal_mask(), [True, False, True])


def test_layout_of_the_sleepstudy_design_matches_lme4(sleepstudy):
    ref = load_reference("sleepstudy_reml")
    d = build_design(parse_formula(ref["formula"]), sleepstudy)
    # R: names(getME(m, "theta"))
    assert list(d.theta_layout().names) == ref["theta_names"]


def test_three_columns_and_several_terms():
    lay = ThetaLayout.from_terms(["g", "h"], [("a", "b", "c"), ("(Intercept)",)])
    # column by column: (a,a) (b,a) (c,a) | (b,b) (c,b) | (c,c), then h's intercept
    assert lay.names == ("g.a", "g.b.a", "g.c.a", "g.b", "g.c.b", "g.c", "h.(Intercept)")
    np.testing.assert_array_equal(lay.lower, [0, -INF, -INF, 0, -INF, 0, 0])
    np.testing.assert_array_equal(lay.start(), [1, 0, 0, 1, 0, 1, 1])
    assert lay.qs == (3, 1) and lay.offsets == (0, 6) and lay.size == 7


def test_templates_fill_the_lower_triangle_column_by_column():
    lay = ThetaLayout.from_terms(["g", "h"], [("a", "b", "c"), ("(Intercept)",)])
    T, U = lay.templates(np.arange(1.0, 8.0))
    np.testing.assert_array_equal(T, [[1, 0, 0], [2, 4, 0], [3, 5, 6]])
    np.testing.assert_array_equal(U, [[7]])


def test_with_template_replaces_one_term_only():
    lay = ThetaLayout.from_terms(["g", "h"], [("a", "b"), ("(Intercept)",)])
    theta = np.array([1.0, 2.0, 3.0, 4.0])
    out = lay.with_template(theta, 0, np.array([[5.0, 0.0], [6.0, 7.0]]))
    np.testing.assert_array_equal(out, [5.0, 6.0, 7.0, 4.0])
    np.testing.assert_array_equal(theta, [1.0, 2.0, 3.0, 4.0])   # a copy
    np.testing.assert_array_equal(lay.template_columns(0), [0, 0, 1])


def test_check_start(slope):
    np.testing.assert_array_equal(slope.check_start([1, 0.5, 2]), [1.0, 0.5, 2.0])
    with pytest.raises(FitError, match=r"start has 2 values .*theta has 3 elements "
                                       r"\(Subject.\(Intercept\), "):
        slope.check_start([1, 1])
    with pytest.raises(FitError, match="non-finite"):
        slope.check_start([1, np.nan, 1])
    with pytest.raises(FitError, match=r"Subject.Days = -1.0 is below its lower bound 0"):
        slope.check_start([1, -5, -1])       # -5 is an off-diagonal entry: allowed
    with pytest.raises(FitError, match="start must be 3 numbers"):
        slope.check_start("1, 0, 1")
