"""Cost of one profiled-deviance evaluation, crossed layout, against the row count (issue 11).

Run:  python benchmarks/bench_crossed_scaling.py [--rows 100000,1000000] [--levels 5000,500]
                                                 [--repeats 5] [--profile]

For each row count a fresh process builds ``y ~ 1 + x + (1|s) + (1|d)`` with
``levels[0]`` levels of ``s`` and ``levels[1]`` of ``d`` (every level used,
rows drawn at random over the pairs), forms ``model.deviance_function(True)``
(set-up, timed apart) and times ``dev(theta)`` (one evaluation; theta moved
slightly between calls so nothing is reused) and ``dev.value_and_gradient``.
It prints the number of stored pairs of entries sharing a first-term level
(what the evaluation loops over), the peak RSS of the process, and with
``--profile`` the cProfile top entries of a few evaluations.  Issue 11 target:
the evaluation at 1M rows costs <= 2 x the one at 100k rows.  Noisy shared machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(n: int, ns: int, nd: int, seed: int = 3):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    s = np.concatenate([np.arange(ns), rng.integers(0, ns, n - ns)])
    d = np.concatenate([np.arange(nd), rng.integers(0, nd, n - nd)])
    rng.shuffle(s)
    x = rng.normal(size=n)
    y = 1.0 + 0.3 * x + rng.normal(0, 0.5, ns)[s] + rng.normal(0, 0.8, nd)[d] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "s": pd.Categorical(s), "d": pd.Categorical(d)})


def _median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def child(n: int, ns: int, nd: int, repeats: int, profile: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import mixedanova as ma

    df = make_data(n, ns, nd)
    model = ma.LinearMixedModel.from_formula("y ~ 1 + x + (1|s) + (1|d)", df)
    t = time.perf_counter()
    dev = model.deviance_function(True)
    setup = time.perf_counter() - t
    sysm = dev.system
    out = {"rows": n, "setup_s": setup, "system": type(sysm).__name__,
           "pairs": int(len(getattr(sysm, "pa", []))),
           "entries": int(len(getattr(sysm, "rows", []))),
           "schur": int(getattr(sysm, "r", 0))}
    theta = np.array([0.5, 0.8])
    count = [0]

    def moved():
        count[0] += 1
        return theta * (1.0 + 1e-6 * count[0])

    for key, fn in (("value", lambda: dev(moved())),
                    ("value_and_gradient", lambda: dev.value_and_gradient(moved()))):
        out[key] = _median_time(fn, repeats)
    if getattr(sysm, "G_op", None) is not None:
        # the dense alternative for C C' (scalar first term): B = A_R0 as a dense
        # r1 x l0 matrix, C C' = B diag(w) B' (one dsyrk-sized product, flat in n);
        # checked against the pair operator on the same weights
        r1, l0 = sysm.r1, sysm.l0
        B = np.zeros((sysm.r, l0))
        B[sysm.rows, sysm.levels] = sysm.vals[:, 0]
        w = np.random.default_rng(1).uniform(0.1, 1.0, l0)
        ref = sysm.G_op @ w
        dense = (B[:r1] * w) @ B[:r1].T
        hi, lo = np.divmod(sysm.G_rows, sysm.r)
        out["dense_check"] = float(np.max(np.abs(dense[hi, lo] - ref)) / np.max(np.abs(ref)))
        Bt = np.ascontiguousarray(B[:r1])
        P = np.eye(r1)
        # grouped by weight: w_l = T0_l^2 depends on theta only through A00_l (the level's
        # count for an intercept), so C C' = sum_c w(c) M_c with M_c = sum_{l: A00_l = c}
        # b_l b_l' formed once; an evaluation is one weighted sum of n_c r1 x r1 matrices
        a00 = sysm.A00[:, 0, 0]
        uniq, grp = np.unique(a00, return_inverse=True)
        t = time.perf_counter()
        Ms = np.stack([Bt[:, grp == c] @ Bt[:, grp == c].T for c in range(len(uniq))])
        out["grouped_setup"] = time.perf_counter() - t
        out["grouped_count"] = int(len(uniq))
        wc = np.random.default_rng(2).uniform(0.1, 1.0, len(uniq))
        out["grouped_check"] = float(np.max(np.abs(np.tensordot(wc, Ms, 1)
                                                   - (Bt * wc[grp]) @ Bt.T)))
        for key, fn in (("pairs_op", lambda: sysm.G_op @ np.column_stack([w, w])),
                        ("dense_CCt", lambda: (Bt * w) @ Bt.T),
                        ("dense_grad_trace", lambda: np.sum(Bt * (P @ Bt), axis=0) @ w),
                        ("grouped_CCt", lambda: np.tensordot(wc, Ms, 1)),
                        ("grouped_grad_trace", lambda: Ms.reshape(len(wc), -1) @ P.ravel())):
            out[key] = _median_time(fn, repeats)
    if profile:
        import cProfile
        import io
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for _ in range(3):
            dev(moved())
            dev.value_and_gradient(moved())
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(12)
        out["profile"] = s.getvalue()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--levels", default="5000,500")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    ns, nd = (int(v) for v in args.levels.split(","))
    if args.child:
        print(json.dumps(child(args.child, ns, nd, args.repeats, args.profile)))
        return
    base = None
    for n in (int(v) for v in args.rows.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--levels", args.levels,
               "--repeats", str(args.repeats)] + (["--profile"] if args.profile else [])
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
        base = base or r["value"]
        print(f"{n:>9,} rows, {ns} x {nd} levels ({r['system']}): set-up {r['setup_s']:.2f} s, "
              f"{r['entries']:,} entries of Z_d'Z_s, {r['pairs']:,} pairs, "
              f"Schur {r['schur']} x {r['schur']}")
        print(f"           one evaluation {r['value'] * 1e3:.1f} ms "
              f"({r['value'] / base:.2f} x the first row count; target <= 2), "
              f"value + gradient {r['value_and_gradient'] * 1e3:.1f} ms, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
        if "dense_check" in r:
            print(f"           C C' by the pair operator (value + gradient weights) "
                  f"{r['pairs_op'] * 1e3:.1f} ms; dense B diag(w) B' {r['dense_CCt'] * 1e3:.1f} ms "
                  f"+ gradient trace {r['dense_grad_trace'] * 1e3:.1f} ms "
                  f"(same numbers to {r['dense_check']:.1e})")
            print(f"           grouped by level weight ({r['grouped_count']} distinct counts; "
                  f"set-up {r['grouped_setup'] * 1e3:.0f} ms): "
                  f"C C' {r['grouped_CCt'] * 1e3:.1f} ms "
                  f"+ gradient trace {r['grouped_grad_trace'] * 1e3:.1f} ms")
        if "profile" in r:
            print(r["profile"])


if __name__ == "__main__":
    main()
