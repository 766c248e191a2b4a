"""Classical expected-mean-square (EMS) rules and F tests for balanced designs.

This module works on a *design specification* (factors, their numbers of
levels, fixed or random, nesting, replicates) and needs no data.  It implements
the subscript rules of Schultz (1955) as taught in Montgomery, *Design and
Analysis of Experiments*, ch. 13 ("Rules for expected mean squares") and Kuehl,
*Design of Experiments*, ch. 5:

Rule 1
    Every model term is written with the subscripts of its factors.  A
    subscript is **live** when its factor is not nested in another factor of
    the term, **dead** when another factor of the term is nested in it (the
    subscript in parentheses, ``j(i)``), and **absent** when the factor is not
    in the term.  The error term carries every factor subscript as dead plus
    the replicate subscript as live.
Rule 2
    A table is written with one row per term and one column per subscript
    (plus one for replicates).  An absent subscript gets the number of levels
    of its factor (replicates: ``n``), a dead subscript gets 1.
Rule 3
    A live subscript gets 0 or 1.  *Restricted model* (the textbook default):
    0 when the column factor is fixed, 1 when it is random.  *Unrestricted
    model*: 0 when the row term is fixed, 1 when it is random (Montgomery's
    modification of rule 3 for the unrestricted mixed model).
Rule 4
    The EMS of term T: cover the columns of T's live subscripts; for every row
    whose term contains all subscripts of T (live and dead), multiply the
    visible entries; the product multiplies that row's variance component (a
    random row) or its fixed-effect quadratic form (a fixed row).
Rule 5
    An interaction (or nested term) that involves a random factor is random.
    Under the restricted model the random interaction effects sum to zero over
    the levels of each fixed factor in it, so they drop out of the EMS of the
    random main effects; under the unrestricted model they are iid and stay.

**Which model to use.** In lme4 syntax every random term, e.g.
``(1|Block:Variety)``, is an iid normal effect: that is the *unrestricted*
model, which is also what SAS (PROC GLM RANDOM, PROC MIXED) and every
likelihood-based fit assume.  It is the default (``ems="unrestricted"``).
``ems="restricted"`` gives the textbook (Montgomery, Kuehl) restricted model.
Under the restricted model a variance component of a mixed interaction is
defined through the constrained effects (Montgomery's ``sigma^2_{tau beta}``);
the two models therefore parametrize the interaction variance differently.

**Fixed terms.** A fixed term T contributes ``Q(T)``, its full quadratic form
in the EMS: ``Q(T) = Q_coef * sum(effects^2) / df_T`` with the effects under
the usual sum-to-zero constraints (SAS convention: the printed EMS reads
``... + Q(T)`` without a coefficient).  ``Q_coef`` is the product of the
visible entries of T's own row, e.g. ``b n`` for factor A in an
``a x b`` factorial with ``n`` replicates, so that ``Q(A) = b n sum tau_i^2 /
(a - 1)`` as in Montgomery.

The table these rules fill (its layout, the EMS text and the F tests the EMS
imply) is :mod:`mixedanova.moments.ems_table`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DesignError
from .ems_table import RESIDUAL, assemble, error_terms, fill_tests

__all__ = [
    "Factor",
    "Spec",
    "ems_rules",
    "make_spec",
    "rules_core",
    "subscript_table",
]

_METHOD_RULES = "EMS rules (balanced)"


@dataclass(frozen=True)
class Factor:
    """One factor of a balanced design specification.

    Parameters
    ----------
    name : str
        Factor name (also its subscript's name).
    levels : int
        Number of levels; for a nested factor the number of levels *within each
        cell of the factors it is nested in* (e.g. 2 samples per batch).
    random : bool
        True for a random factor.
    nested_in : tuple of str
        Factors this factor is nested in (all ancestors, or only the direct
        parent: ancestors of the parent are added automatically).
    """

    name: str
    levels: int
    random: bool = False
    nested_in: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DesignError(f"a factor's name must be a non-empty string, not {self.name!r}")
        if isinstance(self.levels, (bool, np.bool_)) or \
                not isinstance(self.levels, (int, float, np.integer, np.floating)) or \
                not float(self.levels).is_integer() or self.levels < 1:
            raise DesignError(f"factor {self.name!r}: levels must be a positive integer, "
                              f"not {self.levels!r}")
        if not isinstance(self.random, (bool, np.bool_)):
            raise DesignError(f"factor {self.name!r}: random must be True or False, not "
                              f"{self.random!r}")
        nested = (self.nested_in,) if isinstance(self.nested_in, str) else self.nested_in
        try:
            nested = tuple(nested)
        except TypeError:
            nested = (nested,)
        if not all(isinstance(n, str) for n in nested):
            raise DesignError(f"factor {self.name!r}: nested_in must be factor names, not "
                              f"{self.nested_in!r}")
        object.__setattr__(self, "nested_in", nested)


@dataclass(frozen=True)
class Spec:
    """Validated design: factors, model terms in table order, replicates."""

    factors: tuple[Factor, ...]
    terms: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]
    term_random: tuple[bool, ...]
    replicates: int


def _ancestors(factors: Sequence[Factor]) -> dict[str, frozenset[str]]:
    by_name = {f.name: f for f in factors}
    out: dict[str, frozenset[str]] = {}

    def visit(name: str, stack: tuple[str, ...]) -> frozenset[str]:
        if name in out:
            return out[name]
        if name in stack:
            raise DesignError(f"circular nesting among factors {' -> '.join(stack + (name,))}")
        acc: set[str] = set()
        for parent in by_name[name].nested_in:
            if parent not in by_name:
                raise DesignError(f"factor {name!r} is nested in unknown factor {parent!r}")
            acc.add(parent)
            acc |= visit(parent, stack + (name,))
        out[name] = frozenset(acc)
        return out[name]

    for f in factors:
        visit(f.name, ())
    return out


def _live_dead(term: Sequence[str],
               anc: Mapping[str, frozenset[str]]) -> tuple[list[str], list[str]]:
    dead = [x for x in term if any(x in anc[y] for y in term if y != x)]
    live = [x for x in term if x not in dead]
    return live, dead


def _all_terms(factors: Sequence[Factor],
               anc: Mapping[str, frozenset[str]]) -> list[tuple[str, ...]]:
    names = [f.name for f in factors]
    terms = []
    for k in range(1, len(names) + 1):
        for combo in combinations(names, k):
            if all(anc[x] <= set(combo) for x in combo):
                terms.append(combo)
    return terms


def make_spec(factors: Sequence[Factor], terms: Sequence[Sequence[str]] | None,
              replicates: int, naming: str,
              term_random: Sequence[bool] | None = None,
              order: bool = True) -> Spec:
    if isinstance(factors, (str, Factor)):
        factors = [factors]
    factors = tuple(factors)
    if not factors:
        raise DesignError("a design needs at least one factor")
    bad = [f for f in factors if not isinstance(f, Factor)]
    if bad:
        raise ArgumentError(f"factors must be Factor objects (ma.Factor(name, levels)), not "
                            f"{bad[0]!r}")
    names = [f.name for f in factors]
    if len(set(names)) != len(names):
        raise DesignError(f"duplicate factor names in {names}")
    for f in factors:
        if int(f.levels) != f.levels or f.levels < 1:
            raise DesignError(f"factor {f.name!r}: levels must be a positive integer, "
                             f"got {f.levels!r}")
        if f.name == RESIDUAL:
            raise ArgumentError(f"{RESIDUAL!r} is reserved for the error term")
    if int(replicates) != replicates or replicates < 1:
        raise ArgumentError(f"replicates must be a positive integer, got {replicates!r}")
    if naming not in ("lme4", "live"):
        raise ArgumentError(f"naming must be 'lme4' or 'live', got {naming!r}")
    anc = _ancestors(factors)
    rank = {n: i for i, n in enumerate(names)}
    if terms is None:
        terms = _all_terms(factors, anc)
    clean: list[tuple[str, ...]] = []
    for t in terms:
        t = (t,) if isinstance(t, str) else tuple(t)
        if not t:
            raise DesignError("empty term")
        for x in t:
            if x not in rank:
                raise DesignError(f"term {':'.join(t)!r} uses unknown factor {x!r}")
            missing = sorted(anc[x] - set(t), key=rank.get)
            if missing:
                raise DesignError(f"term {':'.join(t)!r} contains {x!r}, which is nested in "
                                 f"{', '.join(missing)}; write the term with those factors "
                                 f"(e.g. {':'.join(sorted(set(t) | anc[x], key=rank.get))})")
        if len(set(t)) != len(t):
            raise DesignError(f"term {':'.join(t)!r} repeats a factor")
        clean.append(t)
    keys = [frozenset(t) for t in clean]
    if len(set(keys)) != len(keys):
        raise DesignError("the same term is listed twice")
    by_name = {f.name: f for f in factors}
    if term_random is None:
        term_random = [any(by_name[x].random for x in t) for t in clean]
    term_random = [bool(r) for r in term_random]
    if naming == "lme4":
        labels = [":".join(t) for t in clean]
    else:
        labels = [":".join(_live_dead(t, anc)[0]) for t in clean]
    if len(set(labels)) != len(labels) or RESIDUAL in labels:
        raise DesignError(f"term labels are not unique: {labels}")
    idx = list(range(len(clean)))
    if order:
        idx.sort(key=lambda i: (term_random[i], len(clean[i]), i))
    return Spec(factors, tuple(clean[i] for i in idx), tuple(labels[i] for i in idx),
                tuple(term_random[i] for i in idx), int(replicates))


def _entries(spec: Spec, restricted: bool) -> pd.DataFrame:
    """The table of 0, 1 and level counts (rows: terms + Residual)."""
    anc = _ancestors(spec.factors)
    cols = [f.name for f in spec.factors] + ["(replicate)"]
    rows = []
    for t, is_random in zip(spec.terms, spec.term_random):
        live, dead = _live_dead(t, anc)
        row = []
        for f in spec.factors:
            if f.name not in t:
                row.append(f.levels)
            elif f.name in dead:
                row.append(1)
            elif restricted:
                row.append(1 if f.random else 0)
            else:
                row.append(1 if is_random else 0)
        row.append(spec.replicates)
        rows.append(row)
    rows.append([1] * len(spec.factors) + [1])
    return pd.DataFrame(rows, index=[*spec.labels, RESIDUAL], columns=cols, dtype=np.int64)


def _check_restricted(spec: Spec) -> None:
    by_name = {f.name: f for f in spec.factors}
    for t, lab, rnd in zip(spec.terms, spec.labels, spec.term_random):
        has_random = any(by_name[x].random for x in t)
        if rnd and not has_random:
            raise DesignError(f"random term {lab!r} contains no random factor "
                             f"({', '.join(t)} are fixed); the restricted model is defined "
                             "through random factors, use ems='unrestricted'")
        if not rnd and has_random:
            raise DesignError(f"fixed term {lab!r} contains a random factor")


def rules_core(spec: Spec, restricted: bool):
    """EMS coefficients, Q coefficients and df from the subscript rules.

    Returns
    -------
    coef : ndarray, shape (n_terms + 1, n_components)
    q_coef : ndarray, shape (n_terms + 1,)  (NaN for random rows and Residual)
    df : ndarray, shape (n_terms,)  (model terms only)
    components : list of str  (random term labels in table order, then Residual)
    """
    if restricted:
        _check_restricted(spec)
    anc = _ancestors(spec.factors)
    ent = _entries(spec, restricted)
    levels = {f.name: f.levels for f in spec.factors}
    comps = [lab for lab, r in zip(spec.labels, spec.term_random) if r] + [RESIDUAL]
    comp_idx = {c: i for i, c in enumerate(comps)}
    row_terms = [*spec.terms, tuple(f.name for f in spec.factors)]
    row_labels = [*spec.labels, RESIDUAL]
    row_random = [*spec.term_random, True]
    n_rows = len(row_terms)
    coef = np.zeros((n_rows, len(comps)))
    q_coef = np.full(n_rows, np.nan)
    for i in range(n_rows):
        if i == n_rows - 1:
            covered = {"(replicate)"}
            contained = [n_rows - 1]
        else:
            live, _ = _live_dead(row_terms[i], anc)
            covered = set(live)
            contained = [j for j in range(n_rows)
                         if j == n_rows - 1 or set(row_terms[i]) <= set(row_terms[j])]
        for j in contained:
            vals = [ent.iat[j, c] for c, name in enumerate(ent.columns) if name not in covered]
            k = float(np.prod(vals)) if vals else 1.0
            if row_random[j]:
                coef[i, comp_idx[row_labels[j]]] = k
            elif j == i:
                q_coef[i] = k
            elif k != 0:  # pragma: no cover - impossible by construction
                raise AssertionError(f"fixed {row_labels[j]} entered the EMS of {row_labels[i]}")
    df = np.empty(len(spec.terms))
    for i, t in enumerate(spec.terms):
        live, dead = _live_dead(t, anc)
        df[i] = np.prod([levels[x] - 1 for x in live]) * np.prod([levels[x] for x in dead])
    return coef, q_coef, df, comps


def _rules_table(spec: Spec, restricted: bool, residual_df: float | None = None) -> pd.DataFrame:
    """EMS table from the rules; residual df defaults to N - 1 - sum of term df."""
    coef, q_coef, df, comps = rules_core(spec, restricted)
    if residual_df is None:
        nobs = spec.replicates * int(np.prod([f.levels for f in spec.factors]))
        residual_df = nobs - 1 - float(np.sum(df))
    table = assemble(spec.labels, comps, coef, q_coef, [not r for r in spec.term_random],
                     [*df, residual_df])
    table = fill_tests(table, error_terms(table))
    table.attrs["method"] = _METHOD_RULES
    table.attrs["ems_model"] = "restricted" if restricted else "unrestricted"
    return table


def ems_rules(factors: Sequence[Factor], terms: Sequence[Sequence[str] | str] | None = None,
              replicates: int = 1, *, ems: str = "unrestricted",
              naming: str = "lme4") -> pd.DataFrame:
    """EMS table of a balanced design from the classical rules (no data needed).

    Parameters
    ----------
    factors : sequence of Factor
        The design's factors with levels, fixed/random and nesting.
    terms : sequence of term tuples, optional
        Model terms as tuples of factor names (a string for a main effect).
        A term containing a nested factor must contain the factors it is
        nested in (``("batch", "sample")`` for samples within batches).
        Default: every term allowed by the nesting (full factorial).  Terms
        left out are assumed absent from the model; their sums of squares are
        pooled into the residual.
    replicates : int
        Observations per cell of all factors (``n``).
    ems : {"unrestricted", "restricted"}
        Mixed-model convention, see the module docstring.
    naming : {"lme4", "live"}
        Source labels: ``"lme4"`` joins all factors of the term with ":"
        (``batch:sample``, lme4's grouping label); ``"live"`` uses only the
        live factors (``sample`` for samples within batches, the textbook
        name ``B(A) -> B``).

    Returns
    -------
    DataFrame
        One row per source: fixed terms (by degree), random terms (by
        degree), Residual.  ``df`` (residual df = N - 1 - sum of term df with
        ``N = replicates * prod(levels)``), ``ems`` text, a coefficient column
        per variance component
        (:func:`~mixedanova.moments.ems_table.coef_column`), ``Q``/``Q_coef``
        for fixed terms, ``error_term`` and ``test`` of each F test,
        ``den_df`` for exact tests.  ``sum_sq``, ``mean_sq``, ``F``, ``p`` are
        NaN; fill them with :func:`~mixedanova.moments.ems_table.f_tests`.
        ``attrs["method"]`` names the method.

    Examples
    --------
    >>> t = ems_rules([Factor("batch", 15, random=True),
    ...                Factor("sample", 2, random=True, nested_in=("batch",))],
    ...               replicates=2, naming="live")
    >>> list(t["ems"])
    ['s2_e + 2 s2_sample + 4 s2_batch', 's2_e + 2 s2_sample', 's2_e']
    """
    if ems not in ("unrestricted", "restricted"):
        raise ArgumentError(f"ems must be 'unrestricted' or 'restricted', got {ems!r}")
    spec = make_spec(factors, terms, replicates, naming)
    return _rules_table(spec, ems == "restricted")


def subscript_table(factors: Sequence[Factor],
                    terms: Sequence[Sequence[str] | str] | None = None,
                    replicates: int = 1, *, ems: str = "unrestricted",
                    naming: str = "lme4") -> pd.DataFrame:
    """The rules' table of 0, 1 and level counts (rows: terms + Residual).

    Columns are the factors' subscripts plus ``(replicate)``; see the module
    docstring for how the entries are set.  Arguments as in :func:`ems_rules`.
    """
    if ems not in ("unrestricted", "restricted"):
        raise ArgumentError(f"ems must be 'unrestricted' or 'restricted', got {ems!r}")
    spec = make_spec(factors, terms, replicates, naming)
    if ems == "restricted":
        _check_restricted(spec)
    return _entries(spec, ems == "restricted")
