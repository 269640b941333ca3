"""SAMTwoLayerRegressor against its equations, then invariances, then the API."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import sksam._two_layer_model as model
from sksam import SAMTwoLayerRegressor
from sksam._base import validation_split
from sksam._two_layer_model import (
    ACTIVATIONS,
    NUMPY_ACTIVATIONS,
    TORCH_ACTIVATIONS,
    FlatParams,
    loss_and_gradient,
    step_,
    torch_activation,
)
from sksam._update_rules import ASAM_ETA
from sksam.datasets import make_teacher_student
from sksam.exceptions import DivergenceWarning
from sksam.sharpness import top_hessian_eigenvalue

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _problem(n=30, d=4, h=5, k=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=torch.float64, generator=gen)
    Y = torch.randn(n, k, dtype=torch.float64, generator=gen)
    shapes = [(d, h), (h,), (h, k), (k,)]
    params = [torch.randn(*s, dtype=torch.float64, generator=gen) for s in shapes]
    return params, X, Y


def _loss(params, X, Y, activation):
    W, b, a, c = params
    out = torch_activation(activation, X @ W + b) @ a + c
    return 0.5 * (out - Y).square().sum() / X.shape[0]


def _fd_gradient(params, X, Y, activation, n_trained, h=1e-6):
    """Central finite differences of the loss, coordinate by coordinate."""
    grads = []
    for j, p in enumerate(params[:n_trained]):
        g = torch.zeros_like(p).reshape(-1)
        for i in range(p.numel()):
            plus = [q.clone() for q in params]
            minus = [q.clone() for q in params]
            plus[j].view(-1)[i] += h
            minus[j].view(-1)[i] -= h
            g[i] = (_loss(plus, X, Y, activation) - _loss(minus, X, Y, activation)) / (2 * h)
        grads.append(g.reshape(p.shape))
    return grads


def _data(n=60, seed=0):
    X, y = make_teacher_student(n_samples=n, n_features=4, n_teacher=2, random_state=seed)
    return X, y


def _fit(quiet=True, X=None, y=None, **params):
    X, y = _data() if X is None else (X, y)
    defaults = {"n_hidden": 8, "max_iter": 30, "random_state": 0}
    reg = SAMTwoLayerRegressor(**{**defaults, **params})
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", ConvergenceWarning)
        return reg.fit(X, y)


# --------------------------------------------------------------------------
# equations: gradient, SAM gradient, perturbation
# --------------------------------------------------------------------------


def test_one_activation_table():
    assert set(NUMPY_ACTIVATIONS) == set(TORCH_ACTIVATIONS) == set(ACTIVATIONS)
    z = np.linspace(-3, 3, 13)
    for name in ACTIVATIONS:
        np.testing.assert_allclose(
            torch_activation(name, torch.as_tensor(z)).numpy(), NUMPY_ACTIVATIONS[name](z)
        )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("train_output_layer", [False, True])
def test_hand_written_gradient_matches_autograd(activation, train_output_layer):
    n_trained = 4 if train_output_layer else 2
    params, X, Y = _problem(k=2)
    loss, grads = loss_and_gradient(params, X, Y, activation, train_output_layer=train_output_layer)
    leaves = [p.clone().requires_grad_() for p in params]
    expected_loss = _loss(leaves, X, Y, activation)
    expected = torch.autograd.grad(expected_loss, leaves[:n_trained])
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=0)
    assert len(grads) == n_trained
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["sam", "usam", "asam"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_sam_step_descends_along_finite_difference_gradient_at_w_plus_e(solver, activation):
    # Everything here is finite differences of the loss formula: the
    # gradient g at w, the perturbation e of the solver's equation, and the
    # gradient at w + e that the step must subtract.
    params, X, Y = _problem()
    rho, lr = 0.3, 1.0
    g = _fd_gradient(params, X, Y, activation, 4)
    if solver == "asam":
        t = [params[0].abs() + ASAM_ETA, torch.ones_like(params[1])]
        t += [params[2].abs() + ASAM_ETA, torch.ones_like(params[3])]
    else:
        t = [torch.ones_like(p) for p in params]
    direction = [ti * ti * gi if solver == "asam" else gi for ti, gi in zip(t, g)]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
    scale = rho if solver == "usam" else rho / norm
    shifted = [p + scale * di for p, di in zip(params, direction)]
    expected = _fd_gradient(shifted, X, Y, activation, 4)

    state = FlatParams(params, train_output_layer=True)
    step_(state, X, Y, solver=solver, rho=rho, learning_rate=lr, activation=activation)
    for b, p, e in zip(params, state.params, expected):
        torch.testing.assert_close(b - p, e, rtol=1e-6, atol=1e-8)


def test_flat_params_are_views_in_model_order():
    params, _, _ = _problem(k=2)
    for n_trained in (2, 4):
        state = FlatParams(params, train_output_layer=n_trained == 4)
        for p, q in zip(params, state.params):
            assert torch.equal(p, q)
        assert state.flat.numel() == sum(p.numel() for p in params[:n_trained])
        state.flat.zero_()  # the trained parameters are views of the flat vector
        for i, q in enumerate(state.params):
            trained = i < n_trained
            assert torch.equal(q, torch.zeros_like(q) if trained else params[i])


@pytest.mark.parametrize("solver", ["sam", "asam"])
@pytest.mark.parametrize("train_output_layer", [True, False])
def test_perturbation_has_norm_rho(monkeypatch, solver, train_output_layer):
    seen = []
    original = model.perturbation

    def spy(solver, rho, params, grads, adaptive):
        e = original(solver, rho, params, grads, adaptive=adaptive)
        seen.append(([p.clone() for p in params], e, adaptive))
        return e

    monkeypatch.setattr(model, "perturbation", spy)
    _fit(solver=solver, rho=0.37, max_iter=3, sharpness=None, train_output_layer=train_output_layer)
    assert len(seen) == 3
    n_weights = 4 * 8 + (8 if train_output_layer else 0)  # W, and a when trained
    for params, e, adaptive in seen:
        if solver == "sam":  # one flat vector, Euclidean norm rho
            assert adaptive == (True,)
            norm = torch.linalg.vector_norm(e[0].double()).item()
        else:  # ASAM scales the weight matrices only: norm rho in the T^-1 metric
            assert adaptive == (True, False)
            assert params[0].numel() == n_weights
            t = params[0].abs() + ASAM_ETA
            norm = torch.sqrt(((e[0] / t).double() ** 2).sum() + (e[1].double() ** 2).sum())
            norm = norm.item()
        assert norm == pytest.approx(0.37, rel=1e-5)


@pytest.mark.parametrize("solver", ["sam", "usam", "asam"])
def test_rho_zero_is_gradient_descent_bit_for_bit(solver):
    gd = _fit(solver="gd", max_iter=25)
    sam = _fit(solver=solver, rho=0.0, max_iter=25)
    for a, b in zip(gd.coefs_ + gd.intercepts_, sam.coefs_ + sam.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert gd.loss_curve_ == sam.loss_curve_
    assert gd.sharpness_ == sam.sharpness_


def test_gd_ignores_rho():
    a = _fit(solver="gd", rho=0.0)
    b = _fit(solver="gd", rho=0.5)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_sam_with_positive_rho_differs_from_gd():
    gd = _fit(solver="gd")
    sam = _fit(solver="sam", rho=0.1)
    assert not np.array_equal(gd.coefs_[0], sam.coefs_[0])


def test_predict_is_the_model_formula():
    X, y = _data()
    reg = _fit(X=X, y=y, activation="tanh")
    W, a = reg.coefs_
    b, c = reg.intercepts_
    np.testing.assert_allclose(reg.predict(X), (np.tanh(X @ W + b) @ a + c).ravel())
    assert reg.coefs_[0].shape == (4, 8) and reg.coefs_[1].shape == (8, 1)
    assert reg.intercepts_[0].shape == (8,) and reg.intercepts_[1].shape == (1,)


def test_loss_curve_is_the_training_loss_before_each_step():
    X, y = _data()
    reg = _fit(X=X, y=y, solver="gd", max_iter=1)
    rng = np.random.RandomState(0)  # the initialization, as documented
    W = rng.standard_normal((4, 8)) * 0.1 / 2.0
    a = rng.standard_normal((8, 1)) * 0.1 / np.sqrt(8)
    initial = 0.5 * np.mean((np.maximum(X @ W, 0) @ a - y[:, None]) ** 2)
    assert reg.loss_curve_[0] == pytest.approx(initial, rel=1e-5)


# --------------------------------------------------------------------------
# sharpness_
# --------------------------------------------------------------------------


def test_sharpness_is_top_eigenvalue_of_exact_hessian():
    X, y = _data(n=40)
    reg = _fit(X=X, y=y, n_hidden=4, max_iter=200, activation="tanh", solver="sam", rho=0.05)
    params = [
        torch.as_tensor(v)
        for v in [reg.coefs_[0], reg.intercepts_[0], reg.coefs_[1], reg.intercepts_[1]]
    ]
    shapes = [p.shape for p in params]
    Y = torch.as_tensor(y[:, None])
    Xt = torch.as_tensor(X)

    def flat_loss(v):
        pieces, start = [], 0
        for s in shapes:
            size = int(np.prod(s))
            pieces.append(v[start : start + size].reshape(s))
            start += size
        return _loss(pieces, Xt, Y, "tanh")

    H = torch.autograd.functional.hessian(flat_loss, torch.cat([p.reshape(-1) for p in params]))
    expected = np.linalg.eigvalsh(H.numpy())[-1]
    # the estimator works in float32; the Lanczos tolerance is 1e-4
    assert reg.sharpness_ == pytest.approx(expected, rel=1e-3)


def test_sharpness_of_hidden_layer_only_when_output_frozen():
    X, y = _data()
    reg = _fit(X=X, y=y, train_output_layer=False, activation="tanh", max_iter=50)
    W = torch.tensor(reg.coefs_[0], requires_grad=True)
    b = torch.tensor(reg.intercepts_[0], requires_grad=True)
    a, c = torch.tensor(reg.coefs_[1]), torch.tensor(reg.intercepts_[1])
    Xt, Y = torch.as_tensor(X), torch.as_tensor(y[:, None])
    expected = top_hessian_eigenvalue(
        lambda: _loss([W, b, a, c], Xt, Y, "tanh"), [W, b], tol=1e-10, random_state=0
    )
    assert reg.sharpness_ == pytest.approx(expected, rel=1e-3)


def test_sharpness_measures():
    assert _fit(sharpness=None).sharpness_ is None
    trace = _fit(sharpness="trace").sharpness_
    rho = _fit(sharpness="rho", rho=0.1).sharpness_
    assert isinstance(trace, float) and isinstance(rho, float)
    assert rho > 0


def test_sam_solution_is_flatter_than_gd_on_noisy_teacher():
    # a small version of benchmarks/claim_two_layer.py: this is the paper's
    # claim about sharpness, with a margin that is large at this seed
    X, y = make_teacher_student(n_samples=100, n_features=5, random_state=0)
    gd = _fit(X=X, y=y, solver="gd", n_hidden=50, max_iter=1500, tol=0)
    sam = _fit(X=X, y=y, solver="sam", rho=0.3, n_hidden=50, max_iter=1500, tol=0)
    assert sam.sharpness_ < 0.8 * gd.sharpness_  # measured: 0.71


# --------------------------------------------------------------------------
# training loop: stopping rules, warm start, mini-batches
# --------------------------------------------------------------------------


def test_same_random_state_same_fit():
    a = _fit(random_state=3, batch_size=16, sharpness="trace")
    b = _fit(random_state=3, batch_size=16, sharpness="trace")
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)
    assert a.sharpness_ == b.sharpness_
    c = _fit(random_state=4, batch_size=16)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_max_iter_gives_convergence_warning():
    with pytest.warns(ConvergenceWarning, match=r"maximum iterations \(5\) reached"):
        _fit(quiet=False, max_iter=5, tol=0.0)


def test_tol_stops_training_like_mlp():
    # with a huge tol only the first iteration counts as an improvement (on
    # an infinite best loss); then n_iter_no_change + 1 without one, as in
    # MLPRegressor
    # no "maximum iterations" warning; six steps leave the loss above 90 % of
    # a constant's, which the plateau warning reports
    with pytest.warns(ConvergenceWarning) as record:
        reg = _fit(quiet=False, max_iter=100, tol=1e3, n_iter_no_change=4)
    assert [str(w.message).split(" at iteration")[0] for w in record] == [
        "SAMTwoLayerRegressor: the stopping rule ended training"
    ]
    assert reg.n_iter_ == 6
    assert len(reg.loss_curve_) == 6
    assert reg.best_loss_ == min(reg.loss_curve_)
    assert reg.validation_scores_ is None and reg.best_validation_score_ is None


def test_tol_none_runs_max_iter_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg = _fit(quiet=False, max_iter=40, tol=None, n_iter_no_change=1)
    assert reg.n_iter_ == 40


def test_early_stopping_keeps_best_weights():
    X, y = make_teacher_student(n_samples=80, n_features=4, random_state=1)
    reg = _fit(
        X=X,
        y=y,
        early_stopping=True,
        validation_fraction=0.25,
        n_hidden=30,
        max_iter=400,
        n_iter_no_change=20,
        tol=0.0,
        random_state=5,
        learning_rate=0.2,
    )
    scores = reg.validation_scores_
    assert len(scores) == reg.n_iter_
    assert reg.best_validation_score_ == max(scores)
    assert np.argmax(scores) < len(scores) - 1  # the kept weights are not the last ones
    # the documented split: train_test_split with the estimator's random state
    _, X_val, _, y_val = train_test_split(
        X, y, test_size=0.25, random_state=np.random.RandomState(5)
    )
    assert r2_score(y_val, reg.predict(X_val)) == pytest.approx(max(scores), abs=1e-5)


def test_validation_set_too_small():
    X, y = _data(n=10)
    with pytest.raises(ValueError, match=r"validation_fraction=0.01 of n_samples=10 leaves 1"):
        _fit(X=X, y=y, early_stopping=True, validation_fraction=0.01)


def test_warm_start_continues_exactly():
    once = _fit(solver="sam", rho=0.1, max_iter=20, tol=0)
    twice = _fit(solver="sam", rho=0.1, max_iter=10, tol=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        twice.fit(*_data())
    for u, v in zip(once.coefs_ + once.intercepts_, twice.coefs_ + twice.intercepts_):
        np.testing.assert_array_equal(u, v)
    assert twice.n_iter_ == 20
    assert twice.loss_curve_ == once.loss_curve_


def test_warm_start_rejects_other_number_of_outputs():
    reg = _fit(warm_start=True)
    X, y = _data()
    with pytest.raises(ValueError, match="warm_start=True but y has 2 outputs"):
        reg.fit(X, np.c_[y, y])


def test_minibatches_count_epochs_and_average_losses(monkeypatch):
    calls = []
    original = model.step_

    def counting(state, X, Y, **options):
        calls.append(X.shape[0])
        return original(state, X, Y, **options)

    monkeypatch.setattr(model, "step_", counting)
    X, y = _data(n=50)
    reg = _fit(X=X, y=y, batch_size=16, max_iter=3, tol=0)
    assert reg.n_iter_ == 3
    assert calls == [16, 16, 16, 2] * 3


def test_train_output_layer_false_freezes_output_layer():
    X, y = _data()
    reg = _fit(X=X, y=y, train_output_layer=False, n_hidden=8)
    np.testing.assert_allclose(np.abs(reg.coefs_[1]), 1 / np.sqrt(8), rtol=1e-6)
    np.testing.assert_allclose(reg.intercepts_[1], [y.mean()], rtol=1e-6)


def test_multi_output():
    X, y = _data()
    Y = np.c_[y, -2 * y]
    reg = _fit(X=X, y=Y)
    assert reg.predict(X).shape == (60, 2)
    assert reg.coefs_[1].shape == (8, 2) and reg.n_outputs_ == 2


def test_keyboard_interrupt_keeps_current_weights(monkeypatch):
    original = model.step_
    calls = []

    def interrupted(*args, **options):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **options)

    monkeypatch.setattr(model, "step_", interrupted)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        reg = _fit(quiet=False, max_iter=10, solver="gd")
    assert reg.n_iter_ == 3
    assert np.all(np.isfinite(reg.predict(_data()[0])))


def test_verbose_prints_the_loss(capsys):
    _fit(max_iter=2, verbose=True)
    assert "Iteration 2, loss = " in capsys.readouterr().out


# --------------------------------------------------------------------------
# bad input and divergence
# --------------------------------------------------------------------------


def test_divergent_step_size_raises_and_leaves_estimator_unfitted():
    X, y = _data()
    reg = SAMTwoLayerRegressor(learning_rate=1e4, max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="non-finite .* learning_rate=10000.0 is too large"):
        reg.fit(X, 100 * y)
    with pytest.raises(NotFittedError):
        reg.predict(X)


def test_failed_refit_keeps_the_earlier_fit():
    # a failed refit used to leave the estimator unfitted (issue 21); the
    # kernel and net estimators keep their model, and so does this one now
    X, y = _data()
    reg = _fit(X=X, y=y)
    before = reg.predict(X)
    reg.set_params(learning_rate=1e4)
    with pytest.raises(ValueError, match="non-finite"):
        reg.fit(X, 100 * y)
    np.testing.assert_array_equal(reg.predict(X), before)


def test_failed_warm_start_keeps_previous_fit():
    X, y = _data()
    reg = _fit(X=X, y=y, warm_start=True)
    before = reg.predict(X)
    reg.set_params(learning_rate=1e4)
    with pytest.raises(ValueError, match="non-finite"):
        reg.fit(X, 100 * y)
    np.testing.assert_array_equal(reg.predict(X), before)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solver": "adam"}, "'solver' parameter .* must be a str among"),
        ({"rho": -0.1}, "'rho' parameter .* must be a float in the range"),
        ({"activation": "gelu"}, "'activation' parameter"),
        ({"sharpness": "sharp"}, "'sharpness' parameter"),
        ({"n_hidden": 0}, "'n_hidden' parameter"),
        ({"learning_rate": 0.0}, "'learning_rate' parameter"),
        ({"batch_size": 0}, "'batch_size' parameter"),
        ({"n_threads": 0}, "'n_threads' parameter"),
        # scikit-learn's name is 'logistic'
        ({"activation": "sigmoid"}, "'activation' parameter .* among .*'logistic'"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        SAMTwoLayerRegressor(**params).fit(*_data())


def test_bad_input_is_named():
    X, y = _data()
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SAMTwoLayerRegressor().fit(X_nan, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        SAMTwoLayerRegressor().fit(X, y[:-1])
    reg = _fit(X=X, y=y)
    with pytest.raises(ValueError, match="X has 3 features"):
        reg.predict(X[:, :3])


def test_unknown_or_missing_device():
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device"):
        SAMTwoLayerRegressor(device="gpu0").fit(*_data())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available.*available: 'cpu'"):
            SAMTwoLayerRegressor(device="cuda").fit(*_data())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_matches_cpu():
    cpu = _fit(device="cpu", solver="sam", rho=0.1)
    gpu = _fit(device="cuda", solver="sam", rho=0.1)
    for u, v in zip(cpu.coefs_ + cpu.intercepts_, gpu.coefs_ + gpu.intercepts_):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    assert gpu.sharpness_ == pytest.approx(cpu.sharpness_, rel=1e-3)


# --------------------------------------------------------------------------
# scikit-learn API
# --------------------------------------------------------------------------


def test_pickle_round_trip_gives_identical_predictions():
    X, y = _data()
    reg = _fit(X=X, y=y)
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))
    assert loaded.sharpness_ == reg.sharpness_


def test_grid_search_over_rho_in_a_pipeline():
    X, y = _data()
    reg = SAMTwoLayerRegressor(n_hidden=8, max_iter=20, random_state=0)
    pipe = make_pipeline(StandardScaler(), reg)
    search = GridSearchCV(pipe, {"samtwolayerregressor__rho": [0.0, 0.1]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    assert search.best_estimator_[-1].sharpness_ is not None
    assert clone(search.best_estimator_[-1]).get_params()["rho"] in (0.0, 0.1)


def _expected_failed_checks(estimator):
    return {
        "check_regressor_multioutput": (
            "the check's targets are unscaled (make_regression, standard deviation "
            "~100): full-batch gradient descent at the default learning_rate=0.05 "
            "diverges and fit raises its documented non-finite-loss ValueError"
        ),
        "check_sample_weight_equivalence_on_dense_data": (
            "the network trains in float32: weighted and repeated-row fits agree to "
            "about 1e-6, the check asks for 1e-7 (test_sample_weight_is_repeated_rows "
            "checks the equivalence at float32 tolerance)"
        ),
    }


@parametrize_with_checks(
    [SAMTwoLayerRegressor(n_hidden=20, max_iter=200, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# --------------------------------------------------------------------------
# silent failures made loud (issue: constant predictor on raw diabetes)
# --------------------------------------------------------------------------


def _diabetes():
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


def test_raw_diabetes_targets_warn_with_cause_and_remedy():
    # raw targets (25-346): the first steps kill every ReLU unit and the fit
    # ends as a constant predictor; it used to return silently
    X, y = _diabetes()
    with pytest.warns(DivergenceWarning) as record:
        reg = SAMTwoLayerRegressor(random_state=0).fit(X, y)
    message = str(record[0].message)
    assert "predicts a constant" in message
    assert "100 of 100 hidden units are constant" in message
    assert "TransformedTargetRegressor" in message and "lower learning_rate" in message
    assert record[0].filename == __file__
    assert np.unique(reg.predict(X)).size == 1  # the failure itself, now reported


def test_standardized_diabetes_is_silent():
    from sklearn.compose import TransformedTargetRegressor

    X, y = _diabetes()
    model = TransformedTargetRegressor(
        make_pipeline(StandardScaler(), SAMTwoLayerRegressor(random_state=0, sharpness=None)),
        transformer=StandardScaler(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y)
    assert model.score(X, y) > 0.4


def test_loss_that_ends_far_above_its_start_warns():
    # a step size just below the non-finite range: the loss rises threefold
    # and stays there (it used to return silently)
    X, y = _data()
    with pytest.warns(DivergenceWarning, match=r"training diverged: the training loss rose"):
        _fit(False, X, y, solver="gd", learning_rate=2.0, max_iter=40, tol=None, sharpness=None)


def test_healthy_fits_are_silent():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for solver in ["gd", "sam", "usam", "asam"]:
            _fit(False, X, y, solver=solver, rho=0.1, max_iter=200, tol=None, sharpness=None)
            _fit(False, X, y, solver=solver, rho=0.3, learning_rate=0.3, max_iter=200, tol=None)


def test_constant_target_is_not_a_divergence():
    X, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(False, X, np.full(len(X), 2.0), max_iter=50, tol=None, sharpness=None)


# --------------------------------------------------------------------------
# sample_weight
# --------------------------------------------------------------------------


@pytest.mark.parametrize("train_output_layer", [True, False])
def test_sample_weight_is_repeated_rows(train_output_layer):
    X, y = _data(n=40)
    weights = np.random.RandomState(0).randint(0, 4, size=len(y))
    params = dict(
        solver="sam", rho=0.1, max_iter=50, tol=None, train_output_layer=train_output_layer
    )
    weighted = _fit(X=X, y=y, **params, sharpness="top_eigenvalue").fit(X, y, sample_weight=weights)
    repeated = _fit(X=np.repeat(X, weights, axis=0), y=np.repeat(y, weights), **params)
    for u, v in zip(weighted.coefs_ + weighted.intercepts_, repeated.coefs_ + repeated.intercepts_):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)
    assert weighted.sharpness_ == pytest.approx(repeated.sharpness_, rel=1e-3)


def test_sample_weight_loss_is_weighted_mean():
    X, y = _data(n=30)
    weights = np.linspace(0.5, 2.0, len(y))
    reg = _fit(X=X, y=y, solver="gd", max_iter=1, tol=None).fit(X, y, sample_weight=weights)
    rng = np.random.RandomState(0)  # the documented initialization
    W = rng.standard_normal((4, 8)) * 0.1 / 2.0
    a = rng.standard_normal((8, 1)) * 0.1 / np.sqrt(8)
    residual = (np.maximum(X @ W, 0) @ a).ravel() - y
    expected = 0.5 * np.sum(weights * residual**2) / weights.sum()
    assert reg.loss_curve_[0] == pytest.approx(expected, rel=1e-5)


def test_sample_weight_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        SAMTwoLayerRegressor().fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="at least one non-zero"):
        SAMTwoLayerRegressor().fit(X, y, sample_weight=np.zeros(len(y)))
    # all the weight on the validation rows
    _, val = validation_split(len(y), 0.5, np.random.RandomState(0))
    weights = np.zeros(len(y))
    weights[val] = 1.0
    reg = SAMTwoLayerRegressor(early_stopping=True, validation_fraction=0.5, random_state=0)
    with pytest.raises(ValueError, match="sample_weight sums to 0 on the training rows"):
        reg.fit(X, y, sample_weight=weights)


def test_sample_weight_routed_through_pipeline_and_grid_search():
    import sklearn

    X, y = _data()
    weights = np.r_[np.zeros(10), np.ones(len(y) - 10)]
    with sklearn.config_context(enable_metadata_routing=True):
        reg = SAMTwoLayerRegressor(n_hidden=8, max_iter=20, tol=None, random_state=0)
        pipe = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            reg.set_fit_request(sample_weight=True).set_score_request(sample_weight=True),
        )
        search = GridSearchCV(pipe, {"samtwolayerregressor__rho": [0.0, 0.1]}, cv=2)
        search.fit(X, y, sample_weight=weights)
        routed = search.best_estimator_[-1]
        # the refit saw the weights: the same as fitting the rows with weight 1
        scaled = StandardScaler().fit_transform(X)
        plain = clone(routed).set_params(warm_start=False).fit(scaled[10:], y[10:])
    np.testing.assert_allclose(routed.coefs_[0], plain.coefs_[0], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------


class _ThreadRecorder(SAMTwoLayerRegressor):
    """Records torch's thread count during training (as a fitted attribute)."""

    def _train(self, *args):
        self._threads_during_fit = torch.get_num_threads()
        return super()._train(*args)

    def _fit_state(self, *args):
        # the fit stores only what _fit_state returns (a transactional fit)
        return {**super()._fit_state(*args), "threads_seen_": self._threads_during_fit}


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_fit_uses_one_thread_for_small_problems_and_restores(two_torch_threads):
    reg = _ThreadRecorder(n_hidden=8, max_iter=5, tol=None, sharpness=None).fit(*_data())
    assert reg.threads_seen_ == 1 and torch.get_num_threads() == 2
    reg = reg.set_params(n_threads=2).fit(*_data())
    assert reg.threads_seen_ == 2


def _threads_seen(estimator, X, y):
    return estimator.threads_seen_


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_grid_search_n_jobs_2_fits_with_one_thread_each(two_torch_threads, backend):
    import joblib

    from sksam._base import SMALL_PROBLEM

    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((40, 200)), rng.standard_normal(40)
    # a problem above the small-problem size (20 training rows, 200 features,
    # 1 output): only the joblib-worker rule can choose one thread
    n_hidden = SMALL_PROBLEM // (20 * 201) + 1
    reg = _ThreadRecorder(n_hidden=n_hidden, max_iter=1, tol=None, sharpness=None)
    search = GridSearchCV(
        reg, {"rho": [0.0, 0.1]}, cv=2, n_jobs=2, refit=False, scoring=_threads_seen
    )
    with joblib.parallel_config(backend=backend):
        search.fit(X, y)
    assert search.cv_results_["mean_test_score"].tolist() == [1.0, 1.0]
    assert torch.get_num_threads() == 2
    # the same fit outside joblib keeps torch's setting
    assert reg.fit(X[:20], y[:20]).threads_seen_ == 2


def test_string_targets_are_an_error_naming_y():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ValueError, match="SAMTwoLayerRegressor is a regressor: y must be numeric"):
        SAMTwoLayerRegressor(max_iter=2).fit(X, np.array(["a", "b"] * 3))
