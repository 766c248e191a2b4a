"""Fixtures of the Dask tests: every test runs on Dask's synchronous scheduler
unless it sets up a cluster of its own.  The tests of a pandas frame set up chunk
by chunk (test_frame_fit.py) need no Dask and run without it; each Dask test
module skips itself when Dask is not installed."""
from __future__ import annotations

import pytest

try:
    import dask
except ImportError:  # the core install: only the pandas chunked set-up is tested
    dask = None


@pytest.fixture(autouse=True)
def _synchronous():
    if dask is None:
        yield
        return
    with dask.config.set(scheduler="synchronous"):
        yield
