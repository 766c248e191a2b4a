"""Likelihood-ratio comparisons: lme4's ``anova(m0, m1, ...)`` and lmerTest's ``ranova(m)``.

:func:`compare` orders the models by number of parameters and tests each
against the previous one (``Chisq = 2 max(0, diff(logLik))`` on ``diff(npar)``
df).  GLMMs (maximum likelihood; Laplace and quadrature fits alike keep the
whole log-likelihood, so they compare) go through unchanged.  As lme4
(``refit = TRUE``), REML fits are refitted with ML first, and the table says so; ``refit=False`` keeps the REML fits, which is only valid when
all models have the same fixed effects -- with different fixed effects the ML
refit is done anyway (REML likelihoods of different fixed-effect models are not
comparable) and noted.

:func:`ranova` drops or reduces each random-effects term in turn and refits
by the same method (lmerTest's ``ranova(m, reduce.terms = TRUE)``): a term
``(x | g)`` loses its highest-order non-intercept terms one at a time (the last
one leaves ``(1 | g)``), a term with only an intercept is removed.  One
deliberate difference: a term without intercept such as ``(0 + x | g)`` (also
from ``(x || g)``) is removed when its last term is dropped, where lmerTest
replaces it by ``(1 | g)`` (which duplicates an existing ``(1 | g)`` term and
leaves the test with 0 df).  When no
random term is left the reduced model is a linear model, whose (restricted)
log-likelihood is R's ``logLik.lm(REML = ...)``.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DesignError
from ..design.formula import grouping_text
from .tables import make_table

__all__ = ["compare", "ranova"]

_LOG2PI = math.log(2.0 * math.pi)


def _criteria(res) -> dict:
    return {"npar": int(res.npar), "AIC": float(res.aic), "BIC": float(res.bic),
            "logLik": float(res.llf), "deviance": -2.0 * float(res.llf)}


def _same_fixed(models) -> bool:
    if any(getattr(m.design, "X", None) is None for m in models):
        # fits without rows (Dask): the same columns with the same summed X'X
        xtx = [getattr(m.model, "xtx", None) for m in models]
        return all(x is not None for x in xtx) and all(
            m.design.x_names == models[0].design.x_names and x.shape == xtx[0].shape
            and np.allclose(x, xtx[0]) for m, x in zip(models[1:], xtx[1:]))
    X0 = models[0].design.X
    return all(m.design.X.shape == X0.shape and np.allclose(m.design.X, X0)
               for m in models[1:])


def _refit_ml(res):
    if res.method == "ML":
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return res.model.fit("ML", start=res.state.theta, warn=False)


def compare(*models, names=None, refit: bool | None = None) -> pd.DataFrame:
    """Likelihood-ratio table of nested mixed models (lme4's ``anova(m0, m1, ...)``).

    Parameters
    ----------
    *models : LinearMixedResults
        Two or more fits to the same observations.
    names : list of str, optional
        Row labels (default ``model1, model2, ...`` in the order given).
    refit : bool, optional
        ``None``/``True``: refit REML fits with ML first (lme4's default).
        ``False``: compare the fits as they are, unless they are REML fits with
        different fixed effects, which are refitted with ML anyway.

    Returns
    -------
    pandas.DataFrame
        Rows ordered by ``npar``; columns ``npar, AIC, BIC, logLik, deviance,
        Chisq, Df, p``.  Printing shows the heading and any refit note
        (``attrs["refit"]`` says whether models were refitted).

    Examples
    --------
    >>> import mixedanova as ma
    >>> sleep = ma.load_dataset("sleepstudy")
    >>> m0 = ma.lmm("Reaction ~ Days + (1 | Subject)", sleep)
    >>> m1 = ma.lmm("Reaction ~ Days + (Days | Subject)", sleep)
    >>> table = ma.compare(m0, m1)             # lme4: anova(m0, m1), ML refits
    >>> print(table[["npar", "Chisq", "Df"]].round(3).to_string())
            npar   Chisq   Df
    model1     4     NaN  NaN
    model2     6  42.139  2.0
    """
    from scipy import stats
    if len(models) == 1 and isinstance(models[0], (list, tuple)):
        models = tuple(models[0])
    if len(models) < 2:
        raise ArgumentError("compare() needs at least two models")
    bad = [i + 1 for i, m in enumerate(models) if not hasattr(m, "design") or
           not hasattr(m, "llf")]
    if bad:
        raise ArgumentError(f"compare() takes fitted models (results of ma.lmm); argument(s) "
                            f"{bad} are {', '.join(type(models[i - 1]).__name__ for i in bad)}")
    if isinstance(names, str):
        raise ArgumentError(f"names must be a list of {len(models)} labels, not the string "
                            f"{names!r}")
    names = [f"model{i + 1}" for i in range(len(models))] if names is None else list(names)
    if len(names) != len(models):
        raise ArgumentError(f"names has {len(names)} labels for {len(models)} models")
    if len(set(map(str, names))) != len(names):
        raise ArgumentError(f"names must be distinct, not {names!r}")
    if refit is not None and not isinstance(refit, (bool, np.bool_)):
        raise ArgumentError(f"refit must be None, True or False, not {refit!r}")
    glmm = [hasattr(m, "family") for m in models]
    if any(glmm) and not all(glmm):
        raise ArgumentError("compare() cannot mix linear mixed models and GLMMs (their "
                            "likelihoods are of different responses)")
    if all(glmm) and len({str(m.family) for m in models}) > 1:
        raise ArgumentError(f"compare() needs GLMMs of one family and link, not "
                            f"{', '.join(sorted({str(m.family) for m in models}))}")
    nobs = {m.nobs for m in models}
    if len(nobs) > 1:
        raise DesignError(f"models were fitted to different numbers of observations "
                          f"({sorted(nobs)}); compare fits to the same rows")
    if any(m.method not in ("REML", "ML") for m in models):
        which = [n for n, m in zip(names, models) if m.method not in ("REML", "ML")]
        raise ArgumentError(f"compare() needs REML or ML fits; {', '.join(map(str, which))} "
                            f"{'is' if len(which) == 1 else 'are'} method='ANOVA' fits")
    any_reml = any(m.method == "REML" for m in models)
    notes = []
    do_refit = any_reml and (refit is None or refit)
    if any_reml and refit is False:
        if not _same_fixed(models):
            do_refit = True
            notes.append("the fixed effects differ: REML likelihoods are not comparable, "
                         "so the models were refitted with ML despite refit=False")
        elif any(m.method == "ML" for m in models):
            do_refit = True
            notes.append("REML and ML fits cannot be compared: all were refitted with ML")
    if do_refit:
        models = tuple(_refit_ml(m) for m in models)
        if not notes:
            notes.append("refitting model(s) with ML (instead of REML)")
    rows = [_criteria(m) for m in models]
    order = sorted(range(len(models)), key=lambda i: rows[i]["npar"])
    frame = pd.DataFrame([rows[i] for i in order], index=[names[i] for i in order])
    llk = frame["logLik"].to_numpy()
    npar = frame["npar"].to_numpy()
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(llk))])
    df = np.concatenate([[np.nan], np.diff(npar).astype(float)])
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(chisq, np.where(df > 0, df, 1.0)), np.nan)
    frame["Chisq"] = chisq
    frame["Df"] = df
    frame["p"] = p
    heading = "Likelihood-ratio tests (lme4 anova)\nModels:\n" + "\n".join(
        _model_line(names[i], models[i]) for i in order)
    table = make_table(frame, heading, notes)
    table.attrs["refit"] = bool(do_refit)
    return table


def _model_line(name: str, res) -> str:
    """A model as its formula plus what else sets it apart: the residual
    structure (``residual=AR1(group='patient', order='visit')``), prior weights;
    each on a line of its own when one line would pass 80 characters."""
    parts = [f"{name}: {_formula_text(res)}"]
    residual = getattr(getattr(res, "model", None), "residual", None)
    if residual is not None:
        specs = residual if isinstance(residual, tuple) else (residual,)
        parts.append("residual=" + " + ".join(repr(p) for p in specs))
    if getattr(res.design, "has_weights", False):
        parts.append("with prior weights")
    line = ", ".join(parts)
    return line if len(line) <= 80 else ",\n    ".join(parts)


def _formula_text(res) -> str:
    """The formula as the user wrote it (a GLMM keeps it; an LMM's design does)."""
    text = getattr(res, "formula", None)
    return text if isinstance(text, str) and text else res.design.formula.formula


# ---------------------------------------------------------------------- ranova
def _lhs_terms(expr: str) -> tuple[list[str], bool]:
    """Non-intercept term labels of a random term's left-hand side and whether it
    keeps the intercept."""
    from formulaic import Formula
    labels, intercept = [], False
    for t in Formula(expr):
        s = str(t)
        if s == "1":
            intercept = True
        else:
            labels.append(s)
    return labels, intercept


def _drop_scope(labels: list[str]) -> list[str]:
    """Terms not contained in another term (R's ``drop.scope``)."""
    sets = [set(lab.split(":")) for lab in labels]
    return [lab for lab, s in zip(labels, sets)
            if not any(s < o for o in sets)]


def _term_text(res, k: int) -> str:
    """The random term as lmerTest prints it (``"Days | Subject"``)."""
    spec = res.design.formula.random[k]
    siblings = [r for r in res.design.formula.random if r.source == spec.source]
    if len(siblings) == 1:
        inner = spec.source.strip()
        if inner.startswith("(") and inner.endswith(")"):
            inner = inner[1:-1]
        lhs, rhs = inner.split("|", 1)
        lhs = re.sub(r"\s*\+\s*", " + ", lhs.strip())
        return f"{lhs} | {rhs.strip()}"
    lhs = re.sub(r"\s*\+\s*", " + ", spec.expr.strip())
    return f"{lhs} | {spec.group}"


def _formula(res, random_exprs: list[tuple[str, str]]) -> str:
    f = res.design.formula
    parts = [f.fixed] + [f"({e} | {g})" for e, g in random_exprs]
    return f"{f.response} ~ {' + '.join(parts)}"


def _lm_loglik(res, reml: bool) -> tuple[float, int]:
    """R's ``logLik(lm(...), REML = reml)`` and its df (``p + 1``)."""
    d = res.design
    w = d.prior_weights  # prior weights and offset as lm(weights =, offset =)
    sw = np.sqrt(w)
    X, y = d.X * sw[:, None], (d.y - d.offset_values) * sw
    n, p = X.shape
    q, r = np.linalg.qr(X)
    resid = y - q @ (q.T @ y)
    rss = float(resid @ resid)
    N = n - p if reml else n
    val = 0.5 * (-N * (_LOG2PI + 1.0 - math.log(N) + math.log(rss)))
    if reml:
        val -= float(np.sum(np.log(np.abs(np.diag(r)))))
    val += 0.5 * float(np.sum(np.log(w)))
    return val, p + 1


def ranova(res, reduce_terms: bool = True) -> pd.DataFrame:
    """Likelihood-ratio tests for the random-effects terms (lmerTest's ``ranova``).

    Parameters
    ----------
    res : LinearMixedResults
        A REML or ML fit; reduced models are fitted by the same method.
    reduce_terms : bool
        Reduce terms with slopes to simpler terms (lmerTest's default) rather
        than removing whole terms.

    Returns
    -------
    pandas.DataFrame
        First row ``<none>`` (the model), then one row per reduced model:
        ``npar, logLik, AIC, LRT, Df, p``.
    """
    from scipy import stats
    if res.method not in ("REML", "ML"):
        raise ArgumentError(f"ranova() needs a REML or ML fit, not method={res.method!r}")
    if not isinstance(reduce_terms, (bool, np.bool_)):
        raise ArgumentError(f"reduce_terms must be True or False, not {reduce_terms!r}")
    spec = res.design.formula.random
    current = [(r.expr, grouping_text(r.factors)) for r in spec]
    reduced: dict[str, list[tuple[str, str]]] = {}
    for k, r in enumerate(spec):
        text = _term_text(res, k)
        others = current[:k] + current[k + 1:]
        labels, intercept = _lhs_terms(r.expr)
        scope = _drop_scope(labels)
        if not reduce_terms or not labels or not scope:
            reduced[f"({text})"] = others
            continue
        for scp in scope:
            keep = [lab for lab in labels if lab != scp]
            label = f"{scp} in ({text})"
            if not keep and not intercept:
                reduced[label] = others  # (0 + x | g) -> no term (lmerTest: (1 | g))
                continue
            new_lhs = "1" if not keep else \
                ("1 + " if intercept else "0 + ") + " + ".join(keep)
            reduced[label] = others[:k] + [(new_lhs, grouping_text(r.factors))] + others[k:]
    reml = res.method == "REML"
    rows = [{"npar": int(res.npar), "logLik": float(res.llf)}]
    labels_out = ["<none>"]
    for label, terms in reduced.items():
        if terms:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = res.model.update(_formula(res, terms)).fit(res.method, warn=False)
            if fit.nobs != res.nobs:
                raise DesignError("number of rows in use has changed: remove missing values")
            rows.append({"npar": int(fit.npar), "logLik": float(fit.llf)})
        elif res.state.residual is not None:  # gls with the same structure
            from ..likelihood.residual_fit import gls_fit

            structure = res.state.residual.structure
            if res.state.residual.info.get("free") is not None:
                raise ArgumentError("ranova with residual-structure parameters held at given "
                                    "values (fixed=) is not available so far (the reduced "
                                    "gls model would estimate them)")
            value, _ = gls_fit(structure, res.design.X, res.design.y, reml)
            rows.append({"npar": res.design.p + 1 + structure.n_par, "logLik": -0.5 * value})
        else:  # a fit without rows (Dask) has the lm's logLik from its sums
            llf, df = (res.null_loglik(reml) if hasattr(res, "null_loglik")
                       else _lm_loglik(res, reml))
            rows.append({"npar": int(df), "logLik": llf})
        labels_out.append(label)
    frame = pd.DataFrame(rows, index=labels_out)
    frame["AIC"] = -2.0 * frame["logLik"] + 2.0 * frame["npar"]
    lrt = 2.0 * (frame["logLik"].iloc[0] - frame["logLik"].to_numpy())
    df = (frame["npar"].iloc[0] - frame["npar"].to_numpy()).astype(float)
    lrt[0], df[0] = np.nan, np.nan
    with np.errstate(invalid="ignore"):
        p = np.where(df > 0, stats.chi2.sf(lrt, np.where(df > 0, df, 1.0)), np.nan)
    frame["LRT"] = lrt
    frame["Df"] = df
    frame["p"] = p
    heading = ("ANOVA-like table for random-effects: Single term deletions\n"
               f"Model: {res.design.formula.formula}")
    return make_table(frame, heading)
