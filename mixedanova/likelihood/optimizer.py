"""Minimization of the profiled objective over ``theta``.

:func:`optimize_theta` runs in three stages, each a function of its own:

1. a bounded local optimizer (SLSQP with the analytic gradient by default);
2. escapes from false boundary points: wherever a covariance is singular,
   :func:`~mixedanova.likelihood.boundary.cone_descent` looks for a direction
   in the positive semidefinite cone that lowers the objective, and the local
   optimizer restarts from the better point it finds (this replaces lme4's
   one-coordinate ``restart_edge``);
3. a Newton polish with the analytic gradient and its finite-difference
   Jacobian, which takes the last digits a quasi-Newton method leaves.

When an evaluation is expensive (a dense Schur complement of order
``NEWTON_ORDER`` or more: crossed factors with thousands of levels) and the
start is inside the bounds, :func:`newton_descent` runs first: Newton's method
with the analytic gradient and a finite-difference Hessian reaches the optimum
from the moment start in a handful of factorizations, where the quasi-Newton
method spends most of its evaluations learning the curvature.  Only if it does
not end at an interior point with a positive definite Hessian do the stages
above run (from the start: where it stopped can be in another basin).

It returns an :class:`~mixedanova.likelihood.state.OptimizerSummary`; whether
the point is an optimum is decided separately by
:func:`mixedanova.likelihood.convergence.check_convergence`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ..errors import FitError
from .boundary import canonical_theta, cone_descent, free_mask, near_singular
from .control import LmmControl, check_control
from .criterion import ProfiledDeviance, gradient_jacobian
from .reparam import WorkingCoordinates
from .varpar import DENSE_MAX, DenseVarpar, exact_polish, interior, varpar_order
from .state import OptimizerSummary
from .system import dense_order

__all__ = ["optimize_theta", "newton_polish", "newton_descent", "saddle_descent",
           "mean_starts", "NEWTON_ORDER"]

NEWTON_ORDER = 1000  # dense Schur complements of this order make evaluations expensive
_NEWTON_MAX_PARAMS = 10  # the Hessian costs one gradient per parameter
# up to this many parameters the starting Hessian comes from k (k + 1) / 2 values
# rather than k gradients (a gradient costs about 2.5 values: an inverse on top)
_VALUE_HESSIAN_MAX = 3
_MAX_Z_STEP = 2.0  # largest Newton step: a factor e^2 in a relative SD
_VALUE_HESSIAN_STEP = 3e-4  # in z; rounding and truncation both move H by ~1e-4..1e-3

_GRADIENT_METHODS = ("SLSQP", "L-BFGS-B")
_DERIVATIVE_FREE = ("Powell", "Nelder-Mead", "COBYQA", "TNC")


def optimize_theta(dev: ProfiledDeviance, theta0: np.ndarray | None = None, *,
                   method: str = "SLSQP", tol: float | None = None,
                   maxiter: int | None = None, max_restarts: int | None = None,
                   control: LmmControl | None = None) -> OptimizerSummary:
    """Minimize the profiled objective over ``theta`` within its bounds.

    The default is scipy's SLSQP (a quasi-Newton method whose bounds enter a
    QP subproblem) driven by the analytic gradient of
    :meth:`ProfiledDeviance.value_and_gradient`, restarted when a variance is
    stuck on its bound (lme4's ``restart_edge``).  A gradient method is used
    rather than lme4's derivative-free BOBYQA because the gradient costs about
    one extra factorization and the quasi-Newton steps reach the optimum to the
    precision of the objective (about 1e-13 relative) in a few dozen
    evaluations, where BOBYQA stops up to 6e-5 (relative) short along flat
    variance directions.  On the reference models and an InstEval-shaped data
    set SLSQP needed fewer evaluations than L-BFGS-B, which wasted steps bouncing
    off the zero bound, and its line search asks for values only, so gradients
    are computed at accepted points alone.

    Parameters
    ----------
    dev : ProfiledDeviance
    theta0 : array, optional
        Starting value.  By default lme4's (identity templates), except for
        crossed designs, whose scalar random intercepts start from one-way
        moment estimates (``dev.start``, see
        :func:`mixedanova.likelihood.criterion._moment_start`): there each
        evaluation costs a dense factorization and a close start halves their
        number.
    method : str
        ``"SLSQP"`` (default) or ``"L-BFGS-B"`` with the analytic gradient, or any
        bounded derivative-free scipy method (``"Powell"``, ``"Nelder-Mead"``,
        ``"COBYQA"``, ``"TNC"``).
    tol, maxiter : float, int, optional
        Passed to the local optimizer (default: ``control``'s).
    max_restarts : int, optional
        Escapes from singular covariances tried at most (default: ``control``'s).
    control : LmmControl, optional
        The settings (:class:`~mixedanova.likelihood.control.LmmControl`; None:
        the defaults); ``tol``, ``maxiter`` and ``max_restarts`` override its fields.
    """
    control = check_control(control)
    tol = control.tol if tol is None else tol
    maxiter = control.maxiter if maxiter is None else maxiter
    max_restarts = control.max_restarts if max_restarts is None else max_restarts
    if method not in _GRADIENT_METHODS + _DERIVATIVE_FREE:
        raise FitError(f"optimizer must be one of {', '.join(_GRADIENT_METHODS + _DERIVATIVE_FREE)}"
                       f", not {method!r}")
    wc = WorkingCoordinates(dev)
    work = wc.dev
    lower = dev.layout.lower
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    evals0 = dev.nevals + (work.nevals if work is not dev else 0)
    t0 = time.perf_counter()
    x0 = work.start if theta0 is None else wc.from_raw(dev.layout.check_start(theta0))
    f0 = work(x0)
    if not math.isfinite(f0):
        raise FitError(f"start: the objective cannot be evaluated at theta = "
                       f"{wc.to_raw(x0).tolist()}")
    run = _Run(work, bounds, method, tol, maxiter, max_restarts)
    newton = None
    if method == "SLSQP" and _expensive(dev):
        newton = newton_descent(work, x0)
    if newton is not None and newton.converged:
        x, fx, hessian = newton.x, newton.f, newton.hessian
        niter, success, message = newton.steps, True, (
            f"Newton's method converged in {newton.steps} steps (analytic gradient, "
            "finite-difference Hessian)")
    else:
        # from the start, not from where Newton's method stopped: a point it could
        # not finish can sit in another basin (stress set f_nested_10100)
        x, fx, hessian = run.descend(x0)
        extra = inflated_start(work, x)
        if extra is not None:  # a singular covariance: one more start just inside the cone
            x2, f2, h2 = run.descend(extra)
            if f2 < fx - 1e-10 * max(1.0, abs(fx)):
                x, fx, hessian = x2, f2, h2
        if theta0 is None:
            for start in mean_starts(dev):  # no fixed intercept, a mean far from 0
                x2, f2, h2 = run.descend(wc.from_raw(start))
                if f2 < fx - 1e-10 * max(1.0, abs(fx)):
                    x, fx, hessian = x2, f2, h2
        res = run.last
        niter, success, message = int(getattr(res, "nit", 0)), bool(res.success), \
            str(res.message)
    theta = _exact_polish(dev, canonical_theta(dev, _snap_to_bounds(dev, wc.to_raw(x))))
    fmin = dev(theta)
    evals = dev.nevals + (work.nevals if work is not dev else 0) - evals0
    return OptimizerSummary(method=method, theta0=wc.to_raw(x0), theta=theta, f0=f0,
                            fmin=fmin, feval=evals, niter=niter, converged=success,
                            message=message, seconds=time.perf_counter() - t0,
                            restarts=run.restarts, hessian=hessian, working=wc)


def _expensive(dev: ProfiledDeviance) -> bool:
    """An evaluation factors a dense Schur complement of order ``NEWTON_ORDER`` or more."""
    return (dense_order(dev.system) >= NEWTON_ORDER
            and len(dev.layout.lower) <= _NEWTON_MAX_PARAMS)


@dataclass
class NewtonResult:
    """Where :func:`newton_descent` ended: the point, its objective, the Hessian
    over all entries there (secant-updated), the steps taken and whether it
    converged (otherwise ``x`` is the best point found)."""

    x: np.ndarray
    f: float
    hessian: np.ndarray
    steps: int
    converged: bool


def newton_descent(dev: ProfiledDeviance, x0: np.ndarray, *, max_steps: int = 20, step_tol: float = 1e-8,
                   inside: float = 1e-3) -> NewtonResult | None:
    """Newton's method on ``theta`` for expensive evaluations.

    Entries with lower bound 0 (template diagonals: relative SDs) move on the
    log scale, where the criterion is much closer to quadratic (a variance
    component estimated from a dozen levels has a strongly skewed profile in
    the SD) and no step can cross the bound; the others on their own scale.
    The starting Hessian comes from values (``k (k + 1) / 2`` of them, up to
    ``_VALUE_HESSIAN_MAX`` parameters) or from forward differences of the
    analytic gradient (one gradient per entry); it is then updated by BFGS from
    each step's change in the gradient.  Each step is ``-H^{-1} g`` with backtracking on the
    objective (values only; the gradient is computed at accepted points).  It
    stops when the next step would move every entry by less than ``step_tol``
    (relative, or on the log scale): ``theta`` is then known to about that
    precision (1e-8, against the polish's 1e-10: one evaluation with its
    gradient less, which at a Schur complement of order 10^4 is 11 s), and the
    criterion to rounding.
    Where the starting Hessian is indefinite its eigenvalues are replaced by
    their absolute values, and at the end the Hessian is recomputed by forward
    differences of the gradient and must be positive definite.  Steps move a
    relative SD by at most a factor ``e^2``.  It gives up (``converged=False``,
    the best point so far) if a step fails, the steps run out, or a relative SD
    falls below ``inside`` (the boundary is the other optimizer's business);
    ``None`` when the start itself is not inside.

    The returned ``hessian`` is in ``theta`` (what the convergence check uses).
    """
    lower = dev.layout.lower
    logged = lower == 0.0
    x = np.asarray(x0, dtype=float).copy()
    if np.any(x[logged] < inside):
        return None
    f, g = dev.value_and_gradient(x)
    if not math.isfinite(f):
        return None
    gz = _z_gradient(g, x, logged)
    if len(x) <= _VALUE_HESSIAN_MAX:
        Hz = _value_hessian(dev, x, f, gz, logged)
        Hx = _theta_hessian(Hz, gz, x, logged)
    else:
        Hx = gradient_jacobian(dev, x, np.arange(len(x)), g)
        Hz = _z_hessian(Hx, gz, x, logged)
    steps = 0
    # far from the optimum the Hessian can be indefinite: its eigenvalues are then
    # replaced by their absolute values (floored), and the curvature is taken
    # afresh at the end, so that the convergence check sees the true Hessian
    modified = False
    try:
        np.linalg.cholesky(Hz)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(Hz)
        floor = 1e-2 * max(float(np.max(np.abs(lam))), 1e-300)
        Hz = (V * np.maximum(np.abs(lam), floor)) @ V.T
        modified = True

    while True:
        try:
            np.linalg.cholesky(Hz)
        except np.linalg.LinAlgError:
            return NewtonResult(x, f, Hx, steps, False)
        step = -np.linalg.solve(Hz, gz)
        size = np.where(logged, np.abs(step), np.abs(step) / np.maximum(np.abs(x), 1e-2))
        if np.max(size) < step_tol:
            if modified:  # the curvature here, not the one built from a modified start
                Hx = gradient_jacobian(dev, x, np.arange(len(x)), g)
                try:
                    np.linalg.cholesky(Hx)
                except np.linalg.LinAlgError:
                    return NewtonResult(x, f, Hx, steps, False)
            return NewtonResult(x, f, Hx, steps, True)
        if steps == max_steps:
            return NewtonResult(x, f, Hx, steps, False)
        step *= min(1.0, _MAX_Z_STEP / float(np.max(size)))  # no leaps from a bad model
        t, slope = 1.0, float(gz @ step)
        while True:
            xn = _z_move(x, t * step, logged)
            if np.any(xn[logged] < inside):
                return NewtonResult(x, f, Hx, steps, False)
            fn = dev(xn)
            if fn <= f + 1e-4 * t * slope + 1e-13 * max(1.0, abs(f)):
                break
            t *= 0.5
            if t < 1.0 / 16:
                return NewtonResult(x, f, Hx, steps, False)
        gn = dev.gradient(xn)
        gzn = _z_gradient(gn, xn, logged)
        s_ = xn - x
        s_[logged] = np.log(xn[logged] / x[logged])
        y_ = gzn - gz
        if float(s_ @ y_) > 0:  # BFGS: keep H positive definite and secant-exact along s
            Hs = Hz @ s_
            Hz = Hz - np.outer(Hs, Hs) / float(s_ @ Hs) + np.outer(y_, y_) / float(s_ @ y_)
        x, f, g, gz = xn, fn, gn, gzn
        Hx = _theta_hessian(Hz, gz, x, logged)
        steps += 1


# z = log theta on the logged entries, theta elsewhere; J = dtheta/dz = diag(x or 1):
# g_z = J g, H_z = J H J + diag(g_z on the logged entries)
def _z_move(x: np.ndarray, dz: np.ndarray, logged: np.ndarray) -> np.ndarray:
    """The point ``z(x) + dz`` in ``theta``."""
    return np.where(logged, x * np.exp(dz), x + dz)


def _z_gradient(g: np.ndarray, x: np.ndarray, logged: np.ndarray) -> np.ndarray:
    return g * np.where(logged, x, 1.0)


def _z_hessian(H: np.ndarray, gz: np.ndarray, x: np.ndarray,
               logged: np.ndarray) -> np.ndarray:
    jac = np.where(logged, x, 1.0)
    return jac[:, None] * H * jac[None, :] + np.diag(np.where(logged, gz, 0.0))


def _theta_hessian(Hz: np.ndarray, gz: np.ndarray, x: np.ndarray,
                   logged: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_z_hessian`: the same curvature in ``theta``."""
    jac = np.where(logged, x, 1.0)
    return (Hz - np.diag(np.where(logged, gz, 0.0))) / np.outer(jac, jac)


def _value_hessian(dev: ProfiledDeviance, x: np.ndarray, f: float, gz: np.ndarray,
                   logged: np.ndarray) -> np.ndarray:
    """Hessian in z (see :func:`newton_descent`) from values at ``z + h e_i`` and
    ``z + h e_i + h e_j`` and the analytic gradient ``gz`` at ``z``: a start for
    Newton's method, accurate to parts in 1e4 to 1e3 (BFGS refines it)."""
    k = len(x)
    h = np.where(logged, _VALUE_HESSIAN_STEP, _VALUE_HESSIAN_STEP * np.maximum(np.abs(x), 0.1))

    def at(dz: np.ndarray) -> float:
        return dev(_z_move(x, dz, logged))

    unit = np.eye(k) * h
    # the points that keep theta[0] (the first term's entry) first, then those that
    # move it: a crossed layout can start from the previous factor when only the later
    # terms change (likelihood/crossed_blocked.py), so each group costs one full pass
    points = [(i,) for i in range(k)] + [(i, j) for i in range(k) for j in range(i)]
    points.sort(key=lambda ij: 0 in ij)
    val = {ij: at(sum(unit[a] for a in ij)) for ij in points}
    H = np.empty((k, k))
    for i in range(k):
        H[i, i] = 2.0 * (val[(i,)] - f - h[i] * gz[i]) / h[i] ** 2
        for j in range(i):
            H[i, j] = H[j, i] = (val[(i, j)] - val[(i,)] - val[(j,)] + f) / (h[i] * h[j])
    return H


class _Run:
    """Local optimizer runs, escapes and polish on one objective (counted)."""

    def __init__(self, dev: ProfiledDeviance, bounds: list, method: str, tol: float,
                 maxiter: int, max_restarts: int) -> None:
        self.dev, self.bounds, self.method = dev, bounds, method
        self.tol, self.maxiter, self.max_restarts = tol, maxiter, max_restarts
        self.restarts = 0
        self.last = None

    def local(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        self.last = _local(self.dev, x, self.bounds, self.method, self.tol, self.maxiter)
        x = np.maximum(np.asarray(self.last.x, dtype=float), self.dev.layout.lower)
        return x, self.dev(x)

    def descend(self, x0: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """Local optimum from ``x0``, escapes from false boundaries and saddles,
        Newton polish: ``(theta, f, Hessian over the free entries)``."""
        dev = self.dev
        x, fx = self.local(x0)
        while True:
            while self.restarts < self.max_restarts:
                esc = cone_descent(dev, x, fx)
                if esc is None:
                    break
                self.restarts += 1
                x2, f2 = self.local(esc.theta)
                x, fx = (x2, f2) if f2 < fx - esc.gain else (esc.theta, fx - esc.gain)
            x = canonical_theta(dev, _snap_to_bounds(dev, x))
            x, hessian = newton_polish(dev, x)
            fx = dev(x)
            better = saddle_descent(dev, x, hessian, fx) \
                if self.restarts < self.max_restarts else None
            if better is None:
                return x, fx, hessian
            self.restarts += 1
            x, fx = self.local(better)


def _exact_polish(dev: ProfiledDeviance, theta: np.ndarray) -> np.ndarray:
    """Last digits of an interior optimum of a small design from the exact Hessian
    (:func:`~mixedanova.likelihood.varpar.exact_polish`): the finite-difference
    Hessian of :func:`newton_polish` is a few percent off where a relative SD is
    small (the analytic gradient divides by it), which leaves ``theta`` about
    1e-8 from the optimum along that direction.  Batch fits polish the same way."""
    if type(dev) is not ProfiledDeviance or dev.k != 1 or varpar_order(dev.cp) > DENSE_MAX:
        return theta
    if dev.pwrss_cancels(dev.system.factor(dev.layout.templates(theta))):
        return theta  # pwrss cancels in cross-products: so would the dense derivatives
    dense = DenseVarpar(dev.cp)
    if not interior(dense, theta)[0]:
        return theta
    return exact_polish(dense, theta, np.zeros(1, int), dev.reml, dev.dof,
                        lambda th, _c: np.array([dev(t) for t in th]))[0]


def mean_starts(dev: ProfiledDeviance, far: float = 2.0) -> list[np.ndarray]:
    """Extra starts when the fixed effects cannot carry the response's mean.

    Without a fixed intercept (``y ~ 0 + x + (x | a) + (1 | b)``) a mean ``far``
    or more of its SDs from 0 must be carried by a random intercept, and which
    one is a choice between basins: the local optimizer goes to the one its
    start leans to, which can be 28 criterion units above the other.  One start
    per term with an intercept column puts the mean on that term (its intercept's
    relative SD at ``|mean| / SD`` of the residuals from the fixed effects, the
    rest at ``dev.start``); the caller keeps the lowest optimum.  Empty when the
    fixed effects span the constant or the mean is near 0.
    """
    cp = dev.cp  # standardized: the response is the residual from the fixed effects
    p, n = cp.p, cp.n
    ones_of = [(k, int(np.flatnonzero(st.ones)[0])) for k, st in enumerate(cp.stats)
               if np.any(st.ones) and cp.terms[k].one_per_row]
    if len(ones_of) < 2 or n == 0:
        return []
    k1, j1 = ones_of[0]
    sums = cp.zxy[k1][:, :, j1].sum(axis=0)  # 1'[X r]: a column of ones sums the rows
    if p:
        xx = cp.xy[:p, :p]
        coef = np.linalg.lstsq(xx, sums[:p], rcond=None)[0]
        if n - float(sums[:p] @ coef) < 1e-10 * n:  # the fixed effects span the constant
            return []
    rbar = float(sums[p]) / n
    var = float(cp.xy[p, p]) / n - rbar * rbar
    sd = math.sqrt(var) if var > 0.0 else 0.0
    if not (sd > 0.0 and abs(rbar) > far * sd):
        return []
    big = abs(rbar) / sd
    layout, out = dev.layout, []
    for k, j in ones_of:
        q = cp.terms[k].q
        start = np.asarray(dev.start, dtype=float).copy()
        start[layout.offsets[k] + j * q - j * (j - 1) // 2] = big
        out.append(start)
    return out


def inflated_start(dev: ProfiledDeviance, theta: np.ndarray,
                   inflate: float = 0.01) -> np.ndarray | None:
    """A start just inside the cone when a vector term's covariance is singular.

    Each such ``Sigma_k`` gets ``inflate`` times the mean of its normalized
    variances added on the normalized diagonal.  The criterion is not convex in
    the covariance, and on the boundary a basin can end where a nearby rank-one
    covariance with another correlation is lower; a restart from here finds it
    where the first run's path missed it.  ``None`` when no vector term is singular.
    """
    layout = dev.layout
    out, changed = np.asarray(theta, dtype=float).copy(), False
    for k, T in enumerate(layout.templates(out)):
        if T.shape[0] == 1 or not near_singular(dev, k, T):
            continue
        d = dev.column_scales[k]
        S = T @ T.T
        sbar = max(float(np.mean(np.diag(S) * d**2)), 1e-8)
        out = layout.with_template(out, k, np.linalg.cholesky(S + inflate * sbar
                                                               * np.diag(1.0 / d**2)))
        changed = True
    return out if changed else None


def _local(dev: ProfiledDeviance, x: np.ndarray, bounds: list, method: str, tol: float,
           maxiter: int):
    """One run of the local optimizer from ``x``."""
    if method == "L-BFGS-B":  # relative reduction of f; asks for value and gradient together
        options = {"ftol": tol, "maxiter": maxiter, "gtol": 1e-8, "maxcor": 20}
        return minimize(dev.value_and_gradient, x, method=method, jac=True, bounds=bounds,
                        options=options)
    if method == "SLSQP":
        # SLSQP's first step is the plain negative gradient (its quasi-Newton matrix
        # starts as I), which on a criterion of size 1e5 jumps far out; scaling the
        # criterion so that this step moves theta by at most half its size avoids
        # those wasted evaluations.  ftol is absolute on the scaled criterion;
        # 1e-14 relative is about the objective's precision.  The line search
        # needs values only; the factor at x is reused for the gradient.
        g = np.max(np.abs(dev.gradient(x)))
        c = min(1.0, 0.5 * max(float(np.max(np.abs(x))), 0.1) / g) if g > 0 else 1.0
        options = {"ftol": 1e-2 * tol * c * max(1.0, abs(dev(x))), "maxiter": maxiter}
        res = minimize(lambda t: c * dev(t), x, method=method,
                       jac=lambda t: c * dev.gradient(t), bounds=bounds, options=options)
        res.fun = float(res.fun) / c
        return res
    return minimize(dev, x, method=method, bounds=bounds, options={"maxiter": maxiter})


def newton_polish(dev: ProfiledDeviance, x: np.ndarray,
                  max_iter: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Newton steps on the free entries of ``theta`` (see
    :func:`~mixedanova.likelihood.boundary.free_mask`).

    The Hessian is the central-difference Jacobian of the analytic gradient,
    formed once and kept for any later steps; one step usually suffices, since
    the quasi-Newton result is within about 1e-6 and the step's error is that
    times the Hessian's relative error.  A step is taken only where the Hessian
    is positive definite and only if it does not raise the objective beyond
    rounding.  The gradient is accurate where
    values are not (near the optimum the objective changes in its 13th digit),
    so this reaches ``theta`` to about 1e-10 where a value-based stopping rule
    leaves 1e-6.

    Returns
    -------
    theta, hessian
        The polished point and the Hessian over the free entries (``None`` when
        no entry is free), for the convergence check to reuse.
    """
    idx = np.flatnonzero(free_mask(dev, x))
    if len(idx) == 0:
        return x, None
    lower = dev.layout.lower
    fx = dev(x)
    g = dev.gradient(x)[idx]
    H = gradient_jacobian(dev, x, idx, g)
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return x, H
    for it in range(max_iter):
        if it:
            g = dev.gradient(x)[idx]
        step = -np.linalg.solve(H, g)
        xn = x.copy()
        xn[idx] += step
        xn = np.maximum(xn, lower)
        fn = dev(xn)
        if not fn <= fx + 1e-13 * max(1.0, abs(fx)):
            break
        x, fx = xn, fn
        if np.max(np.abs(step) / np.maximum(np.abs(x[idx]), 1e-2)) < 1e-9:
            break
    return x, H


def saddle_descent(dev: ProfiledDeviance, x: np.ndarray, hessian: np.ndarray | None,
                   fx: float) -> np.ndarray | None:
    """A lower point along a direction of negative curvature, or ``None``.

    Where the Hessian over the free entries has a negative eigenvalue the point
    is a saddle, not a minimum: steps of several sizes along that eigenvector,
    both ways, are tried, and the best one that lowers the criterion by more
    than ``1e-10`` relative is returned for the local optimizer to restart from.
    """
    if hessian is None:
        return None
    idx = np.flatnonzero(free_mask(dev, x))
    if hessian.shape != (len(idx), len(idx)):
        return None
    lam, V = np.linalg.eigh(hessian)
    if not lam[0] < 0:
        return None
    lower = dev.layout.lower
    scale = np.maximum(np.abs(x[idx]), 1e-2)
    best, fbest = None, fx - 1e-10 * max(1.0, abs(fx))
    for i in np.flatnonzero(lam < 0):
        v = V[:, i] * scale / np.max(np.abs(V[:, i] * scale))
        for t in (1e-3, 1e-2, 1e-1, 0.5):
            for sign in (1.0, -1.0):
                cand = x.copy()
                cand[idx] += sign * t * v
                cand = np.maximum(cand, lower)
                fc = dev(cand)
                if fc < fbest:
                    best, fbest = cand, fc
    return best


def _snap_to_bounds(dev: ProfiledDeviance, x: np.ndarray, tiny: float = 1e-6) -> np.ndarray:
    """Put template diagonals within ``tiny`` of 0 exactly on the bound when that
    does not raise the objective (a variance of 1e-14 is a variance of 0)."""
    near = np.flatnonzero((dev.layout.lower == 0.0) & (x > 0.0) & (x < tiny))
    if len(near) == 0:
        return x
    snapped = x.copy()
    snapped[near] = 0.0
    fx, fs = dev(x), dev(snapped)
    return snapped if fs <= fx + 1e-12 * (1.0 + abs(fx)) else x
