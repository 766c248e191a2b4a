"""Checks at the optimum, as their own step (lme4's ``checkConv``, made strict).

``converged`` means that all of these were checked and hold:

* **stationary in the free entries** of ``theta`` (those not in the column of a
  zero template diagonal): with the analytic gradient ``g`` and the Hessian
  ``H`` (forward differences of ``g``), the decrease a Newton step predicts,
  ``g'H^{-1}g / 2`` over the directions of positive curvature, is below
  ``1e-8 max(1, |f|)``, and the step ``H^{-1} g`` is within lme4's ``2e-3``
  unless the decrease it predicts is below ``1e-9`` relative (a nearly flat
  direction; or rounding: lme4's ``theta`` of a covariate hundreds of SDs from 0
  holds the covariance only to about that precision, and the criterion at the
  reported ``theta`` moves by as much between BLAS thread counts);
* **no way into the interior**: a scalar variance on 0 has a non-negative
  one-sided derivative, and no (near) singular covariance has a direction in
  the positive semidefinite cone that lowers the objective
  (:func:`~mixedanova.likelihood.boundary.cone_descent`; the false boundary of
  the Cholesky parameterization is exactly such a point);
* the Hessian over the free entries is positive definite; if it is not, the
  point is reported (a flat direction: the model may be over-parameterized),
  but it is not counted as a failure to converge.

A template diagonal below lme4's ``1e-4`` makes the fit singular
(``isSingular``), which is reported, not a failure.
"""
from __future__ import annotations

import math

import numpy as np

from .boundary import cone_descent, free_mask
from .criterion import ProfiledDeviance, gradient_jacobian
from .reparam import WorkingCoordinates
from .state import ConvergenceReport
from ..design.theta import SINGULAR_TOL

__all__ = ["check_convergence", "SINGULAR_TOL", "GRAD_TOL"]

GRAD_TOL = 2e-3
DECREMENT_TOL = 1e-8
NOISE_TOL = 1e-9  # a predicted decrease below this (relative) is rounding, whatever the step


def check_convergence(dev: ProfiledDeviance, theta: np.ndarray,
                      hessian: np.ndarray | None = None,
                      working: WorkingCoordinates | None = None) -> ConvergenceReport:
    """Inspect ``theta`` as an optimum of ``dev``.

    The checks run in the optimizer's working coordinates (random-effect columns
    centered and scaled, :mod:`.reparam`): optimality is a property of the
    covariance matrices, and there the gradient and Hessian are well conditioned
    where lme4's ``theta`` of an off-center covariate is not.  ``working`` are
    those coordinates (built here when not given) and ``hessian``, over the free
    entries at this point in them, saves its computation when the optimizer has
    it (the Newton polish's).  The boundary (``isSingular``) is lme4's, on
    ``theta``.

    Returns
    -------
    ConvergenceReport
        ``messages`` is empty when there is nothing for the user to fix; a
        message starting with ``"failed to converge"`` makes ``converged`` False.
    """
    theta = np.asarray(theta, dtype=float)
    names = dev.layout.names
    lower = dev.layout.lower
    bound = np.isfinite(lower) & (theta - lower < SINGULAR_TOL)
    working = WorkingCoordinates(dev) if working is None else working
    dev, theta = working.dev, working.from_raw(theta)
    fx = dev(theta)
    scale = max(1.0, abs(fx))
    g = dev.gradient(theta)
    messages: list[str] = []
    if not math.isfinite(fx):
        messages.append("failed to converge: the objective is not finite at the estimates")
        return ConvergenceReport(g, math.nan, None, bound, bool(np.any(bound)),
                                 tuple(messages))

    free = free_mask(dev, theta) & ~((lower == 0.0) & (theta == 0.0))
    idx = np.flatnonzero(free)
    H, scaled, decrement = None, 0.0, 0.0
    if len(idx):
        H = hessian if hessian is not None and hessian.shape == (len(idx), len(idx)) \
            else gradient_jacobian(dev, theta, idx, g[idx])
        gf = g[idx]
        eig, V = np.linalg.eigh(H)
        pos = eig > 1e-12 * max(float(np.max(np.abs(eig))), 1e-300)
        coef = V.T @ gf
        step = V[:, pos] @ (coef[pos] / eig[pos])  # Newton step within the curved directions
        scaled = float(np.max(np.abs(step))) if pos.any() else 0.0
        decrement = 0.5 * float(coef[pos] @ (coef[pos] / eig[pos]))
        # a long step along a nearly flat direction that gains nothing is not a failure
        if decrement > DECREMENT_TOL * scale or (scaled > GRAD_TOL
                                                 and decrement > NOISE_TOL * scale):
            worst = names[idx[int(np.argmax(np.abs(gf)))]]
            messages.append(
                f"failed to converge: the gradient is not zero at the estimates (largest "
                f"in {worst}; max|scaled gradient| = {scaled:.3g}, predicted further "
                f"decrease of the criterion {abs(decrement):.3g}); try another optimizer "
                f"or start, or rescale the covariates")
        if not eig.min() > 0:
            messages.append("the Hessian of the objective is not positive definite: a "
                            "flat direction; the model may be over-parameterized (consider "
                            "a simpler random-effects structure)")
    esc = cone_descent(dev, theta, fx)
    if esc is not None:
        group = names[dev.layout.offsets[esc.term]].split(".")[0]
        messages.append(
            f"failed to converge: the covariance of the {group} term is on the boundary "
            f"(singular) but moving it (into the interior or along the boundary) "
            f"lowers the criterion by "
            f"{esc.gain:.3g}; try another start")
    is_singular = bool(np.any(bound & (lower == 0.0)))
    return ConvergenceReport(gradient=g, scaled_gradient=scaled, hessian=H,
                             at_boundary=bound, is_singular=is_singular,
                             messages=tuple(messages))
