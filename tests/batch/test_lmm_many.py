"""``ma.lmm_many`` (issue 20): many responses on one design.

Each response's fit must be the fit ``ma.lmm`` makes of that response alone:
criterion, estimates, standard errors and Satterthwaite df (lmerTest's
``summary(lmer(y ~ ...))`` numbers, as ``ma.lmm`` computes them) to 1e-8.

With ``fast=False`` every response goes through the single-fit engine; the
default fast path (scalar random intercepts fitted across responses,
:mod:`mixedanova.batch.dense`) computes the same quantities with other
arithmetic.  Both compare at 1e-8, the Satterthwaite df included: for designs of
this size both paths take exact derivatives of lmerTest's pieces
(:mod:`mixedanova.likelihood.varpar`) and end with the same exact Newton step, so
the df no longer carry the rounding noise of central second differences (which
reached 1e-6 of the df: on the 1,000 responses of
test_random_200_of_many_equal_their_own_fits the largest df difference was
1.0e-6 with differences, and a response with a donor SD of 0.5 % of the residual
SD sat 3.5e-8 off its optimum after ma.lmm's finite-difference Newton step,
moving its df by 1.4e-7).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

FORMULA = "~ condition + age + (1|donor) + (1|batch)"
SLOW = pytest.mark.slow  # long runs: pytest -m slow (the project-wide marker)


def _design(n=200, nd=20, nb=6, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    donor = np.arange(n) % nd
    batch = rng.integers(0, nb, n)
    return pd.DataFrame({"donor": pd.Categorical([f"d{i:02d}" for i in donor]),
                         "batch": pd.Categorical([f"b{i}" for i in batch]),
                         "condition": np.where(rng.integers(0, 2, n) == 1, "B", "A"),
                         "age": rng.normal(40, 10, n)})


def _responses(data: pd.DataFrame, k: int, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(data)
    d, b = data["donor"].cat.codes.to_numpy(), data["batch"].cat.codes.to_numpy()
    nd, nb = d.max() + 1, b.max() + 1
    cond = (data["condition"] == "B").to_numpy(float)
    sd_d, sd_b = rng.uniform(0, 1, k), rng.uniform(0, 0.7, k)
    return (1.0 + rng.normal(0, 0.5, k) * cond[:, None] + 0.01 * data["age"].to_numpy()[:, None]
            + sd_d * rng.normal(size=(nd, k))[d] + sd_b * rng.normal(size=(nb, k))[b]
            + rng.normal(size=(n, k)))


def _lmm_one_thread(formula, data, method="REML"):
    """``ma.lmm`` on one BLAS thread, as the batch runs: OpenBLAS's thread count
    changes the last bits of a factorization, which the Satterthwaite df's second
    differences amplify to about 1e-8."""
    from mixedanova.batch.engine import one_blas_thread

    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore")
        return ma.lmm(formula, data, method)


def _single(data, y, method="REML"):
    d = data.copy()
    d["yy"] = y
    return _lmm_one_thread("yy" + FORMULA, d, method)


def _check_against_single(res, data, Y, cols, method="REML", exact=False):
    df_rtol = 1e-8  # see the module docstring
    fixed = res.fixed()
    info = res.fit_info
    vc = res.varcomp
    for j in cols:
        name = res.names[j]
        single = _single(data, Y[:, j], method)
        # lmerTest: summary(lmer(y ~ condition + age + (1|donor) + (1|batch)))
        crit = single.reml_criterion if method == "REML" else -2.0 * single.llf
        assert info.loc[j, "criterion"] == pytest.approx(crit, rel=1e-8, abs=1e-8)
        assert info.loc[j, "converged"] == single.converged
        assert info.loc[j, "singular"] == single.is_singular
        assert info.loc[j, "nobs"] == single.nobs
        mine = fixed[fixed["response"] == name].reset_index(drop=True)
        ref = single.fixed()
        assert list(mine["term"]) == list(ref.index)
        for col in ("estimate", "std_err", "t"):
            np.testing.assert_allclose(mine[col].to_numpy(), ref[col].to_numpy(), rtol=1e-8,
                                       atol=1e-10, err_msg=f"{col} of response {name}")
        np.testing.assert_allclose(mine["df"].to_numpy(), ref["df"].to_numpy(), rtol=df_rtol,
                                   err_msg=f"df of response {name}")
        np.testing.assert_allclose(mine["p"].to_numpy(), ref["p"].to_numpy(), rtol=1e-6,
                                   atol=1e-12)
        # as.data.frame(VarCorr(m))
        mv = vc[vc["response"] == name].reset_index(drop=True)
        rv = single.varcomp
        assert list(mv["group"]) == list(rv["group"])
        # a variance near 0 sits in a flat direction of the criterion: compared on the
        # scale of the response's largest variance component
        np.testing.assert_allclose(mv["vcov"].to_numpy(), rv["vcov"].to_numpy(), rtol=1e-7,
                                   atol=1e-8 * float(rv["vcov"].abs().max()))


@pytest.mark.parametrize("fast", [True, False])
def test_each_response_equals_its_own_fit(fast):
    data = _design()
    Y = _responses(data, 40)
    res = ma.lmm_many(FORMULA, data, Y, fast=fast)
    assert len(res) == 40
    assert res.fit_info["singular"].any()  # boundary fits are among them
    cols = np.random.default_rng(0).choice(40, 12, replace=False)
    cols = np.union1d(cols, np.flatnonzero(res.fit_info["singular"])[:3])
    _check_against_single(res, data, Y, cols, exact=not fast)


def test_ml_and_anova_per_response():
    data = _design(seed=3)
    Y = _responses(data, 6, seed=4)
    res = ma.lmm_many(FORMULA, data, Y, method="ML")
    _check_against_single(res, data, Y, [0, 3], method="ML")
    reml = ma.lmm_many(FORMULA, data, Y)
    for typ in (1, 3):
        tab = reml.anova(type=typ)
        assert list(tab.columns) == ["response", "term", "sum_sq", "mean_sq", "num_df",
                                     "den_df", "F", "p"]
        for j in (1, 5):
            # lmerTest: anova(m, type = typ)
            ref = _single(data, Y[:, j]).anova(type=typ)
            mine = tab[tab["response"] == j]
            assert list(mine["term"]) == list(ref.index)
            for col in ("F", "num_df", "den_df", "p"):
                np.testing.assert_allclose(mine[col].to_numpy(), ref[col].to_numpy(),
                                           rtol=1e-8, atol=1e-12)


def test_missing_values_drop_rows_for_that_response_only():
    data = _design(seed=5)
    Y = _responses(data, 8, seed=6)
    Y[3, 1] = np.nan
    Y[10:30, 4] = np.nan
    Y[10:30, 6] = np.nan  # the same pattern as column 4: one cross-product build
    Y[data["donor"].to_numpy() == "d03", 7] = np.nan  # a whole donor level gone
    frame = pd.DataFrame(Y, columns=[f"gene{j}" for j in range(8)])
    res = ma.lmm_many(FORMULA, data, frame)
    assert list(res.fit_info["nobs"]) == [200, 199, 200, 200, 180, 200, 180, 190]
    assert res.names == list(frame.columns)
    _check_against_single(res, data, Y, [0, 1, 4, 6, 7])


def test_missing_covariates_drop_rows_for_every_response():
    data = _design(seed=7)
    data.loc[[2, 5], "age"] = np.nan
    Y = _responses(data, 3, seed=8)
    res = ma.lmm_many(FORMULA, data, Y)
    assert list(res.fit_info["nobs"]) == [198] * 3
    _check_against_single(res, data, Y, [0, 2])


def test_column_names_and_shapes():
    data = _design(seed=9)
    Y = _responses(data, 5, seed=10)
    res = ma.lmm_many(FORMULA, data, Y)
    assert list(res.fixed().columns) == ["response", "term", "estimate", "std_err", "df", "t",
                                         "p"]
    assert list(res.varcomp.columns) == ["response", "group", "var1", "var2", "vcov", "sdcor"]
    assert list(res.fit_info.columns) == ["response", "criterion", "converged", "singular",
                                          "nobs"]
    assert len(res.fixed()) == 5 * 3
    assert len(res.varcomp) == 5 * 3
    assert list(res.fit_info["response"]) == [0, 1, 2, 3, 4]
    resid = res.fixed(ddf="residual")
    assert np.all(resid["df"] == 200 - 3)


def test_processes_give_the_same_numbers():
    data = _design(seed=11)
    Y = _responses(data, 12, seed=12)
    one = ma.lmm_many(FORMULA, data, Y, chunk_size=5)
    two = ma.lmm_many(FORMULA, data, Y, n_jobs=2, chunk_size=5)
    pd.testing.assert_frame_equal(one.fixed(), two.fixed())
    pd.testing.assert_frame_equal(one.fit_info, two.fit_info)


def test_progress_goes_to_stderr(capsys):
    data = _design(seed=13)
    Y = _responses(data, 4, seed=14)
    ma.lmm_many(FORMULA, data, Y, progress=True, chunk_size=2)
    err = capsys.readouterr().err
    assert "4/4 responses" in err


def test_failed_response_is_reported_not_dropped():
    data = _design(seed=15)
    Y = _responses(data, 3, seed=16)
    Y[:, 1] = 5.0  # constant: no variation to fit
    res = ma.lmm_many(FORMULA, data, Y)
    info = res.fit_info
    assert list(info["converged"]) == [True, False, True]
    assert np.isnan(info.loc[1, "criterion"])
    assert "constant" in res.messages[1][0]
    assert len(res.fixed()) == 9


def test_kenward_roger_on_request():
    data = _design(seed=17)
    Y = _responses(data, 2, seed=18)
    res = ma.lmm_many(FORMULA, data, Y, ddf="kenward-roger")
    tab = res.fixed()
    # pbkrtest via lmerTest: summary(m, ddf = "Kenward-Roger")
    ref = _single(data, Y[:, 1]).fixed("kenward-roger")
    mine = tab[tab["response"] == 1]
    np.testing.assert_allclose(mine["df"].to_numpy(), ref["df"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(mine["std_err"].to_numpy(), ref["std_err"].to_numpy(),
                               rtol=1e-8)
    with pytest.raises(ma.ArgumentError, match="ddf"):
        res.fixed(ddf="satterthwaite")


@pytest.mark.parametrize("kwargs, match", [
    (dict(formula="y ~ condition + (1|donor)"), "right-hand side"),
    (dict(formula="condition + (1|donor)"), "formula"),
    (dict(formula=3), "formula"),
    (dict(responses=np.zeros((7, 2))), "responses"),
    (dict(responses=np.zeros((200, 2, 2))), "responses"),
    (dict(responses=np.full((200, 1), np.inf)), "responses"),
    (dict(responses=[["a"]] * 200), "responses"),
    (dict(method="ANOVA"), "method"),
    (dict(ddf="bogus"), "ddf"),
    (dict(n_jobs=0), "n_jobs"),
    (dict(n_jobs=1.5), "n_jobs"),
    (dict(progress="yes"), "progress"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(optimizer="bfgs"), "optimizer"),
    (dict(fast="yes"), "fast"),
    (dict(data=[1, 2]), "data"),
])
def test_bad_input_names_the_argument(kwargs, match):
    data = _design(seed=19)
    args = dict(formula=FORMULA, data=data, responses=_responses(data, 2, seed=20))
    args.update(kwargs)
    with pytest.raises(ma.MixedAnovaError, match=match):
        ma.lmm_many(args.pop("formula"), args.pop("data"), args.pop("responses"), **args)


@pytest.mark.parametrize("fast", [True, False])
@SLOW
def test_random_200_of_many_equal_their_own_fits(fast):
    data = _design(n=500, nd=50, nb=10, seed=21)
    Y = _responses(data, 1000, seed=22)
    res = ma.lmm_many(FORMULA, data, Y, n_jobs=2, fast=fast)
    cols = np.random.default_rng(23).choice(1000, 200, replace=False)
    _check_against_single(res, data, Y, cols, exact=not fast)


def test_fast_path_takes_the_scalar_intercept_responses():
    from mixedanova.batch.dense import eligible
    from mixedanova.batch.fit import prepare_batch

    data = _design(seed=25)
    b = prepare_batch(FORMULA, data)
    assert eligible(b.spec.terms, b.spec.X.shape[1])
    slopes = prepare_batch("~ age + (age | donor)", data)
    assert not eligible(slopes.spec.terms, slopes.spec.X.shape[1])


@pytest.mark.parametrize("fast", [True, False])
def test_random_slopes_equal_their_own_fits(fast):
    """A vector term: the vectorized path (mixedanova.batch.vector) or the engine."""
    d = ma.load_dataset("sleepstudy")
    rng = np.random.default_rng(26)
    Y = d["Reaction"].to_numpy()[:, None] + rng.normal(0, 5, (len(d), 3))
    res = ma.lmm_many("~ Days + (Days | Subject)", d, Y, fast=fast)
    df_rtol = 1e-8  # see the module docstring
    for j in range(3):
        dd = d.copy()
        dd["yy"] = Y[:, j]
        # lmerTest: summary(lmer(yy ~ Days + (Days | Subject), sleepstudy))
        ref = _lmm_one_thread("yy ~ Days + (Days | Subject)", dd)
        assert res.fit_info.loc[j, "criterion"] == pytest.approx(ref.reml_criterion, rel=1e-10)
        mine = res.fixed()[res.fixed()["response"] == j]
        np.testing.assert_allclose(mine["df"].to_numpy(), ref.fixed()["df"].to_numpy(),
                                   rtol=df_rtol)
        for col in ("estimate", "std_err"):
            np.testing.assert_allclose(mine[col].to_numpy(), ref.fixed()[col].to_numpy(),
                                       rtol=1e-8)
        # as.data.frame(VarCorr(m)): variances, the covariance, the residual
        vc = res.varcomp[res.varcomp["response"] == j].reset_index(drop=True)
        rv = ref.varcomp
        for col in ("group", "var1", "var2"):
            assert list(vc[col].fillna("-")) == list(rv[col].fillna("-"))
        np.testing.assert_allclose(vc["sdcor"].to_numpy(), rv["sdcor"].to_numpy(), rtol=1e-8)


def test_five_responses_against_lmertest():
    """lmerTest 3.1-3 / lme4 1.1-31 (tests/reference/r/lmm_many_five.R), for each of
    five responses: REMLcrit(m), coef(summary(m)) (estimate, SE, Satterthwaite df,
    p) and as.data.frame(VarCorr(m)).  lme4's default fit stops slightly short of the
    optimum (measured here: estimates within 6e-6, df within 1.5e-5 relative; our
    criterion 2e-10 lower), hence the tolerances of the other lmer references."""
    import json
    from pathlib import Path
    here = Path(__file__).resolve().parents[1]
    ref = json.loads((here / "reference" / "lmm_many_five.json").read_text())
    data = pd.read_csv(here / "data" / "batch" / "lmm_many_five.csv")
    names = list(ref["fits"])
    res = ma.lmm_many("~ condition + age + (1|donor) + (1|batch)", data, data[names])
    fixed, info, vc = res.fixed(), res.fit_info, res.varcomp
    for g, r in ref["fits"].items():
        crit = float(info.loc[info.response == g, "criterion"].iloc[0])
        assert r["reml_criterion"] - 1e-6 <= crit <= r["reml_criterion"] + 1e-7
        assert bool(info.loc[info.response == g, "singular"].iloc[0]) == r["singular"]
        f = fixed[fixed.response == g]
        np.testing.assert_allclose(f.estimate, r["fixed"]["estimate"], rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(f.std_err, r["fixed"]["se"], rtol=1e-4)
        np.testing.assert_allclose(f.df, r["fixed"]["df"], rtol=1e-3)
        np.testing.assert_allclose(f.p, r["fixed"]["p"], rtol=1e-3)
        v = vc[(vc.response == g) & vc.var2.isna()].set_index("group")
        for grp, var in zip(r["varcorr"]["group"], r["varcorr"]["vcov"]):
            assert float(v.loc[grp, "vcov"]) == pytest.approx(var, rel=1e-3, abs=1e-6)
