"""Inference on a fitted model: df, F tables, contrasts, intervals, comparisons.

Modules
-------
tables
    Fixed-effects tables, ANOVA F tables and contrasts
    (:class:`~mixedanova.inference.tables.FixedInference`).
hypotheses
    Type I/II/III hypothesis matrices of the fixed terms.
satterthwaite, kenward_roger
    Denominator df (lmerTest, pbkrtest).
intervals
    Wald, profile and parametric bootstrap intervals.
profiler
    The deviance profiled in the SD/correlation scale (behind intervals and profile).
profile
    Profile zeta on a grid (lme4's ``profile``), behind ``plot_profile``.
compare
    Likelihood-ratio tests between models and of the random terms (ranova).

These functions take a results object duck-typed; refits go through the model it
carries (``res.model``), so nothing here imports the model or the results.
"""
