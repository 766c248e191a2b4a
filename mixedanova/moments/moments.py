"""Classical ANOVA fits: sums of squares, EMS, F tests and moment estimates.

:func:`fit_anova` is the engine behind ``lmm(..., method="ANOVA")``.  It
decomposes the response into Type I (sequential) sums of squares, fitting the
fixed terms first and then the random terms (each group by degree, in the
order written), and attaches expected mean squares:

* **Balanced designs** (``method="rules"``, or ``"auto"`` when the data are
  balanced): EMS coefficients from the classical subscript rules
  (:mod:`mixedanova.moments.ems`), exact integers, restricted or unrestricted
  mixed model.
* **Unbalanced designs** (``method="method3"``, or ``"auto"`` otherwise):
  Henderson's Method III with Type I sums of squares, as SAS PROC VARCOMP
  METHOD=TYPE1 and R's VCA::anovaMM compute it: the coefficient of ``s2_U``
  in ``E(MS_k)`` is ``tr(Z_U' M_k Z_U) / df_k``, ``M_k`` the projection on the
  k-th increment.  Only the unrestricted (iid) model is defined here.  For a
  fixed term, ``Q(T)`` then denotes the quadratic form in the fixed effects
  that its Type I hypothesis tests.

Moment estimates solve ``MS = EMS`` over the random sources and the residual.
Each estimate is a linear combination ``sum a_i MS_i``; its standard error is
``sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2))`` (the unbiased estimate of its
variance under normality) and its Cochran-Satterthwaite interval is
``[nu s / chi2_{1-alpha/2}(nu), nu s / chi2_{alpha/2}(nu)]`` with
``nu = (sum a_i MS_i)^2 / sum (a_i MS_i)^2 / df_i``.  Negative estimates are
kept in ``estimates``, set to 0 in ``estimates_truncated`` and flagged in
``negative`` (the other components are not re-estimated).
"""
from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DesignError, UnknownNameError
from .anova_data import AnovaData, anova_data
from .anova_design import as_term, balanced_spec, order_terms
from .ems import rules_core
from .ems_table import (
    RESIDUAL,
    assemble,
    coef_column,
    error_terms,
    fill_tests,
    own_components,
)
from .sums_of_squares import balanced_ss, sequential_sums

__all__ = [
    "METHOD_RULES",
    "METHOD_III",
    "AnovaFitState",
    "MomentEstimates",
    "VarcompInterval",
    "fit_anova",
    "fit_anova_data",
    "moments_from_mean_squares",
    "varcomp_ci",
    "varcomp_table",
]

METHOD_RULES = "EMS rules (balanced)"
METHOD_III = "Henderson Method III (Type I SS)"


@dataclass(frozen=True, eq=False)
class MomentEstimates:
    """Method-of-moments variance components from an EMS table.

    Attributes
    ----------
    components : tuple of str
        Variance components, Residual last.
    estimates : Series
        Raw estimates (may be negative).
    estimates_truncated : Series
        Negative estimates set to 0.
    negative : Series of bool
        Which raw estimates were negative.
    se : Series
        ``sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2))``.
    ms_coefficients : DataFrame
        Rows: components, columns: sources; ``estimate = ms_coefficients @ MS``.
    mean_squares, df : Series
        The mean squares and df of the sources used (random ones + Residual).
    """

    components: tuple[str, ...]
    estimates: pd.Series
    estimates_truncated: pd.Series
    negative: pd.Series
    se: pd.Series
    ms_coefficients: pd.DataFrame
    mean_squares: pd.Series
    df: pd.Series

    def varcomp(self, level: float = 0.95) -> pd.DataFrame:
        """Per component: estimate, truncated, SD, SE, Satterthwaite df and interval
        (:func:`varcomp_table`)."""
        return varcomp_table(self, level)

    def ci(self, combination: Mapping[str, float] | str,
           level: float = 0.95) -> "VarcompInterval":
        """Estimate, SE and Cochran-Satterthwaite interval of ``sum w_k s2_k``
        (:func:`varcomp_ci`), e.g. ``"s2_batch + s2_sample + s2_e"``."""
        return varcomp_ci(self, combination, level)

    def __repr__(self) -> str:
        return "MomentEstimates\n" + self.varcomp().to_string()

    def _repr_html_(self) -> str:
        return "<p>MomentEstimates</p>" + self.varcomp().to_html()


@dataclass(frozen=True, eq=False)
class AnovaFitState(MomentEstimates):
    """Result of :func:`fit_anova`: the moment estimates (the fields and methods of
    :class:`MomentEstimates`) with the table they come from.

    Attributes
    ----------
    table : DataFrame
        The EMS / ANOVA table (layout in :mod:`mixedanova.moments.ems_table`);
        ``table.attrs["method"]`` repeats :attr:`method`.
    method : str
        ``"EMS rules (balanced)"`` or ``"Henderson Method III (Type I SS)"``.
    ems_model : str
        ``"unrestricted"`` or ``"restricted"``.
    note : str
        Why Method III was used under ``method="auto"`` (empty otherwise).
    error_terms : dict
        Source -> {source: coefficient} of its F-test denominator (None when
        there is no test).
    nobs : int
    response : str
    fixed_terms, random_terms : tuple of str
        Term labels in table order.
    balanced : bool
        True when the EMS rules were used (a balanced design); False for
        Method III, also when it was requested on balanced data.
    """

    table: pd.DataFrame
    method: str
    ems_model: str
    note: str
    error_terms: dict = field(default_factory=dict)
    nobs: int = 0
    response: str = ""
    fixed_terms: tuple[str, ...] = ()
    random_terms: tuple[str, ...] = ()
    balanced: bool = True

    def __repr__(self) -> str:
        return f"AnovaFitState ({self.method})\n" + self.varcomp().to_string()

    def _repr_html_(self) -> str:
        return f"<p>AnovaFitState ({self.method})</p>" + self.varcomp().to_html()


@dataclass(frozen=True, eq=False, repr=False)
class VarcompInterval:
    """Estimate, SE and Cochran-Satterthwaite interval of ``sum w_k s2_k``."""

    combination: dict
    estimate: float
    se: float
    df: float
    lower: float
    upper: float
    level: float
    ms_coefficients: pd.Series

    def to_frame(self) -> pd.DataFrame:
        """One row: the combination, estimate, SE, Satterthwaite df and interval."""
        return pd.DataFrame({"estimate": [self.estimate], "SE": [self.se], "df": [self.df],
                             "lower": [self.lower], "upper": [self.upper]},
                            index=[self.label])

    @property
    def label(self) -> str:
        """The combination as text, e.g. ``s2_Block + s2_Residual``."""
        parts = []
        for k, w in self.combination.items():
            sign = "-" if w < 0 else "+"
            mag = abs(w)
            term = f"s2_{k}" if mag == 1 else f"{mag:g} s2_{k}"
            parts.append((sign, term))
        text = " ".join(f"{s} {t}" for s, t in parts)
        return text[2:] if text.startswith("+ ") else "-" + text[1:]

    def __repr__(self) -> str:
        head = (f"{self.label}: estimate {self.estimate:.6g}, SE {self.se:.4g}, "
                f"df {self.df:.4g}")
        return (f"{head}\n{100 * self.level:g}% Cochran-Satterthwaite interval: "
                f"({self.lower:.6g}, {self.upper:.6g})")

    __str__ = __repr__


def fit_anova(data: pd.DataFrame, response: str, fixed_terms: Sequence[Sequence[str] | str],
              random_terms: Sequence[Sequence[str] | str], *, intercept: bool = True,
              ems: str = "unrestricted", method: str = "auto",
              covariates: Collection[str] | None = None) -> AnovaFitState:
    """Classical random-effects ANOVA with EMS, F tests and moment estimates.

    Parameters
    ----------
    data : DataFrame
        Complete rows only; every variable is a column.
    response : str
        Numeric response column.
    fixed_terms : sequence of tuples of str
        E.g. ``[("Variety",), ("nitro_f",), ("Variety", "nitro_f")]``.
    random_terms : sequence of tuples of str
        Random-intercept grouping terms, e.g. ``[("Block",), ("Block",
        "Variety")]``; labels (``"Block:Variety"``) are the variance
        component names.
    intercept : bool
        Fit an overall mean first (required by the EMS rules).
    ems : {"unrestricted", "restricted"}
        Mixed-model convention for balanced designs (see
        :mod:`mixedanova.moments.ems`); "restricted" needs the rules.
    method : {"auto", "rules", "method3"}
        ``"auto"``: the rules when the design is balanced, hierarchical and
        has factors only, else Method III (the reason is in ``note``).
        ``"rules"`` refuses designs the rules do not cover; ``"method3"``
        always uses Henderson's Method III.
    covariates : collection of str, optional
        Fixed-term variables used as numeric covariates (default: numeric
        dtypes); they force Method III.

    Returns
    -------
    AnovaFitState

    Raises
    ------
    ValueError
        Bad terms or data (the message names the culprit), ``method="rules"``
        on a design the rules cannot handle, the restricted model with
        Method III, a random term without degrees of freedom, no residual
        degrees of freedom.
    """
    _check_options(ems, method)
    fixed = [as_term(t, "fixed") for t in fixed_terms]
    rand = [as_term(t, "random") for t in random_terms]
    coded = anova_data(data, response, [x for t in fixed + rand for x in t])
    return fit_anova_data(coded, fixed, rand, intercept=intercept, ems=ems, method=method,
                          covariates=covariates)


def _check_options(ems: str, method: str) -> str:
    """Check ``ems`` and ``method`` of :func:`fit_anova`; the canonical method."""
    if ems not in ("unrestricted", "restricted"):
        raise ArgumentError(f"ems must be 'unrestricted' or 'restricted', got {ems!r}")
    aliases = {"auto": "auto", "rules": "rules", "balanced": "rules", "method3": "method3",
               "type1": "method3", "henderson3": "method3"}
    if method not in aliases:
        raise ArgumentError(f"method must be 'auto', 'rules' or 'method3', got {method!r}")
    return aliases[method]


def fit_anova_data(data: AnovaData, fixed_terms: Sequence[Sequence[str] | str],
                   random_terms: Sequence[Sequence[str] | str], *, intercept: bool = True,
                   ems: str = "unrestricted", method: str = "auto",
                   covariates: Collection[str] | None = None) -> AnovaFitState:
    """:func:`fit_anova` on the response and coded variables of ``data``.

    This is the engine: it reads ``data.y`` and the variables' level codes
    (and a covariate's numbers), never a DataFrame.  ``lmm(..., method="ANOVA")``
    builds ``data`` from the model's design; :func:`fit_anova` from a DataFrame.

    Parameters
    ----------
    data : AnovaData
        The response and every variable of the terms
        (:mod:`mixedanova.moments.anova_data`).
    fixed_terms, random_terms, intercept, ems, method, covariates
        As for :func:`fit_anova`.

    Returns
    -------
    AnovaFitState
    """
    method = _check_options(ems, method)
    terms, cov = order_terms(data, fixed_terms, random_terms, covariates)
    spec, note = None, ""
    if method != "method3":
        if intercept:
            spec, note = balanced_spec(data, terms, cov)
        else:
            note = "the EMS rules need an intercept"
        if spec is None and method == "rules":
            raise DesignError(f"cannot use the EMS rules: {note}")
    if spec is None and ems == "restricted":
        raise DesignError("the restricted model is only defined for balanced designs handled by the "
                         f"EMS rules ({note or 'method3 requested'}); use ems='unrestricted'")
    if spec is not None:
        seq = balanced_ss(data, terms, spec)
    else:
        seq = sequential_sums(data, terms, cov, intercept)
    labels = [t.label for t in terms]
    fixed_flags = [not t.random for t in terms]
    comps = [t.label for t in terms if t.random] + [RESIDUAL]
    for lab, t, d in zip(labels, terms, seq.df):
        if t.random and d == 0:
            raise DesignError(f"random term {lab!r} has no degrees of freedom left after the terms "
                             "fitted before it; its variance component is not estimable")
    if seq.df[-1] <= 0:
        raise DesignError("no residual degrees of freedom: the model is saturated, so the residual "
                         "variance cannot be estimated")
    if spec is not None:
        coef, q_coef, rule_df, _ = rules_core(spec, ems == "restricted")
        if not np.array_equal(rule_df, seq.df[:-1]):
            bad = [lab for lab, a, b in zip(labels, rule_df, seq.df) if a != b]
            msg = f"rules and data disagree on the degrees of freedom of {bad}"
            if method == "rules" or ems == "restricted":
                raise DesignError(f"cannot use the EMS rules: {msg}")
            spec, note = None, msg
    if spec is not None:
        used = METHOD_RULES
    else:
        used = METHOD_III
        with np.errstate(divide="ignore", invalid="ignore"):
            per_ms = seq.traces / seq.df[:, None]
        per_ms = np.where(seq.df[:, None] > 0, per_ms, 0.0)
        coef = np.hstack([per_ms, np.ones((len(seq.df), 1))])
        coef[np.abs(coef) < 1e-12 * max(1.0, float(np.max(np.abs(coef))))] = 0.0
        q_coef = np.full(len(seq.df), np.nan)
    table = assemble(labels, comps, coef, q_coef, fixed_flags, seq.df)
    table["sum_sq"] = seq.sum_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        table["mean_sq"] = np.where(seq.df > 0, seq.sum_sq / seq.df, np.nan)
    combos = error_terms(table)
    table = fill_tests(table, combos)
    table.attrs["method"] = used
    table.attrs["ems_model"] = ems
    mom = moments_from_mean_squares(table)
    return AnovaFitState(
        **{f.name: getattr(mom, f.name) for f in fields(MomentEstimates)},
        table=table, method=used, ems_model=ems, note=note if used == METHOD_III else "",
        error_terms=combos, nobs=seq.nobs, response=data.response,
        fixed_terms=tuple(t.label for t in terms if not t.random),
        random_terms=tuple(t.label for t in terms if t.random), balanced=spec is not None)


def moments_from_mean_squares(ems_table: pd.DataFrame,
                              mean_squares: Mapping[str, float] | pd.Series | None = None,
                              df: Mapping[str, float] | pd.Series | None = None) -> MomentEstimates:
    """Solve ``MS = EMS`` for the variance components.

    Parameters
    ----------
    ems_table : DataFrame
        From :func:`mixedanova.moments.ems.ems_rules` or a fit.
    mean_squares : mapping, optional
        Source -> mean square for every random source and the residual
        (default: the table's ``mean_sq``).
    df : mapping, optional
        Source -> df (default: the table's ``df``), used for the SEs.

    Returns
    -------
    MomentEstimates
        ``.varcomp()`` adds SEs and Cochran-Satterthwaite intervals,
        ``.ci("s2_A + s2_e")`` those of a sum of components.

    Notes
    -----
    For a study known only by its published ANOVA table, build ``ems_table``
    with :func:`mixedanova.moments.ems.ems_rules` (balanced design, then pass
    ``mean_squares`` and ``df``) or from the printed EMS with
    :func:`mixedanova.moments.published.ems_table_from_text`.
    """
    if not isinstance(ems_table, pd.DataFrame) or "df" not in ems_table.columns:
        raise ArgumentError(f"ems_table must be the DataFrame of ma.ems_rules() or of a fit's "
                            f"ems_table(), not {type(ems_table).__name__}")
    comps, own = own_components(ems_table)
    sources = [s for s, o in zip(ems_table.index, own) if o is not None]
    try:
        if mean_squares is None:
            ms = ems_table["mean_sq"].astype(float)
        else:
            ms = pd.Series(mean_squares, dtype=float)
    except (KeyError, TypeError, ValueError):
        raise ArgumentError("mean_squares must map each source to a number (or the table "
                            "must have a mean_sq column)") from None
    try:
        dfs = ems_table["df"].astype(float) if df is None else pd.Series(df, dtype=float)
    except (TypeError, ValueError):
        raise ArgumentError("df must map each source to a number") from None
    missing = [s for s in sources if s not in ms.index or not np.isfinite(ms[s])]
    if missing:
        raise DesignError(f"mean squares missing for source(s) {missing}")
    ms = ms.reindex(sources)
    dfs = dfs.reindex(sources)
    mat = np.zeros((len(sources), len(comps)))
    for i, s in enumerate(sources):
        mat[i] = ems_table.loc[s, [coef_column(c) for c in comps]].to_numpy(dtype=float)
    if np.linalg.matrix_rank(mat) < len(comps):
        raise DesignError("the EMS of the random sources do not determine the variance components")
    a_mat = np.linalg.solve(mat, np.eye(len(sources)))  # components x sources
    est = a_mat @ ms.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(2.0 * ((a_mat**2) @ (ms.to_numpy() ** 2 / (dfs.to_numpy() + 2.0))))
    estimates = pd.Series(est, index=comps, name="estimate")
    negative = pd.Series(est < 0, index=comps, name="negative")
    truncated = estimates.clip(lower=0.0).rename("estimate_truncated")
    return MomentEstimates(
        components=tuple(comps), estimates=estimates, estimates_truncated=truncated,
        negative=negative, se=pd.Series(se, index=comps, name="se"),
        ms_coefficients=pd.DataFrame(a_mat, index=comps, columns=sources),
        mean_squares=ms.rename("mean_sq"), df=dfs.rename("df"))


_NUMBER = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_TOKEN = re.compile(r"\s*([+-])?\s*" + _NUMBER + r"?\s*\*?\s*([A-Za-z_][A-Za-z0-9_:.]*)\s*")


def _parse_combination(text: str, components: Sequence[str]) -> dict[str, float]:
    body = text.split("=", 1)[1] if "=" in text else text
    out: dict[str, float] = {}
    pos = 0
    first = True
    while pos < len(body.rstrip()):
        m = _TOKEN.match(body, pos)
        if m is None or (not first and m.group(1) is None):
            raise ArgumentError(f"cannot parse the combination {text!r} at {body[pos:]!r}")
        sign = -1.0 if m.group(1) == "-" else 1.0
        k = float(m.group(2)) if m.group(2) else 1.0
        name = _resolve(m.group(3), components)
        out[name] = out.get(name, 0.0) + sign * k
        pos = m.end()
        first = False
    if not out:
        raise ArgumentError(f"empty combination {text!r}")
    return out


def _resolve(name: str, components: Sequence[str]) -> str:
    """A component named as itself, ``s2_<name>`` or with the factors of an
    interaction in another order (``batch:cask`` for lme4's ``cask:batch``)."""
    if name in components:
        return name
    if name in ("s2_e", "e"):
        return RESIDUAL
    if name.startswith("s2_") and name[3:] in components:
        return name[3:]
    bare = name[3:] if name.startswith("s2_") else name
    same = [c for c in components if _factor_set(c) == _factor_set(bare)]
    if len(same) == 1:
        return same[0]
    raise UnknownNameError(f"unknown variance component {name!r}; available: "
                     f"{', '.join(coef_column(c) for c in components)} (or the bare names)")


def _factor_set(name: str) -> frozenset:
    return frozenset(p for p in re.split(r"[:()\s]+", name) if p)


def varcomp_ci(state: AnovaFitState | MomentEstimates,
               combination: Mapping[str, float] | str, level: float = 0.95) -> VarcompInterval:
    """Estimate, SE and Cochran-Satterthwaite interval of a sum of components.

    Parameters
    ----------
    state : AnovaFitState or MomentEstimates
    combination : mapping or str
        Component -> weight (``{"Block": 1, "Residual": 1}``) or text such as
        ``"V(Y) = s2_Block + s2_e"`` or ``"2 s2_A - s2_B"`` (``s2_e`` and
        ``Residual`` both name the residual).
    level : float
        Confidence level.

    Returns
    -------
    VarcompInterval
        ``df`` is the Satterthwaite ``nu``.  The interval is NaN when the
        estimate is not positive.
    """
    from scipy import stats
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.number)) \
            or not 0 < level < 1:
        raise ArgumentError(f"level must be a number in (0, 1), not {level!r}")
    comps = list(state.components)
    if isinstance(combination, str):
        weights = _parse_combination(combination, comps)
    elif isinstance(combination, Mapping):
        weights = {}
        for k, v in combination.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)) \
                    or not np.isfinite(v):
                raise ArgumentError(f"the weight of {k!r} in the combination must be a finite "
                                    f"number, not {v!r}")
            weights[_resolve(str(k), comps)] = float(v)
    else:
        raise ArgumentError(f"combination must be a string such as 's2_a + s2_e' or a dict "
                            f"{{component: weight}}, not {type(combination).__name__}")
    if not any(weights.values()):
        raise ArgumentError(f"the combination {combination!r} gives every component weight 0")
    w = np.array([weights.get(c, 0.0) for c in comps])
    b = pd.Series(w @ state.ms_coefficients.to_numpy(), index=state.ms_coefficients.columns)
    terms = b.to_numpy() * state.mean_squares.to_numpy()
    dfs = state.df.to_numpy()
    est = float(terms.sum())
    se = float(np.sqrt(2.0 * np.sum(terms**2 / (dfs + 2.0))))
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = est**2 / float(np.sum(terms**2 / dfs))
    if est > 0 and np.isfinite(nu) and nu > 0:
        alpha = 1.0 - level
        lower = nu * est / stats.chi2.ppf(1 - alpha / 2, nu)
        upper = nu * est / stats.chi2.ppf(alpha / 2, nu)
    else:
        lower = upper = np.nan
    return VarcompInterval(weights, est, se, float(nu), float(lower), float(upper), level, b)


def varcomp_table(state: AnovaFitState | MomentEstimates, level: float = 0.95) -> pd.DataFrame:
    """Per-component estimates, SEs, Satterthwaite df and intervals.

    Columns: ``estimate`` (raw), ``truncated``, ``negative``, ``sd``
    (square root of the truncated estimate), ``se``, ``df`` (nu), ``lower``,
    ``upper``.
    """
    rows = []
    for c in state.components:
        ci = varcomp_ci(state, {c: 1.0}, level)
        rows.append({"estimate": state.estimates[c], "truncated": state.estimates_truncated[c],
                     "negative": bool(state.negative[c]),
                     "sd": float(np.sqrt(state.estimates_truncated[c])), "se": ci.se,
                     "df": ci.df, "lower": ci.lower, "upper": ci.upper})
    out = pd.DataFrame(rows, index=pd.Index(list(state.components), name="component"))
    out.attrs["level"] = level
    return out
