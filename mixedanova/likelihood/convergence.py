"""Convergence checks at the optimum, as their own step (lme4's ``checkConv``).

* boundary: a template diagonal entry below ``1e-4`` makes the fit singular
  (lme4's ``isSingular`` tolerance);
* gradient: central differences (one-sided at a bound), which also give the
  Hessian's diagonal; when the gradient scaled by that diagonal is not far
  below lme4's ``2e-3`` (or the diagonal is not positive) the full Hessian is
  computed and the scaled gradient ``max |H^{-1} g|`` is compared with ``2e-3``;
* a parameter at its bound whose gradient points outward (the objective would
  decrease by leaving the bound) is not converged;
* a Hessian that is not positive definite means a flat or saddle direction.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .state import ConvergenceReport

__all__ = ["check_convergence", "finite_hessian"]

SINGULAR_TOL = 1e-4
GRAD_TOL = 2e-3
_DELTA = 1e-4


def _at_bound(theta: np.ndarray, lower: np.ndarray) -> np.ndarray:
    return np.isfinite(lower) & (theta - lower < SINGULAR_TOL)


def _gradient(f: Callable[[np.ndarray], float], x: np.ndarray, lower: np.ndarray,
              fx: float) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient and Hessian diagonal (NaN at a bound)."""
    g = np.empty_like(x)
    h = np.full_like(x, np.nan)
    for i in range(len(x)):
        xp = x.copy()
        xp[i] += _DELTA
        xm = x.copy()
        xm[i] -= _DELTA
        fp = f(xp)
        if xm[i] < lower[i]:
            g[i] = (fp - fx) / _DELTA
        else:
            fm = f(xm)
            g[i] = (fp - fm) / (2 * _DELTA)
            h[i] = (fp - 2 * fx + fm) / _DELTA**2
    return g, h


def finite_hessian(f: Callable[[np.ndarray], float], x: np.ndarray,
                   delta: float = _DELTA) -> np.ndarray:
    """Central-difference Hessian of ``f`` at ``x``."""
    k = len(x)
    H = np.empty((k, k))
    fx = f(x)
    for i in range(k):
        e_i = np.zeros(k)
        e_i[i] = delta
        H[i, i] = (f(x + e_i) - 2 * fx + f(x - e_i)) / delta**2
        for j in range(i):
            e_j = np.zeros(k)
            e_j[j] = delta
            H[i, j] = H[j, i] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j)
                                 + f(x - e_i - e_j)) / (4 * delta**2)
    return H


def check_convergence(f: Callable[[np.ndarray], float], theta: np.ndarray,
                      lower: np.ndarray, names: tuple[str, ...] = ()) -> ConvergenceReport:
    """Inspect the optimum ``theta`` of objective ``f`` with lower bounds ``lower``.

    Returns
    -------
    ConvergenceReport
        ``messages`` is empty when there is nothing for the user to fix.
    """
    theta = np.asarray(theta, dtype=float)
    fx = f(theta)
    bound = _at_bound(theta, lower)
    g, hdiag = _gradient(f, theta, lower, fx)
    names = names or tuple(f"theta[{i}]" for i in range(len(theta)))
    messages: list[str] = []
    outward = bound & (g < -1e-3)
    for i in np.flatnonzero(outward):
        messages.append(f"failed to converge: {names[i]} sits on its bound although the "
                        f"objective decreases away from it (gradient {g[i]:.3g})")
    free = ~bound
    scaled = float("nan")
    H = None
    with np.errstate(divide="ignore", invalid="ignore"):
        diag_scaled = np.abs(g[free] / hdiag[free])
    doubtful = (np.any(~(hdiag[free] > 0)) or np.any(diag_scaled > 0.1 * GRAD_TOL))
    if free.any() and np.max(np.abs(g[free])) > 1e-3 and doubtful:
        xf = theta[free]

        def f_free(z: np.ndarray) -> float:
            full = theta.copy()
            full[free] = z
            return f(full)

        H = finite_hessian(f_free, xf)
        try:
            scaled = float(np.max(np.abs(np.linalg.solve(H, g[free]))))
        except np.linalg.LinAlgError:
            scaled = float(np.max(np.abs(g[free])))
        if scaled > GRAD_TOL:
            messages.append(f"failed to converge: max|scaled gradient| = {scaled:.3g} "
                            f"(tolerance {GRAD_TOL}); try another optimizer or start")
        eig = np.linalg.eigvalsh(H)
        if eig.min() <= 0:
            messages.append("the Hessian of the objective is not positive definite: the "
                            "model may be over-parameterized (consider a simpler random "
                            "effects structure)")
    is_singular = bool(np.any(bound & (lower == 0.0)))
    return ConvergenceReport(gradient=g, scaled_gradient=scaled, hessian=H,
                             at_boundary=bound, is_singular=is_singular,
                             messages=tuple(messages))
