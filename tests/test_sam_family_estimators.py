"""The SAM family in the net estimators: solver names, rho=0, the radius schedule, grid search."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sksam import SAMNetClassifier, SAMNetRegressor
from sksam.optim import GSAM, SAM, WSAM, FriendlySAM, ProportionalRho, WarmupRho

from _reference import net_weights

FAMILY = ["gsam", "wsam", "fsam", "sam_on"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:200] / 16.0).astype(np.float32), y[:200]


def _net(cls, solver, **kwargs):
    if solver == "sam_on":  # SAM-ON needs normalization layers
        kwargs.setdefault("module__batch_norm", True)
    options = dict(
        module__hidden_layer_sizes=(16,),
        max_epochs=2,
        batch_size=50,
        sharpness=None,
        random_state=0,
        lr=0.1,
    )
    return cls(solver=solver, **{**options, **kwargs})


@pytest.mark.parametrize(
    "solver, check",
    [
        ("gsam", lambda opt: isinstance(opt.rule, GSAM) and opt.rule.alpha == 0.4),
        ("wsam", lambda opt: isinstance(opt.rule, WSAM) and opt.rule.gamma == 0.9),
        ("fsam", lambda opt: isinstance(opt.rule, FriendlySAM) and opt.rule.m is not None),
        ("sam_on", lambda opt: opt.rule is None and opt.perturb == "normalization"),
    ],
)
def test_each_family_solver_builds_its_rule(digits, solver, check):
    X, y = digits
    clf = _net(SAMNetClassifier, solver).fit(X, y)
    opt = clf.net_.optimizer_
    assert isinstance(opt, SAM) and opt.param_groups[0]["solver"] == "sam"
    assert check(opt)


@pytest.mark.parametrize("solver", FAMILY)
def test_rho_zero_is_solver_gd_bit_for_bit(digits, solver):
    X, y = digits
    kwargs = {"module__batch_norm": True}
    gd = _net(SAMNetClassifier, "gd", **kwargs).fit(X, y)
    family = _net(SAMNetClassifier, solver, rho=0.0, **kwargs).fit(X, y)
    for a, b in zip(net_weights(gd), net_weights(family)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("solver", FAMILY)
def test_a_family_solver_is_not_sam(digits, solver):
    # the rule acts: same seed, same batches, different weights than solver='sam'
    X, y = digits
    kwargs = {"module__batch_norm": True, "rho": 0.2}
    sam = _net(SAMNetClassifier, "sam", **kwargs).fit(X, y)
    family = _net(SAMNetClassifier, solver, **kwargs).fit(X, y)
    assert not all(torch.equal(a, b) for a, b in zip(net_weights(sam), net_weights(family)))


def test_sam_on_without_normalization_layers_names_the_cause(digits):
    X, y = digits
    clf = _net(SAMNetClassifier, "sam_on", module__batch_norm=False)
    with pytest.raises(ValueError, match="found no normalization layer"):
        clf.fit(X, y)


def test_the_radius_schedule_is_an_estimator_parameter(digits):
    X, y = digits
    clf = _net(SAMNetClassifier, "gsam", optimizer__rho_schedule=WarmupRho(4)).fit(X, y)
    opt = clf.net_.optimizer_
    assert opt.rho_schedule.t == 8  # 200 rows in batches of 50, 2 epochs
    assert opt.last_rho == [clf.rho]
    assert clf.get_params()["optimizer__rho_schedule"] == WarmupRho(4)
    # clone (GridSearchCV) rebuilds it from its arguments: a fresh counter
    cloned = clone(clf).get_params()["optimizer__rho_schedule"]
    assert cloned == WarmupRho(4) and cloned.t == 0


def test_grid_search_over_the_radius_schedule(digits):
    X, y = digits
    search = GridSearchCV(
        _net(SAMNetClassifier, "gsam"),
        {"optimizer__rho_schedule": [None, WarmupRho(4), ProportionalRho(rho_min=0.01)]},
        cv=2,
    )
    search.fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize("routed", ["optimizer__rule", "optimizer__perturb"])
def test_the_rule_is_set_by_solver_not_routed(digits, routed):
    X, y = digits
    with pytest.raises(ValueError, match="Set 'solver'"):
        _net(SAMNetClassifier, "sam", **{routed: GSAM()}).fit(X, y)


def test_verbose_fit_of_a_variant_does_not_fail(digits, capsys):
    # the "far from a minimum" line asks whether the solver perturbs
    X, y = digits
    for solver in ["gsam", "every_k"]:
        _net(SAMNetClassifier, solver, max_epochs=1, lr=1e-4, verbose=1).fit(X, y)
    assert "stopped far from a minimum, where solver='every_k'" in capsys.readouterr().out


def test_grid_search_over_the_family(digits):
    X, y = digits
    search = GridSearchCV(
        _net(SAMNetClassifier, "sam", module__batch_norm=True),
        {"solver": ["sam", *FAMILY], "rho": [0.05, 0.2]},
        cv=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 10
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["solver"] in ["sam", *FAMILY]


def test_regressor_takes_the_family(digits):
    X, y = digits
    reg = _net(SAMNetRegressor, "wsam").fit(X, y.astype(np.float32))
    assert isinstance(reg.net_.optimizer_.rule, WSAM)


def test_msam_takes_the_direct_step_not_skorchs_train_step(digits, monkeypatch):
    # Momentum-SAM went through skorch's stock train_step (its closure bookkeeping
    # per call); the direct path computes the same fit without it.
    import skorch

    import sksam._skorch as net_skorch

    X, y = digits
    direct = _net(SAMNetClassifier, "msam", optimizer__momentum=0.9).fit(X, y)
    calls = []
    original = skorch.NeuralNet.train_step_single
    monkeypatch.setattr(
        skorch.NeuralNet,
        "train_step_single",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    _net(SAMNetClassifier, "msam", optimizer__momentum=0.9).fit(X, y)
    assert not calls
    monkeypatch.setattr(net_skorch, "closure_optimizer_of", lambda optimizer: None)
    stock = _net(SAMNetClassifier, "msam", optimizer__momentum=0.9).fit(X, y)
    assert len(calls) == 8  # the stock path: one per batch
    for a, b in zip(net_weights(direct), net_weights(stock)):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(direct.loss_curve_, stock.loss_curve_)
