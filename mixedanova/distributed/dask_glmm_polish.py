"""The last steps of a GLMM fitted to a Dask data frame (issue 19): Newton steps
to the optimum (:func:`polish_optimum`) and the Hessian behind the SEs
(:func:`refine_hessian`), both from values of the distributed objective
(:class:`~mixedanova.distributed.dask_glmm.DistributedLaplace`: each value a few
PIRLS passes)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

__all__ = ["polish_optimum", "refine_hessian"]

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
    for _ in range(max_steps):
        g = np.empty(len(idx))
        for m, i in enumerate(idx):
            e = np.zeros(len(x))
            e[i] = h[m]
            g[m] = (value(x + e) - value(x - e)) / (2.0 * h[m])
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
