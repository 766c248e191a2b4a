"""Set-up memory of an in-memory fit: rows summed in chunks or in one piece (issue 19).

Run:  python benchmarks/bench_setup_memory.py [--rows 10000000] [--levels 200000,2000]
                                              [--chunk-rows 1048576] [--frame-rows N]

``y ~ 1 + x + (1|s) + (1|d)`` on simulated crossed data
(``bench_crossed_scaling.make_data``).  In a fresh process: the data frame is
built, then ``LinearMixedModel.from_formula`` (the row-sized design) and
``deviance_function()`` (the cross-products and the engine's system; no
optimizer).  Prints the wall time of each stage and the process's peak RSS
(``ru_maxrss``) after each.  ``--chunk-rows`` sets
``mixedanova.likelihood.criterion.CHUNK_ROWS``: rows are summed that many at a
time (``0``: one piece, the path before chunked accumulation).  ``--frame-rows``
sets ``mixedanova.distributed.frame_fit.CHUNKED_ROWS``: a frame of that many rows
or more is set up chunk by chunk, without a row-sized design (default the
package's 2**21; ``0``: never, the row-sized design as before).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

FORMULA = "y ~ 1 + x + (1|s) + (1|d)"


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(n: int, ns: int, nd: int, chunk: int, frame_rows: int | None = None) -> dict:
    from bench_crossed_scaling import make_data

    import mixedanova as ma
    from mixedanova.likelihood import criterion

    criterion.CHUNK_ROWS = chunk if chunk > 0 else 1 << 62
    if frame_rows is not None:
        from mixedanova.distributed import frame_fit
        frame_fit.CHUNKED_ROWS = frame_rows if frame_rows > 0 else 1 << 62
    out = {"mixedanova": str(Path(ma.__file__).parent)}
    t = time.perf_counter()
    df = make_data(n, ns, nd)
    out["data_seconds"], out["data_rss_gb"] = time.perf_counter() - t, _rss_gb()
    t = time.perf_counter()
    model = ma.LinearMixedModel.from_formula(FORMULA, df)
    out["design_seconds"], out["design_rss_gb"] = time.perf_counter() - t, _rss_gb()
    out["chunked"] = getattr(model, "chunked", None) is not None
    t = time.perf_counter()
    dev = model.deviance_function(True)
    out["crossprod_seconds"], out["crossprod_rss_gb"] = time.perf_counter() - t, _rss_gb()
    t = time.perf_counter()
    out["criterion_at_start"] = float(dev(dev.start))
    out["one_evaluation_seconds"] = time.perf_counter() - t
    out["peak_rss_gb"] = _rss_gb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--levels", default="200000,2000")
    ap.add_argument("--chunk-rows", type=int, default=1 << 20)
    ap.add_argument("--frame-rows", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ns, nd = (int(v) for v in args.levels.split(","))
    if args.child:
        print(json.dumps(child(args.rows, ns, nd, args.chunk_rows, args.frame_rows)))
        return
    extra = [] if args.frame_rows is None else ["--frame-rows", str(args.frame_rows)]
    r = subprocess.run([sys.executable, __file__, "--child", "--rows", str(args.rows),
                        "--levels", args.levels, "--chunk-rows", str(args.chunk_rows)] + extra,
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"child failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    o = json.loads(r.stdout.strip().splitlines()[-1])
    how = f"chunks of {args.chunk_rows:,} rows" if args.chunk_rows > 0 else "one piece"
    print(f"{args.rows:,} rows, levels {ns:,} x {nd:,}: {FORMULA}; cross-products in {how}")
    print(f"  (mixedanova from {o['mixedanova']})")
    print(f"  data frame:        {o['data_seconds']:6.1f} s, peak RSS {o['data_rss_gb']:.2f} GB")
    what = "set-up (chunked)" if o.get("chunked") else "design (rows):  "
    print(f"  {what}:  {o['design_seconds']:6.1f} s, peak RSS "
          f"{o['design_rss_gb']:.2f} GB")
    print(f"  cross-products:    {o['crossprod_seconds']:6.1f} s, peak RSS "
          f"{o['crossprod_rss_gb']:.2f} GB")
    print(f"  one evaluation:    {o['one_evaluation_seconds']:6.1f} s (criterion at the start "
          f"{o['criterion_at_start']:.6f}), peak RSS {o['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
