"""Cross-products of one chunk of rows in one shot, and sums of many chunks.

:class:`~mixedanova.likelihood.crossprod.CrossProductPattern` keeps, for a set of
rows, where each row's contribution goes (an inverse index per pair of terms),
so that a GLMM's reweighted iterations refresh the numbers without sorting
again.  A chunk of a distributed pass is evaluated once, and the pattern's
bookkeeping is most of its cost.  :func:`chunk_cross_products` computes the same
:class:`~mixedanova.likelihood.crossprod.CrossProducts` without it:

* a term with itself (one level per row): ``bincount`` over the level codes
  (levels present and their sums, no sort);
* two different terms: the pair keys ``level_i * nlev_j + level_j`` sorted once
  (32-bit keys when the key space allows it); without weights and with two
  all-ones columns (the intercept of ``(1 | s)`` and ``(1 | d)``) the values
  are the run lengths of the sorted keys, else sums over the runs;
* ``Z_k' [X Y]`` per level by ``bincount``; ``[X Y]' [X Y]`` by one product.

:func:`sum_cross_products` adds many chunks' cross-products at once (one merge
of the pair keys instead of one per addition), as the nodes of a tree sum do.
"""
from __future__ import annotations

import numpy as np

from .blocked import TermData
from .crossprod import (ColumnStats, CrossProductPattern, CrossProducts, PairBlock,
                        TermShape, chunk_shift, ones_columns, per_level_ones)

__all__ = ["chunk_cross_products", "sum_cross_products", "accumulate_rows"]

_INT32_KEYS = 2**31 - 1


def chunk_cross_products(terms: list[TermData], X: np.ndarray, Y: np.ndarray,
                         weights: np.ndarray | None = None) -> CrossProducts:
    """The cross-products of one chunk, centered on the chunk's own shift.

    The same numbers as ``CrossProductPattern(terms, n).evaluate(zraws, X, Y,
    weights, standardize=False)`` (sums over the same rows, possibly added in
    another order), without a refreshable pattern.

    Parameters
    ----------
    terms : list of TermData
        Level codes and values of each random term.  A term with ``rows`` (several
        entries per row) goes through
        :class:`~mixedanova.likelihood.crossprod.CrossProductPattern`.
    X : numpy.ndarray
        ``(n, p)`` fixed-effects matrix.
    Y : numpy.ndarray
        ``(n,)`` or ``(n, k)`` response block.
    weights : numpy.ndarray, optional
        Prior weights (every row multiplied by ``sqrt(w)``).
    """
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    if any(t.rows is not None for t in terms) or n == 0:
        return CrossProductPattern(terms, n).evaluate([t.zraw for t in terms], X, Y,
                                                      weights, standardize=False)
    shift = chunk_shift(X, Y)  # on the unweighted rows, as the pattern's evaluate
    zraws = [np.asarray(t.zraw, dtype=float) for t in terms]
    if weights is not None:
        sw = np.sqrt(np.asarray(weights, dtype=float))
        X, Y = sw[:, None] * X, sw[:, None] * Y
        zraws = [sw[:, None] * z for z in zraws]
    k = Y.shape[1]
    if not np.all(np.isfinite(Y)):
        from ..errors import FitError
        raise FitError("the response has non-finite values")
    XY = np.empty((n, p + k), order="F")
    XY[:, :p] = X
    for j in range(k):
        XY[:, p + j] = Y[:, j] - X @ shift[:, j] if p else Y[:, j]
    ones = [ones_columns(z) for z in zraws]
    pairs = {}
    for i, ti in enumerate(terms):
        for j in range(i + 1):
            if i == j:
                pairs[(i, i)] = _own_pairs(ti.codes, zraws[i], ones[i], ti.nlev)
            else:
                pairs[(i, j)] = _crossed_pairs(ti.codes, terms[j].codes, zraws[i], zraws[j],
                                               ones[i], ones[j], ti.nlev, terms[j].nlev)
    zxy = tuple(per_level_ones(t.codes, XY, z, t.nlev, one)
                for t, z, one in zip(terms, zraws, ones))
    stats = tuple(ColumnStats.of(z, one) for z, one in zip(zraws, ones))
    shapes = tuple(TermShape(t.nlev, t.q, True) for t in terms)
    return CrossProducts(shapes, p, k, n, pairs, zxy, XY.T @ XY, shift, np.ones(k), stats,
                         Y.min(axis=0), Y.max(axis=0), ls_shift=False)


def _products(zi: np.ndarray, zj: np.ndarray, one_i: np.ndarray, one_j: np.ndarray):
    """``(a, b, values)`` for every column pair; values None for two all-ones columns."""
    for a in range(zi.shape[1]):
        for b in range(zj.shape[1]):
            yield a, b, (None if one_i[a] and one_j[b] else zi[:, a] * zj[:, b])


def _own_pairs(codes: np.ndarray, z: np.ndarray, ones: np.ndarray, nlev: int) -> PairBlock:
    """``Z_i' Z_i``: one block per level present (key ``l * nlev + l``)."""
    n, q = z.shape
    if nlev <= 8 * n + 4096:
        counts = np.bincount(codes, minlength=nlev)
        lev = np.flatnonzero(counts)
        idx, size = codes, nlev
    else:  # far more levels than rows: the levels present by a sort
        lev, idx = np.unique(codes, return_inverse=True)
        idx = idx.ravel()
        counts, size = None, len(lev)
        lev = lev.astype(np.int64)
    vals = np.empty((len(lev), q, q))
    for a, b, w in _products(z, z, ones, ones):
        if w is None and counts is not None:
            vals[:, a, b] = counts[lev]
            continue
        s = np.bincount(idx, weights=w, minlength=size)
        vals[:, a, b] = s[lev] if size == nlev else s
    return PairBlock(lev.astype(np.int64) * (nlev + 1), vals)


def _crossed_pairs(ci: np.ndarray, cj: np.ndarray, zi: np.ndarray, zj: np.ndarray,
                   one_i: np.ndarray, one_j: np.ndarray, nlev_i: int,
                   nlev_j: int) -> PairBlock:
    """``Z_i' Z_j`` (``i != j``): the pair keys sorted once, values summed over runs."""
    dtype = np.int32 if nlev_i * nlev_j <= _INT32_KEYS else np.int64
    key = ci.astype(dtype) * dtype(nlev_j)
    key += cj.astype(dtype, copy=False)
    counts_only = bool(one_i.all() and one_j.all())
    if counts_only:
        skey = np.sort(key)
        order = None
    else:
        order = np.argsort(key)
        skey = key[order]
    n = len(skey)
    first = np.empty(n, dtype=bool)
    first[:1] = True
    np.not_equal(skey[1:], skey[:-1], out=first[1:])
    start = np.flatnonzero(first)
    keys = skey[start].astype(np.int64)
    vals = np.empty((len(start), zi.shape[1], zj.shape[1]))
    if counts_only:
        vals[:, 0, 0] = np.diff(np.append(start, n))
        return PairBlock(keys, vals)
    for a, b, w in _products(zi, zj, one_i, one_j):
        if w is None:
            vals[:, a, b] = np.diff(np.append(start, n))
        else:
            vals[:, a, b] = np.add.reduceat(w[order], start)
    return PairBlock(keys, vals)


def sum_cross_products(items: list[CrossProducts]) -> CrossProducts:
    """The sum of many chunks' cross-products (``items[0] + items[1] + ...``).

    Every chunk is re-expressed on the shift of the one with the most rows (as
    :meth:`~mixedanova.likelihood.crossprod.CrossProducts.__add__` does for two)
    and the pair blocks are merged once (:meth:`PairBlock.total`).
    """
    items = [c for c in items if c is not None]
    if len(items) <= 2:
        return items[0] + items[1] if len(items) == 2 else items[0]
    first = items[0]
    for c in items[1:]:
        if c.terms != first.terms or c.p != first.p or c.k != first.k:
            raise ValueError("cross-products of different designs cannot be added")
    lead = max(range(len(items)), key=lambda m: items[m].n)
    order = [lead] + [m for m in range(len(items)) if m != lead]
    # on the lead's shift with scale 1 (the lead itself: its shift unchanged)
    raw = [items[m].reshift(items[lead].shift) for m in order]
    a = raw[0]
    pairs = {key: PairBlock.total([r.pairs[key] for r in raw]) for key in a.pairs}
    zxy = []
    for t in range(len(a.zxy)):
        acc = a.zxy[t].copy()
        for r in raw[1:]:
            acc += r.zxy[t]
        zxy.append(acc)
    xy = a.xy.copy()
    stats = list(a.stats)
    for r in raw[1:]:
        xy += r.xy
        stats = [s.merge(o) for s, o in zip(stats, r.stats)]
    return CrossProducts(a.terms, a.p, a.k, sum(r.n for r in raw), pairs, tuple(zxy), xy,
                         a.shift, a.scale, tuple(stats),
                         np.min([r.ymin for r in raw], axis=0),
                         np.max([r.ymax for r in raw], axis=0), False)


def accumulate_rows(terms: list[TermData], X: np.ndarray, Y: np.ndarray,
                    chunk_rows: int) -> CrossProducts:
    """The cross-products of rows held in memory, summed ``chunk_rows`` at a time.

    Partial sums are merged as in a binary counter (two sums of the same number
    of chunks are added), so every row's contribution is merged about
    ``log2(n / chunk_rows)`` times and at most one partial sum per level is held.
    """
    n = len(Y)
    stack: list[tuple[int, CrossProducts]] = []
    for start in range(0, n, chunk_rows):
        r = slice(start, min(start + chunk_rows, n))
        part = chunk_cross_products([TermData(t.codes[r], t.zraw[r], t.nlev) for t in terms],
                                    X[r], Y[r])
        size = 1
        while stack and stack[-1][0] == size:
            size += stack[-1][0]
            part = sum_cross_products([stack.pop()[1], part])
        stack.append((size, part))
    return sum_cross_products([c for _, c in stack])
