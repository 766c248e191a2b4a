"""The per-response work of a batch fit: many responses on one design.

:func:`fit_columns` is what a worker process runs on a chunk of response
columns.  The design's rows (``Z``, ``X``) are fixed; the cross-products of all
the chunk's responses are formed in one pass
(:meth:`~mixedanova.likelihood.crossprod.CrossProductPattern.evaluate` with an
``n x k`` response block), and each response then gets its own objective
(:class:`~mixedanova.likelihood.criterion.ProfiledDeviance` on ``cp.select(j)``),
the same optimizer, convergence check and estimates as a single fit
(:meth:`mixedanova.LinearMixedModel.fit`), and lmerTest's Satterthwaite pieces
(:func:`~mixedanova.inference.satterthwaite.satterthwaite_setup`).

A response with missing values is fitted on its complete rows: a separate
cross-product build for those rows, with levels that lose all their rows
removed (as a single fit on those rows would).

Nothing here builds a results object or a DataFrame per response: a chunk
returns a :class:`ChunkFit` of stacked arrays.

The objectives are built from cross-products without the rows, so the explicit
penalized residual sum of squares of a single fit
(:meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.explicit_pwrss`) is
skipped: it matters only where the random effects explain nearly all of the
response (``pwrss`` below ``1e-4`` of the response's sum of squares), where a
batch fit may then lose a few digits against ``ma.lmm``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EngineSpec", "ChunkFit", "FitView", "ViewState", "fit_columns", "subset_terms",
           "init_worker", "run_task", "chunk_concat", "one_blas_thread", "empty_chunk"]

@dataclass(frozen=True)
class EngineSpec:
    """What every response's fit shares (sent once to each worker).

    Attributes
    ----------
    terms : tuple of TermData
        The design's random-effects terms (rows of ``Z``).
    X : numpy.ndarray
        Fixed-effects matrix.
    layout : ThetaLayout
    reml : bool
    optimizer : str
    control : LmmControl
    satterthwaite : bool
        Compute lmerTest's Satterthwaite pieces for each response.
    kenward_roger : bool
        Also compute the Kenward-Roger coefficient table (a single fit per response).
    design : Design
        The design (with a placeholder response), for the Kenward-Roger fits.
    diag : numpy.ndarray
        Mask of ``theta``'s diagonal entries.
    fast : bool
        Try the vectorized path of :mod:`mixedanova.batch.dense` first (scalar
        random intercepts); responses it cannot certify go to the general path.
    """

    terms: tuple
    X: np.ndarray
    layout: object
    reml: bool
    optimizer: str
    control: object
    satterthwaite: bool
    kenward_roger: bool
    design: object = field(repr=False)
    diag: np.ndarray = field(repr=False)
    fast: bool = True


@dataclass(frozen=True)
class ViewState:
    """The parts of a fit state that the inference code reads."""

    theta: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    residual: None = None
    fixed_sigma: None = None  # batch fits profile sigma (FitState's field of that name)
    structured: None = None  # batch fits refuse structured random terms (FitState's field)


@dataclass
class FitView:
    """One response's fit as the inference code sees a results object
    (``method``, ``sigma``, ``nobs``, ``state``, ``design``, ``model``)."""

    method: str
    sigma: float
    nobs: int
    state: ViewState
    design: object
    dev: object = field(default=None, repr=False)

    @property
    def model(self) -> "FitView":
        return self

    def deviance_function(self, reml: bool = True):
        """The objective of this response (``reml`` must match the fit)."""
        return self.dev


@dataclass
class ChunkFit:
    """Stacked results of the responses of one chunk (row ``i`` = ``columns[i]``)."""

    columns: np.ndarray
    theta: np.ndarray
    sigma: np.ndarray
    beta: np.ndarray
    vcov: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    singular: np.ndarray
    failed: np.ndarray
    nobs: np.ndarray
    df: np.ndarray            # Satterthwaite df of each coefficient (NaN if not asked)
    vcov_varpar: np.ndarray   # (m, nt + 1, nt + 1)
    jacobian: np.ndarray      # (m, nt + 1, p, p)
    kr_se: np.ndarray
    kr_df: np.ndarray
    messages: dict


_SPEC: EngineSpec | None = None


def init_worker(spec: EngineSpec) -> None:
    """Process-pool initializer: keep the shared spec, one BLAS thread per process."""
    global _SPEC
    _SPEC = spec
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
    except ImportError:  # optional: OPENBLAS_NUM_THREADS=1 does the same
        pass


def run_task(task: tuple) -> ChunkFit:
    """Worker entry point: ``(columns, Y, mask)`` with the spec set by :func:`init_worker`."""
    columns, Y, mask = task
    return fit_columns(_SPEC, columns, Y, mask)


def subset_terms(terms, X: np.ndarray, mask: np.ndarray | None):
    """Terms and ``X`` on the rows ``mask``; levels without rows are removed."""
    from ..likelihood.blocked import TermData

    if mask is None:
        return tuple(terms), X
    out = []
    for t in terms:
        codes = t.codes[mask]
        used, codes = np.unique(codes, return_inverse=True)
        out.append(TermData(codes.ravel().astype(t.codes.dtype), t.zraw[mask], len(used)))
    return tuple(out), X[mask]


def empty_chunk(spec: EngineSpec, columns: np.ndarray) -> ChunkFit:
    m, p, nt = len(columns), spec.X.shape[1], spec.layout.lower.size
    nan = lambda *s: np.full((m,) + s, np.nan)  # noqa: E731
    return ChunkFit(columns=np.asarray(columns), theta=nan(nt), sigma=nan(), beta=nan(p),
                    vcov=nan(p, p), objective=nan(), converged=np.zeros(m, bool),
                    singular=np.zeros(m, bool), failed=np.zeros(m, bool),
                    nobs=np.zeros(m, int), df=nan(p), vcov_varpar=nan(nt + 1, nt + 1),
                    jacobian=nan(nt + 1, p, p), kr_se=nan(p), kr_df=nan(p), messages={})


def fit_columns(spec: EngineSpec, columns: np.ndarray, Y: np.ndarray,
                mask: np.ndarray | None) -> ChunkFit:
    """Fit every column of ``Y`` (rows ``mask`` of the design, or all).

    A response whose fit raises (a constant response, a response the fixed
    effects fit exactly, a non-positive-definite start) is marked ``failed``
    and not converged, with the error in ``messages``.
    """
    from ..errors import FitError
    from ..likelihood.crossprod import CrossProductPattern

    out = empty_chunk(spec, columns)
    terms, X = subset_terms(spec.terms, spec.X, mask)
    n = X.shape[0]
    Y = np.asarray(Y, dtype=float).reshape(n, -1)
    pattern = CrossProductPattern(list(terms), n)  # the symbolic part, once per chunk
    zraws = [t.zraw for t in terms]
    todo = range(len(columns))
    if spec.fast and not spec.kenward_roger:
        from .dense import eligible, fit_dense
        from .vector import eligible_vector, fit_vector

        vector = eligible_vector(terms, X.shape[1])
        if vector or eligible(terms, X.shape[1]):
            # one pass over the rows for the chunk's k columns, each centered on its
            # own least-squares fit (as a single fit centers its one column)
            shift = np.column_stack([np.linalg.lstsq(X, Y[:, j], rcond=None)[0]
                                     for j in range(Y.shape[1])]) if X.shape[1] else None
            try:
                cp = pattern.evaluate(zraws, X, Y, shift=shift)
            except (FitError, np.linalg.LinAlgError, ValueError):
                cp = None  # some column cannot be standardized: the engine reports it
            if cp is not None:
                todo = (fit_vector if vector else fit_dense)(spec, cp, np.asarray(columns), out)
    # the general path: each response's cross-products from the shared pattern, one
    # column at a time -- the arithmetic of a single fit, so that its numbers
    # (the finite-difference Satterthwaite df included) are ma.lmm's bit for bit
    for i in todo:
        out.nobs[i] = n
        try:
            cpj = pattern.evaluate(zraws, X, Y[:, i])
            _fit_one(spec, cpj, out, i, Y[:, i], mask)
        except (FitError, np.linalg.LinAlgError, ValueError, ArithmeticError) as e:
            out.failed[i] = True
            out.converged[i] = False
            out.messages[int(columns[i])] = (f"fit failed: {e}",)
    return out


def _fit_one(spec: EngineSpec, cp, out: ChunkFit, i: int, y: np.ndarray,
             mask: np.ndarray | None) -> None:
    """One response: the steps of :meth:`mixedanova.LinearMixedModel.fit`."""
    from ..likelihood.convergence import check_convergence
    from ..likelihood.criterion import ProfiledDeviance, fit_state
    from ..likelihood.optimizer import optimize_theta

    dev = ProfiledDeviance(cp, spec.layout, spec.reml)
    opt = optimize_theta(dev, None, method=spec.optimizer, control=spec.control)
    conv = check_convergence(dev, opt.theta, opt.hessian, opt.working, control=spec.control)
    msgs = tuple(conv.messages)
    if not conv.converged and not opt.converged:
        msgs += (f"the optimizer stopped early: {opt.message} (LmmControl maxiter="
                 f"{spec.control.maxiter}, tol={spec.control.tol:g})",)
    state = fit_state(dev, opt, conv)
    out.theta[i] = state.theta
    out.sigma[i] = state.sigma
    out.beta[i] = state.beta
    out.vcov[i] = state.vcov_beta
    out.objective[i] = state.objective
    out.converged[i] = bool(conv.converged)
    out.singular[i] = bool(conv.is_singular)
    if msgs:
        out.messages[int(out.columns[i])] = msgs
    if spec.satterthwaite:
        from ..inference.satterthwaite import satterthwaite_setup

        view = FitView("REML" if spec.reml else "ML", float(state.sigma), cp.n,
                       ViewState(state.theta, state.beta, state.vcov_beta), spec.design, dev)
        setup = satterthwaite_setup(view, warn=False)
        p = len(state.beta)
        out.df[i] = setup.df_many(np.eye(p)) if p else np.zeros(0)
        out.vcov_varpar[i] = setup.vcov_varpar
        out.jacobian[i] = setup.jacobian
        if setup.messages:
            out.messages[int(out.columns[i])] = msgs + setup.messages
    if spec.kenward_roger:
        tab = _kr_table(spec, y, mask)
        out.kr_se[i] = tab["std_err"].to_numpy()
        out.kr_df[i] = tab["df"].to_numpy()


def _kr_table(spec: EngineSpec, y: np.ndarray, mask: np.ndarray | None):
    """Kenward-Roger coefficient table of one response by a single fit."""
    from ..model import LinearMixedModel

    d = spec.design
    data = d.data if mask is None else d.data.iloc[np.flatnonzero(mask)]
    data = data.copy()
    data[d.formula.response.strip()] = y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LinearMixedModel.from_formula(_formula_text(d), data)
        res = model.fit("REML", optimizer=spec.optimizer, control=spec.control, warn=False)
        return res.fixed("kenward-roger")


def _formula_text(design) -> str:
    return design.formula.formula


def chunk_concat(parts: list[ChunkFit]) -> ChunkFit:
    """One :class:`ChunkFit` from several (in the order given)."""
    fields = [f.name for f in dataclasses.fields(ChunkFit) if f.name != "messages"]
    merged = {name: np.concatenate([getattr(c, name) for c in parts]) for name in fields}
    msgs: dict = {}
    for c in parts:
        msgs.update(c.messages)
    return ChunkFit(**merged, messages=msgs)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the block (the batch parallelizes over processes;
    a second BLAS thread only spins on these small systems)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield
