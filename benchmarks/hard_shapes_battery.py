"""Battery references for the three hard shapes (``tests/_hard_shapes.py``).

Run:  PYTHONPATH=. python benchmarks/hard_shapes_battery.py [--sets N] [--first-seed S]
          [--out tests/data/hard_shapes.json] [--check]

For each set the best optimum is found independently of the default fit path:
the package's criterion as a plain function of theta (``deviance_function`` on
the standardized response), minimized by scipy's Nelder-Mead, Powell and
L-BFGS-B (finite differences) from lme4's start, random starts (these two with
all three methods) and boundary starts (each template diagonal at 0,
correlations at +-1, and for the intercept-free shape the mean put on either
random intercept; Powell), the best result
polished by a second round of Nelder-Mead and Powell.  The lowest value is the
reference.  ``--check`` also fits every set by default (``ma.lmm``) and prints
whether it passes the pass rule.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _hard_shapes import SHAPES, make_set, score, standardized_deviance  # noqa: E402


def _starts(dev, rng: np.random.Generator, shape: str, n_random: int) -> list[np.ndarray]:
    layout = dev.layout
    lower = layout.lower
    k = len(lower)
    diag = lower == 0.0
    base = np.where(diag, 1.0, 0.0)
    out = [base]
    for _ in range(n_random):
        x = np.where(diag, np.exp(rng.uniform(np.log(1e-2), np.log(30.0), k)),
                     rng.normal(0.0, 3.0, k))
        out.append(x)
    # boundary starts: each diagonal at 0; rank-one templates with correlation +-1
    for i in np.flatnonzero(diag):
        x = base.copy()
        x[i] = 0.0
        out.append(x)
    for T in range(len(layout.qs)):
        if layout.qs[T] != 2:
            continue
        off = layout.offsets[T]
        for sign in (1.0, -1.0):
            for big in (1.0, 10.0, 100.0):
                x = base.copy()
                x[off:off + 3] = [big, sign * big, 0.0]
                out.append(x)
                x = base.copy()
                x[off:off + 3] = [0.0, 0.0, big]
                out.append(x)
    if shape == "intercept_free":  # the mean on one random intercept or the other
        names = layout.names
        for big in (10.0, 50.0, 200.0):
            for who in ("a.(Intercept)", "b.(Intercept)"):
                x = base.copy()
                x[names.index(who)] = big
                out.append(x)
    return out


def _local(fun, x0, method, bounds):
    opts = {"Nelder-Mead": {"maxfev": 4000, "xatol": 1e-10, "fatol": 1e-12},
            "Powell": {"maxfev": 4000, "xtol": 1e-10, "ftol": 1e-13},
            "L-BFGS-B": {"maxfun": 4000, "ftol": 1e-15, "gtol": 1e-10}}[method]
    try:
        r = minimize(fun, x0, method=method, bounds=bounds, options=opts)
        return np.asarray(r.x), float(r.fun)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return x0, float("inf")


def battery(s, n_random: int = 4) -> dict:
    """The best optimum over the battery: ``{"objective", "theta", "winner"}``."""
    dev, offset = standardized_deviance(s)
    lower = dev.layout.lower
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def fun(x):
        v = dev(np.maximum(np.asarray(x, dtype=float), lower))
        return v if np.isfinite(v) else 1e300

    rng = np.random.default_rng(1000 + s.seed)
    results = []
    for i, x0 in enumerate(_starts(dev, rng, s.shape, n_random)):
        for m in (("Nelder-Mead", "Powell", "L-BFGS-B") if i <= n_random else ("Powell",)):
            x, f = _local(fun, x0, m, bounds)
            results.append((f, x, f"{m}#{i}"))
    results.sort(key=lambda t: t[0])
    best_f, best_x, winner = results[0]
    for _ in range(2):  # polish the few best
        for f0, x0, w in results[:3]:
            for m in ("Nelder-Mead", "Powell"):
                x, f = _local(fun, x0, m, bounds)
                if f < best_f:
                    best_f, best_x, winner = f, x, f"polish {m} of {w}"
        results[0] = (best_f, best_x, winner)
    theta = np.maximum(best_x, lower)
    return {"objective": float(dev(theta)) + offset, "theta": theta.tolist(),
            "winner": winner}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=10, help="sets per shape")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--shape", choices=list(SHAPES))
    ap.add_argument("--out", help="write the references here (JSON)")
    ap.add_argument("--check", action="store_true", help="also score the default fit")
    ap.add_argument("--random-starts", type=int, default=4)
    args = ap.parse_args(argv)
    import mixedanova as ma

    warnings.simplefilter("ignore")
    out = []
    fails = 0
    for shape in ([args.shape] if args.shape else list(SHAPES)):
        for seed in range(args.first_seed, args.first_seed + args.sets):
            s = make_set(shape, seed)
            t0 = time.perf_counter()
            ref = battery(s, args.random_starts)
            line = (f"{shape:15s} seed {seed:4d} n {len(s.data):4d} ref {ref['objective']:.12g}"
                    f" ({time.perf_counter() - t0:.1f} s, {ref['winner']})")
            if args.check:
                res = ma.lmm(s.formula, s.data, method=s.method)
                ok, obj, rep = score(s, ref["objective"], res)
                fails += not ok
                tol = 1e-7 * max(1.0, abs(ref["objective"]))
                line += (f" fit {'pass' if ok else 'FAIL'} margin {(obj - ref['objective']) / tol:.3g}"
                         f" reported-objective {(rep - obj) / tol:.3g} tol conv={res.converged}")
            print(line, flush=True)
            out.append({"shape": shape, "seed": seed, "formula": s.formula,
                        "method": s.method, "center": s.center, "scale": s.scale, **ref})
            if args.out:  # after each set, merged with the sets already there
                _write(Path(args.out), out[-1])
    if args.check:
        print(f"default fit: {len(out) - fails}/{len(out)} pass")
    return 0


def _write(path: Path, entry: dict) -> None:
    sets = json.loads(path.read_text())["sets"] if path.exists() else []
    sets = [e for e in sets if (e["shape"], e["seed"]) != (entry["shape"], entry["seed"])]
    sets.append(entry)
    order = list(SHAPES)
    sets.sort(key=lambda e: (order.index(e["shape"]), e["seed"]))
    path.write_text(json.dumps({"generator": "tests/_hard_shapes.py",
                                "script": "benchmarks/hard_shapes_battery.py",
                                "sets": sets}, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
