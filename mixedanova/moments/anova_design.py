"""Design handling for the ANOVA engine: terms, balance, sequential projections.

The jobs, all on data with complete rows:

* :func:`prepare_terms` validates the fixed and random terms and puts them in
  table order (fixed terms by degree, then random terms by degree, each in
  the order written).  That order is also the fitting order of the Type I
  (sequential) sums of squares, so random terms are always fitted after all
  fixed terms, as Henderson's Method III and SAS PROC VARCOMP METHOD=TYPE1
  require.
* :func:`balanced_spec` reads the factor structure off the terms and checks
  that the data are balanced; it returns the design specification for the EMS
  rules or the reason why the rules cannot be used.
* :func:`level_codes` numbers the level combinations of a term.

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
from .ems import Factor, make_spec, Spec
from .ems_table import RESIDUAL

__all__ = ["Term", "SequentialSS", "prepare_terms", "balanced_spec", "level_codes"]


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


def _as_term(t: Sequence[str] | str, kind: str) -> tuple[str, ...]:
    t = (t,) if isinstance(t, str) else tuple(t)
    if not t or not all(isinstance(x, str) and x for x in t):
        raise DesignError(f"{kind} term {t!r} must be a non-empty tuple of column names")
    if len(set(t)) != len(t):
        raise DesignError(f"{kind} term {':'.join(t)!r} repeats a variable")
    return t


def prepare_terms(data: pd.DataFrame, response: str, fixed_terms: Sequence[Sequence[str] | str],
                  random_terms: Sequence[Sequence[str] | str],
                  covariates: Collection[str] | None = None) -> tuple[list[Term], frozenset[str]]:
    """Validate terms and return them in table order plus the covariate set.

    Parameters
    ----------
    data, response, fixed_terms, random_terms
        As in :func:`mixedanova.moments.moments.fit_anova`.
    covariates : collection of str, optional
        Variables of fixed terms to use as numeric covariates.  Default: the
        fixed-term variables with a numeric (non-boolean) dtype, as formulaic
        and R do.  Variables of random terms are always grouping factors.

    Raises
    ------
    ValueError
        Unknown columns, missing values, a term listed twice or as both fixed
        and random, a fixed term containing a random term, a non-numeric
        response or covariate.
    """
    if response not in data.columns:
        raise DesignError(f"response {response!r} is not a column of the data")
    resp = data[response]
    if not pd.api.types.is_numeric_dtype(resp) or pd.api.types.is_bool_dtype(resp):
        raise DesignError(f"response {response!r} must be numeric, got dtype {data[response].dtype}")
    fixed = [_as_term(t, "fixed") for t in fixed_terms]
    rand = [_as_term(t, "random") for t in random_terms]
    used = [response] + [x for t in fixed + rand for x in t]
    for x in used:
        if x not in data.columns:
            raise DesignError(f"variable {x!r} is not a column of the data")
    for x in dict.fromkeys(used):
        n_na = int(data[x].isna().sum())
        if n_na:
            raise DesignError(f"column {x!r} has {n_na} missing value(s); pass complete rows only")
    if len(data) == 0:
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
        cov = {x for x in fixed_vars if pd.api.types.is_numeric_dtype(data[x])
               and not pd.api.types.is_bool_dtype(data[x])}
    else:
        cov = set(covariates)
        for x in cov:
            if x not in fixed_vars:
                raise DesignError(f"covariate {x!r} does not occur in a fixed term")
            if not pd.api.types.is_numeric_dtype(data[x]):
                raise DesignError(f"covariate {x!r} must be numeric, got dtype {data[x].dtype}")

    def ordered(ts: list[tuple[str, ...]], is_random: bool) -> list[Term]:
        idx = sorted(range(len(ts)), key=lambda i: (len(ts[i]), i))
        return [Term(":".join(ts[i]), ts[i], is_random) for i in idx]

    terms = ordered(fixed, False) + ordered(rand, True)
    if any(t.label == RESIDUAL for t in terms):
        raise ArgumentError(f"{RESIDUAL!r} is reserved for the residual source")
    return terms, frozenset(cov)


def level_codes(frame: pd.DataFrame, cols: Sequence[str]) -> tuple[np.ndarray, int]:
    """Integer codes of the combinations of ``cols`` (levels sorted) and their number."""
    if not cols:
        return np.zeros(len(frame), dtype=np.int64), 1
    codes = frame.groupby(list(cols), sort=True, observed=True).ngroup().to_numpy()
    return codes.astype(np.int64, copy=False), int(codes.max()) + 1


def balanced_spec(data: pd.DataFrame, terms: Sequence[Term],
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
        combos = data[pcols + cols].drop_duplicates()
        if pcols:
            per_parent = combos.groupby(pcols, sort=False, observed=True).size()
        else:
            per_parent = pd.Series([len(combos)])
        if per_parent.nunique() != 1:
            where = f" within {':'.join(pcols)}" if pcols else ""
            return None, (f"not balanced: factor {a!r} has between {per_parent.min()} and "
                          f"{per_parent.max()} levels{where}")
        factors.append(Factor(a, int(per_parent.iloc[0]), random=not (atom_sig[a] & fixed_idx),
                              nested_in=parents[a]))
    counts = data.groupby(variables, sort=True, observed=True).size()
    expected_cells = int(np.prod([f.levels for f in factors]))
    if len(counts) != expected_cells:
        full = pd.MultiIndex.from_product([sorted(data[x].unique()) for x in variables],
                                          names=variables)
        missing = full.difference(counts.index)
        example = ""
        if len(missing) and all(not f.nested_in for f in factors):
            example = " (e.g. " + ", ".join(f"{n}={v}" for n, v in zip(variables, missing[0])) + ")"
        return None, (f"not balanced: {len(counts)} of {expected_cells} cells of "
                      f"{' x '.join(variables)} are observed, {expected_cells - len(counts)} "
                      f"empty{example}")
    if counts.nunique() != 1:
        return None, (f"not balanced: cell counts of {' x '.join(variables)} range from "
                      f"{counts.min()} to {counts.max()}")
    spec = make_spec(factors, term_atoms, int(counts.iloc[0]), "lme4",
                     term_random=[t.random for t in terms], order=False)
    spec = Spec(spec.factors, spec.terms, tuple(t.label for t in terms), spec.term_random,
                spec.replicates)
    return spec, ""
