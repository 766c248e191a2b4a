"""The package's exceptions and warnings: one base class each.

Every error the package raises on purpose derives from :class:`MixedAnovaError`
(itself a :class:`ValueError`, so ``except ValueError`` keeps working) and names
the column, term, level or argument at fault.  Every warning derives from
:class:`MixedAnovaWarning`.  This module imports nothing from the package, so any
stage may raise these.
"""
from __future__ import annotations

import os
import sys

__all__ = ["MixedAnovaError", "FormulaError", "DesignError", "EstimabilityError",
           "FitError", "ArgumentError", "UnknownNameError", "MixedAnovaWarning", "user_stacklevel",
           "ConvergenceWarning", "SeparationWarning", "SingularFitWarning",
           "RankDeficiencyWarning", "InferenceWarning"]


class MixedAnovaError(ValueError):
    """Base class of the package's errors."""


class FormulaError(MixedAnovaError):
    """A model formula that cannot be parsed; the message points at the text."""

    def __init__(self, message: str, formula: str | None = None,
                 pos: int | None = None, length: int = 1) -> None:
        self.formula = formula
        self.pos = pos
        if formula is not None and pos is not None:
            marker = " " * pos + "^" * max(1, length)
            message = f"{message}\n    {formula}\n    {marker}"
        elif formula is not None:
            message = f"{message}\n    {formula}"
        super().__init__(message)


class DesignError(MixedAnovaError):
    """Data that cannot be turned into model matrices; the message names the culprit."""


class EstimabilityError(MixedAnovaError):
    """A linear function of the coefficients that the data cannot estimate."""


class FitError(MixedAnovaError):
    """The data leave nothing to estimate (e.g. a constant response) or a fit
    argument is invalid (e.g. a bad ``start``)."""


class ArgumentError(MixedAnovaError):
    """An argument value a function does not accept (``ddf``, ``type``, ``level``,
    ``L``, ``n_boot``, an unknown keyword ...); the message names the argument."""


class UnknownNameError(ArgumentError, KeyError):
    """A name (grouping factor, parameter, coefficient, variance component, data
    set) that the object does not have; also a :class:`KeyError`, as a lookup."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MixedAnovaWarning(UserWarning):
    """Base class of the package's warnings."""


class ConvergenceWarning(MixedAnovaWarning):
    """The optimum failed a convergence check."""


class SeparationWarning(MixedAnovaWarning):
    """Separation: a fixed-effect estimate of a binomial (or count) model is
    infinite (the fit is then not converged); or levels whose responses are all 0
    or all 1 have runaway conditional modes (a note).  The message names the
    coefficient and the levels."""


class SingularFitWarning(MixedAnovaWarning):
    """A variance component is estimated on its boundary (0)."""


class RankDeficiencyWarning(MixedAnovaWarning):
    """Aliased fixed-effect columns were dropped."""


class InferenceWarning(MixedAnovaWarning):
    """A numerical problem in the df computations (e.g. a non-positive Hessian)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the caller's code.

    Counts the frames, starting with the function that calls ``warnings.warn``,
    that belong to this package (or to :mod:`functools`, whose
    ``cached_property`` the results use), so that the warning shows the user's
    line (the first frame outside) whatever the call path.
    """
    level = 1
    frame = sys._getframe(1)
    while frame is not None and _internal(frame.f_code.co_filename):
        level += 1
        frame = frame.f_back
    return level


def _internal(filename: str) -> bool:
    """A frame of this package, or of :mod:`functools` between two of its frames
    (``cached_property``)."""
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep) or os.path.basename(path) == "functools.py"
