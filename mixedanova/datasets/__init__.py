"""Bundled example data sets and their index.

The CSV files live in the project's top-level ``datasets/`` folder, together
with ``index.csv`` (one row per data set: ``name, title, source, design,
response, factors, random, formula``; ``factors`` and ``random`` are
space-separated column names, ``random`` the factors treated as random in the
classic analysis, ``formula`` that analysis in lme4 syntax).  The wheel ships
that folder as ``mixedanova/datasets/data`` (see ``setup.py``); in a source
checkout or an editable install the loader reads the top-level folder itself,
so there is one copy of every file.

Most files are the CSVs from which the R reference answers in
``tests/reference`` were computed (lme4's Dyestuff, Dyestuff2, Penicillin,
Pastes, sleepstudy, cake; nlme's ergoStool, Rail, Ovary; MASS's oats; Box,
Hunter & Hunter's penicillin RCBD; ChickWeight).  ``plants_pots``, ``glucose``,
``clinic_means``, ``region_rates`` and ``subject_item`` are simulated (their index
rows say how); ``*_newdata`` sets are new rows for predictions, without response.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import MixedAnovaError, UnknownNameError

__all__ = ["load_dataset", "list_datasets", "dataset_info", "data_dir"]

_INDEX = "index.csv"
_INDEX_COLUMNS = ("name", "title", "source", "design", "response", "factors", "random",
                  "formula")


def data_dir() -> Path:
    """The folder holding the CSV files and ``index.csv``.

    ``mixedanova/datasets/data`` in an installed wheel, else the project's
    top-level ``datasets/`` folder (source checkout, editable install).
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "data", here.parent.parent / "datasets"):
        if (candidate / _INDEX).is_file():
            return candidate
    raise MixedAnovaError(f"the bundled data sets are missing: no {_INDEX} in {here / 'data'} "
                          f"or {here.parent.parent / 'datasets'}")


def dataset_info() -> pd.DataFrame:
    """The index of the bundled data sets, one row per name.

    Returns
    -------
    DataFrame
        Indexed by ``name``; columns ``title`` (ends in ``(SIMULATED)`` for
        simulated data), ``source``, ``design``, ``response``, ``factors``,
        ``random`` (factors random in the classic analysis), ``formula``.
    """
    info = pd.read_csv(data_dir() / _INDEX, dtype=str, keep_default_na=False)
    return info.set_index("name")


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (the index's names, sorted)."""
    return sorted(dataset_info().index)


def load_dataset(name: str) -> pd.DataFrame:
    """Load a bundled data set as a DataFrame.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets` (e.g. ``"sleepstudy"``, ``"plants_pots"``);
        :func:`dataset_info` describes each.

    Raises
    ------
    UnknownNameError
        For an unknown name (a MixedAnovaError; the message lists the available ones).
    """
    names = list_datasets()
    if name not in names:
        raise UnknownNameError(f"unknown dataset {name!r}; available: {', '.join(names)}")
    return pd.read_csv(data_dir() / f"{name}.csv")
