"""Kenward-Roger and Satterthwaite for models with random terms AND a residual structure
(issue 21).

Two checks, neither using the package's own Kenward-Roger code for the expected value:

* a compound-symmetric residual within plots plus a random intercept of blocks is
  lmer's nested random intercepts, so the df, adjusted SEs, ``vcovAdj`` and
  the F tests must equal lmerTest / pbkrtest on that lmer model
  (tests/reference/kr_residual_cs.json, made by tests/reference/r/kr_residual_cs.R);
* for an AR(1) residual (not linear in its parameters, so the second-derivative term
  ``R_ij`` of Kenward & Roger 1997 matters) the adjusted covariance and df are computed
  here by brute force on the dense ``n x n`` ``V`` from the formulas of Kenward & Roger
  (1997), with analytic derivatives of ``V`` written out in this file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mixedanova as ma
from _kr_dense import kr_dense
from mixedanova.inference.kenward_roger import kenward_roger_setup

REF = json.loads((Path(__file__).parents[1] / "reference" / "kr_residual_cs.json").read_text())


@pytest.fixture(scope="module")
def cs_fit():
    d = ma.load_dataset("oats_unbalanced")
    d["plot"] = d["Block"].astype(str) + ":" + d["Variety"].astype(str)
    res = ma.lmm("yield ~ Variety * nitro_f + (1|Block)", d, residual=ma.CompSymm(group="plot"))
    return REF["nested"], res


def test_compound_symmetry_residual_matches_lmertest_kenward_roger(cs_fit):
    ref, res = cs_fit
    tab = res.fixed(ddf="kenward-roger")
    # lmerTest: coef(summary(lmer(yield ~ Variety * nitro_f + (1|Block) +
    #   (1|Block:Variety)), ddf = "Kenward-Roger"))[, "df"]
    np.testing.assert_allclose(tab["df"], ref["df_kr"], rtol=1e-5)
    # [, "Std. Error"] = sqrt(diag(pbkrtest::vcovAdj(m)))
    np.testing.assert_allclose(tab["std_err"], ref["se_kr"], rtol=1e-5)
    # pbkrtest::vcovAdj(m)
    va = np.array(ref["vcov_adj"])
    np.testing.assert_allclose(res._inference.kenward_roger.phi_adj, va,
                               rtol=1e-5, atol=1e-6 * np.abs(va).max())


def test_compound_symmetry_residual_matches_lmertest_anova(cs_fit):
    ref, res = cs_fit
    tab = res.anova(ddf="kenward-roger")
    # lmerTest: anova(m, ddf = "Kenward-Roger")[, c("DenDF", "F value")]
    np.testing.assert_allclose(tab["den_df"], ref["anova_kr"]["DenDF"], rtol=1e-5)
    np.testing.assert_allclose(tab["F"], ref["anova_kr"]["F"], rtol=1e-5)


def test_compound_symmetry_residual_matches_lmertest_satterthwaite(cs_fit):
    ref, res = cs_fit
    # lmerTest: coef(summary(m, ddf = "Satterthwaite"))[, "df"] (numerical Hessians on
    # both sides: 1e-4)
    np.testing.assert_allclose(res.fixed(ddf="satterthwaite")["df"], ref["df_satterthwaite"],
                               rtol=1e-4)
    # anova(m, ddf = "Satterthwaite")$DenDF
    np.testing.assert_allclose(res.anova(ddf="satterthwaite")["den_df"],
                               ref["anova_satterthwaite"]["DenDF"], rtol=1e-4)


# ------------------------------------------------------------------ brute force


def _ar1_pieces(groups, times, phi):
    same = groups[:, None] == groups[None, :]
    lag = np.abs(times[:, None] - times[None, :])
    C = np.where(same, phi ** lag, 0.0)
    dC = np.where(same & (lag > 0), lag * phi ** np.maximum(lag - 1, 0), 0.0)
    d2C = np.where(same & (lag > 1), lag * (lag - 1) * phi ** np.maximum(lag - 2, 0), 0.0)
    return C, dC, d2C


def test_ar1_residual_with_random_intercept_matches_dense_kenward_roger():
    """Brute force (Kenward & Roger 1997) for follicles ~ sin2pit + cos2pit + (1|Mare)
    with nlme's corAR1(form = ~ time_index | Mare), parameters (sigma_b^2, sigma^2, phi);
    the fitted values are nlme::lme's, which the reference tests of the fit check."""
    d = ma.load_dataset("ovary")
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", d,
                 residual=ma.AR1(group="Mare", order="time_index"))
    vc = res.varcomp
    sb2 = float(vc.loc[vc["group"] == "Mare", "vcov"].iloc[0])
    s2 = float(res.sigma) ** 2
    phi = float(res.state.residual.natural[0])
    g = d["Mare"].astype(str).to_numpy()
    Z = (g[:, None] == np.unique(g)[None, :]).astype(float)
    X = np.column_stack([np.ones(len(d)), d["sin2pit"], d["cos2pit"]])
    C, dC, d2C = _ar1_pieces(g, d["time_index"].to_numpy(float), phi)
    ZZ = Z @ Z.T
    V = sb2 * ZZ + s2 * C
    zero = np.zeros_like(V)
    dV = [ZZ, C, s2 * dC]
    d2V = [[zero, zero, zero], [zero, zero, dC], [zero, dC, s2 * d2C]]
    phi_a, ddf = kr_dense(X, V, dV, d2V)
    kr = res._inference.kenward_roger
    # Kenward & Roger (1997) Phi_A on the dense V
    np.testing.assert_allclose(kr.phi_adj, phi_a, rtol=1e-6, atol=1e-9 * np.abs(phi_a).max())
    tab = res.fixed(ddf="kenward-roger")
    expected = [ddf(np.eye(3)[i]) for i in range(3)]
    np.testing.assert_allclose(tab["df"], expected, rtol=1e-6)
    # the two-df test of (sin2pit, cos2pit)
    L = np.eye(3)[1:]
    assert abs(kr.ddf(L) / ddf(L) - 1.0) < 1e-6
    # the second-derivative term matters here: without it Phi_A differs
    phi_lin, _ = kr_dense(X, V, dV, [[zero] * 3] * 3)
    assert np.max(np.abs(phi_lin - phi_a) / np.abs(phi_a)) > 1e-4
    # and linear=True drops it (mmrm's "Kenward-Roger-Linear")
    np.testing.assert_allclose(kenward_roger_setup(res, linear=True).phi_adj, phi_lin,
                               rtol=1e-6, atol=1e-9 * np.abs(phi_lin).max())


def test_crossed_ar1_residual_matches_dense_kenward_roger():
    """Brute force as above with crossed random terms (one block of all rows):
    rt ~ condition + (1|subject) + (1|item), AR(1) over items within subject."""
    d = ma.load_dataset("subject_item")
    d["pos"] = d["item"].str[3:].astype(int)
    res = ma.lmm("rt ~ condition + (1|subject) + (1|item)", d,
                 residual=ma.AR1(group="subject", order="pos"))
    vc = res.varcomp
    ss2 = float(vc.loc[vc["group"] == "subject", "vcov"].iloc[0])
    si2 = float(vc.loc[vc["group"] == "item", "vcov"].iloc[0])
    s2 = float(res.sigma) ** 2
    phi = float(res.state.residual.natural[0])
    su, it = d["subject"].to_numpy(), d["item"].to_numpy()
    Zs = (su[:, None] == np.unique(su)[None, :]).astype(float)
    Zi = (it[:, None] == np.unique(it)[None, :]).astype(float)
    X = np.column_stack([np.ones(len(d)), (d["condition"] == "incongruent").astype(float)])
    C, dC, d2C = _ar1_pieces(su, d["pos"].to_numpy(float), phi)
    ZS, ZI = Zs @ Zs.T, Zi @ Zi.T
    V = ss2 * ZS + si2 * ZI + s2 * C
    zero = np.zeros_like(V)
    dV = [ZS, ZI, C, s2 * dC]
    d2V = [[zero] * 4, [zero] * 4, [zero, zero, zero, dC], [zero, zero, dC, s2 * d2C]]
    phi_a, ddf = kr_dense(X, V, dV, d2V)
    kr = res._inference.kenward_roger
    # Kenward & Roger (1997) Phi_A and df on the dense V
    np.testing.assert_allclose(kr.phi_adj, phi_a, rtol=1e-6, atol=1e-9 * np.abs(phi_a).max())
    np.testing.assert_allclose(res.fixed(ddf="kenward-roger")["df"],
                               [ddf(np.eye(2)[i]) for i in range(2)], rtol=1e-6)


def test_ar1_residual_satterthwaite_matches_dense_formula():
    """lmerTest's Satterthwaite formula, df = 2 (l' Phi l)^2 / (g' A g), on the dense V of
    follicles ~ sin2pit + cos2pit + (1|Mare) with corAR1: A = 2 H^-1 with H the Hessian
    of the dense REML criterion in (sigma_b^2, sigma^2, phi) (central differences here),
    g_i = l' Phi X'W V_i W X Phi l (analytic).  The df do not depend on the
    parametrization of the covariance (at the optimum), so any one serves."""
    d = ma.load_dataset("ovary")
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", d,
                 residual=ma.AR1(group="Mare", order="time_index"))
    vc = res.varcomp
    x0 = np.array([float(vc.loc[vc["group"] == "Mare", "vcov"].iloc[0]),
                   float(res.sigma) ** 2, float(res.state.residual.natural[0])])
    g = d["Mare"].astype(str).to_numpy()
    Z = (g[:, None] == np.unique(g)[None, :]).astype(float)
    ZZ = Z @ Z.T
    X = np.column_stack([np.ones(len(d)), d["sin2pit"], d["cos2pit"]])
    y = d["follicles"].to_numpy(float)
    t = d["time_index"].to_numpy(float)

    def V_of(x):
        C, dC, _ = _ar1_pieces(g, t, x[2])
        return x[0] * ZZ + x[1] * C, [ZZ, C, x[1] * dC]

    def reml(x):
        V, _ = V_of(x)
        Vi = np.linalg.inv(V)
        XVX = X.T @ Vi @ X
        beta = np.linalg.solve(XVX, X.T @ Vi @ y)
        r = y - X @ beta
        return np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + r @ Vi @ r

    h = 1e-4 * np.abs(x0)
    H = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            ei, ej = np.eye(3)[i] * h[i], np.eye(3)[j] * h[j]
            H[i, j] = H[j, i] = (reml(x0 + ei + ej) - reml(x0 + ei - ej) - reml(x0 - ei + ej)
                                 + reml(x0 - ei - ej)) / (4 * h[i] * h[j])
    A = 2.0 * np.linalg.inv(H)
    V, dV = V_of(x0)
    Vi = np.linalg.inv(V)
    phi = np.linalg.inv(X.T @ Vi @ X)
    expected = []
    for k in range(3):
        l = np.eye(3)[k]
        grad = np.array([l @ phi @ X.T @ Vi @ Vr @ Vi @ X @ phi @ l for Vr in dV])
        expected.append(2 * (l @ phi @ l) ** 2 / (grad @ A @ grad))
    # lmerTest: coef(summary(m, ddf = "Satterthwaite"))[, "df"] (numerical Hessians)
    np.testing.assert_allclose(res.fixed(ddf="satterthwaite")["df"], expected, rtol=1e-4)


def test_varident_residual_matches_dense_kenward_roger():
    """Brute force as above for Reaction ~ Days + (1|Subject) with nlme's
    varIdent(form = ~ 1 | half): V = sb^2 ZZ' + sigma^2 diag(delta_i^2), delta = 1 in the
    reference stratum and the SD ratio in the other; parameters (sb^2, sigma^2, delta)."""
    d = ma.load_dataset("sleepstudy")
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    res = ma.lmm("Reaction ~ Days + (1|Subject)", d, residual=ma.VarIdent(by="half"))
    vc = res.varcomp
    sb2 = float(vc.loc[vc["group"] == "Subject", "vcov"].iloc[0])
    s2 = float(res.sigma) ** 2
    delta = float(res.residual_params["late"])
    late = (d["half"] == "late").to_numpy(float)
    g = d["Subject"].to_numpy()
    Z = (g[:, None] == np.unique(g)[None, :]).astype(float)
    ZZ = Z @ Z.T
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    dd = 1.0 + (delta ** 2 - 1.0) * late          # delta_i^2
    V = sb2 * ZZ + s2 * np.diag(dd)
    zero = np.zeros_like(V)
    dV = [ZZ, np.diag(dd), s2 * np.diag(2 * delta * late)]
    d2V = [[zero] * 3, [zero, zero, np.diag(2 * delta * late)],
           [zero, np.diag(2 * delta * late), s2 * np.diag(2 * late)]]
    phi_a, ddf = kr_dense(X, V, dV, d2V)
    # Kenward & Roger (1997) Phi_A and df on the dense V
    np.testing.assert_allclose(res._inference.kenward_roger.phi_adj, phi_a, rtol=1e-6,
                               atol=1e-9 * np.abs(phi_a).max())
    np.testing.assert_allclose(res.fixed(ddf="kenward-roger")["df"],
                               [ddf(np.eye(2)[i]) for i in range(2)], rtol=1e-6)
