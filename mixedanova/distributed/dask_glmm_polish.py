"""The last steps of a GLMM fitted to a Dask data frame (issue 19): Newton steps
to the optimum (:func:`polish_optimum`) and the Hessian behind the SEs
(:func:`refine_hessian`), both from values of the distributed objective
(:class:`~mixedanova.distributed.dask_glmm.DistributedLaplace`: each value a few
PIRLS passes)."""
from __future__ import annotations

from dataclasses import replace

import math

import numpy as np

from ..errors import FitError
from ..likelihood.blocked import NotPositiveDefinite
from .dask_glmm_passes import StepArgs, pirls_sums_many

__all__ = ["polish_optimum", "refine_hessian", "batch_values", "MAX_BATCH"]

_MAX_ITER = 200
_STEP_TOL = 1e-11
MAX_BATCH = 64  # points per lockstep batch (each carries its own level-sized sums)

_TINY_DECREMENT = 1e-8  # a Newton step predicted to gain less: taken on the model


def polish_optimum(obj, fit, max_steps: int = 3):
    """Newton steps from the finite-difference fit with its Hessian and central
    differences of the value as the gradient, until the step is below ``1e-9``
    (relative) or no longer lowers the value.

    The finite-difference path stops once its Newton decrement is below
    ``max(1e-10, 1e-12 |f|)``: that leaves ``theta`` and ``beta`` about ``1e-6``
    from the optimum, where the in-memory fit (analytic gradient) is within about
    ``1e-10``.  The value itself is reproducible to about ``1e-11`` (PIRLS's
    stopping rule), so the gradient is good to about ``1e-6`` and the steps to
    about ``1e-8``.  The differences here are taken in the Hessian's own units
    (``h_i = 1e-4 / sqrt(H_ii)``: each changes the value by about ``1e-8``), so the
    gradient's rounding error moves the optimum by about ``1e-9`` of those units.
    Each step costs ``2 k`` evaluations of the objective (``k`` free parameters).
    """
    layout = obj.data.layout
    k = layout.size
    x = np.concatenate([fit.theta, fit.beta])
    free = np.asarray(fit.free, dtype=bool)
    idx = np.flatnonzero(free)
    H = np.asarray(fit.hessian, dtype=float)[np.ix_(idx, idx)]
    if not len(idx) or not np.all(np.isfinite(H)) or np.any(np.diag(H) <= 0):
        return fit
    lower = np.concatenate([layout.lower, np.full(len(x) - k, -np.inf)])
    h = 1e-4 / np.sqrt(np.diag(H))

    def value(v):
        return obj(v[:k], v[k:])

    f0 = float(fit.value)
    moved = False
    def gradient(val, x):
        g = np.empty(len(idx))
        for m, i in enumerate(idx):
            e = np.zeros(len(x))
            e[i] = h[m]
            g[m] = (val(x + e) - val(x - e)) / (2.0 * h[m])
        return g

    for _ in range(max_steps):
        g = gradient(_batched(obj, obj.last_modes(), k, lambda v: gradient(v, x)), x)
        if not np.all(np.isfinite(g)):
            break
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        xn = x.copy()
        xn[idx] += step
        if np.any(xn < lower):
            break
        fn = value(xn)
        # a step whose predicted decrease is at the level of the value's own noise
        # (PIRLS stops at a relative step of 1e-11: the log det moves by about that)
        # is taken on the quadratic model; a larger one must lower the value
        dec = 0.5 * float(-g @ step)
        if not (fn <= f0 + 1e-14 * abs(f0) or (np.isfinite(fn) and dec < _TINY_DECREMENT)):
            break
        x, f0, moved = xn, fn, True
        if np.all(np.abs(step) <= 1e-8 * (1.0 + np.abs(x[idx]))):
            break
    if not moved:
        return fit
    st = obj.pirls(x[:k], x[k:])
    return replace(fit, theta=x[:k].copy(), beta=x[k:].copy(), value=float(st.value), state=st)


def _value_hessian(value, x: np.ndarray, idx: np.ndarray, h: np.ndarray, f0: float
                   ) -> np.ndarray:
    """Second differences of ``value`` at ``x`` over the entries ``idx`` (steps ``h``)."""
    k = len(idx)
    H = np.empty((k, k))
    for a in range(k):
        e = np.zeros(len(x))
        e[idx[a]] = h[a]
        H[a, a] = (value(x + e) - 2.0 * f0 + value(x - e)) / h[a] ** 2
        for b in range(a):
            d = np.zeros(len(x))
            d[idx[b]] = h[b]
            H[a, b] = H[b, a] = (value(x + e + d) - value(x + e - d) - value(x - e + d)
                                 + value(x - e - d)) / (4.0 * h[a] * h[b])
    return H


def refine_hessian(obj, fit, step: float = 1e-2):
    """The Hessian of ``-2 log L`` over the free ``(theta, beta)`` at the estimates by
    second differences of the value extrapolated to step 0 (Richardson: steps
    ``step`` and ``step / 2`` in the units of the fit's Hessian, ``h_i = step /
    sqrt(H_ii)``; the error ``O(step^4)`` instead of ``O(step^2)``, the value's
    noise of about ``1e-11`` divided by ``step^2``), and the SEs from it (lme4's
    ``vcov(use.hessian = TRUE)``: the ``beta`` block of ``2 H^{-1}``).  The
    finite-difference path's Hessian (steps ``2e-3``) gives the SEs to about
    ``1e-5``; this one to about ``1e-7``.  Costs ``4 k^2`` evaluations (``k`` free
    parameters)."""
    k = obj.data.layout.size
    x = np.concatenate([fit.theta, fit.beta])
    free = np.asarray(fit.free, dtype=bool)
    idx = np.flatnonzero(free)
    H0 = np.asarray(fit.hessian, dtype=float)[np.ix_(idx, idx)]
    if not len(idx) or not np.all(np.isfinite(H0)) or np.any(np.diag(H0) <= 0) \
            or not np.all(free[k:]):
        return fit

    def value(v):
        return obj(v[:k], v[k:])

    f0 = value(x)
    s = 1.0 / np.sqrt(np.diag(H0))
    value = _batched(obj, fit.state.u, k, lambda v: (
        _value_hessian(v, x, idx, 0.5 * step * s, f0), _value_hessian(v, x, idx, step * s, f0)))
    H = (4.0 * _value_hessian(value, x, idx, 0.5 * step * s, f0)
         - _value_hessian(value, x, idx, step * s, f0)) / 3.0
    if not np.all(np.isfinite(H)):
        return fit
    try:
        np.linalg.cholesky(H)
        cov = 2.0 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return fit
    Hn = np.full_like(np.asarray(fit.hessian, dtype=float), np.nan)
    Hn[np.ix_(idx, idx)] = H
    nth = int(np.sum(free[:k]))
    return replace(fit, hessian=Hn, vcov_beta=cov[nth:, nth:])


def _batched(obj, u0: np.ndarray, k: int, scheme):
    """The values a difference ``scheme`` asks for, evaluated in one batch
    (:func:`batch_values`): ``scheme(value)`` is run once with a recorder to list
    the points, then the returned look-up serves the same points."""
    pts: list[np.ndarray] = []

    def record(v):
        pts.append(np.array(v, dtype=float))
        return 0.0

    scheme(record)
    vals = batch_values(obj, [(v[:k], v[k:]) for v in pts], u0)
    table = {v.tobytes(): f for v, f in zip(pts, vals)}

    def lookup(v):
        return table[np.asarray(v, dtype=float).tobytes()]

    return lookup


def _amax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


class _Point:
    """The PIRLS iteration of one point of a batch (the steps of
    :meth:`~mixedanova.distributed.dask_glmm.DistributedLaplace.pirls` for the
    ``u``-only system, taken one pass at a time)."""

    def __init__(self, obj, theta: np.ndarray, beta: np.ndarray, u: np.ndarray) -> None:
        self.theta, self.beta, self.u = theta, beta, u.copy()
        self.templates = obj.data.layout.templates(theta)
        self.st = None
        self.value = None  # set when finished (inf when PIRLS fails)
        self.it = 0
        self.stalls, self.prev_size, self.last = 0, math.inf, False
        self.du = None
        self.step = 1.0
        self.tries = 0

    def args(self, obj, u: np.ndarray) -> StepArgs:
        return StepArgs(obj.keep, self.beta, obj.bs_of(self.templates, u), False)

    def trial(self) -> np.ndarray:
        return self.u + self.step * self.du


def batch_values(obj, points: list[tuple[np.ndarray, np.ndarray]], u0: np.ndarray
                 ) -> list[float]:
    """The Laplace ``-2 log L`` at each of ``points`` (``(theta, beta)``), with the
    PIRLS iterations of all points in lockstep: each pass carries one step of every
    unfinished point (:func:`~mixedanova.distributed.dask_glmm_passes.pirls_sums_many`),
    so a batch costs about as many passes as one point.  Every point starts from
    ``u0`` (the modes at the centre of a difference scheme); a point whose PIRLS
    fails gets ``inf``.  At most :data:`MAX_BATCH` points share a pass (every point's
    cross-products travel through the tree sum): more are run in consecutive
    batches."""
    if len(points) > MAX_BATCH:
        return [v for i in range(0, len(points), MAX_BATCH)
                for v in batch_values(obj, points[i:i + MAX_BATCH], u0)]
    pts = [_Point(obj, np.asarray(t, float), np.asarray(b, float), u0) for t, b in points]
    # the starting sums (u0; from u = 0 where u0 is not valid)
    first = obj.step_pass([p.args(obj, p.u) for p in pts], pirls_sums_many).items
    redo = []
    for p, st in zip(pts, first):
        if st.valid:
            p.st = st
        else:
            p.u = np.zeros_like(p.u)
            redo.append(p)
    if redo:
        again = obj.step_pass([p.args(obj, p.u) for p in redo], pirls_sums_many).items
        for p, st in zip(redo, again):
            if st.valid:
                p.st = st
            else:
                p.value = math.inf
    for _ in range(_MAX_ITER * 41):
        active = []
        for p in pts:
            if p.value is not None:
                continue
            if p.du is None:  # a new iterate: solve, then test
                p.it += 1
                if p.it > _MAX_ITER:
                    p.value = math.inf
                    continue
                try:
                    f = obj.factor_of(p.st, False, p.templates)
                    u_new = f.solution()[1]
                except (NotPositiveDefinite, FitError):
                    p.value = math.inf
                    continue
                p.ldL2 = float(f.ldL2)
                du = u_new - p.u
                p.size = _amax(du)
                if p.last or p.size <= _STEP_TOL * (1.0 + _amax(p.u)):
                    p.value = (-2.0 * obj.saturated_loglik + p.st.deviance + float(p.u @ p.u)
                               + p.ldL2 - 2.0 * p.st.gap)
                    continue
                p.du, p.step, p.tries = du, 1.0, 0
                p.pdev = p.st.deviance + float(p.u @ p.u)
            active.append(p)
        if not active:
            break
        sums = obj.step_pass([p.args(obj, p.trial()) for p in active], pirls_sums_many).items
        for p, st in zip(active, sums):
            u_try = p.trial()
            ok = False
            if st.valid:
                pdev_try = st.deviance + float(u_try @ u_try)
                ok = pdev_try <= p.pdev + 1e-12 * max(1.0, abs(p.pdev))
            if ok:
                p.u, p.st = u_try, st
                if p.size < 1e-8 * (1.0 + _amax(p.u)) and p.size > 0.5 * p.prev_size:
                    p.stalls += 1
                p.prev_size = p.size
                if p.stalls >= 2 or (p.step < 1.0 and abs(p.pdev - pdev_try)
                                     <= 1e-15 * max(1.0, abs(p.pdev))):
                    p.last = True
                p.du = None
                continue
            p.step *= 0.5
            p.tries += 1
            if p.tries >= 40:
                if p.size > 1e-6 * (1.0 + _amax(p.u)):
                    p.value = math.inf
                else:  # no decrease at rounding level: at the mode
                    p.value = (-2.0 * obj.saturated_loglik + p.st.deviance
                               + float(p.u @ p.u) + p.ldL2 - 2.0 * p.st.gap)
    return [math.inf if p.value is None else float(p.value) for p in pts]
