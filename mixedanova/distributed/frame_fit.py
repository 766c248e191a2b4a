"""A large pandas DataFrame fitted chunk by chunk (issue 19).

``ma.lmm(formula, df)`` on a pandas frame of at least :data:`CHUNKED_ROWS` rows
does the set-up as a fit on a Dask frame does, on slices of
:data:`SLICE_ROWS` rows of the frame instead of partitions (no Dask involved):

1. the codebook from the summed summaries of the slices
   (:meth:`~mixedanova.design.chunked.ChunkPlan.summarize`);
2. the cross-products of ``[Z X y]`` of each slice
   (:func:`~mixedanova.distributed.passes.partition_sums`, the per-partition code
   of the Dask pass), summed eight at a time as the Dask pass's tree;
3. the same engine on the summed, level-sized system.

Set-up memory is therefore the frame, level-sized sums and one slice's
temporaries, instead of a row-sized design (``X``, ``Z``, ``y`` and the level
codes of every row) next to the frame.  The numbers are those of the in-memory
route up to rounding (the sums are added in another order).

The results (:class:`FrameLmmResults`) behave as an in-memory fit's: fitted
values, residuals and ``predict()`` are pandas Series computed slice by slice,
and everything that reads the rows (Kenward-Roger, ``hatvalues``, ``R()``,
``V()``, influence, ``anova``, ``emmeans``, bootstrap, ``update``, ``refit``)
gets the row-sized design, built from the frame the first time it is needed
(:class:`~mixedanova.design.lazy.LazyDesign`).  The results keep a reference to
the frame: change its used columns after the fit and those features refuse
(the rebuilt design no longer matches) or read the new values.

What the chunked set-up does not support (``residual=``, ``fixed=``, weights or
offset given as arrays, structured covariances, transforms with a whole-column
state such as ``center()``, ``method="ANOVA"``), or anything it refuses, goes
through the in-memory design exactly as below the threshold.
"""
from __future__ import annotations

import dataclasses
import warnings
from functools import cached_property, partial

import numpy as np
import pandas as pd

from ..design.build import build_design
from ..design.chunked import ChunkEncoder, ChunkPlan, ChunkSummary, aliased_columns
from ..design.formula import parse_formula
from ..design.lazy import LazyDesign
from ..errors import MixedAnovaWarning, user_stacklevel
from ..results.lmm import LinearMixedResults
from .dask_fit import DistributedDeviance, RemoteRows, fitted_part
from .passes import (SPLIT_EVERY, ChunkSums, chunk_pwrss, keep_fixed_columns,
                     partition_sums)

__all__ = ["CHUNKED_ROWS", "SLICE_ROWS", "use_chunks", "chunked_set_up", "ChunkedSetUp",
           "frame_slices", "summarize_frame", "frame_cross_products", "FrameRows",
           "FrameLmmResults"]

CHUNKED_ROWS = 1 << 21  # 2,097,152 rows: at and above, a pandas frame's set-up is chunked
SLICE_ROWS = 1 << 20    # rows of one slice (the in-memory cross-products' chunk size)


def use_chunks(data, *, residual=None, fixed=None, weights=None, offset=None) -> bool:
    """True when the chunked set-up is tried: a pandas frame of at least
    :data:`CHUNKED_ROWS` rows, no ``residual=`` or ``fixed=``, weights and offset
    absent or column names."""
    return (isinstance(data, pd.DataFrame) and len(data) >= CHUNKED_ROWS
            and residual is None and not fixed
            and all(v is None or isinstance(v, str) for v in (weights, offset)))


def frame_slices(data: pd.DataFrame, rows: int | None = None):
    """The frame in consecutive slices of ``rows`` rows (default :data:`SLICE_ROWS`)."""
    rows = SLICE_ROWS if rows is None else int(rows)
    for a in range(0, len(data), rows):
        yield data.iloc[a:a + rows]


class _Tree:
    """Adds level-sized sums as the Dask pass's tree does: eight at a time, so that
    at most eight per level of the tree are held."""

    def __init__(self, total) -> None:
        self.levels: list[list] = [[]]
        self.total = total

    def add(self, item) -> None:
        if item is None:
            return
        self.levels[0].append(item)
        k = 0
        while len(self.levels[k]) >= SPLIT_EVERY:
            s = self.total(self.levels[k])
            self.levels[k] = []
            if k + 1 == len(self.levels):
                self.levels.append([])
            self.levels[k + 1].append(s)
            k += 1

    def result(self):
        items = [x for level in self.levels for x in level]
        if not items:
            return None
        return items[0] if len(items) == 1 else self.total(items)


def _sum_summaries(items: list[ChunkSummary]) -> ChunkSummary:
    total = items[0]
    for s in items[1:]:
        total = total + s
    return total


def summarize_frame(plan: ChunkPlan, data: pd.DataFrame) -> ChunkSummary | None:
    """Pass 1 on a pandas frame: the summed summaries of its slices."""
    tree = _Tree(_sum_summaries)
    for part in frame_slices(data):
        tree.add(plan.summarize(part))
    return tree.result()


def frame_cross_products(encoder: ChunkEncoder, data: pd.DataFrame) -> ChunkSums | None:
    """Pass 2 on a pandas frame: the slices' :class:`~mixedanova.distributed.passes.ChunkSums`
    (:func:`~mixedanova.distributed.passes.partition_sums`, as each partition of a
    Dask frame) summed, pairs merged into the engine's blocks."""
    tree = _Tree(ChunkSums.total)
    for part in frame_slices(data):
        tree.add(partition_sums(encoder, part))
    total = tree.result()
    return None if total is None else total.finished()


@dataclasses.dataclass(frozen=True)
class FrameRows(RemoteRows):
    """The rows behind the summed cross-products: a pandas frame (``ddf``) read
    slice by slice."""

    def pwrss(self, shift: np.ndarray, scale: float, beta: np.ndarray, bs: list) -> float:
        """``sum |y~ - X beta - Z b|^2`` over the frame's slices."""
        return float(sum(chunk_pwrss(self.encoder, self.keep, self.maps, shift, scale, beta,
                                     bs, part) for part in frame_slices(self.ddf)))


@dataclasses.dataclass(frozen=True)
class ChunkedSetUp:
    """What the chunked set-up of a pandas frame leaves a
    :class:`~mixedanova.model.LinearMixedModel` (its ``chunked``): the lazy design,
    the codebook, the summed cross-products and the frame they came from.

    Attributes
    ----------
    design : LazyDesign
        The row-less design; the row-sized one is built on first use.
    encoder : ChunkEncoder
        Encodes any slice of the frame into the design's columns.
    cp : CrossProducts
        The summed cross-products of ``[Z X y]`` (aliased fixed columns removed).
    log_w : float
        ``sum(log w)`` of the prior weights (0 without).
    keep : numpy.ndarray
        The kept fixed-effect columns among formulaic's.
    frame : pandas.DataFrame
        The data (read again slice by slice for fitted values and residuals).
    """

    design: LazyDesign
    encoder: ChunkEncoder
    cp: object = dataclasses.field(repr=False)
    log_w: float = 0.0
    keep: np.ndarray = dataclasses.field(repr=False, default=None)
    frame: pd.DataFrame = dataclasses.field(repr=False, default=None)

    def deviance_function(self, reml: bool = True) -> DistributedDeviance:
        """The profiled objective on the summed cross-products; its explicit
        penalized residual sum of squares is one pass over the frame's slices."""
        rows = (FrameRows(self.encoder, self.frame, np.flatnonzero(self.keep)),)
        return DistributedDeviance(self.cp, self.design.theta_layout(), reml, rows=rows)

    def weights_constant(self) -> float:
        """``-sum(log w_i)`` (0 without weights), summed with the cross-products."""
        return -self.log_w if self.design.has_weights else 0.0

    def results(self, design, state, model) -> "FrameLmmResults":
        """The results of a likelihood fit (:class:`FrameLmmResults`)."""
        return FrameLmmResults(design, state, model=model)


class FrameLmmResults(LinearMixedResults):
    """A fit whose set-up was chunked (its model's ``chunked`` is a
    :class:`ChunkedSetUp`): as
    :class:`~mixedanova.results.lmm.LinearMixedResults`, with fitted values,
    residuals and predictions on the fit's rows computed slice by slice."""

    def _slices(self, what: str) -> pd.Series:
        m = self.model.chunked
        keep = np.flatnonzero(m.keep)
        parts = [fitted_part(part, m.encoder, keep, self.state.beta, self._blups, what,
                             self.sigma) for part in frame_slices(m.frame)]
        return pd.concat(parts) if len(parts) > 1 else parts[0]

    @cached_property
    def fittedvalues(self) -> pd.Series:
        """Conditional fitted values ``X b + Z b + offset`` for the rows used."""
        return self._slices("fitted")

    @cached_property
    def resid(self) -> pd.Series:
        """Conditional residuals ``y - fitted``."""
        return self._slices("resid")

    def residuals(self, type: str = "response") -> pd.Series:
        """As :meth:`~mixedanova.results.workflow.WorkflowMixin.residuals`."""
        if type == "response":
            return self.resid.rename("resid_response")
        if type in ("pearson", "scaled"):
            return self._slices(f"resid_{type}")
        return super().residuals(type)

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None,
                allow_new_levels: bool = False, include_random: bool | None = None,
                se_fit: bool = False):
        """As :meth:`~mixedanova.results.workflow.WorkflowMixin.predict`; on the fit's
        rows (``newdata=None``) slice by slice."""
        from ..inference.prediction import predict

        if newdata is not None or se_fit or include_random not in (None, True, False):
            return super().predict(newdata, re_form, allow_new_levels, include_random, se_fit)
        if include_random is not None and re_form is None:
            re_form = None if include_random else "~0"
        plan = self.model.chunked.encoder.plan
        parts = [predict(self, plan.complete(part)[0], re_form, allow_new_levels)
                 for part in frame_slices(self.model.chunked.frame)]
        return pd.concat(parts) if len(parts) > 1 else parts[0]


def chunked_set_up(formula: str, data: pd.DataFrame, *, missing: str = "drop",
                   weights=None, offset=None, restricted: bool = False) -> ChunkedSetUp | None:
    """The chunked set-up of ``formula`` on ``data``, or None when the chunked route
    refuses the formula or the data (then the in-memory route decides: it fits, or
    raises its own error).  The set-up's own warnings (a rank-deficient ``X``) are
    given only when it succeeds; other libraries' warnings from inside the chunk
    code are not passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            setup = _set_up(formula, data, missing=missing, weights=weights, offset=offset,
                            restricted=restricted)
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - any refusal: the in-memory route decides
            setup = None
    if setup is not None:  # the package's own (rank deficiency), as build_design gives them
        for w in caught:
            if issubclass(w.category, MixedAnovaWarning):
                warnings.warn(str(w.message), w.category, stacklevel=user_stacklevel())
    return setup


def _set_up(formula: str, data: pd.DataFrame, *, missing: str, weights, offset,
            restricted: bool) -> ChunkedSetUp | None:
    from ..structured import rewrite_structured

    formula, structured = rewrite_structured(formula, data, marginal=True)
    if structured is not None:
        return None
    parsed = parse_formula(formula, restricted=restricted)
    if parsed.restricted:
        from ..design.restricted import check_restricted
        check_restricted(parsed.formula, columns=data.columns)
    plan = ChunkPlan.from_formula(parsed, data.iloc[:0], weights=weights, offset=offset,
                                  missing=missing)
    summary = summarize_frame(plan, data)
    if summary is None:
        return None
    encoder = plan.encoder(summary)
    sums = frame_cross_products(encoder, data)
    if sums is None:
        return None
    keep = aliased_columns(sums.xx, encoder.x_names_all)
    design = LazyDesign(encoder.design_summary(keep),
                        partial(build_design, parsed, data, missing=missing, weights=weights,
                                offset=offset, extra_columns=(), marginal=False,
                                fixed_sigma=False))
    return ChunkedSetUp(design, encoder, keep_fixed_columns(sums.cp, keep), sums.log_w, keep,
                        data)
