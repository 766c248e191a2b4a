"""Profiled REML and ML deviance as a closure over ``theta``.

The stages follow lme4: :class:`ProfiledDeviance` builds the objective from the
cross-products of ``[Z X Y]`` (:mod:`mixedanova.likelihood.crossprod`, laid out
by :func:`mixedanova.likelihood.system.build_system`),
:func:`mixedanova.likelihood.optimizer.optimize_theta` minimizes it under the
bounds, :func:`mixedanova.likelihood.convergence.check_convergence` inspects the
optimum, and :func:`fit_state` packs the estimates into a
:class:`~mixedanova.likelihood.state.FitState`.  Each stage can be called on its own.

With ``L`` the blocked Cholesky factor at ``theta``, ``ldL2 = log|L_Z|^2``,
``ldRX2 = log|R_X|^2`` and ``pwrss`` the penalized residual sum of squares:

* ML deviance:     ``ldL2 + n (1 + log(2 pi pwrss / n))``
* REML criterion:  ``ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))``
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .blocked import FactorBase, NotPositiveDefinite, TermData, tri_inv
from .crossed import CrossedSystem
from .crossed_blocked import BlockedCrossedSystem
from .crossprod import CrossProducts, RowBlock, cross_products
from .state import FitState, OptimizerSummary
from .system import build_system
from ..design.theta import ThetaLayout

if TYPE_CHECKING:  # annotation of state_at only
    from ..moments.moments import AnovaFitState

__all__ = ["CHUNK_ROWS", "REFINE_FRACTION", "ProfiledDeviance", "row_block_rss",
           "gradient_jacobian", "fit_state", "state_at", "state_at_moments"]

_LOG2PI = math.log(2.0 * math.pi)
CHUNK_ROWS = 1 << 20  # in-memory rows summed in chunks of this many (from_rows)
REFINE_FRACTION = 1e-4  # recompute pwrss from the rows below this fraction of |y_std|^2
_TINY = 1e-7
_MOVE = 1e-6


class ProfiledDeviance:
    """The profiled deviance (ML) or REML criterion as a function of ``theta``.

    Parameters
    ----------
    cp : CrossProducts
        Cross-products of ``[Z X Y]`` (:mod:`mixedanova.likelihood.crossprod`):
        the only input that the evaluations read.
    layout : ThetaLayout
        Where each term's template entries sit in ``theta``.
    reml : bool
        REML criterion (True) or ML deviance (False).
    rows : sequence of RowBlock, optional
        The rows behind ``cp`` (one block per chunk), for the one pass that
        needs them: the explicit penalized residual sum of squares when the
        random effects explain nearly all of the response (see
        :meth:`explicit_pwrss`).  Without rows that refinement is skipped.

    Notes
    -----
    The objective protocol that the optimizer, the convergence check and the
    working coordinates rely on (a residual-structure or GLMM objective
    implements the same): ``layout``, ``reml``, ``n``, ``p``, ``start``,
    ``column_scales``, ``nevals``; ``__call__(theta)`` (``inf`` outside the
    domain), ``value_and_gradient(theta)``, ``gradient(theta)``,
    ``covariance_gradient(theta, k)``, ``factor(theta)`` (the state at
    ``theta``), ``from_factor(f)``, ``sigma(f)``, ``at_sigma(theta, sigma)`` and
    ``transformed(maps)`` (the same objective on ``Z_k C_k``).
    """

    def __init__(self, cp: CrossProducts, layout: ThetaLayout, reml: bool = True,
                 rows: Sequence[RowBlock] | None = None) -> None:
        self.layout = layout
        self.reml = reml
        self.cp = cp.standardized()
        self.rows = tuple(rows) if rows is not None else ()
        self.n, self.p = self.cp.n, self.cp.p
        self.k = self.cp.k
        self.nlevs = [t.nlev for t in self.cp.terms]
        self.system = build_system(self.cp)
        # RMS of each random-effects column: the unit in which a relative
        # variance of that column contributes about 1 to Var(y) / sigma^2
        self.column_scales = [s.rms for s in self.cp.stats]
        diag = layout.diagonal_mask()
        vector = np.repeat([q > 1 for q in layout.qs], [q * (q + 1) // 2 for q in layout.qs])
        self._vector_diag = diag & vector
        self._diag = diag
        self._grad_index = []  # (template row, column) of each theta entry, per term
        for q in layout.qs:
            r, c = np.tril_indices(q)
            order = np.lexsort((r, c))  # theta runs down each column
            self._grad_index.append((c[order], r[order]))
        self.start = layout.start()
        if isinstance(self.system, (CrossedSystem, BlockedCrossedSystem)) and self.k == 1:
            self.start = _moment_start(self.cp, layout)
        self.nevals = 0
        self._last: tuple[np.ndarray, FactorBase] | None = None

    @classmethod
    def from_rows(cls, terms: list[TermData], layout: ThetaLayout, X: np.ndarray,
                  y: np.ndarray, reml: bool = True,
                  chunk_rows: int | None = None) -> "ProfiledDeviance":
        """The objective of one piece of data held in memory (its rows are kept
        for :meth:`explicit_pwrss`).

        More than ``chunk_rows`` rows (default :data:`CHUNK_ROWS`) are
        accumulated ``chunk_rows`` at a time
        (:func:`~mixedanova.likelihood.chunk_products.accumulate_rows`, as the
        partitions of a Dask fit): the set-up then needs one chunk's temporaries
        and level-sized sums, not row-sized index arrays of every pair of terms.
        """
        chunk_rows = CHUNK_ROWS if chunk_rows is None else int(chunk_rows)
        if len(y) > chunk_rows and all(t.rows is None for t in terms):
            from .chunk_products import accumulate_rows
            cp = accumulate_rows(terms, X, y, chunk_rows)
        else:
            cp = cross_products(terms, X, y)
        return cls(cp, layout, reml, rows=(RowBlock(tuple(terms), X, y),))

    def transformed(self, maps: list[np.ndarray]) -> "ProfiledDeviance":
        """The same objective for ``Z_k C_k`` (working coordinates)."""
        rows = tuple(b.transformed(maps) for b in self.rows)
        return type(self)(self.cp.transformed(maps), self.layout, self.reml, rows=rows)

    @property
    def dof(self) -> int:
        """Degrees of freedom in the residual term: ``n - p`` (REML) or ``n`` (ML)."""
        return self.n - self.p if self.reml else self.n

    def factor(self, theta: np.ndarray) -> FactorBase:
        """Blocked Cholesky factor at ``theta`` (the last one is kept and reused)."""
        theta = np.asarray(theta, dtype=float)
        if self._last is not None and np.array_equal(self._last[0], theta):
            return self._last[1]
        templates = self.layout.templates(theta)
        # the previous factor goes before the next is formed (at 10^4 levels beyond the
        # first term its Schur complement is 0.8 GB); a layout that can form the next
        # in its memory gets it when nothing else holds it (as many references as a
        # fresh object named in this frame)
        spare = None if self._last is None else self._last[1]
        self._last = None
        probe = object()
        if spare is not None and not (getattr(self.system, "takes_spare", False)
                                      and sys.getrefcount(spare) <= sys.getrefcount(probe)):
            spare = None
        if spare is None:
            f = self.system.factor(templates)
        else:
            f = self.system.factor(templates, spare=spare)
            spare = None
        if self.k == 1 and self.rows and self.pwrss_cancels(f):
            f.pwrss_std = self.explicit_pwrss(f, templates)
        self._last = (theta.copy(), f)
        return f

    def pwrss_cancels(self, f: FactorBase) -> bool:
        """The penalized residual sum of squares of ``f`` is below
        :data:`REFINE_FRACTION` of the standardized response's: the random effects
        explain nearly all of it, and as a difference of cross-products it (and
        anything else taken from them) keeps only a few digits."""
        return f.pwrss_std < REFINE_FRACTION * self.n

    def explicit_pwrss(self, f: FactorBase, templates: list[np.ndarray]) -> float:
        """``|y - X beta - Z Lambda u|^2 + |u|^2`` from the solution, row by row.

        The factor's own ``pwrss`` is a difference of cross-products; when the
        random effects explain nearly all of the response it cancels to a few
        digits.  The sum of squares at the computed solution is accurate to
        second order in the solution's error (lme4 computes it this way).  This
        is the one pass over the rows after set-up: it streams over the row
        blocks (chunks), on the standardized response.
        """
        beta, u = f._solution_std()
        shift, scale = self.cp.shift[:, 0], float(self.cp.scale[0])
        offs = np.cumsum([0] + [t.nlev * t.q for t in self.cp.terms])
        bs = [u[offs[k]:offs[k + 1]].reshape(t.nlev, t.q) @ T.T
              for k, (t, T) in enumerate(zip(self.cp.terms, templates))]
        total = float(u @ u)
        for block in self.rows:
            total += row_block_rss(block, shift, scale, beta, bs)
        return total

    def criteria(self, theta: np.ndarray) -> np.ndarray:
        """The objective of each of the ``k`` response columns at ``theta``, from
        one factorization (``inf`` where the system is not positive definite)."""
        theta = np.asarray(theta, dtype=float)
        try:
            f = self.system.factor(self.layout.templates(theta))
        except NotPositiveDefinite:
            return np.full(self.k, math.inf)
        dof = self.dof
        dev = f.ldL2 + dof * (1.0 + _LOG2PI + np.log(f.pwrss_all / dof)
                              + 2.0 * np.log(f.y_scales))
        return dev + f.ldRX2 if self.reml else dev

    def from_factor(self, f: FactorBase) -> float:
        """Profiled objective from a factor (``pwrss`` enters through its
        standardized value and the scale, so a huge response loses no digits)."""
        dof = self.dof
        dev = f.ldL2 + dof * (1.0 + _LOG2PI + math.log(f.pwrss_std / dof)
                              + 2.0 * math.log(f.y_scale))
        return dev + f.ldRX2 if self.reml else dev

    def __call__(self, theta: np.ndarray) -> float:
        self.nevals += 1
        try:
            return self.from_factor(self.factor(theta))
        except NotPositiveDefinite:
            return math.inf

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and its analytic gradient in ``theta``.

        With ``M`` the augmented matrix, ``M_xz`` the same without the ``y`` row and
        column and ``Omega`` its random-effects block, the REML criterion is
        ``(1 - nu) log|M_xz| + nu log|M| + const`` (``nu = n - p``) and the ML
        deviance ``log|Omega| + n (log|M| - log|M_xz|) + const``.  For a matrix
        ``D'AD + J`` with ``D = diag(Lambda, I)``, the derivative of its log
        determinant in the template entry ``T_k[s, t]`` is
        ``2 (nlev_k T_k^{-1} - S_k T_k^{-1})[t, s]``, where ``S_k`` sums the
        diagonal blocks of the inverse over the term's levels.
        """
        theta = np.asarray(theta, dtype=float)
        self.nevals += 1
        try:
            f = self.factor(theta)
        except NotPositiveDefinite:
            return math.inf, np.zeros_like(theta)
        value = self.from_factor(f)
        grad = np.empty_like(theta)
        templates = self.layout.templates(theta)
        # A template with a zero diagonal has no inverse.  A scalar term's slope
        # there is exactly 0 (the objective is even in it); for a vector term the
        # gradient is taken at the diagonal moved to 1e-6, which it changes by
        # O(1e-6) because the gradient is continuous.
        if np.any(theta[self._vector_diag] < _TINY):
            moved = theta.copy()
            moved[self._diag & (moved < _TINY)] = _MOVE
            templates = self.layout.templates(moved)
            try:
                f = self.factor(moved)
            except NotPositiveDefinite:
                return value, np.zeros_like(theta)
        sums = f.inverse_block_sums()
        for k, T in enumerate(templates):
            q, off = T.shape[0], self.layout.offsets[k]
            n_k = q * (q + 1) // 2
            if q == 1 and T[0, 0] == 0.0:
                grad[off] = 0.0
                continue
            comb = self._comb(sums[k])
            if q == 1:
                grad[off] = 2.0 * (self.nlevs[k] - comb[0, 0]) / T[0, 0]
                continue
            g = 2.0 * (self.nlevs[k] * np.eye(q) - comb) @ tri_inv(T)
            gi, gj = self._grad_index[k]
            grad[off:off + n_k] = g[gi, gj]
        return value, grad

    def covariance_gradient(self, theta: np.ndarray, k: int) -> np.ndarray:
        """Gradient of the objective in term ``k``'s relative covariance ``T_k T_k'``.

        ``G_k = T_k^{-T} (nlev_k I - comb_k) T_k^{-1}`` with ``comb_k`` as in
        :meth:`value_and_gradient` (so that the gradient in ``T_k`` is
        ``2 G_k T_k``); ``T_k``'s diagonal must be positive.  A covariance on
        the boundary of the positive semidefinite cone is optimal only where
        ``G_k`` is positive semidefinite (see :mod:`.boundary`).
        """
        theta = np.asarray(theta, dtype=float)
        T = self.layout.templates(theta)[k]
        sums = self.factor(theta).inverse_block_sums()[k]
        Tinv = tri_inv(T)
        G = Tinv.T @ (self.nlevs[k] * np.eye(T.shape[0]) - self._comb(sums)) @ Tinv
        return 0.5 * (G + G.T)

    def _comb(self, sums: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """The combination of inverse block sums the objective's derivative needs."""
        s_om, s_xz, s_full = sums
        if self.reml:
            return s_xz + (self.n - self.p) * (s_full - s_xz)
        return s_om + self.n * (s_full - s_xz)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """Analytic gradient (see :meth:`value_and_gradient`)."""
        return self.value_and_gradient(theta)[1]

    def at_sigma(self, theta: np.ndarray, sigma: float) -> float:
        """Objective with ``sigma`` given instead of profiled out (lmerTest's ``devfun_vp``)."""
        f = self.factor(theta)
        dev = f.ldL2 + self.dof * (_LOG2PI + 2.0 * math.log(sigma)) + f.pwrss / sigma**2
        return dev + f.ldRX2 if self.reml else dev

    def sigma(self, f: FactorBase) -> float:
        """Residual SD at the factor: ``sqrt(pwrss / (n - p))`` (REML) or ``/ n`` (ML)."""
        return math.sqrt(f.pwrss / self.dof)


def row_block_rss(block: RowBlock, shift: np.ndarray, scale: float, beta: np.ndarray,
                  bs: list[np.ndarray]) -> float:
    """``|y~ - X beta - Z b|^2`` of one block of rows on the standardized response
    ``y~ = (y - X shift) / scale`` (``bs``: each term's random effects by level, in
    the block's coordinates); the row part of
    :meth:`ProfiledDeviance.explicit_pwrss`."""
    X = block.X
    y = np.asarray(block.y, dtype=float)
    r = ((y - X @ shift) if X.shape[1] else y) / scale - X @ beta
    for t, b in zip(block.terms, bs):
        zb = np.einsum("ij,ij->i", t.zraw, b[t.codes])
        if t.rows is not None:  # a whitened term: entries summed into their rows
            zb = np.bincount(t.rows, weights=zb, minlength=len(r))
        r = r - zb
    return float(r @ r)


def gradient_jacobian(dev: ProfiledDeviance, x: np.ndarray, idx: np.ndarray,
                      g0: np.ndarray | None = None) -> np.ndarray:
    """Symmetrized Jacobian of the analytic gradient over the entries ``idx``.

    Forward differences from ``g0`` (the gradient at ``x`` over ``idx``) when it is
    given, one gradient per entry; central differences otherwise.  A step that
    would cross the lower bound is taken upwards.
    """
    lower = dev.layout.lower
    H = np.empty((len(idx), len(idx)))
    for a, i in enumerate(idx):
        h = 1e-5 * max(abs(x[i]), 1e-2)
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        if g0 is not None or xm[i] < lower[i]:
            if g0 is None:
                g0 = dev.gradient(x)[idx]
            H[:, a] = (dev.gradient(xp)[idx] - g0) / h
        else:
            H[:, a] = (dev.gradient(xp)[idx] - dev.gradient(xm)[idx]) / (2 * h)
    return 0.5 * (H + H.T)


def _moment_start(cp: CrossProducts, layout: ThetaLayout) -> np.ndarray:
    """Starting ``theta`` from one-way ANOVA estimates on the OLS residuals.

    For each random intercept ``(1|g)``: ``s2_g = (MSB - MSW) / n0`` of the
    residuals grouped by ``g``; ``theta_g = sqrt(s2_g / s2_e)`` with ``s2_e`` the
    residual variance left after the terms, floored at 0.1 so that no start sits
    on the boundary.  Other terms keep lme4's start.  Read off the standardized
    cross-products (whose response is the OLS residual): level counts, level sums
    and ``r'r``, so that ``sum (r - mean_l)^2 = r'r - sum n_l mean_l^2``.
    """
    theta = layout.start()
    p, n = cp.p, cp.n
    rr = float(cp.xy[p, p])
    total = rr / max(n - p, 1)
    est = {}
    for k, (t, st) in enumerate(zip(cp.terms, cp.stats)):
        if t.q != 1 or not st.ones[0] or not t.one_per_row:
            continue
        nl = cp.diag_blocks(k)[:, 0, 0]
        sums = cp.zxy[k][:, p, 0]
        means = sums / np.maximum(nl, 1.0)
        J = t.nlev
        rbar = float(sums.sum()) / n
        msb = float(np.sum(nl * (means - rbar) ** 2)) / (J - 1)
        msw = max(rr - float(np.sum(nl * means * means)), 0.0) / max(n - J, 1)
        n0 = (n - float(np.sum(nl**2)) / n) / (J - 1)
        est[k] = max((msb - msw) / n0, 0.0)
    s2e = max(total - sum(est.values()), 0.1 * total)
    for k, v in est.items():
        theta[layout.offsets[k]] = max(np.sqrt(v / s2e), 0.1)
    return theta


def fit_state(dev: ProfiledDeviance, opt: OptimizerSummary, convergence=None) -> FitState:
    """Pack the estimates at the optimum into a :class:`FitState`."""
    f = dev.factor(opt.theta)
    beta, u = f.solution()
    sigma = dev.sigma(f)
    return FitState(method="REML" if dev.reml else "ML", theta=opt.theta, sigma=sigma,
                    beta=beta, u=u, objective=dev.from_factor(f),
                    vcov_beta=sigma**2 * f.vcov_unscaled(), factor=f, optimizer=opt,
                    convergence=convergence)


def state_at(dev: ProfiledDeviance, theta: np.ndarray, sigma: float, method: str,
             moments: AnovaFitState | None = None) -> FitState:
    """Estimates at given variance parameters (GLS ``beta``, BLUPs from the mixed
    model equations), e.g. at method-of-moments estimates (``moments``, kept in
    :attr:`FitState.moments`)."""
    f = dev.factor(theta)
    beta, u = f.solution()
    return FitState(method=method, theta=np.asarray(theta, dtype=float), sigma=float(sigma),
                    beta=beta, u=u, objective=dev.at_sigma(theta, sigma),
                    vcov_beta=sigma**2 * f.vcov_unscaled(), factor=f, optimizer=None,
                    convergence=None, moments=moments)


def state_at_moments(dev: ProfiledDeviance, moments: AnovaFitState,
                     groups: list[str]) -> FitState:
    """:func:`state_at` the method-of-moments estimates (truncated at 0):
    ``theta`` of each random-intercept term ``groups[i]`` (its name in the moment
    estimates, e.g. ``"batch:cask"``) relative to the residual SD."""
    est = moments.estimates_truncated
    s2e = float(est["Residual"])
    theta = np.array([math.sqrt(float(est[g]) / s2e) for g in groups])
    return state_at(dev, theta, math.sqrt(s2e), "ANOVA", moments=moments)
