"""Quasi-Newton minimization that carries its curvature from one call to the next.

A profile (:mod:`mixedanova.inference.intervals`) minimizes the deviance over
the other parameters at a few dozen values of one parameter, each started from
the optimum at a nearby value.  The curvature there hardly changes from one
value to the next, so a Newton step with the previous call's Hessian lands
within rounding of the optimum in two or three steps, where L-BFGS-B, which
starts every call from the identity, needs seven or so (each costing a value
and a central-difference gradient).  The Hessian is BFGS-updated along the way
and returned for the next call.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["central_gradient", "warm_newton"]


def central_gradient(fun: Callable[[np.ndarray], float], x: np.ndarray, lower: np.ndarray,
                     upper: np.ndarray) -> np.ndarray:
    """Central differences (one-sided at a bound), steps ``1e-7 max(1, |x_i|)``."""
    g = np.empty_like(x)
    for i in range(x.size):
        h = 1e-7 * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] = min(x[i] + h, upper[i])
        xm[i] = max(x[i] - h, lower[i])
        g[i] = (fun(xp) - fun(xm)) / (xp[i] - xm[i])
    return g


def warm_newton(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray,
                upper: np.ndarray, hessian: np.ndarray, *, max_steps: int = 12,
                step_tol: float = 1e-9) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Newton steps from ``x0`` with a given starting ``hessian`` (BFGS-updated).

    Returns ``(x, f, hessian)`` once a step moves every entry by less than
    ``step_tol`` (relative to ``max(1, |x_i|)``), or ``None`` -- the caller then
    uses a bounded method -- when a step would leave the box or touch a bound,
    the Hessian is not positive definite, a backtracking line search fails or the
    steps run out.
    """
    x = np.asarray(x0, dtype=float).copy()
    if np.any(x <= lower) or np.any(x >= upper):
        return None
    H = np.array(hessian, dtype=float)
    f = fun(x)
    if not math.isfinite(f):
        return None
    g = central_gradient(fun, x, lower, upper)
    for _ in range(max_steps):
        try:
            step = -np.linalg.solve(H, g)
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            return None
        if (np.max(np.abs(step) / np.maximum(1.0, np.abs(x))) < step_tol
                or -0.5 * float(g @ step) < 1e-13 * max(1.0, abs(f))):
            return x, f, H
        t = 1.0
        while True:
            xn = x + t * step
            if np.any(xn <= lower) or np.any(xn >= upper):
                return None
            fn = fun(xn)
            if fn <= f + 1e-4 * t * float(g @ step) + 1e-14 * abs(f):
                break
            t *= 0.5
            if t < 1.0 / 16:
                return None
        gn = central_gradient(fun, xn, lower, upper)
        s, y = xn - x, gn - g
        if float(s @ y) > 0:
            Hs = H @ s
            H = H - np.outer(Hs, Hs) / float(s @ Hs) + np.outer(y, y) / float(s @ y)
        x, f, g = xn, fn, gn
    return None
