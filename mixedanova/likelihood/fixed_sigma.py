"""Fits with the residual scale held at a given value (``fixed={"sigma": s}``).

With prior weights ``w_i`` and ``sigma`` fixed, ``Var(e_i) = sigma^2 / w_i`` is
known: a random-effects meta-analysis (metafor's ``rma(yi, vi)``) is
``yi ~ 1 + (1 | study)`` with ``weights = 1 / vi`` and ``sigma = 1``.  The
criterion is :meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.at_sigma`
(the REML criterion or ML deviance with ``sigma`` given instead of profiled),
minimized over ``theta`` (then ``Lambda = sigma * theta`` templates are the
random-effect SDs in ``sigma`` units: with ``sigma = 1`` they are the SDs
themselves): bounded L-BFGS-B with central-difference gradients, then Newton
steps on a central-difference Hessian, each kept only when it lowers the
criterion.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from scipy.optimize import minimize

from .criterion import ProfiledDeviance, state_at
from .state import ConvergenceReport, FitState, OptimizerSummary

__all__ = ["fit_fixed_sigma"]


def _grad_hess(f, x: np.ndarray, lower: np.ndarray, h: float = 1e-4):
    k = len(x)
    f0 = f(x)
    g, H = np.empty(k), np.empty((k, k))
    steps = h * np.maximum(np.abs(x), 0.1)
    pts = {}

    def at(d):
        key = tuple(d)
        if key not in pts:
            pts[key] = f(x + np.asarray(d, dtype=float) * steps)
        return pts[key]

    for i in range(k):
        e = np.zeros(k)
        e[i] = 1.0
        fp, fm = at(e), at(-e)
        g[i] = (fp - fm) / (2 * steps[i])
        H[i, i] = (fp - 2 * f0 + fm) / steps[i] ** 2
        for j in range(i):
            e2 = np.zeros(k)
            e2[i] = e2[j] = 1.0
            d = np.zeros(k)
            d[i], d[j] = 1.0, -1.0
            H[i, j] = H[j, i] = (at(e2) - at(d) - at(-d) + at(-e2)) / (4 * steps[i] * steps[j])
    return f0, g, H


def fit_fixed_sigma(dev: ProfiledDeviance, sigma: float, start: np.ndarray | None = None
                    ) -> FitState:
    """REML / ML fit over ``theta`` with ``sigma`` held at ``sigma``."""
    t0 = time.perf_counter()
    lower = np.asarray(dev.layout.lower, dtype=float)
    x0 = np.asarray(dev.start if start is None else start, dtype=float)
    count = [0]

    def f(theta: np.ndarray) -> float:
        count[0] += 1
        theta = np.maximum(theta, lower)
        try:
            v = dev.at_sigma(theta, sigma)
        except (ArithmeticError, np.linalg.LinAlgError, ValueError):
            return math.inf
        return v if math.isfinite(v) else math.inf

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = minimize(f, x0, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
    x = np.asarray(res.x, dtype=float)
    fx = f(x)
    for _ in range(8):  # Newton polish (interior only)
        free = x > lower + 1e-6
        if not free.any():
            break
        _, g, H = _grad_hess(f, x, lower)
        idx = np.flatnonzero(free)
        try:
            step = -np.linalg.solve(H[np.ix_(idx, idx)], g[idx])
        except np.linalg.LinAlgError:
            break
        cand = x.copy()
        cand[idx] += step
        cand = np.maximum(cand, lower)
        fc = f(cand)
        if not fc <= fx:
            break
        x, fx = cand, fc
        if np.max(np.abs(step)) < 1e-10:
            break
    _, g, H = _grad_hess(f, x, lower)
    at_bound = x <= lower + 1e-6
    free = ~at_bound
    messages = ()
    if free.any() and np.max(np.abs(g[free])) > 1e-3:
        messages = (f"failed to converge with sigma fixed: max |gradient| "
                    f"{np.max(np.abs(g[free])):.3g}",)
    opt = OptimizerSummary(method=f"L-BFGS-B + Newton (sigma fixed at {sigma:g})",
                           theta0=x0, theta=x, f0=f(x0), fmin=fx, feval=count[0],
                           niter=int(res.nit), converged=not messages,
                           message=str(res.message), seconds=time.perf_counter() - t0,
                           hessian=H)
    conv = ConvergenceReport(gradient=g, scaled_gradient=float("nan"), hessian=H,
                             at_boundary=at_bound, is_singular=bool(at_bound.any()),
                             messages=messages)
    state = state_at(dev, x, sigma, "REML" if dev.reml else "ML")
    return dataclasses.replace(state, optimizer=opt, convergence=conv, fixed_sigma=float(sigma))
