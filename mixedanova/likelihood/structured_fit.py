"""Fits with structured random-effect covariances or held parameters.

The parameters are those of :class:`~mixedanova.design.covstruct.CovarianceParameters`
(log SDs and correlation parameters per random term, all unconstrained), and
the criterion is the engine's, at ``theta = chol(Sigma) / scale``:

* nothing held but correlations: the SDs are relative to ``sigma`` (``scale``
  1) and the criterion is the profiled one
  (:class:`~mixedanova.likelihood.criterion.ProfiledDeviance`), its gradient the
  engine's analytic gradient in ``theta`` times the Jacobian of the map (central
  differences of the map, which costs no evaluation of the criterion);
* a variance or ``sigma`` held: the SDs are absolute, ``log sigma`` is one more
  parameter (unless held) and the criterion is
  :meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.at_sigma`, with
  central-difference gradients.

Bounded L-BFGS-B (the bounds only keep the maps finite), then Newton steps on
the central-difference Jacobian of the gradient (formed once), each kept only
when it does not raise the criterion.  Held parameters are not optimized and not counted.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from ..design.covstruct import KIND_LABELS, CovarianceParameters
from ..design.theta import SINGULAR_TOL
from .criterion import ProfiledDeviance, state_at
from .state import ConvergenceReport, FitState, OptimizerSummary
from .threads import small_fit_threads

__all__ = ["StructuredFit", "fit_structured"]

_GRAD_TOL = 1e-3  # largest |gradient| of the criterion accepted as converged
_MAP_STEP = 1e-6
_EDGE = 0.5  # within this of a box bound (unconstrained units): a boundary estimate


@dataclass(frozen=True)
class StructuredFit:
    """The covariance parameters of a structured fit.

    Attributes
    ----------
    parameters : CovarianceParameters
        The structures and the map to ``theta``.
    x : numpy.ndarray
        All parameters (held ones at their values), unconstrained.
    free : numpy.ndarray
        True for the estimated ones.
    absolute : bool
        The SDs in ``x`` are absolute (a variance or ``sigma`` was held), not
        relative to ``sigma``.
    hessian : numpy.ndarray or None
        Hessian of the criterion over the free parameters (and ``log sigma``
        when it was one) at the optimum.
    """

    parameters: CovarianceParameters
    x: np.ndarray
    free: np.ndarray
    absolute: bool = False
    hessian: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_free(self) -> int:
        """Number of estimated covariance parameters (``sigma`` apart)."""
        return int(np.sum(self.free))

    def natural(self, sigma: float) -> "dict[str, float]":
        """Variances and correlations by name (held ones included)."""
        scale = 1.0 if self.absolute else sigma
        return dict(zip(self.parameters.names, self.parameters.natural(self.x, scale)))


    def describe(self, sigma: float) -> list[str]:
        """Summary lines: each term's structure, and the held parameters."""
        out = ["Random-effect covariances: " + "; ".join(
            f"{t.group} {KIND_LABELS[t.kind]}" for t in self.parameters.terms)]
        nat = self.natural(sigma)
        held = [f"{n} = {nat[n]:.6g}" for n, f in zip(self.parameters.names, self.free) if not f]
        if held:
            out.append("Held fixed: " + ", ".join(held))
        return out


class _Objective:
    """The criterion over the free parameters (and ``log sigma`` when absolute)."""

    def __init__(self, dev: ProfiledDeviance, cov: CovarianceParameters,
                 held: dict[int, float], sigma: float | None, absolute: bool) -> None:
        self.dev, self.cov, self.sigma, self.absolute = dev, cov, sigma, absolute
        self.x = cov.start()
        for i, v in held.items():
            self.x[i] = v
        self.free = np.ones(cov.n_par, dtype=bool)
        self.free[list(held)] = False
        self.log_sigma = absolute and sigma is None
        self.nevals = 0

    def full(self, z: np.ndarray) -> tuple[np.ndarray, float]:
        x = self.x.copy()
        nf = int(self.free.sum())
        x[self.free] = z[:nf]
        if not self.absolute:
            return x, 1.0
        return x, (math.exp(z[nf]) if self.log_sigma else float(self.sigma))

    def __call__(self, z: np.ndarray) -> float:
        self.nevals += 1
        x, s = self.full(np.asarray(z, dtype=float))
        try:
            theta = self.cov.theta(x, s)
            v = self.dev.at_sigma(theta, s) if self.absolute else self.dev(theta)
        except (ArithmeticError, np.linalg.LinAlgError, ValueError):
            return math.inf
        return v if math.isfinite(v) else math.inf

    def gradient(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        if self.absolute:
            return _central(self, z)
        x, _ = self.full(z)
        g = self.dev.gradient(self.cov.theta(x))
        J = np.empty((len(g), len(z)))
        for a in range(len(z)):
            zp, zm = z.copy(), z.copy()
            zp[a] += _MAP_STEP
            zm[a] -= _MAP_STEP
            J[:, a] = (self.cov.theta(self.full(zp)[0]) - self.cov.theta(self.full(zm)[0])) \
                / (2 * _MAP_STEP)
        return J.T @ g

    def value_and_gradient(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        f = self(z)
        if not math.isfinite(f):
            return f, np.zeros(len(z))
        return f, self.gradient(z)


def _central(f, z: np.ndarray, h: float = 1e-5) -> np.ndarray:
    g = np.empty(len(z))
    for a in range(len(z)):
        zp, zm = z.copy(), z.copy()
        zp[a] += h
        zm[a] -= h
        g[a] = (f(zp) - f(zm)) / (2 * h)
    return g


def _hessian(obj: _Objective, z: np.ndarray, h: float = 1e-4) -> np.ndarray:
    k = len(z)
    H = np.empty((k, k))
    for a in range(k):
        zp, zm = z.copy(), z.copy()
        zp[a] += h
        zm[a] -= h
        H[:, a] = (obj.gradient(zp) - obj.gradient(zm)) / (2 * h)
    return 0.5 * (H + H.T)


def fit_structured(dev: ProfiledDeviance, cov: CovarianceParameters, held: dict[int, float],
                   sigma: float | None = None, start: np.ndarray | None = None) -> FitState:
    """REML / ML fit over the covariance parameters of ``cov`` (see
    :func:`_fit_structured`), on one BLAS thread unless the dense part is large
    (:func:`~mixedanova.likelihood.threads.small_fit_threads`)."""
    with small_fit_threads(dev.system):
        return _fit_structured(dev, cov, held, sigma, start)


def _fit_structured(dev: ProfiledDeviance, cov: CovarianceParameters, held: dict[int, float],
                    sigma: float | None, start: np.ndarray | None) -> FitState:
    """REML / ML fit over the covariance parameters of ``cov``.

    Parameters
    ----------
    dev : ProfiledDeviance
    cov : CovarianceParameters
    held : dict
        Position -> unconstrained value of the parameters held fixed
        (:meth:`CovarianceParameters.bind_fixed`).
    sigma : float, optional
        The residual SD when held (``fixed={"sigma": s}``).
    start : array, optional
        All parameters, unconstrained (held ones are replaced by their values).
    """
    t0 = time.perf_counter()
    absolute = sigma is not None or any(cov.variance_mask()[i] for i in held)
    obj = _Objective(dev, cov, held, sigma, absolute)
    bounds = [b for b, f in zip(cov.bounds(), obj.free) if f]
    x0 = obj.x.copy() if start is None else np.asarray(start, dtype=float).copy()
    for i, v in held.items():
        x0[i] = v
    z0 = x0[obj.free]
    if absolute:  # SDs and sigma start at the residual SD of lme4's identity start
        s0 = dev.sigma(dev.factor(dev.layout.start())) if sigma is None else sigma
        if start is None:
            z0 = np.where(cov.variance_mask()[obj.free], math.log(s0), z0)
        if obj.log_sigma:
            z0 = np.r_[z0, math.log(s0)]
            bounds.append((-30.0, 30.0))
    f0 = obj(z0)
    # L-BFGS-B's first step is the negative gradient: the criterion is scaled so
    # that it moves a parameter by at most 0.5 (as optimizer._local does for SLSQP)
    g0 = np.max(np.abs(obj.gradient(z0))) if len(z0) else 0.0
    c = min(1.0, 0.5 / g0) if g0 > 0 else 1.0

    def scaled(z: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = obj.value_and_gradient(z)
        return c * f, c * g

    if len(z0):
        res = minimize(scaled, z0, method="L-BFGS-B", jac=True, bounds=bounds,
                       options={"ftol": 1e-13, "gtol": 1e-8, "maxiter": 2000, "maxcor": 20})
        z, nit, message = np.asarray(res.x, dtype=float), int(res.nit), str(res.message)
    else:  # every parameter held
        z, nit, message = np.asarray(z0, dtype=float), 0, "every parameter held fixed"
    fz = obj(z)
    H = _hessian(obj, z) if len(z) else None
    for _ in range(6):  # Newton polish: one Hessian, a few steps
        try:
            np.linalg.cholesky(H)
            step = -np.linalg.solve(H, obj.gradient(z))
        except (np.linalg.LinAlgError, ValueError, TypeError):
            break
        zc = np.clip(z + step, [b[0] for b in bounds], [b[1] for b in bounds])
        fc = obj(zc)
        if not fc <= fz + 1e-13 * max(1.0, abs(fz)):
            break
        z, fz = zc, fc
        if np.max(np.abs(step)) < 1e-10:
            break
    g = obj.gradient(z) if len(z) else np.zeros(0)
    x, s = obj.full(z)
    theta = cov.theta(x, s)
    # a parameter at the edge of its box is an SD of (about) 0 or a correlation of
    # (about) +-1: a boundary fit, where the gradient need not vanish
    edge = np.array([min(v - lo, hi - v) < _EDGE for v, (lo, hi) in zip(z, bounds)], dtype=bool)
    messages = ()
    inner = np.abs(g[~edge]) if len(g) else np.zeros(0)
    if len(inner) and np.max(inner) > _GRAD_TOL:
        messages = (f"failed to converge: max |gradient| {np.max(inner):.3g} over the "
                    "covariance parameters",)
    diag = dev.layout.diagonal_mask()
    at_bound = diag & (np.abs(theta) < SINGULAR_TOL)  # theta is relative to sigma
    opt = OptimizerSummary(method="L-BFGS-B + Newton (structured covariance parameters)",
                           theta0=cov.theta(*obj.full(np.asarray(z0))), theta=theta, f0=f0,
                           fmin=fz, feval=obj.nevals, niter=nit, converged=not messages,
                           message=message, seconds=time.perf_counter() - t0,
                           hessian=H)
    conv = ConvergenceReport(gradient=g, scaled_gradient=float("nan"), hessian=H,
                             at_boundary=at_bound,
                             is_singular=bool(at_bound.any() or edge.any()),
                             messages=messages)
    method = "REML" if dev.reml else "ML"
    if absolute:
        state = state_at(dev, theta, s, method)
    else:
        f = dev.factor(theta)
        state = state_at(dev, theta, dev.sigma(f), method)
        state = dataclasses.replace(state, objective=dev.from_factor(f))
    fit = StructuredFit(parameters=cov, x=x, free=obj.free.copy(),
                        absolute=absolute, hessian=H)
    return dataclasses.replace(state, optimizer=opt, convergence=conv, structured=fit,
                               fixed_sigma=None if sigma is None else float(sigma))
