"""Method-of-moments engine: expected mean squares and variance components.

Modules
-------
ems
    EMS rules for balanced designs (Factor, ems_rules, subscript_table).
ems_table
    The EMS table: layout, EMS text, F tests (exact or quasi-F) from the EMS.
anova_design
    Terms, balance checks and sequential projections on a DataFrame.
sums_of_squares
    Sums of squares in one pass over the rows (balanced formulas, Type I).
moments
    Moment estimates (balanced rules or Henderson's Method III), their SEs and
    Cochran-Satterthwaite intervals; :func:`~mixedanova.moments.moments.fit_anova`.
oneway
    One-way random model closed forms.
published
    An EMS table from a published ANOVA table (df, mean squares, EMS as text).

Nothing here imports the model or the results.
"""
