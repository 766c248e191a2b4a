"""Analytic gradient of the Laplace ``-2 log L`` over ``(theta, beta)``.

At the conditional modes ``u`` (the minimizer of the penalized deviance
``g(u) = sum D_i(eta_i) + |u|^2``, ``eta = offset + X beta + Z Lambda u``) the
Laplace value is

    F(theta, beta) = g(u) + log det M,   M = Lambda'Z'WZ Lambda + I,

with ``W`` the expected-information weights at the modes (glmer's).  Write
``d_i = dD_i/deta_i``, ``a_i = (1/2) d^2 D_i / deta_i^2`` (the observed
information: ``a = W`` for a canonical link), ``W'_i = dW_i/deta_i``,
``h_i = (Z Lambda)_i M^{-1} (Z Lambda)_i'`` (the diagonal of the hat-like
matrix) and ``G = Z Lambda M^{-1}``.  Then

* ``g`` contributes its partial derivatives only (``dg/du = 0`` at the modes):
  ``X'd`` for ``beta`` and ``d'Z (dLambda) u`` for ``theta``;
* ``log det M`` changes through ``Lambda`` directly,
  ``2 sum_i W_i (Z dLambda)_i G_i'``, and through the weights,
  ``sum_i W'_i h_i deta_i``, where the modes move with the parameters:
  differentiating ``dg/du = 0`` gives
  ``M_A du = -(Lambda'Z'A (X dbeta + Z dLambda u) + (1/2) dLambda'Z'd)``,
  ``M_A = Lambda'Z'AZ Lambda + I``.

With ``v = W' h``, ``M_A s = Lambda'Z'v`` and ``r = v - a (Z Lambda s)``:

    dF/dbeta   = X'(d + r)
    dF/dtheta  = (d + r)'Z dLambda u - (1/2) d'Z dLambda s
                 + 2 sum_i W_i (Z dLambda)_i G_i'

The sparse algebra eliminates the term with most levels block by block (as the
likelihood engine does) and keeps the other terms' Schur complement dense, so
the cost is ``O(n r + r^3)`` with ``r`` the other terms' columns.  Where that
complement or the ``n x r`` array would be too large, :meth:`available` says so
and the optimizer differentiates numerically.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ..likelihood.blocked import NotPositiveDefinite
from .laplace import LaplaceObjective, PirlsState

__all__ = ["LaplaceGradient", "BlockParts", "BlockFactor", "JointBlockFactor"]

_MAX_R = 3000          # largest dense Schur complement of the later terms
_MAX_NR = 30_000_000   # largest n x r array formed


@dataclass
class BlockParts:
    """``M = Lambda'Z'WZ Lambda + I`` with the first term eliminated block by block.

    Attributes
    ----------
    Dinv : numpy.ndarray
        ``(l0, q0, q0)`` inverses of the first term's diagonal blocks.
    B, BD : numpy.ndarray or None
        ``(r, l0, q0)``: the later terms against the first, and ``B D^{-1}``.
    cho : tuple or None
        Cholesky factor (``scipy.linalg.cho_factor``) of the Schur complement.
    vals : numpy.ndarray or None
        ``(n, sum q)``: the rows of ``Z_R Lambda_R`` on their columns.
    logdet : float
        ``log det M``.
    """

    Dinv: np.ndarray
    B: np.ndarray | None
    BD: np.ndarray | None
    cho: tuple | None
    vals: np.ndarray | None
    logdet: float


@dataclass
class BlockFactor:
    """A penalized least-squares solution by :meth:`LaplaceGradient.factor`
    (what PIRLS reads of a factor: :meth:`solution` and ``ldL2``)."""

    u: np.ndarray
    ldL2: float
    parts: BlockParts
    weights: np.ndarray

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(beta, u)``: no fixed effects in this system."""
        return np.zeros(0), self.u

    def omega_inv_diag(self) -> list[np.ndarray]:
        """Diagonal blocks of ``M^{-1}`` for a single term (what the quadrature reads)."""
        if self.parts.B is not None:
            raise NotImplementedError("the diagonal of M^{-1} is formed for one term only")
        return [self.parts.Dinv]


@dataclass
class JointBlockFactor:
    """The joint penalized least-squares solution ``(beta, u)`` by
    :meth:`LaplaceGradient.joint_factor` (what PIRLS reads of the engine's joint
    factor: :meth:`solution`, ``ldL2`` and :meth:`rx`).

    Attributes
    ----------
    beta, u : numpy.ndarray
    ldL2 : float
        ``log det M`` (the ``u`` block, as the engine's).
    lx : numpy.ndarray
        Lower Cholesky factor of the Schur complement of ``M`` in the joint
        system, ``X'WX - X'WZ Lambda M^{-1} Lambda'Z'WX``.
    """

    beta: np.ndarray
    u: np.ndarray
    ldL2: float
    lx: np.ndarray

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        return self.beta, self.u

    def rx(self) -> np.ndarray:
        return self.lx


class LaplaceGradient:
    """Gradient of :class:`~mixedanova.glmm.laplace.LaplaceObjective`'s value.

    Parameters
    ----------
    obj : LaplaceObjective
    """

    def __init__(self, obj: LaplaceObjective) -> None:
        self.obj = obj
        d = obj.data
        terms = d.terms
        self.n = d.n
        sizes = [t.nlev * t.q for t in terms]
        self.offsets = np.cumsum([0] + sizes)
        self.k0 = int(np.argmax(sizes))
        self.rest = [k for k in range(len(terms)) if k != self.k0]
        roff = np.cumsum([0] + [sizes[k] for k in self.rest])
        self.r = int(roff[-1])
        self.Q = int(sum(sizes))
        self.roff = {k: int(o) for k, o in zip(self.rest, roff[:-1])}
        # u (terms in order) from [first term's block; later terms' blocks]
        n0 = sizes[self.k0]
        blocks = [np.arange(n0)] + [n0 + self.roff[k] + np.arange(sizes[k]) for k in self.rest]
        by_term = dict(zip([self.k0] + self.rest, blocks))
        self.u_order = np.concatenate([by_term[k] for k in range(len(terms))]) \
            if terms else np.zeros(0, dtype=int)
        self._last = None
        # per theta entry: (term, row a, column b) of its template
        self.entries = []
        for k, (q, off) in enumerate(zip(d.layout.qs, d.layout.offsets)):
            for b in range(q):
                for a in range(b, q):
                    self.entries.append((k, a, b))
        # sparse pattern of Z_R Lambda_R (n x r): per row, the later terms' columns
        if self.rest:
            cols = [self.roff[k] + terms[k].codes[:, None] * terms[k].q
                    + np.arange(terms[k].q)[None, :] for k in self.rest]
            self.r_cols = np.hstack(cols)  # (n, sum q)
            self.r_q = self.r_cols.shape[1]
            if self.available():
                self._setup()

    def family_supported(self) -> bool:
        """The gradient is that of glmer's expected-information log det: with
        ``information="observed"`` (glmmTMB's) the fit takes finite differences."""
        return getattr(self.obj.family, "information", "expected") == "expected"

    def available(self) -> bool:
        """Whether the analytic gradient's arrays stay small (see the module docstring)."""
        d = self.obj.data
        if not self.family_supported():
            return False
        n0 = d.terms[self.k0].nlev * d.terms[self.k0].q
        return all(t.rows is None for t in d.terms) and self.r <= _MAX_R \
            and self.n * max(self.r, 1) <= _MAX_NR and self.r * n0 <= _MAX_NR

    # ---------------------------------------------------------------- algebra
    def _zlam(self, templates):
        d = self.obj.data
        return [t.zraw @ T for t, T in zip(d.terms, templates)]

    def _setup(self) -> None:
        """Flat scatter indices of ``E = Z_R'WZ_R`` and ``B = Z_R'WZ_0`` (once)."""
        d = self.obj.data
        t0 = d.terms[self.k0]
        n, r, q0 = self.n, self.r, t0.q
        self.n0 = t0.nlev * q0
        rc = self.r_cols
        self.e_index = (rc[:, :, None] * r + rc[:, None, :]).reshape(n, -1)
        c0cols = t0.codes[:, None] * q0 + np.arange(q0)[None, :]
        self.b_index = (rc[:, :, None] * self.n0 + c0cols[:, None, :]).reshape(n, -1)
        self.dense_index = (np.arange(n)[:, None] * r + rc)

    def _parts(self, c: list[np.ndarray], w: np.ndarray) -> BlockParts:
        """Blocks of ``Lambda'Z'diag(w)Z Lambda + I``: the first term's inverse
        diagonal blocks, ``B`` (later x first) densely, ``B D^{-1}``, the Cholesky
        factor of the Schur complement and the log-determinant.

        Raises
        ------
        NotPositiveDefinite
        """
        d = self.obj.data
        t0 = d.terms[self.k0]
        c0, q0, l0 = c[self.k0], t0.q, t0.nlev
        if q0 == 1:
            D = np.bincount(t0.codes, weights=w * c0[:, 0] ** 2, minlength=l0) + 1.0
            if not np.all(D > 0):
                raise NotPositiveDefinite("a first-term block is not positive definite")
            Dinv = (1.0 / D)[:, None, None]
            logdet = float(np.log(D).sum())
        else:
            D = np.zeros((l0, q0, q0))
            for a in range(q0):
                for b in range(a, q0):
                    D[:, a, b] = np.bincount(t0.codes, weights=w * c0[:, a] * c0[:, b],
                                             minlength=l0)
                    D[:, b, a] = D[:, a, b]
            D[:, np.arange(q0), np.arange(q0)] += 1.0
            try:
                Lc = np.linalg.cholesky(D)
            except np.linalg.LinAlgError:
                raise NotPositiveDefinite("a first-term block is not positive definite") \
                    from None
            logdet = float(2.0 * np.log(np.diagonal(Lc, axis1=1, axis2=2)).sum())
            Dinv = np.linalg.inv(D)
        if not self.rest:
            return BlockParts(Dinv, None, None, None, None, logdet)
        r = self.r
        vals = np.concatenate([c[k] for k in self.rest], axis=1)  # (n, sum q)
        wv = w[:, None] * vals
        E = np.bincount(self.e_index.ravel(),
                        weights=(wv[:, :, None] * vals[:, None, :]).ravel(),
                        minlength=r * r).reshape(r, r)
        E[np.arange(r), np.arange(r)] += 1.0
        B = np.bincount(self.b_index.ravel(),
                        weights=(wv[:, :, None] * c0[:, None, :]).ravel(),
                        minlength=r * self.n0).reshape(r, l0, q0)
        BD = B * Dinv[None, :, 0, 0, None] if q0 == 1 else \
            np.einsum("rlp,lpq->rlq", B, Dinv)
        S = E - BD.reshape(r, -1) @ B.reshape(r, -1).T
        try:
            cho = cho_factor(S, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite("the Schur complement is not positive definite") \
                from None
        logdet += float(2.0 * np.log(np.diag(cho[0])).sum())
        return BlockParts(Dinv, B, BD, cho, vals, logdet)

    def _solve(self, parts: BlockParts, x0: np.ndarray, xR: np.ndarray):
        """``M^{-1} [x0; xR]`` from :meth:`_parts` (``x0`` as ``(l0, q0)``)."""
        Dinv, B, BD = parts.Dinv, parts.B, parts.BD
        if B is None:
            return np.einsum("lpq,lq->lp", Dinv, x0), xR
        r = self.r
        zR = cho_solve(parts.cho, xR - BD.reshape(r, -1) @ x0.reshape(-1),
                       check_finite=False)
        z0 = np.einsum("lpq,lq->lp", Dinv, x0 - np.einsum("rlq,r->lq", B, zR))
        return z0, zR

    def _rhs(self, c: list[np.ndarray], v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Lambda'Z'v`` split as ``(first term (l0, q0), later terms (r,))``."""
        d = self.obj.data
        x0 = self._per_level(self.k0, c[self.k0] * v[:, None])
        xR = np.zeros(self.r)
        for k in self.rest:
            t = d.terms[k]
            xR[self.roff[k]:self.roff[k] + t.nlev * t.q] = \
                self._per_level(k, c[k] * v[:, None]).ravel()
        return x0, xR

    def _rhs_cols(self, c: list[np.ndarray], V: np.ndarray) -> np.ndarray:
        """``Lambda'Z'V`` for the columns of ``V``: ``(Q, m)``, the first term's
        block (level-major) then the later terms'."""
        return np.column_stack([np.concatenate([x0.ravel(), xR]) for x0, xR in
                                (self._rhs(c, V[:, j]) for j in range(V.shape[1]))])

    def _solve_cols(self, parts: BlockParts, R: np.ndarray) -> np.ndarray:
        """``M^{-1} R`` for ``R`` as :meth:`_rhs_cols` returns it."""
        n0 = self.Q - self.r
        q0 = self.obj.data.terms[self.k0].q
        out = np.empty_like(R)
        for j in range(R.shape[1]):
            z0, zR = self._solve(parts, R[:n0, j].reshape(-1, q0), R[n0:, j])
            out[:, j] = np.concatenate([z0.ravel(), zR])
        return out

    def _to_u(self, z0: np.ndarray, zR: np.ndarray) -> np.ndarray:
        """``u`` (terms in order) from the solution's two parts."""
        return np.concatenate([z0.ravel(), zR])[self.u_order]

    def factor(self, templates: list[np.ndarray], z: np.ndarray, w: np.ndarray
               ) -> "BlockFactor":
        """The penalized weighted least-squares solution ``u`` of the working
        response ``z`` (``eta - offset - X beta`` plus the working residual) with
        weights ``w``: ``M u = Lambda'Z'W z``, and ``log det M``."""
        c = self._zlam(templates)
        parts = self._parts(c, w)
        u = self._to_u(*self._solve(parts, *self._rhs(c, w * z)))
        return BlockFactor(u, parts.logdet, parts, w)

    def joint_factor(self, templates: list[np.ndarray], X: np.ndarray, z: np.ndarray,
                     w: np.ndarray) -> JointBlockFactor:
        """The joint solution of ``[M, L'Z'WX; X'WZ L, X'WX] [u; beta] = [L'Z'Wz; X'Wz]``
        (``L = Lambda``; ``z`` the working response without ``X beta`` taken off)
        by eliminating ``u``: ``M C = Lambda'Z'WX``, the Schur complement
        ``X'WX - (Lambda'Z'WX)'C``, then ``beta`` and ``u = M^{-1} Lambda'Z'Wz - C beta``.

        Raises
        ------
        NotPositiveDefinite
        """
        c = self._zlam(templates)
        parts = self._parts(c, w)
        p = X.shape[1]
        # the columns of Lambda'Z'W [X z] and M^{-1} times them, solved together
        RR = self._rhs_cols(c, np.column_stack([w[:, None] * X, w * z]))
        CC = self._solve_cols(parts, RR)
        R, C, a = RR[:, :p], CC[:, :p], CC[:, p]
        schur = X.T @ (w[:, None] * X) - R.T @ C
        try:
            lx = np.linalg.cholesky(schur) if p else np.zeros((0, 0))
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite("the fixed-effects block is not positive "
                                      "definite") from None
        beta = cho_solve((lx, True), X.T @ (w * z) - R.T @ a, check_finite=False) \
            if p else np.zeros(0)
        uf = a - C @ beta
        return JointBlockFactor(beta, uf[self.u_order], parts.logdet, lx)

    # ---------------------------------------------------------------- gradient
    def __call__(self, st: PirlsState) -> np.ndarray:
        """``d(-2 log L) / d(theta, beta)`` at the modes ``st`` (entries that are not
        finite, e.g. an NB shape running to infinity, are the optimizer's to handle:
        it stops and says the fit did not converge)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return self._gradient(st)

    def _gradient(self, st: PirlsState) -> np.ndarray:
        obj = self.obj
        d, fam = obj.data, obj.family
        templates = d.layout.templates(st.theta)
        c = self._zlam(templates)
        eta, mu, W = st.eta, st.mu, st.weights
        link = fam.link
        mueta = link.mu_eta(eta)
        V = fam.variance(mu)
        dm = 1e-4 * np.maximum(np.abs(mu), 1e-3)
        dV = (fam.variance(mu + dm) - fam.variance(mu - dm)) / (2.0 * dm)
        pw = d.pw
        dvec = -2.0 * pw * (d.y - mu) * mueta / V
        # the shortcut a = W, W' = pw V' mu_eta needs mu_eta = V (canonical link, unit
        # dispersion: binomial logit, Poisson log); otherwise the general formulas
        canonical = (fam.link.name == fam.canonical and not fam.has_param)
        if canonical:
            a = W
            dW = pw * dV * mueta
        else:
            he = 1e-4 * (1.0 + np.abs(eta))
            with np.errstate(invalid="ignore"):
                mu2 = (link.mu_eta(eta + he) - link.mu_eta(eta - he)) / (2.0 * he)
            mu2 = np.where(np.isfinite(mu2), mu2, 0.0)
            a = W - pw * (d.y - mu) * (mu2 * V - mueta ** 2 * dV) / V ** 2
            dW = pw * (2.0 * mueta * mu2 / V - mueta ** 3 * dV / V ** 2)
        f = st.factor
        parts = f.parts if isinstance(f, BlockFactor) and f.weights is W else self._parts(c, W)
        G = self._inverse_rows(parts, c)
        h = self._hat(c, G)
        v = dW * h
        if obj.count_gap is not None:  # -2 gap(mu) is one more function of eta
            v = v - 2.0 * obj.count_gap.slope(mu) * mueta
        # s = M_A^{-1} Lambda'Z'v
        parts_a = parts if canonical else self._parts(c, a)
        s = self._to_u(*self._solve(parts_a, *self._rhs(c, v)))
        rr = v - a * obj.zb(templates, s)
        dr = dvec + rr
        g_beta = d.X.T @ dr
        g_theta = self._theta_gradient(st.u, s, G, dr, dvec, W)
        self._last = (st, templates, c, a, dvec, parts_a)
        return np.concatenate([g_theta, g_beta])

    def _hat(self, c: list[np.ndarray], G: dict) -> np.ndarray:
        """``h_i = (Z Lambda)_i M^{-1} (Z Lambda)_i'`` from the rows of ``G``."""
        return sum(np.einsum("iq,iq->i", c[k], G[k]) for k in range(len(c)))

    def _theta_gradient(self, u: np.ndarray, s: np.ndarray, G: dict, dr: np.ndarray,
                        dvec: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``(d + r)'Z dLambda u - (1/2) d'Z dLambda s + 2 sum_i W_i (Z dLambda)_i G_i'``
        per entry of ``theta`` (``u``, ``s`` in the terms' order)."""
        d = self.obj.data
        g_theta = np.empty(len(self.entries))
        for m, (k, ai, bi) in enumerate(self.entries):
            t = d.terms[k]
            off = self.offsets[k]
            uk = u[off:off + t.nlev * t.q].reshape(t.nlev, t.q)[t.codes, bi]
            sk = s[off:off + t.nlev * t.q].reshape(t.nlev, t.q)[t.codes, bi]
            z = t.zraw[:, ai]
            g_theta[m] = (dr @ (z * uk) - 0.5 * (dvec @ (z * sk))
                          + 2.0 * ((W * z) @ G[k][:, bi]))
        return g_theta

    def predict_modes(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray | None:
        """First-order prediction of the modes at ``(theta, beta)`` from the last
        point whose gradient was taken (``du`` from differentiating ``dg/du = 0``,
        see the module docstring): a warm start that saves PIRLS iterations."""
        if self._last is None:
            return None
        st, templates, c, a, dvec, parts_a = self._last
        obj = self.obj
        new = obj.data.layout.templates(np.asarray(theta, dtype=float))
        dT = [T1 - T0 for T1, T0 in zip(new, templates)]
        u = st.u
        deta = obj.data.X @ (np.asarray(beta, dtype=float) - st.beta) + obj.zb(dT, u)
        # M_A du = -(Lambda'Z'A deta + (1/2) dLambda'Z'dvec), as one right-hand side
        cd = self._zlam(dT)
        ad = a * deta
        comb = [ck * ad[:, None] + 0.5 * cdk * dvec[:, None] for ck, cdk in zip(c, cd)]
        x0, xR = self._rhs(comb, np.ones(len(ad)))
        du = self._to_u(*self._solve(parts_a, -x0, -xR))
        return u + du

    def _inverse_rows(self, parts: BlockParts, c: list[np.ndarray]) -> dict:
        """Per term ``k``, ``(n, q_k)``: the entries of ``G = Z Lambda M^{-1}`` on
        each row's own level block of that term."""
        d = self.obj.data
        Dinv, B, BD = parts.Dinv, parts.B, parts.BD
        t0 = d.terms[self.k0]
        l = t0.codes
        K = np.einsum("iq,iqp->ip", c[self.k0], Dinv[l])  # row i of Z0 Lambda0 D^{-1}
        G = {}
        if B is None:
            G[self.k0] = K
        else:
            Bt = B.transpose(1, 2, 0)  # (l0, q0, r)
            Y = np.zeros(self.n * self.r)
            Y[self.dense_index.ravel()] = parts.vals.ravel()  # one entry per (row, column)
            Y = Y.reshape(self.n, self.r) - np.einsum("iq,iqr->ir", K, Bt[l])
            GR = cho_solve(parts.cho, Y.T, check_finite=False).T
            G[self.k0] = K - np.einsum("ir,iqr->iq", GR, BD.transpose(1, 2, 0)[l])
            for k in self.rest:
                t = d.terms[k]
                G[k] = np.take_along_axis(GR, self.roff[k] + t.codes[:, None] * t.q
                                          + np.arange(t.q)[None, :], axis=1)
        return G

    def _per_level(self, k: int, vals: np.ndarray) -> np.ndarray:
        t = self.obj.data.terms[k]
        if vals.shape[1] == 1:
            return np.bincount(t.codes, weights=vals[:, 0], minlength=t.nlev)[:, None]
        return np.stack([np.bincount(t.codes, weights=vals[:, j], minlength=t.nlev)
                         for j in range(t.q)], axis=1)
