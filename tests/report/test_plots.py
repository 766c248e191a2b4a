"""Plots (report/plots.py) write real PNG images; the profile behind plot_profile
agrees with lme4's profile intervals (tests/reference/profile_ci.json:
``confint(m, method = "profile")`` for the Dyestuff REML fit)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
from matplotlib.image import imread  # noqa: E402

import mixedanova as ma  # noqa: E402

PROFILE = json.loads((Path(__file__).parent.parent / "reference" / "profile_ci.json").read_text())
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(fig, path: Path, min_axes: int) -> np.ndarray:
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) >= min_axes
    fig.savefig(path, dpi=60)
    plt.close(fig)
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) > 5000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas: a good share of pixels differ from the background
    assert np.mean(np.any(img[..., :3] < 0.9, axis=-1)) > 0.01
    return img


def test_plot_ranef_png(sleepstudy_fit, tmp_path):
    fig = sleepstudy_fit.plot_ranef()
    # one panel per random-effect column, 18 subjects on each
    assert len(fig.axes) == 2
    assert len(fig.axes[0].get_yticklabels()) == 18
    _check_png(fig, tmp_path / "ranef.png", 2)


def test_plot_ranef_unknown_group(sleepstudy_fit):
    with pytest.raises(ma.MixedAnovaError, match="unknown grouping factor 'Days'"):
        sleepstudy_fit.plot_ranef(group="Days")


def test_plot_resid_png(sleepstudy_fit, tmp_path):
    fig = sleepstudy_fit.plot_resid()
    # residuals vs fitted, QQ of residuals, QQ of each BLUP column
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    _check_png(fig, tmp_path / "resid.png", 4)


def test_plot_profile_png_and_profile_limits(dyestuff_fit, tmp_path):
    ref = PROFILE["dyestuff_reml"]
    prof = dyestuff_fit.profile(level=0.95, npoints=4)
    # the grid runs out to the 95% profile limits: lme4's confint(m, method = "profile")
    for name, lo, hi in zip(ref["parameters_new_names"], ref["lower"], ref["upper"]):
        name = "Intercept" if name == "(Intercept)" else name
        part = prof[prof["parameter"] == name].sort_values("value")
        assert part["value"].iloc[0] == pytest.approx(lo, rel=1e-3)
        assert part["value"].iloc[-1] == pytest.approx(hi, rel=1e-3)
        # zeta is monotone and reaches -+ qnorm(0.975) at the limits
        assert np.all(np.diff(part["zeta"].to_numpy()) > 0)
        assert part["zeta"].iloc[0] == pytest.approx(-1.959964, abs=1e-4)
        assert part["zeta"].iloc[-1] == pytest.approx(1.959964, abs=1e-4)
    fig = dyestuff_fit.plot_profile(profile=prof)
    _check_png(fig, tmp_path / "profile.png", 3)


def test_plots_need_no_display_and_anova_fits_plot_too(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aov = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"),
                     method="ANOVA")
    _check_png(aov.plot_ranef(), tmp_path / "aov_ranef.png", 1)


def test_profile_at_99_percent_reaches_the_cutoffs(dyestuff_fit):
    # lme4's profile() default (alphamax = 0.01).  Walking sigma out to its upper 99%
    # limit passes a region where the batch SD has a second local minimum at 0;
    # zeta must still be monotone and reach qnorm(0.995) = 2.5758 on each side,
    # except where the batch SD stops at its bound 0 before reaching it.
    prof = dyestuff_fit.profile()
    for name, part in prof.groupby("parameter"):
        z = part.sort_values("value")["zeta"].to_numpy()
        assert np.all(np.diff(z) > 0), name
        assert z[-1] == pytest.approx(2.575829, abs=1e-4), name
        if name == "sd_(Intercept)|Batch":
            assert part["value"].min() == 0.0 and -2.5758 < z[0] < -2.0
        else:
            assert z[0] == pytest.approx(-2.575829, abs=1e-4), name
    with pytest.raises(ma.MixedAnovaError, match=r"unknown parameter\(s\) \['sd_Batch'\]"):
        dyestuff_fit.profile("sd_Batch")


def test_plot_ranef_keeps_one_level_order_across_panels(sleepstudy_fit):
    # lme4's dotplot(ranef(m, condVar = TRUE)): every panel of a grouping factor lists
    # the levels in one order (that of the intercepts), so a subject can be followed
    import matplotlib
    matplotlib.use("Agg")
    fig = sleepstudy_fit.plot_ranef()
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes
              if ax.get_yticklabels()]
    assert len(labels) == 2 and labels[0] == labels[1]
    b = sleepstudy_fit.random_effects["Subject"]["(Intercept)"]
    assert labels[0] == [str(i) for i in b.sort_values().index]
    assert "\u00b1" in fig.axes[0].get_xlabel()
