"""Kenward-Roger adjusted covariance, df and F scaling, as pbkrtest computes them.

pbkrtest (``vcovAdj``, ``.KR_adjust``, ``Lb_ddf``) parameterizes the marginal
covariance ``Sigma = sum_r gamma_r G_r`` linearly: one parameter per variance
and covariance entry of each term's ``q x q`` covariance (``G_r = Z_k (I kron E_r) Z_k'``)
plus the residual variance (``G = I``).  With ``W = Sigma^{-1}`` and
``Phi = (X'WX)^{-1}`` it needs

    P_r  = -X'W G_r W X,     Q_rs = X'W G_r W G_s W X,     K_rs = tr(W G_r W G_s),

the information ``IE2_rs = K_rs - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s)``,
``Wg = 2 IE2^{-1}`` and the adjusted covariance
``Phi_A = Phi + 2 Phi [sum_rs Wg_rs (Q_rs - P_r Phi P_s)] Phi``.

Nothing here forms an ``n x n`` matrix.  With ``S = Lambda Omega^{-1} Lambda'``
(``Omega^{-1}`` from the blocked factor), ``A = Z'Z``, ``C = Z'X`` and Woodbury,
``W = sigma^{-2} (I - Z S Z')``, every quantity above is a product of ``Q x Q``,
``Q x p`` and ``p x p`` matrices (``Q`` = number of random effects):
``Z'WZ = sigma^{-2}(A - ASA)``, ``Z'WX = sigma^{-2}(I - AS)C``,
``Z'WWZ = sigma^{-4}(I - AS)A(I - AS)'``, and powers of ``I - ZSZ'`` sandwiched
by ``X`` expand into ``C'S(AS)^k C`` terms.

The marginal covariance is block diagonal over the components of random effects
that share no observation (one per level of a single grouping factor, one per
top-level group of nested factors, one for all effects of crossed factors), and
so are ``S``, ``A`` and ``Z'WZ``: the ``Q x Q`` algebra is done per component
(components of one size stacked in one batch), ``O(sum_c Q_c^3)``, and the
``p x p`` pieces are sums over components.  ``Omega = Lambda'Z'Z Lambda + I``
is formed per component from ``A`` and ``Lambda``.  Only a component above
8,000 random effects (crossed factors with many levels) is refused: its dense
inverse would not fit in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, MixedAnovaError
from .kenward_roger_core import KenwardRogerSetup, parameter_blocks, z_matrix

__all__ = ["KenwardRogerSetup", "kenward_roger_setup", "KR_ML_MESSAGE"]

KR_WEIGHTS_MESSAGE = ("Kenward-Roger is not available for a fit with prior weights (pbkrtest "
                      "ignores them); use ddf='satterthwaite'")
KR_ML_MESSAGE = "Kenward-Roger's method is only available for REML model fits"
_MAX_Q = 8000  # largest component of random effects for the dense algebra


def _source_rows(par: tuple, n_re: int) -> np.ndarray:
    """Row map of ``D_r = I_nlev kron (e_i e_j' + e_j e_i')`` (``e_i e_i'`` if i = j).

    ``(D_r M)[g] = M[src[g]]`` where ``src[g] >= 0`` and 0 elsewhere.
    """
    off, nlev, q, i, j = par
    src = np.full(n_re, -1, dtype=np.int64)
    rows = np.arange(nlev) * q + off
    src[rows + i] = rows + j
    src[rows + j] = rows + i
    return src


def _apply_rows(src: np.ndarray, M: np.ndarray) -> np.ndarray:
    out = np.zeros_like(M)
    keep = src >= 0
    out[keep] = M[src[keep]]
    return out


@dataclass(frozen=True)
class _Group:
    """Components of the same size ``k``: global indices ``idx`` (m, k)."""

    idx: np.ndarray
    comp: np.ndarray   # component ids, (m,)


def _components(A, design) -> tuple[np.ndarray, np.ndarray, list[_Group]]:
    """Connected sets of random effects (linked by shared observations or a level).

    Returns the component label and the position within its component of
    every random effect, and the components grouped by size.
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    same_level = sp.block_diag([sp.kron(sp.eye(b.nlev), np.ones((b.q, b.q)))
                                for b in design.blocks], format="csr")
    graph = (abs(A) + same_level).tocsr()
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    sizes = np.bincount(label)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pos = np.empty(label.size, dtype=np.int64)
    pos[order] = np.arange(label.size) - starts[label[order]]
    groups = []
    for k in np.unique(sizes):
        comps = np.flatnonzero(sizes == k)
        idx = order[starts[comps][:, None] + np.arange(k)[None, :]]
        groups.append(_Group(idx, comps))
    return label, pos, groups


def _dense_blocks(M, label: np.ndarray, pos: np.ndarray, group: _Group,
                  batch_of: np.ndarray) -> np.ndarray:
    """The diagonal blocks of the sparse ``Q x Q`` matrix ``M`` on ``group``'s components."""
    coo = M.tocoo()
    m, k = group.idx.shape
    out = np.zeros((m, k, k))
    sel = np.isin(label[coo.row], group.comp)
    r, c, v = coo.row[sel], coo.col[sel], coo.data[sel]
    np.add.at(out, (batch_of[label[r]], pos[r], pos[c]), v)
    return out


def marginal_kenward_roger(res, linear: bool = False) -> KenwardRogerSetup:
    """Kenward-Roger for a marginal model (no random terms, a visit covariance), as
    mmrm computes it: ``W`` the inverse observed Hessian of ``-l`` in mmrm's
    ``theta`` (``component(fit, "theta_vcov")``), ``P_h = X' dSigma^{-1}/dtheta_h X``,
    ``Phi_A = Phi + 2 Phi [sum_hj W_hj (Q_hj - P_h Phi P_j - R_hj / 4)] Phi``
    (``linear``: without ``R``, mmrm's ``"Kenward-Roger-Linear"``).  The df of
    one contrast equal Satterthwaite's (mmrm's ``h_df_1d_kr``)."""
    from ..likelihood.marginal import free_inverse, kenward_roger_pieces

    crit = res.model.deviance_function(reml=True)
    fit = res.state.residual
    mfit = fit.info["marginal"]
    H = mfit.hessian
    free = np.ones(len(H), dtype=bool) if mfit.free is None else mfit.free
    condition = float(np.min(np.abs(np.linalg.eigvalsh(H[np.ix_(free, free)])))) \
        if free.any() else float("inf")
    W = free_inverse(H, free)  # fixed parameters: zero rows and columns
    phi, P, phi_adj = kenward_roger_pieces(crit, fit.u, W, linear=linear)
    return KenwardRogerSetup(phi=phi, phi_adj=phi_adj, P=P, W=W, condition=condition)


def kenward_roger_setup(res, linear: bool = False) -> KenwardRogerSetup:
    """Adjusted covariance and the information pieces for the REML fit ``res``.

    The random effects split into components that share no observation (one
    per group for a single grouping factor, one per top-level group for
    nested factors, one large one for crossed factors); the marginal
    covariance, ``W`` and ``Z'WZ`` are block diagonal over them, so the
    ``Q x Q`` algebra is done component by component (components of one size
    in one batch) and the ``p x p`` pieces are summed.

    ``linear`` (models with a residual structure) drops the second derivatives of
    the covariance from the adjustment (mmrm's ``"Kenward-Roger-Linear"``).

    Raises
    ------
    ArgumentError
        For an ML fit (as lmerTest: ``Kenward-Roger's method is only available
        for REML model fits``).
    MixedAnovaError
        When a component has more than 8,000 random effects (crossed factors
        with many levels): its dense matrices would not fit in memory.
    """
    import scipy.sparse as sp

    if res.method != "REML":
        raise ArgumentError(KR_ML_MESSAGE)
    fit = res.state.residual
    if fit is not None and getattr(fit.structure, "marginal", False):
        return marginal_kenward_roger(res, linear=linear)
    design = res.design
    if fit is not None:
        from .kenward_roger_residual import residual_kenward_roger
        return residual_kenward_roger(res, linear=linear)
    if res.state.structured is not None or res.state.fixed_sigma is not None:
        from .kenward_roger_structured import structured_kenward_roger
        return structured_kenward_roger(res, linear=linear)
    if getattr(design, "has_weights", False):
        raise MixedAnovaError(KR_WEIGHTS_MESSAGE)
    X = design.X
    n, p = X.shape
    sigma2 = float(res.sigma) ** 2
    Z = z_matrix(design)
    A = (Z.T @ Z).tocsr()
    n_re = A.shape[0]
    label, pos, groups = _components(A, design)
    largest = max(g.idx.shape[1] for g in groups)
    if largest > _MAX_Q:
        big = [b.source for b in design.blocks if b.nlev * b.q > 1]
        raise MixedAnovaError(
            f"Kenward-Roger needs the dense inverse of the {largest} x {largest} block of "
            f"random effects that share observations (the terms {', '.join(big)} are linked "
            f"through the data, e.g. crossed factors); this implementation stops at {_MAX_Q}. "
            "Use ddf='satterthwaite' for this model")
    C = np.asarray(Z.T @ X)
    XX = X.T @ X
    layout = design.theta_layout()
    lam = sp.block_diag([sp.kron(sp.eye(b.nlev), T) for b, T in
                         zip(design.blocks, layout.templates(res.state.theta))], format="csr")
    s2, s4, s6 = sigma2, sigma2 ** 2, sigma2 ** 3
    pars = parameter_blocks(design)
    R = len(pars) + 1
    srcs = [_source_rows(par, n_re) for par in pars]
    F = np.zeros((n_re, p))          # Z'WX
    H = np.zeros((n_re, p))          # Z'WWX
    cSc = np.zeros((p, p))
    cSASc = np.zeros((p, p))
    cSASASc = np.zeros((p, p))
    tr_as = 0.0
    sum_asas = 0.0
    K = np.zeros((R, R))
    m_blocks = []
    for g in groups:
        m, k = g.idx.shape
        batch_of = np.full(label.max() + 1, -1, dtype=np.int64)
        batch_of[g.comp] = np.arange(m)
        Ab = _dense_blocks(A, label, pos, g, batch_of)
        Lb = _dense_blocks(lam, label, pos, g, batch_of)
        Lt = Lb.transpose(0, 2, 1)
        Om = Lt @ Ab @ Lb + np.eye(k)
        S = Lb @ np.linalg.solve(Om, Lt)            # Lambda Omega^{-1} Lambda'
        S = 0.5 * (S + S.transpose(0, 2, 1))
        AS = Ab @ S
        Bm = np.eye(k) - AS
        Cb = C[g.idx]
        SC = S @ Cb
        ASC = Ab @ SC
        cSc += np.einsum("bki,bkj->ij", Cb, SC)
        cSASc += np.einsum("bki,bkj->ij", SC, ASC)
        cSASASc += np.einsum("bki,bkj->ij", ASC, S @ ASC)
        F[g.idx] = Bm @ Cb / s2
        H[g.idx] = Bm @ (Bm @ Cb) / s4
        Mb = (Ab - AS @ Ab) / s2
        Mb = 0.5 * (Mb + Mb.transpose(0, 2, 1))
        Nb = Bm @ Ab @ Bm.transpose(0, 2, 1) / s4
        tr_as += float(np.einsum("bii->", AS))
        sum_asas += float(np.sum(AS * AS.transpose(0, 2, 1)))
        # D_r restricted to the batch: local source rows and a mask
        DM = []
        for r, src in enumerate(srcs):
            gs = src[g.idx]
            keep = gs >= 0
            local = np.where(keep, pos[np.where(keep, gs, 0)], 0)
            DM.append(np.take_along_axis(Mb, local[:, :, None], axis=1) * keep[:, :, None])
            diag = Nb[np.arange(m)[:, None], local, np.arange(k)[None, :]]   # (D_r N)_ll
            K[r, R - 1] += float(np.sum(diag * keep))
        for r in range(R - 1):
            for s_ in range(r, R - 1):
                K[r, s_] += float(np.sum(DM[r] * DM[s_].transpose(0, 2, 1)))
        m_blocks.append((g.idx, Mb))
    for r in range(R - 1):
        for s_ in range(r):
            K[r, s_] = K[s_, r]
        K[R - 1, r] = K[r, R - 1]
    xwx = (XX - cSc) / s2
    xwwx = (XX - 2.0 * cSc + cSASc) / s4
    xwwwx = (XX - 3.0 * cSc + 3.0 * cSASc - cSASASc) / s6
    K[R - 1, R - 1] = (n - 2.0 * tr_as + sum_asas) / s4
    phi = np.linalg.inv(xwx)
    phi = 0.5 * (phi + phi.T)

    DF = [_apply_rows(src, F) for src in srcs]          # D_r Z'WX
    MDF = []
    for dfs in DF:                                      # Z'WZ D_s Z'WX
        out = np.zeros_like(dfs)
        for idx, Mb in m_blocks:
            out[idx] = Mb @ dfs[idx]
        MDF.append(out)
    P = np.empty((R, p, p))
    for r, dfr in enumerate(DF):
        P[r] = -(F.T @ dfr)
    P[R - 1] = -xwwx
    P = 0.5 * (P + P.transpose(0, 2, 1))
    Qm = np.empty((R, R, p, p))
    for r in range(R - 1):
        for s_ in range(r, R - 1):
            Qm[r, s_] = DF[r].T @ MDF[s_]
            Qm[s_, r] = Qm[r, s_].T
        Qm[r, R - 1] = DF[r].T @ H
        Qm[R - 1, r] = Qm[r, R - 1].T
    Qm[R - 1, R - 1] = xwwwx
    IE2 = np.empty((R, R))
    PhiP = np.einsum("ij,rjk->rik", phi, P)
    for r in range(R):
        for s_ in range(r, R):
            IE2[r, s_] = IE2[s_, r] = (K[r, s_] - 2.0 * np.sum(phi * Qm[r, s_])
                                       + np.sum(PhiP[r] * PhiP[s_].T))
    condition = float(np.min(np.abs(np.linalg.eigvalsh(IE2))))
    Wg = 2.0 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
    Wg = 0.5 * (Wg + Wg.T)
    UU = np.zeros((p, p))
    for r in range(R):
        for s_ in range(R):
            UU += Wg[r, s_] * (Qm[r, s_] - P[r] @ phi @ P[s_])
    phi_adj = phi + 2.0 * phi @ UU @ phi
    phi_adj = 0.5 * (phi_adj + phi_adj.T)
    return KenwardRogerSetup(phi=phi, phi_adj=phi_adj, P=P, W=Wg, condition=condition)
