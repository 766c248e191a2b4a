"""Plain containers passed from the likelihood estimator to the results object."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: no import edge (the fits import this module)
    from ..moments.moments import AnovaFitState
    from .residual_fit import ResidualFit
    from .structured_fit import StructuredFit

__all__ = ["OptimizerSummary", "ConvergenceReport", "FitState"]


@dataclass(frozen=True)
class OptimizerSummary:
    """What the optimizer did (MixedModels.jl's ``OptSummary``)."""

    method: str
    theta0: np.ndarray
    theta: np.ndarray
    f0: float
    fmin: float
    feval: int
    niter: int
    converged: bool
    message: str
    seconds: float
    restarts: int = 0  # escapes from a singular covariance (see likelihood.boundary)
    # Hessian over the free entries at the optimum in the working coordinates (Newton
    # polish's, or newton_descent's secant-updated one), and those coordinates (a
    # likelihood.reparam.WorkingCoordinates)
    hessian: np.ndarray | None = field(default=None, repr=False)
    working: object = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ConvergenceReport:
    """Checks made at the optimum (lme4's ``checkConv``).

    Attributes
    ----------
    gradient : numpy.ndarray
        Analytic gradient of the objective in ``theta`` (in the optimizer's
        working coordinates, which are lme4's unless a random-effect column is
        off-center or off-scale; see :mod:`mixedanova.likelihood.reparam`).
    scaled_gradient : float
        ``max |H^{-1} g|`` over the free parameters (``nan`` if not computed).
    hessian : numpy.ndarray or None
        Finite-difference Hessian over the free parameters, when computed.
    at_boundary : numpy.ndarray
        ``theta`` entries at their lower bound.
    is_singular : bool
        A template has a (near) zero diagonal entry: lme4's ``isSingular``.
    messages : tuple of str
        Plain-language problems found; empty when there is nothing to fix.
    """

    gradient: np.ndarray
    scaled_gradient: float
    hessian: np.ndarray | None
    at_boundary: np.ndarray
    is_singular: bool
    messages: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        """True when no convergence problem was found (a boundary fit is not one)."""
        return not any(m.startswith("failed") or "not converge" in m for m in self.messages)


@dataclass(frozen=True)
class FitState:
    """Estimates of one fit, as produced by an engine.

    ``u`` is the spherical random-effects vector (lme4's ``getME(m, "u")``), in the
    design's term order, level-major within a term; ``factor`` is the blocked
    Cholesky factor at ``theta`` (for conditional variances and inference).

    ``residual`` is the residual structure and its estimates of a fit with
    ``residual=`` (None otherwise); ``moments`` the method-of-moments output
    (EMS table, moment estimates) of a ``method="ANOVA"`` fit (None otherwise);
    ``fixed_sigma`` the value ``sigma`` was held at (``fixed={"sigma": ...}``).
    """

    method: str
    theta: np.ndarray
    sigma: float
    beta: np.ndarray
    u: np.ndarray
    objective: float
    vcov_beta: np.ndarray
    factor: object = field(repr=False)
    optimizer: OptimizerSummary | None = None
    convergence: ConvergenceReport | None = None
    residual: ResidualFit | None = field(default=None, repr=False)
    moments: AnovaFitState | None = field(default=None, repr=False)
    fixed_sigma: float | None = None  # sigma held at this value (fixed={"sigma": ...})
    # the covariance parameters of a fit with structured random terms or held
    # variance components (likelihood.structured_fit); None otherwise
    structured: StructuredFit | None = field(default=None, repr=False)
