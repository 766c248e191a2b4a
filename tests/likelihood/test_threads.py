"""The BLAS thread limits of likelihood/threads.py when sections overlap in threads.

OpenBLAS's thread count is one setting per process.  The partitions of a Dask pass
run ``one_blas_thread()`` sections in a thread pool; each section used to restore
the count it had found on entry, so two overlapping sections left the process on
one BLAS thread for good (the 100M-row fit after the passes ran on one core).
"""
from __future__ import annotations

import threading

import pytest

from mixedanova.likelihood.threads import one_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"]


def test_overlapping_single_thread_sections_restore_the_count():
    before = _blas_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with one_blas_thread():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def second() -> None:
        a_in.wait(5)
        with one_blas_thread():  # enters while the first runs, leaves after it
            b_in.set()
            a_out.wait(5)

    ts = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert _blas_threads() == before  # the count found before both, after both
    with one_blas_thread():  # nested in one thread: the outer section restores
        with one_blas_thread():
            pass
        assert min(_blas_threads()) == 1
    assert _blas_threads() == before
