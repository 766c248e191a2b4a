"""Model matrices of formula parts: R's treatment contrasts, aliased columns, new data.

R: ``model.matrix(~ f)`` with the default ``contr.treatment`` has an intercept and
one indicator per non-reference level (the first level is the reference);
``model.matrix(~ 0 + f)`` has one indicator per level.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedanova.design.term_matrices import (fixed_terms, independent_columns,
                                             model_matrix_like, term_matrix)
from mixedanova.errors import DesignError


@pytest.fixture()
def small():
    return pd.DataFrame({"f": ["b", "a", "c", "a", "b", "c"],
                         "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})


def _indicators(values, levels):
    return np.array([[float(v == lev) for lev in levels] for v in values])


def test_treatment_contrasts(small):
    X, cols, _ = term_matrix("1 + f", small, "X")
    assert cols == ["Intercept", "f[T.b]", "f[T.c]"]
    np.testing.assert_array_equal(X, np.c_[np.ones(6), _indicators(small["f"], ["b", "c"])])


def test_no_intercept_gives_every_level(small):
    X, cols, _ = term_matrix("0 + f", small, "X")
    assert cols == ["f[a]", "f[b]", "f[c]"]
    np.testing.assert_array_equal(X, _indicators(small["f"], ["a", "b", "c"]))


def test_interaction_of_factor_and_covariate(small):
    X, cols, _ = term_matrix("1 + f * x", small, "X")
    assert cols == ["Intercept", "f[T.b]", "f[T.c]", "x", "f[T.b]:x", "f[T.c]:x"]
    ind = _indicators(small["f"], ["b", "c"])
    x = small["x"].to_numpy()
    np.testing.assert_array_equal(X, np.c_[np.ones(6), ind, x, ind * x[:, None]])


def test_fixed_terms_map_terms_to_columns(small):
    _, _, spec = term_matrix("1 + f * x", small, "X")
    terms = fixed_terms(spec, np.arange(6))
    assert [(t.name, t.variables, t.columns) for t in terms] == [
        ("(Intercept)", (), (0,)), ("f", ("f",), (1, 2)), ("x", ("x",), (3,)),
        ("f:x", ("f", "x"), (4, 5))]
    # with column 2 dropped (aliased), the kept columns are renumbered
    terms = fixed_terms(spec, np.array([0, 1, 3, 4, 5]))
    assert [t.columns for t in terms] == [(0,), (1,), (2,), (3, 4)]


def test_independent_columns_drops_aliased_and_zero_columns():
    x = np.array([1.0, 2.0, 3.0, 5.0])
    X = np.c_[np.ones(4), x, 2.0 + 3.0 * x, np.zeros(4), x ** 2]
    # column 2 = 2 * column 0 + 3 * column 1; column 3 is zero
    np.testing.assert_array_equal(independent_columns(X), [True, True, False, False, True])
    # a column differing from a combination by far more than 1e-7 of its norm stays
    Y = np.c_[X[:, :2], X[:, 2] + np.array([0, 0, 0, 1e-3])]
    np.testing.assert_array_equal(independent_columns(Y), [True, True, True])


def test_new_data_rebuilds_and_refuses_unseen_levels(small):
    _, _, spec = term_matrix("1 + f", small, "X")
    new = pd.DataFrame({"f": ["c", "a"]})
    np.testing.assert_array_equal(model_matrix_like(spec, new, "fixed-effect"),
                                  [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.raises(DesignError, match=r"level\(s\) 'z' of fixed-effect factor 'f' not "
                                          r"seen in the fit"):
        model_matrix_like(spec, pd.DataFrame({"f": ["a", "z"]}), "fixed-effect")


def test_unbuildable_matrix_names_what(small):
    with pytest.raises(DesignError, match="cannot build the test matrix"):
        term_matrix("1 + nosuch(x)", small, "the test matrix")
