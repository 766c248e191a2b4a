"""Maximum likelihood for a GLMM: glmer's two stages, then Newton polishing.

1. ``nAGQ = 0`` stage: for each ``theta`` PIRLS finds the joint modes of
   ``(beta, u)``; ``theta`` minimizes the Laplace value there (lme4's first stage).
2. ``(theta, beta)`` minimize the Laplace (or AGQ) ``-2 log L`` (lme4's second
   stage), starting from stage 1.  The fixed effects are optimized in whitened
   coordinates ``beta = beta_1 + R_X^{-T} gamma`` (``R_X R_X'`` the information
   for ``beta`` at the stage-1 fit), so that a covariate far from 0 or on a
   large scale does not make the problem ill-conditioned.  L-BFGS-B with
   central-difference gradients, then Newton steps with a finite-difference
   Hessian until the Newton decrement (the decrease a Newton step predicts) is
   below ``1e-10``.

For the Laplace value (``nAGQ = 1``) the optimizer has the analytic gradient
(:mod:`mixedanova.glmm.gradient`): stage 1 is reduced to the best joint modes at
multiples of the starting ``theta``, stage 2 is BFGS seeded with a difference
Hessian of that gradient (L-BFGS-B where a bound is in its way) and
Newton steps with a Hessian from forward differences of the gradient; PIRLS then
solves the ``u``-only system with the gradient's block solver.  ``nAGQ > 1``
starts from the Laplace optimum.  Where the gradient's arrays would be too large
the finite-difference path above is used.  The analytic-gradient fit lives in
:mod:`mixedanova.glmm.laplace_fit`, the result type and working coordinates in
:mod:`mixedanova.glmm.optimum`.

The standard errors follow lme4's ``vcov(use.hessian = TRUE)``: the ``beta``
block of ``2 H^{-1}``, with ``H`` the Hessian of ``-2 log L`` over
``(theta, beta)`` (parameters on a bound left out).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize

from ..errors import FitError
from ..likelihood.threads import small_fit_threads
from .gradient import LaplaceGradient
from .laplace import LaplaceObjective, PirlsState
from .laplace_fit import DenseOrder, coarse_start, fit_laplace
from .optimum import DECREMENT_TOL, START_MULTIPLIERS, GlmmFit, Whitened, theta_scales
from .scalar_blocks import ScalarBlocksGradient

__all__ = ["GlmmFit", "fit_glmm", "fd_hessian", "theta_scales", "laplace_gradient",
           "prefetched"]


def _stage1(obj: LaplaceObjective, start_theta: np.ndarray, scale: np.ndarray
            ) -> PirlsState:
    layout = obj.data.layout
    lower = layout.lower
    best: dict = {}

    def f(t):
        if np.any(t < lower):
            return math.inf
        try:
            st = obj.pirls(scale * t, best["state"].beta if best else None, joint=True)
        except FitError:
            return math.inf
        if not best or st.value < best["state"].value:
            best["state"] = st
        return st.value

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    start_theta = start_theta / scale
    # a coarse search over the size of the start (huge counts want a tiny theta)
    values = []
    for c in START_MULTIPLIERS:
        values.append(f(c * start_theta))
    if not best:
        raise FitError("PIRLS failed at the starting values")
    start_theta = START_MULTIPLIERS[int(np.argmin(values))] * start_theta
    minimize(f, start_theta, method="Nelder-Mead", bounds=bounds,
             options={"xatol": 1e-5, "fatol": 1e-8, "maxfev": 2000 * len(start_theta)})
    return best["state"]


def _fd_gradient(fun: Callable, x: np.ndarray, lower: np.ndarray, h: np.ndarray,
                 f0: float | None = None) -> np.ndarray:
    g = np.empty_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h[i]
        if x[i] - h[i] < lower[i]:
            f0 = fun(x) if f0 is None else f0
            g[i] = (-3 * f0 + 4 * fun(x + e) - fun(x + 2 * e)) / (2 * h[i])
        else:
            g[i] = (fun(x + e) - fun(x - e)) / (2 * h[i])
    return g


def fd_hessian(fun: Callable, x: np.ndarray, h: np.ndarray, f0: float | None = None
               ) -> np.ndarray:
    """Central-difference Hessian of ``fun`` at ``x`` with steps ``h``."""
    k = len(x)
    f0 = fun(x) if f0 is None else f0
    H = np.empty((k, k))
    fp = np.empty(k)
    fm = np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        fp[i], fm[i] = fun(x + e), fun(x - e)
        H[i, i] = (fp[i] - 2 * f0 + fm[i]) / h[i] ** 2
    for i in range(k):
        for j in range(i):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            v = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                 + fun(x - ei - ej)) / (4 * h[i] * h[j])
            H[i, j] = H[j, i] = v
    return H


def fit_glmm(obj: LaplaceObjective, value: Callable[[np.ndarray, np.ndarray], float]
             | None = None, start_theta: np.ndarray | None = None,
             stage1: bool = True, warm: GlmmFit | None = None, *, analytic: bool = True,
             scale: np.ndarray | None = None,
             batch: Callable[[list], list] | None = None,
             stage1_search: bool = True) -> GlmmFit:
    """Fit by maximum likelihood (see the module docstring).

    Parameters
    ----------
    obj : LaplaceObjective
    value : callable, optional
        ``-2 log L(theta, beta)`` to minimize in stage 2 (default: the Laplace
        value ``obj``; an AGQ objective for ``nAGQ > 1``).
    start_theta : numpy.ndarray, optional
    stage1 : bool
        False: stop after the ``nAGQ = 0`` stage (glmer's ``nAGQ = 0``).
    warm : GlmmFit, optional
        A converged fit of a nearby problem (the same data at another NB shape
        or dispersion): the search starts from its estimates and modes instead
        of the search over sizes of ``theta`` (analytic-gradient path).
    analytic : bool
        False: the finite-difference path even where the analytic gradient is
        available (an objective whose rows are not in memory: a Dask fit).
    scale : numpy.ndarray, optional
        The working units of ``theta`` (default :func:`theta_scales` of ``obj``'s rows).
    batch : callable, optional
        ``batch([(theta, beta), ...]) -> [value, ...]``: many values at once (a Dask
        fit evaluates them in one lockstep PIRLS); the finite-difference gradients
        and Hessians of stage 2 then ask for their points together.
    stage1_search : bool
        False: on the finite-difference path, the start of stage 2 is the best
        joint modes at a few sizes of the starting ``theta``
        (:func:`~mixedanova.glmm.laplace_fit.coarse_start`, as the analytic path)
        instead of the Nelder-Mead search of the ``nAGQ = 0`` objective (a Dask
        fit: each PIRLS a few passes).
    """
    layout = obj.data.layout
    scale = theta_scales(obj) if scale is None else np.asarray(scale, dtype=float)
    theta0 = (layout.start() * scale if start_theta is None
              else np.asarray(start_theta, float))
    grad = laplace_gradient(obj) if stage1 and analytic else None
    if grad is not None:
        with small_fit_threads(DenseOrder(grad.r)):
            obj.fast, obj.fast_joint = grad.factor, grad.joint_factor
            try:
                lap = fit_laplace(obj, grad, theta0, scale, warm=warm)
            finally:
                obj.fast = obj.fast_joint = None
        if value is None:
            return lap
        # nAGQ > 1: the quadrature optimum is near the Laplace one; start there
        s1 = obj.pirls(lap.theta, lap.beta, joint=True)
        start = (lap.theta, lap.beta)
        hess = lap.hessian
    else:
        s1 = _stage1(obj, theta0, scale) if stage1_search or not stage1 else \
            coarse_start(obj, theta0, scale)
        start = (s1.theta, s1.beta)
        hess = None
    value = obj if value is None else value
    messages: list[str] = []
    p = obj.data.p
    if not stage1:
        st = obj.pirls(s1.theta, s1.beta, u0=s1.u, joint=True)
        return _finish_nagq0(obj, st)
    # whitening of beta from the stage-1 information
    rx = np.asarray(s1.factor.rx()) if p else np.zeros((0, 0))
    A = solve_triangular(rx.T, np.eye(p), lower=False) if p else np.zeros((0, 0))
    wt = Whitened(scale, start[1].copy(), A)
    if hess is not None:  # the Laplace Hessian in the working coordinates
        J = wt.jacobian()
        hess = J.T @ hess @ J
    obj.fast = grad.factor if grad is not None else None
    try:
        return _stage2(obj, value, wt, start, stage1_state=s1, messages=messages,
                       hess=hess, batch=batch)
    finally:
        obj.fast = None


def laplace_gradient(obj: LaplaceObjective) -> LaplaceGradient | None:
    """The analytic gradient for this design (scalar terms: the sparse coupling,
    cheaper at any size; else dense blocks), or None where its arrays are too large."""
    grad = ScalarBlocksGradient(obj)
    if not grad.available():
        grad = LaplaceGradient(obj)
    return grad if grad.available() else None


def _fixed_matrix_newton(fx: Callable, fraw: Callable, x: np.ndarray, H: np.ndarray,
                         hstep: np.ndarray, max_steps: int = 20) -> np.ndarray | None:
    """Steps ``-H^{-1} g`` (``g`` by central differences) while they decrease ``fx``,
    until the decrement they predict is below the polish's tolerance; None when
    ``H`` is not positive definite or no step decreases the value."""
    try:
        c = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    f0 = fx(x)
    if not np.isfinite(f0):
        return None
    tol = max(DECREMENT_TOL, 1e-12 * abs(f0))
    for _ in range(max_steps):
        g = _fd_gradient(fraw, x, np.full(len(x), -np.inf), hstep, f0)
        step = -np.linalg.solve(c.T, np.linalg.solve(c, g))
        if 0.5 * float(-g @ step) < tol:
            return x
        t = 1.0
        for _ in range(20):
            fn = fx(x + t * step)
            if fn < f0:
                x, f0 = x + t * step, fn
                break
            t *= 0.5
        else:
            return None
    return x


def prefetched(fun: Callable, many: Callable[[list], list] | None, scheme: Callable
               ) -> Callable:
    """``fun`` (without ``many``), or a look-up of the values ``scheme(f)`` asks
    ``f`` for, evaluated together by ``many`` (``scheme`` is run once with a
    recorder to list the points; points not listed go to ``fun``)."""
    if many is None:
        return fun
    pts: list[np.ndarray] = []

    def record(v):
        pts.append(np.array(v, dtype=float))
        return 0.0

    scheme(record)
    table = {v.tobytes(): f for v, f in zip(pts, many(pts))}

    def lookup(v):
        hit = table.get(np.asarray(v, dtype=float).tobytes())
        return fun(v) if hit is None else hit

    return lookup


def _stage2(obj: LaplaceObjective, value: Callable, wt: "Whitened", start: tuple,
            stage1_state: PirlsState, messages: list, hess: np.ndarray | None = None,
            batch: Callable[[list], list] | None = None) -> GlmmFit:
    """Minimize ``value`` (finite differences; the AGQ objective) from ``start``."""
    layout = obj.data.layout
    p = obj.data.p
    s1 = stage1_state
    lower = np.concatenate([layout.lower, np.full(p, -np.inf)])

    def fraw(x):
        theta, beta = wt.split(x)
        return value(theta, beta)

    def fx(x):
        return math.inf if np.any(x < lower) else fraw(x)

    many = None if batch is None else (lambda xs: batch([wt.split(v) for v in xs]))

    x = wt.to_x(*start)
    hstep = np.concatenate([np.full(layout.size, 1e-5), np.full(p, 1e-5)])

    def value_and_forward_gradient(xx):
        # forward differences while far from the optimum (k + 1 evaluations); the
        # Newton polish uses central ones
        xx = np.maximum(xx, lower)

        def scheme(f):
            f0 = f(xx)
            g = np.empty_like(xx)
            for i in range(len(xx)):
                e = np.zeros_like(xx)
                e[i] = 1e-6
                g[i] = (f(xx + e) - f0) / 1e-6
            return f0, g

        if many is None:
            return scheme(fx)
        return scheme(prefetched(fx, lambda xs: [math.inf if np.any(v < lower) else f
                                                 for v, f in zip(xs, many(xs))],
                                 scheme))

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def stage2(x):
        res = minimize(value_and_forward_gradient, x, jac=True, method="L-BFGS-B",
                       bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 1000})
        x = np.maximum(res.x, lower) if fx(res.x) <= fx(x) else x
        return _newton(fx, fraw, x, lower, hstep, many=many)

    out = None
    if hess is not None and np.all(np.isfinite(hess)):
        # the Laplace Hessian as the Newton matrix of the quadrature value (the two
        # objectives are close): a few central-difference gradients, then the
        # finite-difference Newton polish checks and gives the Hessian
        xq = _fixed_matrix_newton(fx, fraw, x, hess, hstep)
        if xq is not None:
            out = _newton(fx, fraw, xq, lower, hstep)
            if not out[-1]:
                out = None
    if out is None:
        out = stage2(x)
    # A template diagonal at 0 is a stationary point in that entry (the objective is
    # even in it): a gradient method cannot leave it.  Restart with such entries
    # moved off the boundary, keep the best.
    diag = np.flatnonzero(layout.diagonal_mask())
    near = diag[out[0][diag] < 1e-3]
    if len(near):
        for v in (1.0, 0.1, 10.0):
            x1 = out[0].copy()
            x1[near] = v
            if not np.isfinite(fx(x1)):
                continue
            cand = stage2(x1)
            if cand[1] < out[1] - 1e-9 * max(1.0, abs(out[1])):
                out = cand
    x, f0, g, H, free, dec, ok = out
    if not ok:
        messages.append(f"the Newton polish stopped with decrement {dec:.3g} (not at the "
                        "rounding level): the optimum is not certain")
    theta, beta = wt.split(x)
    obj.fast = None  # the engine's factor at the estimates (results use it)
    st = obj.pirls(theta, beta)
    J = wt.jacobian()
    vcov = np.full((p, p), np.nan)
    Hn = np.full((len(x), len(x)), np.nan)
    Jf = J[np.ix_(free, free)]
    try:
        Hf = np.linalg.inv(Jf).T @ H @ np.linalg.inv(Jf)
        Hn[np.ix_(free, free)] = Hf
        cov = Jf @ np.linalg.inv(H) @ Jf.T * 2.0
        bidx = np.flatnonzero(free[layout.size:])
        nth = int(np.sum(free[:layout.size]))
        vcov = cov[nth:, nth:] if len(bidx) == p else vcov
    except np.linalg.LinAlgError:
        messages.append("the Hessian is singular")
    grad = np.linalg.solve(J.T, g) if len(g) == len(x) else g
    return GlmmFit(theta=theta, beta=beta, value=float(f0), state=st, hessian=Hn, free=free,
                   vcov_beta=vcov, gradient=grad, newton_decrement=float(dec),
                   converged=bool(ok), messages=messages, stage1_theta=s1.theta,
                   stage1_beta=s1.beta, nevals=obj.nevals)


def _newton(fx: Callable, fraw: Callable, x: np.ndarray, lower: np.ndarray,
            hstep: np.ndarray, max_steps: int = 30,
            many: Callable[[list], list] | None = None):
    """Newton steps with a finite-difference Hessian on the free parameters.

    ``fraw`` is the objective without the bounds (a template diagonal below 0
    gives the same kind of covariance), so that differences may straddle a bound.
    A parameter on its bound whose slope does not point inside is held there.
    Converged: the Newton decrement is below ``max(1e-10, 1e-12 |f|)`` (or, when
    no step gains any more, below ``1e-8 max(1, |f|)``: the rounding level).
    """
    f0 = fx(x)
    hh = np.concatenate([np.full(len(x), 2e-3)])
    dec = math.inf
    tol = max(DECREMENT_TOL, 1e-12 * abs(f0))
    for _ in range(max_steps):
        fr = prefetched(fraw, many, lambda f: _fd_gradient(f, x, np.full(len(x), -np.inf),
                                                           hstep, f0))
        g = _fd_gradient(fr, x, np.full(len(x), -np.inf), hstep, f0)
        free = ~((x - lower < 1e-8) & (g > -1e-6 * max(1.0, abs(f0))))
        idx = np.flatnonzero(free)
        xf = x.copy()
        fr = prefetched(fraw, many, lambda f: fd_hessian(lambda v: f(_put(xf, idx, v)),
                                                         x[idx], hh[idx], f0))
        H = fd_hessian(lambda v: fr(_put(xf, idx, v)), x[idx], hh[idx], f0)
        if not np.all(np.isfinite(H)) or not np.all(np.isfinite(g)):
            return x, f0, g, np.where(np.isfinite(H), H, np.nan), free, math.inf, False
        try:
            c = np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            w, V = np.linalg.eigh(H)
            H_pd = V @ np.diag(np.maximum(np.abs(w), 1e-8)) @ V.T
            c = np.linalg.cholesky(H_pd)
        step = -np.linalg.solve(c.T, np.linalg.solve(c, g[idx]))
        dec = 0.5 * float(-g[idx] @ step)
        if dec < tol:
            return x, f0, g, H, free, dec, True
        t = 1.0
        moved = False
        for _ in range(30):
            xn = x.copy()
            xn[idx] += t * step
            xn = np.maximum(xn, lower)
            fn = fx(xn)
            if fn < f0:
                x, f0, moved = xn, fn, True
                break
            t *= 0.5
        if not moved:
            return x, f0, g, H, free, dec, dec < 1e-8 * max(1.0, abs(f0))
    return x, f0, g, H, free, dec, False


def _put(x: np.ndarray, idx: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[idx] = v
    return out


def _finish_nagq0(obj: LaplaceObjective, st: PirlsState) -> GlmmFit:
    p = obj.data.p
    rx = np.asarray(st.factor.rx()) if p else np.zeros((0, 0))
    Linv = np.linalg.inv(rx) if p else rx
    vcov = Linv.T @ Linv
    k = obj.data.layout.size
    return GlmmFit(theta=st.theta, beta=st.beta, value=st.value, state=st,
                   hessian=np.full((k + p, k + p), np.nan), free=np.ones(k + p, bool),
                   vcov_beta=vcov, gradient=np.full(k + p, np.nan),
                   newton_decrement=math.nan, converged=True, messages=[],
                   stage1_theta=st.theta, stage1_beta=st.beta, nevals=obj.nevals)
