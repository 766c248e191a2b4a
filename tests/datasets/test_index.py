"""The bundled data sets: one index entry per CSV, every entry loads and names real columns."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.datasets import data_dir, dataset_info

ROOT = Path(__file__).resolve().parents[2]


def test_every_csv_has_an_index_entry_and_back():
    csvs = {p.stem for p in data_dir().glob("*.csv")} - {"index"}
    assert csvs == set(dataset_info().index)
    assert ma.list_datasets() == sorted(csvs)


def test_one_copy_of_the_data():
    # the top-level datasets/ folder is the only source; no CSV inside the package tree
    # (a CSV added under mixedanova/ would be invisible to the loader)
    assert data_dir() == (ROOT / "datasets").resolve() or data_dir().name == "data"
    assert not list((ROOT / "mixedanova").rglob("*.csv"))


@pytest.mark.parametrize("name", sorted(dataset_info().index))
def test_entry_loads_and_names_its_columns(name):
    info = dataset_info().loc[name]
    df = ma.load_dataset(name)
    assert len(df) > 0
    assert info["title"] and info["source"] and info["design"]
    cols = set(df.columns)
    if name.endswith("_newdata"):
        # new data for predictions: no response; the formula is the model it feeds
        assert info["response"] == "" and "new data" in info["title"].lower()
        assert name.removesuffix("_newdata") in dataset_info().index
    else:
        assert info["response"] in cols
        assert pd.api.types.is_numeric_dtype(df[info["response"]])
        assert info["response"] in info["formula"].split("~")[0]
    factors = info["factors"].split()
    assert set(factors) <= cols, f"{name}: factors {factors} not all in {sorted(cols)}"
    for r in info["random"].split():
        # a random term is a factor or an interaction a:b of factors
        assert set(r.split(":")) <= set(factors), f"{name}: random {r} not among the factors"


def test_simulated_sets_say_so():
    info = dataset_info()
    for name in ("plants_pots", "glucose"):
        assert "SIMULATED" in info.at[name, "title"]
        assert "simulated" in info.at[name, "source"]


def test_plants_pots_layout():
    # 2 moisture levels x 2 pots x (3 and 2) seedlings
    df = ma.load_dataset("plants_pots")
    assert df.shape == (10, 4)
    sizes = df.groupby(["moisture", "pot"]).size()
    assert sorted(sizes.groupby(level=0).apply(lambda s: tuple(sorted(s))).tolist()) == \
        [(2, 3), (2, 3)]


def test_unknown_name_is_the_packages_error():
    with pytest.raises(ma.MixedAnovaError, match="unknown dataset 'nope'.*plants_pots"):
        ma.load_dataset("nope")


@pytest.mark.parametrize("name", [n for n in sorted(dataset_info().index)
                                  if not n.endswith("_newdata")])
def test_index_formula_fits_with_the_random_factors_it_names(name):
    import warnings

    info = dataset_info().loc[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.lmm(info["formula"], ma.load_dataset(name))
    assert res.converged, name
    assert set(res.ngroups) == set(info["random"].split())
