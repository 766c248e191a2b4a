"""Command line: ``mixedanova fit FORMULA (--data FILE.csv | --dataset NAME) [--method M]
[--anova [--type T] [--ddf D]] [--json]``, ``mixedanova datasets``, ``mixedanova --version``."""
from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from .datasets import dataset_info, list_datasets, load_dataset
from .design import DesignError
from .formula import FormulaError
from .model import lmm

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixedanova",
                                description="Linear mixed models and random-effects ANOVA.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model and print its summary")
    fit.add_argument("formula", help='lme4 formula, e.g. "yield ~ treat + (1|blend)"')
    src = fit.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE.csv", help="CSV file with a header row")
    src.add_argument("--dataset", metavar="NAME",
                     help=f"bundled data set: {', '.join(list_datasets())}")
    fit.add_argument("--method", default="REML", choices=["REML", "ML", "ANOVA"],
                     type=str.upper, help="estimation method (default REML)")
    fit.add_argument("--ems", default="unrestricted", choices=["unrestricted", "restricted"],
                     help="mixed-model convention for --method ANOVA")
    fit.add_argument("--anova", action="store_true",
                     help="also print the F tests of the fixed terms (lmerTest's anova)")
    fit.add_argument("--type", default="3", choices=["1", "2", "3"],
                     help="hypothesis type for --anova (default 3)")
    fit.add_argument("--ddf", default=None,
                     choices=["satterthwaite", "kenward-roger", "residual", "none"],
                     help="denominator df for --anova (default satterthwaite; residual for "
                          "--method ANOVA)")
    fit.add_argument("--json", action="store_true",
                     help="print every result table as JSON instead of the summary")
    sub.add_parser("datasets", help="list the bundled data sets with descriptions")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixedanova`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        print(_datasets_listing())
        return 0
    try:
        data = pd.read_csv(args.data) if args.data else load_dataset(args.dataset)
        kwargs = {"ems": args.ems} if args.method == "ANOVA" else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = lmm(args.formula, data, method=args.method, **kwargs)
    except (FormulaError, DesignError, ValueError, OSError) as exc:
        print(f"mixedanova: error: {exc}", file=sys.stderr)
        return 2
    try:
        table = _anova_table(res, args) if args.anova else None
    except ValueError as exc:
        print(f"mixedanova: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        from .report.export import results_to_json
        print(results_to_json(res, anova=table))
    else:
        print(res.summary())
        if table is not None:
            print()
            print(table)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def _version() -> str:
    from . import __version__
    return __version__


def _anova_table(res, args):
    """F tests of the fixed terms for ``--anova`` (type and ddf from the options)."""
    ddf = args.ddf or ("residual" if res.method == "ANOVA" else "satterthwaite")
    return res.anova(type=int(args.type), ddf=ddf)


def _datasets_listing() -> str:
    """One block per bundled data set: name and title, design, formula, source."""
    info = dataset_info()
    lines = []
    for name, r in info.iterrows():
        lines += [f"{name}: {r['title']}", f"    design:  {r['design']}",
                  f"    formula: {r['formula']}   (random: {r['random']})",
                  f"    source:  {r['source']}"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
