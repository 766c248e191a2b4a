"""ma.glmm's front door: response forms, data checks, arguments."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

ROOT = Path(__file__).resolve().parents[2]


def _binary(seed=2, n=120, groups=12):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(0.3 + 0.8 * x + rng.normal(0, 0.7, groups)[g])))
    return pd.DataFrame({"y": rng.binomial(1, p), "x": x, "g": [f"g{k:02d}" for k in g]})


def test_glmm_stays_the_function_after_a_fit():
    # the engine's package is named glmm too: importing its submodules must not
    # rebind ma.glmm (checked in a fresh interpreter, where the first fit loads them)
    code = ("import mixedanova as ma, pandas as pd, numpy as np; "
            "d = pd.DataFrame({'y': [0,1,1,0,1,0,0,1,1,1,0,0], 'g': list('aabbccddeeff')}); "
            "ma.glmm('y ~ 1 + (1|g)', d); print(callable(ma.glmm))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(ROOT)).stdout.strip()
    assert out == "True"


def test_boolean_and_two_level_responses_equal_0_1():
    d = _binary()
    ref = ma.glmm("y ~ x + (1|g)", d)
    as_bool = ma.glmm("y ~ x + (1|g)", d.assign(y=d["y"].astype(bool)))
    as_text = ma.glmm("y ~ x + (1|g)", d.assign(y=np.where(d["y"] == 1, "yes", "no")))
    for alt in (as_bool, as_text):
        assert abs(alt.minus_2_loglik - ref.minus_2_loglik) <= 1e-9


def test_cbind_equals_proportion_with_weights():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(10), 3)
    n = rng.integers(2, 20, g.size)
    s = rng.binomial(n, 1 / (1 + np.exp(0.8 - rng.normal(0, 0.9, 10)[g])))
    d = pd.DataFrame({"s": s, "n": n, "g": g, "prop": s / n})
    a = ma.glmm("cbind(s, n - s) ~ 1 + (1|g)", d)
    b = ma.glmm("prop ~ 1 + (1|g)", d, weights="n")
    assert abs(a.minus_2_loglik - b.minus_2_loglik) <= 1e-9


@pytest.mark.parametrize("column,values,family,match", [
    ("y", [-1, 0, 1, 2], "poisson", "whole counts"),
    ("y", [0.5, 1, 2, 3], "poisson", "whole counts"),
    ("y", [0, 1, 2, 1], "binomial", r"\[0, 1\]"),
    ("y", [0, 0.5, 1, 1], "binomial", "proportions"),
])
def test_response_checks_name_the_column(column, values, family, match):
    d = _binary().head(40).copy()
    d[column] = np.resize(values, len(d))
    with pytest.raises(ma.DesignError, match=match) as info:
        ma.glmm("y ~ x + (1|g)", d, family=family)
    assert "'y'" in str(info.value)


def test_negative_cbind_counts_are_refused():
    d = pd.DataFrame({"s": [1, -1, 2, 0, 3, 1], "f": [2, 2, 1, 3, 0, 1],
                      "g": list("aabbcc")})
    with pytest.raises(ma.DesignError, match="'s'"):
        ma.glmm("cbind(s, f) ~ 1 + (1|g)", d)


def test_unknown_family_and_link():
    d = _binary()
    with pytest.raises(ma.ArgumentError, match="gaussian"):
        ma.glmm("y ~ x + (1|g)", d, family="gaussian")
    with pytest.raises(ma.ArgumentError, match="sqrt"):
        ma.glmm("y ~ x + (1|g)", d, link="sqrt")
    # glmer: "nAGQ > 1 is only available for models with a single, scalar
    # random-effects term"; here one vector term is integrated (test_agq_vector.py),
    # two terms are refused
    with pytest.raises(ma.ArgumentError, match="single random-effects term"):
        ma.glmm("y ~ x + (1|g) + (1|x)", d, nAGQ=5)


def test_probit_and_nagq0_fit():
    d = _binary()
    pr = ma.glmm("y ~ x + (1|g)", d, link="probit")
    assert pr.converged and pr.family.link.name == "probit"
    z = ma.glmm("y ~ x + (1|g)", d, nAGQ=0)
    lap = ma.glmm("y ~ x + (1|g)", d)
    # nAGQ = 0 optimizes theta only: never below the Laplace optimum
    assert z.minus_2_loglik >= lap.minus_2_loglik - 1e-9
