"""Maximum-likelihood engine: profiled REML / ML deviance and its optimization.

Modules
-------
theta
    ``Lambda(theta)`` layout in lme4's order.
blocked
    Shared pieces of the blocked Cholesky factor of ``[Z X y]'[Z X y]``.
nested, crossed
    The two layouts of the blocked system (nested or crossed grouping factors).
system
    :func:`~mixedanova.likelihood.system.build_system` picks the layout.
criterion
    :class:`~mixedanova.likelihood.criterion.ProfiledDeviance` and the fit state
    at given parameters.
optimizer
    :func:`~mixedanova.likelihood.optimizer.optimize_theta`.
convergence
    Checks at the optimum.
state
    Plain containers handed to the results object.

Nothing here imports the model or the results.
"""
