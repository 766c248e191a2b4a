"""Cross-products of one chunk of rows in one shot, and sums of many chunks.

:class:`~mixedanova.likelihood.crossprod.CrossProductPattern` keeps, for a set of
rows, where each row's contribution goes (an inverse index per pair of terms),
so that a GLMM's reweighted iterations refresh the numbers without sorting
again.  A chunk of a distributed pass is evaluated once, and the pattern's
bookkeeping is most of its cost.  :func:`chunk_sums` computes the same
:class:`~mixedanova.likelihood.crossprod.CrossProducts` without it, with each
``Z_i' W Z_j`` as a :class:`~mixedanova.likelihood.pair_sums.PairSum` (the form
in which many chunks add without merging their level pairs):

* a term with itself (one level per row): ``bincount`` over the level codes;
* two different terms: the pair keys ``level_i * nlev_j + level_j`` (32-bit
  when the key space allows it) with the rows' blocks, or without values for two
  all-ones columns and no weights (the intercepts of ``(1 | s)`` and ``(1 | d)``:
  the block is the count);
* ``Z_k' [X Y]`` per level by ``bincount``; ``[X Y]' [X Y]`` by one product.

:func:`sum_cross_products` adds many chunks' cross-products at once, as the nodes
of a tree sum do, and :func:`finished` turns the sums into the engine's
:class:`~mixedanova.likelihood.crossprod.PairBlock` (one merge of all pair keys);
:func:`chunk_cross_products` is one chunk, finished.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .blocked import TermData
from .crossprod import (ColumnStats, CrossProductPattern, CrossProducts, PairBlock,
                        TermShape, chunk_shift, ones_columns, per_level_ones)
from .pair_sums import KeySpace, PairSum

__all__ = ["chunk_cross_products", "chunk_sums", "sum_cross_products", "finished",
           "accumulate_rows", "column_gram"]


def chunk_cross_products(terms: list[TermData], X: np.ndarray, Y: np.ndarray,
                         weights: np.ndarray | None = None) -> CrossProducts:
    """The cross-products of one chunk (:func:`chunk_sums`, :func:`finished`)."""
    return finished(chunk_sums(terms, X, Y, weights))


def chunk_sums(terms: list[TermData], X: np.ndarray, Y: np.ndarray,
               weights: np.ndarray | None = None) -> CrossProducts:
    """The cross-products of one chunk, centered on the chunk's own shift, with
    the pairs of terms as :class:`~mixedanova.likelihood.pair_sums.PairSum`.

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
    XY = np.empty((n, p + k), order="F")  # columns contiguous: bincount weights
    XY[:, :p] = X
    x_ones = ones_columns(XY[:, :p])  # an intercept: its sums per level are the counts
    tmp = np.empty(n) if p else None
    for j in range(k):  # Y - X shift, column by column (no BLAS product over the rows)
        yc = XY[:, p + j]
        yc[:] = Y[:, j]
        for c in range(p):
            if shift[c, j] == 0.0:
                continue
            if x_ones[c]:
                yc -= shift[c, j]
            else:
                np.multiply(XY[:, c], shift[c, j], out=tmp)
                yc -= tmp
    xy_ones = np.concatenate([x_ones, ones_columns(XY[:, p:])])
    ones = [ones_columns(z) for z in zraws]
    pairs, counts = {}, []
    for i, ti in enumerate(terms):
        for j in range(i + 1):
            tj = terms[j]
            vals = None
            if not (ones[i].all() and ones[j].all()):
                vals = zraws[i][:, :, None] * zraws[j][:, None, :]
            if i == j:
                space, keys = KeySpace(ti.nlev, ti.nlev + 1), ti.codes
                pairs[(i, i)] = PairSum.of_keys(space, keys, vals, (ti.q, ti.q))
                counts.append(pairs[(i, i)].counts)  # the rows per level, when dense
                continue
            space = KeySpace(ti.nlev * tj.nlev)
            keys = np.empty(n, dtype=space.key_dtype)  # level_i * nlev_j + level_j
            np.multiply(ti.codes, tj.nlev, out=keys, casting="unsafe")
            np.add(keys, tj.codes, out=keys, casting="unsafe")
            pairs[(i, j)] = PairSum.of_keys(space, keys, vals, (ti.q, tj.q))
    zxy = tuple(per_level_ones(t.codes, XY, z, t.nlev, one, c, xy_ones)
                for t, z, one, c in zip(terms, zraws, ones, counts))
    stats = tuple(ColumnStats.of(z, one) for z, one in zip(zraws, ones))
    shapes = tuple(TermShape(t.nlev, t.q, True) for t in terms)
    return CrossProducts(shapes, p, k, n, pairs, zxy, column_gram(XY), shift, np.ones(k),
                         stats, Y.min(axis=0), Y.max(axis=0), ls_shift=False)


def column_gram(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """``A' B`` (``A' A`` when ``B`` is None) of tall, narrow matrices, one dot
    product per pair of columns (several times faster than a BLAS product whose
    inner dimension is the rows)."""
    sym = B is None
    B = A if sym else B
    out = np.empty((A.shape[1], B.shape[1]))
    for i in range(A.shape[1]):
        for j in range(i + 1 if sym else B.shape[1]):
            out[i, j] = np.dot(A[:, i], B[:, j])
            if sym:
                out[j, i] = out[i, j]
    return out


def _sum_pairs(blocks: list):
    """The sum of one pair of terms' blocks or sums."""
    if all(isinstance(b, PairBlock) for b in blocks):
        return PairBlock.total(blocks)
    return PairSum.total(blocks)


def finished(cp: CrossProducts) -> CrossProducts:
    """``cp`` with every :class:`~mixedanova.likelihood.pair_sums.PairSum` merged
    into the engine's :class:`~mixedanova.likelihood.crossprod.PairBlock`."""
    if not any(isinstance(b, PairSum) for b in cp.pairs.values()):
        return cp
    return replace(cp, pairs={key: b.block() if isinstance(b, PairSum) else b
                              for key, b in cp.pairs.items()})


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
    pairs = {key: _sum_pairs([r.pairs[key] for r in raw]) for key in a.pairs}
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
        part = chunk_sums([TermData(t.codes[r], t.zraw[r], t.nlev) for t in terms], X[r],
                          Y[r])
        size = 1
        while stack and stack[-1][0] == size:
            size += stack[-1][0]
            part = sum_cross_products([stack.pop()[1], part])
        stack.append((size, part))
    return finished(sum_cross_products([c for _, c in stack]))
