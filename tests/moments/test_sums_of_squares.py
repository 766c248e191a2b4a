"""One-pass sums of squares (issue 11): classical formulas and sparse Method III.

Checked against independent computations done here with plain numpy: the
closed-form moment estimates of the balanced two-way random model from cell and
margin means, and Type I sums of squares and Henderson III traces by dense QR
projections on the full design (what R's ``anova(lm())`` and VCA::anovaMM do).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixedanova.errors import DesignError
from mixedanova.moments import sums_of_squares
from mixedanova.moments.anova_design import prepare_terms
from mixedanova.moments.moments import METHOD_RULES, fit_anova
from mixedanova.moments.sums_of_squares import sequential_ss


def _two_way(a: int, b: int, n: int, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ai = np.repeat(np.arange(a), b * n)
    bi = np.tile(np.repeat(np.arange(b), n), a)
    y = (5 + rng.normal(0, 2, a)[ai] + rng.normal(0, 1, b)[bi]
         + rng.normal(0, 1, (a, b))[ai, bi] + rng.normal(0, 1.5, ai.size))
    return pd.DataFrame({"A": [f"a{i}" for i in ai], "B": [f"b{i}" for i in bi], "y": y})


def test_balanced_two_way_equals_closed_forms():
    # Searle, Casella & McCulloch (1992) sec. 4.3: two-way crossed random model with
    # interaction; MS from cell and margin means, s2_AB = (MS_AB - MSE)/n, etc.
    # R: anova(lm(y ~ A * B)) mean squares solved for the components
    a, b, n = 12, 9, 3
    d = _two_way(a, b, n)
    st = fit_anova(d, "y", [], [("A",), ("B",), ("A", "B")])
    assert st.method == METHOD_RULES
    cell = d.groupby(["A", "B"])["y"].mean().unstack().to_numpy()
    ma, mb, g = cell.mean(1), cell.mean(0), cell.mean()
    ms_a = b * n * np.sum((ma - g) ** 2) / (a - 1)
    ms_b = a * n * np.sum((mb - g) ** 2) / (b - 1)
    ms_ab = n * np.sum((cell - ma[:, None] - mb[None, :] + g) ** 2) / ((a - 1) * (b - 1))
    fitted = d.groupby(["A", "B"])["y"].transform("mean").to_numpy()
    ms_e = np.sum((d["y"].to_numpy() - fitted) ** 2) / (a * b * (n - 1))
    expected = {"A": (ms_a - ms_ab) / (b * n), "B": (ms_b - ms_ab) / (a * n),
                "A:B": (ms_ab - ms_e) / n, "Residual": ms_e}
    for k, v in expected.items():
        assert st.estimates[k] == pytest.approx(v, rel=1e-10), k
    assert list(st.table["df"]) == [a - 1, b - 1, (a - 1) * (b - 1), a * b * (n - 1)]


def _dense_type1(d: pd.DataFrame, blocks: list[np.ndarray], zs: list[np.ndarray]):
    """Type I SS, df and tr(Z' M_k Z) by QR of the cumulative dense designs."""
    y = d["y"].to_numpy()
    n = y.size
    cols = [np.ones((n, 1))]
    prev_p = np.ones((n, 1)) @ np.ones((1, n)) / n
    out = []
    for blk in blocks + [None]:
        if blk is None:
            proj = np.eye(n)
        else:
            cols.append(blk)
            q, _ = np.linalg.qr(np.hstack(cols)[:, _independent(np.hstack(cols))])
            proj = q @ q.T
        m = proj - prev_p
        out.append((round(float(np.trace(m))), float(y @ m @ y),
                    [float(np.trace(z.T @ m @ z)) for z in zs]))
        prev_p = proj
    return out


def _independent(x: np.ndarray) -> list[int]:
    keep: list[int] = []
    for j in range(x.shape[1]):
        if np.linalg.matrix_rank(x[:, keep + [j]], tol=1e-8 * np.sqrt(x.shape[0])) > len(keep):
            keep.append(j)
    return keep


def _onehot(codes) -> np.ndarray:
    u, inv = np.unique(np.asarray(codes), return_inverse=True)
    return np.eye(len(u))[inv]


@pytest.mark.parametrize("seed", [1, 2])
def test_method3_sparse_equals_dense_projections(seed):
    # unbalanced, empty cells, a numeric covariate fitted first, then three random terms
    # (A:B absorbed); R: anova(lm(y ~ x + A + B + A:B)) and VCA::anovaMM traces
    rng = np.random.default_rng(seed)
    n = 90
    d = pd.DataFrame({"A": rng.integers(0, 5, n).astype(str),
                      "B": rng.integers(0, 6, n).astype(str), "x": rng.normal(3, 1, n)})
    d["y"] = rng.normal(size=n) + d["x"] + d["A"].astype(int) * 0.3
    terms, cov = prepare_terms(d, "y", [("x",)], [("A",), ("B",), ("A", "B")])
    seq = sequential_ss(d, "y", terms, cov)
    za, zb, zab = _onehot(d["A"]), _onehot(d["B"]), _onehot(d["A"] + ":" + d["B"])
    ref = _dense_type1(d, [d[["x"]].to_numpy(), za, zb, zab], [za, zb, zab])
    for k, (df_, ss, tr) in enumerate(ref):
        assert seq.df[k] == df_, seq.labels[k]
        assert seq.sum_sq[k] == pytest.approx(ss, rel=1e-9), seq.labels[k]
        np.testing.assert_allclose(seq.traces[k], tr, rtol=1e-9, atol=1e-9)


def test_too_many_dense_columns_named(monkeypatch):
    monkeypatch.setattr(sums_of_squares, "MAX_DENSE_COLUMNS", 8)
    d = _two_way(6, 5, 2)
    with pytest.raises(DesignError, match=r"dense .*'A' \(6\)"):
        fit_anova(d, "y", [], [("A",), ("B",), ("A", "B")], method="method3")
