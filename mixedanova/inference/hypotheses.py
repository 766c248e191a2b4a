"""Hypothesis matrices of the type 1, 2 and 3 ANOVA tables, as lmerTest builds them.

Every function returns ``{term name: L}`` with ``L`` a ``(rows, p)`` matrix on the
fixed-effect coefficients of the fit (the columns of ``design.X``); the F test
of a term is the test of ``L beta = 0``
(:meth:`mixedanova.inference.tables.FixedInference.f_test`).

* Type 1 (sequential): rows of the unit upper-triangular factor of a Doolittle
  (LU without pivoting) decomposition of ``X'X`` (lmerTest's
  ``get_contrasts_type1``).
* Type 2: for a term contained in no other term its coefficients themselves
  (marginal test); otherwise the type 1 rows of the term after ordering ``X`` as
  [unrelated terms, term, terms containing it] (``get_contrasts_type2_unfolded``).
* Type 3: the hypotheses of SAS type III for treatment coding, computed from the
  over-parameterized design (an intercept plus full dummy coding of every term)
  and orthogonalized against the terms containing each term
  (``extract_contrasts_type3``), then mapped to the coding the user chose by
  ``ginv(X_treatment) X``.  The test of a term is therefore the same whatever
  contrasts (``C(x, contr.sum)``, ...) the formula uses.

Containment follows lmerTest's ``containment()``: term ``A`` is contained in
``B`` when ``B`` has all of ``A``'s variables and more, and both involve the
same numeric covariates; as in R, a variable coded by indicators (not
contrasts) in an interaction whose margin is absent does not count as a
variable of that interaction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..design.term_matrices import independent_columns
from ..errors import ArgumentError

__all__ = ["TermInfo", "model_terms", "contrasts_type1", "contrasts_type2",
           "contrasts_type3", "hypothesis_matrices", "doolittle", "zapsmall", "RowSource",
           "GramSource", "Type3Layout", "Type3Matrices"]

_RANK_TOL = 1e-7


@dataclass(frozen=True)
class TermInfo:
    """A fixed-effects term other than the intercept.

    Attributes
    ----------
    name : str
        formulaic's term name (``"recipe:temperature"``).
    factors : tuple of str
        Factor expressions in the term, in formulaic's (= R's) order.
    columns : tuple of int
        Columns of ``design.X`` belonging to the term.
    categorical : tuple of bool
        Whether each factor is categorical.
    """

    name: str
    factors: tuple[str, ...]
    columns: tuple[int, ...]
    categorical: tuple[bool, ...]

    @property
    def order(self) -> int:
        """Number of variables (R's ``attr(terms, "order")``)."""
        return len(self.factors)


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of ``max |x|``."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return x
    mx = float(np.max(np.abs(x)))
    if not np.isfinite(mx) or mx == 0.0:
        return np.round(x, digits)
    return np.round(x, max(0, digits - int(math.ceil(math.log10(mx)))))


def doolittle(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Unit lower-triangular ``L`` of the LU factorization ``x = L U`` without pivoting.

    As lmerTest's ``doolittle()``: a pivot ``|U[i, i]| < eps`` gives a zero column
    of ``L`` and entries with ``|L| < eps`` are set to zero afterwards.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        if i + 1 < n:
            col = x[i + 1:, i] - L[i + 1:, :i] @ U[:i, i]
            L[i + 1:, i] = 0.0 if abs(U[i, i]) < eps else col / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def _resid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals of the least-squares fit of the columns of ``y`` on ``x`` (``lm.fit``)."""
    if x.shape[1] == 0:
        return y
    q, r = np.linalg.qr(x)
    d = np.abs(np.diag(r))
    rank_cols = d > _RANK_TOL * max(float(d.max()), 1e-300)
    q = q[:, rank_cols]
    return y - q @ (q.T @ y)


# ----------------------------------------------------------------------- terms
def model_terms(design) -> tuple[list[TermInfo], bool]:
    """The fixed terms (without the intercept) and whether the model has an intercept.

    Built from ``design.fixed_terms``; a factor is categorical when the fixed-effects
    spec says so (formulaic's encoder state) or, failing that, when it is a
    non-numeric column of the data.
    """
    state = getattr(design.fixed_spec, "encoder_state", None) or {}
    terms: list[TermInfo] = []
    has_intercept = False
    for ft in design.fixed_terms:
        factors = tuple(str(v) for v in ft.variables if str(v) != "1")
        if not factors:
            has_intercept = True
            continue
        cats = tuple(_is_categorical(state, f, design.data) for f in factors)
        terms.append(TermInfo(name=ft.name, factors=factors, columns=tuple(ft.columns),
                              categorical=cats))
    return terms, has_intercept


def _is_categorical(state: dict, expr: str, data) -> bool:
    entry = state.get(expr)
    if entry is not None:
        kind = getattr(entry[0], "value", str(entry[0]))
        return str(kind) == "categorical"
    if data is None:  # a design without rows: its spec knows every factor
        return False
    return expr in data.columns and not np.issubdtype(np.asarray(data[expr]).dtype, np.number)


def _factor_sets(terms: list[TermInfo]) -> list[frozenset]:
    return [frozenset(t.factors) for t in terms]


def _r_vars(terms: list[TermInfo], has_intercept: bool) -> list[set]:
    """Variables of each term with entry 1 in R's ``attr(terms, "factors")``."""
    sets = _factor_sets(terms)
    present = set(sets)
    out = []
    for s in sets:
        if len(s) == 1:
            out.append(set(s))
        else:
            out.append({v for v in s if (s - {v}) in present})
    return out


def containment(terms: list[TermInfo], has_intercept: bool = True) -> dict[str, list[str]]:
    """For each term, the terms that contain it (lmerTest's ``containment``)."""
    rvars = _r_vars(terms, has_intercept)
    numerics = [{f for f, c in zip(t.factors, t.categorical) if not c} & v
                for t, v in zip(terms, rvars)]
    out: dict[str, list[str]] = {}
    for i, t in enumerate(terms):
        out[t.name] = [u.name for j, u in enumerate(terms)
                       if rvars[i] <= rvars[j] and len(rvars[j] - rvars[i]) > 0
                       and numerics[i] == numerics[j]]
    return out


# ------------------------------------------------------------- the data's sources
class RowSource:
    """What the hypotheses read of the data, from the rows of an in-memory design.

    Type 1 and 2 read Gram matrices of columns of ``X`` (:meth:`gram`); type 3
    the over-parameterized design and ``X`` (:meth:`type3_matrices`).  A fit
    without rows (a Dask fit) passes a source of the same shape built from
    summed cross-products (:class:`GramSource`).
    """

    def __init__(self, design) -> None:
        self.design = design

    def gram(self, order: list[int] | None = None) -> np.ndarray:
        """``X'X`` (unweighted), its columns in ``order`` when given."""
        X = self.design.X if order is None else self.design.X[:, order]
        return X.T @ X

    def type3_matrices(self, terms: list[TermInfo], has_intercept: bool) -> "Type3Matrices":
        """The over-parameterized design of the rows and ``X`` (see :class:`Type3Matrices`)."""
        data = self.design.data
        cache: dict = {}
        layout = Type3Layout.build(terms, has_intercept, data,
                                   lambda expr, cat: _factor_matrix(expr, cat, data, cache))
        return Type3Matrices(layout, layout.rdx, self.design.X)


class GramSource:
    """A :class:`RowSource` for a fit without rows: ``X'X`` given, and a callable
    ``type3(terms, has_intercept)`` returning :class:`Type3Matrices` whose
    matrices have the same Gram matrix as the rows' (an R factor)."""

    def __init__(self, xtx: np.ndarray, type3) -> None:
        self.xtx = np.asarray(xtx, dtype=float)
        self.type3 = type3

    def gram(self, order: list[int] | None = None) -> np.ndarray:
        return self.xtx if order is None else self.xtx[np.ix_(order, order)]

    def type3_matrices(self, terms: list[TermInfo], has_intercept: bool) -> "Type3Matrices":
        return self.type3(terms, has_intercept)


# ---------------------------------------------------------------------- type 1
def _type1_rows(gram: np.ndarray) -> np.ndarray:
    p = gram.shape[1]
    if p == 1:
        return np.ones((1, 1))
    return doolittle(gram).T


def contrasts_type1(design, source=None) -> dict[str, np.ndarray]:
    """Sequential (type 1) hypothesis matrices, one per term."""
    terms, _ = model_terms(design)
    if design.p == 0 or not terms:
        return {}
    source = RowSource(design) if source is None else source
    Lall = _type1_rows(source.gram())
    return {t.name: Lall[list(t.columns), :] for t in terms}


# ---------------------------------------------------------------------- type 2
def contrasts_type2(design, source=None) -> dict[str, np.ndarray]:
    """Type 2 hypothesis matrices (lmerTest's default ``type = 2``)."""
    terms, has_intercept = model_terms(design)
    p = design.p
    if p <= 1 or len(terms) <= 1:
        return contrasts_type1(design, source)
    source = RowSource(design) if source is None else source
    contained = containment(terms, has_intercept)
    by_name = {t.name: t for t in terms}
    out: dict[str, np.ndarray] = {}
    for t in terms:
        if not contained[t.name]:
            out[t.name] = np.eye(p)[list(t.columns), :]
            continue
        cols_term = list(t.columns) + [c for u in contained[t.name]
                                       for c in by_name[u].columns]
        rest = [c for c in range(p) if c not in set(cols_term)]
        order = rest + cols_term
        Lc = _type1_rows(source.gram(order))
        rows = [order.index(c) for c in t.columns]
        L = np.zeros((len(rows), p))
        L[:, order] = Lc[rows, :]
        out[t.name] = L
    return out


# ---------------------------------------------------------------------- type 3
def _factor_matrix(expr: str, categorical: bool, data, cache: dict) -> np.ndarray:
    from formulaic import model_matrix
    key = (expr, categorical)
    if key not in cache:
        mm = model_matrix(f"0 + {expr}", data, ensure_full_rank=not categorical)
        cache[key] = np.asarray(mm, dtype=float).reshape(len(data), -1)
    return cache[key]


def _term_block(term: TermInfo, factor_matrix, present: set,
                has_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """Full dummy block of ``term`` (R's ``model.matrix(~ 0 + term)``) and the mask of
    the columns that treatment coding keeps; ``factor_matrix(expr, categorical)``
    gives one factor's columns (all levels of a categorical one)."""
    fs = frozenset(term.factors)
    block = None
    mask = None
    for f, cat in zip(term.factors, term.categorical):
        M = factor_matrix(f, cat)
        keep = np.ones(M.shape[1], dtype=bool)
        if cat:
            rest = fs - {f}
            coded = (rest in present) if rest else has_intercept
            if coded:
                keep[0] = False
        if block is None:
            block, mask = M, keep
        else:
            n = M.shape[0]
            block = (M[:, :, None] * block[:, None, :]).reshape(n, -1)
            mask = (keep[:, None] & mask[None, :]).reshape(-1)
    return block, mask


@dataclass(frozen=True)
class Type3Layout:
    """The over-parameterized design of some rows (an intercept plus full dummy
    coding of every term: ``rdx``) and which of its columns treatment coding keeps
    (``x_cols``, with their term in ``col_term``; ``term_rd_cols``: each term's
    columns of ``rdx``).  The layout depends on the codebook only, so every
    chunk of rows built with the same factor encodings has the same one."""

    rdx: np.ndarray
    x_cols: tuple[int, ...]
    col_term: tuple
    term_rd_cols: dict

    @classmethod
    def build(cls, terms: list[TermInfo], has_intercept: bool, data,
              factor_matrix) -> "Type3Layout":
        """The layout of ``data``'s rows (``factor_matrix(expr, categorical)`` as in
        :func:`_term_block`)."""
        n = len(data)
        present = set(_factor_sets(terms))
        rd_blocks, x_cols, col_term = [], [], []
        offset = 0
        if has_intercept:
            rd_blocks.append(np.ones((n, 1)))
            x_cols.append(0)
            col_term.append(None)
            offset = 1
        term_rd_cols: dict[str, list[int]] = {}
        for t in terms:
            block, mask = _term_block(t, factor_matrix, present, has_intercept)
            rd_blocks.append(block)
            idx = list(range(offset, offset + block.shape[1]))
            term_rd_cols[t.name] = idx
            for j, m in zip(idx, mask):
                if m:
                    x_cols.append(j)
                    col_term.append(t.name)
            offset += block.shape[1]
        return cls(np.column_stack(rd_blocks), tuple(x_cols), tuple(col_term), term_rd_cols)


@dataclass(frozen=True)
class Type3Matrices:
    """What type 3 reads: the layout, and matrices with the Gram matrix of the
    over-parameterized design ``rdx`` and of ``X`` (the rows themselves in memory;
    for a fit without rows, the R factor of ``[rdx X]`` split into its two
    column blocks: least squares on it equals least squares on the rows)."""

    layout: Type3Layout
    rdx: np.ndarray
    X: np.ndarray


def contrasts_type3(design, source=None) -> dict[str, np.ndarray]:
    """Type 3 hypothesis matrices, valid whatever contrasts the formula uses."""
    terms, has_intercept = model_terms(design)
    if design.p <= 1 or len(terms) <= 1:
        return contrasts_type1(design, source)
    source = RowSource(design) if source is None else source
    mats = source.type3_matrices(terms, has_intercept)
    lay, rdX, Xorig = mats.layout, mats.rdx, mats.X
    x_cols, col_term = list(lay.x_cols), list(lay.col_term)
    Xt = rdX[:, x_cols]
    keep = independent_columns(Xt)
    x_cols = [c for c, k in zip(x_cols, keep) if k]
    col_term = [c for c, k in zip(col_term, keep) if k]
    Xt = Xt[:, keep]
    pt = Xt.shape[1]
    term_cols = {t.name: [i for i, ct in enumerate(col_term) if ct == t.name] for t in terms}
    # basic contrast matrix: rows = columns of rdX, columns = coefficients of Xt
    L = zapsmall(np.linalg.lstsq(Xt, rdX, rcond=None)[0].T)
    contained = containment(terms, has_intercept)
    order = sorted(range(len(terms)), key=lambda i: -terms[i].order)
    for i in order:
        t = terms[i]
        contains = contained[t.name]
        if not contains or not term_cols[t.name]:
            continue
        xcols = [c for u in contains for c in term_cols[u]]
        L[:, term_cols[t.name]] = zapsmall(_resid(L[:, xcols], L[:, term_cols[t.name]]))
    L = L[x_cols, :]
    # map from treatment coding to the coding of the fit
    mapping = zapsmall(np.linalg.lstsq(Xt, Xorig, rcond=None)[0])
    out = {}
    for t in terms:
        Lt = L[:, term_cols[t.name]].T if term_cols[t.name] else np.zeros((0, pt))
        Lt = Lt[np.abs(Lt).sum(axis=1) > 1e-8, :]
        out[t.name] = Lt @ mapping
    return out


def hypothesis_matrices(design, type: int | str = 3, source=None) -> dict[str, np.ndarray]:
    """``{term: L}`` for an ANOVA table of type 1, 2 or 3 (``"I"``, ``"II"``, ``"III"``).

    ``source``: where the data's matrices come from (:class:`RowSource` of
    ``design``, the default; :class:`GramSource` for a fit without rows)."""
    key = str(type).strip().upper()
    key = {"I": "1", "II": "2", "III": "3"}.get(key, key)
    if key == "1":
        return contrasts_type1(design, source)
    if key == "2":
        return contrasts_type2(design, source)
    if key == "3":
        return contrasts_type3(design, source)
    raise ArgumentError(f"type must be 1, 2 or 3 (or 'I', 'II', 'III'), not {type!r}")
