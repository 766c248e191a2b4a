"""Generalized linear mixed models: families, the Laplace approximation by PIRLS
on the likelihood engine, adaptive Gauss-Hermite quadrature and the optimizer.

Modules
-------
families
    Families and links (R's guards), log-likelihood as lme4's ``logLik``.
laplace
    PIRLS to the conditional modes and the Laplace ``-2 log L``.
agq
    Adaptive Gauss-Hermite quadrature for one random-effects term.
gradient
    Analytic gradient of the Laplace value and the block solver of the
    ``u``-only PIRLS system (dense coupling).
scalar_blocks
    The same with a sparse coupling, for large designs of scalar terms.
dispersion
    The Gamma / inverse Gaussian dispersion and the NB shape by the profile
    Laplace likelihood.
separation
    Separation of the fixed effects (a linear program) and all-0 / all-1 levels.
optimum
    What a fit found (``GlmmFit``) and the optimizers' working coordinates.
laplace_fit
    The Laplace fit with the analytic gradient, and its independent check.
fit
    The two-stage optimizer (``nAGQ = 0`` start, then ``(theta, beta)``), the
    Hessian and the standard errors.
"""
