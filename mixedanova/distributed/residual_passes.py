"""The passes of a fit with a residual structure on a Dask data frame.

A residual structure ``R = sigma^2 Rrel(u)`` is whitened group by group
(:mod:`mixedanova.likelihood.residual`), so a partition can whiten its own rows
only when it holds whole correlation groups.  Two kinds of pass:

1. :func:`residual_summary_pass` (once, after the codebook): per partition the
   correlation groups it holds (a group met in two partitions makes the frame
   *misaligned*), the largest group, VarIdent's levels and reference candidate,
   whether each random term's level is constant inside every group, and the
   unweighted ``X'X`` and ``sum(log w)`` of the ordinary cross-product pass (the
   rank rule and the weights' constant);
2. :func:`whitened_pass` (once per residual parameter vector ``u`` the optimizer
   asks for): each partition binds the structure to its rows
   (:func:`~mixedanova.residual.bind_residual` with the whole data's
   :class:`~mixedanova.residual.ResidualLevels`), whitens ``[Z X y]`` at ``u`` and
   returns its cross-products and ``log|Rrel|``; the sums arrive in the client.
   :func:`whitened_pwrss_pass` is the explicit penalized residual sum of squares
   of the whitened rows at a solution.

Dask is imported only when a pass runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design.chunked import ChunkEncoder
from ..likelihood.blocked import TermData
from ..likelihood.criterion import row_block_rss
from ..likelihood.crossprod import CrossProducts, RowBlock, cross_products
from ..likelihood.residual import ResidualStructure, whiten_terms
from ..residual import (ResidualLevels, VarIdent, VarPower, bind_residual, group_columns,
                        group_labels, reference_candidate, residual_parts)
from .passes import chunk_rows, run_pass

__all__ = ["ResidualBook", "ResidualSummary", "WhitenedSums", "residual_summary_pass",
           "whitened_pass", "whitened_pwrss_pass", "structure_of"]

_SPLIT_SHOWN = 5  # groups found in two partitions named in the message


@dataclass(frozen=True)
class ResidualBook:
    """What every partition needs to bind and whiten its rows: the user's
    ``residual=``, the outermost grouping factor's columns (VarIdent's reference),
    the whole data's :class:`~mixedanova.residual.ResidualLevels` (None in the
    summary pass), the kept fixed-effect columns and, per random term, whether its
    level is constant inside every correlation group."""

    residual: object
    outer: tuple[str, ...] | None
    levels: ResidualLevels | None = None
    keep: np.ndarray | None = None
    constant: tuple[bool, ...] = ()


@dataclass(frozen=True)
class ResidualSummary:
    """The summary pass's result (level-sized; ``a + b`` with ``a`` the earlier
    partitions).

    Attributes
    ----------
    groups : pandas.Index
        Correlation groups seen (labels; empty without a correlation structure).
    split : tuple of str
        Groups found in more than one partition (the first few).
    largest : int
        Rows of the largest correlation group.
    constant : numpy.ndarray
        Per random term (the encoder's order): its level is constant inside
        every correlation group of the rows seen.
    var_levels : frozenset
        VarIdent's levels seen (as strings).
    reference : tuple or None
        ``(key, level)``: VarIdent's reference candidate (nlme's rule, see
        :func:`~mixedanova.residual.reference_candidate`).
    negative : bool
        A VarPower covariate value below 0 was seen.
    xx : numpy.ndarray
        Unweighted ``X'X`` (all of formulaic's columns).
    log_w : float
        ``sum(log w)`` of the prior weights (0 without).
    """

    groups: pd.Index
    split: tuple[str, ...]
    largest: int
    constant: np.ndarray
    var_levels: frozenset
    reference: tuple | None
    negative: bool
    xx: np.ndarray
    log_w: float

    def __add__(self, other: "ResidualSummary") -> "ResidualSummary":
        both = self.groups.intersection(other.groups)
        split = (self.split + other.split + tuple(map(str, both[:_SPLIT_SHOWN])))
        ref = self.reference
        if ref is None or (other.reference is not None and other.reference[0] < ref[0]):
            ref = other.reference  # ties keep the earlier partition's (row order)
        return ResidualSummary(self.groups.union(other.groups), split[:_SPLIT_SHOWN],
                               max(self.largest, other.largest),
                               self.constant & other.constant,
                               self.var_levels | other.var_levels, ref,
                               self.negative or other.negative, self.xx + other.xx,
                               self.log_w + other.log_w)


def _summarize(encoder: ChunkEncoder, book: ResidualBook,
               chunk: pd.DataFrame) -> ResidualSummary | None:
    e = encoder.encode(chunk)
    if e is None:
        return None
    data = encoder.plan.complete(chunk)[0]
    cor, var = residual_parts(book.residual)
    groups, largest = pd.Index([], dtype=object), 0
    constant = np.ones(len(e.codes), dtype=bool)
    if cor is not None:
        labels = group_labels(data, group_columns(cor.group))
        codes, uniq = pd.factorize(pd.Index(labels, dtype=object), sort=False)
        groups = pd.Index(uniq, dtype=object)
        largest = int(np.bincount(codes).max())
        for k, c in enumerate(e.codes):
            first = np.full(len(uniq), -1, dtype=np.int64)
            first[codes] = c
            constant[k] = bool(np.all(first[codes] == c))
    var_levels, reference, negative = frozenset(), None, False
    if isinstance(var, VarIdent):
        by = data[var.by].astype(str).to_numpy(dtype=object)
        var_levels = frozenset(by)
        outer = [book.outer or (), group_columns(cor.group) if cor is not None else ()]
        reference = reference_candidate(data, by, outer)
    elif isinstance(var, VarPower) and pd.api.types.is_numeric_dtype(data[var.covariate]):
        negative = bool((data[var.covariate].to_numpy(dtype=float) < 0).any())
    xx = e.X.T @ e.X
    log_w = float(np.sum(np.log(e.weights))) if e.weights is not None else 0.0
    return ResidualSummary(groups, (), largest, constant, var_levels, reference, negative,
                           xx, log_w)


def residual_summary_pass(encoder: ChunkEncoder, book: ResidualBook, ddf,
                          progress: bool = False) -> ResidualSummary:
    """The summed :class:`ResidualSummary` of all partitions."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    bk = delayed(book, pure=True, traverse=False)
    return run_pass([delayed(_summarize, pure=True)(enc, bk, part)
                     for part in ddf.to_delayed()], progress)


@dataclass(frozen=True)
class WhitenedSums:
    """The whitened cross-products of some partitions and their ``log|Rrel|``;
    ``cp`` None: ``u`` is outside the parameter space."""

    cp: CrossProducts | None
    logdet: float

    def __add__(self, other: "WhitenedSums") -> "WhitenedSums":
        if self.cp is None or other.cp is None:
            return WhitenedSums(None, math.inf)
        return WhitenedSums(self.cp + other.cp, self.logdet + other.logdet)


def _whitened_rows(encoder: ChunkEncoder, book: ResidualBook, u: np.ndarray,
                   chunk: pd.DataFrame):
    """``(structure, whitened terms, X, y, log|Rrel|)`` of one partition, ``None``
    without rows, ``False`` outside the parameter space."""
    e = encoder.encode(chunk)
    if e is None:
        return None
    data = encoder.plan.complete(chunk)[0]
    structure = bind_residual(book.residual, data, book.outer, whole=book.levels)
    terms, y = chunk_rows(encoder, e)
    X = e.X[:, book.keep]
    if e.weights is not None:  # as design_rows: sqrt(w) on every row, then whitened
        sw = np.sqrt(e.weights)
        X, y = sw[:, None] * X, sw * y
        terms = [TermData(t.codes, sw[:, None] * t.zraw, t.nlev) for t in terms]
    w = whiten_terms(structure, u, terms, X, y, list(book.constant))
    if w is None:
        return False
    return structure, w[0], w[1], w[2], w[3]


def _whitened_part(encoder: ChunkEncoder, book: ResidualBook, u: np.ndarray,
                   chunk: pd.DataFrame) -> WhitenedSums | None:
    from ..likelihood.threads import one_blas_thread

    with one_blas_thread():
        rows = _whitened_rows(encoder, book, u, chunk)
        if rows is None:
            return None
        if rows is False:
            return WhitenedSums(None, math.inf)
        _, terms, X, y, logdet = rows
        return WhitenedSums(cross_products(terms, X, y, standardize=False), logdet)


def whitened_pass(encoder: ChunkEncoder, book: ResidualBook, ddf, u: np.ndarray,
                  progress: bool = False) -> WhitenedSums:
    """The summed :class:`WhitenedSums` of all partitions at ``u``."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    bk = delayed(book, pure=True, traverse=False)
    uu = delayed(np.asarray(u, dtype=float), pure=True, traverse=False)
    return run_pass([delayed(_whitened_part, pure=True)(enc, bk, uu, part)
                     for part in ddf.to_delayed()], progress)


def _pwrss_part(encoder: ChunkEncoder, book: ResidualBook, u: np.ndarray, maps,
                args: tuple, chunk: pd.DataFrame) -> float:
    rows = _whitened_rows(encoder, book, u, chunk)
    if not rows:
        return 0.0
    _, terms, X, y, _ = rows
    block = RowBlock(tuple(terms), X, y)
    if maps is not None:
        block = block.transformed(list(maps))
    return row_block_rss(block, *args)


def whitened_pwrss_pass(encoder: ChunkEncoder, book: ResidualBook, ddf, u: np.ndarray,
                        maps, shift: np.ndarray, scale: float, beta: np.ndarray,
                        bs: list) -> float:
    """``sum |W (y - X beta - Z b)|^2`` over the partitions on the engine's
    standardized response (see
    :meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.explicit_pwrss`)."""
    from dask import delayed

    enc = delayed(encoder, pure=True, traverse=False)
    bk = delayed(book, pure=True, traverse=False)
    args = delayed((np.asarray(u, dtype=float), maps, (shift, scale, beta, bs)), pure=True,
                   traverse=False)
    parts = [delayed(_pwrss_apply, pure=True)(enc, bk, args, part)
             for part in ddf.to_delayed()]
    total = run_pass(parts)
    return 0.0 if total is None else float(total)


def _pwrss_apply(encoder, book, args, chunk) -> float:
    u, maps, rest = args
    return _pwrss_part(encoder, book, u, maps, rest, chunk)


def structure_of(book: ResidualBook) -> ResidualStructure:
    """The structure without rows (names, scales, start, labels): what the results
    read of it."""
    cor, var = residual_parts(book.residual)
    cols = [c for p in (cor, var) if p is not None for c in p.columns()]
    empty = pd.DataFrame({c: pd.Series([], dtype=object if isinstance(var, VarIdent)
                                       and c == var.by else float) for c in cols})
    return bind_residual(book.residual, empty, book.outer, whole=book.levels)
