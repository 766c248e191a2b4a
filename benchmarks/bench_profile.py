"""Time ``conf_int(method="profile")`` on sleepstudy ``Reaction ~ Days + (Days|Subject)``.

Run:  PYTHONPATH=. python benchmarks/bench_profile.py [--repeat N] [--busy]

(``PYTHONPATH=.`` from the checkout's root, so that this checkout is imported.)
Prints the fit time and the profile-interval time (best and median of
``--repeat`` runs, after one warm-up).  ``--busy`` starts one background
process that keeps a core busy (``while True: pass``) for the duration and
stops it afterwards, as another job on a shared 2-core machine would.
lme4 4.x on the reference machine: ``confint(m, method = "profile")`` 1.29 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--busy", action="store_true", help="one busy process in the background")
    args = ap.parse_args(argv)
    import mixedanova as ma

    print(f"mixedanova from {ma.__file__}")
    df = ma.load_dataset("sleepstudy")
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        warnings.simplefilter("ignore")
        res = ma.lmm("Reaction ~ Days + (Days|Subject)", df)
        res.conf_int(method="profile")  # warm-up (imports, caches)
        fits, profs = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = ma.lmm("Reaction ~ Days + (Days|Subject)", df)
            t1 = time.perf_counter()
            ci = res.conf_int(method="profile")
            t2 = time.perf_counter()
            fits.append(t1 - t0)
            profs.append(t2 - t1)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(ci)
    print(f"busy={args.busy}: fit best {min(fits) * 1e3:.0f} ms median "
          f"{statistics.median(fits) * 1e3:.0f} ms; profile CI best {min(profs):.3f} s "
          f"median {statistics.median(profs):.3f} s  (runs: "
          + ", ".join(f"{p:.3f}" for p in profs) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
