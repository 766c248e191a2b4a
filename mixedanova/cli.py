"""Command line: ``mixedanova fit FORMULA (--data FILE.csv | --dataset NAME) [--method M]``."""
from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from .datasets import list_datasets, load_dataset
from .design import DesignError
from .formula import FormulaError
from .model import lmm

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixedanova",
                                description="Linear mixed models and random-effects ANOVA.")
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
    sub.add_parser("datasets", help="list the bundled data sets")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixedanova`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        print("\n".join(list_datasets()))
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
    print(res.summary())
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
