"""How many BLAS threads the engine's dense algebra runs on.

The profiled criterion is evaluated dozens of times on matrices of a few
hundred to a few thousand rows.  OpenBLAS's second thread gains little there
(a 1145 x 1145 Cholesky: 16 ms on one thread, 15 ms on two, on this project's
2-core machine) and costs a great deal when anything else runs on the cores:
its threads spin at every synchronisation point.  Measured on the
InstEval-shaped fit: 1.2 s on one thread against 1.6 s on two with the machine
idle, and 1.3 s against 14-80 s with one other busy process
(``benchmarks/bench_threads.py``, ``benchmarks/bench_fit.py``).

So fits whose dense Schur complement has order ``SMALL`` to ``LARGE`` run their
BLAS on one thread: below, OpenBLAS does not thread anyway (nested layouts do
batched small-matrix algebra); above, a second thread pays.  The limit is set through
threadpoolctl when it is installed (``pip install mixedanova[fast]``; it is in
the test extra); without it nothing is changed, and setting
``OPENBLAS_NUM_THREADS=1`` (or ``OMP_NUM_THREADS=1``) before starting Python
has the same effect.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator

from .system import dense_order

__all__ = ["engine_threads", "small_fit_threads", "one_blas_thread", "SMALL", "LARGE"]

SMALL = 200   # below this order OpenBLAS does not thread (nested layouts: batched q x q)
LARGE = 3000  # a dense block of at least this order may use every BLAS thread


@functools.lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the loaded BLAS libraries (found once), or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it the caller's setting stands
        return None
    return ThreadpoolController()


_LOCK = threading.Lock()
_SINGLE = {"depth": 0, "limiter": None}  # sections on one BLAS thread now running


@contextlib.contextmanager
def _single_thread(controller) -> Iterator[None]:
    """One BLAS thread for the block.  OpenBLAS's thread count is one setting for
    the whole process, so sections that overlap (the partitions of a Dask pass run
    in threads) share one limit: the first to enter sets it, the last to leave
    restores what was there before (each restoring its own saved value would leave
    the process on one thread whenever two overlap)."""
    with _LOCK:
        if _SINGLE["depth"] == 0:
            _SINGLE["limiter"] = controller.limit(limits=1, user_api="blas")
        _SINGLE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _SINGLE["depth"] -= 1
            if _SINGLE["depth"] == 0:
                _SINGLE["limiter"].restore_original_limits()
                _SINGLE["limiter"] = None


@contextlib.contextmanager
def engine_threads(system) -> Iterator[None]:
    """Run the block on one BLAS thread when ``system``'s dense part is of
    moderate order (see the module docstring)."""
    order = dense_order(system)  # nested: no dense part
    controller = _controller() if SMALL <= order < LARGE else None
    if controller is None:
        yield
        return
    with _single_thread(controller):
        yield


@contextlib.contextmanager
def small_fit_threads(system) -> Iterator[None]:
    """Run the block on one BLAS thread unless ``system``'s dense part has order
    ``LARGE`` or more: for the many small refits of a profile, where every
    matrix is small and a second thread only spins (sleepstudy's profile
    intervals: see ``benchmarks/bench_profile.py``)."""
    controller = _controller() if dense_order(system) < LARGE else None
    if controller is None:
        yield
        return
    with _single_thread(controller):
        yield


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block on one BLAS thread (when threadpoolctl is installed): for
    the cross-products of one chunk of rows, thin matrices whose products a
    second thread only slows, while the chunks themselves run in parallel
    (Dask's threads or workers)."""
    controller = _controller()
    if controller is None:
        yield
        return
    with _single_thread(controller):
        yield
