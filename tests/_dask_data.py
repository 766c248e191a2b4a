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
