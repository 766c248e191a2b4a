"""``ma.lmm_many`` with vector random-effect terms (issue 20, the simr #223 design).

``y ~ cond + (1 + cond | subj) + (1 + cond | item)``: the vectorized path
(:mod:`mixedanova.batch.vector`) fits every response on its own and must give
the fit ``ma.lmm`` makes of that response alone: lmerTest's
``summary(lmer(y ~ cond + (1 + cond | subj) + (1 + cond | item)))`` numbers
(criterion, estimates, SEs, Satterthwaite df, ``as.data.frame(VarCorr(m))``)
as ``ma.lmm`` computes them, all at 1e-8 (exact derivatives for the df and the
same exact final Newton step in both paths: see tests/batch/test_lmm_many.py's
docstring).  With central differences the df differed by up to 3.6e-5 where a
correlation near +-1 leaves the criterion flat.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


FORMULA = "~ cond + (1 + cond | subj) + (1 + cond | item)"


def _lmm_one_thread(formula, data, method="REML"):
    """``ma.lmm`` on one BLAS thread, as the batch runs (see test_lmm_many.py)."""
    import warnings

    from mixedanova.batch.engine import one_blas_thread

    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore")
        return ma.lmm(formula, data, method)


def _design(nsubj=12, nitem=10) -> pd.DataFrame:
    s, i = np.meshgrid(np.arange(nsubj), np.arange(nitem), indexing="ij")
    s, i = s.ravel(), i.ravel()
    return pd.DataFrame({"subj": pd.Categorical([f"s{k:03d}" for k in s]),
                         "item": pd.Categorical([f"i{k:02d}" for k in i]),
                         "cond": np.where((s + i) % 2 == 0, -0.5, 0.5)})


def _responses(data: pd.DataFrame, k: int, seed: int = 3) -> np.ndarray:
    m = ma.simulation_model(FORMULA, data, fixed={"Intercept": 1.0, "cond": 0.3},
                            varcomp={"subj": [[0.4, 0.05], [0.05, 0.15]],
                                     "item": [[0.25, 0.0], [0.0, 0.08]]}, sigma=1.0)
    return m.simulate(k, seed)


def _flat(single) -> bool:
    """A correlation near +-1 (second template diagonal small against the first)."""
    th = single.state.theta
    return bool(th[2] < 0.05 * max(th[0], 1e-300) or th[5] < 0.05 * max(th[3], 1e-300))


def _check(res, data, Y, cols):
    fixed, info, vc = res.fixed(), res.fit_info, res.varcomp
    for j in cols:
        d = data.copy()
        d["yy"] = Y[:, j]
        # lmerTest: summary(lmer(yy ~ cond + (1 + cond | subj) + (1 + cond | item)))
        single = _lmm_one_thread("yy" + FORMULA, d)
        assert info.loc[j, "criterion"] == pytest.approx(single.reml_criterion, rel=1e-8)
        assert info.loc[j, "converged"] == single.converged
        assert info.loc[j, "singular"] == single.is_singular
        mine = fixed[fixed["response"] == j].reset_index(drop=True)
        ref = single.fixed()
        for col in ("estimate", "std_err", "t"):
            np.testing.assert_allclose(mine[col].to_numpy(), ref[col].to_numpy(), rtol=1e-8,
                                       atol=1e-10, err_msg=f"{col} of response {j}")
        np.testing.assert_allclose(mine["df"].to_numpy(), ref["df"].to_numpy(),
                                   rtol=1e-8,
                                   err_msg=f"df of response {j}")
        # as.data.frame(VarCorr(m)): variances and covariances
        mv = vc[vc["response"] == j].reset_index(drop=True)
        rv = single.varcomp
        assert list(mv["group"]) == list(rv["group"])
        np.testing.assert_allclose(mv["vcov"].to_numpy(), rv["vcov"].to_numpy(), rtol=1e-7,
                                   atol=1e-8 * float(rv["vcov"].abs().max()))


def test_vector_terms_each_response_equals_its_own_fit():
    data = _design()
    Y = _responses(data, 40)
    res = ma.lmm_many(FORMULA, data, Y)
    info = res.fit_info
    assert info["singular"].any() and (~info["singular"]).any()  # both kinds are here
    cols = np.random.default_rng(0).choice(40, 10, replace=False)
    cols = np.union1d(cols, np.flatnonzero(info["singular"])[:3])
    _check(res, data, Y, cols)


def test_vector_path_takes_the_responses_it_certifies():
    """The vectorized path fits (nearly) all of these responses itself; what it
    cannot certify goes to the engine (the same numbers as ma.lmm, tested above)."""
    from mixedanova.batch.engine import empty_chunk
    from mixedanova.batch.fit import prepare_batch
    from mixedanova.batch.vector import eligible_vector, fit_vector
    from mixedanova.likelihood.crossprod import CrossProductPattern

    data = _design()
    Y = _responses(data, 40, seed=5)
    batch = prepare_batch(FORMULA, data)
    spec = batch.spec
    assert eligible_vector(spec.terms, spec.X.shape[1])
    Yr = Y[batch.rows]
    shift = np.linalg.lstsq(spec.X, Yr, rcond=None)[0]
    cp = CrossProductPattern(list(spec.terms), len(Yr)).evaluate(
        [t.zraw for t in spec.terms], spec.X, Yr, shift=shift)
    out = empty_chunk(spec, np.arange(40))
    left = fit_vector(spec, cp, np.arange(40), out)
    assert len(left) <= 4
    done = np.setdiff1d(np.arange(40), left)
    assert out.converged[done].all() and np.isfinite(out.df[done]).all()


def test_a_failed_response_is_counted_not_dropped():
    data = _design()
    Y = _responses(data, 12, seed=7)
    Y[:, 4] = 2.5  # a constant response: lmer stops ("response is constant")
    res = ma.lmm_many(FORMULA, data, Y)
    info = res.fit_info
    assert len(info) == 12
    assert not info.loc[4, "converged"] and res.fit.failed[4]
    assert info.drop(index=4)["converged"].all()
    _check(res, data, Y, [0, 11])


def test_ml_vector_terms():
    data = _design(nsubj=10, nitem=8)
    Y = _responses(data, 20, seed=9)
    res = ma.lmm_many(FORMULA, data, Y, method="ML")
    for j in (0, 7):
        d = data.copy()
        d["yy"] = Y[:, j]
        # lme4: deviance(lmer(yy ~ ..., REML = FALSE)) and fixef
        single = _lmm_one_thread("yy" + FORMULA, d, "ML")
        assert res.fit_info.loc[j, "criterion"] == pytest.approx(-2.0 * single.llf, rel=1e-8)
        np.testing.assert_allclose(res.coef.iloc[j].to_numpy(), single.fe_params.to_numpy(),
                                   rtol=1e-8, atol=1e-10)
