"""Cross-products of ``[Z X Y]``: the likelihood engine's only input after set-up.

A :class:`CrossProducts` holds, for the random-effects terms of a design, the
fixed-effects matrix ``X`` and a response block ``Y`` of ``k`` columns (prior
weights ``W`` applied to the rows):

* ``Z_i' W Z_j`` for every pair of terms ``i >= j``, as a list of nonzero
  ``q_i x q_j`` blocks keyed by the pair of levels that share a row (the
  *pattern*: it comes from the level codes alone, so a level pair whose values
  happen to be 0 is still kept);
* ``Z_k' W [X Y]`` per level of each term, and ``[X Y]' W [X Y]``;
* per term, column statistics of the random-effects values (their mean,
  spread and root mean square, whether a column is all ones), which the
  optimizer's start and working coordinates use.

Everything is a sum over rows, so the cross-products of two chunks of rows add
(``a + b``).  The response block is kept *centered* on a shift ``Y - X S``: each
chunk is centered on its own least-squares fit (or, for a chunk too small to
fit ``X``, on its mean through an intercept column), and two chunks are
re-expressed on the shift of the larger before they are added, as in the
pairwise updates of Chan, Golub and LeVeque (1979) for the mean and variance.
A response shifted by ``1e8`` standard deviations thus never forms its squares
about 0.  :meth:`CrossProducts.standardized` re-centers the sum on the
least-squares fit of the whole data and divides it by the residual root mean
square: the engine works on that standardized response.

:class:`CrossProductPattern` is the symbolic part for one set of rows (which
level pairs occur and where each row's contribution goes): a numeric refresh
with new row weights (:meth:`CrossProductPattern.evaluate`) does no sorting or
searching, which is what the inner loop of a GLMM's penalized iteratively
reweighted least squares needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import FitError
from .blocked import TermData, per_level

__all__ = ["TermShape", "ColumnStats", "PairBlock", "CrossProducts", "CrossProductPattern",
           "RowBlock", "cross_products", "chunk_shift", "ones_columns", "per_level_ones"]


@dataclass(frozen=True)
class TermShape:
    """Size of one random-effects term: levels, columns, and whether every row
    touches one level only (else a whitened term, see :class:`TermData`)."""

    nlev: int
    q: int
    one_per_row: bool = True


@dataclass(frozen=True)
class ColumnStats:
    """Statistics of a term's random-effects columns over its entries (rows).

    Merged by the pairwise formulas of Chan, Golub and LeVeque, so that the
    statistics of a union of chunks equal those of the whole.
    """

    count: float
    total: np.ndarray  # (q,) sum of each column
    m2: np.ndarray     # (q,) sum of squared deviations from the column mean
    sumsq: np.ndarray  # (q,) sum of squares
    ones: np.ndarray   # (q,) bool: the column is 1 everywhere

    @classmethod
    def of(cls, z: np.ndarray, ones: np.ndarray | None = None) -> "ColumnStats":
        """Statistics of ``z``'s columns (``ones``: which columns are known to be
        all ones, as :func:`ones_columns`)."""
        n, q = z.shape
        ones = ones_columns(z) if ones is None else ones
        if ones.all():  # intercepts: nothing to read
            return cls(float(n), np.full(q, float(n)), np.zeros(q), np.full(q, float(n)),
                       ones.copy())
        total = np.empty(q)
        m2 = np.empty(q)
        for j in range(q):
            col = z[:, j]
            total[j] = np.add.reduce(col)
            d = col - total[j] / n if n else col
            m2[j] = np.add.reduce(d * d)
        sumsq = np.sum(z * z, axis=0)
        return cls(float(n), total, m2, sumsq, ones)

    def merge(self, other: "ColumnStats") -> "ColumnStats":
        na, nb = self.count, other.count
        if na == 0:
            return other
        if nb == 0:
            return self
        n = na + nb
        delta = other.total / nb - self.total / na
        m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        return ColumnStats(n, self.total + other.total, m2, self.sumsq + other.sumsq,
                           self.ones & other.ones)

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of each column."""
        return np.sqrt(self.m2 / self.count)

    @property
    def rms(self) -> np.ndarray:
        """Root mean square of each column (1 where it is 0)."""
        rms = np.sqrt(self.sumsq / self.count)
        return np.where(rms > 0, rms, 1.0)


@dataclass(frozen=True)
class PairBlock:
    """Nonzero blocks of ``Z_i' W Z_j``: ``keys = level_i * nlev_j + level_j``
    (sorted, distinct) and ``vals[m]`` the ``q_i x q_j`` block of key ``m``."""

    keys: np.ndarray
    vals: np.ndarray

    def __add__(self, other: "PairBlock") -> "PairBlock":
        if not isinstance(other, PairBlock):
            return NotImplemented  # a chunk sum in another form adds itself
        return PairBlock.total([self, other])

    @staticmethod
    def total(blocks: list["PairBlock"]) -> "PairBlock":
        """The sum of ``blocks`` in one merge: their sorted key runs concatenated
        and merged by a stable sort (which finds and merges the runs), equal keys'
        values summed in the order of ``blocks``."""
        blocks = [b for b in blocks if b is not None]
        if len(blocks) == 1:
            return blocks[0]
        if all(np.array_equal(blocks[0].keys, b.keys) for b in blocks[1:]):
            vals = blocks[0].vals.copy()
            for b in blocks[1:]:
                vals += b.vals
            return PairBlock(blocks[0].keys, vals)
        keys = np.concatenate([b.keys for b in blocks])
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        vals = np.concatenate([b.vals for b in blocks])[order]
        first = np.empty(len(keys), dtype=bool)
        first[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        if first.all():
            return PairBlock(keys, vals)
        start = np.flatnonzero(first)
        return PairBlock(keys[start], np.add.reduceat(vals, start, axis=0))


@dataclass(frozen=True)
class CrossProducts:
    """Chunk-additive cross-products of ``[Z X Y]`` (see the module docstring).

    Attributes
    ----------
    terms : tuple of TermShape
    p, k : int
        Fixed-effects columns and response columns.
    n : int
        Rows summed.
    pairs : dict
        ``{(i, j): PairBlock}`` for ``i >= j``.
    zxy : tuple of numpy.ndarray
        Per term, ``(nlev, p + k, q)``: ``Z_k' W [X Y~]`` level by level.
    xy : numpy.ndarray
        ``[X Y~]' W [X Y~]``.
    shift, scale : numpy.ndarray
        ``Y~ = (Y - X shift) / scale`` (``(p, k)`` and ``(k,)``).
    stats : tuple of ColumnStats
    ymin, ymax : numpy.ndarray
        Range of each response column (for the checks of a constant response).
    ls_shift : bool
        ``shift`` is the least-squares fit of these rows and ``scale`` the root
        mean square of its residuals (:meth:`standardized` has nothing to do).
    """

    terms: tuple[TermShape, ...]
    p: int
    k: int
    n: int
    pairs: dict = field(repr=False)
    zxy: tuple = field(repr=False)
    xy: np.ndarray = field(repr=False)
    shift: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    stats: tuple = field(repr=False)
    ymin: np.ndarray = field(repr=False)
    ymax: np.ndarray = field(repr=False)
    ls_shift: bool = False

    # ------------------------------------------------------------ algebra
    def _raw(self) -> "CrossProducts":
        """The same rows with ``scale = 1``."""
        if np.all(self.scale == 1.0):
            return self
        p, s = self.p, self.scale
        xy = self.xy.copy()
        xy[:p, p:] *= s
        xy[p:, :p] *= s[:, None]
        xy[p:, p:] *= np.outer(s, s)
        zxy = tuple(_scale_y(a, p, s) for a in self.zxy)
        return replace(self, xy=xy, zxy=zxy, scale=np.ones(self.k), ls_shift=False)

    def reshift(self, shift: np.ndarray) -> "CrossProducts":
        """The same rows with the response centered on ``shift`` (``(p, k)``).

        ``Y - X s = (Y - X a) + X d`` with ``d = a - s``: the cross-products of the
        new response follow from the old ones and those of ``X`` (exactly, and
        without cancellation when ``d`` is small next to the response's spread).
        """
        raw = self._raw()
        p = raw.p
        d = raw.shift - np.asarray(shift, dtype=float).reshape(p, raw.k)
        if not np.any(d):
            return replace(raw, shift=np.array(shift, dtype=float).reshape(p, raw.k))
        xy = raw.xy.copy()
        xx, xyc = raw.xy[:p, :p], raw.xy[:p, p:]
        cross = d.T @ xyc
        xy[p:, p:] = raw.xy[p:, p:] + cross + cross.T + d.T @ xx @ d
        xy[:p, p:] = xyc + xx @ d
        xy[p:, :p] = xy[:p, p:].T
        zxy = []
        for a in raw.zxy:
            b = a.copy()
            b[:, p:, :] += np.einsum("ck,lcq->lkq", d, a[:, :p, :])
            zxy.append(b)
        return replace(raw, xy=xy, zxy=tuple(zxy),
                       shift=np.array(shift, dtype=float).reshape(p, raw.k), ls_shift=False)

    def __add__(self, other: "CrossProducts") -> "CrossProducts":
        if not isinstance(other, CrossProducts):
            return NotImplemented
        if (self.terms != other.terms or self.p != other.p or self.k != other.k):
            raise ValueError("cross-products of different designs cannot be added")
        a, b = self._raw(), other._raw()
        if b.n > a.n:
            a, b = b, a
        b = b.reshift(a.shift)
        pairs = {key: a.pairs[key] + b.pairs[key] for key in a.pairs}
        return CrossProducts(
            a.terms, a.p, a.k, a.n + b.n, pairs,
            tuple(x + y for x, y in zip(a.zxy, b.zxy)), a.xy + b.xy, a.shift, a.scale,
            tuple(x.merge(y) for x, y in zip(a.stats, b.stats)),
            np.minimum(a.ymin, b.ymin), np.maximum(a.ymax, b.ymax), False)

    def __radd__(self, other):
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def standardized(self) -> "CrossProducts":
        """Centered on the least-squares fit of ``Y`` on ``X`` and divided by the
        root mean square of its residuals (the profiled objective changes by
        known terms only).

        Raises
        ------
        FitError
            A response column is constant, or the fixed effects fit it exactly.
        """
        if self.ls_shift:
            return self
        raw = self._raw()
        p, k = raw.p, raw.k
        if p:
            xx = raw.xy[:p, :p]
            d = np.linalg.lstsq(xx, raw.xy[:p, p:], rcond=None)[0]
            cen = raw.reshift(raw.shift + d)
        else:
            cen = raw
        ss = np.diag(cen.xy[p:, p:]).copy()
        scale = np.sqrt(np.maximum(ss, 0.0) / max(cen.n, 1))
        size = np.maximum(np.abs(raw.ymin), np.abs(raw.ymax))
        for j in range(k):
            _check_scale(scale[j], size[j], raw.ymin[j], raw.ymax[j], cen.n)
        xy = cen.xy.copy()
        xy[:p, p:] /= scale
        xy[p:, :p] /= scale[:, None]
        xy[p:, p:] /= np.outer(scale, scale)
        zxy = tuple(_scale_y(a, p, 1.0 / scale) for a in cen.zxy)
        return replace(cen, xy=xy, zxy=zxy, scale=scale, ls_shift=True)

    def select(self, j) -> "CrossProducts":
        """The cross-products of response column(s) ``j`` only."""
        cols = np.atleast_1d(np.arange(self.k)[j])
        p = self.p
        idx = np.concatenate([np.arange(p), p + cols])
        return replace(self, k=len(cols), zxy=tuple(a[:, idx, :] for a in self.zxy),
                       xy=self.xy[np.ix_(idx, idx)], shift=self.shift[:, cols],
                       scale=self.scale[cols], ymin=self.ymin[cols], ymax=self.ymax[cols])

    def transformed(self, maps: list[np.ndarray]) -> "CrossProducts":
        """Cross-products of ``Z_k C_k`` (the working coordinates of
        :mod:`~mixedanova.likelihood.reparam`); column statistics are those of the
        transformed columns' root mean squares."""
        pairs = {(i, j): PairBlock(b.keys, maps[i].T @ b.vals @ maps[j])
                 for (i, j), b in self.pairs.items()}
        zxy = tuple(a @ C for a, C in zip(self.zxy, maps))
        stats = []
        for k, (s, C) in enumerate(zip(self.stats, maps)):
            tot = self.pairs[(k, k)].vals.sum(axis=0)
            sumsq = np.diag(C.T @ tot @ C).copy()
            unit = np.all(C == np.eye(len(C)), axis=0)  # columns that C leaves alone
            stats.append(ColumnStats(s.count, s.total @ C, s.m2, sumsq, s.ones & unit))
        return replace(self, pairs=pairs, zxy=zxy, stats=tuple(stats))

    def permuted(self, order: list[int]) -> "CrossProducts":
        """The same cross-products with the terms in ``order`` (``order[s]`` is the
        current index of the new term ``s``)."""
        pairs = {}
        for a in range(len(order)):
            for b in range(a + 1):
                i, j = order[a], order[b]
                if i >= j:
                    pairs[(a, b)] = self.pairs[(i, j)]
                    continue
                blk = self.pairs[(j, i)]  # keys l_j * nlev_i + l_i: swap the roles
                lj, li = np.divmod(blk.keys, self.terms[i].nlev)
                keys = li.astype(np.int64) * self.terms[j].nlev + lj
                o = np.argsort(keys)
                pairs[(a, b)] = PairBlock(keys[o], blk.vals[o].transpose(0, 2, 1))
        pick = lambda seq: tuple(seq[i] for i in order)  # noqa: E731
        return replace(self, terms=pick(self.terms), pairs=pairs, zxy=pick(self.zxy),
                       stats=pick(self.stats))

    # ------------------------------------------------------------ views
    def diag_blocks(self, k: int) -> np.ndarray:
        """``(nlev, q, q)``: the level-diagonal blocks of ``Z_k' W Z_k``."""
        t = self.terms[k]
        b = self.pairs[(k, k)]
        li, lj = np.divmod(b.keys, t.nlev)
        out = np.zeros((t.nlev, t.q, t.q))
        on = li == lj
        out[li[on]] = b.vals[on]
        return out

    def zxy_columns(self, k: int) -> np.ndarray:
        """``Z_k' W [X Y~]`` as an ``(nlev q) x (p + k)`` matrix (level-major rows)."""
        a = self.zxy[k]
        return a.transpose(0, 2, 1).reshape(-1, a.shape[1])


def ones_columns(z: np.ndarray) -> np.ndarray:
    """Which columns of ``z`` are 1 everywhere (an empty ``z``: all)."""
    if z.ndim == 2 and z.strides[0] == 0 and len(z):  # one row repeated (a broadcast)
        return z[0] == 1.0
    return np.all(z == 1.0, axis=0)


def _scale_y(a: np.ndarray, p: int, s) -> np.ndarray:
    b = a.copy()
    b[:, p:, :] *= np.asarray(s)[None, :, None]
    return b


def _check_scale(scale: float, size: float, lo: float, hi: float, n: int) -> None:
    if not scale > 1e-12 * size:
        if n == 0 or lo == hi:
            raise FitError("the response is constant: there is no variation to estimate "
                           "variance components from")
        raise FitError("the fixed effects fit the response exactly (residual sum of squares "
                       "0): no variation is left for the random effects or the residual")


def _row_join(rows_i: np.ndarray, rows_j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(e, f)`` of entries of two terms that sit in the same row."""
    oi = np.argsort(rows_i, kind="stable")
    oj = np.argsort(rows_j, kind="stable")
    cj = np.bincount(rows_j, minlength=n)
    start_j = np.concatenate([[0], np.cumsum(cj)[:-1]])
    ri = rows_i[oi]
    reps = cj[ri]
    e = np.repeat(oi, reps)
    first = np.repeat(np.cumsum(reps) - reps, reps)
    within = np.arange(len(e)) - first
    f = oj[np.repeat(start_j[ri], reps) + within]
    return e, f


@dataclass(frozen=True)
class _Slot:
    """Where each contribution of a pair of terms goes: ``inv[e]`` is the key of
    contribution ``e``; ``left``/``right`` index the two terms' entries."""

    keys: np.ndarray
    inv: np.ndarray
    left: np.ndarray | None
    right: np.ndarray | None


class CrossProductPattern:
    """The symbolic part of the cross-products of one set of rows.

    Parameters
    ----------
    terms : list of TermData
        Level codes (and, for a whitened term, the row of each entry).  Only the
        codes and rows are read here.
    n : int
        Number of rows.
    """

    def __init__(self, terms: list[TermData], n: int) -> None:
        self.n = n
        self.shapes = tuple(TermShape(t.nlev, t.q, t.rows is None) for t in terms)
        self.rows = [np.arange(n) if t.rows is None else t.rows for t in terms]
        self.codes = [t.codes for t in terms]
        self.slots: dict[tuple[int, int], _Slot] = {}
        for i, ti in enumerate(terms):
            for j in range(i + 1):
                tj = terms[j]
                if ti.rows is None and tj.rows is None:
                    left = right = None
                    ci, cj = ti.codes, tj.codes
                elif i == j:
                    left, right = _row_join(self.rows[i], self.rows[i], n)
                    ci, cj = ti.codes[left], ti.codes[right]
                else:
                    left, right = _row_join(self.rows[i], self.rows[j], n)
                    ci, cj = ti.codes[left], tj.codes[right]
                if i == j and left is None:  # key l * nlev + l: distinct levels suffice
                    lev, inv = _distinct_keys(ci.astype(np.int64), ti.nlev)
                    uniq = lev * (ti.nlev + 1)
                else:
                    key = ci.astype(np.int64) * tj.nlev + cj
                    uniq, inv = _distinct_keys(key, ti.nlev * tj.nlev)
                self.slots[(i, j)] = _Slot(uniq, inv, left, right)

    def evaluate(self, zraws: list[np.ndarray], X: np.ndarray, Y: np.ndarray,
                 weights: np.ndarray | None = None, standardize: bool = True,
                 shift: np.ndarray | None = None) -> CrossProducts:
        """Numeric cross-products of these rows.

        Parameters
        ----------
        zraws : list of numpy.ndarray
            Each term's values (rows or entries, as the pattern's terms).
        X : numpy.ndarray
            ``(n, p)`` fixed-effects matrix.
        Y : numpy.ndarray
            ``(n,)`` or ``(n, k)`` response block.
        weights : numpy.ndarray, optional
            Prior weights: every row is multiplied by ``sqrt(w)`` (a refresh with
            new weights re-uses the pattern as it is).
        standardize : bool
            Center on these rows' least-squares fit and scale to unit root mean
            square residual (one piece of data); else center on ``shift`` or a
            chunk shift (see the module docstring).
        """
        Y = np.asarray(Y, dtype=float)
        Y = Y[:, None] if Y.ndim == 1 else Y
        X = np.asarray(X, dtype=float)
        if shift is None and not standardize:
            # a chunk's centering, on the unweighted rows (where an intercept column
            # is still constant): sqrt(w) (Y - X s) = Y_w - X_w s
            shift = chunk_shift(X, Y)
        if weights is not None:
            sw = np.sqrt(np.asarray(weights, dtype=float))
            X, Y = sw[:, None] * X, sw[:, None] * Y
            zraws = [sw[r][:, None] * z for r, z in zip(self.rows, zraws)]
        n, p = X.shape
        k = Y.shape[1]
        if not np.all(np.isfinite(Y)):
            raise FitError("the response has non-finite values")
        ymin = Y.min(axis=0) if n else np.full(k, np.inf)
        ymax = Y.max(axis=0) if n else np.full(k, -np.inf)
        if shift is None:  # one piece: its (weighted) least-squares fit, minimum norm
            shift = np.linalg.lstsq(X, Y, rcond=None)[0] if p else np.zeros((0, k))
        shift = np.asarray(shift, dtype=float).reshape(p, k)
        Yc = np.empty_like(Y)
        scale = np.ones(k)
        for j in range(k):  # column by column: the same arithmetic for one and k columns
            Yc[:, j] = Y[:, j] - X @ shift[:, j] if p else Y[:, j]
            if standardize:
                r = Yc[:, j]
                scale[j] = float(np.sqrt(np.mean(r * r))) if n else 0.0
                size = float(np.max(np.abs(Y[:, j]))) if n else 0.0
                _check_scale(scale[j], size, ymin[j], ymax[j], n)
                Yc[:, j] = r / scale[j]
        XY = np.empty((n, p + k), order="F")  # columns contiguous: bincount weights
        XY[:, :p] = X
        XY[:, p:] = Yc
        ones = [ones_columns(z) for z in zraws]  # intercepts: counts, no products
        pairs = {}
        for (i, j), s in self.slots.items():
            zi = zraws[i] if s.left is None else zraws[i][s.left]
            zj = zraws[j] if s.right is None else zraws[j][s.right]
            qi, qj = zi.shape[1], zj.shape[1]
            vals = np.empty((len(s.keys), qi, qj))
            for a in range(qi):
                for b in range(qj):
                    w = None if ones[i][a] and ones[j][b] else zi[:, a] * zj[:, b]
                    vals[:, a, b] = np.bincount(s.inv, weights=w, minlength=len(s.keys))
            pairs[(i, j)] = PairBlock(s.keys, vals)
        zxy = [per_level_ones(codes, XY if t.one_per_row else XY[rows], z, t.nlev, one)
               for codes, rows, z, t, one in zip(self.codes, self.rows, zraws, self.shapes,
                                                  ones)]
        stats = tuple(ColumnStats.of(z, one) for z, one in zip(zraws, ones))
        return CrossProducts(self.shapes, p, k, n, pairs, tuple(zxy), XY.T @ XY, shift,
                             scale, stats, ymin, ymax, ls_shift=standardize)


def per_level_ones(codes: np.ndarray, XY: np.ndarray, z: np.ndarray, nlev: int,
                   ones: np.ndarray, counts: np.ndarray | None = None,
                   xy_ones: np.ndarray | None = None) -> np.ndarray:
    """:func:`~mixedanova.likelihood.blocked.per_level` of ``XY`` and ``z``, with
    ``z``'s all-ones columns read as such (no products); ``counts`` (the rows of
    each level) stand for an all-ones column of ``XY`` (``xy_ones``) times one."""
    if not ones.any():
        return per_level(codes, XY, z, nlev)
    out = np.empty((nlev, XY.shape[1], z.shape[1]))
    for t in range(z.shape[1]):
        for c in range(XY.shape[1]):
            if ones[t] and xy_ones is not None and xy_ones[c]:
                if counts is None:
                    counts = np.bincount(codes, minlength=nlev)
                out[:, c, t] = counts
                continue
            w = XY[:, c] if ones[t] else XY[:, c] * z[:, t]
            out[:, c, t] = np.bincount(codes, weights=w, minlength=nlev)
    return out


def _distinct_keys(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for integer keys in ``[0, size)``: by
    a table of the key space (no sort) when it is not much larger than the keys."""
    n = len(keys)
    if (size > (1 << 26) or size > 4 * n) and n and float(size) * n < 2.0**62:
        # one in-place sort of (key, row) packed in an int64 (no argsort)
        packed = keys.astype(np.int64) * n + np.arange(n, dtype=np.int64)
        packed.sort()
        sorted_keys = packed // n
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
        inv = np.empty(n, dtype=np.intp)
        inv[packed - sorted_keys * n] = np.cumsum(first) - 1
        return sorted_keys[first].astype(keys.dtype, copy=False), inv
    if size > (1 << 26) or size > 4 * n:
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, inv.ravel()
    seen = np.zeros(size, dtype=bool)
    seen[keys] = True
    uniq = np.flatnonzero(seen)
    rank = np.empty(size, dtype=np.intp)
    rank[uniq] = np.arange(len(uniq))
    return uniq.astype(keys.dtype, copy=False), rank[keys]


def chunk_shift(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """A chunk's centering: its least-squares fit when the chunk determines one
    well (at least ``2 p`` rows and full column rank), else its mean through an
    intercept column (a column constant on the chunk), else 0."""
    n, p = X.shape
    k = Y.shape[1]
    if p == 0 or n == 0:
        return np.zeros((p, k))
    if n >= 2 * p:
        # the normal equations (a centering only: its rounding is carried exactly by
        # reshift), by least squares when X'X is not safely positive definite
        xx = X.T @ X
        d = np.sqrt(np.diag(xx))
        if np.all(d > 0):
            try:
                c = np.linalg.cholesky(xx / np.outer(d, d))
            except np.linalg.LinAlgError:
                c = None
            if c is not None and np.min(np.diag(c)) ** 2 > 1e-8:
                rhs = (X.T @ Y) / d[:, None]
                return np.linalg.solve(c.T, np.linalg.solve(c, rhs)) / d[:, None]
        coef, _, rank, _ = np.linalg.lstsq(X, Y, rcond=None)
        if rank == p:
            return coef
    out = np.zeros((p, k))
    const = np.flatnonzero(np.all(X == X[0], axis=0) & (X[0] != 0))
    if len(const):
        c = const[0]
        out[c] = Y.mean(axis=0) / X[0, c]
    return out


@dataclass(frozen=True)
class RowBlock:
    """Rows of ``[Z X y]`` as the engine saw them (weights applied), kept for the
    one pass that needs rows: the explicit penalized residual sum of squares at
    a solution (:meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.explicit_pwrss`).
    A model fitted from chunks keeps one block per chunk, or none."""

    terms: tuple
    X: np.ndarray
    y: np.ndarray

    def transformed(self, maps: list[np.ndarray]) -> "RowBlock":
        return RowBlock(tuple(replace(t, zraw=t.zraw @ C) for t, C in zip(self.terms, maps)),
                        self.X, self.y)


def cross_products(terms: list[TermData], X: np.ndarray, y: np.ndarray,
                   weights: np.ndarray | None = None,
                   standardize: bool = True) -> CrossProducts:
    """Cross-products of one piece of data (pattern and values in one call)."""
    n = len(np.asarray(y))
    return CrossProductPattern(terms, n).evaluate([t.zraw for t in terms], X, y, weights,
                                                  standardize=standardize)
