"""The engine alone at 100M rows: a fit from saved summed cross-products (issue 19).

Run:  python benchmarks/bench_engine_large.py save FOLDER SUMS.pkl
      python benchmarks/bench_engine_large.py fit SUMS.pkl [--folder FOLDER] [--post LIST]
                                                [--theta T0,T1 [--gradient]]

``save``: the two passes of ``ma.lmm(FORMULA, dd.read_parquet(FOLDER))`` (codebook and
cross-products, Dask's threaded scheduler, 2 threads), and a pickle of what the client
keeps after them (the summed cross-products, the design summary, the encoder and the
codebook's values): the fit's input, so that the engine can be timed without rereading
the rows.  ``bench_dask.py parquet --rows 100000000 --levels 100000,10000`` writes the
Parquet folder.

``fit``: in a fresh process, load the pickle and fit as ``ma.lmm`` does on the Dask frame
(:class:`~mixedanova.distributed.dask_fit.DistributedModel` on the loaded sums; with
``--folder`` its lazy row passes read that Parquet folder, e.g. the summary's residual
quantiles), then the steps after the optimizer given by ``--post`` (comma-separated:
``se`` fixed effects and SEs, ``blup`` BLUPs, ``sd`` conditional SDs, ``df``
Satterthwaite df, ``summary`` the printed summary, which needs ``--folder``).  Prints
every factorization (wall seconds, theta), every gradient (``inverse_block_sums``),
the layout chosen, wall and CPU time, and the peak RSS (``ru_maxrss``) after loading
the pickle and at each step: the engine's own memory is the rise beyond the loaded
pickle.  ``--theta`` evaluates the criterion (and with ``--gradient`` its gradient,
the conditional variances and the solution) at one point instead of fitting.

The machine is shared: the wall times depend on the load (printed), the CPU times
(``time.process_time``, all threads) less so.
"""
from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "y ~ 1 + x + (1|s) + (1|d)"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def save(folder: str, out: str, threads: int = 2) -> None:
    sys.path.insert(0, str(ROOT))
    import dask
    import dask.dataframe as dd

    from mixedanova.design.chunked import ChunkPlan, aliased_columns
    from mixedanova.design.formula import parse_formula
    from mixedanova.distributed.passes import (cross_product_pass, keep_fixed_columns,
                                               summary_pass)

    t, c = time.perf_counter(), time.process_time()
    with dask.config.set(scheduler="threads", num_workers=threads):
        ddf = dd.read_parquet(folder, columns=["y", "x", "s", "d"])
        plan = ChunkPlan.from_formula(parse_formula(FORMULA), ddf._meta)
        summary = summary_pass(plan, ddf)
        encoder = plan.encoder(summary)
        sums = cross_product_pass(encoder, ddf)
    keep = aliased_columns(sums.xx, encoder.x_names_all)
    state = {"cp": keep_fixed_columns(sums.cp, keep), "design": encoder.design_summary(keep),
             "log_w": sums.log_w, "keep": keep, "encoder": encoder, "values": summary.values}
    with open(out, "wb") as f:
        pickle.dump(state, f, protocol=5)
    cp = state["cp"]
    print(f"passes: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU, "
          f"peak RSS {_peak_gb():.2f} GB; {cp.n:,} rows, levels "
          f"{[t.nlev for t in cp.terms]}, {len(cp.pairs[(1, 0)].keys):,} level pairs; "
          f"saved to {out} ({Path(out).stat().st_size / 2**30:.2f} GB)")


def fit(path: str, folder: str | None, post: list[str], theta: list[float] | None,
        gradient: bool) -> None:
    sys.path.insert(0, str(ROOT))
    import warnings

    import numpy as np

    from mixedanova.distributed.dask_fit import DistributedModel

    with open(path, "rb") as f:
        state = pickle.load(f)
    base = _peak_gb()
    print(f"loaded {path}: peak RSS {base:.2f} GB; {_load()}", flush=True)
    ddf = None
    if folder:
        import dask.dataframe as dd
        ddf = dd.read_parquet(folder, columns=["y", "x", "s", "d"])
    model = DistributedModel(state["design"], state["encoder"], state["cp"], ddf,
                             state["log_w"], state["keep"], state["values"])
    del state
    t0, c0 = time.perf_counter(), time.process_time()
    dev = model.deviance_function(True)
    system = dev.system
    print(f"layout {type(system).__name__} (order {system.r}) set up in "
          f"{time.perf_counter() - t0:.1f} s; peak RSS {_peak_gb():.2f} GB "
          f"(+{_peak_gb() - base:.2f})", flush=True)
    counts = {"factor": 0, "factor_s": 0.0, "factor_cpu": 0.0, "gradient": 0,
              "gradient_s": 0.0, "gradient_cpu": 0.0}
    factor = type(system).factor
    patched = set()

    def count_gradients(cls) -> None:
        """Time ``inverse_block_sums`` on the factor class (not on each factor: a
        closure on a factor would keep it, 0.8 GB, alive until a garbage collection)."""
        sums = cls.inverse_block_sums

        def timed(self):
            if getattr(self, "_sums", None) is not None:  # kept on the factor
                return sums(self)
            t, c = time.perf_counter(), time.process_time()
            out = sums(self)
            counts["gradient"] += 1
            counts["gradient_s"] += time.perf_counter() - t
            counts["gradient_cpu"] += time.process_time() - c
            print(f"    gradient {counts['gradient']}: {time.perf_counter() - t:.1f} s wall, "
                  f"{time.process_time() - c:.1f} s CPU", flush=True)
            return out

        cls.inverse_block_sums = timed
        patched.add(cls)

    def counted(self, lambdas, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        f = factor(self, lambdas, **kwargs)
        counts["factor"] += 1
        counts["factor_s"] += time.perf_counter() - t
        counts["factor_cpu"] += time.process_time() - c
        if type(f) not in patched:
            count_gradients(type(f))
        print(f"    factor {counts['factor']}: {time.perf_counter() - t:.1f} s wall, "
              f"{time.process_time() - c:.1f} s CPU, theta "
              f"{[round(float(lam[0, 0]), 8) for lam in lambdas]}, peak RSS "
              f"{_peak_gb():.2f} GB; {_load()}", flush=True)
        return f

    type(system).factor = counted
    if theta is not None:
        th = np.asarray(theta, dtype=float)
        print(f"criterion {dev(th)!r}")
        if gradient:
            print(f"gradient {dev.gradient(th)!r}")
            t = time.perf_counter()
            f = dev.factor(th)
            omega = f.omega_inv_diag()
            print(f"conditional variances (first levels) "
                  f"{[float(o[0, 0, 0]) for o in omega]} in {time.perf_counter() - t:.1f} s")
            beta = f.solution()[0]
            print(f"fixed effects {beta}")
        print(f"peak RSS {_peak_gb():.2f} GB (+{_peak_gb() - base:.2f} beyond the pickle)")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"fit: {wall:.1f} s wall, {cpu:.1f} s CPU; {counts['factor']} factorizations "
          f"({counts['factor_s']:.1f} s, CPU {counts['factor_cpu']:.1f} s), "
          f"{counts['gradient']} gradients ({counts['gradient_s']:.1f} s, CPU "
          f"{counts['gradient_cpu']:.1f} s); optimizer evaluations "
          f"{res.optimizer.feval}; converged={res.converged}; peak RSS {_peak_gb():.2f} GB "
          f"(+{_peak_gb() - base:.2f}); {_load()}", flush=True)
    print(f"  REML criterion {res.reml_criterion!r}\n  theta {res.theta.tolist()}\n"
          f"  fixed effects {res.fe_params.to_dict()}", flush=True)
    for step in post:
        t, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if step == "se":
                text = f"SEs {res.bse_fe.to_dict()}"
            elif step == "blup":
                text = "BLUPs (first level) " + str(
                    {g: float(v.iloc[0, 0]) for g, v in res.random_effects.items()})
            elif step == "sd":
                text = "conditional SDs (first level) " + str(
                    {g: float(v.iloc[0, 0]) for g, v in res.random_effects_sd.items()})
            elif step == "df":
                text = "Satterthwaite df " + str(res.fixed()["df"].to_dict())
            elif step == "summary":
                text = str(res.summary())
            else:
                raise SystemExit(f"unknown step {step!r}")
        print(f"{step}: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} "
              f"s CPU; peak RSS {_peak_gb():.2f} GB (+{_peak_gb() - base:.2f}); "
              f"{counts['factor']} factorizations, {counts['gradient']} gradients so far\n"
              f"{text}", flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s "
          f"CPU; peak RSS {_peak_gb():.2f} GB (+{_peak_gb() - base:.2f} beyond the pickle)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["save", "fit"])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--folder", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--post", default="se,blup,sd,df")
    ap.add_argument("--theta", default=None)
    ap.add_argument("--gradient", action="store_true")
    args = ap.parse_args()
    if args.mode == "save":
        save(args.paths[0], args.paths[1], args.threads)
        return
    theta = None if args.theta is None else [float(v) for v in args.theta.split(",")]
    fit(args.paths[0], args.folder, [s for s in args.post.split(",") if s], theta,
        args.gradient)


if __name__ == "__main__":
    main()
