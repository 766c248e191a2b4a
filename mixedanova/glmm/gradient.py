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

import numpy as np
import scipy.sparse as sp

from .laplace import LaplaceObjective, PirlsState

__all__ = ["LaplaceGradient"]

_MAX_R = 3000          # largest dense Schur complement of the later terms
_MAX_NR = 30_000_000   # largest n x r array formed


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
        self.roff = {k: int(o) for k, o in zip(self.rest, roff[:-1])}
        self.canonical = obj.family.link.name == obj.family.canonical
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

    def available(self) -> bool:
        """Whether the analytic gradient's arrays stay small (see the module docstring)."""
        return all(t.rows is None for t in self.obj.data.terms) and self.r <= _MAX_R \
            and self.n * max(self.r, 1) <= _MAX_NR

    # ---------------------------------------------------------------- algebra
    def _zlam(self, templates):
        d = self.obj.data
        return [t.zraw @ T for t, T in zip(d.terms, templates)]

    def _parts(self, c: list[np.ndarray], w: np.ndarray):
        """Blocks of ``Lambda'Z'diag(w)Z Lambda + I``: the first term's inverse
        diagonal blocks, ``B`` (later x first) densely, ``B D^{-1}`` and the
        inverse of the Schur complement."""
        d = self.obj.data
        t0 = d.terms[self.k0]
        c0, q0, l0 = c[self.k0], t0.q, t0.nlev
        D = np.zeros((l0, q0, q0))
        for a in range(q0):
            for b in range(a, q0):
                D[:, a, b] = np.bincount(t0.codes, weights=w * c0[:, a] * c0[:, b],
                                         minlength=l0)
                D[:, b, a] = D[:, a, b]
        D[:, np.arange(q0), np.arange(q0)] += 1.0
        Dinv = np.linalg.inv(D)
        if not self.rest:
            return Dinv, None, None, None, None
        n, r = self.n, self.r
        vals = np.hstack([c[k] for k in self.rest])  # (n, sum q)
        rows = np.repeat(np.arange(n), self.r_q)
        ZR = sp.csr_matrix((vals.ravel(), (rows, self.r_cols.ravel())), shape=(n, r))
        Z0 = sp.csr_matrix(((c0).ravel(), (np.repeat(np.arange(n), q0),
                                          (t0.codes[:, None] * q0 + np.arange(q0)).ravel())),
                           shape=(n, l0 * q0))
        ZRw = sp.diags(w) @ ZR
        E = (ZRw.T @ ZR).toarray()
        E[np.arange(r), np.arange(r)] += 1.0
        B = (ZRw.T @ Z0).toarray().reshape(r, l0, q0)
        BD = np.einsum("rlp,lpq->rlq", B, Dinv)
        S = E - BD.reshape(r, -1) @ B.reshape(r, -1).T
        P = np.linalg.inv(S)
        return Dinv, B, BD, P, ZR

    def _solve(self, parts, x0: np.ndarray, xR: np.ndarray):
        """``M^{-1} [x0; xR]`` from :meth:`_parts` (``x0`` as ``(l0, q0)``)."""
        Dinv, B, BD, P, _ = parts
        if B is None:
            return np.einsum("lpq,lq->lp", Dinv, x0), xR
        r = self.r
        zR = P @ (xR - BD.reshape(r, -1) @ x0.reshape(-1))
        z0 = np.einsum("lpq,lq->lp", Dinv, x0 - np.einsum("rlq,r->lq", B, zR))
        return z0, zR

    # ---------------------------------------------------------------- gradient
    def __call__(self, st: PirlsState) -> np.ndarray:
        """``d(-2 log L) / d(theta, beta)`` at the modes ``st``."""
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
        if self.canonical:
            a = W
            dW = pw * dV * mueta
        else:
            he = 1e-4 * (1.0 + np.abs(eta))
            with np.errstate(invalid="ignore"):
                mu2 = (link.mu_eta(eta + he) - link.mu_eta(eta - he)) / (2.0 * he)
            mu2 = np.where(np.isfinite(mu2), mu2, 0.0)
            a = W - pw * (d.y - mu) * (mu2 * V - mueta ** 2 * dV) / V ** 2
            dW = pw * (2.0 * mueta * mu2 / V - mueta ** 3 * dV / V ** 2)
        parts = self._parts(c, W)
        Dinv, B, BD, P, ZR = parts
        t0 = d.terms[self.k0]
        l = t0.codes
        K = np.einsum("iq,iqp->ip", c[self.k0], Dinv[l])  # row i of Z0 Lambda0 D^{-1}
        G = {}
        if B is None:
            G[self.k0] = K
        else:
            Bt = B.transpose(1, 2, 0)  # (l0, q0, r)
            Y = ZR.toarray() - np.einsum("iq,iqr->ir", K, Bt[l])
            GR = Y @ P
            G[self.k0] = K - np.einsum("ir,iqr->iq", GR, BD.transpose(1, 2, 0)[l])
            for k in self.rest:
                t = d.terms[k]
                G[k] = np.take_along_axis(GR, self.roff[k] + t.codes[:, None] * t.q
                                          + np.arange(t.q)[None, :], axis=1)
        h = sum(np.einsum("iq,iq->i", c[k], G[k]) for k in range(len(d.terms)))
        v = dW * h
        # s = M_A^{-1} Lambda'Z'v
        parts_a = parts if self.canonical else self._parts(c, a)
        x0 = self._per_level(self.k0, c[self.k0] * v[:, None])
        xR = np.zeros(self.r)
        for k in self.rest:
            t = d.terms[k]
            xR[self.roff[k]:self.roff[k] + t.nlev * t.q] = \
                self._per_level(k, c[k] * v[:, None]).ravel()
        s0, sR = self._solve(parts_a, x0, xR)
        s_terms = {self.k0: s0}
        for k in self.rest:
            t = d.terms[k]
            s_terms[k] = sR[self.roff[k]:self.roff[k] + t.nlev * t.q].reshape(t.nlev, t.q)
        zs = sum(np.einsum("iq,iq->i", c[k], s_terms[k][d.terms[k].codes])
                 for k in range(len(d.terms)))
        rr = v - a * zs
        dr = dvec + rr
        g_beta = d.X.T @ dr
        g_theta = np.empty(len(self.entries))
        u = st.u
        for m, (k, ai, bi) in enumerate(self.entries):
            t = d.terms[k]
            off = self.offsets[k]
            uk = u[off:off + t.nlev * t.q].reshape(t.nlev, t.q)[t.codes, bi]
            z = t.zraw[:, ai]
            g_theta[m] = (dr @ (z * uk) - 0.5 * (dvec @ (z * s_terms[k][t.codes, bi]))
                          + 2.0 * ((W * z) @ G[k][:, bi]))
        return np.concatenate([g_theta, g_beta])

    def _per_level(self, k: int, vals: np.ndarray) -> np.ndarray:
        t = self.obj.data.terms[k]
        return np.stack([np.bincount(t.codes, weights=vals[:, j], minlength=t.nlev)
                         for j in range(t.q)], axis=1)
