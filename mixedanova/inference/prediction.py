"""Predictions: lme4's ``predict.merMod`` with ``re.form``, and intervals.

* :func:`predict` -- ``X b + offset`` plus the BLUPs of the random terms chosen by
  ``re_form`` (all of them by default, none for ``"~0"``/``"NA"``, or the terms
  of a formula such as ``"~(1|plate)"``).  Levels not seen in the fit raise an
  error unless ``allow_new_levels=True``, when they get random effect 0.
* :func:`get_prediction` -- the same means with the standard error of the fixed
  part ``sqrt(x' V x)`` (``V = vcov(beta)``; the Kenward-Roger adjusted covariance
  with ``ddf="kenward-roger"``), its df (Satterthwaite by default, as emmeans'
  ``lmer.df``), a confidence interval for the mean and a prediction interval for
  a new observation.

Prediction interval (a decision; lme4 has none).  For a new observation of a
row, ``var = se_fit^2 + sigma^2 / w`` plus, for each random term,
``z' Sigma_k z`` when the term is left out of ``re_form`` or the row's level is
new (a new draw of that effect), or the conditional variance of the BLUP
``z' Var(b_l | y) z`` when the term is included (lme4's ``condVar``; the
covariance between the BLUP and ``beta`` is ignored).  The interval is
``mean +- t(df) sqrt(var)`` with the df of the fixed part.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from ..design import DesignError, group_labels
from ..errors import ArgumentError
from ..design.formula import parse_formula
from ..errors import FormulaError

__all__ = ["select_terms", "predict", "get_prediction"]


def select_terms(design, re_form) -> list[bool]:
    """Which random terms ``re_form`` keeps (lme4's ``re.form``), one flag per block.

    ``None`` keeps all, ``"~0"``, ``"0"``, ``"NA"`` or ``False`` none, and a formula
    of bar terms (``"~(1|subject)"``) those terms, which must be terms of the model.
    """
    blocks = design.blocks
    if re_form is None or re_form is True:
        return [True] * len(blocks)
    if re_form is False:
        return [False] * len(blocks)
    if not isinstance(re_form, str):
        raise DesignError(f"re_form must be None, '~0' or a formula of random terms such as "
                          f"'~(1|g)', not {re_form!r}")
    text = re_form.strip()
    if text.startswith("~"):
        text = text[1:].strip()
    if text in ("0", "NA", "-1", ""):
        return [False] * len(blocks)
    try:
        parsed = parse_formula(f"y ~ 0 + {text}")
    except FormulaError as exc:
        raise DesignError(f"re_form {re_form!r} is not a formula of random terms: {exc}") \
            from None
    if parsed.fixed not in ("0", "0 + 0") and parsed.fixed.replace(" ", "") != "0":
        raise DesignError(f"re_form {re_form!r} may only hold random terms such as (1|g)")
    keep = [False] * len(blocks)
    for term in parsed.random:
        hits = [k for k, b in enumerate(blocks)
                if b.factors == term.factors and _same_lhs(b.expr, term.expr)]
        if not hits:
            have = ", ".join(b.source for b in blocks)
            raise DesignError(f"re_form term {term.source} is not a random term of the "
                              f"model (it has {have})")
        for k in hits:
            keep[k] = True
    return keep


def _same_lhs(a: str, b: str) -> bool:
    return a.replace(" ", "") == b.replace(" ", "")


def _rows(res, newdata: pd.DataFrame | None, keep: list[bool]):
    """``(index, ok, X, offset, codes, zraw)`` of the rows to predict."""
    d = res.design
    if newdata is None:
        return (d.row_index, np.ones(d.nobs, dtype=bool), d.X, d.offset_values,
                [b.codes for b in d.blocks], [b.zraw for b in d.blocks])
    if not isinstance(newdata, pd.DataFrame):
        raise DesignError(f"newdata must be a pandas DataFrame, not {type(newdata).__name__}")
    needed = d.needed_columns(include_random=False)
    for b, k in zip(d.blocks, keep):
        if k:
            needed += [v for v in b.variables if v not in needed]
    missing_cols = [v for v in needed if v not in newdata.columns]
    if missing_cols:
        raise DesignError(f"newdata lacks column(s) {', '.join(map(repr, missing_cols))}")
    dup = [v for v in needed if int(np.sum(newdata.columns == v)) > 1]
    if dup:
        raise DesignError(f"newdata has column {dup[0]!r} more than once")
    for v in needed:
        if pd.api.types.is_complex_dtype(newdata[v].dtype):
            raise DesignError(f"newdata column {v!r} is complex (dtype {newdata[v].dtype}); "
                              "the fit used real numbers")
    ok = ~newdata[needed].isna().any(axis=1).to_numpy()
    sub = newdata.loc[ok]
    X = d.fixed_matrix(sub) if len(sub) else np.empty((0, d.p))
    off = d.offset_for(sub)
    codes, zraw = [], []
    for b, k in zip(d.blocks, keep):
        c, z = np.full(len(sub), -1, dtype=np.intp), np.full((len(sub), b.q), np.nan)
        if k and len(sub):
            c, z = b.rebuild(sub)
        elif len(sub) and all(v in sub.columns for v in b.lhs_variables):
            try:  # the term's columns, for the prediction interval only
                z = b.term_matrix(sub)
            except Exception:  # noqa: BLE001 - formulaic raises many types
                pass
        codes.append(c)
        zraw.append(z)
    return newdata.index, ok, X, off, codes, zraw


def _check_new_levels(res, newdata, ok, codes, keep, allow_new_levels: bool) -> None:
    if allow_new_levels or newdata is None:
        return
    sub = newdata.loc[ok]
    for b, c, k in zip(res.design.blocks, codes, keep):
        if k and np.any(c < 0):
            labels = group_labels(sub, b.factors)[c < 0]
            rows = list(pd.Index(sub.index[c < 0])[:5])
            raise DesignError(
                f"newdata has level(s) {', '.join(map(repr, pd.unique(labels)[:5]))} of "
                f"grouping factor {b.group!r} not seen in the fit (rows {rows}); pass "
                "allow_new_levels=True to predict them with random effect 0")


def _random_part(res, codes, zraw, keep) -> np.ndarray:
    if not codes:  # no random terms (a marginal model)
        return np.float64(0.0)
    total = np.zeros(len(codes[0]))
    for b_vals, c, z, k in zip(res._blups, codes, zraw, keep):
        if not k:
            continue
        vals = np.where(c[:, None] >= 0, b_vals[np.maximum(c, 0)], 0.0)
        total = total + np.einsum("ij,ij->i", z, vals)
    return total


def predict(res, newdata: pd.DataFrame | None = None, re_form=None,
            allow_new_levels: bool = False) -> pd.Series:
    """Predictions as lme4's ``predict(m, newdata, re.form, allow.new.levels)``.

    The offset (formula ``offset()`` terms and an ``offset=`` column) is included.
    Rows of ``newdata`` with a missing predictor give NaN.
    """
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise ArgumentError(f"allow_new_levels must be True or False, not {allow_new_levels!r}")
    keep = select_terms(res.design, re_form)
    index, ok, X, off, codes, zraw = _rows(res, newdata, keep)
    _check_new_levels(res, newdata, ok, codes, keep, allow_new_levels)
    out = np.full(len(ok), np.nan)
    state = getattr(res, "state", None)  # an LMM (or its row-less view) or a GLMM
    beta = np.asarray(state.beta if state is not None else res.fe_params, dtype=float)
    out[ok] = X @ beta + off + _random_part(res, codes, zraw, keep)
    return pd.Series(out, index=index, name="predicted")


def get_prediction(res, newdata: pd.DataFrame | None = None, re_form=None,
                   allow_new_levels: bool = False, ddf: str = "satterthwaite",
                   level: float = 0.95) -> pd.DataFrame:
    """Means with the fixed part's SE, df, confidence and prediction intervals.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``newdata`` (the fitted rows by default): ``mean, se_fit, df,
        ci_low, ci_high, pi_low, pi_high``.  ``se_fit`` is the SE of ``x' beta``
        (emmeans' SE of the population-level prediction); see the module docstring
        for the prediction interval.
    """
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise ArgumentError(f"allow_new_levels must be True or False, not {allow_new_levels!r}")
    keep = select_terms(res.design, re_form)
    index, ok, X, off, codes, zraw = _rows(res, newdata, keep)
    _check_new_levels(res, newdata, ok, codes, keep, allow_new_levels)
    mean = X @ res.state.beta + off + _random_part(res, codes, zraw, keep)
    inf = res._inference
    if len(X):
        rows = [inf.t_test(x, ddf, level=level) for x in X]
        se = np.array([r["std_err"] for r in rows])
        df = np.array([r["df"] for r in rows], dtype=float)
    else:
        se = df = np.zeros(0)
    w = res.design.prior_weights if newdata is None else np.ones(len(X))
    var_new = res.sigma ** 2 / w
    sigmas = res._term_covariances()
    condvar = res.random_effects_cov
    for k, (c, z) in enumerate(zip(codes, zraw)):
        full = np.einsum("ij,jk,ik->i", z, sigmas[k], z)
        if keep[k]:
            cv = condvar[k][np.maximum(c, 0)]
            cond = np.einsum("ij,ijk,ik->i", z, cv, z)
            var_new = var_new + np.where(c >= 0, cond, full)
        else:
            var_new = var_new + full
    alpha = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        q = np.where(np.isfinite(df), stats.t.ppf(1.0 - alpha, np.where(np.isfinite(df), df, 1.0)),
                     stats.norm.ppf(1.0 - alpha))
    pse = np.sqrt(se ** 2 + var_new)
    cols = {"mean": mean, "se_fit": se, "df": df, "ci_low": mean - q * se,
            "ci_high": mean + q * se, "pi_low": mean - q * pse, "pi_high": mean + q * pse}
    out = pd.DataFrame({k: np.full(len(ok), np.nan) for k in cols}, index=index)
    for k, v in cols.items():
        out.loc[ok, k] = v
    out.attrs["ddf"] = ddf
    out.attrs["level"] = level
    return out
