"""Vectorized fits of many responses for scalar random intercepts.

When every random term is a scalar intercept ``(1 | g)`` and the terms after
the first (the one with most levels) have few levels in total, the profiled
criterion of *every* response at its *own* ``theta`` is evaluated in one batch
of numpy operations: the first term's block of ``Lambda'Z'Z Lambda + I`` is
diagonal and is eliminated in closed form (its level weights
``lambda_0^2 / (lambda_0^2 n_l + 1)`` times a table of per-level outer products,
one matrix product for all responses), which leaves a small dense Schur
complement ``S`` of order ``r1 + p + 1`` per response, factored by a batched
Cholesky.  This is the crossed system of :mod:`mixedanova.likelihood.crossed`
restricted to scalar terms and written across responses rather than across
evaluations.

From ``S`` come the criterion (``ldL2``, ``ldRX2``, ``pwrss``), its analytic
gradient (``2 (nlev_k - comb_k) / theta_k`` with ``comb_k`` the sums of the
inverse's diagonal over the term's levels, as
:meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.value_and_gradient`),
the estimates at the optimum and lmerTest's Satterthwaite pieces (the central
differences of :func:`~mixedanova.inference.satterthwaite.satterthwaite_setup`,
same steps and formulas).  Each response runs its own damped Newton iteration
(the criterion is even in each scalar ``theta_k``, so the iteration is
unconstrained and ``|theta|`` is reported; a coordinate that reaches 0 stays
there unless the curvature says otherwise), and gets the convergence verdict of
:func:`~mixedanova.likelihood.convergence.check_convergence` (Newton decrement
and step on the free entries, positive definite Hessian, no descent from a zero
variance).  Responses that do not pass are handed back to the general engine
(:func:`mixedanova.batch.engine.fit_columns`' per-response path): the fast path
only ever takes the ones it can certify.
"""
from __future__ import annotations

import math

import numpy as np

from ..likelihood.criterion import REFINE_FRACTION
from ..likelihood.varpar import (DENSE_MAX, DenseVarpar, varpar_order,
                                 exact_polish, interior)

__all__ = ["ScalarSystem", "eligible", "finish_certified", "fit_dense", "satterthwaite_batch",
           "tri_inv_batch"]

_LOG2PI = math.log(2.0 * math.pi)
_MAX_ORDER = 160   # r1 + p + 1 above this: the general engine
_MAX_NEWTON = 60
_ZERO = 1e-5       # |theta_k| below this is the boundary 0 (checked by curvature)


def eligible(terms, p: int) -> bool:
    """Scalar intercept terms, one level per row, a small dense part."""
    if not terms:
        return False
    for t in terms:
        if t.rows is not None or t.zraw.shape[1] != 1 or not np.all(t.zraw == 1.0):
            return False
    r1 = sum(t.nlev for t in terms[1:])
    return r1 + p + 1 <= _MAX_ORDER


class ScalarSystem:
    """The batched criterion of the ``k`` columns of standardized cross-products.

    Parameters
    ----------
    cp : CrossProducts
        Standardized (``ls_shift``), scalar intercept terms.
    reml : bool
    """

    def __init__(self, cp, reml: bool) -> None:
        self.reml = reml
        self.cp = cp
        self.dense = None  # DenseVarpar, built when the df are asked for
        self.n, self.p, self.k = cp.n, cp.p, cp.k
        terms = cp.terms
        self.nlevs = np.array([t.nlev for t in terms], dtype=float)
        self.l0 = terms[0].nlev
        sizes = [t.nlev for t in terms[1:]]
        self.r1 = int(sum(sizes))
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.term_of = np.repeat(np.arange(1, len(terms)), sizes)  # theta index of R columns
        self.term_sum = (self.term_of[:, None] == np.arange(1, len(terms))[None, :]).astype(float)
        p, r1, l0 = self.p, self.r1, self.l0
        self.A00 = cp.diag_blocks(0)[:, 0, 0]
        c = r1 + p
        E = np.zeros((l0, c))
        E[:, r1:] = cp.zxy[0][:, :p, 0]
        B0 = np.zeros((c, c))
        for i in range(1, len(terms)):
            blk = cp.pairs[(i, 0)]
            li, l_0 = np.divmod(blk.keys, l0)
            E[l_0, starts[i - 1] + li] = blk.vals[:, 0, 0]
            for j in range(1, i + 1):
                b = cp.pairs[(i, j)]
                a, bb = np.divmod(b.keys, terms[j].nlev)
                B0[starts[i - 1] + a, starts[j - 1] + bb] = b.vals[:, 0, 0]
                B0[starts[j - 1] + bb, starts[i - 1] + a] = b.vals[:, 0, 0]
            B0[starts[i - 1]:starts[i], r1:] = cp.zxy[i][:, :p, 0]
        B0[r1:, :r1] = B0[:r1, r1:].T
        B0[r1:, r1:] = cp.xy[:p, :p]
        self.E, self.B0 = E, B0
        self.P = np.einsum("la,lb->lab", E, E).reshape(l0, c * c)
        self.A0y = cp.zxy[0][:, p:, 0]  # (l0, k)
        By = np.zeros((c, self.k))
        for i in range(1, len(terms)):
            By[starts[i - 1]:starts[i]] = cp.zxy[i][:, p:, 0]
        By[r1:] = cp.xy[:p, p:]
        self.By = By
        self.yy = np.diag(cp.xy[p:, p:]).copy()
        self.scale = np.asarray(cp.scale, dtype=float)
        self.shift = np.asarray(cp.shift, dtype=float)
        self.dof = self.n - p if reml else self.n

    # ------------------------------------------------------------ pieces
    def _matrix(self, theta: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                base: bool) -> np.ndarray:
        """``base - sum_l w_l e_l e_l'`` (``base``) or ``sum_l w_l e_l e_l'``, scaled by
        ``Lambda_R`` and completed with the response row, for each response."""
        m = len(cols)
        c = self.r1 + self.p
        r = c + 1
        s = np.ones((m, c))
        s[:, :self.r1] = theta[:, self.term_of]
        G = (weights @ self.P).reshape(m, c, c)
        ay = self.A0y[:, cols].T  # (m, l0)
        wy = weights * ay
        gy = wy @ self.E
        gyy = np.einsum("ml,ml->m", wy, ay)
        out = np.empty((m, r, r))
        if base:
            out[:, :c, :c] = (self.B0 - G) * s[:, :, None] * s[:, None, :]
            out[:, :c, c] = (self.By[:, cols].T - gy) * s
            out[:, c, c] = self.yy[cols] - gyy
            idx = np.arange(self.r1)
            out[:, idx, idx] += 1.0
        else:
            out[:, :c, :c] = G * s[:, :, None] * s[:, None, :]
            out[:, :c, c] = gy * s
            out[:, c, c] = gyy
        out[:, c, :c] = out[:, :c, c]
        return out

    def factor(self, theta: np.ndarray, cols: np.ndarray):
        """``(L, d, ok)``: Cholesky factors of ``S`` per response, the first term's
        diagonal ``lambda_0^2 n_l + 1`` and whether ``S`` was positive definite."""
        lam2 = theta[:, 0] ** 2
        d = lam2[:, None] * self.A00[None, :] + 1.0
        S = self._matrix(theta, cols, lam2[:, None] / d, base=True)
        ok = np.ones(len(cols), bool)
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            L = np.zeros_like(S)
            for i in range(len(cols)):
                try:
                    L[i] = np.linalg.cholesky(S[i])
                except np.linalg.LinAlgError:
                    ok[i] = False
                    L[i] = np.eye(S.shape[1])
        return L, d, ok

    def criterion(self, theta: np.ndarray, cols: np.ndarray, parts: bool = False):
        """Objective of each response at its ``theta`` (``inf`` where not positive
        definite); with ``parts`` also ``(ldL2, ldRX2, pwrss_std, L, d)``."""
        L, d, ok = self.factor(theta, cols)
        diag = np.diagonal(L, axis1=1, axis2=2)
        r1, p = self.r1, self.p
        ldL2 = np.sum(np.log(d), axis=1) + 2.0 * np.sum(np.log(diag[:, :r1]), axis=1)
        ldRX2 = 2.0 * np.sum(np.log(diag[:, r1:r1 + p]), axis=1)
        pw = diag[:, -1] ** 2
        dof = self.dof
        with np.errstate(divide="ignore", invalid="ignore"):
            val = ldL2 + dof * (1.0 + _LOG2PI + np.log(pw / dof)
                                + 2.0 * np.log(self.scale[cols]))
        if self.reml:
            val = val + ldRX2
        val = np.where(ok & np.isfinite(val), val, np.inf)
        if parts:
            return val, (ldL2, ldRX2, pw, L, d)
        return val

    def value_and_gradient(self, theta: np.ndarray, cols: np.ndarray):
        """Objective and analytic gradient in ``theta`` (0 in a coordinate at 0)."""
        val, (_, _, _, L, d) = self.criterion(theta, cols, parts=True)
        r1, p = self.r1, self.p
        Linv = tri_inv_batch(L)
        lam2 = theta[:, 0] ** 2
        Q = self._matrix(theta, cols, lam2[:, None] / d ** 2, base=False)
        inv_d = np.sum(1.0 / d, axis=1)
        full = np.swapaxes(Linv, 1, 2) @ Linv  # S^{-1}

        def sums(V: np.ndarray) -> np.ndarray:
            """Per term, the sum of the inverse's diagonal over its levels."""
            nv = V.shape[1]
            first = inv_d + np.einsum("mij,mij->m", V, Q[:, :nv, :nv])
            dg = np.diagonal(V, axis1=1, axis2=2)[:, :r1]
            return np.column_stack([first, dg @ self.term_sum])

        # leading blocks' inverses: S^{-1} less the outer products of L^{-1}'s later rows
        last = Linv[:, -1, :-1]
        xz = full[:, :-1, :-1] - last[:, :, None] * last[:, None, :]
        s_full, s_xz = sums(full), sums(xz)
        if self.reml:
            comb = s_xz + (self.n - p) * (s_full - s_xz)
        else:
            tail = Linv[:, r1:, :r1]
            om = full[:, :r1, :r1] - np.swapaxes(tail, 1, 2) @ tail
            comb = sums(om) + self.n * (s_full - s_xz)
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = 2.0 * (self.nlevs[None, :] - comb) / theta
        grad[theta == 0.0] = 0.0
        grad[~np.isfinite(val)] = 0.0
        return val, grad

    def hessian(self, theta: np.ndarray, cols: np.ndarray, g0: np.ndarray) -> np.ndarray:
        """Symmetrized forward differences of the gradient (as
        :func:`~mixedanova.likelihood.criterion.gradient_jacobian` with ``g0``)."""
        m, nt = theta.shape
        H = np.empty((m, nt, nt))
        for a in range(nt):
            h = 1e-5 * np.maximum(np.abs(theta[:, a]), 1e-2)
            x = theta.copy()
            x[:, a] += h
            H[:, :, a] = (self.value_and_gradient(x, cols)[1] - g0) / h[:, None]
        return 0.5 * (H + np.swapaxes(H, 1, 2))

    def estimates(self, theta: np.ndarray, cols: np.ndarray):
        """``(objective, beta, sigma, vcov_unscaled, pwrss)`` on the response scale."""
        val, (ldL2, ldRX2, pw, L, _) = self.criterion(theta, cols, parts=True)
        r1 = self.r1
        Linv = tri_inv_batch(L[:, :-1, :-1])
        w = np.einsum("mji,mj->mi", Linv, L[:, -1, :-1])  # L11' w = l_y
        sc = self.scale[cols]
        beta = sc[:, None] * w[:, r1:] + self.shift[:, cols].T
        Lx = Linv[:, r1:, r1:]
        U = np.einsum("mki,mkj->mij", Lx, Lx)
        pwrss = sc ** 2 * pw
        sigma = np.sqrt(pwrss / self.dof)
        return val, beta, sigma, U, pwrss, ldL2 + (ldRX2 if self.reml else 0.0)


def tri_inv_batch(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices (forward substitution
    vectorized over the stack; ``numpy.linalg.inv`` pivots a general matrix)."""
    m, r, _ = L.shape
    X = np.zeros_like(L)
    for i in range(r):
        row = -np.einsum("mj,mjc->mc", L[:, i, :i], X[:, :i, :]) if i else np.zeros((m, r))
        row[:, i] += 1.0
        X[:, i, :] = row / L[:, i, i, None]
    return X


# ---------------------------------------------------------------- fitting
def _start(cp, cols: np.ndarray) -> np.ndarray:
    """One-way moment estimates on the least-squares residuals, per term and
    response (the engine's start for crossed designs, across responses):
    ``s2_g = (MSB - MSW) / n0``, ``theta_g = sqrt(s2_g / s2_e)`` floored at 0.1."""
    p, n = cp.p, cp.n
    rr = np.diag(cp.xy[p:, p:])[cols]
    total = rr / max(n - p, 1)
    est = []
    for k, t in enumerate(cp.terms):
        nl = cp.diag_blocks(k)[:, 0, 0]
        sums = cp.zxy[k][:, p + cols, 0]  # (nlev, m)
        means = sums / np.maximum(nl, 1.0)[:, None]
        J = t.nlev
        rbar = sums.sum(axis=0) / n
        msb = np.sum(nl[:, None] * (means - rbar) ** 2, axis=0) / (J - 1)
        msw = np.maximum(rr - np.sum(nl[:, None] * means * means, axis=0), 0.0) / max(n - J, 1)
        n0 = (n - float(np.sum(nl ** 2)) / n) / (J - 1)
        est.append(np.maximum((msb - msw) / n0, 0.0))
    est = np.column_stack(est)
    s2e = np.maximum(total - est.sum(axis=1), 0.1 * total)
    return np.maximum(np.sqrt(est / s2e[:, None]), 0.1)


def zero_curvature(sys: ScalarSystem, theta: np.ndarray, cols: np.ndarray,
                   f0: np.ndarray, delta: float = 1e-3) -> np.ndarray:
    """``2 (f(theta_k = delta) - f) / delta^2`` for each coordinate at 0 (NaN
    elsewhere): the criterion is even in ``theta_k``, so this is its curvature
    there, free of the cancellation in the gradient's ``(nlev_k - comb_k) / theta_k``."""
    m, nt = theta.shape
    out = np.full((m, nt), np.nan)
    for a in range(nt):
        rows = np.flatnonzero(theta[:, a] == 0.0)
        if len(rows):
            x = theta[rows].copy()
            x[:, a] = delta
            out[rows, a] = 2.0 * (sys.criterion(x, cols[rows]) - f0[rows]) / delta ** 2
    return out


def _newton(sys: ScalarSystem, cols: np.ndarray, theta: np.ndarray):
    """Damped Newton from ``theta`` for every response.

    A response stops where the Newton step is below ``1e-10`` (relative): the
    step is taken, and the objective, gradient and Hessian at its start are
    returned (the convergence verdict reads them); or where the line search
    finds no decrease.  Returns ``(theta, f, g, H, done)``.
    """
    m, nt = theta.shape
    f, g = sys.value_and_gradient(theta, cols)
    Hs = np.full((m, nt, nt), np.nan)
    done = np.zeros(m, bool)
    active = np.flatnonzero(np.isfinite(f))
    for _ in range(_MAX_NEWTON):
        if not len(active):
            break
        th, c = theta[active], cols[active]
        fa, ga = f[active], g[active]
        H = sys.hessian(th, c, ga)
        # a coordinate at 0 where the criterion falls away from 0: leave the boundary
        zero = th == 0.0
        neg = zero & (zero_curvature(sys, th, c, fa) < 0.0)
        if neg.any():
            th = np.where(neg, 0.1, th)
            fa, ga = sys.value_and_gradient(th, c)
            theta[active], f[active], g[active] = th, fa, ga
            H = sys.hessian(th, c, ga)
            zero = th == 0.0
        Hs[active] = H
        H = np.where(zero[:, :, None] | zero[:, None, :], 0.0, H)
        H[zero] += np.eye(nt)[np.nonzero(zero)[1]]  # unit curvature: their steps are 0
        ev, V = np.linalg.eigh(H)
        pd_ = ev.min(axis=1) > 0.0
        ev = np.where(ev > 0.0, ev, 1.0)
        step = -np.einsum("mij,mj->mi", V, np.einsum("mji,mj->mi", V, ga) / ev)
        # not positive definite: a gradient step of length 0.5
        gmax = np.maximum(np.abs(ga).max(axis=1), 1e-300)
        step = np.where(pd_[:, None], step, -0.5 * ga / gmax[:, None])
        step[zero] = 0.0
        big = np.abs(step).max(axis=1)
        there = pd_ & (big < 1e-10 * np.maximum(1.0, np.abs(th).max(axis=1)))
        done[active[there]] = True
        # the last, tiny step is taken (its error is its square); f, g and H stay
        # those of the point it starts from, for the verdict
        theta[active[there]] = th[there] + step[there]
        keep = ~there
        active, th, c, fa, ga = active[keep], th[keep], c[keep], fa[keep], ga[keep]
        step, big = step[keep], big[keep]
        if not len(active):
            break
        step *= np.minimum(1.0, 1.0 / np.maximum(big, 1e-300))[:, None]
        t = np.ones(len(active))
        new_th = th.copy()
        pending = np.arange(len(active))
        slope = np.einsum("mi,mi->m", ga, step)
        for _ls in range(40):
            x = th[pending] + t[pending, None] * step[pending]
            x[np.abs(x) < _ZERO] = 0.0
            fx = sys.criterion(x, c[pending])
            good = fx <= fa[pending] + 1e-4 * t[pending] * slope[pending] + \
                1e-13 * np.abs(fa[pending])
            new_th[pending[good]] = x[good]
            pending = pending[~good]
            if not len(pending):
                break
            t[pending] *= 0.5
        stuck = np.zeros(len(active), bool)
        stuck[pending] = True  # no decrease along the step: stop here (the verdict decides)
        done[active[stuck]] = True
        active, new_th, c = active[~stuck], new_th[~stuck], c[~stuck]
        if len(active):
            theta[active] = new_th
            f[active], g[active] = sys.value_and_gradient(new_th, c)
    return theta, f, g, Hs, done


def fit_dense(spec, cp, columns: np.ndarray, out, offset: int = 0) -> np.ndarray:
    """Fit the responses of ``cp`` (rows ``offset + i`` of ``out``) on the fast path;
    returns the local indices that still need the general engine."""
    control = spec.control
    sys = ScalarSystem(cp, spec.reml)
    k = cp.k
    cols = np.arange(k)
    theta, f, g, Hs, done = _newton(sys, cols, _start(cp, cols))
    # the criterion is even in each theta_k: |theta| has the same value, and the
    # same gradient and Hessian up to signs that the verdict below does not see
    theta = np.abs(theta)
    ok = done & np.isfinite(f) & np.all(np.isfinite(Hs), axis=(1, 2))
    idx = np.flatnonzero(ok)
    if len(idx):
        th, c = theta[idx], cols[idx]
        fx, gx, H = f[idx], g[idx], Hs[idx]
        scale = np.maximum(1.0, np.abs(fx))
        free = th > 0.0
        good = np.ones(len(idx), bool)
        tight = np.zeros(len(idx), bool)  # the Newton step left is below 1e-10 (relative)
        for i in range(len(idx)):
            fi = np.flatnonzero(free[i])
            if len(fi):
                Hf = H[i][np.ix_(fi, fi)]
                ev, V = np.linalg.eigh(Hf)
                if not ev.min() > 0:
                    good[i] = False  # the engine reports the flat direction
                    continue
                coef = V.T @ gx[i, fi]
                step = V @ (coef / ev)
                stepn = float(np.max(np.abs(step)))
                tight[i] = stepn < 1e-10 * max(float(np.min(th[i, fi])), 1e-2)
                dec = 0.5 * float(coef @ (coef / ev))
                if dec > control.decrement_tol * scale[i] or (
                        stepn > control.grad_tol and dec > control.noise_tol * scale[i]):
                    good[i] = False
        curv = zero_curvature(sys, th, c, fx)  # no descent away from a zero variance
        good &= ~np.any(~free & ~(curv >= -1e-6 * scale[:, None]), axis=1)
        idx, th, tight = idx[good], th[good], tight[good]
    if len(idx):
        finish_certified(spec, sys, idx, th, out, offset, polish=~tight)
    handled = np.zeros(k, bool)
    handled[idx] = True
    return np.flatnonzero(~handled)


def finish_certified(spec, sys, idx: np.ndarray, theta: np.ndarray, out, offset: int,
                     diagonal: np.ndarray | None = None,
                     polish: np.ndarray | None = None) -> None:
    """Estimates, verdict and Satterthwaite pieces of the certified responses
    (``sys`` a scalar or vector batch system; ``diagonal`` selects the template
    diagonal entries of ``theta`` that the singular check reads, all by default).

    Interior optima of small designs get the exact Newton step of ``ma.lmm``'s
    optimizer (:func:`~mixedanova.likelihood.varpar.exact_polish`), except
    where ``polish`` is False (the batch Newton step left is already below 1e-10)."""
    if varpar_order(sys.cp) <= DENSE_MAX:  # the last digits, as ma.lmm's optimizer
        inside = interior(_dense(sys), theta)
        if polish is not None:
            inside &= polish
        # where pwrss cancels in the cross-products the derivatives would too (as ma.lmm)
        inside &= sys.criterion(theta, idx, parts=True)[1][2] >= REFINE_FRACTION * sys.n
        if inside.any():
            theta = theta.copy()
            theta[inside] = exact_polish(sys.dense, theta[inside], idx[inside], sys.reml,
                                         sys.dof, sys.criterion)
    val, beta, sigma, U, pwrss, _ = sys.estimates(theta, idx)
    rows = offset + idx
    out.theta[rows] = theta
    out.sigma[rows] = sigma
    out.beta[rows] = beta
    out.vcov[rows] = sigma[:, None, None] ** 2 * U
    out.objective[rows] = val
    out.converged[rows] = True
    diag = theta if diagonal is None else theta[:, diagonal]
    out.singular[rows] = np.any(diag < spec.control.singular_tol, axis=1)
    out.nobs[rows] = sys.n
    if spec.satterthwaite:
        satterthwaite_batch(sys, idx, theta, sigma, out, rows)


def _pieces(sys: ScalarSystem, theta: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``[a, r, U.ravel()]`` per response (lmerTest's pieces, response scale)."""
    _, _, _, U, pwrss, a = sys.estimates(theta, cols)
    return np.column_stack([a, pwrss, U.reshape(len(cols), -1)])


def satterthwaite_batch(sys: ScalarSystem, cols, theta, sigma, out, rows) -> None:
    """:func:`~mixedanova.inference.satterthwaite.satterthwaite_setup` across responses."""
    m, k = theta.shape
    p = sys.p
    if varpar_order(sys.cp) <= DENSE_MAX:  # exact derivatives, as satterthwaite_setup
        f0 = _pieces(sys, theta, cols)
        g, Hd = _exact_pieces(sys, theta, cols, f0)
    else:
        f0, g, Hd = _difference_pieces(sys, theta, cols)
    r = f0[:, 1]
    U = f0[:, 2:].reshape(m, p, p)
    s2 = sigma * sigma
    dof = sys.dof
    H = np.empty((m, k + 1, k + 1))
    H[:, :k, :k] = Hd[:, :, :, 0] + Hd[:, :, :, 1] / s2[:, None, None]
    H[:, :k, k] = -2.0 * g[:, :, 1] / (s2 * sigma)[:, None]
    H[:, k, :k] = H[:, :k, k]
    H[:, k, k] = -2.0 * dof / s2 + 6.0 * r / (s2 * s2)
    J = np.empty((m, k + 1, p, p))
    J[:, :k] = s2[:, None, None, None] * g[:, :, 2:].reshape(m, k, p, p)
    J[:, k] = 2.0 * sigma[:, None, None] * U
    ev, V = np.linalg.eigh(H)
    pos = ev > 1e-8
    inv_ev = np.where(pos, 1.0 / np.where(pos, ev, 1.0), 0.0)
    A = 2.0 * np.einsum("mik,mk,mjk->mij", V, inv_ev, V)
    vb = s2[:, None, None] * U
    var = np.diagonal(vb, axis1=1, axis2=2)
    grad = np.diagonal(J, axis1=2, axis2=3)  # (m, k + 1, p): l'J_i l for l = e_c
    denom = np.einsum("mkc,mkl,mlc->mc", grad, A, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denom != 0, 2.0 * var * var / denom, np.inf)
    out.df[rows] = df
    out.vcov_varpar[rows] = A
    out.jacobian[rows] = J
    neg = (ev < -1e-8).any(axis=1)
    for i in np.flatnonzero(neg):
        out.messages[int(out.columns[rows[i]])] = (
            "the Hessian of the deviance has negative eigenvalue(s): the fit may not "
            "have converged",)


def _dense(sys: ScalarSystem) -> DenseVarpar:
    """The system's :class:`~mixedanova.likelihood.varpar.DenseVarpar`, built at
    the first use (the exact step and the df share it)."""
    if sys.dense is None:
        sys.dense = DenseVarpar(sys.cp)
    return sys.dense


def _exact_pieces(sys: ScalarSystem, theta: np.ndarray, cols: np.ndarray,
                  f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``(m, k, 2 + p^2)`` and Hessian ``(m, k, k, 2)`` of lmerTest's pieces
    from :class:`~mixedanova.likelihood.varpar.DenseVarpar`, in groups of responses
    that keep each stack of matrices near 16 MB."""
    dense = _dense(sys)
    m, k = theta.shape
    p = sys.p
    g = np.empty((m, k, 2 + p * p))
    Hd = np.empty((m, k, k, 2))
    step = max(1, 2_000_000 // dense.order ** 2)
    for a in range(0, m, step):
        b = min(m, a + step)
        d = dense.derivatives(theta[a:b], cols[a:b], sys.reml)
        g_r, h_r = d.pwrss_derivatives(f0[a:b, 1])
        g[a:b, :, 0], g[a:b, :, 1] = d.grad_a, g_r
        g[a:b, :, 2:] = d.grad_u.reshape(b - a, k, p * p)
        Hd[a:b, :, :, 0], Hd[a:b, :, :, 1] = d.hess_a, h_r
    return g, Hd


def _difference_pieces(sys: ScalarSystem, theta: np.ndarray, cols: np.ndarray):
    """Value, gradient and Hessian of lmerTest's pieces by central differences
    (steps and formulas of ``satterthwaite_setup``'s fallback)."""
    m, k = theta.shape
    h = 1e-3 * np.maximum(np.abs(theta), 0.1)
    f0 = _pieces(sys, theta, cols)
    g = np.empty((m, k, f0.shape[1]))
    Hd = np.empty((m, k, k, f0.shape[1]))
    plus, minus = [], []
    for i in range(k):
        e = np.zeros((m, k))
        e[:, i] = h[:, i]
        fp, fm = _pieces(sys, theta + e, cols), _pieces(sys, theta - e, cols)
        plus.append(fp)
        minus.append(fm)
        g[:, i] = (fp - fm) / (2.0 * h[:, i, None])
        Hd[:, i, i] = (fp - 2.0 * f0 + fm) / h[:, i, None] ** 2
    for i in range(k):
        for j in range(i + 1, k):
            e = np.zeros((m, k))
            e[:, i], e[:, j] = h[:, i], h[:, j]
            val = (_pieces(sys, theta + e, cols) + _pieces(sys, theta - e, cols) - plus[i]
                   - minus[i] - plus[j] - minus[j] + 2.0 * f0) / \
                (2.0 * h[:, i, None] * h[:, j, None])
            Hd[:, i, j] = Hd[:, j, i] = val
    return f0, g, Hd
