"""Rendering of results as text, HTML, LaTeX, JSON and plots; no model computations.

Modules
-------
summary
    The model summary, built from any results object (duck-typed).
summary_anova
    EMS and variance-component tables of method-of-moments fits.
plots
    Caterpillar, residual and profile plots (matplotlib, imported lazily).
export
    Every table of a fit as JSON (the command line's ``--json``).

Nothing here imports the results modules.
"""
