"""The end of the Laplace fit with the analytic gradient: Newton steps with a
Hessian from differences of the gradient (:func:`newton_grad`) and the checks of
the optimum that do not read the gradient (:func:`value_slope_gain`,
:func:`difference_check`).

The Hessian behind the standard errors is central: forward differences of the
gradient at the point where it was taken, then backward ones at the same point.
The values at those ``2k`` points are central differences of the value along
each free coordinate, the slope of ``-2 log L`` found without the analytic
gradient: carried to the final point by the Hessian, they say whether the value
would still fall there (:func:`value_slope_gain`).  Where the decrease they
predict is not far below the check's tolerance (``SLOPE_GAIN``), central
differences of the value along two fixed directions at the final point decide
(:func:`difference_check`, four more evaluations, with steps shortened in stiff
directions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .optimum import DECREMENT_TOL

__all__ = ["NewtonResult", "newton_grad", "difference_check", "value_slope_gain",
           "CHECK_GAIN", "SLOPE_GAIN", "CHORD_STEP"]

# the largest decrease of -2 log L that central differences of the value may
# predict at an optimum found with the analytic gradient (see difference_check)
CHECK_GAIN = 1e-7
# the value's slope from the Hessian's points settles the check only far below
# CHECK_GAIN: its steps are not shortened in stiff directions (huge counts), where
# its rounding can approach CHECK_GAIN; above this, difference_check decides
SLOPE_GAIN = 1e-9
CHORD_STEP = 1e-4  # largest Newton step after which the Hessian is not retaken
_CHECK_SEED = 20261202  # the two fixed directions of the checks


@dataclass
class NewtonResult:
    """Where :func:`newton_grad` stopped.

    Attributes
    ----------
    x : numpy.ndarray
        The working coordinates reached.
    value : float
    gradient : numpy.ndarray
        The analytic gradient at ``x`` (all coordinates).
    hessian : numpy.ndarray
        Over the free coordinates (central differences when converged).
    free : numpy.ndarray
        Coordinates not held on their bound.
    decrement : float
        The Newton decrement of the last Hessian.
    converged : bool
    value_slope : numpy.ndarray or None
        The slope of the value at ``x`` over the free coordinates from central
        differences of the value at the Hessian's points (carried from where the
        Hessian was taken by the Hessian); None when not available.
    """

    x: np.ndarray
    value: float
    gradient: np.ndarray
    hessian: np.ndarray
    free: np.ndarray
    decrement: float
    converged: bool
    value_slope: np.ndarray | None = None


def _directions(k: int) -> list[np.ndarray]:
    """The two fixed pseudo-random unit directions of the checks."""
    rng = np.random.default_rng(_CHECK_SEED)
    out = []
    for _ in range(2):
        v = rng.standard_normal(k)
        out.append(v / np.linalg.norm(v))
    return out


def value_slope_gain(slope: np.ndarray, H: np.ndarray) -> float:
    """The largest decrease ``(v's)^2 / (2 v'Hv)`` that the value's slope ``s``
    (central differences of the value) predicts along the two fixed directions
    ``v`` of :func:`difference_check` (``inf`` where the curvature is not
    positive or the slope not finite)."""
    if slope.size == 0:
        return 0.0
    if not np.all(np.isfinite(slope)):
        return math.inf
    worst = 0.0
    for v in _directions(slope.size):
        curv = float(v @ H @ v)
        if not curv > 0:
            return math.inf
        s = float(v @ slope)
        worst = max(worst, s * s / (2.0 * curv))
    return worst


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
    worst = 0.0
    for v in _directions(idx.size):
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


def _centered(fg_raw: Callable, x: np.ndarray, g: np.ndarray, f_fwd: np.ndarray,
              H: np.ndarray, idx: np.ndarray, h: float
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """The mean of the forward-difference Hessian ``H`` of the gradient at ``x``
    and the backward one there (``g`` the gradient at ``x``), and the central
    differences of the value along the free coordinates (``f_fwd`` the values at
    the forward points); ``(H, None)`` where a backward point does not evaluate."""
    Hb = np.empty_like(H)
    f_bwd = np.empty(len(idx))
    for j, i in enumerate(idx):
        e = np.zeros(len(x))
        e[i] = h
        fm, gm = fg_raw(x - e)
        if not np.all(np.isfinite(gm[idx])):
            return H, None
        Hb[:, j] = (g[idx] - gm[idx]) / h
        f_bwd[j] = fm
    slope = (f_fwd - f_bwd) / (2.0 * h)
    return 0.5 * (H + 0.5 * (Hb + Hb.T)), slope if np.all(np.isfinite(slope)) else None


def _newton_step(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``-H^{-1} g``, ``H`` made positive definite (absolute eigenvalues) if need be."""
    try:
        c = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(H)
        c = np.linalg.cholesky(V @ np.diag(np.maximum(np.abs(w), 1e-8)) @ V.T)
    return -np.linalg.solve(c.T, np.linalg.solve(c, g))


def newton_grad(fg: Callable, fg_raw: Callable, x: np.ndarray, lower: np.ndarray,
                max_steps: int = 30, h: float = 1e-4) -> NewtonResult:
    """Newton steps on the free parameters with the Hessian from forward
    differences of the analytic gradient (``fg_raw`` ignores the bounds, so that a
    difference may straddle one).  A parameter on its bound whose slope does not
    point inside is held there.  Converged: the Newton decrement is below
    ``max(1e-10, 1e-12 |f|)`` (or, when no step gains any more, below
    ``1e-8 max(1, |f|)``: the rounding level).  After a step below
    ``CHORD_STEP`` the Hessian is reused once to check the decrement there, and
    the last Newton step (below the decrement tolerance) is taken as well.  The
    Hessian returned there (the one the standard errors come from) is made
    central by backward differences at the point where it was taken, whose values
    give the slope of the value (:class:`NewtonResult`)."""
    f0, g = fg(x)
    dec = math.inf
    tol = max(DECREMENT_TOL, 1e-12 * abs(f0))
    H = np.full((len(x), len(x)), np.nan)
    free = np.ones(len(x), bool)
    reuse = False
    x_h = g_h = f_fwd = idx = None
    for _ in range(max_steps):
        if not (np.isfinite(f0) and np.all(np.isfinite(g))):
            return NewtonResult(x, f0, g, H, free, math.inf, False)
        free_new = ~((x - lower < 1e-8) & (g > -1e-6 * max(1.0, abs(f0))))
        # after a tiny step from where the Hessian was taken (at most CHORD_STEP in
        # the working units) that Hessian serves once more: it checks the decrement
        # there with one gradient instead of len(x) more
        if not (reuse and np.array_equal(free_new, free)):
            free = free_new
            idx = np.flatnonzero(free)
            H = np.empty((len(idx), len(idx)))
            f_fwd = np.empty(len(idx))
            for j, i in enumerate(idx):
                e = np.zeros(len(x))
                e[i] = h
                fp, gp = fg_raw(x + e)
                H[:, j] = (gp[idx] - g[idx]) / h
                f_fwd[j] = fp
            H = 0.5 * (H + H.T)
            x_h, g_h = x.copy(), g
            fresh = True
        else:
            fresh = False
        if not np.all(np.isfinite(H)):
            return NewtonResult(x, f0, g, np.where(np.isfinite(H), H, np.nan), free,
                                math.inf, False)
        step = _newton_step(H, g[idx])
        dec = 0.5 * float(-g[idx] @ step)
        if dec < tol:
            # the standard errors come from this Hessian: backward differences where
            # it was taken, so that it is central (error O(h^2), not the forward O(h))
            H, slope = _centered(fg_raw, x_h, g_h, f_fwd, H, idx, h)
            # the last (tiny) Newton step as well: both fits of one problem then
            # end at the optimum to its square, not anywhere within the decrement
            xn = x.copy()
            xn[idx] += step
            xn = np.maximum(xn, lower)
            fn, gn = fg(xn)
            if np.isfinite(fn) and np.all(np.isfinite(gn)) and \
                    fn <= f0 + DECREMENT_TOL * max(1.0, abs(f0)):
                x, f0, g = xn, fn, gn
            if slope is not None:  # the value's slope carried to x
                slope = slope + H @ (x - x_h)[idx]
            return NewtonResult(x, f0, g, H, free, dec, True, slope)
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
            return NewtonResult(x, f0, g, H, free, dec, dec < 1e-8 * max(1.0, abs(f0)))
    return NewtonResult(x, f0, g, H, free, dec, False)
