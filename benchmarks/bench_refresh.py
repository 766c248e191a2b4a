"""Cost of a numeric refresh with new row weights against a rebuild (issue 17).

Run:  python benchmarks/bench_refresh.py [--repeats N]

On the InstEval shape (``y ~ service + (1|s) + (1|d) + (1|dept)``, 73,421 rows),
prints the median wall time of

* a rebuild: the cross-products' pattern (level pairs: sorting and searching),
  their values, and the blocked system (pattern, pair structure, values);
* a refresh: new values with new row weights on the kept pattern
  (``CrossProductPattern.evaluate``) and ``system.refresh`` (values only);

and checks that the refreshed system's objective equals the rebuilt one's.  This is
what a GLMM's penalized iteratively reweighted least squares pays per iteration.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mixedanova as ma  # noqa: E402
from mixedanova.likelihood.blocked import TermData  # noqa: E402
from mixedanova.likelihood.crossprod import CrossProductPattern  # noqa: E402
from mixedanova.likelihood.system import build_system  # noqa: E402
from synthetic import insteval_like  # noqa: E402


def _median(fn, repeats: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    df = insteval_like()
    model = ma.LinearMixedModel.from_formula("y ~ service + (1|s) + (1|d) + (1|dept)", df)
    d = model.design
    terms = [TermData(b.codes, b.zraw, b.nlev) for b in d.blocks]
    zraws = [t.zraw for t in terms]
    X, y, n = d.X, d.y, len(d.y)
    layout = d.theta_layout()
    theta = layout.start()
    rng = np.random.default_rng(1)
    w = rng.uniform(0.2, 3.0, n)

    def rebuild():
        cp = CrossProductPattern(terms, n).evaluate(zraws, X, y, weights=w)
        return build_system(cp)

    pattern = CrossProductPattern(terms, n)
    system = build_system(pattern.evaluate(zraws, X, y))

    def refresh():
        cp = pattern.evaluate(zraws, X, y, weights=w).standardized()
        system.refresh(cp)
        return system

    t_rebuild, sys_a = _median(rebuild, args.repeats)
    t_refresh, sys_b = _median(refresh, args.repeats)
    fa = sys_a.factor(layout.templates(theta))
    fb = sys_b.factor(layout.templates(theta))
    same = (abs(fa.ldL2 - fb.ldL2) <= 1e-10 * abs(fa.ldL2)
            and abs(fa.pwrss_std - fb.pwrss_std) <= 1e-10 * fa.pwrss_std)
    t_eval, _ = _median(lambda: sys_b.factor(layout.templates(theta)), args.repeats)
    print(f"InstEval shape: {n} rows, {d.blocks[0].nlev} x {d.blocks[1].nlev} x "
          f"{d.blocks[2].nlev} levels, layout {type(sys_a).__name__}")
    print(f"  rebuild (pattern + values + system)  {t_rebuild * 1e3:8.1f} ms")
    print(f"  refresh (values + system.refresh)    {t_refresh * 1e3:8.1f} ms  "
          f"({t_refresh / t_rebuild:.2f} x rebuild)")
    print(f"  one evaluation at theta              {t_eval * 1e3:8.1f} ms")
    print(f"  refreshed objective equals rebuilt: {same}")


if __name__ == "__main__":
    main()
