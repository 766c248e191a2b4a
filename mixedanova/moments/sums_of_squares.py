"""Sums of squares for the ANOVA engine: one pass over the rows, level-sized algebra.

Both read the response and the variables' level codes (and a covariate's
numbers) from an :class:`~mixedanova.moments.anova_data.AnovaData`;
:func:`sequential_ss` is the DataFrame door of :func:`sequential_sums`.

Two routes, both exact (no approximation), both costing one pass over the rows
plus dense work whose size is set by the numbers of levels:

* :func:`balanced_ss` -- balanced complete designs (the EMS rules apply): the
  classical formulas.  A term's effect in each of its cells is the
  inclusion-exclusion sum of cell and margin means,
  ``ybar_ab - ybar_a - ybar_b + ybar`` for a crossed ``A:B``,
  ``ybar_ab - ybar_a`` for ``B`` within ``A``; its sum of squares is the sum
  over rows of the squared effect, its df the same inclusion-exclusion sum of
  the numbers of observed level combinations.
* :func:`sequential_ss` -- any design (Henderson's Method III with Type I sums
  of squares): sequential projections computed from the sparse
  cross-products of the indicator (and covariate) columns.  The term with the
  most levels among the pure indicator terms (usually the highest-order random
  interaction) is absorbed: its projection is group means, and the other
  columns enter through ``W = (I - P_B) X``, whose Gram matrix
  ``X'X - X'B D^-1 B'X`` is as small as the other terms' levels.  The
  increments of ``y'P y`` and of ``tr(Z_u' P Z_u)`` are then read off a
  block-by-block orthonormalisation done on Gram matrices
  (:func:`_sweep`), so no matrix ever has a row per observation and a column
  per level.

Both also take a table of cells (``AnovaData.counts``: each row a cell, its
observations' mean as the response, the pooled within-cell sum of squares in
``AnovaData.within_ss``): rows are weighted by their counts and the within-cell
sum of squares is added to the residual's, which gives the sums of squares of
the observations exactly (every term is constant within a cell).

Column spaces, ranks and the drop tolerance: a block's new directions are the
eigenvectors of its residual Gram matrix (after projecting on the blocks
fitted before it, twice) whose eigenvalue exceeds ``_DROP`` times the block's
squared Frobenius norm, i.e. relative singular values above about ``3e-6``.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from ..errors import DesignError
from .anova_data import AnovaData, anova_data
from .anova_design import SequentialSS, Term
from .ems import Spec
from .ems_table import RESIDUAL

__all__ = ["sequential_ss", "sequential_sums", "balanced_ss", "MAX_DENSE_COLUMNS"]

_DROP = 1e-11
MAX_DENSE_COLUMNS = 12_000
"""Most columns (levels of the non-absorbed terms) the dense Gram matrices may have."""


@dataclass(frozen=True)
class _Block:
    """Columns of one term: ``X[i, codes[i]] = values[i]`` (values None: all 1),
    each row multiplied by ``sw[i]`` (the square root of its observations, for a
    table of cells; None: 1)."""

    codes: np.ndarray
    ncol: int
    values: np.ndarray | None
    sw: np.ndarray | None = None

    def matrix(self):
        from scipy import sparse

        n = self.codes.size
        data = np.ones(n) if self.values is None else self.values
        if self.sw is not None:
            data = data * self.sw
        return sparse.csr_matrix((data, self.codes, np.arange(n + 1)), shape=(n, self.ncol))

    @property
    def sq_norm(self) -> float:
        if self.sw is not None:
            v = np.ones(self.codes.size) if self.values is None else self.values
            return float(np.sum(v**2 * self.sw**2))
        return float(self.codes.size if self.values is None else np.sum(self.values**2))


def _blocks(data: AnovaData, terms: Sequence[Term], covariates: Collection[str],
            intercept: bool) -> list[_Block]:
    n = data.nrows
    sw = None if data.counts is None else np.sqrt(data.row_weights)
    out = [_Block(np.zeros(n, dtype=np.int64), 1, None, sw)] if intercept else []
    for t in terms:
        fac = [x for x in t.variables if t.random or x not in covariates]
        codes, ncol = data.codes(fac)
        values = None
        if not t.random and len(fac) < len(t.variables):
            values = np.ones(n)
            for x in t.variables:
                if x in covariates:
                    values = values * data.variable(x).values
            if not fac and intercept:
                # span{1, x} = span{1, x - mean}: centring keeps the Gram matrix well conditioned
                values = values - (values.mean() if sw is None
                                    else np.average(values, weights=data.row_weights))
        out.append(_Block(codes, ncol, values, sw))
    return out


def _sweep(gram: np.ndarray, gy: np.ndarray, gz: list[tuple[str, np.ndarray] | None],
           sizes: Sequence[int], scales: Sequence[float]) -> list[tuple[int, float, np.ndarray]]:
    """Block Gram-Schmidt on Gram matrices.

    ``gram = X'X``, ``gy = X'y`` and, per random term, ``gz[u] = ("cross",
    X'Z_u)`` or, when ``Z_u`` has more columns than ``X``, ``("gram",
    X'Z_u Z_u'X)`` (None: zero), for columns ``X`` made of consecutive blocks
    of ``sizes`` columns.  For each block
    returns (rank increment, ``||Q_k'y||^2``, ``[||Q_k'Z_u||_F^2]_u``) with
    ``Q_k`` an orthonormal basis of the block's part orthogonal to the
    blocks before it.  ``Q = X S`` is carried through its coefficients ``S``.
    """
    from scipy.linalg import solve_triangular

    p = gram.shape[0]
    s_all = np.zeros((p, 0))
    out = []
    start = 0
    for size, scale in zip(sizes, scales):
        cols = np.arange(start, start + size)
        start += size
        if scale <= 0:
            out.append((0, 0.0, np.zeros(len(gz))))
            continue
        e = np.zeros((p, size))
        e[cols, np.arange(size)] = 1.0
        for _ in range(2):
            if s_all.shape[1]:
                e = e - s_all @ (s_all.T @ (gram @ e))
        m = e.T @ gram @ e / scale
        w, v = np.linalg.eigh((m + m.T) / 2.0)
        keep = w > _DROP
        s_new = e @ (v[:, keep] / np.sqrt(w[keep] * scale))
        if s_new.shape[1]:
            # one more orthonormalisation (Q_new'Q_new = I to rounding): with
            # Q_new'Q_new = L L' (close to I), Q_new L^-T
            m2 = s_new.T @ gram @ s_new
            chol = np.linalg.cholesky((m2 + m2.T) / 2.0)
            s_new = solve_triangular(chol, s_new.T, lower=True, check_finite=False).T
        qy = s_new.T @ gy
        tr = np.array([_trace(s_new, g) for g in gz])
        out.append((int(s_new.shape[1]), float(qy @ qy), tr))
        s_all = np.hstack([s_all, s_new])
    return out


def _trace(s_new: np.ndarray, g: tuple[str, np.ndarray] | None) -> float:
    """``||Q_k'Z_u||_F^2`` from ``X'Z_u`` or from ``X'Z_u Z_u'X``."""
    if g is None:
        return 0.0
    kind, mat = g
    if kind == "cross":
        return float(np.sum((s_new.T @ mat) ** 2))
    return float(np.sum(s_new * (mat @ s_new)))


def _cross_or_gram(cross) -> tuple[str, np.ndarray]:
    """Dense ``X'Z_u`` (sparse in), or its Gram when ``Z_u`` has more columns than ``X``."""
    if cross.shape[1] > cross.shape[0]:
        return "gram", np.asarray((cross @ cross.T).toarray())
    return "cross", np.asarray(cross.toarray())


def _check_size(blocks: Sequence[_Block], terms: Sequence[Term | None]) -> None:
    p = sum(b.ncol for b in blocks)
    if p > MAX_DENSE_COLUMNS:
        sizes = sorted(((b.ncol, t.label) for b, t in zip(blocks, terms) if t is not None),
                       reverse=True)
        big = ", ".join(f"{lab!r} ({k})" for k, lab in sizes[:3])
        raise DesignError(
            f"Method III needs a dense {p} x {p} matrix for the terms fitted besides the one "
            f"with the most levels; too large (limit {MAX_DENSE_COLUMNS} columns). Largest "
            f"terms: {big}")


def sequential_ss(data: pd.DataFrame, response: str, terms: Sequence[Term],
                  covariates: Collection[str], intercept: bool = True) -> SequentialSS:
    """:func:`sequential_sums` on the columns of a DataFrame (coded by
    :func:`~mixedanova.moments.anova_data.anova_data`)."""
    coded = anova_data(data, response, [x for t in terms for x in t.variables])
    return sequential_sums(coded, terms, covariates, intercept)


def sequential_sums(data: AnovaData, terms: Sequence[Term], covariates: Collection[str],
                    intercept: bool = True) -> SequentialSS:
    """Type I sums of squares and Method III trace coefficients.

    Terms are fitted in the given order after the intercept.

    Returns
    -------
    SequentialSS
        ``traces[k, u] = tr(Z_u' M_k Z_u)`` with ``M_k`` the projection on the
        k-th increment (for the residual, ``I - P_all``).

    Raises
    ------
    DesignError
        When the terms other than the absorbed one have more than
        :data:`MAX_DENSE_COLUMNS` columns in all.
    """
    from scipy import sparse

    y = data.y
    n = data.nobs
    cells = data.counts is not None  # rows are cells: weight each by its observations
    w = data.row_weights if cells else None
    sw = np.sqrt(w) if cells else None
    yc = y - (np.average(y, weights=w) if cells else y.mean()) if intercept else y
    ysc = sw * yc if cells else yc  # the observations' sums: X'y = (sw X)'(sw y)
    blocks = _blocks(data, terms, covariates, intercept)
    off = 1 if intercept else 0
    block_terms: list[Term | None] = [None] * off + list(terms)
    zs = [blocks[off + k] for k, t in enumerate(terms) if t.random]
    zmats = [z.matrix() for z in zs]
    # the absorbed block: the pure indicator term with the most levels
    cand = [i for i in range(off, len(blocks)) if blocks[i].values is None]
    jb = max(cand, key=lambda i: (blocks[i].ncol, i)) if cand else None
    if jb is not None and blocks[jb].ncol < 2:
        jb = None
    first = blocks if jb is None else blocks[:jb]
    _check_size(first, block_terms)

    def prepare(bl: Sequence[_Block]):
        x = sparse.hstack([b.matrix() for b in bl], format="csr") if bl else None
        return x, [b.ncol for b in bl], [b.sq_norm for b in bl]

    x1, sizes1, scales1 = prepare(first)
    if x1 is not None:
        xt = x1.T.tocsr()
        res1 = _sweep((xt @ x1).toarray(), xt @ ysc, [_cross_or_gram(xt @ z) for z in zmats],
                      sizes1, scales1)
    else:
        res1 = []
    n_src = len(terms) + 1
    df = np.zeros(n_src)
    ss = np.zeros(n_src)
    tr = np.zeros((n_src, len(zs)))
    for i, (r, s, t) in enumerate(res1):
        if i >= off:
            df[i - off], ss[i - off], tr[i - off] = r, s, t
    if jb is None:
        df[-1] = n - sum(r for r, _, _ in res1)
        ss[-1] = float(ysc @ ysc) + data.within_ss - sum(s for _, s, _ in res1)
        tr[-1] = n - sum((t for _, _, t in res1), np.zeros(len(zs)))
    else:
        bblk = blocks[jb]
        b = bblk.codes
        nb = np.bincount(b, weights=w, minlength=bblk.ncol).astype(float)
        mean_b = np.bincount(b, weights=yc if w is None else w * yc, minlength=bblk.ncol) / nb
        y_res = yc - mean_b[b]
        ysr = sw * y_res if cells else y_res
        bmat = bblk.matrix()
        bt = bmat.T.tocsr()
        dinv = sparse.diags(1.0 / nb)
        # tr(Z_u' P_B Z_u) = sum_b sum_l n_bl^2 / n_b
        bz = [bt @ z for z in zmats]
        tr_pb = np.array([float(n) if zb is bblk
                          else float(np.asarray(bzu.multiply(bzu).sum(axis=1)).ravel() @ (1.0 / nb))
                          for zb, bzu in zip(zs, bz)])
        rest = [i for i in range(len(blocks)) if i != jb]
        _check_size([blocks[i] for i in rest], [block_terms[i] for i in rest])
        x2, sizes2, scales2 = prepare([blocks[i] for i in rest])
        if x2 is not None:
            xt2 = x2.T.tocsr()
            bx = bt @ x2
            gram2 = (xt2 @ x2).toarray() - (bx.T @ dinv @ bx).toarray()
            gz2 = [None if zb is bblk else _cross_or_gram((xt2 @ z - bx.T @ dinv @ bzu).tocsr())
                   for zb, z, bzu in zip(zs, zmats, bz)]
            res2 = _sweep(gram2, xt2 @ ysr, gz2, sizes2, scales2)
        else:
            res2 = []
        before = [k for k, i in enumerate(rest) if i < jb]
        zero = np.zeros(len(zs))
        jt = jb - off
        df[jt] = (bblk.ncol + sum(res2[k][0] for k in before)
                  - sum(r for r, _, _ in res1))
        ss[jt] = (float(mean_b @ (nb * mean_b)) + sum(res2[k][1] for k in before)
                  - sum(s for _, s, _ in res1))
        tr[jt] = tr_pb + sum((res2[k][2] for k in before), zero) - sum((t for _, _, t in res1),
                                                                         zero)
        for k, i in enumerate(rest):
            if i > jb:
                df[i - off], ss[i - off], tr[i - off] = res2[k]
        df[-1] = n - bblk.ncol - sum(r for r, _, _ in res2)
        ss[-1] = float(ysr @ ysr) + data.within_ss - sum(s for _, s, _ in res2)
        tr[-1] = (n - tr_pb) - sum((t for _, _, t in res2), zero)
    return SequentialSS(tuple(t.label for t in terms) + (RESIDUAL,), df, ss, tr, n)


def balanced_ss(data: AnovaData, terms: Sequence[Term], spec: Spec) -> SequentialSS:
    """Sums of squares of a balanced complete design from cell and margin means.

    ``spec`` is the design from :func:`mixedanova.moments.anova_design.balanced_spec`
    (its factors are the composite factors of ``terms``, in the same term
    order).  For a term ``T`` with nesting part ``N`` (the factors its factors
    are nested in) and crossed part ``C = T - N``, the effect of a cell is
    ``sum_{K subset C} (-1)^{|C - K|} ybar_{N + K}`` and the df is the same sum
    of the numbers of observed combinations of ``N + K``.  The residual is
    ``y - ybar - sum of the effects`` (the intercept is required by the rules).  ``traces`` are not
    computed (NaN): the rules give the EMS.
    """
    y = data.y
    n = data.nobs
    w = data.row_weights if data.counts is not None else None  # a table of cells
    atom_vars = {f.name: tuple(f.name.split(":")) for f in spec.factors}
    if tuple(t.label for t in terms) != spec.labels:
        raise ValueError("spec and terms disagree on the terms")
    anc = {f.name: set(f.nested_in) for f in spec.factors}
    changed = True
    while changed:
        changed = False
        for a in anc:
            more = set().union(*(anc[p] for p in anc[a])) - anc[a] if anc[a] else set()
            if more:
                anc[a] |= more
                changed = True
    cache: dict[frozenset[str], tuple[np.ndarray, int]] = {}

    def margin(atoms: frozenset[str]) -> tuple[np.ndarray, int]:
        if atoms not in cache:
            cols = [x for a in sorted(atoms) for x in atom_vars[a]]
            codes, m = data.codes(cols)
            if w is None:
                means = np.bincount(codes, weights=y, minlength=m) / np.bincount(codes,
                                                                                minlength=m)
            else:
                means = (np.bincount(codes, weights=w * y, minlength=m)
                         / np.bincount(codes, weights=w, minlength=m))
            cache[atoms] = (means[codes], m)
        return cache[atoms]

    labels, dfs, sss = [], [], []
    resid = y.copy()
    for t, atoms in zip(terms, spec.terms):
        nest = set().union(*(anc[a] for a in atoms))
        crossed = [a for a in atoms if a not in nest]
        effect = np.zeros(data.nrows)
        df = 0
        for k in range(len(crossed) + 1):
            sign = -1.0 if (len(crossed) - k) % 2 else 1.0
            for sub in combinations(crossed, k):
                fitted, m = margin(frozenset(nest) | frozenset(sub))
                effect += sign * fitted
                df += int(sign) * m
        resid -= effect
        labels.append(t.label)
        dfs.append(df)
        sss.append(float(effect @ (effect if w is None else w * effect)))
    # orthogonal decomposition: y = ybar + sum of the term effects + residual
    resid -= margin(frozenset())[0]
    dfs.append(n - 1 - sum(dfs))
    sss.append(float(resid @ (resid if w is None else w * resid)) + data.within_ss)
    return SequentialSS(tuple(labels) + (RESIDUAL,), np.array(dfs, dtype=float), np.array(sss),
                        np.full((len(dfs), sum(t.random for t in terms)), np.nan), n)
