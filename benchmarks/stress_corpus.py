"""Run the whole stress corpus (150 simulated sets, ``tests/data/stress``) and score it.

Run:  python benchmarks/stress_corpus.py [--shape a] [--id ID] [--verbose] [--optimizer M]

Prints the pass count per shape, every failure (silent ones -- ``converged=True`` --
marked), the sets where the fit ends below lme4's best optimum, and the fit times.
The pass rule is the corpus README's (see ``tests/_stress.py``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _stress import load_manifest, score_set  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", help="only sets of this shape letter (a-i)")
    ap.add_argument("--id", help="only this set")
    ap.add_argument("--optimizer", help="optimizer passed to lmm()")
    ap.add_argument("--verbose", action="store_true", help="one line per set")
    args = ap.parse_args(argv)
    sets = load_manifest()
    if args.shape:
        sets = [e for e in sets if e["shape"] == args.shape]
    if args.id:
        sets = [e for e in sets if e["id"] == args.id]
    kwargs = {"optimizer": args.optimizer} if args.optimizer else {}
    by_shape: dict[str, list] = defaultdict(list)
    outcomes = []
    for e in sets:
        o = score_set(e, **kwargs)
        outcomes.append(o)
        by_shape[e["shape"] + " " + e["shape_name"]].append(o)
        if args.verbose:
            print(f"{o.id:28s} {'pass' if o.passed else 'FAIL'} margin {o.margin:10.3g} tol  "
                  f"conv={o.converged!s:5s} {o.seconds * 1e3:7.1f} ms {o.error}", flush=True)
    print(f"{'shape':14s} passed")
    for shape in sorted(by_shape):
        os_ = by_shape[shape]
        print(f"{shape:14s} {sum(o.passed for o in os_):3d}/{len(os_)}")
    n_pass = sum(o.passed for o in outcomes)
    print(f"total          {n_pass}/{len(outcomes)}; silent failures (converged=True): "
          f"{sum(o.silent for o in outcomes)}; passed but converged=False: "
          f"{sum(o.passed and not o.converged for o in outcomes)}")
    for o in outcomes:
        if not o.passed:
            print(f"  FAIL {o.id}: objective {o.objective:.10g} reference {o.reference:.10g} "
                  f"({o.margin:.3g} tol) reported {o.reported:.10g} at-reference "
                  f"{o.at_reference:.10g} converged={o.converged} {o.error}")
    below = [o for o in outcomes if o.passed and o.margin < -1.0]
    for o in below:
        print(f"  below the reference: {o.id}: {o.objective:.10g} vs {o.reference:.10g} "
              f"({o.margin:.3g} tol)")
    times = [o.seconds for o in outcomes]
    if times:
        print(f"fit time: median {statistics.median(times) * 1e3:.1f} ms, max "
              f"{max(times) * 1e3:.1f} ms, total {sum(times):.1f} s")
    return 0 if n_pass == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
