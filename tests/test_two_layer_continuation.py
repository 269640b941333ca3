"""SAMTwoLayer*: warm starts that continue a fit, seeds, zero weights, the cheap schedules.

Each test pins a behaviour that used to be silently wrong or misleadingly
reported: warm starts restarted the schedules and the batch order, numpy
integer seeds were not integers, a warm start kept training a network of the
old width, zero weights on a mini-batch were blamed on the learning rate.
"""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold

import sksam._two_layer_model as model
from sksam import SAMTwoLayerClassifier, SAMTwoLayerRegressor
from sksam._base import validation_split
from sksam.datasets import make_teacher_student

SOLVERS = ["gd", "sam", "usam", "asam", "every_k", "looksam", "rst", "aesam"]


def _data(n=48):
    return make_teacher_student(n_samples=n, n_features=4, n_teacher=2, random_state=0)


def _regressor(**params):
    defaults = {
        "n_hidden": 8,
        "tol": None,
        "rho": 0.1,
        "sam_every": 3,
        "sharpness": None,
        "random_state": 0,
    }
    return SAMTwoLayerRegressor(**{**defaults, **params})


def _weights(estimator):
    return estimator.coefs_ + estimator.intercepts_


def _assert_same_fit(a, b):
    for u, v in zip(_weights(a), _weights(b)):
        np.testing.assert_array_equal(u, v)
    assert a.loss_curve_ == b.loss_curve_
    assert a.n_iter_ == b.n_iter_


def _assert_other_fit(a, b):
    assert any(not np.array_equal(u, v) for u, v in zip(_weights(a), _weights(b)))


def _count_second_gradients(monkeypatch):
    """A list that records ``need_loss`` of every gradient (False: SAM's second)."""
    calls = []
    original = model.loss_and_gradient
    monkeypatch.setattr(
        model,
        "loss_and_gradient",
        lambda *a, **k: calls.append(k.get("need_loss", True)) or original(*a, **k),
    )
    return calls


# --------------------------------------------------------------------------
# warm starts continue the schedule and the batch order
# --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("solver", SOLVERS)
def test_two_warm_fits_of_5_are_one_fit_of_10(solver, batch_size):
    X, y = _data()
    one = _regressor(solver=solver, batch_size=batch_size, max_iter=10).fit(X, y)
    two = _regressor(solver=solver, batch_size=batch_size, max_iter=5, warm_start=True)
    two.fit(X, y).fit(X, y)
    _assert_same_fit(one, two)


def test_two_warm_classifier_fits_are_one_fit():
    X, y = _data()
    y = (y > np.median(y)).astype(int)
    params = {"solver": "looksam", "n_hidden": 8, "tol": None, "batch_size": 12}
    params.update(sharpness=None, random_state=0, sam_every=3)
    one = SAMTwoLayerClassifier(max_iter=8, **params).fit(X, y)
    two = SAMTwoLayerClassifier(max_iter=4, warm_start=True, **params).fit(X, y).fit(X, y)
    _assert_same_fit(one, two)


def test_ten_one_step_warm_fits_of_every_k_are_not_sam():
    # each warm call used to restart the schedule at t=0, a SAM step: ten
    # one-step warm fits of 'every_k' were 'sam' bit for bit
    X, y = _data()
    warm = {"max_iter": 1, "warm_start": True}
    every_k, sam = _regressor(solver="every_k", **warm), _regressor(solver="sam", **warm)
    for _ in range(10):
        every_k.fit(X, y)
        sam.fit(X, y)
    _assert_same_fit(every_k, _regressor(solver="every_k", max_iter=10).fit(X, y))
    _assert_other_fit(every_k, sam)


def test_a_warm_start_with_other_schedule_parameters_starts_a_new_schedule(monkeypatch):
    # 'every_k' with sam_every=3 takes SAM at t=0 only of t=0, 1; continued,
    # t=2 would be plain; with sam_every=2 a new schedule starts at t=0: SAM
    X, y = _data()
    reg = _regressor(solver="every_k", max_iter=2, warm_start=True).fit(X, y)
    calls = _count_second_gradients(monkeypatch)
    reg.set_params(max_iter=1).fit(X, y)
    assert calls.count(False) == 0
    reg.set_params(sam_every=2).fit(X, y)
    assert calls.count(False) == 1


# --------------------------------------------------------------------------
# architecture changes under warm_start
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, fitted", [("n_hidden", 16, 8), ("activation", "tanh", "relu")]
)
def test_warm_start_after_an_architecture_change_is_an_error(name, value, fitted):
    # it used to keep training the width-8 relu network silently
    X, y = _data()
    reg = _regressor(max_iter=3, warm_start=True).fit(X, y)
    before = [w.copy() for w in _weights(reg)]
    reg.set_params(**{name: value})
    match = f"warm_start=True but {name}={value!r} differs from the previous fit's {name}="
    with pytest.raises(ValueError, match=match + f"{fitted!r}.*warm_start=False"):
        reg.fit(X, y)
    for u, v in zip(before, _weights(reg)):
        np.testing.assert_array_equal(u, v)
    reg.set_params(warm_start=False).fit(X, y)  # a cold fit builds the new network
    if name == "n_hidden":
        assert reg.coefs_[0].shape == (4, 16)


# --------------------------------------------------------------------------
# random_state as scikit-learn reads it
# --------------------------------------------------------------------------


def test_numpy_integer_and_random_state_instance_seed_rst_as_the_integer():
    # np.int64(5) used to seed 'rst''s generator with 0, not 5
    X, y = _data()
    fits = [
        _regressor(solver="rst", max_iter=40, random_state=seed).fit(X, y)
        for seed in (5, np.int64(5), np.random.RandomState(5))
    ]
    _assert_same_fit(fits[0], fits[1])
    _assert_same_fit(fits[0], fits[2])
    _assert_other_fit(fits[0], _regressor(solver="rst", max_iter=40, random_state=6).fit(X, y))


# --------------------------------------------------------------------------
# zero sample weights on a mini-batch or on the validation part
# --------------------------------------------------------------------------


def test_a_mini_batch_of_zero_weights_adds_nothing_and_is_skipped():
    # it used to divide by its zero total weight and blame learning_rate.
    # With all the weight on one row, batches of one row: each epoch is one
    # step on that row, which is full-batch gradient descent on it alone
    X, y = _data()
    weights = np.zeros(len(y))
    weights[7] = 3.0
    params = {"solver": "sam", "max_iter": 6}
    batched = _regressor(batch_size=1, **params).fit(X, y, sample_weight=weights)
    alone = _regressor(**params).fit(X[7:8], y[7:8])
    for u, v in zip(_weights(batched), _weights(alone)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched.loss_curve_, alone.loss_curve_, rtol=1e-6)


def test_mini_batches_of_zero_weights_take_no_step(monkeypatch):
    X, y = _data()
    weights = np.zeros(len(y))
    weights[:2] = 1.0
    steps = []
    original = model.step_
    monkeypatch.setattr(model, "step_", lambda *a, **k: steps.append(1) or original(*a, **k))
    _regressor(batch_size=4, max_iter=5).fit(X, y, sample_weight=weights)
    assert 5 <= len(steps) <= 10  # one or two batches per epoch hold the two rows


@pytest.mark.parametrize("classifier", [False, True])
def test_zero_weights_on_the_whole_validation_part_name_sample_weight(classifier):
    # it used to say "at least one non-zero" (r2_score) or score nan silently
    X, y = _data()
    if classifier:
        y = (y > np.median(y)).astype(int)
    stratify = {"stratify": y} if classifier else {}
    _, val = validation_split(len(y), 0.25, np.random.RandomState(0), **stratify)
    weights = np.ones(len(y))
    weights[val] = 0.0
    cls = SAMTwoLayerClassifier if classifier else SAMTwoLayerRegressor
    est = cls(early_stopping=True, validation_fraction=0.25, random_state=0, n_hidden=4)
    match = r"sample_weight is 0 on every row of the validation part \(12 rows .*early_stopping"
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, sample_weight=weights)


# --------------------------------------------------------------------------
# rst_p and aesam_c: the cheap schedules' parameters
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, twin",
    [
        ({"solver": "rst", "rst_p": 1.0}, {"solver": "sam"}),
        ({"solver": "rst", "rst_p": 0.0}, {"solver": "gd"}),
        ({"solver": "aesam", "aesam_c": -1e9}, {"solver": "sam"}),  # every gradient is large
        ({"solver": "aesam", "aesam_c": 1e9}, {"solver": "gd"}),  # none is
        ({"solver": "aesam", "aesam_c": (0.5, 0.5)}, {"solver": "aesam", "aesam_c": 0.5}),
        (
            {"solver": "rst", "rst_p": 0.25, "sam_every": 2},
            {"solver": "rst", "rst_p": None, "sam_every": 4},
        ),
    ],
)
def test_schedule_parameters_at_their_limits(params, twin):
    X, y = _data()
    _assert_same_fit(
        _regressor(max_iter=12, **params).fit(X, y), _regressor(max_iter=12, **twin).fit(X, y)
    )


def _sam_steps(monkeypatch, **params):
    """How many SAM steps a 20-iteration fit takes (second gradients)."""
    X, y = _data()
    calls = _count_second_gradients(monkeypatch)
    _regressor(max_iter=20, **params).fit(X, y)
    return calls.count(False)


def test_rst_p_sets_the_share_of_sam_steps(monkeypatch):
    counts = [_sam_steps(monkeypatch, solver="rst", rst_p=p) for p in (0.1, 0.5, 0.9)]
    assert counts[0] < counts[1] < counts[2]


def test_aesam_c_pair_moves_from_sam_to_gradient_steps(monkeypatch):
    # c from -1e9 (every step SAM) to 1e9 (none): SAM on the first half only
    steps = _sam_steps(monkeypatch, solver="aesam", aesam_c=(-1e9, 1e9))
    assert steps == 10


@pytest.mark.parametrize(
    "params, match",
    [
        ({"rst_p": 1.5}, "'rst_p' parameter of SAMTwoLayerRegressor must be"),
        ({"aesam_c": "big"}, "'aesam_c' parameter of SAMTwoLayerRegressor must be"),
        ({"aesam_c": (0.0, 1.0, 2.0)}, r"aesam_c must be .*got aesam_c=\(0.0, 1.0, 2.0\)"),
        ({"aesam_c": float("nan")}, "aesam_c must be a finite number"),
        ({"aesam_c": (0.0, float("inf"))}, "aesam_c must be a finite number"),
    ],
)
def test_schedule_parameter_errors_name_the_parameter(params, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        _regressor(solver="aesam", max_iter=2, **params).fit(X, y)


def test_grid_search_over_the_schedule_parameters():
    X, y = _data()
    grid = [
        {"solver": ["rst"], "rst_p": [0.2, 0.8]},
        {"solver": ["aesam"], "aesam_c": [0.0, (-1.0, 1.0)]},
    ]
    search = GridSearchCV(_regressor(max_iter=5), grid, cv=KFold(2)).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_ in [
        {"solver": "rst", "rst_p": 0.2},
        {"solver": "rst", "rst_p": 0.8},
        {"solver": "aesam", "aesam_c": 0.0},
        {"solver": "aesam", "aesam_c": (-1.0, 1.0)},
    ]
