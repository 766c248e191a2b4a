"""Kenward-Roger for structured random-effect covariances, held parameters (fixed=)
and prior weights with a residual structure (issue 21).

Kenward-Roger's df depend on the parametrization of the covariance parameters; the
package takes the free parameters of the fit as ``varcomp`` reports them (variances,
correlations, ``sigma^2`` unless held).  The expected values are computed here by
brute force on the dense ``n x n`` ``V`` from the formulas of Kenward & Roger (1997),
with ``V`` written out in this file as a function of those parameters and its first
and second derivatives taken by fourth-order central differences (no package code
but the fitted parameter values).  With everything unstructured and nothing held the
new route must equal the pbkrtest-checked one (``diag(x | g)`` is ``(x || g)``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _kr_dense import kr_dense
from mixedanova.inference.kenward_roger import kenward_roger_setup

DATA = Path(__file__).resolve().parents[1] / "data" / "struct"


@pytest.fixture(scope="module")
def visits() -> pd.DataFrame:
    return pd.read_csv(DATA / "struct_re.csv")


# ------------------------------------------------------------------ brute force


def _derivatives(vfun, psi, rel=1e-3):
    """First and second derivatives of ``vfun`` at ``psi`` (fourth-order stencils)."""
    psi = np.asarray(psi, dtype=float)
    k = len(psi)
    h = rel * np.abs(psi)
    coef = ((2.0, -1.0), (1.0, 8.0), (-1.0, -8.0), (-2.0, 1.0))

    def d1(f, a, at):
        e = np.zeros(k)
        e[a] = h[a]
        return sum(c * f(at + m * e) for m, c in coef) / (12 * h[a])

    first = [d1(vfun, a, psi) for a in range(k)]
    second = [[None] * k for _ in range(k)]
    for a in range(k):
        for b in range(a, k):
            e = np.zeros(k)
            e[b] = h[b]
            val = sum(c * d1(vfun, a, psi + m * e) for m, c in coef) / (12 * h[b])
            second[a][b] = second[b][a] = val
    return first, second


def _indicators(codes) -> np.ndarray:
    u = np.unique(codes)
    return (np.asarray(codes)[:, None] == u[None, :]).astype(float)


def _check(res, X, vfun, psi, rtol=1e-6):
    V = vfun(np.asarray(psi, dtype=float))
    dV, d2V = _derivatives(vfun, psi)
    phi_a, ddf = kr_dense(X, V, dV, d2V)
    kr = res._inference.kenward_roger
    np.testing.assert_allclose(kr.phi_adj, phi_a, rtol=rtol, atol=1e-9 * np.abs(phi_a).max())
    tab = res.fixed(ddf="kenward-roger")
    p = X.shape[1]
    np.testing.assert_allclose(tab["df"], [ddf(np.eye(p)[i]) for i in range(p)], rtol=rtol)
    np.testing.assert_allclose(tab["std_err"], np.sqrt(np.diag(phi_a)), rtol=rtol)
    L = np.eye(p)[1:]
    assert abs(kr.ddf(L) / ddf(L) - 1.0) < rtol
    return kr


def _visit_design(d: pd.DataFrame):
    """X of ``y ~ time + arm``, a function ``S -> Z_s (I kron S) Z_s'`` of the subject
    x visit covariance ``S``, ``Z_r Z_r'`` of the raters, and the number of visits."""
    X = np.column_stack([np.ones(len(d)), d["time"], (d["arm"] == "ARM_B").astype(float)])
    subj = d["subject"].to_numpy()
    same = subj[:, None] == subj[None, :]
    vis = pd.factorize(d["visit"], sort=True)[0]
    rater = d["rater"].to_numpy()

    def zgz(S):
        return np.where(same, S[vis[:, None], vis[None, :]], 0.0)

    return X, zgz, (rater[:, None] == rater[None, :]).astype(float), int(vis.max()) + 1


def _ar1(v, rho, q):
    lag = np.abs(np.subtract.outer(np.arange(q), np.arange(q)))
    return v * rho ** lag


def _vc(res, group, var1=None, var2=None, col="vcov"):
    vc = res.varcomp
    sel = vc["group"] == group
    if var1 is not None:
        sel &= vc["var1"] == var1
    sel &= vc["var2"].isna() if var2 is None else vc["var2"] == var2
    return float(vc.loc[sel, col].iloc[0])


# ------------------------------------------------------------------ structured terms
def test_cs_term_on_sleepstudy_matches_dense_kenward_roger(sleepstudy):
    """Reaction ~ Days + cs(Days | Subject): parameters (var0, var1, corr, sigma^2);
    Sigma = [[v0, r sqrt(v0 v1)], [r sqrt(v0 v1), v1]] is not linear in them, so
    Kenward & Roger's second-derivative term enters."""
    res = ma.lmm("Reaction ~ Days + cs(Days | Subject)", sleepstudy)
    d = sleepstudy
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    S = _indicators(d["Subject"])
    Z = np.concatenate([S, S * d["Days"].to_numpy()[:, None]], axis=1)  # (int, Days) blocks
    ng = S.shape[1]

    def vfun(psi):
        v0, v1, r, s2 = psi
        c = r * np.sqrt(v0 * v1)
        G = np.block([[v0 * np.eye(ng), c * np.eye(ng)], [c * np.eye(ng), v1 * np.eye(ng)]])
        return Z @ G @ Z.T + s2 * np.eye(len(d))

    psi = [_vc(res, "Subject", "(Intercept)"), _vc(res, "Subject", "Days"),
           _vc(res, "Subject", "(Intercept)", "Days", "sdcor"), res.sigma ** 2]
    _check(res, X, vfun, psi)


def test_diag_term_with_crossed_rater_matches_dense_kenward_roger(visits):
    """y ~ time + arm + diag(0 + visit | subject) + (1 | rater): parameters (four visit
    variances, the rater variance, sigma^2), all linear."""
    res = ma.lmm("y ~ time + arm + diag(0 + visit | subject) + (1 | rater)", visits)
    X, zgz, RR, nv = _visit_design(visits)

    def vfun(psi):
        return zgz(np.diag(psi[:nv])) + psi[nv] * RR + psi[nv + 1] * np.eye(len(visits))

    psi = [_vc(res, "subject", f"visit[V{k}]") for k in range(1, nv + 1)]
    psi += [_vc(res, "rater", "(Intercept)"), res.sigma ** 2]
    _check(res, X, vfun, psi)


def test_ar1_term_with_crossed_rater_matches_dense_kenward_roger(visits):
    """y ~ time + arm + ar1(0 + visit | subject) + (1 | rater): parameters (variance,
    corr, rater variance, sigma^2); Sigma = v rho^|i-j|."""
    res = ma.lmm("y ~ time + arm + ar1(0 + visit | subject) + (1 | rater)", visits)
    X, zgz, RR, nv = _visit_design(visits)

    def vfun(psi):
        return zgz(_ar1(psi[0], psi[1], nv)) + psi[2] * RR + psi[3] * np.eye(len(visits))

    psi = [_vc(res, "subject", "visit[V1]"), _vc(res, "subject", "visit[V1]", "visit[V2]",
                                                  "sdcor"),
           _vc(res, "rater", "(Intercept)"), res.sigma ** 2]
    _check(res, X, vfun, psi)


def test_held_correlation_and_weights_match_dense_kenward_roger(visits):
    """ar1 with its correlation held at 0.5 (a constant: no derivative) and prior
    weights (residual variance sigma^2 / w): parameters (variance, rater variance,
    sigma^2)."""
    w = 0.5 + np.random.default_rng(7).random(len(visits))
    res = ma.lmm("y ~ time + arm + ar1(0 + visit | subject) + (1 | rater)",
                 visits.assign(w=w), weights="w", fixed={"subject: corr": 0.5})
    X, zgz, RR, nv = _visit_design(visits)

    def vfun(psi):
        return zgz(_ar1(psi[0], 0.5, nv)) + psi[1] * RR + psi[2] * np.diag(1.0 / w)

    psi = [_vc(res, "subject", "visit[V1]"), _vc(res, "rater", "(Intercept)"), res.sigma ** 2]
    kr = _check(res, X, vfun, psi)
    assert kr.W.shape == (3, 3)  # the held correlation is not a parameter


def test_held_sigma_drops_sigma2_from_the_parameters(sleepstudy):
    """Reaction ~ Days + (Days | Subject) with sigma held at 25: pbkrtest's parameters
    (the entries of the subject covariance) without sigma^2."""
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", sleepstudy, fixed={"sigma": 25.0})
    d = sleepstudy
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    S = _indicators(d["Subject"])
    Z = np.concatenate([S, S * d["Days"].to_numpy()[:, None]], axis=1)
    ng = S.shape[1]

    def vfun(psi):
        v0, c, v1 = psi
        G = np.block([[v0 * np.eye(ng), c * np.eye(ng)], [c * np.eye(ng), v1 * np.eye(ng)]])
        return Z @ G @ Z.T + 625.0 * np.eye(len(d))

    psi = [_vc(res, "Subject", "(Intercept)"), _vc(res, "Subject", "(Intercept)", "Days"),
           _vc(res, "Subject", "Days")]
    kr = _check(res, X, vfun, psi)
    assert kr.W.shape == (3, 3)


def _acf_from_pacf(a):
    """Autocorrelations at lags 1..m from partial autocorrelations (Durbin-Levinson)."""
    r, phi = [], []
    for k, ak in enumerate(a):
        if k == 0:
            r.append(ak)
            phi = [ak]
            continue
        num = sum(phi[j] * r[k - 1 - j] for j in range(k))
        den = 1.0 - sum(phi[j] * r[j] for j in range(k))
        r.append(num + ak * den)
        phi = [phi[j] - ak * phi[k - 1 - j] for j in range(k)] + [ak]
    return np.array(r)


def _pacf_from_acf(r):
    """Partial autocorrelations from autocorrelations at lags 1..m (Durbin-Levinson)."""
    a, phi, v = [r[0]], [r[0]], 1.0 - r[0] ** 2
    for k in range(1, len(r)):
        ak = (r[k] - sum(phi[j] * r[k - 1 - j] for j in range(k))) / v
        phi = [phi[j] - ak * phi[k - 1 - j] for j in range(k)] + [ak]
        a.append(ak)
        v *= 1.0 - ak ** 2
    return np.array(a)


def test_toep_term_with_held_sigma_and_lag1_matches_dense_kenward_roger(visits):
    """toep(0 + visit | subject) + (1 | rater), sigma held at 1.2 and the lag-1
    correlation at 0.5 (glmmTMB map =): parameters (four visit variances, the partial
    autocorrelations at lags 2 and 3, the rater variance); no sigma^2."""
    res = ma.lmm("y ~ time + arm + toep(0 + visit | subject) + (1 | rater)", visits,
                 fixed={"sigma": 1.2, "subject: corr(lag 1)": 0.5})
    X, zgz, RR, nv = _visit_design(visits)
    lag = np.abs(np.subtract.outer(np.arange(nv), np.arange(nv)))

    def vfun(psi):
        sd = np.sqrt(psi[:nv])
        r = np.r_[1.0, _acf_from_pacf(np.r_[0.5, psi[nv:nv + 2]])]
        return zgz(sd[:, None] * r[lag] * sd[None, :]) + psi[nv + 2] * RR + 1.44 * np.eye(len(visits))

    acf = [_vc(res, "subject", "visit[V1]", f"visit[V{k}]", "sdcor") for k in (2, 3, 4)]
    assert acf[0] == pytest.approx(0.5, rel=1e-12)
    psi = [_vc(res, "subject", f"visit[V{k}]") for k in range(1, nv + 1)]
    psi += list(_pacf_from_acf(acf)[1:]) + [_vc(res, "rater", "(Intercept)")]
    kr = _check(res, X, vfun, psi)
    assert kr.W.shape == (7, 7)


def test_us_term_with_held_correlation_matches_dense_kenward_roger(sleepstudy):
    """(Days | Subject) with its correlation held at 0.2: parameters (var0, var1,
    sigma^2); Sigma = [[v0, 0.2 sqrt(v0 v1)], ...] is not linear in them."""
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", sleepstudy,
                 fixed={"Subject: corr((Intercept), Days)": 0.2})
    d = sleepstudy
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    S = _indicators(d["Subject"])
    Z = np.concatenate([S, S * d["Days"].to_numpy()[:, None]], axis=1)
    ng = S.shape[1]

    def vfun(psi):
        v0, v1, s2 = psi
        c = 0.2 * np.sqrt(v0 * v1)
        G = np.block([[v0 * np.eye(ng), c * np.eye(ng)], [c * np.eye(ng), v1 * np.eye(ng)]])
        return Z @ G @ Z.T + s2 * np.eye(len(d))

    psi = [_vc(res, "Subject", "(Intercept)"), _vc(res, "Subject", "Days"), res.sigma ** 2]
    kr = _check(res, X, vfun, psi)
    assert kr.W.shape == (3, 3)


def test_meta_regression_with_known_variances_matches_dense_kenward_roger():
    """metafor's rma(yi, vi, mods = ~ ablat, method = "REML") as a mixed model: weights
    1 / vi and sigma held at 1; the only parameter is tau^2,
    V = tau^2 I + diag(vi)."""
    d = pd.read_csv(DATA / "bcg.csv")
    res = ma.lmm("yi ~ ablat + (1|trial)", d.assign(w=1.0 / d["vi"]), weights="w",
                 fixed={"sigma": 1.0})
    X = np.column_stack([np.ones(len(d)), d["ablat"]])
    vi = d["vi"].to_numpy()

    def vfun(psi):
        return psi[0] * np.eye(len(d)) + np.diag(vi)

    kr = _check(res, X, vfun, [_vc(res, "trial", "(Intercept)")])
    assert kr.W.shape == (1, 1)


# ------------------------------------------------------------------ weights + residual
def test_weights_with_ar1_residual_and_random_intercept_match_dense_kenward_roger():
    """follicles ~ sin2pit + cos2pit + (1|Mare), corAR1 within mare, prior weights:
    V = s_b^2 ZZ' + sigma^2 W^{-1/2} C(phi) W^{-1/2}, parameters (s_b^2, sigma^2, phi)."""
    d = ma.load_dataset("ovary")
    w = 0.5 + np.random.default_rng(1).random(len(d))
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", d.assign(w=w), weights="w",
                 residual=ma.AR1(group="Mare", order="time_index"))
    g = d["Mare"].astype(str).to_numpy()
    Z = _indicators(g)
    X = np.column_stack([np.ones(len(d)), d["sin2pit"], d["cos2pit"]])
    same = g[:, None] == g[None, :]
    lag = np.abs(np.subtract.outer(d["time_index"].to_numpy(float),
                                   d["time_index"].to_numpy(float)))
    iw = 1.0 / np.sqrt(w)

    def vfun(psi):
        sb2, s2, ph = psi
        C = np.where(same, ph ** lag, 0.0)
        return sb2 * Z @ Z.T + s2 * iw[:, None] * C * iw[None, :]

    psi = [_vc(res, "Mare", "(Intercept)"), res.sigma ** 2,
           float(res.state.residual.natural[0])]
    _check(res, X, vfun, psi)


def test_ar1_term_alone_links_the_visits_of_a_subject(visits):
    """ar1(0 + visit | subject) with its correlation held (so a random term, not the
    marginal model), no crossed factor: rows of different visits share no column of
    Z but are correlated through G, so each subject is one block of V."""
    res = ma.lmm("y ~ time + arm + ar1(0 + visit | subject)", visits,
                 fixed={"subject: corr": 0.6})
    X, zgz, _, nv = _visit_design(visits)

    def vfun(psi):
        return zgz(_ar1(psi[0], 0.6, nv)) + psi[1] * np.eye(len(visits))

    _check(res, X, vfun, [_vc(res, "subject", "visit[V1]"), res.sigma ** 2])


def test_unstructured_visit_term_with_varident_residual_matches_dense_kenward_roger(visits):
    """(0 + visit | subject) with nlme's varIdent(~ 1 | arm) residual: parameters the
    ten entries of the visit covariance (pbkrtest's), sigma^2 and the SD ratio of
    ARM_B; the visits of a subject are one block of V although they share no column
    of Z."""
    res = ma.lmm("y ~ time + arm + (0 + visit | subject)", visits,
                 residual=ma.VarIdent(by="arm"))
    X, zgz, _, nv = _visit_design(visits)
    armb = (visits["arm"] == "ARM_B").to_numpy()
    iu = np.triu_indices(nv)

    def vfun(psi):
        S = np.zeros((nv, nv))
        S[iu] = psi[:len(iu[0])]
        S = S + np.triu(S, 1).T
        s2, ratio = psi[len(iu[0]):]
        return zgz(S) + s2 * np.diag(np.where(armb, ratio ** 2, 1.0))

    vc = res.varcomp
    S = np.empty((nv, nv))
    for a in range(nv):
        for b in range(a, nv):
            S[a, b] = _vc(res, "subject", f"visit[V{a + 1}]",
                          None if a == b else f"visit[V{b + 1}]")
    assert vc["var1"].eq("ARM_A").any()  # the reference level: ratio 1
    psi = list(S[iu]) + [res.sigma ** 2, float(res.state.residual.natural[0])]
    _check(res, X, vfun, psi)


# ------------------------------------------------------------------ same as pbkrtest's
def test_diag_term_equals_the_pbkrtest_route_on_split_terms(visits):
    """diag(0 + visit | subject) is lme4's (0 + v1 + v2 + v3 + v4 || subject) on visit
    indicators, with the same parameters (the four variances, rater, sigma^2): the
    structured route equals the pbkrtest one (pbkrtest::vcovAdj and lmerTest's
    Kenward-Roger df, checked against R in test_kenward_roger.py)."""
    d = visits.copy()
    for k in range(1, 5):
        d[f"v{k}"] = (d["visit"] == f"V{k}").astype(float)
    a = ma.lmm("y ~ time + arm + diag(0 + visit | subject) + (1 | rater)", d)
    b = ma.lmm("y ~ time + arm + (0 + v1 + v2 + v3 + v4 || subject) + (1 | rater)", d)
    assert a.state.structured is not None and b.state.structured is None
    assert a.llf == pytest.approx(b.llf, rel=1e-10)
    ka, kb = kenward_roger_setup(a), kenward_roger_setup(b)
    np.testing.assert_allclose(ka.phi_adj, kb.phi_adj, rtol=1e-8)
    ta, tb = a.fixed(ddf="kenward-roger"), b.fixed(ddf="kenward-roger")
    np.testing.assert_allclose(ta["df"], tb["df"], rtol=1e-8)
    np.testing.assert_allclose(ta["std_err"], tb["std_err"], rtol=1e-8)
    # anova(m, ddf = "Kenward-Roger"): the F tests too
    np.testing.assert_allclose(a.anova(ddf="kenward-roger")["den_df"],
                               b.anova(ddf="kenward-roger")["den_df"], rtol=1e-8)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)",
                                     "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"])
def test_dense_route_on_an_unstructured_fit_equals_pbkrtest_route(formula, sleepstudy):
    """The structured route's dense algebra with pbkrtest's parameters (every G entry,
    sigma^2) on an lmer fit equals the pbkrtest route (pbkrtest::vcovAdj, checked
    against R in test_kenward_roger.py)."""
    from mixedanova.inference.kenward_roger_structured import structured_kenward_roger
    res = ma.lmm(formula, sleepstudy)
    ref, new = kenward_roger_setup(res), structured_kenward_roger(res)
    np.testing.assert_allclose(new.phi_adj, ref.phi_adj, rtol=1e-8)
    np.testing.assert_allclose(new.W, ref.W, rtol=1e-8)
    for L in (np.eye(2)[:1], np.eye(2)[1:], np.eye(2)):
        assert new.ddf(L) == pytest.approx(ref.ddf(L), rel=1e-8)
