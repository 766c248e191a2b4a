"""Fits through Dask: the in-memory fit's numbers, and Parquet out of core (issue 19).

Run:  python benchmarks/bench_dask.py memory  [--rows 1000000] [--levels 100000,10000]
      python benchmarks/bench_dask.py parquet [--rows 10000000] [--levels 200000,2000]
                                              [--files 20] [--folder PATH] [--no-fit]
                                              [--in-memory] [--cold]

``memory``: ``y ~ 1 + x + (1|s) + (1|d)`` on simulated crossed data
(``bench_crossed_scaling.make_data``), fitted in memory (``ma.lmm(formula, df)``)
and through Dask (``dd.from_pandas(df, npartitions=16)``, local threads), each in a
fresh process: wall time, peak RSS, and the differences of the REML criterion,
theta and the fixed effects.

``parquet``: the same model written as a Parquet folder (``--files`` files, written
piece by piece so that the writer never holds the data), then in one fresh process
with Dask's threaded scheduler (2 threads):

* the I/O floor: a plain Dask pass reading the four columns and summing them
  (timed after one warm-up pass, so every pass below reads from the page cache);
* pass 1 (codebook) and pass 2 (cross-products) of ``ma.lmm`` on
  ``dd.read_parquet(folder)``, timed separately, rows per second of pass 2
  against the floor;
* the optimizer and the rest of the fit on the summed system;
* the process's peak RSS (``ru_maxrss``: all passes run in this process).

``--cold`` also times the I/O floor and pass 2 each after emptying the page
cache (Linux, root): data much larger than the memory are read from the disk
on every pass, so that is the I/O floor of a real out-of-core fit.
``--no-fit`` stops after the passes.  ``--in-memory`` also fits the same rows
read into one pandas DataFrame (``pd.read_parquet``), in a fresh process, and
prints its time and peak RSS and the differences from the Dask fit, and the peak
RSS after reading the frame and after the set-up
(``LinearMixedModel.from_formula``; a frame of 2**21 rows or more is set up chunk
by chunk, ``mixedanova/distributed/frame_fit.py``).  Every
time is printed as wall and CPU seconds (``time.process_time``, all threads of
the process): on a shared machine the wall time is mostly waiting.

At 10M rows over 200k x 2k levels the crossed layout's ``C C'`` has ~2.5e8 pairs
of entries sharing a first-term level; it is a sparse product at each evaluation
(not a stored pair structure, which needed 24 GB), so the whole fit runs.  At
100M rows over 100k x 10k levels (~4.5e10 pairs of entries, 95M level pairs in the
summed ``Z_s'Z_d``) the layout forms ``C C'`` by dense blocks of ``s``-levels
(``likelihood/crossed_blocked.py``): about 110-260 s per factorization on this
machine, so the fit takes 20-30 min after the passes; ``bench_engine_large.py``
times that part alone from saved sums.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

FORMULA = "y ~ 1 + x + (1|s) + (1|d)"


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child_memory(n: int, ns: int, nd: int, how: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import warnings

    from bench_crossed_scaling import make_data

    import mixedanova as ma

    df = make_data(n, ns, nd)
    base = _rss_gb()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "dask":
            import dask
            import dask.dataframe as dd

            ddf = dd.from_pandas(df, npartitions=16)
            with dask.config.set(scheduler="threads", num_workers=2):
                res = ma.lmm(FORMULA, ddf)
        else:
            res = ma.lmm(FORMULA, df)
    secs = time.perf_counter() - t
    return {"seconds": secs, "objective": res.reml_criterion,
            "theta": [float(v) for v in res.theta],
            "beta": [float(v) for v in res.fe_params],
            "se": [float(v) for v in res.bse_fe],
            "optimizer_seconds": float(getattr(res.optimizer, "seconds", float("nan"))),
            "data_rss_gb": base, "peak_rss_gb": _rss_gb()}


def write_parquet(folder: Path, n: int, ns: int, nd: int, files: int, seed: int = 3) -> float:
    """Write the data piece by piece (every level used; rows at random over pairs)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    us = rng.normal(0, 0.5, ns)
    ud = rng.normal(0, 0.8, nd)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    sizes = np.full(files, n // files)
    sizes[: n % files] += 1
    for i, m in enumerate(sizes):
        s = rng.integers(0, ns, m)
        d = rng.integers(0, nd, m)
        if i == 0:  # every level appears
            s[:ns] = np.arange(ns)
            d[:nd] = np.arange(nd)
        x = rng.normal(size=m)
        y = 1.0 + 0.3 * x + us[s] + ud[d] + rng.normal(size=m)
        pd.DataFrame({"y": y, "x": x, "s": s.astype(np.int32), "d": d.astype(np.int32)}) \
            .to_parquet(folder / f"part-{i:04d}.parquet", index=False)
    return time.perf_counter() - t


def child_in_memory(folder: str) -> dict:
    """The same rows read into one pandas DataFrame and fitted in memory."""
    sys.path.insert(0, str(ROOT))
    import warnings

    import pandas as pd

    import mixedanova as ma

    t, c = time.perf_counter(), time.process_time()
    df = pd.read_parquet(folder, columns=["y", "x", "s", "d"])
    read = time.perf_counter() - t
    frame_rss = _rss_gb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # ma.lmm(FORMULA, df) in its two steps: the set-up, then the fit
        model = ma.LinearMixedModel.from_formula(FORMULA, df)
        setup = time.perf_counter() - t - read
        setup_rss = _rss_gb()
        res = model.fit()
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
            "read_seconds": read, "setup_seconds": setup, "frame_rss_gb": frame_rss,
            "setup_rss_gb": setup_rss, "chunked": getattr(model, "chunked", None) is not None,
            "objective": res.reml_criterion,
            "theta": [float(v) for v in res.theta], "beta": [float(v) for v in res.fe_params],
            "peak_rss_gb": _rss_gb()}


def drop_page_cache() -> None:
    """Empty the kernel's page cache (Linux, root), so that the next pass reads the
    files from the disk: data much larger than the memory are never cached."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        sys.exit(f"--cold needs root on Linux (writing /proc/sys/vm/drop_caches): {err}")


def child_parquet(folder: str, threads: int, fit: bool = True, cold: bool = False) -> dict:
    sys.path.insert(0, str(ROOT))
    import warnings

    import dask
    import dask.dataframe as dd

    from mixedanova.distributed.dask_fit import DistributedModel

    out = {}
    with dask.config.set(scheduler="threads", num_workers=threads):
        ddf = dd.read_parquet(folder, columns=["y", "x", "s", "d"])
        out["partitions"] = ddf.npartitions
        ddf.sum().compute()  # warm-up: the files in the page cache for every pass below
        t, c = time.perf_counter(), time.process_time()
        sums = ddf.sum().compute()
        out["floor_seconds"] = time.perf_counter() - t
        out["floor_cpu"] = time.process_time() - c
        out["rows"] = int(ddf.shape[0].compute())
        out["floor_rss_gb"] = _rss_gb()
        # the two passes of the fit, timed one by one (what DistributedModel.from_formula runs)
        from mixedanova.design.chunked import ChunkPlan
        from mixedanova.design.formula import parse_formula
        from mixedanova.distributed.passes import cross_product_pass, summary_pass

        plan = ChunkPlan.from_formula(parse_formula(FORMULA), ddf._meta)
        t, c = time.perf_counter(), time.process_time()
        summary = summary_pass(plan, ddf)
        out["pass1_seconds"] = time.perf_counter() - t
        out["pass1_cpu"] = time.process_time() - c
        encoder = plan.encoder(summary)
        t, c = time.perf_counter(), time.process_time()
        cross_product_pass(encoder, ddf)
        out["pass2_seconds"] = time.perf_counter() - t
        out["pass2_cpu"] = time.process_time() - c
        if cold:  # the same two passes, each from the disk
            drop_page_cache()
            t, c = time.perf_counter(), time.process_time()
            ddf.sum().compute()
            out["cold_floor_seconds"] = time.perf_counter() - t
            out["cold_floor_cpu"] = time.process_time() - c
            drop_page_cache()
            t, c = time.perf_counter(), time.process_time()
            cross_product_pass(encoder, ddf)
            out["cold_pass2_seconds"] = time.perf_counter() - t
            out["cold_pass2_cpu"] = time.process_time() - c
        out["passes_rss_gb"] = _rss_gb()
        if not fit:
            out["peak_rss_gb"] = _rss_gb()
            return out
        # the whole fit as a user runs it
        t, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = DistributedModel.from_formula(FORMULA, ddf)
            t_setup = time.perf_counter() - t
            res = model.fit()
        out["fit_seconds"] = time.perf_counter() - t
        out["fit_cpu"] = time.process_time() - c
        out["fit_setup_seconds"] = t_setup
        out["optimizer_seconds"] = float(getattr(res.optimizer, "seconds", float("nan")))
        out["objective"] = res.reml_criterion
        out["theta"] = [float(v) for v in res.theta]
        out["beta"] = [float(v) for v in res.fe_params]
        out["converged"] = bool(res.converged)
        out["nlev"] = [int(b.nlev) for b in res.design.blocks]
        out["pairs"] = int(len(model.cp.pairs[(1, 0)].keys))
    del sums
    out["peak_rss_gb"] = _rss_gb()
    return out


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["memory", "parquet"])
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--levels", default=None)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folder", default=None, help="Parquet folder (kept if given)")
    ap.add_argument("--no-fit", action="store_true",
                    help="the I/O floor and the two passes only (no optimizer)")
    ap.add_argument("--in-memory", action="store_true",
                    help="also fit the rows read into one pandas DataFrame")
    ap.add_argument("--cold", action="store_true",
                    help="also time the floor and pass 2 from the disk (drops the page "
                         "cache first: Linux, root)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "memory-mem" or args.child == "memory-dask":
        ns, nd = (int(v) for v in args.levels.split(","))
        print(json.dumps(child_memory(args.rows, ns, nd, args.child.split("-")[1])))
        return
    if args.child == "in-memory":
        print(json.dumps(child_in_memory(args.folder)))
        return
    if args.child == "parquet":
        print(json.dumps(child_parquet(args.folder, args.threads, not args.no_fit,
                                       args.cold)))
        return
    if args.mode == "memory":
        rows = args.rows or 1_000_000
        levels = args.levels or "100000,10000"
        common = ["memory", "--rows", str(rows), "--levels", levels]
        a = _run(common + ["--child", "memory-mem"])
        b = _run(common + ["--child", "memory-dask"])
        import numpy as np
        print(f"{rows:,} rows, levels {levels}: {FORMULA}")
        print(f"  in memory: {a['seconds']:.1f} s, peak RSS {a['peak_rss_gb']:.2f} GB "
              f"(data {a['data_rss_gb']:.2f} GB)")
        print(f"  Dask (16 partitions, 2 threads): {b['seconds']:.1f} s, peak RSS "
              f"{b['peak_rss_gb']:.2f} GB (data {b['data_rss_gb']:.2f} GB)")
        rel = abs(b["objective"] - a["objective"]) / abs(a["objective"])
        print(f"  REML criterion {a['objective']:.10f} vs {b['objective']:.10f} "
              f"(rel. diff {rel:.2e})")
        print(f"  theta max rel. diff "
              f"{np.max(np.abs(np.subtract(b['theta'], a['theta'])) / np.abs(a['theta'])):.2e}"
              f", fixed effects max abs diff "
              f"{np.max(np.abs(np.subtract(b['beta'], a['beta']))):.2e}, SEs max rel diff "
              f"{np.max(np.abs(np.subtract(b['se'], a['se'])) / np.abs(a['se'])):.2e}")
        return
    rows = args.rows or 10_000_000
    ns, nd = (int(v) for v in (args.levels or "200000,2000").split(","))
    tmp = None
    if args.folder:
        folder = Path(args.folder)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_dask_")
        folder = Path(tmp) / "data"
    try:
        if not folder.exists():
            secs = write_parquet(folder, rows, ns, nd, args.files)
            size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            print(f"wrote {rows:,} rows ({ns:,} x {nd:,} levels) as {args.files} Parquet "
                  f"files, {size:.0f} MB, in {secs:.1f} s")
        r = _run(["parquet", "--child", "parquet", "--folder", str(folder),
                  "--threads", str(args.threads)] + (["--no-fit"] if args.no_fit else [])
                 + (["--cold"] if args.cold else []))
        m = _run(["parquet", "--child", "in-memory", "--folder", str(folder)]) \
            if args.in_memory else None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    n = r["rows"]
    print(f"{n:,} rows in {r['partitions']} partitions, Dask threads={args.threads}: {FORMULA}")
    print(f"  I/O floor (read y, x, s, d and sum them): {r['floor_seconds']:.1f} s = "
          f"{n / r['floor_seconds'] / 1e6:.2f} M rows/s (CPU {r['floor_cpu']:.1f} s)")
    print(f"  pass 1 (codebook): {r['pass1_seconds']:.1f} s = "
          f"{n / r['pass1_seconds'] / 1e6:.2f} M rows/s (CPU {r['pass1_cpu']:.1f} s)")
    print(f"  pass 2 (cross-products, tree sum): {r['pass2_seconds']:.1f} s = "
          f"{n / r['pass2_seconds'] / 1e6:.2f} M rows/s "
          f"({r['floor_seconds'] / r['pass2_seconds']:.2f} of the I/O floor's rate; CPU "
          f"{r['pass2_cpu']:.1f} s, {r['floor_cpu'] / r['pass2_cpu']:.2f} of the floor's)")
    if args.cold:
        print(f"  from the disk (page cache dropped before each): I/O floor "
              f"{r['cold_floor_seconds']:.1f} s = {n / r['cold_floor_seconds'] / 1e6:.2f} M "
              f"rows/s; pass 2 {r['cold_pass2_seconds']:.1f} s = "
              f"{n / r['cold_pass2_seconds'] / 1e6:.2f} M rows/s "
              f"({r['cold_floor_seconds'] / r['cold_pass2_seconds']:.2f} of the floor's rate; "
              f"CPU {r['cold_pass2_cpu']:.1f} s)")
    if args.no_fit:
        print(f"  peak RSS: {r['peak_rss_gb']:.2f} GB (after the I/O floor "
              f"{r['floor_rss_gb']:.2f} GB)")
        return
    print(f"  whole fit: {r['fit_seconds']:.1f} s, CPU {r['fit_cpu']:.1f} s "
          f"(both passes {r['fit_setup_seconds']:.1f} s, "
          f"optimizer {r['optimizer_seconds']:.1f} s); levels {r['nlev']}, "
          f"{r['pairs']:,} level pairs; converged={r['converged']}")
    print(f"  REML criterion {r['objective']:.6f}, theta {r['theta']}, beta {r['beta']}")
    print(f"  peak RSS: {r['peak_rss_gb']:.2f} GB (after the I/O floor "
          f"{r['floor_rss_gb']:.2f} GB, after the passes {r['passes_rss_gb']:.2f} GB)")
    if m is not None:
        import numpy as np
        rel = abs(m["objective"] - r["objective"]) / abs(m["objective"])
        print(f"  in memory (pd.read_parquet, ma.lmm): {m['seconds']:.1f} s, CPU "
              f"{m['cpu_seconds']:.1f} s, peak RSS {m['peak_rss_gb']:.2f} GB; REML criterion "
              f"rel. diff {rel:.2e}, theta max abs diff "
              f"{np.max(np.abs(np.subtract(m['theta'], r['theta']))):.2e}")
        if "setup_seconds" in m:
            print(f"    read {m['read_seconds']:.1f} s (peak RSS {m['frame_rss_gb']:.2f} GB), "
                  f"set-up {m['setup_seconds']:.1f} s (peak RSS {m['setup_rss_gb']:.2f} GB; "
                  f"{'chunked' if m['chunked'] else 'row-sized design'})")


if __name__ == "__main__":
    main()
