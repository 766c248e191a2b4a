"""Power by simulation (issue 20) against closed forms.

* One-way random design, ``a`` groups of ``n``: the EMS F test of ``sigma^2_A``
  has ``F ~ (1 + n sigma^2_A / sigma^2) F(a - 1, a(n - 1))``, so its power is
  ``P(F(a - 1, a(n - 1)) > F_crit / (1 + n sigma^2_A / sigma^2))``.
* Balanced randomized complete block design, ``t`` treatments in ``b`` random
  blocks: the treatment F test has a noncentral ``F(t - 1, (t - 1)(b - 1))``
  distribution with ``lambda = b sum (tau_i - mean tau)^2 / sigma^2``.

The simulated power must be within 3 Monte Carlo standard errors
(``sqrt(p (1 - p) / nsim)``, ``p`` the closed form) of the closed form.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedanova as ma

NSIM = 200
SLOW = pytest.mark.slow  # long runs: pytest -m slow (the project-wide marker)


def _mc_tol(p: float, nsim: int) -> float:
    return 3.0 * np.sqrt(p * (1.0 - p) / nsim)


def _oneway(a: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"A": pd.Categorical(np.repeat([f"a{i:02d}" for i in range(a)], n))})


def _rcbd(t: int, b: int) -> pd.DataFrame:
    trts = [chr(ord("A") + i) for i in range(t)]
    return pd.DataFrame({"trt": np.tile(trts, b),
                         "block": pd.Categorical(np.repeat([f"b{i:02d}" for i in range(b)], t))})


@pytest.mark.parametrize("a, n, s2a, seed", [
    (4, 3, 0.5, 1), (6, 4, 0.5, 2), (8, 2, 1.0, 3), (5, 5, 0.2, 4), (10, 3, 0.3, 5)])
def test_ems_f_test_of_oneway_random_effect(a, n, s2a, seed):
    model = ma.simulation_model("~ 1 + (1|A)", _oneway(a, n), fixed={"Intercept": 10.0},
                                varcomp={"A": s2a}, sigma=1.0, method="ANOVA")
    tab = ma.power(model, "A", nsim=NSIM, seed=seed)
    df1, df2 = a - 1, a * (n - 1)
    exact = float(stats.f.sf(stats.f.ppf(0.95, df1, df2) / (1.0 + n * s2a), df1, df2))
    assert tab.loc[0, "n_failed"] == 0
    assert abs(tab.loc[0, "power"] - exact) <= _mc_tol(exact, NSIM), (tab, exact)
    assert tab.loc[0, "ci_low"] <= tab.loc[0, "power"] <= tab.loc[0, "ci_high"]


@pytest.mark.parametrize("tau, b, s2b, seed", [
    ((0.0, 1.0, 1.5), 4, 2.0, 11), ((0.0, 0.8), 6, 1.5, 12), ((0.0, 0.5, 1.0, 0.5), 5, 3.0, 13),
    ((0.0, 1.2, 0.6), 3, 4.0, 14), ((0.0, 0.4, 0.8), 8, 2.5, 15)])
def test_treatment_f_test_in_rcbd_with_random_blocks(tau, b, s2b, seed):
    t = len(tau)
    data = _rcbd(t, b)
    names = ["Intercept"] + [f"trt[T.{chr(ord('A') + i)}]" for i in range(1, t)]
    fixed = dict(zip(names, [5.0] + list(tau[1:])))
    model = ma.simulation_model("~ trt + (1|block)", data, fixed=fixed,
                                varcomp={"block": s2b}, sigma=1.0)
    tab = ma.power(model, "trt", nsim=NSIM, seed=seed)  # type III F, Satterthwaite df
    tau = np.asarray(tau)
    lam = b * np.sum((tau - tau.mean()) ** 2)
    df1, df2 = t - 1, (t - 1) * (b - 1)
    exact = float(stats.ncf.sf(stats.f.ppf(0.95, df1, df2), df1, df2, lam))
    assert abs(tab.loc[0, "power"] - exact) <= _mc_tol(exact, NSIM), (tab, exact)


def test_treatment_ems_f_test_in_rcbd():
    # method="ANOVA": MS_trt / MS_error, the same noncentral F
    tau, b = np.array([0.0, 1.0, 1.5]), 5
    model = ma.simulation_model("~ trt + (1|block)", _rcbd(3, b),
                                fixed={"Intercept": 0.0, "trt[T.B]": 1.0, "trt[T.C]": 1.5},
                                varcomp={"block": 0.1}, sigma=1.0, method="ANOVA")
    tab = ma.power(model, "trt", nsim=NSIM, seed=21)
    exact = float(stats.ncf.sf(stats.f.ppf(0.95, 2, 8), 2, 8, b * np.sum((tau - tau.mean()) ** 2)))
    assert abs(tab.loc[0, "power"] - exact) <= _mc_tol(exact, NSIM), (tab, exact)


def test_power_curve_along_a_grouping_factor_and_replicates():
    data = _rcbd(3, 4)
    model = ma.simulation_model("y ~ trt + (1|block)", data,
                                fixed={"Intercept": 0.0, "trt[T.B]": 0.8, "trt[T.C]": 0.4},
                                varcomp={"block": 1.0}, sigma=1.0)
    curve = ma.power(model, "trt[T.B]", nsim=60, seed=3, along="block", breaks=[2, 4, 8])
    assert list(curve.columns) == ["block", "power", "ci_low", "ci_high", "nsim", "n_failed"]
    assert list(curve["block"]) == [2, 4, 8]
    assert list(curve["nsim"]) == [60] * 3
    assert curve["power"].iloc[-1] > curve["power"].iloc[0]
    reps = ma.power(model, "trt", nsim=30, seed=4, along="replicates", breaks=[1, 3])
    assert list(reps["replicates"]) == [1, 3]


def test_extend_data_makes_new_levels_like_simr():
    from mixedanova.batch.simulation import extend_data

    data = _rcbd(2, 3)
    big = extend_data(data, "block", 7)
    assert big["block"].nunique() == 7 and len(big) == 14
    assert list(big["block"].cat.categories[:4]) == ["b00", "b01", "b02", "b00.1"]
    small = extend_data(data, "block", 2)
    assert list(small["block"].cat.categories) == ["b00", "b01"] and len(small) == 4


def test_random_term_lrt_is_ranova():
    data = _rcbd(3, 6)
    model = ma.simulation_model("~ trt + (1|block)", data,
                                fixed={"Intercept": 0.0, "trt[T.B]": 0.5, "trt[T.C]": 0.0},
                                varcomp={"block": 0.8}, sigma=1.0)
    Y = model.simulate(3, seed=5)
    full = ma.lmm_many("~ trt + (1|block)", data, Y)
    for j in range(3):
        d = data.copy()
        d["y"] = Y[:, j]
        # lmerTest: ranova(lmer(y ~ trt + (1|block)))
        ref = ma.lmm("y ~ trt + (1|block)", d, warn=False).ranova()
        crit0 = -2.0 * ref["logLik"].iloc[1]
        lrt = crit0 - full.fit_info.loc[j, "criterion"]
        assert lrt == pytest.approx(ref["LRT"].iloc[1], rel=1e-8, abs=1e-8)
    tab = ma.power(model, "block", nsim=40, seed=6)
    assert 0.0 <= tab.loc[0, "power"] <= 1.0 and tab.loc[0, "n_failed"] == 0
    same = ma.power(model, "(1 | block)", nsim=40, seed=6)
    assert same.loc[0, "power"] == tab.loc[0, "power"]


def test_simulation_model_from_a_fit_with_a_parameter_changed():
    d = ma.load_dataset("sleepstudy")
    res = ma.lmm("Reaction ~ Days + (1|Subject)", d)
    m = ma.simulation_model(res, fixed={"Days": 2.0})
    assert m.fixed["Days"] == 2.0
    assert m.fixed["Intercept"] == pytest.approx(res.fe_params["Intercept"])
    assert m.varcomp["Subject"] == pytest.approx(res.varcomp["vcov"].iloc[0])
    assert m.sigma == pytest.approx(res.sigma)
    Y = m.simulate(2000, seed=1)
    beta = np.linalg.lstsq(res.design.X, Y, rcond=None)[0]
    assert beta[1].mean() == pytest.approx(2.0, abs=0.05)


def test_vector_term_simulation_has_the_covariance_asked():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": pd.Categorical(np.repeat(np.arange(400), 3)),
                      "x": np.tile([0.0, 1.0, 2.0], 400)})
    G = np.array([[1.0, 0.3], [0.3, 0.5]])
    m = ma.simulation_model("~ x + (x | g)", d, fixed={"Intercept": 0.0, "x": 0.0},
                            varcomp={"g": G}, sigma=1e-6)
    Y = m.simulate(50, seed=rng)
    b0, b1 = Y[0::3], Y[1::3] - Y[0::3]  # intercept and slope of each group
    est = np.cov(np.vstack([b0.ravel(), b1.ravel()]))
    np.testing.assert_allclose(est, G, atol=0.05)


def test_plot_curve(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    data = _rcbd(2, 3)
    model = ma.simulation_model("~ trt + (1|block)", data,
                                fixed={"Intercept": 0.0, "trt[T.B]": 1.0},
                                varcomp={"block": 1.0}, sigma=1.0)
    curve = ma.power(model, "trt[T.B]", nsim=20, seed=1, along="block", breaks=[3, 5])
    ax = curve.plot_curve()
    assert ax.get_xlabel() == "block"
    ax.figure.savefig(tmp_path / "curve.png")


@pytest.mark.parametrize("kwargs, match", [
    (dict(test="nope"), "nope"),
    (dict(nsim=0), "nsim"),
    (dict(alpha=1.5), "alpha"),
    (dict(breaks=[2, 3]), "along"),
    (dict(along="block"), "breaks"),
    (dict(along="nope", breaks=[2]), "nope"),
    (dict(along="block", breaks=[0]), "breaks"),
    (dict(n_jobs=0), "n_jobs"),
    (dict(model="x"), "model"),
])
def test_power_bad_input_names_the_argument(kwargs, match):
    data = _rcbd(2, 3)
    model = ma.simulation_model("~ trt + (1|block)", data,
                                fixed={"Intercept": 0.0, "trt[T.B]": 1.0},
                                varcomp={"block": 1.0}, sigma=1.0)
    args = dict(model=model, test="trt[T.B]", nsim=5)
    args.update(kwargs)
    with pytest.raises(ma.MixedAnovaError, match=match):
        ma.power(args.pop("model"), args.pop("test"), **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(fixed={"Intercept": 0.0}), "trt"),
    (dict(fixed={"Intercept": 0.0, "trt[T.B]": 1.0, "bogus": 1.0}), "bogus"),
    (dict(varcomp={}), "block"),
    (dict(varcomp={"block": 1.0, "other": 1.0}), "other"),
    (dict(varcomp={"block": -1.0}), "block"),
    (dict(sigma=None), "sigma"),
    (dict(sigma=-1.0), "sigma"),
    (dict(method="GLS"), "method"),
    (dict(residual="AR1"), "residual"),
    (dict(data="x"), "data"),
])
def test_simulation_model_bad_input_names_the_argument(kwargs, match):
    args = dict(formula="~ trt + (1|block)", data=_rcbd(2, 3),
                fixed={"Intercept": 0.0, "trt[T.B]": 1.0}, varcomp={"block": 1.0}, sigma=1.0)
    args.update(kwargs)
    with pytest.raises(ma.MixedAnovaError, match=match):
        ma.simulation_model(args.pop("formula"), args.pop("data"), **args)


@SLOW
@pytest.mark.parametrize("a, n, s2a", [(6, 4, 0.5), (12, 2, 0.4)])
def test_ems_power_with_many_simulations(a, n, s2a):
    nsim = 2000
    model = ma.simulation_model("~ 1 + (1|A)", _oneway(a, n), fixed={"Intercept": 0.0},
                                varcomp={"A": s2a}, sigma=1.0, method="ANOVA")
    tab = ma.power(model, "A", nsim=nsim, seed=99)
    df1, df2 = a - 1, a * (n - 1)
    exact = float(stats.f.sf(stats.f.ppf(0.95, df1, df2) / (1.0 + n * s2a), df1, df2))
    assert abs(tab.loc[0, "power"] - exact) <= _mc_tol(exact, nsim)
