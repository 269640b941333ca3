"""The cheap SAM variants inside the estimators: solver values, pass counts, grid searches."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import GridSearchCV

import sksam._two_layer_model as two_layer_model
from sksam import (
    SAMNetClassifier,
    SAMNetRegressor,
    SAMTwoLayerClassifier,
    SAMTwoLayerRegressor,
)
from sksam.datasets import make_teacher_student
from sksam.optim import SAM, LookSAM, MomentumSAM


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:200] / 16.0).astype(np.float32), y[:200]


@pytest.fixture(scope="module")
def teacher():
    X, y = make_teacher_student(n_samples=60, n_features=4, random_state=0)
    return X, y


def _count_gradients(monkeypatch):
    calls = []
    original = two_layer_model.loss_and_gradient
    monkeypatch.setattr(
        two_layer_model,
        "loss_and_gradient",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    return calls


@pytest.mark.parametrize(
    "solver, sam_every, expected",
    [("gd", 5, 20), ("sam", 5, 40), ("every_k", 4, 25), ("looksam", 4, 25), ("rst", 1, 40)],
)
def test_two_layer_gradients_per_step(monkeypatch, teacher, solver, sam_every, expected):
    X, y = teacher
    calls = _count_gradients(monkeypatch)
    reg = SAMTwoLayerRegressor(
        solver=solver, rho=0.1, sam_every=sam_every, n_hidden=8, max_iter=20, sharpness=None, tol=0
    )
    with pytest.warns(Warning):  # max_iter reached
        reg.fit(X, y)
    assert len(calls) == expected


@pytest.mark.parametrize("solver", ["every_k", "looksam"])
def test_two_layer_variant_every_step_is_sam_bit_for_bit(teacher, solver):
    X, y = teacher
    fits = [
        SAMTwoLayerRegressor(
            solver=s,
            rho=0.1,
            sam_every=1,
            n_hidden=8,
            max_iter=15,
            sharpness=None,
            tol=0,
            random_state=0,
        )
        for s in ("sam", solver)
    ]
    for reg in fits:
        with pytest.warns(Warning):
            reg.fit(X, y)
    np.testing.assert_array_equal(fits[0].coefs_[0], fits[1].coefs_[0])


def test_two_layer_looksam_follows_the_rule_on_the_flat_vector(teacher):
    # After a refresh the next step adds alpha |g| / |g_v| g_v to g.
    X, y = teacher
    X_t, Y_t = (
        torch.as_tensor(X, dtype=torch.float32),
        torch.as_tensor(y[:, None], dtype=torch.float32),
    )
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(4, 6, generator=gen) * 0.3,
        torch.zeros(6),
        torch.randn(6, 1, generator=gen) * 0.3,
        torch.zeros(1),
    ]
    state = two_layer_model.FlatParams(tensors, train_output_layer=True)
    w0 = state.flat.clone()
    opts = dict(solver="sam", rho=0.2, learning_rate=0.1, activation="tanh")
    schedule = LookSAM(k=2, alpha=0.5)
    two_layer_model.step_(state, X_t, Y_t, schedule=schedule, **opts)
    g_v = schedule.g_v[0].clone()
    w1 = state.flat.clone()
    two_layer_model.loss_and_gradient(
        state.params, X_t, Y_t, "tanh", train_output_layer=True, out=state.grads
    )
    g = state.grad.clone()
    two_layer_model.step_(state, X_t, Y_t, schedule=schedule, **opts)
    expected = w1 - 0.1 * (g + 0.5 * g.norm() / g_v.norm() * g_v)
    torch.testing.assert_close(state.flat, expected)
    assert not torch.equal(w0, w1)


def test_two_layer_grid_search_over_variant_and_rho(teacher):
    X, y = teacher
    search = GridSearchCV(
        SAMTwoLayerRegressor(n_hidden=8, max_iter=30, sharpness=None, tol=0, random_state=0),
        {"solver": ["sam", "looksam", "every_k"], "rho": [0.05, 0.2]},
        cv=2,
    )
    with pytest.warns(Warning):
        search.fit(X, y)
    assert len(search.cv_results_["params"]) == 6
    assert search.best_params_["solver"] in ("sam", "looksam", "every_k")


def test_two_layer_refuses_momentum_sam(teacher):
    X, y = teacher
    with pytest.raises(ValueError, match="'solver' parameter of SAMTwoLayerRegressor must be"):
        SAMTwoLayerRegressor(solver="msam").fit(X, y)


@pytest.fixture(scope="module")
def three_classes():
    return make_classification(
        n_samples=60,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=0,
    )


@pytest.mark.parametrize(
    "solver, sam_every, expected",
    [("gd", 5, 20), ("sam", 5, 40), ("every_k", 4, 25), ("looksam", 4, 25), ("rst", 1, 40)],
)
def test_two_layer_classifier_gradients_per_step(
    monkeypatch, three_classes, solver, sam_every, expected
):
    # the classifier shares the regressor's fit, schedule included
    X, y = three_classes
    calls = _count_gradients(monkeypatch)
    clf = SAMTwoLayerClassifier(
        solver=solver, rho=0.1, sam_every=sam_every, n_hidden=8, max_iter=20, sharpness=None, tol=0
    )
    with pytest.warns(Warning):  # max_iter reached
        clf.fit(X, y)
    assert len(calls) == expected


@pytest.mark.parametrize("solver", ["every_k", "looksam", "rst"])
def test_two_layer_classifier_variant_every_step_is_sam_bit_for_bit(three_classes, solver):
    X, y = three_classes
    fits = [
        SAMTwoLayerClassifier(
            solver=s, rho=0.1, sam_every=1, n_hidden=8, max_iter=15, tol=None, random_state=0
        ).fit(X, y)
        for s in ("sam", solver)
    ]
    np.testing.assert_array_equal(fits[0].coefs_[0], fits[1].coefs_[0])
    np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))


def test_two_layer_classifier_grid_search_over_variant_and_rho(three_classes):
    X, y = three_classes
    search = GridSearchCV(
        SAMTwoLayerClassifier(n_hidden=8, max_iter=30, sharpness=None, tol=None, random_state=0),
        {"solver": ["sam", "looksam", "every_k", "rst", "aesam"], "rho": [0.05, 0.2]},
        scoring="neg_log_loss",
        cv=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 10
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["solver"] in ("sam", "looksam", "every_k", "rst", "aesam")
    assert search.best_estimator_.sam_every == 5


def test_two_layer_classifier_refuses_momentum_sam_and_a_zero_period(three_classes):
    X, y = three_classes
    with pytest.raises(ValueError, match="'solver' parameter of SAMTwoLayerClassifier must be"):
        SAMTwoLayerClassifier(solver="msam").fit(X, y)
    with pytest.raises(ValueError, match="'sam_every' parameter of SAMTwoLayerClassifier must be"):
        SAMTwoLayerClassifier(solver="every_k", sam_every=0).fit(X, y)


def test_two_layer_verbose_share_counts_the_scheduled_sam_steps(three_classes, capsys):
    # the stopping line reports SAM's share for the cheap variants too: zero SAM
    # steps would give 0.0 %, every_k with k=1 gives SAM's own share
    X, y = three_classes
    shares = {}
    for solver in ("sam", "every_k", "looksam"):
        SAMTwoLayerClassifier(
            solver=solver,
            sam_every=1 if solver == "every_k" else 3,
            rho=0.2,
            n_hidden=8,
            max_iter=15,
            tol=None,
            sharpness=None,
            random_state=0,
            verbose=1,
        ).fit(X, y)
        last = capsys.readouterr().out.strip().splitlines()[-1]
        shares[solver] = float(last.split("accounts for ")[1].split("%")[0])
    assert shares["every_k"] == shares["sam"] > 0
    assert shares["looksam"] > 0


def _net(cls, **kwargs):
    return cls(
        module__hidden_layer_sizes=(16,),
        max_epochs=2,
        batch_size=50,
        sharpness=None,
        random_state=0,
        lr=0.1,
        **kwargs,
    )


@pytest.mark.parametrize(
    "solver, sam_every, passes",
    [("gd", 5, 8), ("sam", 5, 16), ("every_k", 4, 10), ("looksam", 4, 10), ("msam", 5, 8)],
)
def test_net_forward_passes_per_step(digits, solver, sam_every, passes):
    # 200 rows in batches of 50, 2 epochs: 8 steps.
    X, y = digits
    clf = _net(SAMNetClassifier, solver=solver, sam_every=sam_every)
    clf.fit(X, y)
    forwards = []

    def count(module, *args):  # training passes only: the fit's check runs one in eval mode
        if module.training:
            forwards.append(1)

    clf.net_.module_.register_forward_hook(count)
    clf.set_params(warm_start=True)
    clf.fit(X, y)
    assert len(forwards) == passes


def test_net_optimizer_carries_the_schedule(digits):
    X, y = digits
    clf = _net(SAMNetClassifier, solver="looksam", sam_every=3).fit(X, y)
    opt = clf.net_.optimizer_
    assert isinstance(opt, SAM) and isinstance(opt.schedule, LookSAM) and opt.schedule.k == 3
    msam = _net(SAMNetClassifier, solver="msam", optimizer__momentum=0.9).fit(X, y)
    assert isinstance(msam.net_.optimizer_, MomentumSAM)
    assert msam.net_.optimizer_.param_groups[0]["momentum"] == 0.9


def test_net_msam_needs_sgd(digits):
    X, y = digits
    with pytest.raises(ValueError, match="solver='msam' \\(Momentum-SAM\\) is SGD with momentum"):
        _net(SAMNetClassifier, solver="msam", optimizer=torch.optim.Adam).fit(X, y)


def test_net_grid_search_over_variant_and_rho(digits):
    X, y = digits
    search = GridSearchCV(
        _net(SAMNetClassifier),
        {"solver": ["sam", "every_k", "msam"], "rho": [0.05, 0.2]},
        cv=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 6
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_regressor_takes_the_variants(digits):
    X, y = digits
    reg = _net(SAMNetRegressor, solver="rst", sam_every=2).fit(X, y.astype(np.float32))
    assert reg.net_.optimizer_.schedule.p == 0.5


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solver": "looksam", "m": 2}, "cannot be shared by m-sharpness chunks; got m=2"),
        ({"solver": "aesam", "m": 2}, "cannot be shared by m-sharpness chunks"),
        ({"solver": "msam", "m": 2}, "supports m=1, precision='float32'"),
        ({"solver": "msam", "precision": "bfloat16"}, "precision='bfloat16'"),
    ],
)
def test_net_refuses_the_combinations_a_variant_does_not_define(digits, params, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        _net(SAMNetClassifier, **params).fit(X, y)


def test_net_every_k_composes_with_m_sharpness(digits):
    X, y = digits
    clf = _net(SAMNetClassifier, solver="every_k", sam_every=2, m=2).fit(X, y)
    assert clf.net_.optimizer_.schedule.t == 8


@pytest.mark.parametrize("solver", ["every_k", "looksam", "rst", "aesam"])
def test_two_layer_divergence_of_a_variant_names_rho(solver):
    # the failure diagnosis asks whether the solver perturbs: a scheduled solver
    # perturbs (on some steps), and the counterfactual without rho is plain GD
    X, y = make_teacher_student(n_samples=60, n_features=4, n_teacher=2, random_state=0)
    reg = SAMTwoLayerRegressor(
        solver=solver, sam_every=2, rho=1e6, n_hidden=8, max_iter=30, tol=None, random_state=0
    )
    with pytest.raises(ValueError, match=r"rho=1000000.0 is too large for this data") as info:
        reg.fit(X, y)
    assert f"with solver={solver!r} and rho=1000000.0" in str(info.value)
    assert not hasattr(reg, "coefs_")
