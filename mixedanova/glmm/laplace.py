"""The Laplace approximation of a GLMM's likelihood, by PIRLS on the engine.

For variance parameters ``theta`` (relative covariance factor ``Lambda``) and
fixed effects ``beta``, penalized iteratively reweighted least squares (Fisher
scoring) finds the conditional modes ``u`` of the spherical random effects
(``b = Lambda u``), minimizing the penalized deviance
``-2 sum log p(y | mu) + |u|^2`` with ``eta = offset + X beta + Z Lambda u``.
Each iteration solves the penalized weighted least-squares problem of the
working response with weights ``W = w (dmu/deta)^2 / V(mu)`` (expected
information, as lme4) through the likelihood engine: the cross-products of
``[Z X z]`` with row weights ``W`` are refreshed on a symbolic pattern formed
once (:class:`~mixedanova.likelihood.crossprod.CrossProductPattern`), and the
blocked system (:func:`~mixedanova.likelihood.system.build_system`) takes the
new values (``refresh``).  Its factor gives the solution and
``ldL2 = log det(Lambda'Z'WZ Lambda + I)``.

The Laplace value of ``-2 log L(theta, beta)`` is

    -2 sum log p(y_i | mu_i) + |u|^2 + log det(Lambda'Z'WZ Lambda + I)

at the modes, with ``W`` at the modes.  The iteration runs until the Newton step
is at rounding level, and ``ldL2`` is the one of the weights at the final modes
(lme4 stops at a relative change ``tolPwrss = 1e-7`` and takes ``ldL2`` from the
weights at the start of its last iteration; this value is the exact one).

With ``joint=True`` the iteration also updates ``beta`` (lme4's ``nAGQ = 0``
stage: the modes of ``(beta, u)`` jointly at ``theta``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..design.theta import ThetaLayout
from ..errors import FitError
from ..likelihood.blocked import NotPositiveDefinite, TermData
from ..likelihood.crossprod import CrossProductPattern
from ..likelihood.system import build_system
from .families import Family

__all__ = ["GlmmData", "PirlsState", "LaplaceObjective"]

_MAX_ITER = 200
_STEP_TOL = 1e-11
_JOINT_TOL = 1e-10


@dataclass(frozen=True)
class GlmmData:
    """The numbers of a GLMM: response, prior weights, offset, ``X`` and terms."""

    y: np.ndarray
    pw: np.ndarray
    offset: np.ndarray
    X: np.ndarray
    terms: tuple[TermData, ...]
    layout: ThetaLayout

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def p(self) -> int:
        return self.X.shape[1]


@dataclass
class PirlsState:
    """The converged modes at one ``(theta, beta)`` and the Laplace pieces.

    Attributes
    ----------
    theta, beta, u : numpy.ndarray
    eta, mu : numpy.ndarray
        Linear predictor (offset included) and mean at the modes.
    weights : numpy.ndarray
        Working weights at the modes.
    ldL2 : float
        ``log det(Lambda'Z'WZ Lambda + I)``.
    cond_loglik : float
        ``sum log p(y | mu)``.
    value : float
        The Laplace ``-2 log L``.
    factor : object
        The engine's factor at the modes' weights.
    iterations : int
    """

    theta: np.ndarray
    beta: np.ndarray
    u: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    weights: np.ndarray
    ldL2: float
    cond_loglik: float
    value: float
    factor: object
    iterations: int

    @property
    def ussq(self) -> float:
        return float(self.u @ self.u)


def _amax(a: np.ndarray) -> float:
    """``max |a|`` (0 for an empty array; NaN when ``a`` has one)."""
    return float(np.abs(a).max()) if a.size else 0.0


class LaplaceObjective:
    """``-2 log L`` of the Laplace approximation as a function of ``(theta, beta)``.

    Parameters
    ----------
    family : Family
    data : GlmmData
    """

    def __init__(self, family: Family, data: GlmmData) -> None:
        self.family = family
        self.data = data
        self.pattern = CrossProductPattern(list(data.terms), data.n)
        self.zraws = [t.zraw for t in data.terms]
        self.sizes = [t.nlev * t.q for t in data.terms]
        self.Q = int(sum(self.sizes))
        # every term scalar: Z Lambda u as one gather (columns of u per row and term)
        self._u_cols = self._z_cols = None
        if all(t.q == 1 and t.rows is None for t in data.terms):
            offs = np.cumsum([0] + self.sizes)[:-1]
            self._u_cols = np.column_stack([t.codes + o for t, o in zip(data.terms, offs)])
            self._z_cols = np.column_stack([t.zraw[:, 0] for t in data.terms])
        self._systems: dict[bool, object] = {}
        self._u = np.zeros(self.Q)
        self.nevals = 0
        # an optional solver of the u-only system (templates, z, w) -> factor with
        # solution() and ldL2, used in place of the engine while it is set
        self.fast = None
        # the same for the joint system of (beta, u): (templates, X, z, w) -> factor
        # with solution(), ldL2 and rx()
        self.fast_joint = None
        # sum log p(y | mu) = saturated log-likelihood - deviance / 2: the constant
        # once, the deviance (accurate also for huge counts) per evaluation
        self.saturated_loglik = family.saturated_loglik(data.y, data.pw)
        # binomial rows with round(w y) != w y: the log-likelihood's counts (lme4's)
        self.count_gap = family.count_gap(data.y, data.pw)

    # ------------------------------------------------------------ pieces
    def zb(self, templates: list[np.ndarray], u: np.ndarray) -> np.ndarray:
        """``Z Lambda u`` (one value per row)."""
        if self._u_cols is not None:
            lam = np.array([T[0, 0] for T in templates])
            return (self._z_cols * u[self._u_cols]) @ lam
        out = np.zeros(self.data.n)
        off = 0
        for t, T, size in zip(self.data.terms, templates, self.sizes):
            b = u[off:off + size].reshape(t.nlev, t.q) @ T.T
            out += np.einsum("ij,ij->i", t.zraw, b[t.codes])
            off += size
        return out

    def _solve(self, joint: bool, X: np.ndarray, z: np.ndarray, w: np.ndarray,
               templates: list[np.ndarray]):
        cp = self.pattern.evaluate(self.zraws, X, z, weights=w, standardize=False,
                                   shift=np.zeros((X.shape[1], 1)))
        cp = cp.standardized()
        system = self._systems.get(joint)
        if system is None:
            system = self._systems[joint] = build_system(cp)
        else:
            system.refresh(cp)
        return system.factor(templates)

    def _state(self, eta_fixed: np.ndarray, zb: np.ndarray):
        d, fam = self.data, self.family
        eta = eta_fixed + zb
        if not fam.link.valid_eta(eta):
            return None
        mu = fam.link.linkinv(eta)
        mueta = fam.link.mu_eta(eta)
        w = fam.weights(mu, mueta, d.pw)
        dev = float(np.sum(fam.dev_resids(d.y, mu, d.pw)))
        return eta, mu, mueta, w, dev

    # ------------------------------------------------------------ PIRLS
    def pirls(self, theta: np.ndarray, beta: np.ndarray | None = None,
              u0: np.ndarray | None = None, joint: bool = False,
              joint_tol: float = _JOINT_TOL) -> PirlsState:
        """Converged modes at ``(theta, beta)`` (``joint``: ``beta`` updated too,
        until the linear predictor's step is below ``joint_tol`` relative: a start
        that is only compared and refined may take a looser one).

        Raises
        ------
        FitError
            The iteration cannot find a valid linear predictor or does not converge.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                return self._pirls(theta, beta, u0, joint, joint_tol)
            except FitError:
                start = self._u if u0 is None else np.asarray(u0, dtype=float)
                if not np.any(start):
                    raise
                # the warm start (modes of another point) may be far off: from u = 0
                return self._pirls(theta, beta, np.zeros(self.Q), joint, joint_tol)

    def _pirls(self, theta, beta, u0, joint, joint_tol=_JOINT_TOL) -> PirlsState:
        d, fam = self.data, self.family
        theta = np.asarray(theta, dtype=float)
        templates = d.layout.templates(theta)
        if beta is None:
            beta = self._start_beta()
        beta = np.asarray(beta, dtype=float)
        u = (self._u if u0 is None else np.asarray(u0, dtype=float)).copy()
        Xz = d.X if joint else np.zeros((d.n, 0))
        fixed = d.offset + d.X @ beta  # (the same throughout when beta is held)
        st = self._state(fixed, self.zb(templates, u))
        if st is None:  # the warm start is not valid: start at u = 0
            u = np.zeros(self.Q)
            st = self._state(fixed, np.zeros(d.n))
            if st is None:
                raise FitError("the starting linear predictor is outside the family's domain")
        last = False
        stalls, prev_size = 0, math.inf
        for it in range(1, _MAX_ITER + 1):
            eta, mu, mueta, w, dev = st
            pdev = dev + float(u @ u)
            base = d.offset if joint else fixed
            z = eta - base + (d.y - mu) / mueta
            try:
                if self.fast is not None and not joint:
                    f = self.fast(templates, z, w)
                elif self.fast_joint is not None and joint:
                    f = self.fast_joint(templates, d.X, z, w)
                else:
                    f = self._solve(joint, Xz, z, w, templates)
            except (NotPositiveDefinite, FitError):
                raise FitError("PIRLS: the penalized weighted least-squares system is "
                               "singular") from None
            b_new, u_new = f.solution()
            du = u_new - u
            db = (b_new - beta) if joint else np.zeros(0)
            size = max(_amax(du), _amax(db))
            if joint:
                # (beta, u) can be nearly confounded (an intercept and large random
                # intercepts): the linear predictor is what is well determined
                deta = self.zb(templates, du) + d.X @ db
                done = _amax(deta) <= joint_tol * (1.0 + _amax(eta))
            else:
                done = size <= _STEP_TOL * (1.0 + _amax(u))
            if last or done:
                break
            step = 1.0
            accepted = False
            for _ in range(40):
                u_try = u + step * du
                b_try = beta + step * db if joint else beta
                st_try = self._state(d.offset + d.X @ b_try if joint else fixed,
                                     self.zb(templates, u_try))
                if st_try is not None:
                    pdev_try = st_try[4] + float(u_try @ u_try)
                    if pdev_try <= pdev + 1e-12 * max(1.0, abs(pdev)):
                        accepted = True
                        break
                step *= 0.5
            if not accepted:
                if size > 1e-6 * (1.0 + _amax(u)):
                    raise FitError("PIRLS: no step decreases the penalized deviance (the "
                                   "modes are on the boundary of the link's domain)")
                break  # no decrease at rounding level: at the mode
            u, st = u_try, st_try
            if joint:
                beta = b_try
            # at rounding level (the steps stop shrinking, or a halved step gains
            # nothing): one more pass for the factor at these modes
            if size < 1e-8 * (1.0 + _amax(u)) and size > 0.5 * prev_size:
                stalls += 1
            prev_size = size
            if stalls >= 2 or (step < 1.0 and abs(pdev - pdev_try)
                               <= 1e-15 * max(1.0, abs(pdev))):
                last = True
        else:
            raise FitError(f"PIRLS did not converge in {_MAX_ITER} iterations")
        eta, mu, mueta, w, dev = st
        if fam.information == "observed":  # glmmTMB's log det (the modes are the same)
            try:
                f = self._solve(joint, Xz, z, fam.observed_weights(d.y, eta, d.pw), templates)
            except (NotPositiveDefinite, FitError):
                raise FitError("the observed information at the modes is not positive "
                               "definite") from None
        ll = self.saturated_loglik - 0.5 * dev
        value = -2.0 * self.saturated_loglik + dev + float(u @ u) + f.ldL2
        if self.count_gap is not None:  # glmer's logLik counts round(w y) successes
            gap = self.count_gap.value(mu)
            ll += gap
            value -= 2.0 * gap
        self._u = u.copy()
        self.nevals += 1
        return PirlsState(theta.copy(), beta.copy(), u, eta, mu, w, float(f.ldL2), ll,
                          float(value), f, it)

    def start_beta(self) -> np.ndarray:
        """Weighted least squares of the linearized starting means on ``X``."""
        return self._start_beta()

    def _start_beta(self) -> np.ndarray:
        """Weighted least squares of the linearized starting means on ``X``."""
        d, fam = self.data, self.family
        mu = fam.mustart(d.y, d.pw)
        eta = fam.link.linkfun(mu)
        w = fam.weights(mu, fam.link.mu_eta(eta), d.pw)
        sw = np.sqrt(w)
        return np.linalg.lstsq(sw[:, None] * d.X, sw * (eta - d.offset), rcond=None)[0]

    def __call__(self, theta: np.ndarray, beta: np.ndarray) -> float:
        """The Laplace ``-2 log L`` at ``(theta, beta)`` (``inf`` where PIRLS fails)."""
        try:
            return self.pirls(theta, beta).value
        except FitError:
            return math.inf
