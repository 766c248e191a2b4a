"""The Laplace fit with the analytic gradient (:func:`fit_laplace`): a start from
the joint modes at a few sizes of ``theta`` (:func:`coarse_start`; the ``u``-only
modes with the GLM's ``beta`` for large designs, :func:`glm_start`), BFGS seeded
with a difference Hessian of the gradient of :mod:`~mixedanova.glmm.gradient`
(:func:`~mixedanova.glmm.quasi_newton.seeded_bfgs`; L-BFGS-B where a bound is in
its way or it cannot make progress), Newton steps with a Hessian
from differences of the gradient (:func:`newton_grad`), and an independent check
of the optimum by central differences of the value (:func:`difference_check`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize

from ..errors import FitError
from ..likelihood.blocked import NotPositiveDefinite
from .gradient import LaplaceGradient
from .laplace import LaplaceObjective, PirlsState
from .quasi_newton import seeded_bfgs
from .optimum import DECREMENT_TOL, START_MULTIPLIERS, GlmmFit, Whitened

__all__ = ["DenseOrder", "fit_laplace", "coarse_start", "glm_start", "difference_check",
           "newton_grad"]

# the largest decrease of -2 log L that central differences of the value may
# predict at an optimum found with the analytic gradient (see difference_check)
CHECK_GAIN = 1e-7
CHORD_STEP = 1e-4  # largest Newton step after which the Hessian is not retaken
# the joint modes of the coarse start are compared and then refined by the search:
# converged to this relative step of the linear predictor (values to about its square)
START_TOL = 1e-6


@dataclass(frozen=True)
class DenseOrder:
    """Order of the dense algebra of a fit (what the BLAS thread limit reads)."""

    r: int


def coarse_start(obj: LaplaceObjective, start_theta: np.ndarray, scale: np.ndarray
                  ) -> PirlsState:
    """The joint modes of ``(beta, u)`` at multiples of the starting ``theta``:
    the best (huge counts want a tiny theta) starts the gradient search."""
    best = None
    best_c = 1.0

    def at(c):
        nonlocal best, best_c
        # from the best modes so far, scaled to the same b = Lambda u
        u0 = None if best is None else best.u * (best_c / c)
        try:
            st = obj.pirls(c * start_theta, best.beta if best is not None else None,
                           u0=u0, joint=True, joint_tol=START_TOL)
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

    def run(x):
        xq, done = seeded_bfgs(fg, fg_raw, x, lower, layout.size)
        if done:
            out = newton_grad(fg, fg_raw, xq, lower)
            if out[-1]:
                return out
        out = lbfgs(x)
        if not out[-1] and fg(xq)[0] < fg(x)[0]:
            # L-BFGS-B can fail from the start (PIRLS failing at its first, long
            # step, as a Gamma inverse link's): again from where BFGS stopped
            alt = lbfgs(xq)
            if alt[-1] or alt[1] < out[1]:
                out = alt
        return out

    def lbfgs(x):
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
    near = diag[out[0][diag] < 1e-3]
    if len(near):
        for v in (1.0, 0.1, 10.0, 0.01, 0.001, 1e-4):
            x1 = out[0].copy()
            x1[near] = v
            f1 = fg(x1)[0]
            if not np.isfinite(f1) or (v < 0.1 and f1 >= out[1]):
                continue
            cand = run(x1)
            if cand[1] < out[1] - 1e-9 * max(1.0, abs(out[1])):
                out = cand
    x, f0, g, H, free, dec, ok = out
    messages: list[str] = []
    if not ok:
        messages.append(f"the Newton polish stopped with decrement {dec:.3g} (not at the "
                        "rounding level): the optimum is not certain")
    else:
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


def difference_check(value_raw: Callable, x: np.ndarray, H: np.ndarray, free: np.ndarray,
                      h: float = 1e-4) -> float:
    """An independent check of the analytic optimum: central differences of the
    value along two fixed pseudo-random directions ``d`` of the free parameters;
    returns the largest decrease ``slope^2 / (2 d'Hd)`` they predict (rounding
    level, about 1e-15, at a true optimum; ``inf`` where a value is not finite or
    the curvature is not positive).  ``value_raw(x)`` returns ``(value, _)``."""
    idx = np.flatnonzero(free)
    if idx.size == 0 or H.shape != (idx.size, idx.size):
        return 0.0
    rng = np.random.default_rng(20261202)
    worst = 0.0
    for _ in range(2):
        v = rng.standard_normal(idx.size)
        v /= np.linalg.norm(v)
        d = np.zeros(len(x))
        d[idx] = v
        curv = float(v @ H @ v)
        if not curv > 0:
            return math.inf
        # a stiff direction (a tiny theta) takes a shorter step: curv h^2 <= h0^2
        hd = h / math.sqrt(max(1.0, curv))
        fp, fm = value_raw(x + hd * d)[0], value_raw(x - hd * d)[0]
        if not (np.isfinite(fp) and np.isfinite(fm)):
            return math.inf
        slope = (fp - fm) / (2.0 * hd)
        worst = max(worst, slope * slope / (2.0 * curv))
    return worst


def _centered(fg_raw: Callable, x: np.ndarray, g: np.ndarray, H: np.ndarray,
              idx: np.ndarray, h: float) -> np.ndarray:
    """The mean of the forward-difference Hessian ``H`` of the gradient and the
    backward one at ``x`` (``g`` the gradient there); ``H`` unchanged where a
    backward point does not evaluate."""
    Hb = np.empty_like(H)
    for j, i in enumerate(idx):
        e = np.zeros(len(x))
        e[i] = h
        gm = fg_raw(x - e)[1]
        if not np.all(np.isfinite(gm[idx])):
            return H
        Hb[:, j] = (g[idx] - gm[idx]) / h
    return 0.5 * (H + 0.5 * (Hb + Hb.T))


def newton_grad(fg: Callable, fg_raw: Callable, x: np.ndarray, lower: np.ndarray,
                 max_steps: int = 30, h: float = 1e-4):
    """Newton steps on the free parameters with the Hessian from forward
    differences of the analytic gradient (``fg_raw`` ignores the bounds, so that a
    difference may straddle one).  Stops as :func:`_newton`; after a step below
    ``CHORD_STEP`` the Hessian is reused once to check the decrement there, and
    the last Newton step (below the decrement tolerance) is taken as well.  The
    Hessian returned there (the one the standard errors come from) is made
    central by backward differences (:func:`_centered`)."""
    f0, g = fg(x)
    dec = math.inf
    tol = max(DECREMENT_TOL, 1e-12 * abs(f0))
    H = np.full((len(x), len(x)), np.nan)
    free = np.ones(len(x), bool)
    reuse = False
    for _ in range(max_steps):
        if not (np.isfinite(f0) and np.all(np.isfinite(g))):
            return x, f0, g, H, free, math.inf, False
        free_new = ~((x - lower < 1e-8) & (g > -1e-6 * max(1.0, abs(f0))))
        # after a tiny step from where the Hessian was taken (at most CHORD_STEP in
        # the working units) that Hessian serves once more: it checks the decrement
        # there with one gradient instead of len(x) more
        if not (reuse and np.array_equal(free_new, free)):
            free = free_new
            idx = np.flatnonzero(free)
            H = np.empty((len(idx), len(idx)))
            for j, i in enumerate(idx):
                e = np.zeros(len(x))
                e[i] = h
                H[:, j] = (fg_raw(x + e)[1][idx] - g[idx]) / h
            H = 0.5 * (H + H.T)
            fresh = True
        else:
            fresh = False
        if not np.all(np.isfinite(H)):
            return x, f0, g, np.where(np.isfinite(H), H, np.nan), free, math.inf, False
        try:
            c = np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            w, V = np.linalg.eigh(H)
            c = np.linalg.cholesky(V @ np.diag(np.maximum(np.abs(w), 1e-8)) @ V.T)
        step = -np.linalg.solve(c.T, np.linalg.solve(c, g[idx]))
        dec = 0.5 * float(-g[idx] @ step)
        if dec < tol:
            # the standard errors come from this Hessian: backward differences here
            # too, so that it is central (error O(h^2), not the forward O(h))
            H = _centered(fg_raw, x, g, H, idx, h)
            # the last (tiny) Newton step as well: both fits of one problem then
            # end at the optimum to its square, not anywhere within the decrement
            xn = x.copy()
            xn[idx] += step
            xn = np.maximum(xn, lower)
            fn, gn = fg(xn)
            if np.isfinite(fn) and np.all(np.isfinite(gn)) and \
                    fn <= f0 + DECREMENT_TOL * max(1.0, abs(f0)):
                x, f0, g = xn, fn, gn
            return x, f0, g, H, free, dec, True
        t = 1.0
        moved = False
        for _ in range(30):
            xn = x.copy()
            xn[idx] += t * step
            xn = np.maximum(xn, lower)
            fn, gn = fg(xn)
            if fn < f0:
                reuse = fresh and float(np.max(np.abs(xn - x))) <= CHORD_STEP
                x, f0, g, moved = xn, fn, gn, True
                break
            t *= 0.5
        if not moved:
            return x, f0, g, H, free, dec, dec < 1e-8 * max(1.0, abs(f0))
    return x, f0, g, H, free, dec, False
