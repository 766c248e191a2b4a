"""Checks of user data on its way into a design or a prediction.

Each check raises :class:`~mixedanova.errors.DesignError` naming the column
and, where it helps, the values at fault: duplicated or complex columns,
dates where numbers are needed, values that differ but print alike (``1`` and
``"1"``), levels of a factor not seen in the fit, text where the fit had
numbers, missing values (:func:`complete_rows` drops or refuses the rows),
non-finite values, columns not in the data.  :func:`plain_strings` turns
pandas ``"string"`` columns into object columns, which formulaic encodes as
factors.
"""
from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd

from ..errors import DesignError
from .formula import ParsedFormula, formula_variables

__all__ = ["check_columns", "check_levels", "as_numeric", "plain_strings", "check_finite",
           "complete_rows", "missing_mask", "missing_column_error", "excerpt", "short_repr",
           "foreign_detail", "text_number_hint"]

_EXCERPT = 40  # characters of a data value an error message may quote
_QUOTED_VALUE = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


def excerpt(value, limit: int = _EXCERPT) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters (``'abc...'``)."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return repr(text)


def short_repr(value, limit: int = _EXCERPT) -> str:
    """``repr(value)`` cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def foreign_detail(exc: BaseException, limit: int = 160) -> str:
    """The first line of another library's error, for one of the package's messages:
    quoted values cut to short excerpts and the whole to ``limit`` characters, so
    that no message echoes more than a short excerpt of a data value."""
    lines = _ANSI.sub("", str(exc)).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = _QUOTED_VALUE.sub(lambda m: excerpt(m.group(0)[1:-1]), text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_columns(parsed: ParsedFormula, data: pd.DataFrame, used: list[str]) -> None:
    """Used columns must be unique labels of a usable kind."""
    dup = data.columns[data.columns.duplicated()]
    for name in used:
        if name in dup:
            k = int(np.sum(data.columns == name))
            raise DesignError(f"column {name!r} appears {k} times in the data; "
                              "rename or drop the duplicates")
        dtype = data[name].dtype
        if pd.api.types.is_complex_dtype(dtype):
            raise DesignError(f"column {name!r} is complex (dtype {dtype}); the model "
                              "needs real numbers")
    groups = {f for term in parsed.random for f in term.factors}
    for name in used:
        dtype = data[name].dtype
        if name not in groups and (pd.api.types.is_datetime64_any_dtype(dtype) or
                                   pd.api.types.is_timedelta64_dtype(dtype) or
                                   isinstance(dtype, pd.PeriodDtype)):
            raise DesignError(f"column {name!r} holds dates or durations (dtype {dtype}); "
                              "convert it to numbers first, e.g. "
                              f"data[{name!r}].dt.days or (d - d.min()).dt.days")
        _check_look_alike(data[name], name, "grouping factor" if name in groups else "column")


def _check_look_alike(col: pd.Series, name: str, role: str) -> None:
    """Values that differ but print alike (``1`` and ``"1"``) would merge into one label."""
    if col.dtype != object:
        return
    values = pd.unique(col.dropna().to_numpy())
    labels: dict[str, object] = {}
    for v in values:
        key = str(v)
        if key in labels and labels[key] is not v and type(labels[key]) is not type(v):
            raise DesignError(
                f"{role} {name!r} mixes values that print alike: "
                f"{short_repr(labels[key])} ({type(labels[key]).__name__}) and {short_repr(v)} "
                f"({type(v).__name__}); convert the column to one type, e.g. "
                f"data[{name!r}].astype(str)")
        labels.setdefault(key, v)


def as_numeric(col: pd.Series, name: str, role: str) -> pd.Series:
    """A newdata column the fit used as numbers: numeric as it is, or an object
    column holding only real numbers (converted); else a :class:`DesignError`."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and \
            not pd.api.types.is_complex_dtype(col):
        return col

    def real(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and \
            not isinstance(v, (bool, np.bool_))

    if col.dtype == object and all(real(v) for v in col.dropna()):
        return col.astype(float)
    bad = next(v for v in col.dropna() if not real(v)) if col.notna().any() else None
    raise DesignError(f"newdata column {name!r} ({role}) is not numeric (dtype {col.dtype}, "
                      f"values such as {short_repr(bad)}); the fit used real numbers")


def check_levels(spec, data: pd.DataFrame, role: str) -> pd.DataFrame:
    """Unseen levels of categorical factors and text in numeric ones, by column;
    returns ``data`` with numeric columns held as objects converted."""
    state = getattr(spec, "encoder_state", {}) or {}
    cols = list(data.columns)
    for expr, (kind, st) in state.items():
        names = [v for v in formula_variables(expr, cols) if v in data.columns]
        if len(names) != 1:
            continue
        col = data[names[0]]
        kind = getattr(kind, "value", str(kind))
        if kind == "categorical" and "categories" in st:
            values = col[col.notna()]
            if not isinstance(values.dtype, pd.CategoricalDtype) and \
                    pd.api.types.is_numeric_dtype(values) and \
                    any(isinstance(c, str) for c in st["categories"]):
                values = values.astype(str)
            known = pd.Index(list(st["categories"]), dtype=object)
            new = pd.unique(np.asarray(values, dtype=object)[
                known.get_indexer(np.asarray(values, dtype=object)) < 0])
            if len(new):
                rows = list(values.index[~values.isin(list(st["categories"]))][:5])
                more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
                raise DesignError(
                    f"newdata has level(s) {short_repr(new[0])}{more} of {role} factor "
                    f"{names[0]!r} not seen in the fit (rows {rows}); the fit has "
                    f"{len(known)} levels")
        elif kind == "numerical":
            data = data.assign(**{names[0]: as_numeric(col, names[0], role)})
    return data


def plain_strings(data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with pandas ``"string"`` (pd.NA) columns as object columns.

    formulaic passes such columns through as if numeric; as object columns they
    are encoded as factors, like the default ``str`` columns.
    """
    conv = [c for c, t in data.dtypes.items()
            if isinstance(t, pd.StringDtype) and t.na_value is pd.NA]
    if not conv:
        return data
    return data.assign(**{c: data[c].astype(object).where(data[c].notna(), np.nan)
                          for c in conv})


def missing_column_error(name: str, data: pd.DataFrame, role: str) -> DesignError:
    """The error for a column not in ``data``, suggesting close names."""
    close = difflib.get_close_matches(name, [str(c) for c in data.columns], n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return DesignError(f"column {name!r} ({role}) is not in the data{hint}")


def missing_mask(data: pd.DataFrame, used: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Rows with a missing value in a used column, and the count per column.
    Infinite values are refused (a DesignError naming the column and rows)."""
    has_na = np.zeros(len(data), dtype=bool)
    counts: dict[str, int] = {}
    for col in used:
        s = data[col]
        dt = s.dtype
        if isinstance(dt, np.dtype) and (dt.kind in "iu" or (
                dt.kind == "f" and np.isfinite(s.to_numpy()).all())):
            continue  # NumPy integers or finite floats: nothing missing (one pass)
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            vals = s.to_numpy(dtype=float, na_value=np.nan)
            bad = np.isinf(vals)
            if bad.any():
                rows = list(data.index[bad][:5])
                raise DesignError(f"column {col!r} has infinite values (rows {rows})")
            na = np.isnan(vals)
        else:
            na = s.isna().to_numpy()
        if na.any():
            counts[col] = int(na.sum())
            has_na |= na
    return has_na, counts


def complete_rows(data: pd.DataFrame, used: list[str],
                  missing: str) -> tuple[pd.DataFrame, int]:
    """The rows of ``data[used]`` without a missing value, and how many were dropped
    (``missing="drop"``, lme4's ``na.omit``); ``missing="raise"`` refuses missing
    values.  Infinite values are refused either way."""
    has_na, counts = missing_mask(data, used)
    if counts:
        detail = ", ".join(f"{c!r} ({k} rows)" for c, k in counts.items())
        if missing == "raise":
            raise DesignError(f"missing values in {detail}; pass missing='drop' to drop them")
        if has_na.all():
            raise DesignError(f"no rows left after dropping rows with missing values in {detail}")
        return data.loc[~has_na, used], int(has_na.sum())
    return data[used], 0


def check_finite(values: np.ndarray, name: str, role: str, index: pd.Index) -> None:
    """Refuse NaN or infinite ``values`` (one or more per row of ``index``), naming rows."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = list(index[np.flatnonzero(bad.reshape(len(index), -1).any(axis=1))[:5]])
        raise DesignError(f"{role} {name!r} has non-finite values (NaN or inf) in rows {rows}")


def text_number_hint(col: pd.Series) -> str:
    """Which value of a text response is not a number (row and an excerpt), or
    that all are numbers written as text (convert with ``pd.to_numeric``)."""
    values = col.dropna()
    if pd.api.types.is_bool_dtype(col) or not len(values):
        return ""
    parsed = pd.to_numeric(values.astype(object), errors="coerce")
    bad = parsed.isna()
    if not bad.any():
        return (f": every value is a number written as text; convert it with "
                f"data[{col.name!r}] = pd.to_numeric(data[{col.name!r}])")
    row = bad.idxmax()
    return (f": row {row!r} holds {short_repr(values[row])}, which is not a number "
            f"({int(bad.sum())} of {len(values)} values are not)")
