"""Marginal (GLS) models with a visit covariance per subject: nlme's ``gls``, mmrm.

``y_i ~ N(X_i beta, Sigma_i(theta))`` for independent subjects ``i``, with
``Sigma_i`` the visit covariance (:class:`~mixedanova.likelihood.visit_cov.VisitCovariance`,
one per covariance group) restricted to the visits subject ``i`` has.  Every
subject is stored padded to all ``m`` visits (zero rows for absent visits, and
``V_i = Sigma_i^{-1}`` embedded with zeros), so that the derivatives of
``Sigma`` are the same ``m x m`` matrices for all subjects of a group.  Each
visit pattern's submatrix is factored once per parameter value.

With ``P = V - V X Phi X'V``, ``Phi = (X'VX)^{-1}``, ``r = y - X beta``,
``v = V r`` and ``Sigma_h = dSigma / dtheta_h``, the REML criterion
``-2 l = (N - p) log 2pi + log|Sigma| + log|X'VX| + r'V r`` has

* gradient ``tr(P Sigma_h) - v'Sigma_h v = <B, Sigma_h>`` with
  ``B = sum_i (V_i - M_i Phi M_i' - v_i v_i')``, ``M_i = V_i X_i``
  (``O(N m^2 p)``);
* Hessian ``tr(P Sigma_hj) - tr(P Sigma_h P Sigma_j) + 2 v'Sigma_h P Sigma_j v
  - v'Sigma_hj v``, every trace a sum over subjects (``M_i``, ``V_i Sigma_h``,
  ``Sigma_h v_i``) of small matrices.

ML drops the ``X`` corrections of the two traces.  The same pieces give the
Kenward-Roger matrices (mmrm's ``P_h = X' dV/dtheta_h X``,
``Q_hj = X'V Sigma_h V Sigma_j V X``, ``R_hj = X'V Sigma_hj V X``).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .threads import one_blas_thread
from .visit_cov import VisitCovariance

__all__ = ["MarginalData", "MarginalCriterion", "MarginalFit", "MarginalEval",
           "fit_marginal", "kenward_roger_pieces", "one_blas_thread", "free_inverse"]



@dataclass
class Pattern:
    """Subjects of one covariance group with the same visits present.

    ``Xt`` is ``(mv, n, p)`` and ``yt`` ``(mv, n)``: visit-major, the ``mv``
    visits present (positions ``visits``) by the ``n`` subjects ``subjects``.
    """

    group: int
    visits: np.ndarray
    subjects: np.ndarray
    Xt: np.ndarray
    yt: np.ndarray

    @functools.cached_property
    def ix(self) -> tuple[np.ndarray, np.ndarray]:
        """``np.ix_`` of the visits present (the submatrix of an ``m x m`` matrix)."""
        return np.ix_(self.visits, self.visits)

    @property
    def n(self) -> int:
        return len(self.subjects)


@dataclass(frozen=True)
class MarginalData:
    """Rows arranged by covariance group, visit pattern, visit and subject.

    Attributes
    ----------
    patterns : tuple of Pattern
    m : int
        Number of visit levels.
    n_groups : int
        Number of covariance groups.
    nobs, p : int
    """

    patterns: tuple[Pattern, ...]
    m: int
    n_groups: int
    nobs: int
    p: int

    @classmethod
    def from_rows(cls, X: np.ndarray, y: np.ndarray, subject: np.ndarray, visit: np.ndarray,
                  m: int, group: np.ndarray | None = None, n_groups: int = 1) -> "MarginalData":
        """Arrange rows (``subject`` codes 0..S-1, ``visit`` positions 0..m-1, ``group``
        the covariance group of each row, constant within a subject)."""
        subject = np.asarray(subject, dtype=np.intp)
        visit = np.asarray(visit, dtype=np.intp)
        S = int(subject.max()) + 1
        p = X.shape[1]
        row = np.full((S, m), -1, dtype=np.intp)
        row[subject, visit] = np.arange(len(subject))
        mask = row >= 0
        g = np.zeros(S, dtype=np.intp)
        if group is not None:
            g[subject] = np.asarray(group, dtype=np.intp)
        bits = mask @ (1 << np.arange(m, dtype=np.int64))
        key = g.astype(np.int64) * (1 << m) + bits
        present = mask.any(axis=1)
        uniq, inv = np.unique(key[present], return_inverse=True)
        subj_all = np.flatnonzero(present)
        pats = []
        for i, u in enumerate(uniq):
            subj = subj_all[inv == i]
            vis = mask[subj[0]].copy()
            rows = row[subj][:, vis].T                      # (mv, n)
            pats.append(Pattern(int(u // (1 << m)), vis, subj, X[rows], y[rows]))
        return cls(tuple(pats), m, n_groups, int(mask.sum()), p)


@dataclass
class PatternEval:
    """Per-pattern pieces at one ``theta``: ``V`` (``mv x mv``), ``M = V X``
    (``(mv, n, p)``), ``v = V r`` (``(mv, n)``)."""

    V: np.ndarray
    M: np.ndarray
    v: np.ndarray
    S4: np.ndarray | None = None


@dataclass
class MarginalEval:
    """Everything computed at one ``theta``."""

    theta: np.ndarray
    value: float
    beta: np.ndarray
    phi: np.ndarray
    pats: list
    logdet: float
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None
    D1: list | None = None  # per group (k_g, m, m)
    D2: list | None = None  # per group (k_g, k_g, m, m)
    B: list | None = None   # per group: the gradient's m x m matrix
    PP: np.ndarray | None = None  # (k, p, p): X'V Sigma_h V X = -d(X'VX)/dtheta_h


class MarginalCriterion:
    """``-2 log-likelihood`` (REML or ML) over ``theta`` (all groups' parameters stacked).

    Parameters
    ----------
    data : MarginalData
    cov : VisitCovariance
        The structure (one per covariance group, same kind and visits).
    reml : bool
    """

    def __init__(self, data: MarginalData, cov: VisitCovariance, reml: bool = True) -> None:
        self.data, self.cov, self.reml = data, cov, reml
        self.k_g = cov.n_par
        self.k = cov.n_par * data.n_groups
        self.nevals = 0

    @property
    def dof(self) -> int:
        return self.data.nobs - self.data.p if self.reml else self.data.nobs

    def slices(self) -> list[slice]:
        return [slice(g * self.k_g, (g + 1) * self.k_g) for g in range(self.data.n_groups)]

    def sigmas(self, theta: np.ndarray) -> list[np.ndarray]:
        return [self.cov.matrix(theta[s]) for s in self.slices()]

    def evaluate(self, theta: np.ndarray, order: int = 0) -> MarginalEval | None:
        """Criterion (and gradient, Hessian for ``order`` 1, 2); ``None`` when some
        ``Sigma_i`` is not positive definite."""
        self.nevals += 1
        d = self.data
        theta = np.asarray(theta, dtype=float)
        p = d.p
        if order >= 1:
            der = [self.cov.derivatives(theta[s], second=order >= 2) for s in self.slices()]
            sig = [t[0] for t in der]
        else:
            sig = self.sigmas(theta)
        logdet = 0.0
        XVX = np.zeros((p, p))
        XVy = np.zeros(p)
        pats = []
        for pat in d.patterns:
            sub = sig[pat.group][pat.ix]
            try:
                L = np.linalg.cholesky(sub)
            except np.linalg.LinAlgError:
                return None
            Li = np.linalg.inv(L)
            V = Li.T @ Li
            mv, n = pat.yt.shape
            M = (V @ pat.Xt.reshape(mv, n * p)).reshape(mv, n, p)
            Mf = M.reshape(mv * n, p)
            XVX += pat.Xt.reshape(mv * n, p).T @ Mf
            XVy += Mf.T @ pat.yt.reshape(mv * n)
            logdet += n * 2.0 * float(np.sum(np.log(np.diag(L))))
            pats.append(PatternEval(V, M, None))
        try:
            C = np.linalg.cholesky(XVX)
        except np.linalg.LinAlgError:
            return None
        Ci = np.linalg.inv(C)
        phi = Ci.T @ Ci
        beta = phi @ XVy
        q = 0.0
        for pat, pe in zip(d.patterns, pats):
            r = pat.yt - pat.Xt @ beta
            pe.v = pe.V @ r
            q += float(np.sum(r * pe.v))
        return self._finish(theta, C, beta, phi, pats, logdet, q,
                            der if order >= 1 else None, order)

    def _finish(self, theta: np.ndarray, C: np.ndarray, beta: np.ndarray, phi: np.ndarray,
                pats: list, logdet: float, q: float, der: list | None,
                order: int) -> MarginalEval:
        """The criterion from its pieces (``C``: Cholesky factor of ``X'V^-1X``, ``q``:
        the weighted residual sum of squares), with the gradient and Hessian for
        ``order`` 1, 2 (``der``: the covariance derivatives per group)."""
        N, p = self.data.nobs, self.data.p
        if self.reml:
            value = (N - p) * math.log(2 * math.pi) + logdet + 2.0 * float(
                np.sum(np.log(np.diag(C)))) + q
        else:
            value = N * math.log(2 * math.pi) + logdet + q
        ev = MarginalEval(theta, value, beta, phi, pats, logdet)
        if order >= 1:
            ev.D1 = [t[1] for t in der]
            ev.D2 = [t[2] for t in der]
            self._gradient(ev)
        if order >= 2:
            self._hessian(ev)
        return ev

    def _gradient(self, ev: MarginalEval) -> None:
        m, p = self.data.m, self.data.p
        B = [np.zeros((m, m)) for _ in range(self.data.n_groups)]
        for pat, pe in zip(self.data.patterns, ev.pats):
            mv, n = pat.yt.shape
            Bs = n * pe.V - pe.v @ pe.v.T
            if self.reml:
                MP = (pe.M.reshape(mv * n, p) @ ev.phi).reshape(mv, n * p)
                Bs -= MP @ pe.M.reshape(mv, n * p).T
            B[pat.group][pat.ix] += Bs
        ev.B = B
        g_all = np.zeros(self.k)
        for g, sl in enumerate(self.slices()):
            g_all[sl] = np.tensordot(ev.D1[g], B[g], axes=([1, 2], [0, 1]))
        ev.gradient = g_all

    @staticmethod
    def outer_sums(pe: PatternEval) -> np.ndarray:
        """``sum_i M_i[a, :] (x) M_i[b, :]`` over the pattern's subjects, as an
        ``(mv^2, p^2)`` matrix (rows ``(a, b)``, columns ``(p, q)``); cached."""
        if getattr(pe, "S4", None) is None:
            mv, n, p = pe.M.shape
            Mr = pe.M.transpose(0, 2, 1).reshape(mv * p, n)
            S4 = (Mr @ Mr.T).reshape(mv, p, mv, p)
            pe.S4 = S4.transpose(0, 2, 1, 3).reshape(mv * mv, p * p)
        return pe.S4

    def residual_outer(self, pe: PatternEval) -> np.ndarray:
        """``sum_i v_i v_i'`` over the pattern's subjects (``v_i = V r_i``)."""
        return pe.v @ pe.v.T

    def nbar(self, pe: PatternEval, phi: np.ndarray) -> np.ndarray:
        """``sum_i M_i Phi M_i'`` over the pattern's subjects."""
        mv = pe.V.shape[0]
        return (self.outer_sums(pe) @ phi.ravel()).reshape(mv, mv)

    def design_residual_sums(self, pat, pe: PatternEval, beta: np.ndarray) -> np.ndarray:
        """``sum_i M_i[a, :] v_i[b]`` over the pattern's subjects, as an ``(mv^2, p)``
        matrix (rows ``(a, b)``)."""
        mv, n, p = pe.M.shape
        T = (pe.M.transpose(0, 2, 1).reshape(mv * p, n) @ pe.v.T).reshape(mv, p, mv)
        return T.transpose(0, 2, 1).reshape(mv * mv, p)

    def _hessian(self, ev: MarginalEval) -> None:
        """Hessian of ``-2 l`` (see the module docstring).  Within a visit pattern
        ``V`` is common, so every sum over subjects collapses to pattern-level
        ``mv x mv`` matrices: ``sum_i M_i Phi M_i'``, ``sum_i v_i v_i'`` and the
        outer sums of :meth:`outer_sums`."""
        k, kg, p = self.k, self.k_g, self.data.p
        H = np.zeros((k, k))
        F = np.zeros((k, p))            # f_h = sum_i M_i' Sigma_h v_i
        PP = np.zeros((k, p, p))        # X'V Sigma_h V X
        sls = self.slices()
        for g, sl in enumerate(sls):
            H[sl, sl] += np.tensordot(ev.D2[g], ev.B[g], axes=([2, 3], [0, 1]))
        for pat, pe in zip(self.data.patterns, ev.pats):
            g, sl = pat.group, sls[pat.group]
            vis = pat.visits
            mv, n = pe.V.shape[0], pat.n
            D1 = ev.D1[g][:, vis][:, :, vis]
            V = pe.V
            S4 = self.outer_sums(pe)
            E = V @ D1                                              # V Sigma_h
            DV = D1 @ V                                             # Sigma_h V
            Ef = DV.reshape(kg, -1)
            Hg = -n * (E.reshape(kg, -1) @ E.transpose(0, 2, 1).reshape(kg, -1).T)
            Y = self.residual_outer(pe)                             # sum_i v_i v_i'
            Hg += 2.0 * (Ef @ (D1 @ Y).transpose(0, 2, 1).reshape(kg, -1).T)
            if self.reml:
                Nbar = self.nbar(pe, ev.phi)                        # sum_i M_i Phi M_i'
                Hg += 2.0 * (Ef @ (D1 @ Nbar).transpose(0, 2, 1).reshape(kg, -1).T)
            D1f = D1.reshape(kg, mv * mv)
            F[sl] += D1f @ self.design_residual_sums(pat, pe, ev.beta)
            PP[sl] += (D1f @ S4).reshape(kg, p, p)
            H[sl, sl] += Hg
        H -= 2.0 * F @ ev.phi @ F.T
        if self.reml:
            PhiP = np.einsum("ij,hjk->hik", ev.phi, PP)
            H -= np.einsum("hij,gji->hg", PhiP, PhiP)
        ev.hessian = 0.5 * (H + H.T)
        ev.PP = 0.5 * (PP + PP.transpose(0, 2, 1))


@dataclass(frozen=True)
class MarginalFit:
    """Estimates of a marginal model (kept in ``FitState.residual.info``)."""

    theta: np.ndarray
    value: float
    beta: np.ndarray
    vcov_beta: np.ndarray
    hessian: np.ndarray          # of -2 log-likelihood in theta
    gradient: np.ndarray
    iterations: int
    converged: bool
    message: str
    seconds: float
    free: np.ndarray | None = None   # parameters not held fixed


def _rough_covariance(data: MarginalData) -> list[np.ndarray]:
    """Pairwise covariance of OLS residuals per group (a start)."""
    p, m = data.p, data.m
    XX, Xy = np.zeros((p, p)), np.zeros(p)
    for pat in data.patterns:
        Xf = pat.Xt.reshape(-1, p)
        XX += Xf.T @ Xf
        Xy += Xf.T @ pat.yt.ravel()
    beta = np.linalg.lstsq(XX, Xy, rcond=None)[0]
    out = []
    for g in range(data.n_groups):
        num, cnt = np.zeros((m, m)), np.zeros((m, m))
        for pat in data.patterns:
            if pat.group != g:
                continue
            r = pat.yt - pat.Xt @ beta
            num[pat.ix] += r @ r.T
            cnt[pat.ix] += pat.n
        C = num / np.maximum(cnt, 1.0)
        var = np.diag(C).copy()
        bad = var <= 0
        var[bad] = float(np.mean(var[~bad])) if np.any(~bad) else 1.0
        np.fill_diagonal(C, var)
        out.append(C)
    return out


def fit_marginal(crit: MarginalCriterion, theta0: np.ndarray | None = None,
                 maxiter: int = 200, fixed: dict[int, float] | None = None) -> MarginalFit:
    """Minimize the criterion: a trust-region Newton method with the exact
    gradient and Hessian (scipy's ``trust-exact``), then Newton polish steps.

    ``fixed`` holds parameters (by position in ``theta``) at given values; the
    others are optimized.  The returned gradient and Hessian are the full ones.
    """
    with one_blas_thread():
        return _fit_marginal(crit, theta0, maxiter, dict(fixed or {}))


def free_inverse(H: np.ndarray, free: np.ndarray) -> np.ndarray:
    """``2 H^{-1}`` over the free parameters, zero rows and columns for fixed ones
    (the covariance of ``theta`` when ``H`` is the Hessian of ``-2 l``)."""
    W = np.zeros_like(H)
    idx = np.flatnonzero(free)
    if idx.size:
        Hf = H[np.ix_(idx, idx)]
        W[np.ix_(idx, idx)] = 2.0 * np.linalg.pinv(0.5 * (Hf + Hf.T))
    return 0.5 * (W + W.T)


def _fit_marginal(crit: MarginalCriterion, theta0: np.ndarray | None,
                  maxiter: int, fixed: dict[int, float]) -> MarginalFit:
    t0 = time.perf_counter()
    if theta0 is None:
        theta0 = np.concatenate([crit.cov.start(C) for C in _rough_covariance(crit.data)])
    full = np.asarray(theta0, dtype=float).copy()
    for i, v in fixed.items():
        full[i] = v
    free = np.ones(len(full), dtype=bool)
    free[list(fixed)] = False
    cache: dict[bytes, MarginalEval | None] = {}

    def expand(x: np.ndarray) -> np.ndarray:
        t = full.copy()
        t[free] = x
        return t

    def get(x: np.ndarray) -> MarginalEval | None:
        key = np.asarray(x, dtype=float).tobytes()
        if key not in cache:
            if len(cache) > 4:
                cache.pop(next(iter(cache)))
            cache[key] = crit.evaluate(expand(x), order=2)
        return cache[key]

    def fun(x):
        ev = get(x)
        return math.inf if ev is None else ev.value

    def jac(x):
        ev = get(x)
        return np.zeros_like(x) if ev is None else ev.gradient[free]

    def hess(x):
        ev = get(x)
        return np.eye(len(x)) if ev is None else ev.hessian[np.ix_(free, free)]

    x = full[free]
    res = None
    if free.any():
        res = minimize(fun, x, jac=jac, hess=hess, method="trust-exact",
                       options={"gtol": 1e-9, "maxiter": maxiter})
        x = np.asarray(res.x, dtype=float)
    ev = get(x)
    it = 0 if res is None else int(res.nit)
    for _ in range(5):  # Newton polish
        if ev is None or not free.any() or np.max(np.abs(jac(x))) < 1e-10:
            break
        try:
            step = -np.linalg.solve(hess(x), jac(x))
        except np.linalg.LinAlgError:
            break
        cand = get(x + step)
        if cand is None or cand.value > ev.value + 1e-12 * abs(ev.value):
            break
        x, ev = x + step, cand
        it += 1
    if ev is None:
        raise ArithmeticError("the visit covariance is not positive definite at the optimum")
    g, H = jac(x), hess(x)
    try:
        newton = np.linalg.solve(H, g) if free.any() else np.zeros(0)
        ok = bool(np.all(np.abs(newton) < 1e-4) and np.all(np.linalg.eigvalsh(H) > 0))
    except np.linalg.LinAlgError:
        ok = False
    msg = "converged (trust-region Newton, exact Hessian)" if ok else (
        f"failed to converge: {getattr(res, 'message', '')}; max |gradient| "
        f"{np.max(np.abs(g)) if g.size else 0.0:.3g}")
    return MarginalFit(theta=expand(x), value=ev.value, beta=ev.beta, vcov_beta=ev.phi,
                       hessian=ev.hessian, gradient=ev.gradient, iterations=it, converged=ok,
                       message=msg, seconds=time.perf_counter() - t0, free=free)


def kenward_roger_pieces(crit: MarginalCriterion, theta: np.ndarray, W: np.ndarray,
                         linear: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mmrm's Kenward-Roger pieces at ``theta``: ``(Phi, P (k, p, p), Phi_A)``.

    ``W`` is the covariance of ``theta`` (inverse Hessian of ``-l``).
    ``Phi_A = Phi + 2 Phi [sum_hj W_hj (Q_hj - P_h Phi P_j - R_hj / 4)] Phi``;
    ``Q`` and ``R`` vanish between parameters of different covariance groups.
    ``linear`` drops ``R`` (mmrm's ``"Kenward-Roger-Linear"``).
    """
    with one_blas_thread():
        return _kenward_roger_pieces(crit, theta, W, linear)


def _kenward_roger_pieces(crit: MarginalCriterion, theta: np.ndarray, W: np.ndarray,
                          linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ev = crit.evaluate(theta, order=0)
    if ev is None:
        raise ArithmeticError("the visit covariance is not positive definite")
    k, kg, p = crit.k, crit.k_g, crit.data.p
    der = [crit.cov.derivatives(theta[sl], second=not linear) for sl in crit.slices()]
    sls = crit.slices()
    D2w = [None if linear else np.tensordot(W[sl, sl], der[g][2], axes=([0, 1], [0, 1]))
           for g, sl in enumerate(sls)]
    phi = ev.phi
    P = np.zeros((k, p, p))
    U = np.zeros((p, p))
    for pat, pe in zip(crit.data.patterns, ev.pats):
        g, sl = pat.group, sls[pat.group]
        vis = pat.visits
        mv = int(vis.sum())
        D1 = der[g][1][:, vis][:, :, vis]
        S4 = crit.outer_sums(pe)
        P[sl] -= (D1.reshape(kg, mv * mv) @ S4).reshape(kg, p, p)
        # sum_hj W_hj Sigma_h V Sigma_j, contracted with the outer sums: sum W_hj Q_hj
        WD = (W[sl, sl] @ D1.reshape(kg, -1)).reshape(kg * mv, mv)
        T = (D1 @ pe.V).transpose(1, 0, 2).reshape(mv, kg * mv) @ WD
        if not linear:
            T = T - 0.25 * D2w[g][pat.ix]                  # - sum W_hj R_hj / 4
        U += (T.reshape(1, mv * mv) @ S4).reshape(p, p)
    P = 0.5 * (P + P.transpose(0, 2, 1))
    PhiP = np.einsum("ij,hjk->hik", phi, P)
    U -= np.einsum("hj,hik,jkl->il", W, P, PhiP)              # sum W_hj P_h Phi P_j
    U = 0.5 * (U + U.T)
    phi_adj = phi + 2.0 * phi @ U @ phi
    return phi, P, 0.5 * (phi_adj + phi_adj.T)
