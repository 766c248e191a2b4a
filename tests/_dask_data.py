"""Shared data and helpers of the Dask tests (tests/distributed): an
InstEval-shaped crossed data set, a shuffled split into partitions of random
sizes, the BLUPs of a fit as one vector."""
from __future__ import annotations

import numpy as np
import pandas as pd


def insteval_like(seed: int = 11, n: int = 2000) -> pd.DataFrame:
    """InstEval's shape, smaller: students x lecturers crossed, departments, a
    two-level fixed factor (as strings) and an ordinal response."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 200, n)
    d = rng.integers(0, 40, n)
    dept = d % 14
    service = rng.integers(0, 2, n)
    eta = (3.2 + 0.3 * rng.normal(size=200)[s] + 0.5 * rng.normal(size=40)[d]
           + 0.1 * rng.normal(size=14)[dept] - 0.07 * service)
    y = np.clip(np.round(eta + rng.normal(size=n)), 1, 5)
    return pd.DataFrame({"y": y, "s": s, "d": [f"L{v:02d}" for v in d],
                         "dept": dept, "service": np.where(service == 1, "yes", "no")})


def split(df: pd.DataFrame, nparts: int, seed: int):
    """A Dask frame of ``df``'s rows shuffled and cut into ``nparts`` partitions of
    random sizes."""
    import dask
    import dask.dataframe as dd

    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(df))
    cuts = np.sort(rng.choice(np.arange(1, len(df)), nparts - 1, replace=False))
    pieces = [df.iloc[idx] for idx in np.split(perm, cuts)]
    return dd.from_delayed([dask.delayed(p) for p in pieces], meta=df.iloc[:0])


def blups(res) -> np.ndarray:
    return np.concatenate([res.random_effects[g].sort_index().to_numpy().ravel()
                           for g in sorted(res.random_effects)])


def split_by_group(df: pd.DataFrame, column: str, nparts: int, seed: int):
    """A Dask frame of ``df``'s rows in ``nparts`` partitions (fewer if some draw no
    group), every group of ``column`` whole in one partition drawn at random; rows
    keep their order within a partition."""
    import dask
    import dask.dataframe as dd

    rng = np.random.default_rng(seed)
    groups = df[column].unique()
    where = dict(zip(groups, rng.integers(0, nparts, len(groups))))
    part = df[column].map(where).to_numpy()
    pieces = [df[part == k] for k in range(nparts) if (part == k).any()]
    return dd.from_delayed([dask.delayed(p) for p in pieces], meta=df.iloc[:0])


def serial_data(seed: int = 3, ngroups: int = 40) -> pd.DataFrame:
    """Groups of 3 to 8 rows with a random intercept, residuals correlated within
    the group (compound symmetry 0.3 plus CAR(1) 0.5 on real times) and SDs by a
    three-level stratum; a positive covariate ``v`` for VarPower / VarExp."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, ngroups)
    g = np.repeat(np.arange(ngroups), sizes)
    pos = np.concatenate([np.arange(m) for m in sizes])
    tt = pos + rng.uniform(0.0, 0.5, len(g))
    e = np.empty(len(g))
    for k in range(ngroups):
        rows = np.flatnonzero(g == k)
        t = tt[rows]
        C = 0.3 + 0.7 * 0.5 ** np.abs(t[:, None] - t[None, :])
        e[rows] = np.linalg.cholesky(C) @ rng.normal(size=len(rows))
    s = rng.choice(["a", "b", "c"], len(g))
    sd = pd.Series(s).map({"a": 1.0, "b": 2.0, "c": 0.5}).to_numpy()
    x = rng.normal(size=len(g))
    v = rng.uniform(0.5, 3.0, len(g))
    y = 1 + 0.5 * x + rng.normal(size=ngroups)[g] + sd * v ** 0.3 * e
    return pd.DataFrame({"y": y, "x": x, "g": [f"G{k}" for k in g], "pos": pos, "tt": tt,
                         "s": s, "v": v})
