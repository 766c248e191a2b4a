"""LazyDesign: the level-sized attributes from the chunked summary, the rows from
``build_design`` on first use (once), and a refusal when the frame changed."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from mixedanova.design.build import build_design
from mixedanova.design.chunked import ChunkPlan, aliased_columns
from mixedanova.design.formula import parse_formula
from mixedanova.design.lazy import LazyDesign
from mixedanova.errors import DesignError


def _lazy(df, formula="Reaction ~ Days + (Days | Subject)"):
    parsed = parse_formula(formula)
    plan = ChunkPlan.from_formula(parsed, df.iloc[:0])
    enc = plan.encoder(plan.summarize(df.iloc[:100]) + plan.summarize(df.iloc[100:]))
    X = build_design(parsed, df).X
    xx = X.T @ X
    summary = enc.design_summary(aliased_columns(xx, enc.x_names_all))
    calls = []

    def build():
        calls.append(1)
        return build_design(parsed, df)
    return LazyDesign(summary, build), calls, build_design(parsed, df)


def test_level_sized_attributes_do_not_build_the_rows():
    lazy, calls, full = _lazy(ma.load_dataset("sleepstudy"))
    # getME(m, "n"), names(fixef(m)), ngrps(m), getME(m, "theta") names
    assert lazy.nobs == full.nobs and lazy.x_names == full.x_names
    assert lazy.ngroups == full.ngroups
    assert lazy.theta_layout().names == full.theta_layout().names
    # levels(m@flist$Subject), the columns of each term
    assert [list(b.levels) for b in lazy.blocks] == [list(b.levels) for b in full.blocks]
    assert [b.columns for b in lazy.blocks] == [b.columns for b in full.blocks]
    assert not lazy.built and calls == []


def test_rows_are_built_once_on_first_use():
    lazy, calls, full = _lazy(ma.load_dataset("sleepstudy"))
    np.testing.assert_array_equal(lazy.X, full.X)  # getME(m, "X")
    np.testing.assert_array_equal(lazy.y, full.y)  # getME(m, "y")
    # getME(m, "flist")$Subject as codes, and the term's model matrix
    np.testing.assert_array_equal(lazy.blocks[0].codes, full.blocks[0].codes)
    np.testing.assert_array_equal(lazy.blocks[0].zraw, full.blocks[0].zraw)
    assert lazy.built and calls == [1]


def test_a_changed_frame_is_refused():
    df = ma.load_dataset("sleepstudy")
    lazy, _, _ = _lazy(df)
    df.loc[df.index[:10], "Days"] = np.nan  # values removed after the "fit"
    with pytest.raises(DesignError, match="no longer gives the fitted design"):
        lazy.X  # noqa: B018 - nobs(m) would differ from the fit's

