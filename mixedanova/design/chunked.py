"""The design of data that arrive in chunks (partitions of a Dask data frame).

:func:`~mixedanova.design.build.build_design` sees every row at once.  Data too
large for that are encoded chunk by chunk, and every chunk must give the same
columns in the same order as the in-memory design would.  That needs a
*codebook* fixed before any matrix is built:

1. :meth:`ChunkPlan.summarize` reads one chunk and returns a
   :class:`ChunkSummary`: its row count, the rows dropped for missing values (per
   column), the distinct level combinations of every grouping factor, the
   distinct values of the factor columns of the fixed part and a few complete rows
   (for the formulaic specs).  Summaries add up (``a + b``); their size is that of
   the levels, not of the rows.
2. :meth:`ChunkPlan.encoder` turns the summed summary into a :class:`ChunkEncoder`:
   the levels of each random term in lme4's order (as ``build_design``: each
   factor's own order, an interaction varying its first factor slowest), the
   formulaic specs of the fixed part and of each term's left-hand side, and the
   checks that need all rows (levels, identifiability).
3. :meth:`ChunkEncoder.encode` turns any chunk into an :class:`EncodedChunk`: level
   codes and ``zraw`` per random term, ``X`` (all of formulaic's columns: aliased
   columns are found from the summed ``X'WX``), ``y``, prior weights and offset.

:class:`DesignSummary` is the row-less counterpart of a
:class:`~mixedanova.design.build.Design`: what the results need (names, levels,
the specs that rebuild matrices for new rows), never the rows.

Formulas whose transforms learn a state from the whole column (``center``,
``scale``, ``poly``, splines) are refused: a chunk would learn its own state.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DesignError, RankDeficiencyWarning, user_stacklevel
from .build import (BlockViews, RandomBlock, group_labels, offset_values, response_values,
                    used_columns)
from .data_checks import check_columns, check_finite, missing_mask, plain_strings
from .formula import ParsedFormula, formula_variables
from .term_matrices import (FixedTerm, SimpleSpec, fixed_terms, model_matrix_like,
                            term_matrix)

__all__ = ["ChunkPlan", "level_codes", "codes_among", "ChunkSummary", "ChunkEncoder", "EncodedChunk", "DesignSummary",
           "aliased_columns", "prototype_frame"]

_STATEFUL = ("center", "scale", "standardize", "poly", "bs", "cs", "cr", "cc", "te",
             "ns", "hashed", "lag")
_SAMPLE = 20  # complete rows kept per summary, for the formulaic specs
_MAX_KEY = 2 ** 62


def _strings_as_objects(data: pd.DataFrame) -> pd.DataFrame:
    """Every string column (any storage) as an object column, as :func:`plain_strings`."""
    return plain_strings(data)


@dataclass
class ChunkSummary:
    """What one pass over chunks learns about the data (level-sized; ``a + b``).

    Attributes
    ----------
    n : int
        Rows read.
    n_dropped : int
        Rows dropped because of a missing value in a used column.
    missing : dict
        Missing values per column.
    combos : tuple of pandas.DataFrame
        Per random term (formula order), its distinct combinations of factor values
        among the complete rows.
    values : dict
        Distinct values of each factor column of the fixed part and of the terms'
        left-hand sides (complete rows).
    sample : pandas.DataFrame
        Up to 20 complete rows (for the formulaic specs).
    """

    n: int
    n_dropped: int
    missing: dict
    combos: tuple
    values: dict
    sample: pd.DataFrame

    def __add__(self, other: "ChunkSummary") -> "ChunkSummary":
        if other is None:
            return self
        missing = dict(self.missing)
        for k, v in other.missing.items():
            missing[k] = missing.get(k, 0) + v
        combos = tuple(pd.concat([a, b], ignore_index=True).drop_duplicates(ignore_index=True)
                       for a, b in zip(self.combos, other.combos))
        values = {k: pd.concat([v, other.values[k]], ignore_index=True).drop_duplicates(
            ignore_index=True) for k, v in self.values.items()}
        sample = self.sample
        if len(sample) < _SAMPLE:
            sample = pd.concat([sample, other.sample]).iloc[:_SAMPLE]
        return ChunkSummary(self.n + other.n, self.n_dropped + other.n_dropped, missing,
                            combos, values, sample)

    def __radd__(self, other):
        return self if other in (0, None) else NotImplemented


@dataclass(frozen=True)
class ChunkPlan:
    """Which columns a formula needs and how each chunk is summarized.

    Built from the parsed formula and an empty frame with the data's columns and
    dtypes (a Dask frame's ``_meta``).
    """

    parsed: ParsedFormula
    columns: tuple[str, ...]
    used: tuple[str, ...]
    level_columns: tuple[str, ...]
    weights_column: str | None
    offset_column: str | None
    missing: str

    @classmethod
    def from_formula(cls, parsed: ParsedFormula, meta: pd.DataFrame, *, weights=None,
                     offset=None, missing: str = "drop",
                     extra_columns: tuple[str, ...] = (),
                     marginal: bool = False) -> "ChunkPlan":
        """The plan for ``parsed`` on data with the columns and dtypes of ``meta``.

        ``extra_columns``: further columns the model needs (a residual structure's
        group, time or covariate), part of the missing-value rule as in
        :func:`~mixedanova.design.build.build_design`.  ``marginal``: accept a
        formula without random-effects terms (a marginal model with a visit
        covariance).

        Raises
        ------
        DesignError
            A missing column, weights/offset given as arrays (a chunked fit takes
            column names), a transform with a whole-column state, no random term.
        """
        if missing not in ("drop", "raise"):
            raise DesignError(f"missing must be 'drop' or 'raise', not {missing!r}")
        structured = [t.source for t in parsed.random if t.structure != "us"]
        if structured:
            raise DesignError(f"{structured[0]}: structured random-effect covariances are "
                              "fitted from data in memory only, not in chunks")
        if not parsed.random and not marginal:
            raise DesignError(
                f"formula {parsed.formula!r} has no random-effects term such as (1 | group); "
                "a linear mixed model needs at least one")
        for role, value in (("weights", weights), ("offset", offset)):
            if value is not None and not isinstance(value, str):
                raise DesignError(f"{role} must be a column name on a Dask data frame (an "
                                  "array cannot be split into its partitions); add it as a "
                                  "column")
        exprs = [parsed.response, parsed.fixed] + [t.expr for t in parsed.random] + \
            list(parsed.offsets)
        for expr in exprs:
            m = re.search(r"\b(" + "|".join(_STATEFUL) + r")\s*\(", expr)
            if m:
                raise DesignError(
                    f"{m.group(1)}() learns its state (mean, scale, basis) from the whole "
                    f"column, which a chunked fit cannot give every chunk; compute the "
                    f"transformed column first (e.g. with Dask) and use it in the formula")
        meta = _strings_as_objects(meta)
        used = used_columns(parsed, meta)
        for col in extra_columns:
            if col not in meta.columns:
                raise DesignError(f"column {col!r} (residual structure) is not a column of "
                                  "the data")
            if col not in used:
                used.append(col)
        for col, role in ((weights, "weights"), (offset, "offset")):
            if col is not None:
                if col not in meta.columns:
                    raise DesignError(f"{role} column {col!r} is not a column of the data")
                if col not in used:
                    used.append(col)
        check_columns(parsed, meta, used)
        factors = {f for t in parsed.random for f in t.factors}
        cols = list(meta.columns)
        in_c = set()
        for expr in [parsed.fixed] + [t.expr for t in parsed.random]:
            for m in re.finditer(r"\bC\s*\(\s*([A-Za-z_][A-Za-z_0-9.]*)", expr):
                in_c.add(m.group(1))
        model_vars = set(formula_variables(parsed.fixed, cols))
        for t in parsed.random:
            model_vars |= set(formula_variables(t.expr, cols))
        level = [c for c in used if c in model_vars and c not in factors and
                 (c in in_c or not pd.api.types.is_numeric_dtype(meta[c]) or
                  pd.api.types.is_bool_dtype(meta[c]))]
        level += [c for c in used if c in model_vars and c in factors and c not in level]
        return cls(parsed, tuple(cols), tuple(used), tuple(level), weights, offset, missing)

    def complete(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, int, dict]:
        """The complete rows of ``chunk`` (used columns), rows dropped, missing per column."""
        chunk = _strings_as_objects(chunk)
        used = list(self.used)
        na, counts = missing_mask(chunk, used)
        if counts:
            return chunk.loc[~na, used], int(na.sum()), counts
        return chunk[used], 0, counts

    def summarize(self, chunk: pd.DataFrame) -> ChunkSummary:
        """The :class:`ChunkSummary` of one chunk (a pandas DataFrame)."""
        data, dropped, counts = self.complete(chunk)
        combos = tuple(data[list(t.factors)].drop_duplicates(ignore_index=True)
                       for t in self.parsed.random)
        values = {c: data[c].drop_duplicates().reset_index(drop=True)
                  for c in self.level_columns}
        return ChunkSummary(len(chunk), dropped, counts, combos, values,
                            data.iloc[:_SAMPLE].copy())

    def encoder(self, summary: ChunkSummary, check_levels: bool = True) -> "ChunkEncoder":
        """The codebook and specs from the summary of all chunks (see the module
        docstring); the checks :func:`~mixedanova.design.build.build_design` makes
        on all rows are made here (``check_levels=False``: not the one of fewer
        random effects than observations, as ``build_design``'s for a GLMM)."""
        return ChunkEncoder.from_summary(self, summary, check_levels=check_levels)


@dataclass(frozen=True)
class TermCode:
    """How the rows of a chunk get the level codes of one random term."""

    factors: tuple[str, ...]
    categories: tuple  # per factor: pandas.Index of its values in the factor's order
    keys: np.ndarray   # sorted packed keys of the levels (level order = key order)
    radix: np.ndarray  # per factor: its multiplier in the packed key

    def codes(self, data: pd.DataFrame) -> np.ndarray:
        if len(self.factors) == 1:  # every value is a level: the key is the code
            pos = level_codes(data[self.factors[0]], self.categories[0])
            bad = pos < 0
            if bad.any():
                self._unseen(data, bad)
            return pos.astype(np.intp, copy=False)
        key = np.zeros(len(data), dtype=np.int64)
        bad = np.zeros(len(data), dtype=bool)
        for f, cats, r in zip(self.factors, self.categories, self.radix):
            c = level_codes(data[f], cats)
            bad |= c < 0
            key += c * r
        if len(self.factors) == 1:  # every value is a level: the key is the code
            pos = key
        else:
            pos = np.searchsorted(self.keys, key)
            pos = np.minimum(pos, len(self.keys) - 1)
            bad |= self.keys[pos] != key
        if bad.any():
            self._unseen(data, bad)
        return pos.astype(np.intp)

    def _unseen(self, data: pd.DataFrame, bad: np.ndarray) -> None:
        raise DesignError(
            f"a chunk has a level of {':'.join(self.factors)} that the first pass did "
            "not see (row " f"{data.index[bad][0]!r}); did the data change between "
            "the passes?")


def level_codes(column: pd.Series, cats: pd.Index) -> np.ndarray:
    """Codes of ``column``'s values among the levels ``cats`` (-1: not a level), as
    ``pd.Categorical(column, categories=cats).codes``; integer identifiers whose
    levels are a run of consecutive integers (the common case) by a subtraction."""
    if (pd.api.types.is_integer_dtype(column.dtype) and pd.api.types.is_integer_dtype(cats)
            and len(cats) and cats.is_monotonic_increasing
            and int(cats[-1]) - int(cats[0]) == len(cats) - 1):
        c = np.subtract(column.to_numpy(), int(cats[0]), dtype=np.int64)
        if len(c) and (c.min() < 0 or c.max() >= len(cats)):
            c[(c < 0) | (c >= len(cats))] = -1
        return c
    return codes_among(column, cats)


def codes_among(values, cats: pd.Index) -> np.ndarray:
    """Position of each value among ``cats`` (-1: missing or not among them), as
    ``pd.Categorical(values, categories=cats).codes`` without that constructor's
    deprecated path for values outside ``cats``."""
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        cat = values.cat if isinstance(values, pd.Series) else pd.Series(values).cat
        return cat.set_categories(cats).cat.codes.to_numpy().astype(np.int64)
    return pd.Index(cats).get_indexer(pd.Index(values)).astype(np.int64)


def _term_code(combos: pd.DataFrame, factors: tuple[str, ...]) -> tuple[TermCode, pd.DataFrame]:
    """Levels of one term in build_design's order, and the combos sorted that way."""
    # each factor's own order over the values present, as build_design's
    # pd.Categorical(column).remove_unused_categories()
    cats = [pd.Categorical(combos[f]).remove_unused_categories().categories for f in factors]
    sizes = [max(len(c), 1) for c in cats]
    if float(np.prod(np.array(sizes, dtype=float))) >= _MAX_KEY:
        raise DesignError(f"grouping factor {':'.join(factors)} has too many level "
                          "combinations to encode in chunks")
    radix = np.ones(len(factors), dtype=np.int64)
    for i in range(len(factors) - 2, -1, -1):
        radix[i] = radix[i + 1] * sizes[i + 1]
    key = np.zeros(len(combos), dtype=np.int64)
    for f, c, r in zip(factors, cats, radix):
        key += codes_among(combos[f], c) * r
    order = np.argsort(key, kind="stable")
    return TermCode(factors, tuple(cats), key[order], radix), combos.iloc[order]


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk's rows as the engine needs them (complete rows only)."""

    codes: list
    zraws: list
    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None
    offset: np.ndarray | None
    index: pd.Index

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DesignSummary(BlockViews):
    """A :class:`~mixedanova.design.build.Design` without its rows.

    The blocks hold their levels, columns and specs (their ``codes`` and ``zraw``
    are empty); :meth:`fixed_matrix`, :meth:`offset_for` and the blocks'
    ``rebuild`` encode new rows as the in-memory design does.
    """

    formula: ParsedFormula
    x_names: tuple[str, ...]
    blocks: tuple[RandomBlock, ...]
    fixed_terms: tuple[FixedTerm, ...]
    fixed_spec: object = field(repr=False)
    kept_columns: np.ndarray = field(repr=False)
    nobs: int = 0
    n_dropped: int = 0
    dropped_columns: tuple[str, ...] = ()
    weights_column: str | None = None
    offset_column: str | None = None
    columns: tuple[str, ...] = ()
    data = None  # no rows

    @property
    def has_weights(self) -> bool:
        return self.weights_column is not None

    @property
    def offset(self):
        return None if not (self.formula.offsets or self.offset_column) else True

    @property
    def p(self) -> int:
        return len(self.x_names)

    def needed_columns(self, include_random: bool = True) -> list[str]:
        cols = list(self.columns)
        needed = formula_variables(self.formula.fixed, cols)
        for expr in self.formula.offsets:
            needed += [v for v in formula_variables(expr, cols) if v not in needed]
        if self.offset_column is not None:
            needed.append(self.offset_column)
        if include_random:
            for b in self.blocks:
                needed += formula_variables(b.expr, cols) + list(b.factors)
        return list(dict.fromkeys(v for v in needed if v in set(cols)))

    def fixed_matrix(self, data: pd.DataFrame) -> np.ndarray:
        return model_matrix_like(self.fixed_spec, data, "fixed effects")[:, self.kept_columns]

    def offset_for(self, data: pd.DataFrame) -> np.ndarray:
        total = np.zeros(len(data))
        for expr in self.formula.offsets:
            total = total + offset_values(expr, data)
        if self.offset_column is not None:
            total = total + offset_values(self.offset_column, data)
        return total


@dataclass(frozen=True)
class ChunkEncoder:
    """Encodes any chunk into the columns of the whole data's design."""

    plan: ChunkPlan
    blocks: tuple[RandomBlock, ...]    # lme4's order, rows empty
    term_codes: tuple[TermCode, ...]   # same order
    fixed_spec: object = field(repr=False)
    x_names_all: tuple[str, ...] = ()
    nobs: int = 0
    n_dropped: int = 0

    @classmethod
    def from_summary(cls, plan: ChunkPlan, summary: ChunkSummary,
                     check_levels: bool = True) -> "ChunkEncoder":
        parsed = plan.parsed
        nobs = summary.n - summary.n_dropped
        if summary.missing:
            detail = ", ".join(f"{c!r} ({k} rows)" for c, k in summary.missing.items())
            if plan.missing == "raise":
                raise DesignError(f"missing values in {detail}; pass missing='drop' to "
                                  "drop them")
            if nobs == 0:
                raise DesignError(f"no rows left after dropping rows with missing values "
                                  f"in {detail}")
        if summary.n == 0:
            raise DesignError("data has no rows")
        proto = prototype_frame(plan, summary)
        _, names, fixed_spec = term_matrix(parsed.fixed, proto,
                                           f"the fixed-effects matrix for {parsed.fixed!r}")
        blocks, codes = [], []
        for term, combos in zip(parsed.random, summary.combos):
            tc, ordered = _term_code(combos, term.factors)
            levels = pd.Index(group_labels(ordered, term.factors), dtype=object,
                              name=term.group)
            if not levels.is_unique:
                dup = levels[levels.duplicated()][0]
                raise DesignError(
                    f"grouping factor {term.group!r} of {term.source} has two different "
                    f"levels both labelled {dup!r} (a value of "
                    f"{', '.join(map(repr, term.factors))} contains ':'); recode the values")
            if len(levels) < 2:
                raise DesignError(
                    f"grouping factor {term.group!r} of {term.source} has only one level "
                    f"({levels[0]!r}); a random effect needs at least two")
            zraw, znames, spec = term_matrix(term.expr, proto,
                                             f"the model matrix of random term {term.source}")
            q = zraw.reshape(len(proto), -1).shape[1]
            if q == 0:
                raise DesignError(f"random term {term.source} has no columns")
            columns = tuple("(Intercept)" if c == "Intercept" else str(c) for c in znames)
            blocks.append(RandomBlock(group=term.group, factors=term.factors, expr=term.expr,
                                      source=term.source, columns=columns, levels=levels,
                                      codes=np.empty(0, dtype=np.intp),
                                      zraw=np.empty((0, q)), spec=spec))
            codes.append(tc)
        order = sorted(range(len(blocks)), key=lambda k: -blocks[k].nlev)  # stable, as lme4
        blocks = [blocks[k] for k in order]
        codes = [codes[k] for k in order]
        for b in blocks if check_levels else ():
            if b.nlev >= nobs:
                raise DesignError(
                    f"grouping factor {b.group!r} has {b.nlev} levels for {nobs} "
                    "observations; the number of levels must be less than the number of "
                    "observations")
            if b.nlev * b.q >= nobs:
                raise DesignError(
                    f"random term {b.source} has {b.nlev * b.q} random effects "
                    f"({b.nlev} levels x {b.q}) for {nobs} observations; the "
                    "random-effects parameters and the residual variance would be "
                    "unidentifiable")
        return cls(plan, tuple(blocks), tuple(codes), fixed_spec, tuple(names), nobs,
                   summary.n_dropped)

    def encode(self, chunk: pd.DataFrame) -> EncodedChunk | None:
        """The complete rows of ``chunk`` encoded (None when it has none).

        ``X`` holds all of formulaic's columns of the fixed part (see
        :func:`aliased_columns`), ``y`` the response (offset not subtracted).
        """
        plan = self.plan
        data, _, _ = plan.complete(chunk)
        if len(data) == 0:
            return None
        y = response_values(plan.parsed, data)
        w = None
        if plan.weights_column is not None:
            w = _numeric(data, plan.weights_column, "weights")
            bad = ~(w > 0)
            if bad.any():
                raise DesignError(f"weights {plan.weights_column!r} must be positive; rows "
                                  f"{list(data.index[bad][:5])} have "
                                  f"{', '.join(f'{v:g}' for v in w[bad][:5])}")
        off = None
        if plan.parsed.offsets or plan.offset_column is not None:
            off = np.zeros(len(data))
            for expr in plan.parsed.offsets:
                off = off + offset_values(expr, data)
            if plan.offset_column is not None:
                off = off + _numeric(data, plan.offset_column, "offset")
        X = model_matrix_like(self.fixed_spec, data, "fixed effects")
        if not isinstance(self.fixed_spec, SimpleSpec):  # else columns checked above
            for j, col in enumerate(self.x_names_all):
                check_finite(X[:, j], col, "fixed-effect column", data.index)
        codes, zraws = [], []
        for b, tc in zip(self.blocks, self.term_codes):
            codes.append(tc.codes(data))
            if isinstance(b.spec, SimpleSpec) and b.spec.intercept and not b.spec.columns:
                # (1 | g): a read-only column of ones that takes no memory
                zraws.append(np.broadcast_to(np.ones((1, 1)), (len(data), 1)))
                continue
            z = model_matrix_like(b.spec, data, f"random term {b.source}").reshape(len(data), -1)
            for j, c in enumerate(b.columns):
                check_finite(z[:, j], c, f"column of random term {b.source}", data.index)
            zraws.append(np.ascontiguousarray(z))
        return EncodedChunk(codes, zraws, np.asfortranarray(X), y, w, off, data.index)

    def design_summary(self, keep: np.ndarray) -> DesignSummary:
        """The row-less design once the kept fixed-effect columns are known."""
        kept_idx = np.flatnonzero(keep)
        dropped = tuple(n for n, k in zip(self.x_names_all, keep) if not k)
        if len(kept_idx) >= self.nobs:
            raise DesignError(
                f"the fixed effects {self.plan.parsed.fixed!r} have {len(kept_idx)} "
                f"independent columns for {self.nobs} observations; a mixed model needs "
                "fewer fixed-effect columns than observations")
        return DesignSummary(
            formula=self.plan.parsed, x_names=tuple(self.x_names_all[i] for i in kept_idx),
            blocks=self.blocks, fixed_terms=fixed_terms(self.fixed_spec, kept_idx),
            fixed_spec=self.fixed_spec, kept_columns=kept_idx, nobs=self.nobs,
            n_dropped=self.n_dropped, dropped_columns=dropped,
            weights_column=self.plan.weights_column, offset_column=self.plan.offset_column,
            columns=self.plan.columns)


def aliased_columns(xx: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Kept columns of ``X`` from its cross-product ``X'WX`` (True = kept).

    The rule of :func:`~mixedanova.design.term_matrices.independent_columns`
    (R's ``qr(X, tol = 1e-7)`` with limited pivoting) applied to the Gram matrix:
    a column is aliased when its norm after projecting out the kept columns falls
    below ``1e-7`` of its own norm.  Warns as ``build_design`` does.
    """
    p = xx.shape[0]
    if p == 0:
        return np.zeros(0, dtype=bool)
    d = np.sqrt(np.maximum(np.diag(xx), 0.0))
    # the Cholesky factor of X'X is the R of X's QR: its columns are the projections
    R = np.zeros((p, p))
    keep = np.zeros(p, dtype=bool)
    for j in range(p):
        if d[j] == 0.0:
            continue
        k = np.flatnonzero(keep)
        r = np.linalg.solve(R[np.ix_(k, k)].T, xx[k, j]) if len(k) else np.zeros(0)
        rest = xx[j, j] - float(r @ r)
        if rest > (1e-7 * d[j]) ** 2:
            keep[j] = True
            R[k, j] = r
            R[j, j] = np.sqrt(rest)
    dropped = [n for n, kk in zip(names, keep) if not kk]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}",
            RankDeficiencyWarning, stacklevel=user_stacklevel())
    return keep


def _numeric(data: pd.DataFrame, column: str, role: str) -> np.ndarray:
    col = data[column]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DesignError(f"{role} column {column!r} is not numeric (dtype {col.dtype})")
    return col.to_numpy(dtype=float)


def prototype_frame(plan: ChunkPlan, summary: ChunkSummary) -> pd.DataFrame:
    """A small frame with every level of the fixed part's factor columns (in their
    order) and sample values elsewhere: formulaic's specs learnt on it encode
    every chunk with the whole data's columns."""
    sample = summary.sample
    if len(sample) == 0:
        raise DesignError("no complete rows to build the model from")
    sizes = [len(v) for v in summary.values.values()]
    m = max([len(sample), 2] + sizes)
    out = {}
    for col in plan.used:
        s = sample[col]
        if col in summary.values:
            vals = summary.values[col]
            cats = pd.Categorical(vals).categories
            if isinstance(s.dtype, pd.CategoricalDtype):
                out[col] = pd.Categorical(np.resize(np.asarray(cats, dtype=object), m),
                                          categories=cats)
            else:
                out[col] = pd.Series(np.resize(np.asarray(cats), m)).astype(s.dtype)
        else:
            out[col] = pd.Series(np.resize(s.to_numpy(), m)).astype(s.dtype)
    return pd.DataFrame(out)

