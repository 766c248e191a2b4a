"""Satterthwaite's degrees of freedom as lmerTest computes them.

lmerTest (``as_lmerModLmerTest``) works with the variance parameters
``varpar = (theta, sigma)`` and two numerical derivatives at the estimates:

* the Hessian ``H`` of the deviance with ``sigma`` not profiled out
  (lmerTest's ``devfun_vp``; the REML criterion for REML fits, the ML deviance
  for ML fits), whose generalized inverse gives ``A = 2 H^+``, the asymptotic
  covariance of ``varpar``;
* the Jacobian ``J_i = d vcov(beta) / d varpar_i``.

For a contrast ``l`` the df are ``2 (l'V l)^2 / (g'A g)`` with ``g_i = l'J_i l``.

Here the deviance is split as ``a(theta) + dof log(2 pi sigma^2) + r(theta) / sigma^2``
with ``a = log|Omega| (+ log|R_X|^2 for REML)`` and ``r = pwrss``, and
``vcov(beta) = sigma^2 U(theta)``; only ``a``, ``r`` and ``U`` are differentiated
over ``theta``.  For designs with ``q + p + 1 <= DENSE_MAX`` (200) random-effect
levels and fixed effects these derivatives are exact
(:class:`~mixedanova.likelihood.varpar.DenseVarpar`); lmerTest's own numerical
derivatives agree with them to about 1e-9 of the df.  Above that they are
central differences (steps of 1e-3, relative) from factors of the blocked
system, whose rounding noise reaches about 1e-6 of the df; no ``n x n`` matrix is
formed.  The ``sigma`` derivatives are exact.

With a residual structure (``residual=``) the variance parameters are
``(theta, u, sigma)``, ``u`` the structure's unconstrained parameters; ``a``
then includes ``log|Rrel(u)|`` and the factors are those of the data whitened at
``u`` (:class:`~mixedanova.likelihood.residual_fit.ResidualDeviance`).  The same
Hessian gives nlme-style Wald intervals of ``u``
(:func:`residual_wald_intervals`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError, InferenceWarning, user_stacklevel
from ..likelihood.varpar import DENSE_MAX, DenseVarpar, varpar_order

__all__ = ["SatterthwaiteSetup", "satterthwaite_setup", "deviance_function_for",
           "InferenceWarning", "residual_wald_intervals"]


@dataclass(frozen=True)
class SatterthwaiteSetup:
    """What the Satterthwaite df need, computed once per fit.

    Attributes
    ----------
    varpar : numpy.ndarray
        ``(theta, sigma)`` at the estimates.
    hessian : numpy.ndarray
        Hessian of the deviance in ``varpar``.
    vcov_varpar : numpy.ndarray
        ``2 H^+`` (Moore-Penrose inverse over eigenvalues above ``tol``).
    jacobian : numpy.ndarray
        ``(k, p, p)``: ``d vcov(beta) / d varpar_i``.
    vcov_beta : numpy.ndarray
        ``vcov(beta)``.
    messages : tuple of str
        Problems found (negative or zero eigenvalues of ``H``).
    """

    varpar: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    vcov_beta: np.ndarray
    messages: tuple[str, ...] = field(default=())

    def df_1d(self, L: np.ndarray) -> tuple[float, float]:
        """``(var(l'beta), df)`` for one contrast vector ``l`` (lmerTest's ``contest1D``)."""
        L = np.asarray(L, dtype=float).ravel()
        var = float(L @ self.vcov_beta @ L)
        grad = np.einsum("i,kij,j->k", L, self.jacobian, L)
        denom = float(grad @ self.vcov_varpar @ grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = 2.0 * var * var / denom if denom != 0 else math.inf
        return var, float(df)

    def df_many(self, rows: np.ndarray) -> np.ndarray:
        """df of each row of ``rows`` taken as a separate contrast."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        var = np.einsum("mi,ij,mj->m", rows, self.vcov_beta, rows)
        grad = np.einsum("mi,kij,mj->mk", rows, self.jacobian, rows)
        denom = np.einsum("mk,kl,ml->m", grad, self.vcov_varpar, grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom != 0, 2.0 * var * var / denom, np.inf)


def deviance_function_for(res, reml: bool):
    """A :class:`~mixedanova.likelihood.criterion.ProfiledDeviance` for the fit ``res``."""
    return res.model.deviance_function(reml=reml)


def _pieces(dev, theta: np.ndarray) -> np.ndarray:
    """``[a, r, U.ravel()]`` at ``theta``."""
    f = dev.factor(theta)
    a = f.ldL2 + (f.ldRX2 if dev.reml else 0.0)
    return np.concatenate([[a, f.pwrss], f.vcov_unscaled().ravel()])


def _steps(theta: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(np.abs(theta), 0.1)


def _derivatives(fun, x: np.ndarray, h: np.ndarray):
    """Value, gradient (Jacobian) and Hessian of a vector function by central differences.

    Returns ``(f0, grad (k, m), hess (k, k, m))``.  The mixed second differences
    reuse the axis points: ``H_ij = [f(x + h_i + h_j) + f(x - h_i - h_j) - f(x + h_i)
    - f(x - h_i) - f(x + h_j) - f(x - h_j) + 2 f(x)] / (2 h_i h_j)``, so the cost is
    ``1 + 2k + k(k - 1)`` evaluations, all with ``O(h^2)`` error.  The points are
    evaluated grouped by their step in ``x[0]`` (none, up, down): the crossed layout
    forms a factor whose first term's template is that of the one before from it
    (likelihood/crossed_blocked.py), so at 100k x 10k crossed levels the six points
    of two parameters cost two full factorizations instead of six.
    """
    k = len(x)
    f0 = fun(x)
    m = f0.size
    steps = {}
    for i in range(k):
        for sign in (1.0, -1.0):
            e = np.zeros(k)
            e[i] = h[i]
            steps[(i, sign)] = sign * e
    for i in range(k):
        for j in range(i + 1, k):
            e = np.zeros(k)
            e[i], e[j] = h[i], h[j]
            steps[(i, j, 1.0)], steps[(i, j, -1.0)] = e, -e
    order = sorted(steps, key=lambda key: (steps[key][0] != 0, steps[key][0] < 0))
    val = {key: fun(x + steps[key]) for key in order}
    g = np.empty((k, m))
    H = np.empty((k, k, m))
    for i in range(k):
        fp, fm = val[(i, 1.0)], val[(i, -1.0)]
        g[i] = (fp - fm) / (2.0 * h[i])
        H[i, i] = (fp - 2.0 * f0 + fm) / h[i] ** 2
    for i in range(k):
        for j in range(i + 1, k):
            out = (val[(i, j, 1.0)] + val[(i, j, -1.0)] - val[(i, 1.0)] - val[(i, -1.0)]
                   - val[(j, 1.0)] - val[(j, -1.0)] + 2.0 * f0) / (2.0 * h[i] * h[j])
            H[i, j] = H[j, i] = out
    return f0, g, H


def satterthwaite_setup(res, *, theta: np.ndarray | None = None, sigma: float | None = None,
                        rel_step: float = 1e-3, tol: float = 1e-8,
                        warn: bool = True) -> SatterthwaiteSetup:
    """Hessian of the deviance and Jacobian of ``vcov(beta)`` at the estimates of ``res``.

    Parameters
    ----------
    res : LinearMixedResults
        A REML or ML fit.
    theta, sigma : optional
        Evaluate at these variance parameters instead of the estimates (e.g. at
        another program's estimates, to compare the df computation itself).
    rel_step : float
        Finite-difference step relative to ``max(|theta_i|, 0.1)``.
    tol : float
        Eigenvalues of the Hessian below ``tol`` are treated as zero (lmerTest's 1e-8).
    warn : bool
        Warn (:class:`InferenceWarning`) about negative eigenvalues.
    """
    if res.method not in ("REML", "ML"):
        raise ArgumentError(f"Satterthwaite df need a REML or ML fit, not {res.method!r}")
    reml = res.method == "REML"
    fit = res.state.residual
    if fit is not None and getattr(fit.structure, "marginal", False):
        return _marginal_setup(res, fit.u if theta is None else theta, tol, warn)
    if getattr(res.state, "structured", None) is not None:
        if theta is not None or sigma is not None:
            raise ArgumentError("theta= and sigma= are not available for a fit with "
                                "structured random-effect covariances or held parameters")
        return _structured_setup(res, rel_step, tol, warn)
    dev = deviance_function_for(res, reml)
    theta = np.asarray(res.state.theta if theta is None else theta, dtype=float)
    fit = res.state.residual
    if fit is not None and len(theta) == res.state.theta.size:
        theta = np.concatenate([theta, fit.u])  # (theta, u): the residual structure too
    sigma = float(res.sigma if sigma is None else sigma)
    p = res.design.p
    k = len(theta)
    dof = dev.dof
    if fit is None and varpar_order(dev.cp) <= DENSE_MAX and \
            not dev.pwrss_cancels(dev.system.factor(dev.layout.templates(theta))):
        f0 = _pieces(dev, theta)
        d = DenseVarpar(dev.cp).derivatives(theta[None, :], np.zeros(1, int), dev.reml)
        g_r, h_r = d.pwrss_derivatives(f0[1:2])
        grad = np.column_stack([d.grad_a[0], g_r[0], d.grad_u[0].reshape(k, p * p)])
        hess = np.stack([d.hess_a[0], h_r[0]], axis=2)
    else:
        f0, grad, hess = _derivatives(lambda t: _pieces(dev, t), theta,
                                      _steps(theta, rel_step))
    r = f0[1]
    U = f0[2:].reshape(p, p)
    s2 = sigma * sigma
    H = np.empty((k + 1, k + 1))
    H[:k, :k] = hess[:, :, 0] + hess[:, :, 1] / s2
    H[:k, k] = H[k, :k] = -2.0 * grad[:, 1] / (s2 * sigma)
    H[k, k] = -2.0 * dof / s2 + 6.0 * r / (s2 * s2)
    J = np.empty((k + 1, p, p))
    J[:k] = s2 * grad[:, 2:].reshape(k, p, p)
    J[k] = 2.0 * sigma * U
    if res.state.fixed_sigma is not None:  # sigma held fixed: not a variance parameter
        H, J = H[:k, :k], J[:k]
    held = _held_mask(fit, res.state.theta.size, k, H.shape[0])
    if held is not None:  # structure parameters held (fixed=): constants, zero variance
        idx = np.flatnonzero(~held)
        Af, messages = _eigen_messages(H[np.ix_(idx, idx)], tol, warn)
        A = np.zeros_like(H)
        A[np.ix_(idx, idx)] = Af
        varpar = theta if res.state.fixed_sigma is not None else np.append(theta, sigma)
        return SatterthwaiteSetup(varpar=varpar, hessian=H, vcov_varpar=A, jacobian=J,
                                  vcov_beta=s2 * U, messages=messages)
    evals, evecs = np.linalg.eigh(H)
    messages = []
    neg = evals < -tol
    zero = np.abs(evals) <= tol
    if neg.any():
        messages.append(f"the Hessian of the deviance has {int(neg.sum())} negative "
                        f"eigenvalue(s) ({', '.join(f'{v:.1e}' for v in evals[neg])}): the "
                        "fit may not have converged")
        if warn:
            warnings.warn(messages[-1], InferenceWarning, stacklevel=user_stacklevel())
    if zero.any():
        messages.append(f"the Hessian of the deviance has {int(zero.sum())} eigenvalue(s) "
                        "close to zero")
    pos = evals > tol
    Hinv = (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    varpar = theta if res.state.fixed_sigma is not None else np.append(theta, sigma)
    return SatterthwaiteSetup(varpar=varpar, hessian=H,
                              vcov_varpar=2.0 * Hinv, jacobian=J,
                              vcov_beta=s2 * U, messages=tuple(messages))


def _held_mask(fit, k_theta: int, k: int, size: int) -> np.ndarray | None:
    """Over the variance parameters ``(theta, u[, sigma])``: True where a residual-structure
    parameter is held at a given value (``fixed=``); None when none is."""
    free = None if fit is None else fit.info.get("free")
    if free is None or np.all(free) or k != k_theta + len(free):
        return None
    held = np.zeros(size, dtype=bool)
    held[k_theta:k] = ~np.asarray(free, dtype=bool)
    return held


def _structured_setup(res, rel_step: float, tol: float, warn: bool) -> SatterthwaiteSetup:
    """Satterthwaite for structured random terms or held parameters
    (:mod:`mixedanova.likelihood.structured_fit`): the variance parameters are the
    free structure parameters and ``sigma`` (relative SDs) or ``log sigma``
    (absolute SDs; absent when held), and both derivatives (the deviance with
    ``sigma`` given, ``vcov(beta) = sigma^2 U``) are central differences over them.
    The df do not depend on the parametrization (the deviance is stationary there)."""
    sf = res.state.structured
    dev = deviance_function_for(res, res.method == "REML")
    cov, free = sf.parameters, np.flatnonzero(sf.free)
    held = res.state.fixed_sigma
    p = res.design.p

    def fun(v: np.ndarray) -> np.ndarray:
        x = sf.x.copy()
        x[free] = v[:len(free)]
        if sf.absolute:
            s = held if held is not None else math.exp(v[-1])
            theta = cov.theta(x, s)
        else:
            s = float(v[-1])
            theta = cov.theta(x)
        f = dev.factor(theta)
        return np.concatenate([[dev.at_sigma(theta, s)], s * s * f.vcov_unscaled().ravel()])

    v0 = sf.x[free]
    if not sf.absolute:
        v0 = np.r_[v0, res.sigma]
    elif held is None:
        v0 = np.r_[v0, math.log(res.sigma)]
    f0, grad, hess = _derivatives(fun, v0, _steps(v0, rel_step))
    A, messages = _eigen_messages(hess[:, :, 0], tol, warn)
    return SatterthwaiteSetup(varpar=v0, hessian=hess[:, :, 0], vcov_varpar=A,
                              jacobian=grad[:, 1:].reshape(len(v0), p, p),
                              vcov_beta=f0[1:].reshape(p, p), messages=messages)


def _eigen_messages(H: np.ndarray, tol: float, warn: bool) -> tuple[np.ndarray, tuple]:
    """``2 H^+`` over eigenvalues above ``tol`` and messages about the others."""
    evals, evecs = np.linalg.eigh(H)
    messages = []
    neg = evals < -tol
    if neg.any():
        messages.append(f"the Hessian of the deviance has {int(neg.sum())} negative "
                        f"eigenvalue(s) ({', '.join(f'{v:.1e}' for v in evals[neg])}): the "
                        "fit may not have converged")
        if warn:
            warnings.warn(messages[-1], InferenceWarning, stacklevel=user_stacklevel())
    if (np.abs(evals) <= tol).any():
        messages.append(f"the Hessian of the deviance has {int(np.sum(np.abs(evals) <= tol))} "
                        "eigenvalue(s) close to zero")
    pos = evals > tol
    return 2.0 * (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T, tuple(messages)


def _marginal_setup(res, theta: np.ndarray, tol: float, warn: bool) -> SatterthwaiteSetup:
    """Satterthwaite for a marginal model (no random terms, a visit covariance):
    the variance parameters are the structure's (mmrm's ``theta``), with the exact
    Hessian of the deviance and ``d vcov(beta) / d theta_h = Phi (X'V Sigma_h V X) Phi``
    (:mod:`mixedanova.likelihood.marginal`); as mmrm's ``method = "Satterthwaite"``."""
    from ..likelihood.threads import one_blas_thread

    crit = deviance_function_for(res, res.method == "REML")
    theta = np.asarray(theta, dtype=float)
    with one_blas_thread():
        ev = crit.evaluate(theta, order=2)
    if ev is None:
        raise ArgumentError("the visit covariance is not positive definite at theta")
    phi = ev.phi
    J = np.einsum("ij,hjk,kl->hil", phi, ev.PP, phi)
    free = res.state.residual.info["marginal"].free
    if free is not None and not free.all():  # parameters held fixed: not estimated
        idx = np.flatnonzero(free)
        Af, messages = _eigen_messages(ev.hessian[np.ix_(idx, idx)], tol, warn)
        A = np.zeros_like(ev.hessian)
        A[np.ix_(idx, idx)] = Af
        return SatterthwaiteSetup(varpar=theta, hessian=ev.hessian, vcov_varpar=A,
                                  jacobian=J, vcov_beta=phi, messages=messages)
    A, messages = _eigen_messages(ev.hessian, tol, warn)
    return SatterthwaiteSetup(varpar=theta, hessian=ev.hessian, vcov_varpar=A, jacobian=J,
                              vcov_beta=phi, messages=messages)


def residual_wald_intervals(res, level: float = 0.95):
    """Wald intervals of the residual-structure parameters (nlme's ``intervals()``).

    ``u +- z_{(1+level)/2} se(u)`` on the unconstrained scale, ``se`` from the
    covariance ``2 H^+`` of :func:`satterthwaite_setup`, mapped back to the
    natural scale.  Returns a DataFrame indexed like ``res.residual_params``
    without VarIdent's reference level, columns ``lower, estimate, upper, se_u``.
    """
    import pandas as pd
    from scipy.stats import norm

    fit = res.state.residual
    if fit is None:
        raise ArgumentError("residual_intervals(): the model has no residual structure "
                            "(residual=); its variance parameters are in varcomp / conf_int()")
    setup = satterthwaite_setup(res, warn=False)
    k = res.state.theta.size
    m = len(fit.u)
    se = np.sqrt(np.diag(setup.vcov_varpar)[k:k + m])
    if fit.info.get("free") is not None:  # held at a given value (fixed=): no interval
        se = np.where(fit.info["free"], se, np.nan)
    z = float(norm.ppf(0.5 + level / 2.0))
    s = fit.structure
    lo, hi = s.natural(fit.u - z * se), s.natural(fit.u + z * se)
    return pd.DataFrame({"lower": np.minimum(lo, hi), "estimate": s.natural(fit.u),
                         "upper": np.maximum(lo, hi), "se_u": se},
                        index=pd.Index(list(s.names), dtype=object))
