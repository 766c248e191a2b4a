"""Command line: ``mixedanova fit FORMULA (--data FILE.csv | --dataset NAME) [--method M]``."""
from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from .datasets import list_datasets, load_dataset
from .errors import DesignError, FormulaError, MixedAnovaError
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
    fit.add_argument("--ems", default=None, choices=["unrestricted", "restricted"],
                     help="mixed-model convention for --method ANOVA (default unrestricted)")
    sub.add_parser("datasets", help="list the bundled data sets")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixedanova`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        print("\n".join(list_datasets()))
        return 0
    try:
        data = _read_csv(args.data) if args.data else load_dataset(args.dataset)
        kwargs = {} if args.ems is None else {"ems": args.ems}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = lmm(args.formula, data, method=args.method, **kwargs)
    except MixedAnovaError as exc:
        print(f"mixedanova: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(res.summary())
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0


def _read_csv(path: str) -> pd.DataFrame:
    """The CSV file as a DataFrame; unreadable files are a :class:`DesignError`."""
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        detail = str(exc).strip().splitlines()
        raise DesignError(f"cannot read --data {path!r}: "
                          f"{detail[0] if detail else type(exc).__name__}") from None


def _one_line(exc: MixedAnovaError) -> str:
    """The error's message on one line (a formula error's caret line becomes a position)."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    if isinstance(exc, FormulaError) and exc.formula is not None:
        where = f" at character {exc.pos + 1}" if exc.pos is not None else ""
        return f"{lines[0]} (in {exc.formula!r}{where})"
    return " ".join(line.strip() for line in lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
