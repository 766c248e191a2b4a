"""The passes over a Dask data frame's partitions.

Each pass maps a function over the partitions (``DataFrame.to_delayed()``, one
task per partition, run where the scheduler puts it: the calling thread with the
synchronous scheduler, a thread pool, or the workers of a ``dask.distributed``
cluster) and sums the per-partition results in a tree (``split_every`` at a
time), so that only level-sized objects travel and the client receives one:

1. :func:`summary_pass`: the codebook's summary
   (:class:`~mixedanova.design.chunked.ChunkSummary`);
2. :func:`cross_product_pass`: :class:`ChunkSums`, the chunk-additive
   cross-products of ``[Z X y]``
   (:class:`~mixedanova.likelihood.crossprod.CrossProducts`), the unweighted
   ``X'X`` for the rank rule and ``sum(log w)``;
3. :func:`pwrss_pass`: the explicit penalized residual sum of squares at a
   solution, when the engine asks for it.

Dask is imported here only, and only when a pass runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..design.chunked import ChunkEncoder, ChunkPlan, ChunkSummary, EncodedChunk
from ..likelihood.blocked import TermData
from ..likelihood.chunk_products import (chunk_sums, column_gram, finished,
                                         sum_cross_products)
from ..likelihood.crossprod import CrossProducts

__all__ = ["ChunkSums", "summary_pass", "cross_product_pass", "pwrss_pass", "tree_sum",
           "keep_fixed_columns", "chunk_rows", "partition_sums", "is_dask_frame",
           "exact_quantiles", "run_pass", "chunk_pwrss"]

SPLIT_EVERY = 8
SLICE_ROWS = 1 << 19  # a partition's rows summed this many at a time: the work of one
                      # slice stays in cache (1M-row partitions: ~30% less CPU a row)


def is_dask_frame(data) -> bool:
    """True for a ``dask.dataframe.DataFrame`` (checked without importing dask)."""
    mod = type(data).__module__ or ""
    return (mod == "dask" or mod.startswith("dask.") or mod.startswith("dask_expr")) and \
        hasattr(data, "to_delayed") and hasattr(data, "_meta")


@dataclass(frozen=True)
class ChunkSums:
    """What the cross-product pass sums: ``[Z X y]``'s cross-products (weights
    applied, offset subtracted, all of formulaic's fixed columns), the
    unweighted ``X'X`` (the rank rule of the in-memory design) and ``sum(log w)``."""

    cp: CrossProducts
    xx: np.ndarray
    log_w: float

    def __add__(self, other: "ChunkSums") -> "ChunkSums":
        return ChunkSums(self.cp + other.cp, self.xx + other.xx, self.log_w + other.log_w)

    def finished(self) -> "ChunkSums":
        """With the pairs of terms merged into the engine's blocks
        (:func:`~mixedanova.likelihood.chunk_products.finished`)."""
        return ChunkSums(finished(self.cp), self.xx, self.log_w)

    @staticmethod
    def total(items: list["ChunkSums"]) -> "ChunkSums":
        """The sum of many (one merge of the pair keys, see
        :func:`~mixedanova.likelihood.chunk_products.sum_cross_products`)."""
        xx = items[0].xx.copy()
        log_w = items[0].log_w
        for c in items[1:]:
            xx += c.xx
            log_w += c.log_w
        return ChunkSums(sum_cross_products([c.cp for c in items]), xx, log_w)


def _sum_list(items):
    items = [x for x in items if x is not None]
    if len(items) > 2 and all(isinstance(x, ChunkSums) for x in items):
        return ChunkSums.total(items)
    total = None
    for x in items:
        total = x if total is None else total + x
    return total


def tree_sum(items: list, split_every: int = SPLIT_EVERY):
    """A delayed sum of delayed ``items`` (``None`` entries skipped), reduced in a
    tree ``split_every`` at a time."""
    from dask import delayed

    items = list(items)
    if not items:
        return delayed(lambda: None)()
    while len(items) > 1:
        items = [delayed(_sum_list, pure=True)(items[i:i + split_every])
                 for i in range(0, len(items), split_every)]
    if len(items) == 1:
        return delayed(_sum_list, pure=True)(items)
    return items[0]


def _compute(obj, progress: bool):
    if progress:
        try:
            from distributed import get_client
            get_client()
        except (ImportError, ValueError):
            from dask.diagnostics import ProgressBar
            with ProgressBar():
                return obj.compute()
        else:
            from distributed import progress as show
            fut = get_client().compute(obj)
            show(fut)
            return fut.result()
    return obj.compute()


def run_pass(parts: list, progress: bool = False):
    """Compute the tree sum of the delayed per-partition ``parts`` (a progress bar
    when asked for)."""
    return _compute(tree_sum(parts), progress)


def summary_pass(plan: ChunkPlan, ddf, progress: bool = False) -> ChunkSummary:
    """Pass 1: the summed :class:`~mixedanova.design.chunked.ChunkSummary` of all
    partitions."""
    from dask import delayed

    p = delayed(plan, pure=True, traverse=False)
    parts = [delayed(_summarize, pure=True)(p, part) for part in ddf.to_delayed()]
    return _compute(tree_sum(parts), progress)


def _summarize(plan: ChunkPlan, chunk: pd.DataFrame) -> ChunkSummary:
    return plan.summarize(chunk)


def chunk_rows(encoder: ChunkEncoder, e: EncodedChunk) -> tuple[list[TermData], np.ndarray]:
    """The engine's terms of an encoded chunk and its response less the offset."""
    terms = [TermData(c, z, b.nlev) for c, z, b in zip(e.codes, e.zraws, encoder.blocks)]
    y = e.y if e.offset is None else e.y - e.offset
    return terms, y


def partition_sums(encoder: ChunkEncoder, chunk: pd.DataFrame) -> ChunkSums | None:
    """One partition's :class:`ChunkSums` (None when it has no complete rows), its
    pairs of terms as :class:`~mixedanova.likelihood.pair_sums.PairSum`."""
    from ..likelihood.threads import one_blas_thread

    e = encoder.encode(chunk)
    if e is None:
        return None
    terms, y = chunk_rows(encoder, e)
    w = e.weights
    with one_blas_thread():  # in slices of at most SLICE_ROWS rows, added
        cuts = np.linspace(0, e.n, -(-e.n // SLICE_ROWS) + 1).astype(np.int64)
        parts = [chunk_sums([TermData(t.codes[a:b], t.zraw[a:b], t.nlev) for t in terms],
                            e.X[a:b], y[a:b], None if w is None else w[a:b])
                 for a, b in zip(cuts[:-1], cuts[1:])]
        cp = parts[0] if len(parts) == 1 else sum_cross_products(parts)
        # without weights the cross-products' X'X is the unweighted one
        xx = cp.xy[:cp.p, :cp.p].copy() if e.weights is None else column_gram(e.X)
    log_w = float(np.sum(np.log(e.weights))) if e.weights is not None else 0.0
    return ChunkSums(cp, xx, log_w)


def cross_product_pass(encoder: ChunkEncoder, ddf, progress: bool = False) -> ChunkSums:
    """Pass 2: the summed :class:`ChunkSums` of all partitions.

    The tree sum lists the partitions' pair keys; the client merges them once at
    the end (:meth:`ChunkSums.finished`)."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    parts = [delayed(partition_sums, pure=True)(enc, part) for part in ddf.to_delayed()]
    total = _compute(tree_sum(parts), progress)
    return None if total is None else total.finished()


def keep_fixed_columns(cp: CrossProducts, keep: np.ndarray) -> CrossProducts:
    """The cross-products without the fixed-effect columns ``~keep`` (aliased ones).

    The response is first re-centered with a zero shift on the dropped columns
    (exact, :meth:`~mixedanova.likelihood.crossprod.CrossProducts.reshift`), so
    that dropping their rows and columns leaves the cross-products of the kept ones.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return cp
    shift = np.array(cp.shift, dtype=float)  # in the response's units, whatever the scale
    shift[~keep] = 0.0
    raw = cp.reshift(shift)
    idx_x = np.flatnonzero(keep)
    idx = np.concatenate([idx_x, raw.p + np.arange(raw.k)])
    return replace(raw, p=len(idx_x), xy=raw.xy[np.ix_(idx, idx)],
                   zxy=tuple(a[:, idx, :] for a in raw.zxy), shift=raw.shift[idx_x],
                   ls_shift=False)


def chunk_pwrss(encoder: ChunkEncoder, keep: np.ndarray, maps, shift: np.ndarray,
                scale: float, beta: np.ndarray, bs: list, chunk: pd.DataFrame) -> float:
    """One chunk's ``|y~ - X beta - Z b|^2`` on the engine's standardized response
    (the per-chunk part of :func:`pwrss_pass`)."""
    e = encoder.encode(chunk)
    if e is None:
        return 0.0
    terms, y = chunk_rows(encoder, e)
    X = e.X[:, keep]
    if e.weights is not None:
        sw = np.sqrt(e.weights)
        X, y = sw[:, None] * X, sw * y
    r = ((y - X @ shift) if X.shape[1] else y) / scale - X @ beta
    for k, (t, b) in enumerate(zip(terms, bs)):
        z = t.zraw if e.weights is None else np.sqrt(e.weights)[:, None] * t.zraw
        if maps is not None:
            z = z @ maps[k]
        r = r - np.einsum("ij,ij->i", z, b[t.codes])
    return float(r @ r)


def pwrss_pass(encoder: ChunkEncoder, ddf, keep: np.ndarray, maps, shift: np.ndarray,
               scale: float, beta: np.ndarray, bs: list) -> float:
    """Pass 3: ``sum |y~ - X beta - Z b|^2`` over the partitions, on the engine's
    standardized response (see
    :meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.explicit_pwrss`)."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    args = delayed((keep, maps, shift, scale, beta, bs), pure=True, traverse=False)
    parts = [delayed(_pwrss_part, pure=True)(enc, args, part) for part in ddf.to_delayed()]
    total = tree_sum(parts).compute()
    return 0.0 if total is None or (isinstance(total, float) and math.isnan(total)) \
        else float(total)


def _pwrss_part(encoder, args, chunk) -> float:
    return chunk_pwrss(encoder, *args, chunk)


def _hist_part(x: pd.Series, edges: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=float)
    return np.histogram(v[np.isfinite(v)], bins=edges)[0]


def _in_ranges(x: pd.Series, ranges: tuple) -> np.ndarray:
    v = np.asarray(x, dtype=float)
    keep = np.zeros(len(v), dtype=bool)
    for a, b, last in ranges:
        keep |= (v >= a) & ((v <= b) if last else (v < b))
    return v[keep]


def exact_quantiles(series, qs, bins: int = 4096, gather: int = 200_000) -> np.ndarray:
    """Quantiles of a Dask series exactly as :func:`numpy.quantile` (linear
    interpolation between order statistics) of its values, without gathering
    them: a histogram pass finds the bin of each order statistic needed, a second
    pass gathers the values of those bins only (a bin holding more than
    ``gather`` values is narrowed by another histogram pass)."""
    import dask
    from dask import delayed

    n, lo, hi = dask.compute(series.count(), series.min(), series.max())
    n = int(n)
    pos = (n - 1) * np.asarray(qs, dtype=float)
    ranks = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, n - 1)
                                                       for p in pos})
    parts = series.to_delayed()
    # (lo, hi, count below lo, is the last bin closed) per unresolved rank
    todo = {r: (float(lo), float(hi), 0) for r in ranks}
    values: dict[int, float] = {}
    while todo:
        brackets = sorted(set(todo.values()))
        ranges = []
        for a, b, below in brackets:
            if a == b:
                for r, br in list(todo.items()):
                    if br == (a, b, below):
                        values[r] = a
                        del todo[r]
                continue
            edges = np.linspace(a, b, bins + 1)
            counts = tree_sum([delayed(_hist_part)(p, edges) for p in parts]).compute()
            cum = below + np.concatenate([[0], np.cumsum(counts)])
            for r, br in list(todo.items()):
                if br != (a, b, below):
                    continue
                j = int(np.searchsorted(cum, r, side="right") - 1)
                j = min(j, bins - 1)
                lo_j, hi_j = float(edges[j]), float(edges[j + 1])
                if counts[j] > gather and hi_j > lo_j:
                    todo[r] = (lo_j, hi_j, int(cum[j]))
                else:
                    ranges.append((lo_j, hi_j, j == bins - 1, int(cum[j]), r))
        if not ranges:
            continue
        spec = tuple((a, b, last) for a, b, last, _, _ in ranges)
        got = dask.compute(*[delayed(_in_ranges)(p, spec) for p in parts])
        allv = np.sort(np.concatenate(got)) if got else np.zeros(0)
        for a, b, last, below, r in ranges:
            sel = allv[(allv >= a) & ((allv <= b) if last else (allv < b))]
            values[r] = float(sel[r - below])
            todo.pop(r, None)
    out = []
    for p in pos:
        k = int(np.floor(p))
        k1 = min(k + 1, n - 1)
        out.append(values[k] + (p - k) * (values[k1] - values[k]))
    return np.array(out)
