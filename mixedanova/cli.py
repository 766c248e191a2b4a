"""Command line: ``mixedanova fit FORMULA (--data FILE.csv | --dataset NAME) [--method M]
[--anova [--type T] [--ddf D]] [--json] [--unrestricted]``, ``mixedanova datasets``,
``mixedanova --version``.

``fit`` reads its formula in restricted mode (:mod:`mixedanova.design.restricted`):
a program that passes on a formula from elsewhere runs no code that formula holds.
``--unrestricted`` lifts it for a formula you wrote yourself."""
from __future__ import annotations

import argparse
import sys
import warnings

import pandas as pd

from .datasets import dataset_info, list_datasets, load_dataset
from .errors import DesignError, FormulaError, MixedAnovaError
from .model import lmm

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixedanova",
                                description="Linear mixed models and random-effects ANOVA.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser(
        "fit", help="fit a model and print its summary",
        description="Fit a linear mixed model and print its summary.  The formula is read in "
                    "restricted mode: only column names, numbers, formula and arithmetic "
                    "operators and the transforms I, C, log, log2, log10, exp, abs, np.log, "
                    "np.log2, np.log10, np.log1p, np.exp, np.sqrt, np.abs, scale, center, poly "
                    "and offset are accepted, and nothing in the formula is run as code; "
                    "--unrestricted lifts this for a formula you trust.")
    fit.add_argument("formula", help='lme4 formula, e.g. "yield ~ treat + (1|blend)" '
                                     "(restricted mode unless --unrestricted)")
    src = fit.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE.csv", help="CSV file with a header row")
    src.add_argument("--dataset", metavar="NAME",
                     help=f"bundled data set: {', '.join(list_datasets())}")
    fit.add_argument("--method", default="REML", choices=["REML", "ML", "ANOVA"],
                     type=str.upper, help="estimation method (default REML)")
    fit.add_argument("--ems", default=None, choices=["unrestricted", "restricted"],
                     help="mixed-model convention for --method ANOVA (default unrestricted)")
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
    fit.add_argument("--unrestricted", action="store_true",
                     help="evaluate the formula's terms as Python code, as the Python API "
                          "does (any transform, any code: only for a formula you trust); "
                          "by default the formula is restricted to column names, numbers, "
                          "operators and allow-listed transforms")
    sub.add_parser("datasets", help="list the bundled data sets with descriptions")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixedanova`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        print(_datasets_listing())
        return 0
    try:
        data = _read_csv(args.data) if args.data else load_dataset(args.dataset)
        kwargs = {} if args.ems is None else {"ems": args.ems}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = lmm(args.formula, data, method=args.method,
                      restricted=not args.unrestricted, **kwargs)
    except MixedAnovaError as exc:
        print(f"mixedanova: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        table = _anova_table(res, args) if args.anova else None
    except ValueError as exc:  # MixedAnovaError is a ValueError
        msg = _one_line(exc) if isinstance(exc, MixedAnovaError) else str(exc)
        print(f"mixedanova: error: {msg}", file=sys.stderr)
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
