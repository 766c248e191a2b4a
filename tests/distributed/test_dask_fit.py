"""Fits on Dask data frames equal the in-memory fit (issue 19).

Each data set is shuffled and split into 1, 3 and 50 partitions of random sizes;
``ma.lmm`` on the Dask frame (synchronous scheduler) must give the in-memory
``ma.lmm`` fit of the same rows: REML criterion to 1e-10 relative, theta, fixed
effects, SEs and BLUPs to 1e-8; with the response shifted by 1e8 SDs the
criterion to 1e-9 and the rest to 1e-6.  The expected values are the package's
in-memory fits (matched against lme4 in tests/test_lmer_reference.py), so these
tests check that the partition-by-partition path changes nothing.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _dask_data import blups as _blups, insteval_like as _insteval_like, split as _split

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")



def _slopes(seed: int = 5, n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 30, n)
    h = rng.integers(0, 8, n)
    x = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    off = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(size=30)[g] + 0.4 * rng.normal(size=30)[g] * x
         + 0.6 * rng.normal(size=8)[h] + off + rng.normal(size=n) / np.sqrt(w))
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": [f"h{v}" for v in h], "w": w,
                         "off": off})


CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", lambda: ma.load_dataset("sleepstudy"),
                   {}),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   lambda: ma.load_dataset("penicillin"), {}),
    "insteval": ("y ~ service + (1 | s) + (1 | d) + (1 | dept)", _insteval_like, {}),
    "slopes_weights_offset": ("y ~ x + (x | g) + (1 | h)", _slopes,
                              {"weights": "w", "offset": "off"}),
}


def _compare(r1, r0, crit_rel: float, tol: float) -> None:
    assert r1.nobs == r0.nobs
    assert r1.reml_criterion == pytest.approx(r0.reml_criterion, rel=crit_rel)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=tol, atol=tol)
    assert list(r1.fe_params.index) == list(r0.fe_params.index)
    np.testing.assert_allclose(r1.fe_params.to_numpy(), r0.fe_params.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), r0.bse_fe.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    assert r1.sigma == pytest.approx(r0.sigma, rel=tol)
    for g in r0.random_effects:
        a, b = r1.random_effects[g], r0.random_effects[g]
        assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    np.testing.assert_allclose(_blups(r1), _blups(r0), rtol=tol, atol=tol * r0.sigma)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nparts", [1, 3, 50])
def test_dask_fit_equals_the_in_memory_fit(case, nparts):
    formula, data, kw = CASES[case]
    df = data()
    r0 = ma.lmm(formula, df, **kw)
    r1 = ma.lmm(formula, _split(df, nparts, seed=nparts), **kw)
    assert type(r1).__name__ == "DistributedLmmResults"
    _compare(r1, r0, 1e-10, 1e-8)
    np.testing.assert_allclose(r1.random_effects_sd[next(iter(r0.random_effects))],
                               r0.random_effects_sd[next(iter(r0.random_effects))],
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nparts", [3, 50])
def test_dask_fit_with_a_response_shifted_by_1e8_sds(case, nparts):
    formula, data, kw = CASES[case]
    df = data()
    yname = formula.split("~")[0].strip()
    df[yname] = df[yname] + 1e8 * float(df[yname].std())
    r0 = ma.lmm(formula, df, **kw)
    r1 = ma.lmm(formula, _split(df, nparts, seed=nparts + 7), **kw)
    _compare(r1, r0, 1e-9, 1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("shifted", [False, True])
def test_partitions_summed_in_slices_equal_the_in_memory_fit(case, shifted, monkeypatch):
    from mixedanova.distributed import passes

    # a partition longer than SLICE_ROWS is summed slice by slice (uneven slices)
    monkeypatch.setattr(passes, "SLICE_ROWS", 37)
    formula, data, kw = CASES[case]
    df = data()
    if shifted:
        yname = formula.split("~")[0].strip()
        df[yname] = df[yname] + 1e8 * float(df[yname].std())
    r0 = ma.lmm(formula, df, **kw)
    r1 = ma.lmm(formula, _split(df, 3, seed=11), **kw)
    # REMLcrit(m), getME(m, "theta"), fixef(m), SEs, sigma(m), ranef(m) as in memory
    _compare(r1, r0, 1e-9 if shifted else 1e-10, 1e-6 if shifted else 1e-8)


def test_ml_fit_and_satterthwaite_df():
    formula, data, kw = CASES["insteval"]
    df = data()
    r0 = ma.lmm(formula, df, method="ML")
    r1 = ma.lmm(formula, _split(df, 7, seed=1), method="ML")
    assert r1.deviance == pytest.approx(r0.deviance, rel=1e-10)
    # lmerTest's Satterthwaite df come from level-sized quantities only
    np.testing.assert_allclose(r1.fixed()["df"], r0.fixed()["df"], rtol=1e-6)
    assert r1.aic == pytest.approx(r0.aic, rel=1e-10)


def test_missing_values_are_dropped_and_counted():
    df = ma.load_dataset("sleepstudy")
    df.loc[[3, 50, 51], "Reaction"] = np.nan
    df.loc[[100], "Days"] = np.nan
    r0 = ma.lmm("Reaction ~ Days + (Days | Subject)", df)
    r1 = ma.lmm("Reaction ~ Days + (Days | Subject)", _split(df, 5, seed=2))
    assert r1.n_dropped == r0.n_dropped == 4
    _compare(r1, r0, 1e-10, 1e-8)
    assert "4 observations deleted due to missing values" in str(r1.summary())


def test_a_partition_without_complete_rows_is_skipped():
    df = ma.load_dataset("penicillin")
    df.loc[:9, "diameter"] = np.nan
    pieces = [df.iloc[:10], df.iloc[10:80], df.iloc[80:]]
    ddf = dd.from_delayed([dask.delayed(p) for p in pieces], meta=df.iloc[:0])
    r0 = ma.lmm("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
    r1 = ma.lmm("diameter ~ 1 + (1 | plate) + (1 | sample)", ddf)
    _compare(r1, r0, 1e-10, 1e-8)


def test_fitted_residuals_and_predict_are_lazy_dask_series():
    formula, data, kw = CASES["slopes_weights_offset"]
    df = data()
    ddf = _split(df, 4, seed=3)
    r0 = ma.lmm(formula, df, **kw)
    r1 = ma.lmm(formula, ddf, **kw)
    fitted = r1.fittedvalues
    assert hasattr(fitted, "compute") and hasattr(fitted, "npartitions")
    got = fitted.compute().sort_index()
    np.testing.assert_allclose(got.to_numpy(), r0.fittedvalues.sort_index().to_numpy(),
                               rtol=1e-8, atol=1e-8)
    for kind in ("response", "pearson", "scaled"):
        np.testing.assert_allclose(r1.residuals(kind).compute().sort_index().to_numpy(),
                                   r0.residuals(kind).sort_index().to_numpy(),
                                   rtol=1e-7, atol=1e-7)
    new = df.iloc[:40]
    np.testing.assert_allclose(r1.predict(new).to_numpy(), r0.predict(new).to_numpy(),
                               rtol=1e-8, atol=1e-8)
    lazy = r1.predict(dd.from_pandas(new, npartitions=3), re_form="~0")
    assert hasattr(lazy, "compute")
    np.testing.assert_allclose(lazy.compute().to_numpy(),
                               r0.predict(new, re_form="~0").to_numpy(), rtol=1e-8, atol=1e-8)
    # the summary's scaled-residual quantiles are exact, not Dask's approximate ones
    assert r1._summary_parts()["residual_quantiles"].to_numpy() == pytest.approx(
        r0._summary_parts()["residual_quantiles"].to_numpy(), rel=1e-7, abs=1e-9)


def test_explicit_pwrss_is_a_distributed_pass():
    # the random effects explain nearly all of the response: the engine recomputes
    # the penalized residual sum of squares from the rows at each evaluation
    rng = np.random.default_rng(4)
    g = rng.integers(0, 40, 2000)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=2000)})
    df["y"] = 10 * rng.normal(size=40)[g] + 0.5 * df.x + 0.05 * rng.normal(size=2000)
    r0 = ma.lmm("y ~ x + (1 | g)", df)
    model = ma.LinearMixedModel.from_formula("y ~ x + (1 | g)", df)
    f = model.deviance_function().system.factor(
        model.design.theta_layout().templates(r0.theta))
    assert f.pwrss_std < 1e-4 * len(df)  # the refinement applies in memory
    from mixedanova.distributed.dask_fit import DistributedModel
    dm = DistributedModel.from_formula("y ~ x + (1 | g)", _split(df, 6, seed=5))
    calls = []
    dev = dm.deviance_function()
    original = type(dev).explicit_pwrss

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    type(dev).explicit_pwrss = counting
    try:
        r1 = dm.fit()
    finally:
        type(dev).explicit_pwrss = original
    assert calls
    # at the same theta the objective (with the distributed pass) is the in-memory one
    d0 = model.deviance_function()
    assert dev(r0.theta) == pytest.approx(d0(r0.theta), rel=1e-12)
    # the optimum: the engine's gradient comes from the cross-products, whose pwrss
    # cancels to a few digits in this regime, so the summed chunks' rounding moves
    # the optimizer's stopping point by ~1e-8 of theta (shuffled in-memory rows
    # move it by ~1e-12); the criterion stays within 1e-10
    assert r1.reml_criterion == pytest.approx(r0.reml_criterion, rel=1e-10)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=1e-7)
    np.testing.assert_allclose(r1.fe_params, r0.fe_params, rtol=1e-7, atol=1e-7 * r0.sigma)


def test_fixed_factor_levels_missing_from_partitions():
    # a partition that lacks levels of a fixed factor still encodes every column
    formula, data, kw = CASES["insteval"]
    df = data().sort_values("service", kind="stable")
    pieces = [df.iloc[:800], df.iloc[800:]]  # the first piece holds "no" only
    assert pieces[0].service.nunique() == 1
    ddf = dd.from_delayed([dask.delayed(p) for p in pieces], meta=df.iloc[:0])
    _compare(ma.lmm(formula, ddf), ma.lmm(formula, df), 1e-10, 1e-8)


def test_rank_deficient_fixed_effects_drop_the_same_columns():
    df = ma.load_dataset("sleepstudy")
    df["Days2"] = 2.0 * df.Days
    with pytest.warns(ma.RankDeficiencyWarning, match="Days2"):
        r0 = ma.lmm("Reaction ~ Days + Days2 + (1 | Subject)", df)
    with pytest.warns(ma.RankDeficiencyWarning, match="Days2"):
        r1 = ma.lmm("Reaction ~ Days + Days2 + (1 | Subject)", _split(df, 4, seed=6))
    assert r1.design.dropped_columns == r0.design.dropped_columns == ("Days2",)
    _compare(r1, r0, 1e-10, 1e-8)


def test_what_is_not_available_is_named():
    df = ma.load_dataset("penicillin")
    ddf = _split(df, 3, seed=1)
    with pytest.raises(ma.DesignError, match="column name on a Dask"):
        ma.lmm("diameter ~ 1 + (1 | plate)", ddf, weights=np.ones(len(df)))
    with pytest.raises(ma.DesignError, match="whole\\s+column"):
        ma.lmm("diameter ~ scale(diameter) + (1 | plate)", ddf)
    with pytest.raises(ma.DesignError, match="only one level"):
        ma.lmm("diameter ~ 1 + (1 | plate)", _split(df[df.plate == "a"], 2, seed=1))
    with pytest.raises(ma.ArgumentError, match="bogus"):
        ma.lmm("diameter ~ 1 + (1 | plate)", ddf, bogus=1)
    res = ma.lmm("diameter ~ 1 + (1 | plate) + (1 | sample)", ddf)
    with pytest.raises(ma.DesignError, match="row-sized"):
        res.V()
    with pytest.raises(ma.DesignError, match="Kenward-Roger needs"):
        res.fixed("kenward-roger")
    with pytest.raises(ma.DesignError, match="Kenward-Roger needs"):
        res.anova(ddf="kenward-roger")
    with pytest.raises(ma.FitError, match="not available"):
        res.model.refit()


def test_import_mixedanova_does_not_import_dask():
    code = "import sys, mixedanova; print('dask' in sys.modules, 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False False", out


def test_local_cluster_of_two_worker_processes():
    # runs by default (16-27 s on the 2-core machine): issue 19 asks for a real
    # two-process cluster, not only the synchronous scheduler
    distributed = pytest.importorskip("distributed")
    formula, data, kw = CASES["slopes_weights_offset"]
    df = data()
    r0 = ma.lmm(formula, df, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with dask.config.set(scheduler=client):  # override the synchronous fixture
            for nparts in (3, 50):
                r1 = ma.lmm(formula, _split(df, nparts, seed=nparts), **kw)
                _compare(r1, r0, 1e-10, 1e-8)
            got = r1.fittedvalues.compute().sort_index()
    np.testing.assert_allclose(got.to_numpy(), r0.fittedvalues.sort_index().to_numpy(),
                               rtol=1e-8, atol=1e-8)


def test_progress_bar_is_optional(capsys):
    df = ma.load_dataset("penicillin")
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    r0 = ma.lmm(formula, df)
    r1 = ma.lmm(formula, _split(df, 3, seed=4), progress=True)
    assert "Completed" in capsys.readouterr().out  # Dask's ProgressBar
    assert r1.reml_criterion == pytest.approx(r0.reml_criterion, rel=1e-10)
    r2 = ma.lmm(formula, _split(df, 3, seed=4))
    assert capsys.readouterr().out == ""  # off by default
    assert r2.reml_criterion == r1.reml_criterion


def test_parquet_folder_with_categorical_and_string_columns(tmp_path):
    # the common case: dd.read_parquet of a folder; a categorical grouping factor
    # with an unused category and a string fixed factor come back through Parquet
    formula, data, kw = CASES["insteval"]
    df = data()
    df["s"] = pd.Categorical(df["s"], categories=list(range(-1, 200)))  # -1 unused
    for i, idx in enumerate(np.array_split(np.random.default_rng(0).permutation(len(df)), 4)):
        df.iloc[idx].to_parquet(tmp_path / f"part-{i}.parquet")
    ddf = dd.read_parquet(str(tmp_path))
    assert ddf.npartitions == 4
    r0 = ma.lmm(formula, df)
    r1 = ma.lmm(formula, ddf)
    assert r1.ngroups["s"] == r0.ngroups["s"] == 200
    _compare(r1, r0, 1e-10, 1e-8)
