"""Many responses on one design (issue 20).

:func:`lmm_many` fits one linear mixed model to many responses (genes, voxels,
simulated data sets): the design, the engine's rows and the symbolic part of
the cross-products are built once, each response gets its own optimum and
convergence verdict, and the results are tidy DataFrames.
:func:`simulation_model` and :func:`power` estimate power by simulation on the
same engine (a simulation is many responses on one design).
"""
from .fit import lmm_many
from .power import PowerTable, power
from .simulation import SimulationModel, simulation_model

__all__ = ["lmm_many", "power", "simulation_model", "SimulationModel", "PowerTable"]
