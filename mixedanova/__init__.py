"""mixedanova: linear mixed models and random-effects ANOVA.

>>> import mixedanova as ma
>>> res = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"))
>>> print(res.summary())            # doctest: +SKIP
"""
from .batch import lmm_many, power, simulation_model
from .datasets import dataset_info, list_datasets, load_dataset
from .errors import (ArgumentError, ConvergenceWarning, DesignError, EstimabilityError,
                     FitError, FormulaError, InferenceWarning, MixedAnovaError,
                     MixedAnovaWarning, RankDeficiencyWarning, SeparationWarning,
                     SingularFitWarning, UnknownNameError)
from .inference.compare import compare
from .likelihood.control import LmmControl
from .model import LinearMixedModel, lmm
# the engine's package first (its __init__ is light), so that importing its
# submodules later never rebinds ma.glmm, the function, to the package
from . import glmm as _glmm_engine  # noqa: F401
from .glmm_model import glmm  # noqa: E402
from .results.glmm import GlmmResults
from .residual import (AR1, AR1H, CAR1, CSH, AnteDependence, CompSymm, ResidualWarning,
                       Toeplitz, Unstructured, VarExp, VarIdent, VarPower)
from .moments.ems import Factor, ems_rules
from .moments.moments import moments_from_mean_squares, varcomp_ci, varcomp_table
from .moments.published import ems_table_from_text
from .moments.oneway import oneway
from .report.export import read_results
from .results.anova import AnovaResults
from .results.lmm import LinearMixedResults

del _glmm_engine  # not part of the namespace: ma.glmm is the function

__version__ = "0.1.0"

def __getattr__(name: str):
    """``ma.families`` (Binomial, Poisson, Gamma, InverseGaussian, NegativeBinomial,
    make_family), imported on first use: it loads scipy."""
    if name == "families":
        import importlib
        return importlib.import_module(".glmm.families", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "lmm",
    "lmm_many",
    "simulation_model",
    "power",
    "glmm",
    "GlmmResults",
    "LmmControl",
    "read_results",
    "AR1",
    "CAR1",
    "CompSymm",
    "VarIdent",
    "VarPower",
    "VarExp",
    "Unstructured",
    "Toeplitz",
    "AR1H",
    "CSH",
    "AnteDependence",
    "ResidualWarning",
    "compare",
    "EstimabilityError",
    "LinearMixedModel",
    "LinearMixedResults",
    "AnovaResults",
    "oneway",
    "ems_rules",
    "Factor",
    "moments_from_mean_squares",
    "load_dataset",
    "list_datasets",
    "dataset_info",
    "ems_table_from_text",
    "varcomp_ci",
    "varcomp_table",
    "FormulaError",
    "DesignError",
    "ConvergenceWarning",
    "SingularFitWarning",
    "SeparationWarning",
    "RankDeficiencyWarning",
    "MixedAnovaError",
    "MixedAnovaWarning",
    "FitError",
    "ArgumentError",
    "UnknownNameError",
    "InferenceWarning",
]
