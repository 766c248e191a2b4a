"""Kenward-Roger for models with random terms and a residual structure.

The marginal covariance is ``V = Z G Z' + R`` with ``G`` the covariance of the
random effects and ``R = sigma^2 Rrel(u)`` the residual covariance.  The
covariance parameters ``psi`` are

* every variance and covariance entry of each term's ``q x q`` covariance
  (pbkrtest's linear parametrization: ``dV/dpsi_r = Z_k (I kron E_r) Z_k'``);
* the residual variance ``sigma^2`` (unless held fixed) and the structure's
  natural parameters (phi, SD ratios, power, expon, the visit correlation's
  parameters), except that compound symmetry's ``rho`` enters as the
  covariance ``sigma^2 rho`` (SAS's ``CS`` parameter), so that a compound
  symmetric residual is linear in ``psi`` like the random intercept it mimics.

With ``W = V^{-1}`` and ``Phi = (X'WX)^{-1}`` Kenward & Roger (1997) need

    P_r  = -X'W V_r W X,    Q_rs = X'W V_r W V_s W X,    R_rs = X'W V_rs W X,
    I_rs = tr(P V_r P V_s) / 2   (expected REML information, P = W - W X Phi X' W),

and adjust ``Phi_A = Phi + 2 Phi [sum_rs W_rs (Q_rs - P_r Phi P_s - R_rs / 4)] Phi``
with ``W_rs = (I^{-1})_rs``.  ``R_rs`` vanishes for parameters that enter ``V``
linearly (every ``G`` entry, ``sigma^2``, the compound symmetry covariance), so
with an iid or compound symmetric residual the result is pbkrtest's on the
equivalent ``lmer`` model.  The residual derivatives ``R_r, R_rs`` are central
differences of ``R(psi)`` (exact for the linear parameters).

``V`` is block diagonal over the sets of rows linked by a random-effect level
or a residual group (one per subject when the residual groups nest in the
random groups, one per top-level group for nested factors); the algebra is
dense per block, so the cost is ``O(sum_c n_c^3)`` times the number of
parameters.  A block above 6,000 rows is refused.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve

from ..errors import ArgumentError, MixedAnovaError
from ..likelihood.threads import one_blas_thread
from .kenward_roger_core import KenwardRogerSetup, parameter_blocks, z_matrix

__all__ = ["residual_kenward_roger", "ResidualKRParameters", "dense_block_kenward_roger",
           "linked_blocks", "level_pattern"]

_MAX_ROWS = 6000  # largest block of linked rows for the dense algebra


@dataclass(frozen=True)
class ResidualKRParameters:
    """The residual covariance ``R(psi)`` on the Kenward-Roger parametrization.

    Attributes
    ----------
    structure : ResidualStructure
    psi : numpy.ndarray
        ``(sigma^2, natural...)`` at the estimates (no ``sigma^2`` when it is fixed),
        compound symmetry's ``rho`` as ``sigma^2 rho``.
    names : tuple of str
    fixed_sigma2 : float or None
    cs_index : int
        Position of compound symmetry's parameter in the natural parameters (-1 if none).
    """

    structure: object
    psi: np.ndarray
    names: tuple[str, ...]
    fixed_sigma2: float | None
    cs_index: int

    @classmethod
    def at(cls, structure, u: np.ndarray, sigma: float,
           fixed_sigma: float | None) -> "ResidualKRParameters":
        """The parametrization at ``(u, sigma)``."""
        nat = np.array(structure.natural(u), dtype=float)
        s2 = float(sigma) ** 2
        cs = -1
        if type(structure.correlation).__name__ == "CompoundSymmetry":
            cs = 0
            nat[0] = s2 * nat[0]
        names = tuple(structure.names)
        if fixed_sigma is None:
            return cls(structure, np.concatenate([[s2], nat]), ("sigma^2",) + names, None, cs)
        return cls(structure, nat, names, float(fixed_sigma) ** 2, cs)

    def sigma2_u(self, psi: np.ndarray) -> tuple[float, np.ndarray]:
        """``(sigma^2, u)`` of ``psi``."""
        psi = np.asarray(psi, dtype=float)
        if self.fixed_sigma2 is None:
            s2, nat = float(psi[0]), np.array(psi[1:])
        else:
            s2, nat = self.fixed_sigma2, np.array(psi)
        if self.cs_index >= 0:
            nat[self.cs_index] = nat[self.cs_index] / s2
        return s2, self.structure.unconstrained(nat)

    def matrix(self, psi: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``R`` restricted to ``rows`` (dense)."""
        s2, u = self.sigma2_u(psi)
        return s2 * self.structure.covariance(u, rows)


def _steps(psi: np.ndarray) -> np.ndarray:
    return 1e-4 * np.maximum(np.abs(psi), 0.05)


def _residual_derivatives(par: ResidualKRParameters, rows: np.ndarray):
    """``R``, its first derivatives ``(k, n, n)`` and second ``(k, k, n, n)`` on ``rows``
    by central differences (the same formula as the Satterthwaite Hessian)."""
    psi = par.psi
    k = len(psi)
    h = _steps(psi)
    f0 = par.matrix(psi, rows)
    n = len(rows)
    d1 = np.empty((k, n, n))
    d2 = np.empty((k, k, n, n))
    plus, minus = [], []
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        fp, fm = par.matrix(psi + e, rows), par.matrix(psi - e, rows)
        plus.append(fp)
        minus.append(fm)
        d1[i] = (fp - fm) / (2.0 * h[i])
        d2[i, i] = (fp - 2.0 * f0 + fm) / h[i] ** 2
    for i in range(k):
        for j in range(i + 1, k):
            e = np.zeros(k)
            e[i], e[j] = h[i], h[j]
            val = (par.matrix(psi + e, rows) + par.matrix(psi - e, rows) - plus[i] - minus[i]
                   - plus[j] - minus[j] + 2.0 * f0) / (2.0 * h[i] * h[j])
            d2[i, j] = d2[j, i] = val
    return f0, d1, d2


def level_pattern(design) -> sp.csr_matrix:
    """``n x sum(nlev)`` indicators of every random term's level of each row (rows
    of one level are correlated through ``G`` even when they share no column of
    ``Z``, e.g. the visits of ``(0 + visit | subject)``)."""
    n = len(design.X)
    mats = [sp.csr_matrix((np.ones(n), (np.arange(n), np.asarray(b.codes))),
                          shape=(n, b.nlev)) for b in design.blocks]
    return sp.hstack(mats, format="csr") if mats else sp.csr_matrix((n, 0))


def linked_blocks(Z: sp.csr_matrix, groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Row sets linked by a random-effect level (``Z`` the :func:`level_pattern`) or a
    residual group."""
    from scipy.sparse.csgraph import connected_components

    pattern = (Z != 0).astype(float)
    if groups is not None:
        codes = np.unique(groups, return_inverse=True)[1].ravel()
        ind = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, codes.max() + 1))
        pattern = sp.hstack([pattern, ind], format="csr")
    _, label = connected_components(pattern @ pattern.T, directed=False)
    order = np.argsort(label, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(label))])
    return [order[starts[i]:starts[i + 1]] for i in range(len(starts) - 1)]


def _g_derivatives(design, Z: sp.csr_matrix) -> list[sp.csr_matrix]:
    """``Z D_r Z'`` for every ``G`` entry (pbkrtest's order), as sparse ``n x n``."""
    out = []
    for off, nlev, q, i, j in parameter_blocks(design):
        cols_i = off + np.arange(nlev) * q + i
        cols_j = off + np.arange(nlev) * q + j
        Zi, Zj = Z[:, cols_i], Z[:, cols_j]
        out.append((Zi @ Zj.T + Zj @ Zi.T).tocsr() if i != j else (Zi @ Zi.T).tocsr())
    return out


def residual_kenward_roger(res, linear: bool = False):
    """:class:`~mixedanova.inference.kenward_roger.KenwardRogerSetup` of a REML fit with
    random terms and a residual structure (see the module docstring); ``linear`` drops
    the second-derivative term ``R_rs`` (as mmrm's ``"Kenward-Roger-Linear"``)."""
    design = res.design
    fit = res.state.residual
    free = fit.info.get("free")
    if free is not None and not np.all(free):
        held = [n for n, f in zip(fit.names, free) if not f]
        raise ArgumentError(f"Kenward-Roger with residual-structure parameters held at given "
                            f"values (fixed=: {', '.join(map(repr, held))}) is not available "
                            "so far (the adjustment differentiates every structure "
                            "parameter); use ddf='satterthwaite'")
    X = np.asarray(design.X, dtype=float)
    n, p = X.shape
    sigma = float(res.sigma)
    s2 = sigma * sigma
    Z = z_matrix(design)
    layout = design.theta_layout()
    lam = sp.block_diag([sp.kron(sp.eye(b.nlev), T) for b, T in
                         zip(design.blocks, layout.templates(res.state.theta))], format="csr")
    ZGZ = (Z @ (s2 * (lam @ lam.T)) @ Z.T).tocsr()
    VG = _g_derivatives(design, Z)
    par = ResidualKRParameters.at(fit.structure, fit.u, sigma, res.state.fixed_sigma)
    ng, kr = len(VG), len(par.psi)
    R = ng + kr
    groups = None if fit.structure.correlation is None else fit.structure.correlation.groups
    blocks = linked_blocks(level_pattern(design), groups, n)
    largest = max(len(b) for b in blocks)
    if largest > _MAX_ROWS:
        raise MixedAnovaError(
            f"Kenward-Roger with a residual structure needs the dense inverse of the "
            f"{largest} x {largest} covariance of rows linked by random effects or residual "
            f"groups; this implementation stops at {_MAX_ROWS} rows. Use ddf='satterthwaite'")
    sw = np.sqrt(np.asarray(design.weights, dtype=float)) \
        if getattr(design, "has_weights", False) else None

    def pieces(rows):
        Rc, d1, d2 = _residual_derivatives(par, rows)
        if sw is not None:  # R = W^{-1/2} sigma^2 Rrel W^{-1/2} (rows scaled by sqrt(w))
            scale = 1.0 / np.outer(sw[rows], sw[rows])
            Rc, d1, d2 = Rc * scale, d1 * scale, d2 * scale
        Vc = ZGZ[rows][:, rows].toarray() + Rc
        Vr = np.concatenate([np.stack([G[rows][:, rows].toarray() for G in VG])
                             if VG else np.zeros((0,) + Vc.shape), d1])
        return Vc, Vr, [(np.arange(ng, R), d2)]

    return dense_block_kenward_roger(X, blocks, pieces, R, linear=linear)


def dense_block_kenward_roger(X: np.ndarray, blocks: list[np.ndarray], pieces, n_par: int,
                              linear: bool = False) -> KenwardRogerSetup:
    """Kenward & Roger (1997) on a block-diagonal ``V`` (see the module docstring).

    Parameters
    ----------
    X : numpy.ndarray
        ``n x p`` fixed-effects design.
    blocks : list of numpy.ndarray
        Row sets over which ``V`` is block diagonal.
    pieces : callable
        ``pieces(rows) -> (V, dV, d2V)``: ``V`` on ``rows`` (dense, ``m x m``), its
        first derivatives ``(k, m, m)`` in the ``k = n_par`` covariance parameters and
        the nonzero second derivatives as a list of ``(idx, D)``, ``D`` the
        ``(len(idx), len(idx), m, m)`` second derivatives in the parameters ``idx``
        (the others are zero; an empty list: every parameter enters linearly).
    n_par : int
        Number of covariance parameters.
    linear : bool
        Drop the second-derivative term (mmrm's ``"Kenward-Roger-Linear"``).
    """
    n, p = X.shape
    R = n_par
    largest = max(len(b) for b in blocks)
    xwx = np.zeros((p, p))
    P = np.zeros((R, p, p))
    Qm = np.zeros((R, R, p, p))
    Rm = np.zeros((R, R, p, p))
    K = np.zeros((R, R))
    # many small products: one BLAS thread (a second one only spins on a busy machine)
    threads = one_blas_thread() if largest < 1000 else contextlib.nullcontext()
    with threads:
        for rows in blocks:
            Xc = X[rows]
            Vc, Vr, d2 = pieces(rows)
            Wc = cho_solve(cho_factor(Vc, lower=True), np.eye(len(rows)))
            Wc = 0.5 * (Wc + Wc.T)
            WX = Wc @ Xc
            xwx += Xc.T @ WX
            AW = Vr @ WX                              # V_r W X
            WA = Wc @ AW                              # W V_r W X
            WV = Wc @ Vr                              # W V_r
            P -= np.einsum("ip,riq->rpq", WX, AW)
            Qm += np.einsum("rip,siq->rspq", AW, WA)
            K += np.einsum("rij,sji->rs", WV, WV)
            if not linear:
                for idx, D in d2:
                    Rm[np.ix_(idx, idx)] += np.einsum("ip,abiq->abpq", WX, D @ WX)
    phi = np.linalg.inv(xwx)
    phi = 0.5 * (phi + phi.T)
    P = 0.5 * (P + P.transpose(0, 2, 1))
    PhiP = np.einsum("ij,rjk->rik", phi, P)
    IE2 = np.empty((R, R))
    for r in range(R):
        for s in range(r, R):
            IE2[r, s] = IE2[s, r] = (K[r, s] - 2.0 * np.sum(phi * Qm[r, s])
                                     + np.sum(PhiP[r] * PhiP[s].T))
    condition = float(np.min(np.abs(np.linalg.eigvalsh(IE2))))
    Wg = 2.0 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
    Wg = 0.5 * (Wg + Wg.T)
    UU = np.zeros((p, p))
    for r in range(R):
        for s in range(R):
            UU += Wg[r, s] * (Qm[r, s] - P[r] @ phi @ P[s] - 0.25 * Rm[r, s])
    phi_adj = phi + 2.0 * phi @ UU @ phi
    phi_adj = 0.5 * (phi_adj + phi_adj.T)
    if not math.isfinite(float(np.sum(phi_adj))):
        raise MixedAnovaError("Kenward-Roger's adjusted covariance is not finite")
    return KenwardRogerSetup(phi=phi, phi_adj=phi_adj, P=P, W=Wg, condition=condition)
