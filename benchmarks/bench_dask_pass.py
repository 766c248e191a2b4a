"""The cross-product pass of a Dask fit against the I/O floor (issue 19).

Run:  python benchmarks/bench_dask_pass.py [--rows 10000000] [--levels 200000,2000]
                                           [--files 20] [--folder PATH] [--threads 2]
                                           [--repeat 2] [--profile]

``y ~ 1 + x + (1|s) + (1|d)`` on simulated crossed data written as a Parquet folder
(``bench_dask.write_parquet``: ``--files`` files, one partition each; the folder is
kept when ``--folder`` is given, so later runs read the same files).  In one fresh
process with Dask's threaded scheduler (``--threads`` threads):

* the I/O floor: a plain Dask pass that reads ``y, x, s, d`` and sums them
  (``ddf.sum().compute()``), after one warm-up pass (the files are then in the page
  cache for every pass below);
* pass 2 of ``ma.lmm`` (:func:`~mixedanova.distributed.passes.cross_product_pass`:
  the partitions' cross-products summed in a tree), its rows per second and the
  ratio to the floor's rate (the issue's goal: >= 0.5);
* the map part alone (each partition's cross-products, none summed), the tree
  sum alone and the client's final merge of the level pairs alone
  (``ChunkSums.finished``), so that one sees where the pass spends its time;
* the peak resident memory before and after pass 2 (``ru_maxrss``).

Each pass is timed ``--repeat`` times; the best wall time is printed with the CPU
seconds of that run (``time.process_time``, all threads of the process).
``--profile`` also times the per-partition steps on one partition in the calling
thread (read, encode, pattern, numeric cross-products).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

FORMULA = "y ~ 1 + x + (1|s) + (1|d)"


def _rss_gb() -> float:
    """Peak resident set size of this process so far (GB; Linux reports kB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _best(fn, repeat: int) -> tuple[float, float]:
    best = (float("inf"), float("nan"))
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        w, cpu = time.perf_counter() - t, time.process_time() - c
        if w < best[0]:
            best = (w, cpu)
    return best


def profile_partition(folder: Path, encoder, repeat: int) -> None:
    """Per-step times of one partition's work in this thread (best of ``repeat``)."""
    import numpy as np
    import pandas as pd

    from mixedanova.distributed.passes import chunk_rows, partition_sums
    from mixedanova.likelihood.chunk_products import chunk_sums

    path = sorted(folder.iterdir())[0]
    steps: dict[str, float] = {}

    def clock(name, fn):
        best = float("inf")
        for _ in range(repeat):
            t = time.process_time()
            out = fn()
            best = min(best, time.process_time() - t)
        steps[name] = best
        return out

    df = clock("read (pd.read_parquet)", lambda: pd.read_parquet(path, columns=["y", "x", "s",
                                                                             "d"]))
    clock("sum of the 4 columns (floor's work)", lambda: df.sum())
    e = clock("encode (ChunkEncoder.encode)", lambda: encoder.encode(df))
    terms, y = chunk_rows(encoder, e)
    clock("cross-products (chunk_sums)", lambda: chunk_sums(terms, e.X, y, weights=e.weights))
    clock("partition_sums (all of it)", lambda: partition_sums(encoder, df))
    print(f"one partition ({len(df):,} rows, {path.name}), CPU seconds in this thread:")
    for k, v in steps.items():
        print(f"  {k:40s} {v * 1e3:8.1f} ms  ({len(df) / v / 1e6:7.1f} M rows/s)")
    del np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--levels", default="200000,2000")
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    import shutil
    import tempfile

    from bench_dask import write_parquet

    ns, nd = (int(v) for v in args.levels.split(","))
    tmp = None
    if args.folder:
        folder = Path(args.folder)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_dask_pass_")
        folder = Path(tmp) / "data"
    try:
        if not folder.exists():
            secs = write_parquet(folder, args.rows, ns, nd, args.files)
            size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            print(f"wrote {args.rows:,} rows ({ns:,} x {nd:,} levels) as {args.files} "
                  f"Parquet files, {size:.0f} MB, in {secs:.1f} s")
        run(folder, args)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def run(folder: Path, args) -> None:
    import dask
    import dask.dataframe as dd
    from dask import delayed

    import mixedanova
    from mixedanova.design.chunked import ChunkPlan
    from mixedanova.design.formula import parse_formula
    from mixedanova.distributed.passes import cross_product_pass, partition_sums, summary_pass

    print(f"mixedanova from {Path(mixedanova.__file__).parent}")
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        ddf = dd.read_parquet(str(folder), columns=["y", "x", "s", "d"])
        n = int(ddf.shape[0].compute())
        ddf.sum().compute()  # warm-up
        floor = _best(lambda: ddf.sum().compute(), args.repeat)
        plan = ChunkPlan.from_formula(parse_formula(FORMULA), ddf._meta)
        summary = summary_pass(plan, ddf)
        encoder = plan.encoder(summary)
        rss_before = _rss_gb()
        pass2 = _best(lambda: cross_product_pass(encoder, ddf), args.repeat)
        rss_pass = _rss_gb()
        enc = delayed(encoder, pure=True, traverse=False)
        parts = [delayed(partition_sums, pure=True)(enc, p) for p in ddf.to_delayed()]
        got = []
        maps = _best(lambda: got.append(dask.compute(*parts)), args.repeat)
        pieces = list(got[-1])
        got.clear()

        def tree():
            from mixedanova.distributed.passes import tree_sum
            return tree_sum([delayed(p) for p in pieces]).compute()

        red = _best(tree, args.repeat)
        summed = tree()
        fin = _best(lambda: summed.finished() if hasattr(summed, "finished") else summed,
                    args.repeat)
    print(f"{n:,} rows in {ddf.npartitions} partitions, threads={args.threads}: {FORMULA}")
    rate = lambda w: n / w / 1e6  # noqa: E731
    print(f"  I/O floor (read y, x, s, d and sum them): {floor[0]:.2f} s = "
          f"{rate(floor[0]):.2f} M rows/s (CPU {floor[1]:.2f} s)")
    print(f"  pass 2 (cross-products, tree sum):        {pass2[0]:.2f} s = "
          f"{rate(pass2[0]):.2f} M rows/s = {floor[0] / pass2[0]:.3f} of the floor's rate "
          f"(CPU {pass2[1]:.2f} s)")
    print(f"    peak RSS: {rss_before:.2f} GB before pass 2, {rss_pass:.2f} GB after it")
    print(f"    map only (read + per-partition sums):   {maps[0]:.2f} s (CPU {maps[1]:.2f} s)")
    print(f"    tree sum only (of the {len(pieces)} partition sums): {red[0]:.2f} s "
          f"(CPU {red[1]:.2f} s)")
    print(f"    finish only (merge of the pair keys in the client): {fin[0]:.2f} s "
          f"(CPU {fin[1]:.2f} s)")
    if args.profile:
        profile_partition(folder, encoder, args.repeat)


if __name__ == "__main__":
    main()
