"""Fits on data that do not fit in one machine's memory (issue 19).

Modules
-------
passes
    The passes over a Dask data frame's partitions (codebook summary,
    cross-products, explicit penalized residual sum of squares), each summed in a
    tree so that only level-sized objects travel.
cells
    The distributed group-by of cells (observations, mean, within-cell sum of
    squares) behind ``method="ANOVA"``.
dask_fit
    ``ma.lmm(formula, ddf)`` on a ``dask.dataframe.DataFrame``: the model on the
    summed cross-products and its row-less results.
residual_passes
    The passes of a fit with a residual structure: the alignment check (every
    correlation group in one partition) and one whitening pass per value of the
    residual parameters.
dask_residual
    ``ma.lmm(formula, ddf, residual=...)``: the criterion over ``(theta, u)``
    whose evaluations are distributed passes, the model and its results.
dask_marginal
    ``ma.lmm(formula, ddf, residual=ma.Unstructured(...))`` without random terms
    (mmrm, gls): one pass of per-visit-pattern sums of ``[X y]`` outer products;
    the optimizer, Satterthwaite and Kenward-Roger on the sums in the client.
frame_fit
    A pandas frame of at least ``CHUNKED_ROWS`` rows set up the same way on slices
    of the frame (no Dask): level-sized set-up memory, results that behave as an
    in-memory fit's (the row-sized design built from the frame when first needed).

Dask is imported only when a pass runs; ``import mixedanova`` does not need it.
"""
