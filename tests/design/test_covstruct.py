"""Structured random-effect covariances: the maps from each term's parameters to
its covariance and lme4's theta (design.covstruct), and their formula syntax.

The structures are glmmTMB's (``vignette("covstruct", package = "glmmTMB")``):
``diag`` independent columns with their own variances; ``cs`` heterogeneous
compound symmetry, ``Sigma_ij = sd_i sd_j rho``; ``ar1`` one variance and
``corr(i, j) = rho^|i - j|``; ``toep`` heterogeneous Toeplitz,
``Sigma_ij = sd_i sd_j rho_|i - j|``; ``us`` any positive definite matrix.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import solve_toeplitz, toeplitz

import mixedanova as ma
from mixedanova.design.covstruct import CovarianceParameters, TermCovariance
from mixedanova.design.formula import parse_formula
from mixedanova.design.theta import ThetaLayout
from mixedanova.errors import ArgumentError, FormulaError

COLS = ("v1", "v2", "v3", "v4")


def _cov(kind: str, x) -> np.ndarray:
    T = TermCovariance(kind, "g", COLS).cholesky(np.asarray(x, dtype=float))
    assert np.allclose(T, np.tril(T))  # a lower-triangular template
    return T @ T.T


def test_ar1_is_one_variance_and_powers_of_rho():
    # glmmTMB ar1: Sigma_ij = sd^2 rho^|i-j|
    S = _cov("ar1", [math.log(2.0), math.atanh(0.6)])
    lags = np.abs(np.subtract.outer(range(4), range(4)))
    np.testing.assert_allclose(S, 4.0 * 0.6 ** lags, rtol=1e-13)


def test_cs_is_heterogeneous_variances_and_one_correlation():
    # glmmTMB cs: Sigma_ij = sd_i sd_j rho (i != j), rho = plogis(x) (1 + a) - a, a = 1/(q-1)
    sd = np.array([1.0, 2.0, 0.5, 3.0])
    x = -0.4
    a = 1.0 / 3.0
    rho = (1 + a) / (1 + math.exp(-x)) - a
    S = _cov("cs", np.r_[np.log(sd), x])
    C = np.full((4, 4), rho) + (1 - rho) * np.eye(4)
    np.testing.assert_allclose(S, np.outer(sd, sd) * C, rtol=1e-13)


def test_toep_correlations_have_the_given_partial_autocorrelations():
    # Durbin-Levinson: the lag-k partial autocorrelation is the last coefficient of
    # the order-k Yule-Walker solution (scipy.linalg.solve_toeplitz)
    sd = np.array([1.0, 1.5, 0.7, 2.0])
    pacf = np.array([0.5, -0.3, 0.4])
    S = _cov("toep", np.r_[np.log(sd), np.arctanh(pacf)])
    C = S / np.outer(sd, sd)
    r = C[0]
    np.testing.assert_allclose(C, toeplitz(r), atol=1e-14)   # Toeplitz
    for k in range(1, 4):
        phi = solve_toeplitz(r[:k], r[1:k + 1])
        assert phi[-1] == pytest.approx(pacf[k - 1], abs=1e-12)
    assert np.all(np.linalg.eigvalsh(C) > 0)


def test_diag_has_no_correlation_and_us_first_row_is_the_correlations():
    S = _cov("diag", np.log([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(S, np.diag([1.0, 4.0, 9.0, 16.0]), rtol=1e-13)
    z = np.array([0.3, -0.2, 0.5, 0.1, 0.7, -0.4])  # canonical partial correlations
    S = _cov("us", np.r_[np.log([1.0, 2.0, 3.0, 4.0]), np.arctanh(z)])
    sd = np.sqrt(np.diag(S))
    C = S / np.outer(sd, sd)
    np.testing.assert_allclose(sd, [1.0, 2.0, 3.0, 4.0], rtol=1e-13)
    np.testing.assert_allclose(C[0, 1:], z[:3], rtol=1e-13)  # corr of column 1 with j
    assert np.all(np.linalg.eigvalsh(C) > 0)


def test_names_follow_varcomp_and_values_are_variances_and_correlations():
    t = TermCovariance("us", "Subject", ("(Intercept)", "Days"))
    assert t.names == ("Subject: (Intercept)", "Subject: Days",
                       "Subject: corr((Intercept), Days)")
    assert TermCovariance("ar1", "s", COLS).names == ("s: variance", "s: corr")
    assert TermCovariance("toep", "s", COLS[:3]).names[-2:] == ("s: corr(lag 1)",
                                                                "s: pacf(lag 2)")
    layout = ThetaLayout.from_terms(["Subject"], [t.columns])
    cov = CovarianceParameters((t,), layout)
    held = cov.bind_fixed({"Subject: (Intercept)": 625.0, "Subject: corr((Intercept), Days)": 0.2,
                           "sigma": 1.0})
    assert held == {0: pytest.approx(math.log(25.0)), 2: pytest.approx(math.atanh(0.2))}
    x = np.array([math.log(25.0), 0.0, math.atanh(0.2)])
    np.testing.assert_allclose(cov.natural(x), [625.0, 1.0, 0.2])
    # theta is lme4's: the lower triangle of chol(Sigma) / scale, column by column
    T = np.linalg.cholesky(np.array([[625.0, 5.0], [5.0, 1.0]]))
    np.testing.assert_allclose(cov.theta(x, 5.0), [T[0, 0] / 5, T[1, 0] / 5, T[1, 1] / 5])


def test_unknown_or_out_of_range_fixed_names_are_refused():
    """glmmTMB's cs correlation lies in (-1 / (q - 1), 1); variances are positive."""
    t = TermCovariance("cs", "g", COLS)
    cov = CovarianceParameters((t,), ThetaLayout.from_terms(["g"], [COLS]))
    with pytest.raises(ArgumentError, match=r"unknown parameter 'g: rho'.*'g: corr'"):
        cov.bind_fixed({"g: rho": 0.3})
    with pytest.raises(ArgumentError, match=r"correlation and must lie in \(-0.333333, 1\)"):
        cov.bind_fixed({"g: corr": -0.5})
    with pytest.raises(ArgumentError, match="variance and must be positive"):
        cov.bind_fixed({"g: v1": 0.0})


def test_formula_reads_the_structure_of_each_term():
    """glmmTMB's syntax: ``cs(1 + x | g)``, ``ar1(0 + v | a/b)`` (nesting expands as
    lme4's ``expandSlash``), ``(1 | r)`` unstructured."""
    p = parse_formula("y ~ x + cs(1 + x | g) + ar1(0 + v | a/b) + (1 | r)")
    assert [(t.structure, t.group) for t in p.random] == [
        ("cs", "g"), ("ar1", "a"), ("ar1", "b:a"), ("us", "r")]
    assert p.fixed == "x"
    with pytest.raises(FormulaError, match=r"'\|\|' cannot be used inside diag\(\)"):
        parse_formula("y ~ diag(x || g)")


def test_glmm_and_chunked_fits_refuse_structured_terms():
    """Not fitted there (glmmTMB fits them; here: a clear error, not a silent us)."""
    d = pd.DataFrame({"y": [0, 1] * 20, "x": np.arange(40.0),
                      "v": list("abcd") * 10, "g": np.repeat(np.arange(10), 4).astype(str),
                      "r": np.tile(np.arange(5), 8).astype(str)})
    with pytest.raises(ma.DesignError, match=r"ar1\(0 \+ v \| g\).*not in ma.glmm"):
        ma.glmm("y ~ x + ar1(0 + v | g) + (1 | r)", d, family="binomial")
    # glmmTMB's us() and diag() over numeric columns are lme4's (x | g) and (x || g)
    rng = np.random.default_rng(3)
    e = pd.DataFrame({"g": np.repeat(np.arange(20), 10).astype(str), "x": rng.normal(size=200)})
    idx = np.repeat(np.arange(20), 10)
    eta = rng.normal(0, 1.5, 20)[idx] + (0.5 + rng.normal(0, 1.0, 20)[idx]) * e["x"]
    e["y"] = (rng.random(200) < 1 / (1 + np.exp(-eta))).astype(int)
    a = ma.glmm("y ~ x + diag(x | g)", e, family="binomial")
    b = ma.glmm("y ~ x + (x || g)", e, family="binomial")
    assert min(a.theta) > 0.1 and a.llf == b.llf
    from mixedanova.design.chunked import ChunkPlan
    with pytest.raises(ma.DesignError, match=r"cs\(1 \+ x \| g\).*not in chunks"):
        ChunkPlan.from_formula(parse_formula("y ~ x + cs(1 + x | g)"), d.iloc[:0])


def test_batch_fits_refuse_structured_terms():
    """``lmm_many`` fits on theta: a clear error, not a silent us."""
    d = pd.DataFrame({"x": np.arange(80.0), "v": list("abcd") * 20,
                      "g": np.repeat(np.arange(10), 8).astype(str)})
    Y = np.random.default_rng(1).normal(size=(80, 2))
    with pytest.raises(ma.DesignError, match=r"ar1\(0 \+ v \| g\).*not in batches"):
        ma.lmm_many("~ x + ar1(0 + v | g)", d, Y)
