"""Vectorized fits of many responses for vector random-effect terms.

The counterpart of :mod:`mixedanova.batch.dense` for terms such as
``(1 + cond | subj) + (1 + cond | item)``: the criterion of every response at
its *own* ``theta`` is evaluated in one batch of numpy operations.  The first
term's block of ``Lambda'Z'Z Lambda + I`` is block diagonal (a ``q0 x q0`` block
``T0' A_l T0 + I`` per level) and is eliminated level by level: with
``W_l = T0 (T0' A_l T0 + I)^{-1} T0'`` its contribution to the Schur complement
of the other columns is ``sum_l E_l' W_l E_l``, one matrix product of the
``(m, levels x q0(q0+1)/2)`` weights with a table of per-level outer products of
the coupling rows ``E_l`` (``Z_0l'[Z_1 .. X]``).  What is left is a small dense
matrix of order ``r1 + p + 1`` per response (the other terms' columns scaled by
their templates, the fixed effects and the response), factored by a batched
Cholesky; its diagonal gives ``ldL2``, ``ldRX2`` and ``pwrss`` as in
:mod:`mixedanova.likelihood.crossed`.

Each response runs its own Newton iteration in ``theta`` (unconstrained: the
criterion depends on ``theta`` only through ``T T'``, so every real ``theta`` is
a covariance and a column of a template can change sign freely; columns are
made to have a non-negative diagonal at the end, as ``theta``'s bounds ask).
Gradient and Hessian are central differences of the batched criterion, with
lmerTest's scheme of :func:`~mixedanova.inference.satterthwaite.satterthwaite_setup`
(``1 + 2k + k(k - 1)`` values).  A response is taken by this path only when
the iteration ends at a point whose Hessian is positive definite and whose
Newton decrement and step pass the tolerances of
:func:`~mixedanova.likelihood.convergence.check_convergence`; any other
response is handed back to the single-fit engine, so that a verdict other
than "converged" always comes from ``ma.lmm``'s own arithmetic.  A singular
fit (a variance or a correlation on its boundary) is an interior minimum of
the unconstrained problem when the criterion curves up away from it, and is
taken here; a flat direction (a zero intercept variance beside a non-zero
slope variance, say) is not.
"""
from __future__ import annotations

import math

import numpy as np

from .dense import ScalarSystem, finish_certified

__all__ = ["VectorSystem", "eligible_vector", "fit_vector"]

_LOG2PI = math.log(2.0 * math.pi)
_MAX_ORDER = 160    # r1 + p + 1 above this: the general engine
_MAX_NEWTON = 40
_FD_STEP = 1e-4     # relative step of the Newton iteration's differences
_STEP_TOL = 1e-7    # Newton step (relative to max(1, |theta|)) at which a response stops


def eligible_vector(terms, p: int) -> bool:
    """One level per row, some term with more than one column, a small dense part."""
    if not terms or any(t.rows is not None for t in terms):
        return False
    if all(t.zraw.shape[1] == 1 for t in terms):
        return False  # scalar terms: mixedanova.batch.dense
    r1 = sum(t.nlev * t.zraw.shape[1] for t in terms[1:])
    return r1 + p + 1 <= _MAX_ORDER


def _templates(theta: np.ndarray, layout) -> list[np.ndarray]:
    """``(m, q, q)`` lower-triangular templates of each term (theta runs down columns)."""
    out = []
    for q, off in zip(layout.qs, layout.offsets):
        r, c = np.tril_indices(q)
        order = np.lexsort((r, c))
        T = np.zeros((theta.shape[0], q, q))
        T[:, r[order], c[order]] = theta[:, off:off + len(r)]
        out.append(T)
    return out


def canonical(theta: np.ndarray, layout) -> np.ndarray:
    """``theta`` with every template column of negative diagonal negated (same ``T T'``)."""
    theta = theta.copy()
    for q, off in zip(layout.qs, layout.offsets):
        r, c = np.tril_indices(q)
        order = np.lexsort((r, c))
        rr, cc = r[order], c[order]
        for j in range(q):
            d = off + int(np.flatnonzero((rr == j) & (cc == j))[0])
            cols = off + np.flatnonzero(cc == j)
            neg = theta[:, d] < 0.0
            theta[np.ix_(neg, cols)] *= -1.0
    return theta


def _kron(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Kronecker products of two stacks of square matrices."""
    m, q, _ = A.shape
    return (A[:, :, None, :, None] * B[:, None, :, None, :]).reshape(m, q * q, q * q)


def _first_blocks(T0: np.ndarray, A00f: np.ndarray, q0: int):
    """``T0' A_l T0 + I`` for every response and level, ``sum_l log|.|`` and the inverses
    (closed forms for ``q0 = 2``)."""
    m, l0 = T0.shape[0], A00f.shape[0]
    K = _kron(np.swapaxes(T0, 1, 2), np.swapaxes(T0, 1, 2))  # vec(T' A T) = (T' kron T') vec(A)
    A = (A00f[None] @ np.swapaxes(K, 1, 2)).reshape(m, l0, q0, q0)
    A = A + np.eye(q0)
    if q0 == 2:
        a, b, d = A[..., 0, 0], A[..., 0, 1], A[..., 1, 1]
        det = a * d - b * b
        inv = np.empty_like(A)
        inv[..., 0, 0], inv[..., 1, 1] = d / det, a / det
        inv[..., 0, 1] = inv[..., 1, 0] = -b / det
        return A, np.sum(np.log(det), axis=1), inv
    C = np.linalg.cholesky(A)
    logdet = 2.0 * np.sum(np.log(np.diagonal(C, axis1=2, axis2=3)), axis=(1, 2))
    return A, logdet, np.linalg.inv(A)


class VectorSystem(ScalarSystem):
    """The batched criterion of the ``k`` columns of standardized cross-products
    for terms with any number of columns (one level per row).

    Parameters
    ----------
    cp : CrossProducts
        Standardized (``ls_shift``).
    reml : bool
    layout : ThetaLayout
    """

    def __init__(self, cp, reml: bool, layout) -> None:  # noqa: D107 -- see the class
        self.reml, self.layout = reml, layout
        self.cp = cp
        self.dense = None  # DenseVarpar, built when the df are asked for
        self.n, self.p, self.k = cp.n, cp.p, cp.k
        terms = cp.terms
        p = self.p
        self.qs = [t.q for t in terms]
        self.nlevs = np.array([t.nlev for t in terms], dtype=float)
        self.l0, self.q0 = terms[0].nlev, terms[0].q
        sizes = [t.nlev * t.q for t in terms[1:]]
        self.r1 = int(sum(sizes))
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        r1, l0, q0 = self.r1, self.l0, self.q0
        c = r1 + p
        E = np.zeros((l0, q0, c))
        E[:, :, r1:] = cp.zxy[0][:, :p, :].transpose(0, 2, 1)
        B0 = np.zeros((c, c))
        By = np.zeros((c, self.k))
        for i in range(1, len(terms)):
            qi, s = terms[i].q, self.starts[i - 1]
            blk = cp.pairs[(i, 0)]
            li, lz = np.divmod(blk.keys, l0)
            for a in range(qi):
                E[lz, :, s + li * qi + a] = blk.vals[:, a, :]
            for j in range(1, i + 1):
                qj, sj = terms[j].q, self.starts[j - 1]
                b = cp.pairs[(i, j)]
                la, lb = np.divmod(b.keys, terms[j].nlev)
                for a in range(qi):
                    for bb in range(qj):
                        B0[s + la * qi + a, sj + lb * qj + bb] = b.vals[:, a, bb]
                        B0[sj + lb * qj + bb, s + la * qi + a] = b.vals[:, a, bb]
            zx = cp.zxy[i]  # (nlev, p + k, q)
            rows = s + np.arange(terms[i].nlev)[:, None] * qi + np.arange(qi)[None, :]
            B0[rows.ravel(), r1:] = zx[:, :p, :].transpose(0, 2, 1).reshape(-1, p)
            By[rows.ravel()] = zx[:, p:, :].transpose(0, 2, 1).reshape(-1, self.k)
        B0[r1:, :r1] = B0[:r1, r1:].T
        B0[r1:, r1:] = cp.xy[:p, :p]
        By[r1:] = cp.xy[:p, p:]
        self.E, self.B0, self.By = E, B0, By
        self.pairs_ab = [(a, b) for a in range(q0) for b in range(a, q0)]
        tabs = []
        for a, b in self.pairs_ab:
            t = np.einsum("li,lj->lij", E[:, a], E[:, b])
            if a != b:
                t = t + t.transpose(0, 2, 1)
            tabs.append(t.reshape(l0, c * c))
        self.P = np.concatenate(tabs, axis=0)  # (npairs * l0, c * c)
        self.A00 = cp.diag_blocks(0)  # (l0, q0, q0)
        self.A00f = self.A00.reshape(l0, q0 * q0)
        self.Ay = cp.zxy[0][:, p:, :]  # (l0, k, q0)
        self.yy = np.diag(cp.xy[p:, p:]).copy()
        self.scale = np.asarray(cp.scale, dtype=float)
        self.shift = np.asarray(cp.shift, dtype=float)
        self.dof = self.n - p if reml else self.n

    def factor(self, theta: np.ndarray, cols: np.ndarray):
        """``(L, logdet_first, ok)``: Cholesky factors of the Schur complement ``S``
        per response, ``sum_l log|T0' A_l T0 + I|`` and whether all was positive definite."""
        m = len(cols)
        Ts = _templates(theta, self.layout)
        T0 = Ts[0]
        q0, l0, r1, p = self.q0, self.l0, self.r1, self.p
        c = r1 + p
        ok = np.ones(m, bool)
        _, logdet0, Ainv = _first_blocks(T0, self.A00f, q0)
        # W_l = T0 (T0' A_l T0 + I)^{-1} T0' (row-major: vec(B A C) = (B kron C') vec(A))
        W = (Ainv.reshape(m, l0, q0 * q0) @ np.swapaxes(_kron(T0, T0), 1, 2)
             ).reshape(m, l0, q0, q0) if q0 > 1 else T0[:, None] ** 2 * Ainv
        w = np.concatenate([W[:, :, a, b] for a, b in self.pairs_ab], axis=1)
        G = (w @ self.P).reshape(m, c, c)
        ey = np.transpose(self.Ay[:, cols, :], (1, 0, 2))  # (m, l0, q0)
        V = np.einsum("mlab,mlb->mla", W, ey)
        gy = V.reshape(m, l0 * q0) @ self.E.reshape(l0 * q0, c)
        gyy = np.einsum("mla,mla->m", V, ey)
        S = np.empty((m, c + 1, c + 1))
        S[:, :c, :c] = self.B0 - G
        S[:, :c, c] = self.By[:, cols].T - gy
        S[:, c, c] = self.yy[cols] - gyy
        # scale the later terms' columns (and rows) by their templates: S <- Ds' S Ds,
        # as (S Ds)' Ds with S symmetric (the response row is filled first)
        S[:, c, :c] = S[:, :c, c]
        for _ in range(2):
            for i in range(1, len(Ts)):
                T, q, s = Ts[i], self.qs[i], self.starts[i - 1]
                nl = int(self.nlevs[i])
                blk = S[:, :, s:s + nl * q].reshape(m, (c + 1) * nl, q)
                S[:, :, s:s + nl * q] = (blk @ T).reshape(m, c + 1, nl * q)
            S = np.swapaxes(S, 1, 2).copy()
        idx = np.arange(r1)
        S[:, idx, idx] += 1.0
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            L = np.zeros_like(S)
            for i in range(m):
                try:
                    L[i] = np.linalg.cholesky(S[i])
                except np.linalg.LinAlgError:
                    ok[i] = False
                    L[i] = np.eye(c + 1)
        return L, logdet0, ok

    def criterion(self, theta: np.ndarray, cols: np.ndarray, parts: bool = False):
        """Objective of each response at its ``theta`` (``inf`` where not positive
        definite); with ``parts`` also ``(ldL2, ldRX2, pwrss_std, L, None)``."""
        L, logdet0, ok = self.factor(theta, cols)
        diag = np.diagonal(L, axis1=1, axis2=2)
        r1, p = self.r1, self.p
        with np.errstate(divide="ignore", invalid="ignore"):
            ldL2 = logdet0 + 2.0 * np.sum(np.log(diag[:, :r1]), axis=1)
            ldRX2 = 2.0 * np.sum(np.log(diag[:, r1:r1 + p]), axis=1)
            pw = diag[:, -1] ** 2
            dof = self.dof
            val = ldL2 + dof * (1.0 + _LOG2PI + np.log(pw / dof)
                                + 2.0 * np.log(self.scale[cols]))
        if self.reml:
            val = val + ldRX2
        val = np.where(ok & np.isfinite(val), val, np.inf)
        if parts:
            return val, (ldL2, ldRX2, pw, L, None)
        return val


# ---------------------------------------------------------------- fitting
def fd_derivatives(sys: VectorSystem, theta: np.ndarray, cols: np.ndarray, f0: np.ndarray,
                   rel: float = _FD_STEP, hessian: bool = True):
    """Gradient (and Hessian) of every response's criterion by central differences
    (the scheme of ``satterthwaite_setup``: ``1 + 2k + k(k - 1)`` values; the
    gradient alone ``2k``)."""
    m, k = theta.shape
    h = rel * np.maximum(np.abs(theta), 0.1)
    g = np.empty((m, k))
    H = np.empty((m, k, k))
    plus, minus = [], []
    for i in range(k):
        e = np.zeros((m, k))
        e[:, i] = h[:, i]
        fp, fm = sys.criterion(theta + e, cols), sys.criterion(theta - e, cols)
        plus.append(fp)
        minus.append(fm)
        g[:, i] = (fp - fm) / (2.0 * h[:, i])
        H[:, i, i] = (fp - 2.0 * f0 + fm) / h[:, i] ** 2
    if not hessian:
        return g, None
    for i in range(k):
        for j in range(i + 1, k):
            e = np.zeros((m, k))
            e[:, i], e[:, j] = h[:, i], h[:, j]
            val = (sys.criterion(theta + e, cols) + sys.criterion(theta - e, cols) - plus[i]
                   - minus[i] - plus[j] - minus[j] + 2.0 * f0) / (2.0 * h[:, i] * h[:, j])
            H[:, i, j] = H[:, j, i] = val
    return g, H


def _newton(sys: VectorSystem, cols: np.ndarray, theta: np.ndarray):
    """Damped (quasi-)Newton from ``theta`` for every response (unconstrained in ``theta``).

    The Hessian is the central-difference one at the first iteration, where the
    last one was not positive definite and after a failed line search, a BFGS
    update of it otherwise; the gradient is always a central difference.  A response stops where the Newton step is below ``_STEP_TOL``
    or where the line search finds no decrease.  Returns ``(theta, f, done)``;
    the verdict is taken afterwards with a fresh Hessian.
    """
    m, nt = theta.shape
    f = sys.criterion(theta, cols)
    Hs = np.zeros((m, nt, nt))
    gs = np.zeros((m, nt))
    fresh = np.ones(m, bool)   # the next iteration computes the Hessian afresh
    done = np.zeros(m, bool)
    last = theta.copy()        # where the gradient gs was taken
    active = np.flatnonzero(np.isfinite(f))
    for it in range(_MAX_NEWTON):
        if not len(active):
            break
        th, c, fa = theta[active], cols[active], f[active]
        ga, _ = fd_derivatives(sys, th, c, fa, hessian=False)
        need = fresh[active] | (it == 0)
        H = Hs[active]
        if it:  # BFGS update with the last step (where the curvature is positive)
            sstep = th - last[active]
            y = ga - gs[active]
            sy = np.einsum("mi,mi->m", sstep, y)
            Hsv = np.einsum("mij,mj->mi", H, sstep)
            sHs = np.einsum("mi,mi->m", sstep, Hsv)
            upd = (sy > 1e-12 * np.maximum(sHs, 1e-300)) & (sHs > 0) & ~need
            with np.errstate(divide="ignore", invalid="ignore"):
                H = np.where(upd[:, None, None],
                             H + y[:, :, None] * y[:, None, :] / sy[:, None, None]
                             - Hsv[:, :, None] * Hsv[:, None, :] / sHs[:, None, None], H)
        if need.any():
            ii = np.flatnonzero(need)
            _, Hn = fd_derivatives(sys, th[ii], c[ii], fa[ii])
            H[ii] = Hn
        Hs[active], gs[active] = H, ga
        last[active] = th
        ev, V = np.linalg.eigh(H)
        pd_ = ev.min(axis=1) > 0.0
        evp = np.where(ev > 0.0, ev, np.maximum(np.abs(ev), 1.0))
        step = -np.einsum("mij,mj->mi", V, np.einsum("mji,mj->mi", V, ga) / evp)
        big = np.abs(step).max(axis=1)
        there = pd_ & (big < _STEP_TOL * np.maximum(1.0, np.abs(th).max(axis=1)))
        done[active[there]] = True
        theta[active[there]] = th[there] + step[there]
        keep = ~there
        active, th, c, fa, ga = active[keep], th[keep], c[keep], fa[keep], ga[keep]
        step, big, pdk = step[keep], big[keep], pd_[keep]
        if not len(active):
            break
        step *= np.minimum(1.0, 1.0 / np.maximum(big, 1e-300))[:, None]  # |step| <= 1
        t = np.ones(len(active))
        new_th, new_f = th.copy(), fa.copy()
        pending = np.arange(len(active))
        slope = np.einsum("mi,mi->m", ga, step)
        for _ls in range(30):
            x = th[pending] + t[pending, None] * step[pending]
            fx = sys.criterion(x, c[pending])
            good = fx <= fa[pending] + 1e-4 * t[pending] * np.minimum(slope[pending], 0.0) \
                + 1e-13 * np.abs(fa[pending])
            new_th[pending[good]] = x[good]
            new_f[pending[good]] = fx[good]
            pending = pending[~good]
            if not len(pending):
                break
            t[pending] *= 0.5
        stuck = np.zeros(len(active), bool)
        stuck[pending] = True
        # no decrease along a quasi-Newton step: retry with a fresh Hessian; with a
        # fresh one, stop (the verdict decides)
        was_fresh = need[keep]
        give_up = stuck & was_fresh
        done[active[give_up]] = True
        fresh[active] = (stuck & ~was_fresh) | ~pdk  # BFGS keeps only a PD matrix PD
        go = ~stuck
        theta[active[go]] = new_th[go]
        f[active[go]] = new_f[go]
        active = active[~give_up]
    return theta, f, done


def _start(sys: VectorSystem, m: int) -> np.ndarray:
    """lme4's start (identity templates) for every response."""
    return np.repeat(sys.layout.start()[None, :], m, axis=0).astype(float)


_POLISH_STEPS = 3  # analytic-gradient Newton steps at most (one usually suffices)
_PILOT = 8  # responses fitted from lme4's start; the others start at their median optimum


def fit_vector(spec, cp, columns: np.ndarray, out, offset: int = 0) -> np.ndarray:
    """Fit the responses of ``cp`` (rows ``offset + i`` of ``out``) on this path;
    returns the local indices that still need the general engine.

    The first few responses start from lme4's start; the others from the
    median of their optima (with every diagonal entry at least 0.05, off any
    boundary): responses on one design, simulated ones above all, have nearby
    optima, and the start changes the path only -- each response's optimum is
    then certified on its own.
    """
    sys = VectorSystem(cp, spec.reml, spec.layout)
    k = cp.k
    cols = np.arange(k)
    theta = _start(sys, k)
    pilot = cols[:_PILOT] if k > 2 * _PILOT else cols
    theta[pilot], f_p, done_p = _newton(sys, pilot, theta[pilot])
    f = np.full(k, np.nan)
    done = np.zeros(k, bool)
    f[pilot], done[pilot] = f_p, done_p
    rest = cols[len(pilot):]
    if len(rest):
        good = done_p & np.isfinite(f_p)
        if good.any():
            mid = np.median(canonical(theta[pilot][good], spec.layout), axis=0)
            mid[spec.diag] = np.maximum(mid[spec.diag], 0.05)
            theta[rest] = mid
        theta[rest], f[rest], done[rest] = _newton(sys, rest, theta[rest])
    idx = np.flatnonzero(done & np.isfinite(f))
    if len(idx):
        good, H = _verdict(sys, spec.control, theta[idx], idx, f[idx])
        idx, H = idx[good], H[good]
    if len(idx):
        done = [polish(spec, cp.select(int(j)), theta[j], Hj) for j, Hj in zip(idx, H)]
        th = np.array([x for x, _ in done])
        tight = np.array([t for _, t in done], dtype=bool)
        finish_certified(spec, sys, idx, canonical(th, spec.layout), out, offset,
                         diagonal=spec.diag, polish=~tight)
    handled = np.zeros(k, bool)
    handled[idx] = True
    return np.flatnonzero(~handled)


def _verdict(sys: VectorSystem, control, theta: np.ndarray, cols: np.ndarray,
             f: np.ndarray) -> np.ndarray:
    """Which responses pass :func:`~mixedanova.likelihood.convergence.check_convergence`'s
    tests at ``theta``: positive definite Hessian, Newton decrement below
    ``decrement_tol`` (relative to the criterion), and a Newton step below
    ``grad_tol`` unless the decrement is below ``noise_tol``."""
    g, H = fd_derivatives(sys, theta, cols, f)
    scale = np.maximum(1.0, np.abs(f))
    ev, V = np.linalg.eigh(H)
    pos = ev.min(axis=1) > 0.0
    evp = np.where(pos[:, None], ev, 1.0)
    coef = np.einsum("mji,mj->mi", V, g)
    stepn = np.abs(np.einsum("mij,mj->mi", V, coef / evp)).max(axis=1)
    dec = 0.5 * np.sum(coef * coef / evp, axis=1)
    good = pos & np.isfinite(dec) & ~((dec > control.decrement_tol * scale)
                                      | ((stepn > control.grad_tol)
                                         & (dec > control.noise_tol * scale)))
    return good, H


def polish(spec, cp, theta: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, bool]:
    """One Newton step with the single-fit engine's analytic gradient; also says
    whether the last step taken was below 1e-10 (relative), i.e. nothing is left
    for :func:`~mixedanova.batch.dense.finish_certified`'s exact step.

    The differences of the batched criterion place ``theta`` to about 1e-8; the
    analytic gradient of :meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.value_and_gradient`
    (on this response's cross-products ``cp``) is accurate where values are not,
    so one step with the difference Hessian ``H`` takes the last digits, as
    :func:`~mixedanova.likelihood.optimizer.newton_polish` does for ``ma.lmm``.
    A template column whose diagonal is within 1e-6 of 0 is first put on the
    boundary (as ``ma.lmm``'s snap, when that does not raise the criterion) and
    held there; the step moves the other entries, and is taken only if it does
    not raise the criterion beyond rounding.
    """
    from ..likelihood.criterion import ProfiledDeviance

    dev = ProfiledDeviance(cp, spec.layout, spec.reml)
    x = canonical(theta[None, :], spec.layout)[0]
    fx = dev(x)
    free = np.ones(len(x), bool)
    snapped = x.copy()
    for q, off in zip(spec.layout.qs, spec.layout.offsets):
        r, c = np.tril_indices(q)
        order = np.lexsort((r, c))
        rr, cc = r[order], c[order]
        for j in range(q):
            d = off + int(np.flatnonzero((rr == j) & (cc == j))[0])
            if abs(x[d]) < 1e-6:
                col = off + np.flatnonzero(cc == j)
                snapped[col] = 0.0
                free[col] = False
    if not free.all():
        fs = dev(snapped)
        if fs <= fx + 1e-12 * (1.0 + abs(fx)):
            x, fx = snapped, fs
        else:
            free[:] = True
    idx = np.flatnonzero(free)
    if not len(idx):
        return x, True
    Hf = H[np.ix_(idx, idx)]
    for _ in range(_POLISH_STEPS):
        g = dev.gradient(x)[idx]
        try:
            step = -np.linalg.solve(Hf, g)
        except np.linalg.LinAlgError:
            return x, False
        xn = x.copy()
        xn[idx] += step
        fn = dev(xn)
        if not fn <= fx + 1e-13 * max(1.0, abs(fx)):
            return x, False
        x, fx = xn, fn
        if np.max(np.abs(step) / np.maximum(np.abs(x[idx]), 1e-2)) < 1e-10:
            return x, True
    return x, False
