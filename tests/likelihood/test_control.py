"""``ma.LmmControl``: the optimizer's settings in one object (lme4's ``lmerControl``)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mixedanova as ma
from mixedanova.design.theta import SINGULAR_TOL
from mixedanova.likelihood import convergence

SLEEP = "Reaction ~ Days + (Days | Subject)"
OVARY = "follicles ~ sin2pit + cos2pit + (1|Mare)"


def test_defaults_are_the_constants_they_replace():
    ctl = ma.LmmControl()
    assert ctl.grad_tol == convergence.GRAD_TOL
    assert ctl.decrement_tol == convergence.DECREMENT_TOL
    assert ctl.noise_tol == convergence.NOISE_TOL
    assert ctl.singular_tol == SINGULAR_TOL


def test_default_control_reproduces_the_default_fit_exactly():
    d = ma.load_dataset("sleepstudy")
    a = ma.lmm(SLEEP, d)
    b = ma.lmm(SLEEP, d, control=ma.LmmControl())
    np.testing.assert_array_equal(a.state.theta, b.state.theta)
    np.testing.assert_array_equal(a.state.beta, b.state.beta)
    assert a.reml_criterion == b.reml_criterion
    assert a.state.optimizer.feval == b.state.optimizer.feval


def test_default_control_reproduces_a_residual_structure_fit_exactly():
    d = ma.load_dataset("ovary")
    ar1 = ma.AR1(group="Mare", order="time_index")
    a = ma.lmm(OVARY, d, residual=ar1)
    b = ma.lmm(OVARY, d, residual=ar1, control=ma.LmmControl())
    np.testing.assert_array_equal(a.state.theta, b.state.theta)
    np.testing.assert_array_equal(a.state.residual.u, b.state.residual.u)
    assert a.reml_criterion == b.reml_criterion


def test_iteration_limit_is_honoured_and_reported():
    d = ma.load_dataset("sleepstudy")
    with pytest.warns(ma.ConvergenceWarning, match="iteration limit|Iteration limit"):
        res = ma.lmm(SLEEP, d, control=ma.LmmControl(maxiter=1))
    assert not res.converged
    assert res.state.optimizer.converged is False
    msgs = " ".join(res.convergence_messages)
    assert msgs.startswith("failed to converge")
    assert "maxiter=1" in msgs
    assert res.reml_criterion > ma.lmm(SLEEP, d).reml_criterion + 1e-3


def test_fit_and_refit_take_control():
    model = ma.LinearMixedModel.from_formula(SLEEP, ma.load_dataset("sleepstudy"))
    with pytest.warns(ma.ConvergenceWarning):
        assert not model.fit(control=ma.LmmControl(maxiter=1)).converged
    with pytest.warns(ma.ConvergenceWarning):
        assert not model.refit(control=ma.LmmControl(maxiter=1)).converged
    assert model.fit(control=ma.LmmControl(maxiter=200)).converged


def test_check_tolerances_come_from_control():
    d = ma.load_dataset("sleepstudy")
    with pytest.warns(ma.ConvergenceWarning):
        strict = ma.lmm(SLEEP, d, control=ma.LmmControl(maxiter=1))
    loose = ma.lmm(SLEEP, d, control=ma.LmmControl(maxiter=1, decrement_tol=1.0,
                                                   noise_tol=1.0, grad_tol=1.0))
    # the same point (the check does not move it); only the verdict differs
    np.testing.assert_array_equal(strict.state.theta, loose.state.theta)
    assert not strict.converged and loose.converged


def test_singular_tolerance_is_used_by_the_check():
    d = ma.load_dataset("sleepstudy")
    res = ma.lmm(SLEEP, d, control=ma.LmmControl(singular_tol=1e3), warn=False)
    assert res.is_singular  # every template diagonal is below 1e3
    assert not ma.lmm(SLEEP, d).is_singular


@pytest.mark.parametrize("field, value", [
    ("tol", 0.0), ("tol", -1e-8), ("tol", float("nan")), ("tol", "1e-8"),
    ("maxiter", 0), ("maxiter", 2.5), ("maxiter", True), ("max_restarts", -1),
    ("grad_tol", float("inf")), ("singular_tol", None), ("residual_maxiter", 0),
    ("residual_inner_tol", -1.0), ("decrement_tol", 0), ("noise_tol", [1e-9]),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ma.ArgumentError, match=f"LmmControl: {field} must be"):
        ma.LmmControl(**{field: value})


def test_control_is_frozen_and_checked_by_fit():
    ctl = ma.LmmControl()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctl.tol = 1.0
    d = ma.load_dataset("sleepstudy")
    with pytest.raises(ma.ArgumentError, match="control must be an ma.LmmControl"):
        ma.lmm(SLEEP, d, control={"maxiter": 5})
    with pytest.raises(ma.FitError, match="control .* does not apply to method='ANOVA'"):
        ma.lmm("Yield ~ 1 + (1|Batch)", ma.load_dataset("dyestuff"), method="ANOVA",
               control=ma.LmmControl())
