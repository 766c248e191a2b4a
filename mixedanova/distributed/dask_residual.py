"""Residual structures on a Dask data frame (issue 19).

``ma.lmm(formula, ddf, residual=ma.AR1(group="Subject", order="Days"))`` runs

1. the codebook pass (as every Dask fit, :mod:`mixedanova.distributed.dask_fit`);
2. the residual summary pass
   (:func:`~mixedanova.distributed.residual_passes.residual_summary_pass`): the
   frame must be *aligned* -- every correlation group in one partition, since a
   partition whitens its own rows.  A misaligned frame is refused with a
   :class:`~mixedanova.errors.DesignError` that names the group column and the
   call that aligns it (``ddf.shuffle(on=[...])``, a full shuffle the user
   decides on and persists or writes once, rather than one the fit would
   repeat on every pass);
3. the optimizer of the in-memory fit
   (:func:`~mixedanova.likelihood.residual_state.fit_residual_state`) on
   :class:`DistributedResidualDeviance`, whose ``at(u)`` is one distributed pass:
   each partition whitens its rows at ``u`` and returns its cross-products and
   ``log|Rrel(u)|``; the client sums them and builds the same
   :class:`~mixedanova.likelihood.residual_fit.WhitenedDeviance`.  The optimizer
   asks for many values of ``u`` (about 50 to 150 passes), so the frame should be
   persisted (``ddf.persist()``) when it fits in the workers' memory.

A variance function alone (VarIdent, VarPower, VarExp) is row by row and needs
no alignment.  Visit covariances (``ma.Unstructured``, ``ma.Toeplitz``, ...) of a
marginal model (no random-effects term) are fitted by
:mod:`mixedanova.distributed.dask_marginal`; next to random-effects terms, and
held parameters (``fixed=``), in memory only.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from ..design.chunked import ChunkPlan, aliased_columns
from ..design.formula import parse_formula
from ..errors import ConvergenceWarning, DesignError, FitError, user_stacklevel
from ..likelihood.control import LmmControl, check_control
from ..likelihood.residual_fit import ResidualDeviance, WhitenedDeviance
from ..residual import (CAR1, AR1, CompSymm, ResidualLevels, VarIdent, group_columns,
                        residual_columns, residual_parts)
from .dask_fit import DistributedLmmResults, DistributedModel, check_keywords, warn_fit
from .passes import summary_pass
from .residual_passes import (ResidualBook, residual_summary_pass, structure_of,
                              whitened_pass, whitened_pwrss_pass)

__all__ = ["check_residual_method", "DistributedResidualModel",
           "DistributedResidualDeviance", "DistributedResidualResults", "alignment_error",
           "lmm_dask_residual"]

_CACHE = 16  # whitened systems kept (level-sized each)


@dataclasses.dataclass(frozen=True)
class RemoteWhitened:
    """Where the whitened rows at ``u`` come from (the frame, the encoder and the
    residual book), and the working-coordinate maps applied to ``Z`` so far."""

    model: "DistributedResidualModel"
    u: np.ndarray
    maps: tuple | None = None

    def transformed(self, maps: list[np.ndarray]) -> "RemoteWhitened":
        new = tuple(maps) if self.maps is None else tuple(a @ b for a, b in
                                                          zip(self.maps, maps))
        return dataclasses.replace(self, maps=new)


class DistributedWhitenedDeviance(WhitenedDeviance):
    """:class:`~mixedanova.likelihood.residual_fit.WhitenedDeviance` of summed
    partitions; its explicit penalized residual sum of squares is one more
    distributed pass (``rows`` is one :class:`RemoteWhitened`)."""

    def explicit_pwrss(self, f, templates) -> float:
        remote = self.rows[0]
        m = remote.model
        beta, u = f._solution_std()
        offs = np.cumsum([0] + [t.nlev * t.q for t in self.cp.terms])
        bs = [u[offs[k]:offs[k + 1]].reshape(t.nlev, t.q) @ T.T
              for k, (t, T) in enumerate(zip(self.cp.terms, templates))]
        rows = whitened_pwrss_pass(m.encoder, m.book, m.ddf, remote.u, remote.maps,
                                   self.cp.shift[:, 0], float(self.cp.scale[0]), beta, bs)
        return float(u @ u) + rows


class DistributedResidualDeviance(ResidualDeviance):
    """:class:`~mixedanova.likelihood.residual_fit.ResidualDeviance` whose
    :meth:`at` is one distributed pass over the partitions (the rows stay there).

    Parameters
    ----------
    model : DistributedResidualModel
        The frame, encoder and residual book.
    reml : bool
    """

    def __init__(self, model: "DistributedResidualModel", reml: bool) -> None:
        self.model = model
        self.layout = model.design.theta_layout()
        self.reml = reml
        self.structure = model.structure
        self.n, self.p = model.design.nobs, model.design.p
        self.k = self.layout.size
        self.constant = list(model.book.constant)
        self._cache: dict[bytes, WhitenedDeviance | None] = {}
        self.nevals = 0
        self.passes = 0

    def at(self, u: np.ndarray) -> WhitenedDeviance | None:
        """The whitened criterion at ``u`` (``None`` outside the parameter space):
        one pass over the partitions unless ``u`` was asked for lately."""
        u = np.asarray(u, dtype=float)
        key = u.tobytes()
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # most recently used last
            return self._cache[key]
        while len(self._cache) >= _CACHE:
            self._cache.pop(next(iter(self._cache)))
        m = self.model
        sums = whitened_pass(m.encoder, m.book, m.ddf, u, m.progress)
        self.passes += 1
        dev = None
        if sums is not None and sums.cp is not None and math.isfinite(sums.logdet):
            dev = DistributedWhitenedDeviance(sums.cp, self.layout, self.reml, sums.logdet,
                                              rows=(RemoteWhitened(m, u.copy()),))
        self._cache[key] = dev
        return dev


def alignment_error(cor, split: tuple[str, ...]) -> DesignError:
    """The refusal of a frame whose correlation groups (of the structure ``cor``)
    span partitions."""
    group = cor.group
    cols = list(group_columns(group))
    shown = ", ".join(repr(s) for s in split)
    order = ""
    if isinstance(cor, AR1) and cor.order is None:
        order = (" (a shuffle does not keep the rows' order within a group, which AR1 "
                 "without order= uses: add a column of positions within the group and pass "
                 "it as AR1(order=...) first)")
    return DesignError(
        f"residual correlation groups of {group!r} span more than one partition of the "
        f"Dask data frame (e.g. {shown}); each partition whitens its own rows, so every "
        f"group must lie in one partition. Align the partitions by the group once (a full "
        f"shuffle) and keep the result: ddf = ddf.shuffle(on={cols!r}).persist(), or write "
        f"it with ddf.shuffle(on={cols!r}).to_parquet(path) and read that folder{order}")


def check_residual_method(method, ems, anova_method) -> str:
    """``method`` of a fit with a residual structure, upper-cased: REML or ML
    (``method="ANOVA"`` and its options refused with the reason)."""
    if not isinstance(method, str) or method.upper() not in ("REML", "ML", "ANOVA"):
        raise FitError(f"method must be one of REML, ML, ANOVA, not {method!r}")
    method = method.upper()
    if method == "ANOVA":
        raise DesignError("method='ANOVA' (expected mean squares) assumes independent "
                          "residuals with one variance; drop residual= or fit by "
                          "REML / ML")
    for name, value in (("ems", ems), ("anova_method", anova_method)):
        if value is not None:
            raise FitError(f"{name}={value!r} applies to method='ANOVA' only")
    return method


class DistributedResidualModel(DistributedModel):
    """A linear mixed model with a residual structure on a Dask data frame (see
    the module docstring)."""

    book: ResidualBook
    structure: object

    @classmethod
    def from_formula(cls, formula: str, ddf, *, residual=None, missing: str = "drop",
                     weights=None, offset=None, restricted: bool = False,
                     progress: bool = False,
                     complete_in: tuple[str, ...] = ()) -> "DistributedResidualModel":
        """Parse ``formula``, learn the codebook and check the residual groups'
        alignment (two passes; no cross-products yet)."""
        cor, var = residual_parts(residual)
        if cor is not None and not isinstance(cor, (AR1, CAR1, CompSymm)):
            raise DesignError(
                f"{type(cor).__name__} (a visit covariance) next to random-effects terms on "
                "a Dask data frame is not available yet; residual= takes ma.AR1, ma.CAR1, "
                "ma.CompSymm, ma.VarIdent, ma.VarPower or ma.VarExp there, and a visit "
                "covariance in a marginal model (no random-effects term; or compute() the "
                "data and fit in memory)")
        parsed = parse_formula(formula, restricted=restricted)
        if parsed.restricted:
            from ..design.restricted import check_restricted
            check_restricted(parsed.formula, columns=ddf.columns)
        if not parsed.random:  # ma.lmm sends marginal models to dask_marginal
            raise DesignError(
                f"formula {parsed.formula!r} has no random-effects term: a marginal model "
                "(nlme's gls, mmrm) on a Dask data frame is fitted by ma.lmm (or "
                "mixedanova.distributed.dask_marginal.lmm_dask_marginal)")
        plan = ChunkPlan.from_formula(parsed, ddf._meta, weights=weights, offset=offset,
                                      missing=missing,
                                      extra_columns=tuple(residual_columns(residual)) + tuple(
                                          c for c in complete_in
                                          if c not in residual_columns(residual)))
        summary = summary_pass(plan, ddf, progress)
        if summary is None:
            raise DesignError("data has no rows")
        encoder = plan.encoder(summary)
        outer = encoder.blocks[-1].factors if encoder.blocks else None
        rsum = residual_summary_pass(encoder, ResidualBook(residual, outer), ddf, progress)
        if cor is not None and rsum.split:
            raise alignment_error(cor, rsum.split)
        keep = aliased_columns(rsum.xx, encoder.x_names_all)
        design = encoder.design_summary(keep)
        levels = ResidualLevels(largest_group=rsum.largest,
                                variance_levels=_variance_levels(var, rsum))
        book = ResidualBook(residual, outer, levels, keep, tuple(bool(c) for c in rsum.constant))
        if cor is not None and not any(book.constant):
            names = ", ".join(repr(b.group) for b in design.blocks)
            raise DesignError(
                f"the residual groups must lie inside the levels of at least one "
                f"random-effects grouping factor ({names}): the residual correlation group "
                f"has to be nested in a grouping factor")
        if rsum.negative:
            from ..residual import ResidualWarning
            warnings.warn(f"VarPower: covariate {var.covariate!r} has negative values; the "
                          "residual SD uses |v|^power, as nlme's varPower", ResidualWarning,
                          stacklevel=user_stacklevel())
        model = cls(design, encoder, None, ddf, rsum.log_w, keep, summary.values)
        model.remember_rows(rsum.xx, plan, summary)
        model.residual = residual
        model.book = book
        model.structure = structure_of(book)
        model.progress = progress
        return model

    def update_options(self, same_rows: bool) -> dict:
        """As :meth:`DistributedModel.update_options`, with the residual structure."""
        return dict(super().update_options(same_rows), residual=self.residual)

    def deviance_function(self, reml: bool = True) -> DistributedResidualDeviance:
        """The criterion over ``(theta, u)``; each new ``u`` is one pass."""
        if reml not in self._deviance:
            self._deviance[reml] = DistributedResidualDeviance(self, reml)
        return self._deviance[reml]

    def fit(self, method: str = "REML", *, optimizer: str = "SLSQP",
            start: np.ndarray | None = None, ems: str | None = None,
            anova_method: str | None = None, warn: bool = True,
            control: LmmControl | None = None) -> "DistributedResidualResults":
        """REML or ML fit (arguments as :meth:`mixedanova.model.LinearMixedModel.fit`)."""
        from ..likelihood.residual_state import boundary_messages, fit_residual_state

        method = check_residual_method(method, ems, anova_method)
        optimizer = self.check_optimizer(optimizer)
        control = check_control(control)
        rdev = self.deviance_function(reml=(method == "REML"))
        state = fit_residual_state(rdev, self.structure, optimizer, start, control)
        if self.design.has_weights:
            state = dataclasses.replace(state,
                                        objective=state.objective + self.weights_constant())
        res = DistributedResidualResults(self.design, state, model=self)
        if warn:
            warn_fit(res)
            for msg in boundary_messages(state.residual):
                warnings.warn(msg, ConvergenceWarning, stacklevel=user_stacklevel())
        return res


def _variance_levels(var, rsum) -> tuple[str, ...]:
    """VarIdent's levels of the whole data, reference first (nlme's order)."""
    if not isinstance(var, VarIdent):
        return ()
    levels = sorted(rsum.var_levels)
    if len(levels) < 2:
        raise DesignError(f"VarIdent: {var.by!r} has one level ({levels[0]!r}); one "
                          "residual SD per level needs at least two")
    ref = str(var.reference) if var.reference is not None else rsum.reference[1]
    if ref not in levels:
        raise DesignError(f"VarIdent: reference level {ref!r} is not a level of "
                          f"{var.by!r} ({', '.join(levels)})")
    return tuple([ref] + [lv for lv in levels if lv != ref])


class DistributedResidualResults(DistributedLmmResults):
    """A fit with a residual structure on a Dask data frame: the level-sized
    results of :class:`~mixedanova.distributed.dask_fit.DistributedLmmResults`
    and :attr:`residual_params`, :meth:`residual_intervals`; the row-sized views
    of the structure (per-row SDs, Pearson and normalized residuals, covariances
    among rows) are refused."""

    def ranova(self, reduce_terms: bool = True):
        """lmerTest's ``ranova`` as in memory, unless a reduced model has no random
        term left (nlme's ``gls`` with the residual structure needs the rows)."""
        if len(self.design.formula.random) == 1 and (
                not reduce_terms or self.design.blocks[0].q == 1):
            raise FitError("ranova(): without its one random term the model is a gls with "
                           "the residual structure, which is fitted from the rows; not "
                           "available for a fit on a Dask data frame")
        return super().ranova(reduce_terms)

    def __repr__(self) -> str:
        return (f"<DistributedResidualResults {self.method}: "
                f"{self.design.formula.formula!r} + {' + '.join(self.residual_structure)}, "
                f"nobs={self.nobs}>")


def lmm_dask_residual(formula: str, ddf, method: str = "REML", *, residual,
                      missing: str = "drop", weights=None, offset=None,
                      restricted: bool = False, **kwargs) -> DistributedResidualResults:
    """:func:`mixedanova.lmm` with ``residual=`` on a Dask data frame (see the module
    docstring); ``progress=True`` shows Dask's progress bar during the passes."""
    check_keywords(kwargs)
    progress = kwargs.pop("progress", False)
    if not isinstance(method, str) or method.upper() not in ("REML", "ML", "ANOVA"):
        raise FitError(f"method must be one of REML, ML, ANOVA, not {method!r}")
    model = DistributedResidualModel.from_formula(
        formula, ddf, residual=residual, missing=missing, weights=weights, offset=offset,
        restricted=restricted, progress=progress)
    return model.fit(method, **kwargs)
