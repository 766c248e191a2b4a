"""Rendering of results as text (lme4 / lmerTest layout); no computations.

Modules
-------
summary
    The model summary, built from any results object (duck-typed).
summary_anova
    EMS and variance-component tables of method-of-moments fits.

Nothing here imports the results modules.
"""
