"""BLAS threads and the InstEval-shaped fit (issue 11).

Run:  python benchmarks/bench_threads.py [--threads 1,2] [--repeats 3] [--profile]

For each thread count a fresh process is started with ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set (threadpoolctl is not a
dependency), and it prints:

* the median wall time of the whole fit ``ma.lmm("y ~ 1 + service + (1|s) +
  (1|d) + (1|dept)")`` on :func:`synthetic.insteval_like` and of the optimizer;
* per-call times of the pieces one evaluation is made of: the value alone,
  value and gradient, and LAPACK on a dense SPD matrix of the size of the
  crossed layout's Schur complement and larger (``dpotrf`` = the Cholesky in
  every evaluation, ``dpotri`` = the inverse the gradient needs);
* with ``--profile``, the cProfile top entries of the optimizer (1 thread).

The machine is shared: timings are noisy, and the process CPU time (user +
system) is printed next to the wall time, since a second BLAS thread that
spins shows up there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept)"


def _cpu() -> float:
    return time.process_time()  # all threads of this process


def _timed(fn, repeats: int) -> tuple[float, float]:
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(_cpu() - c)
    return statistics.median(walls), statistics.median(cpus)


def child(repeats: int, profile: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import warnings

    import numpy as np
    from scipy.linalg.lapack import dpotrf, dpotri

    import mixedanova as ma
    from synthetic import insteval_like

    warnings.simplefilter("ignore")
    df = insteval_like()
    out: dict = {}
    opt_s = []

    def fit():
        res = ma.lmm(FORMULA, df)
        opt_s.append(res.optimizer.seconds)
        return res

    out["fit"] = _timed(fit, repeats)
    out["optimizer_s"] = statistics.median(opt_s[1:])
    res = fit()
    out["evals"] = [int(res.optimizer.feval), int(getattr(res.optimizer, "geval", 0) or 0)]
    model = ma.LinearMixedModel.from_formula(FORMULA, df)
    dev = model.deviance_function(True)
    theta = np.asarray(res.state.theta, dtype=float)
    count = [0]

    def moved() -> np.ndarray:  # a new theta each call: nothing cached
        count[0] += 1
        return theta * (1.0 + 1e-9 * count[0])

    out["value"] = _timed(lambda: dev(moved()), 10 * repeats)
    out["value_and_gradient"] = _timed(lambda: dev.value_and_gradient(moved()), 10 * repeats)
    fac = dev.factor(theta)
    out["schur_size"] = int(fac.L.shape[0]) if hasattr(fac, "L") else 0
    rng = np.random.default_rng(0)
    out["lapack"] = {}
    for r in sorted({out["schur_size"] or 1145, 2500, 5000}):
        a = rng.normal(size=(r, r))
        spd = a @ a.T + r * np.eye(r)
        chol = dpotrf(spd, lower=1)[0]
        reps = max(2, int(10 * repeats * (1145 / r) ** 3))
        out["lapack"][r] = {"dpotrf": _timed(lambda: dpotrf(spd, lower=1), reps),
                            "dpotri": _timed(lambda: dpotri(chol, lower=1), reps)}
    if profile:
        import cProfile
        import io
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        ma.lmm(FORMULA, df)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
        out["profile"] = s.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats, args.profile)))
        return
    for k in args.threads.split(","):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=k, OMP_NUM_THREADS=k, MKL_NUM_THREADS=k)
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        if args.profile and k == "1":
            cmd.append("--profile")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"BLAS threads = {k}")
        print(f"  whole fit      {r['fit'][0]:.3f} s wall, {r['fit'][1]:.3f} s CPU; optimizer "
              f"{r['optimizer_s']:.3f} s; evaluations (value, gradient) {r['evals']}")
        for key in ("value", "value_and_gradient"):
            print(f"  {key:18s} {r[key][0] * 1e3:8.2f} ms wall, {r[key][1] * 1e3:8.2f} ms CPU")
        print(f"  (crossed layout's Schur complement: {r['schur_size']} x {r['schur_size']})")
        for n, d in r["lapack"].items():
            for key, (w, c) in d.items():
                print(f"  {key:7s} {n:>5}x{n:<5} {w * 1e3:9.2f} ms wall, {c * 1e3:9.2f} ms CPU")
        if "profile" in r:
            print(r["profile"])


if __name__ == "__main__":
    main()
