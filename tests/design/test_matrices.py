"""The model matrices on show: labelled X, sparse Z, G, R and V at the estimates (issue 13).

Each matrix is checked against one built independently from the data (dummy
coding with pandas) or against a property of the fit: GLS with V reproduces the
fixed effects (lme4: fixef(m)), Z b reproduces fitted - X beta
(lme4: getME(m, "Z") %*% getME(m, "b")).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import mixedanova as ma


@pytest.fixture(scope="module")
def pots():
    return ma.lmm("height ~ moisture + (1|pot)", ma.load_dataset("plants_pots"))


def test_plants_pots_z_is_the_pot_indicator(pots):
    df = ma.load_dataset("plants_pots")
    d = pots.model.design
    expected = pd.get_dummies(df["pot"], dtype=float)
    expected.columns = [f"pot[{c}]" for c in expected.columns]
    z = d.Z
    assert all(isinstance(t, pd.SparseDtype) for t in z.dtypes)  # kept sparse
    assert list(z.columns) == list(expected.columns)
    assert np.array_equal(z.sparse.to_dense().to_numpy(), expected.to_numpy())
    assert np.array_equal(d.Z_dense().to_numpy(), expected.to_numpy())
    assert sparse.issparse(d.Z_sparse())
    zz = d.Z_dense().to_numpy() @ d.Z_dense().to_numpy().T
    # ZZ': 1 where two seedlings share a pot
    same_pot = (df["pot"].to_numpy()[:, None] == df["pot"].to_numpy()[None, :]).astype(float)
    assert np.array_equal(zz, same_pot)
    x = d.X_frame()
    assert list(x.columns) == ["Intercept", "moisture[T.wet]"]
    assert np.array_equal(x["moisture[T.wet]"].to_numpy(), (df["moisture"] == "wet").to_numpy(float))


def test_plants_pots_v_is_s2p_zz_plus_s2e_i(pots):
    df = ma.load_dataset("plants_pots")
    vc = pots.varcomp.set_index("group")["vcov"]
    same_pot = (df["pot"].to_numpy()[:, None] == df["pot"].to_numpy()[None, :]).astype(float)
    v_expected = vc["pot"] * same_pot + vc["Residual"] * np.eye(len(df))
    assert np.allclose(pots.V().to_numpy(), v_expected, rtol=1e-12, atol=0)
    assert np.allclose(pots.G().to_numpy(), vc["pot"] * np.eye(4), rtol=1e-12)
    assert np.allclose(pots.R().to_numpy(), vc["Residual"] * np.eye(len(df)), rtol=1e-12)
    # GLS with V gives the fitted fixed effects (lme4: fixef(m))
    X, y = pots.model.design.X, pots.model.design.y
    vi = np.linalg.inv(v_expected)
    beta = np.linalg.solve(X.T @ vi @ X, X.T @ vi @ y)
    assert np.allclose(beta, pots.fe_params.to_numpy(), rtol=1e-8)


def test_sleepstudy_z_times_b_gives_the_random_part():
    res = ma.lmm("Reaction ~ Days + (Days|Subject)", ma.load_dataset("sleepstudy"))
    d = res.model.design
    names = d.z_names
    assert names[:2] == ["Subject[308]", "Subject[308]:Days"]
    b = np.concatenate([res.random_effects["Subject"].loc[lev].to_numpy()
                        for lev in d.blocks[0].levels])
    zb = d.Z_sparse() @ b
    assert np.allclose(zb, res.fittedvalues.to_numpy() - d.X @ res.fe_params.to_numpy())
    # G: one 2 x 2 block per subject equal to VarCorr's covariance
    g = res.G().to_numpy()
    vc = res.varcomp
    s00 = vc.loc[(vc.var1 == "(Intercept)") & vc.var2.isna(), "vcov"].item()
    s11 = vc.loc[(vc.var1 == "Days") & vc.var2.isna(), "vcov"].item()
    s01 = vc.loc[vc.var2.notna(), "vcov"].item()
    assert np.allclose(g[:2, :2], [[s00, s01], [s01, s11]])
    assert np.count_nonzero(g) == 18 * 4


def test_describe_lists_terms_and_levels(pots):
    info = pots.model.design.describe()
    assert info["kind"].tolist() == ["fixed", "fixed", "random"]
    assert info.iloc[2]["term"] == "(1|pot)"
    assert info.iloc[2]["n_levels"] == 4
    assert info.iloc[2]["levels"] == "P1, P2, P3, P4"


def test_dense_matrices_refused_when_big():
    res = ma.lmm("Reaction ~ Days + (Days|Subject)", ma.load_dataset("sleepstudy"))
    with pytest.raises(ma.DesignError, match="V would be a dense 180 x 180.*max_cells=1000"):
        res.V(max_cells=1000)
    with pytest.raises(ma.DesignError, match="Z would be a dense"):
        res.model.design.Z_dense(max_cells=10)


def test_prior_weights_divide_the_residual_variance():
    # lme4: Var(y) = Z G Z' + sigma^2 diag(1 / w) with weights = n
    clinic = ma.load_dataset("clinic_means")
    res = ma.lmm("y ~ arm + age_c + (1|clinic)", clinic, weights="n")
    vc = res.varcomp.set_index("group")["vcov"]
    w = clinic["n"].to_numpy(float)
    same = (clinic["clinic"].to_numpy()[:, None] == clinic["clinic"].to_numpy()[None, :])
    v = vc["clinic"] * same + np.diag(vc["Residual"] / w)
    assert np.allclose(res.V().to_numpy(), v, rtol=1e-12)
    assert np.allclose(np.diag(res.R().to_numpy()), vc["Residual"] / w, rtol=1e-12)
    # GLS with this V gives the fitted fixed effects (lme4: fixef(m))
    X, y = res.model.design.X, res.model.design.y
    vi = np.linalg.inv(v)
    beta = np.linalg.solve(X.T @ vi @ X, X.T @ vi @ y)
    assert np.allclose(beta, res.fe_params.to_numpy(), rtol=1e-7)
