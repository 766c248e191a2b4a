"""Bundled example data sets (CSV files shipped with the package).

Each file is the CSV from which the R reference answers in ``tests/reference``
were computed (lme4's Dyestuff, Dyestuff2, Penicillin, Pastes, ergoStool,
sleepstudy, Rail, cake, MASS's oats, nlme's Ovary, and Box, Hunter & Hunter's
penicillin RCBD).
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import UnknownNameError

__all__ = ["load_dataset", "list_datasets"]


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".csv"))


def load_dataset(name: str) -> pd.DataFrame:
    """Load a bundled data set as a DataFrame.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets` (e.g. ``"sleepstudy"``, ``"bhh_penicillin"``).
    """
    names = list_datasets()
    if name not in names:
        raise UnknownNameError(f"unknown dataset {name!r}; available: {', '.join(names)}")
    with resources.files(__name__).joinpath(f"{name}.csv").open("r") as fh:
        return pd.read_csv(fh)
