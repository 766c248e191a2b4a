"""The Laplace fit with the analytic gradient (:func:`fit_laplace`): a start from
the joint modes at a few sizes of ``theta`` (:func:`coarse_start`; the ``u``-only
modes with the GLM's ``beta`` for large designs, :func:`glm_start`), BFGS seeded
with a difference Hessian of the gradient of :mod:`~mixedanova.glmm.gradient`
(:func:`~mixedanova.glmm.quasi_newton.seeded_bfgs`; L-BFGS-B where a bound is in
its way or it cannot make progress), Newton steps with a Hessian
from differences of the gradient, and an independent check of the optimum by
central differences of the value (:mod:`mixedanova.glmm.polish`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize

from ..errors import FitError
from ..likelihood.blocked import NotPositiveDefinite
from .gradient import LaplaceGradient
from .laplace import LaplaceObjective, PirlsState
from .optimum import START_MULTIPLIERS, GlmmFit, Whitened
from .polish import (CHECK_GAIN, SLOPE_GAIN, NewtonResult, difference_check, newton_grad,
                     value_slope_gain)
from .quasi_newton import seeded_bfgs

__all__ = ["DenseOrder", "fit_laplace", "coarse_start", "glm_start"]

# the joint modes of the coarse start are compared and then refined by the search:
# converged to this relative step of the linear predictor (values to about its square)
START_TOL = 1e-6
COMPARE_TOL = 1e-3  # the other sizes of the coarse start, only compared


@dataclass(frozen=True)
class DenseOrder:
    """Order of the dense algebra of a fit (what the BLAS thread limit reads)."""

    r: int


def coarse_start(obj: LaplaceObjective, start_theta: np.ndarray, scale: np.ndarray
                  ) -> PirlsState:
    """The joint modes of ``(beta, u)`` at multiples of the starting ``theta``:
    the best (huge counts want a tiny theta) starts the gradient search.  The
    first size is converged to ``START_TOL``; the others, only compared, to
    ``COMPARE_TOL`` (their values to about its square), and the winner, if one of
    them, then to ``START_TOL``."""
    best = None
    best_c = 1.0

    def at(c):
        nonlocal best, best_c
        # from the best modes so far, scaled to the same b = Lambda u
        u0 = None if best is None else best.u * (best_c / c)
        try:
            st = obj.pirls(c * start_theta, best.beta if best is not None else None,
                           u0=u0, joint=True,
                           joint_tol=START_TOL if best is None else COMPARE_TOL)
        except FitError:
            return math.inf
        if best is None or st.value < best.value:
            best, best_c = st, c
        return st.value

    # down the sizes while the value falls; up (3) only when the first step down rose
    prev = at(START_MULTIPLIERS[0])
    for i, c in enumerate(START_MULTIPLIERS[1:-1], start=1):
        v = at(c)
        if np.isfinite(prev) and v > prev:
            if i == 1:
                at(START_MULTIPLIERS[-1])
            break
        prev = v
    if best is None:
        raise FitError("PIRLS failed at the starting values")
    if best_c != START_MULTIPLIERS[0]:
        try:
            best = obj.pirls(best.theta, best.beta, u0=best.u, joint=True,
                             joint_tol=START_TOL)
        except FitError:
            pass  # the compared modes still start the search
    return best


def glm_start(obj: LaplaceObjective, start_theta: np.ndarray
               ) -> tuple[PirlsState, np.ndarray]:
    """The best of the ``u``-only modes at multiples of the starting ``theta``
    with ``beta`` from the GLM start, and the factor ``R_X'`` of ``X'WX`` there
    (the whitening of ``beta``): for designs too large for the joint system."""
    beta = obj.start_beta()
    best = None
    for c in START_MULTIPLIERS:
        try:
            st = obj.pirls(c * start_theta, beta)
        except FitError:
            continue
        if best is None or st.value < best.value:
            best = st
        elif c < 1.0:
            break
    if best is None:
        raise FitError("PIRLS failed at the starting values")
    X = obj.data.X
    if not X.shape[1]:
        return best, np.zeros((0, 0))
    return best, np.linalg.cholesky(X.T @ (best.weights[:, None] * X))


def fit_laplace(obj: LaplaceObjective, grad: LaplaceGradient, theta0: np.ndarray,
                 scale: np.ndarray, warm: GlmmFit | None = None) -> GlmmFit:
    """Laplace fit with the analytic gradient: seeded BFGS (L-BFGS-B where it
    gives up) from the best joint-mode start, then Newton steps with a Hessian
    from forward differences of the gradient until the Newton decrement is below
    ``1e-10`` (the last Hessian, behind ``vcov``, made central).  ``warm``: a converged fit of a nearby problem (another NB shape):
    the joint modes at its ``theta`` (from its modes) replace the search over
    sizes of ``theta``."""
    layout = obj.data.layout
    p = obj.data.p
    s1 = None
    if warm is not None and warm.converged and not getattr(grad, "large", False):
        try:
            s1 = obj.pirls(warm.theta, warm.beta, u0=warm.state.u, joint=True)
        except FitError:
            s1 = None
    if s1 is not None:
        rx = np.asarray(s1.factor.rx()) if p else np.zeros((0, 0))
    elif not getattr(grad, "large", False):
        s1 = coarse_start(obj, theta0, scale)
        rx = np.asarray(s1.factor.rx()) if p else np.zeros((0, 0))
    else:  # large: modes of u alone at the GLM's beta (no engine system of the rows)
        s1, rx = glm_start(obj, theta0)
    A = solve_triangular(rx.T, np.eye(p), lower=False) if p else np.zeros((0, 0))
    wt = Whitened(scale, s1.beta.copy(), A)
    J = wt.jacobian()
    lower = np.concatenate([layout.lower, np.full(p, -np.inf)])
    k = len(lower)

    memo: dict = {}  # the last few points (the optimizer and the polish revisit them)

    def fg_raw(x):
        key = np.asarray(x, dtype=float).tobytes()
        hit = memo.get(key)
        if hit is not None:
            return hit[0], hit[1].copy()
        theta, beta = wt.split(x)
        try:
            u0 = grad.predict_modes(theta, beta)
            # before any gradient: the start's joint modes (not the last multiple's)
            st = obj.pirls(theta, beta, u0=s1.u if u0 is None else u0)
            g = grad(st)
        except (FitError, NotPositiveDefinite):  # the latter: not a minimum in u
            return math.inf, np.full(k, np.nan)
        out = (st.value, J.T @ g, st.u)
        if len(memo) >= 64:
            memo.pop(next(iter(memo)))
        memo[key] = out
        return out[0], out[1].copy()

    def value_raw(x):
        # the value alone (the difference check reads no gradient)
        hit = memo.get(np.asarray(x, dtype=float).tobytes())
        if hit is not None:
            return hit[0], None
        theta, beta = wt.split(x)
        try:
            u0 = grad.predict_modes(theta, beta)
            return obj.pirls(theta, beta, u0=s1.u if u0 is None else u0).value, None
        except (FitError, NotPositiveDefinite):
            return math.inf, None

    def fg(x):
        if np.any(x < lower):
            return math.inf, np.full(k, np.nan)
        return fg_raw(x)

    def lbfgs_fg(x):
        f, g = fg(np.maximum(x, lower))
        if not np.isfinite(f):
            return 1e300, np.zeros(k)
        return f, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def run(x) -> NewtonResult:
        xq, done = seeded_bfgs(fg, fg_raw, x, lower, layout.size)
        if done:
            out = newton_grad(fg, fg_raw, xq, lower)
            if out.converged:
                return out
        out = lbfgs(x)
        if not out.converged and fg(xq)[0] < fg(x)[0]:
            # L-BFGS-B can fail from the start (PIRLS failing at its first, long
            # step, as a Gamma inverse link's): again from where BFGS stopped
            alt = lbfgs(xq)
            if alt.converged or alt.value < out.value:
                out = alt
        return out

    def lbfgs(x) -> NewtonResult:
        res = minimize(lbfgs_fg, x, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-11, "gtol": 1e-6, "maxiter": 1000})
        xr = np.maximum(res.x, lower)
        if not fg(xr)[0] <= fg(x)[0]:
            xr = x
        return newton_grad(fg, fg_raw, xr, lower)

    x = wt.to_x(s1.theta, s1.beta)
    out = run(x)
    # a template diagonal at 0 is a stationary point in that entry: restart off it
    # (from 1, 0.1 and 10 working units, and from any smaller size that is already
    # lower: huge counts can want a tiny theta)
    diag = np.flatnonzero(layout.diagonal_mask())
    near = diag[out.x[diag] < 1e-3]
    if len(near):
        for v in (1.0, 0.1, 10.0, 0.01, 0.001, 1e-4):
            x1 = out.x.copy()
            x1[near] = v
            f1 = fg(x1)[0]
            if not np.isfinite(f1) or (v < 0.1 and f1 >= out.value):
                continue
            cand = run(x1)
            if cand.value < out.value - 1e-9 * max(1.0, abs(out.value)):
                out = cand
    x, f0, g, H, free, dec, ok = (out.x, out.value, out.gradient, out.hessian, out.free,
                                  out.decrement, out.converged)
    messages: list[str] = []
    if not ok:
        messages.append(f"the Newton polish stopped with decrement {dec:.3g} (not at the "
                        "rounding level): the optimum is not certain")
    else:
        # the value's slope from the Hessian's points (no evaluation); where it is
        # not conclusive, central differences of the value at x decide
        gain = math.inf if out.value_slope is None else value_slope_gain(out.value_slope, H)
        if not gain <= SLOPE_GAIN:
            gain = difference_check(value_raw, x, H, free)
        if not gain <= CHECK_GAIN:
            ok = False
            messages.append(f"central differences of the value predict a further decrease "
                            f"of {gain:.3g} where the analytic gradient says none: the "
                            "optimum is not certain")
    theta, beta = wt.split(x)
    fast, obj.fast = obj.fast, None  # the engine's factor at the estimates (results use it)
    hit = memo.get(np.asarray(x, dtype=float).tobytes())
    st = obj.pirls(theta, beta, u0=None if hit is None else hit[2])
    obj.fast = fast
    vcov = np.full((p, p), np.nan)
    Hn = np.full((k, k), np.nan)
    Jf = J[np.ix_(free, free)]
    try:
        Jinv = np.linalg.inv(Jf)
        Hn[np.ix_(free, free)] = Jinv.T @ H @ Jinv
        cov = Jf @ np.linalg.inv(H) @ Jf.T * 2.0
        nth = int(np.sum(free[:layout.size]))
        if np.all(free[layout.size:]):
            vcov = cov[nth:, nth:]
    except np.linalg.LinAlgError:
        messages.append("the Hessian is singular")
    grad_nat = np.linalg.solve(J.T, g)
    return GlmmFit(theta=theta, beta=beta, value=float(f0), state=st, hessian=Hn, free=free,
                   vcov_beta=vcov, gradient=grad_nat, newton_decrement=float(dec),
                   converged=bool(ok), messages=messages, stage1_theta=s1.theta,
                   stage1_beta=s1.beta, nevals=obj.nevals)
