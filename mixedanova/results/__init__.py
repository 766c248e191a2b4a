"""Results objects of a fit: numbers as pandas objects.

Modules
-------
lmm
    :class:`~mixedanova.results.lmm.LinearMixedResults` (REML / ML fits).
anova
    :class:`~mixedanova.results.anova.AnovaResults` (method-of-moments fits).
"""
