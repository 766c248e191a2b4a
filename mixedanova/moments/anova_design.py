"""Design handling for the ANOVA engine: terms, balance, sequential projections.

The jobs, all on complete rows:

* :func:`order_terms` validates the fixed and random terms and puts them in
  table order (fixed terms by degree, then random terms by degree, each in
  the order written).  That order is also the fitting order of the Type I
  (sequential) sums of squares, so random terms are always fitted after all
  fixed terms, as Henderson's Method III and SAS PROC VARCOMP METHOD=TYPE1
  require.
* :func:`balanced_spec` reads the factor structure off the terms and checks
  that the data are balanced; it returns the design specification for the EMS
  rules or the reason why the rules cannot be used.
* :func:`prepare_terms` is :func:`order_terms` on a DataFrame (its columns
  checked and coded by :func:`~mixedanova.moments.anova_data.anova_data`).

Both others read the response and the variables' level codes from an
:class:`~mixedanova.moments.anova_data.AnovaData` (``AnovaData.codes``
numbers the level combinations of a term), not from a DataFrame.

The sums of squares themselves are computed in
:mod:`mixedanova.moments.sums_of_squares`.

Factor structure from lme4-style terms.  Variables that occur in exactly the
same terms are merged into one composite factor (``(1|recipe:replicate)``
alone makes ``recipe:replicate`` one factor).  Factor X is nested in factor Y
when every term that contains X also contains Y (``(1|batch) +
(1|batch:cask)``: cask within batch).  A factor is fixed when it occurs in a
fixed term, random otherwise; a term is random when it is one of the random
terms.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DesignError
from .anova_data import AnovaData, anova_data
from .ems import Factor, make_spec, Spec
from .ems_table import RESIDUAL

__all__ = ["Term", "SequentialSS", "as_term", "prepare_terms", "order_terms", "balanced_spec"]


@dataclass(frozen=True)
class Term:
    """A model term: its label, variables and whether it is random."""

    label: str
    variables: tuple[str, ...]
    random: bool


@dataclass(frozen=True)
class SequentialSS:
    """Type I decomposition of the response.

    Attributes
    ----------
    labels : tuple of str
        Sources in fitting order, Residual last.
    df, sum_sq : ndarray
        Degrees of freedom (rank increments) and sums of squares.
    traces : ndarray, shape (n_sources, n_random_terms)
        ``tr(Z_U' M_k Z_U)``: coefficient of ``s2_U`` in ``E(SS_k)``.
    nobs : int
    """

    labels: tuple[str, ...]
    df: np.ndarray
    sum_sq: np.ndarray
    traces: np.ndarray
    nobs: int


def as_term(t: Sequence[str] | str, kind: str) -> tuple[str, ...]:
    """``t`` as a tuple of variable names (a :class:`DesignError` when it is not one)."""
    t = (t,) if isinstance(t, str) else tuple(t)
    if not t or not all(isinstance(x, str) and x for x in t):
        raise DesignError(f"{kind} term {t!r} must be a non-empty tuple of column names")
    if len(set(t)) != len(t):
        raise DesignError(f"{kind} term {':'.join(t)!r} repeats a variable")
    return t


def prepare_terms(data: pd.DataFrame, response: str, fixed_terms: Sequence[Sequence[str] | str],
                  random_terms: Sequence[Sequence[str] | str],
                  covariates: Collection[str] | None = None) -> tuple[list[Term], frozenset[str]]:
    """Validate terms on a DataFrame and return them in table order plus the covariate set.

    The DataFrame door of :func:`order_terms`: the columns are checked and
    coded by :func:`~mixedanova.moments.anova_data.anova_data`.

    Parameters
    ----------
    data, response, fixed_terms, random_terms
        As in :func:`mixedanova.moments.moments.fit_anova`.
    covariates : collection of str, optional
        As in :func:`order_terms`.

    Raises
    ------
    ValueError
        Unknown columns, missing values, a non-numeric response, and the
        problems :func:`order_terms` finds.
    """
    fixed = [as_term(t, "fixed") for t in fixed_terms]
    rand = [as_term(t, "random") for t in random_terms]
    coded = anova_data(data, response, [x for t in fixed + rand for x in t])
    return order_terms(coded, fixed, rand, covariates)


def order_terms(data: AnovaData, fixed_terms: Sequence[Sequence[str] | str],
                random_terms: Sequence[Sequence[str] | str],
                covariates: Collection[str] | None = None) -> tuple[list[Term], frozenset[str]]:
    """Validate terms and return them in table order plus the covariate set.

    Parameters
    ----------
    data : AnovaData
        The response and the coded variables.
    fixed_terms, random_terms
        As in :func:`mixedanova.moments.moments.fit_anova`.
    covariates : collection of str, optional
        Variables of fixed terms to use as numeric covariates.  Default: the
        fixed-term variables with a numeric (non-boolean) dtype, as formulaic
        and R do.  Variables of random terms are always grouping factors.

    Raises
    ------
    ValueError
        Unknown variables, a term listed twice or as both fixed and random, a
        fixed term containing a random term, a non-numeric covariate.
    """
    fixed = [as_term(t, "fixed") for t in fixed_terms]
    rand = [as_term(t, "random") for t in random_terms]
    for x in dict.fromkeys(x for t in fixed + rand for x in t):
        data.variable(x)
    if data.nobs == 0:
        raise DesignError("no observations")
    seen: dict[frozenset[str], str] = {}
    for t, kind in [(t, "fixed") for t in fixed] + [(t, "random") for t in rand]:
        key = frozenset(t)
        if key in seen:
            raise DesignError(f"term {':'.join(t)!r} is listed twice (as {seen[key]} and {kind})")
        seen[key] = kind
    for f in fixed:
        for r in rand:
            if set(r) < set(f):
                raise DesignError(f"fixed term {':'.join(f)!r} contains the random term "
                                 f"{':'.join(r)!r}; "
                                 "fixed terms are fitted first, which would leave the random term "
                                 "without degrees of freedom")
    fixed_vars = {x for t in fixed for x in t}
    if covariates is None:
        cov = {x for x in fixed_vars if data.variable(x).numeric}
    else:
        cov = set(covariates)
        for x in cov:
            if x not in fixed_vars:
                raise DesignError(f"covariate {x!r} does not occur in a fixed term")
            if data.variable(x).values is None:
                raise DesignError(f"covariate {x!r} must be numeric, got dtype "
                                  f"{data.variable(x).dtype}")

    def ordered(ts: list[tuple[str, ...]], is_random: bool) -> list[Term]:
        idx = sorted(range(len(ts)), key=lambda i: (len(ts[i]), i))
        return [Term(":".join(ts[i]), ts[i], is_random) for i in idx]

    terms = ordered(fixed, False) + ordered(rand, True)
    if any(t.label == RESIDUAL for t in terms):
        raise ArgumentError(f"{RESIDUAL!r} is reserved for the residual source")
    return terms, frozenset(cov)


def balanced_spec(data: AnovaData, terms: Sequence[Term],
                  covariates: Collection[str]) -> tuple[Spec | None, str]:
    """Design specification for the EMS rules, or the reason it does not exist.

    Returns
    -------
    spec : Spec or None
        Factors (composite where variables always occur together), levels per
        parent cell, nesting, fixed/random, terms in table order, replicates.
    reason : str
        Empty when ``spec`` is given, else why the design is not a balanced
        design the rules apply to (names the culprit).
    """
    for t in terms:
        cov = [x for x in t.variables if x in covariates]
        if cov:
            return None, (f"fixed term {t.label!r} uses the numeric covariate {cov[0]!r}; "
                          "the EMS rules need factors only")
    variables = list(dict.fromkeys(x for t in terms for x in t.variables))
    if not variables:
        return None, "the model has no factors"
    sig = {x: frozenset(i for i, t in enumerate(terms) if x in t.variables) for x in variables}
    atoms: dict[frozenset[int], list[str]] = {}
    for x in variables:
        atoms.setdefault(sig[x], []).append(x)
    atom_sig = {":".join(v): s for s, v in atoms.items()}
    atom_vars = {":".join(v): tuple(v) for v in atoms.values()}
    names = list(atom_vars)
    parents = {a: tuple(b for b in names if b != a and atom_sig[a] < atom_sig[b]) for a in names}
    fixed_idx = {i for i, t in enumerate(terms) if not t.random}
    term_atoms = [tuple(a for a in names if i in atom_sig[a]) for i in range(len(terms))]
    # hierarchy: every sub-term closed under nesting must be in the model
    present = {frozenset(ta) for ta in term_atoms}
    for ta, t in zip(term_atoms, terms):
        for k in range(1, len(ta)):
            for sub in combinations(ta, k):
                if all(set(parents[a]) <= set(sub) for a in sub) and frozenset(sub) not in present:
                    lab = ":".join(x for a in sub for x in atom_vars[a])
                    return None, (f"the model is not hierarchical: term {t.label!r} needs the "
                                  f"marginal term {lab!r}")
    factors = []
    for a in names:
        cols = list(atom_vars[a])
        pcols = [x for p in parents[a] for x in atom_vars[p]]
        combos, m = data.codes(pcols + cols)
        if pcols:
            parent, pm = data.codes(pcols)
            parent_of = np.empty(m, dtype=np.int64)
            parent_of[combos] = parent  # the parent level of each observed combination
            per_parent = np.bincount(parent_of, minlength=pm)
        else:
            per_parent = np.array([m])
        if per_parent.min() != per_parent.max():
            where = f" within {':'.join(pcols)}" if pcols else ""
            return None, (f"not balanced: factor {a!r} has between {per_parent.min()} and "
                          f"{per_parent.max()} levels{where}")
        factors.append(Factor(a, int(per_parent[0]), random=not (atom_sig[a] & fixed_idx),
                              nested_in=parents[a]))
    cells, ncell = data.codes(variables)
    counts = np.bincount(cells, minlength=ncell) if data.counts is None else \
        np.rint(np.bincount(cells, weights=data.row_weights, minlength=ncell)).astype(np.int64)
    expected_cells = int(np.prod([f.levels for f in factors]))
    if ncell != expected_cells:
        example = ""
        if all(not f.nested_in for f in factors):
            first = _first_missing(data, variables)
            if first is not None:
                example = " (e.g. " + ", ".join(f"{n}={v}" for n, v in zip(variables, first)) + ")"
        return None, (f"not balanced: {ncell} of {expected_cells} cells of "
                      f"{' x '.join(variables)} are observed, {expected_cells - ncell} "
                      f"empty{example}")
    if counts.min() != counts.max():
        return None, (f"not balanced: cell counts of {' x '.join(variables)} range from "
                      f"{counts.min()} to {counts.max()}")
    spec = make_spec(factors, term_atoms, int(counts[0]), "lme4",
                     term_random=[t.random for t in terms], order=False)
    spec = Spec(spec.factors, spec.terms, tuple(t.label for t in terms), spec.term_random,
                spec.replicates)
    return spec, ""


def _first_missing(data: AnovaData, variables: Sequence[str]) -> tuple | None:
    """The first unobserved combination of the levels of ``variables`` (in level
    order), or None when there is none or there are too many to number."""
    parts = [data.variable(x) for x in variables]
    radix = [p.nlev for p in parts]
    if float(np.prod(radix, dtype=float)) >= 2.0**62:
        return None
    key = np.zeros(data.nrows, dtype=np.int64)
    for p, r in zip(parts, radix):
        key = key * r + p.codes
    seen = np.unique(key)
    gap = np.flatnonzero(seen != np.arange(seen.size))
    k = int(gap[0]) if gap.size else int(seen.size)
    if k >= int(np.prod(radix)):
        return None
    out = []
    for p, r in zip(reversed(parts), reversed(radix)):
        k, i = divmod(k, r)
        out.append(p.levels[i])
    return tuple(reversed(out))


def formula_anova_terms(design, columns: Collection[str]
                        ) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], bool]:
    """The fixed and random terms of a fitted formula's design (``design``: a
    :class:`~mixedanova.design.build.Design` or the chunked design summary) for the
    moments engine, checked: no prior weights or offset, random intercepts only,
    plain variables (``columns``: the data's) in the fixed part.

    Returns
    -------
    fixed, random : list of tuple of str
        The variables of each term.
    intercept : bool
    """
    if design.has_weights or design.offset is not None:
        raise DesignError("method='ANOVA' (expected mean squares) does not take prior "
                          "weights or an offset; use method='REML' or 'ML'")
    for b in design.blocks:
        if b.columns != ("(Intercept)",):
            raise DesignError(
                f"method='ANOVA' estimates variance components of random intercepts "
                f"(1 | g) only; {b.source} has columns {', '.join(b.columns)}")
    fixed, intercept = [], False
    for t in design.fixed_terms:
        if not t.variables:
            intercept = bool(t.columns)
            continue
        for v in t.variables:
            if v not in columns:
                raise DesignError(f"method='ANOVA' needs plain variables in the fixed "
                                  f"part; {v!r} is an expression")
        fixed.append(t.variables)
    return fixed, [b.factors for b in design.blocks], intercept
