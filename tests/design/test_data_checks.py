"""The data checks of the design stage: used columns, missing and infinite values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedanova.design.data_checks import (check_columns, check_finite, complete_rows,
                                           missing_column_error, plain_strings)
from mixedanova.design.formula import parse_formula
from mixedanova.errors import DesignError


def _frame():
    return pd.DataFrame({"y": [1.0, np.nan, 3.0, 4.0, np.nan, 6.0],
                         "x": [0.1, 0.2, np.nan, 0.4, np.nan, 0.6],
                         "g": ["a", "b", "a", None, "b", "a"],
                         "other": [np.nan] * 6})


def test_complete_rows_drops_and_counts():
    df = _frame()
    kept, n = complete_rows(df, ["y", "x", "g"], "drop")
    # rows 1 (y), 2 (x), 3 (g), 4 (y and x) have a missing value: 4 dropped
    assert n == 4
    assert list(kept.index) == [0, 5]
    assert list(kept.columns) == ["y", "x", "g"]     # only the used columns


def test_complete_rows_ignores_unused_columns():
    kept, n = complete_rows(_frame(), ["g"], "drop")
    assert n == 1 and list(kept.index) == [0, 1, 2, 4, 5]


def test_complete_rows_without_missing_values():
    df = _frame().loc[[0, 5]]
    kept, n = complete_rows(df, ["y", "x", "g"], "drop")
    assert n == 0 and list(kept.index) == [0, 5]


def test_complete_rows_raise_names_columns_and_counts():
    with pytest.raises(DesignError, match=r"missing values in 'y' \(2 rows\), 'x' \(2 rows\), "
                                          r"'g' \(1 rows\); pass missing='drop'"):
        complete_rows(_frame(), ["y", "x", "g"], "raise")


def test_complete_rows_nothing_left():
    with pytest.raises(DesignError, match="no rows left after dropping rows with missing "
                                          r"values in 'other' \(6 rows\)"):
        complete_rows(_frame(), ["other"], "drop")


def test_infinite_values_are_refused_either_way():
    df = _frame().assign(x=[0.0, np.inf, 1.0, -np.inf, 2.0, 3.0])
    for missing in ("drop", "raise"):
        with pytest.raises(DesignError, match=r"column 'x' has infinite values \(rows \[1, 3\]\)"):
            complete_rows(df, ["x"], missing)


def test_missing_column_error_suggests_close_names():
    df = pd.DataFrame(columns=["Reaction", "Days", "Subject"])
    err = missing_column_error("Dayz", df, "fixed effects")
    assert isinstance(err, DesignError)
    assert str(err) == "column 'Dayz' (fixed effects) is not in the data; did you mean 'Days'?"
    assert str(missing_column_error("zzz", df, "response")) == \
        "column 'zzz' (response) is not in the data"


def test_check_columns_refuses_duplicates_complex_and_dates():
    parsed = parse_formula("y ~ x + (1|g)")
    dup = pd.DataFrame([[1.0, 2.0, 3.0, "a"]], columns=["y", "x", "x", "g"])
    with pytest.raises(DesignError, match="column 'x' appears 2 times"):
        check_columns(parsed, dup, ["y", "x", "g"])
    cplx = pd.DataFrame({"y": [1.0], "x": [1 + 2j], "g": ["a"]})
    with pytest.raises(DesignError, match=r"column 'x' is complex"):
        check_columns(parsed, cplx, ["y", "x", "g"])
    dates = pd.DataFrame({"y": [1.0], "x": pd.to_datetime(["2020-01-01"]), "g": ["a"]})
    with pytest.raises(DesignError, match=r"column 'x' holds dates"):
        check_columns(parsed, dates, ["y", "x", "g"])
    # a date column may group observations
    check_columns(parse_formula("y ~ 1 + (1|x)"), dates, ["y", "x"])


def test_check_finite_names_the_rows():
    index = pd.Index([10, 11, 12, 13])
    check_finite(np.array([1.0, 2.0, 3.0, 4.0]), "x", "column", index)
    with pytest.raises(DesignError, match=r"column 'x' has non-finite values \(NaN or inf\) "
                                          r"in rows \[11, 13\]"):
        check_finite(np.array([1.0, np.nan, 3.0, np.inf]), "x", "column", index)


def test_plain_strings_turns_string_dtype_into_objects():
    df = pd.DataFrame({"a": pd.array(["x", None], dtype="string"), "b": [1.0, 2.0]})
    out = plain_strings(df)
    assert out["a"].dtype == object and out["b"].dtype == np.float64
    assert out["a"].iloc[0] == "x" and pd.isna(out["a"].iloc[1])
    same = pd.DataFrame({"b": [1.0]})
    assert plain_strings(same) is same
