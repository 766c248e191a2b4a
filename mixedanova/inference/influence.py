"""Influence diagnostics: lme4's ``hatvalues``, ``cooks.distance`` and ``influence``.

* :func:`hatvalues` -- diagonal of ``H`` with ``fitted = H y`` given the
  covariance parameters.  With ``A = Z Lambda`` and ``Omega = A'A + I`` (rows
  whitened by ``sqrt(w)`` under prior weights), ``H = A Omega^{-1} A' + Xt U Xt'``
  where ``Xt = (I - A Omega^{-1} A') X`` and ``U = vcov(beta) / sigma^2``.
* :func:`cooks_distance` -- lme4's approximation without refits:
  ``(r_i / (1 - h_i))^2 h_i / (sigma^2 p)`` with Pearson residuals ``r``.
* :func:`influence` -- deletion refits (lme4's ``influence.merMod``): each row,
  or each level of ``groups``, deleted in turn and the model refitted from the
  full-data ``theta``; Cook's distance ``d' [(n - p) / (n p) vcov^{-1}] d`` with
  ``d`` the change in the fixed effects and ``n`` the number of deleted units.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design import DesignError, group_labels

__all__ = ["hatvalues", "cooks_distance", "influence", "InfluenceResults"]

_CHUNK = 2048


def _lambda_t_z(res, rows: np.ndarray) -> np.ndarray:
    """``(Q, m)`` dense ``Lambda' Z_rows'`` (whitened)."""
    d = res.design
    sw = np.sqrt(d.prior_weights[rows])
    parts = []
    for b, T in zip(d.blocks, d.theta_layout().templates(res.state.theta)):
        z = b.zraw[rows] * sw[:, None]              # (m, q)
        zt = z @ T                                  # row i of Z Lambda within the level
        M = np.zeros((b.nlev * b.q, len(rows)))
        cols = b.codes[rows][:, None] * b.q + np.arange(b.q)[None, :]
        M[cols.ravel(), np.repeat(np.arange(len(rows)), b.q)] = zt.ravel()
        parts.append(M)
    return np.vstack(parts)


def hatvalues(res) -> pd.Series:
    """Diagonal of the hat matrix (lme4's ``hatvalues(m)``)."""
    d = res.design
    f = res.state.factor
    n = d.nobs
    sw = np.sqrt(d.prior_weights)
    Xw = d.X * sw[:, None]
    # A'X, accumulated in row chunks
    AtX = None
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        At = _lambda_t_z(res, rows)
        part = At @ Xw[rows]
        AtX = part if AtX is None else AtX + part
    OAtX = f.solve_omega(AtX)                       # Omega^{-1} A'X
    U = f.vcov_unscaled()
    h = np.empty(n)
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        At = _lambda_t_z(res, rows)
        LA = f.forward_solve(At)                    # L^{-1} A'
        hz = np.einsum("ij,ij->j", LA, LA)
        Xt = Xw[rows] - At.T @ OAtX
        hx = np.einsum("ij,jk,ik->i", Xt, U, Xt)
        h[rows] = hz + hx
    return pd.Series(h, index=d.row_index, name="hat")


def cooks_distance(res) -> pd.Series:
    """lme4's ``cooks.distance(m)`` (no refits); see the module docstring."""
    h = hatvalues(res).to_numpy()
    r = res.residuals("pearson").to_numpy()
    p = res.design.p
    D = (r / (1.0 - h)) ** 2 * h / (res.sigma ** 2 * p)
    return pd.Series(D, index=res.design.row_index, name="cooks_distance")


@dataclass(frozen=True)
class InfluenceResults:
    """Deletion refits (lme4's ``influence(m)``).

    Attributes
    ----------
    cooks_distance : pandas.Series
        One value per deleted unit.
    fixed_effects_deleted : pandas.DataFrame
        Fixed effects of each refit (``fixed.effects[-unit]``).
    var_cov_comps_deleted : pandas.DataFrame
        ``sigma^2`` then each term's covariance entries (lower triangle, column by
        column: ``v[a]``, ``C[b,a]``, ``v[b]``) of each refit.
    var_cov_comps : pandas.Series
        The same for the full fit.
    converged : pandas.Series
        Whether each refit's convergence check passed.
    """

    cooks_distance: pd.Series
    fixed_effects_deleted: pd.DataFrame
    var_cov_comps_deleted: pd.DataFrame
    var_cov_comps: pd.Series
    converged: pd.Series


def _var_cov_comps(res) -> tuple[list[str], np.ndarray]:
    d = res.design
    names, vals = ["sigma^2"], [res.sigma ** 2]
    for b, S in zip(d.blocks, res._term_covariances()):
        for j in range(b.q):
            for i in range(j, b.q):
                if i == j:
                    names.append(f"v[{b.columns[i]}]")
                else:
                    names.append(f"C[{b.columns[i]},{b.columns[j]}]")
                vals.append(S[i, j])
    return names, np.array(vals)


def influence(res, groups: str | None = None) -> InfluenceResults:
    """Refit with each row (or each level of ``groups``) deleted."""
    d = res.design
    if res.method not in ("REML", "ML"):
        raise DesignError("influence() refits the model and needs a REML or ML fit")
    data = d.data
    if groups is None:
        units = pd.Index(d.row_index)
        labels = pd.Index(d.row_index)
    else:
        if groups not in data.columns:
            raise DesignError(f"groups={groups!r} is not a column of the model's data")
        labels = pd.Index(group_labels(data, (groups,)))
        units = pd.Index(pd.unique(labels))
    names, full_vc = _var_cov_comps(res)
    betas, vcs, conv = [], [], []
    for unit in units:
        keep = labels != unit
        model = res.model.update(d.formula.formula, data=data.loc[keep])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(res.method, start=res.state.theta, warn=False)
        betas.append(fit.state.beta)
        vcs.append(_var_cov_comps(fit)[1])
        conv.append(fit.converged)
    betas = np.array(betas)
    delta = betas - res.state.beta
    n, p = len(units), d.p
    M = (n - p) / (n * p) * np.linalg.inv(res.state.vcov_beta)
    cd = np.einsum("ij,jk,ik->i", delta, M, delta)
    idx = pd.Index(units, name=groups or "row")
    return InfluenceResults(
        cooks_distance=pd.Series(cd, index=idx, name="cooks_distance"),
        fixed_effects_deleted=pd.DataFrame(betas, index=idx, columns=list(d.x_names)),
        var_cov_comps_deleted=pd.DataFrame(np.array(vcs), index=idx, columns=names),
        var_cov_comps=pd.Series(full_vc, index=names, name="var_cov_comps"),
        converged=pd.Series(conv, index=idx, name="converged"))
