"""Fixtures of the Dask tests: every test runs on Dask's synchronous scheduler
unless it sets up a cluster of its own."""
from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield
