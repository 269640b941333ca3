"""SAMTwoLayerClassifier against its equations, then invariances, then the API."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import sksam.two_layer as two_layer
from sksam import SAMTwoLayerClassifier, SAMTwoLayerRegressor
from sksam._two_layer_model import ACTIVATIONS, autograd_loss, loss_and_gradient, torch_activation
from sksam.sharpness import top_hessian_eigenvalue

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _binary(n=80, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=4, n_informative=3, n_redundant=0, random_state=seed
    )
    return X, y


def _three_classes(n=90, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return X, y


def _clf(**params):
    defaults = {"n_hidden": 8, "max_iter": 40, "tol": None, "random_state": 0}
    return SAMTwoLayerClassifier(**{**defaults, **params})


def _problem(k, n=30, d=4, h=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, max(k, 2), (n,), generator=gen)
    Y = labels[:, None].double() if k == 1 else torch.nn.functional.one_hot(labels, k).double()
    shapes = [(d, h), (h,), (h, k), (k,)]
    params = [torch.randn(*s, dtype=torch.float64, generator=gen) for s in shapes]
    return params, X, Y, labels


def _cross_entropy(params, X, labels, activation, k, weights=None):
    """The mean cross-entropy from torch's own loss functions."""
    W, b, a, c = params
    F = torch_activation(activation, X @ W + b) @ a + c
    if k == 1:
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(
            F[:, 0], labels.double(), reduction="none"
        )
    else:
        per_row = torch.nn.functional.cross_entropy(F, labels, reduction="none")
    if weights is None:
        return per_row.mean()
    return (weights[:, 0] * per_row).sum()


# --------------------------------------------------------------------------
# equations: the loss and its hand-written gradient
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("train_output_layer", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_hand_written_cross_entropy_gradient_matches_autograd(
    k, activation, train_output_layer, weighted
):
    params, X, Y, labels = _problem(k)
    weights = None
    if weighted:
        w = torch.linspace(0.5, 2.0, X.shape[0], dtype=torch.float64)[:, None]
        weights = w / w.sum()
    n_trained = 4 if train_output_layer else 2
    loss, grads = loss_and_gradient(
        params,
        X,
        Y,
        activation,
        train_output_layer=train_output_layer,
        weights=weights,
        loss="log_loss",
    )
    leaves = [p.clone().requires_grad_() for p in params]
    expected_loss = _cross_entropy(leaves, X, labels, activation, k, weights)
    expected = torch.autograd.grad(expected_loss, leaves[:n_trained])
    # softplus and logsumexp are computed in other orders than torch's losses
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-10, atol=0)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    # the autograd loss behind sharpness_ is the same function
    torch.testing.assert_close(
        autograd_loss(params, X, Y, activation, weights, loss="log_loss"),
        expected_loss.detach(),
        rtol=1e-10,
        atol=0,
    )


@pytest.mark.parametrize("data", [_binary, _three_classes])
def test_loss_curve_starts_at_sklearn_log_loss_of_the_documented_init(data):
    X, y = data()
    with warnings.catch_warnings():
        # one step from a start near zero predicts a single class, which warns
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = _clf(solver="gd", max_iter=1, init_scale=0.1).fit(X, y)
    k = 1 if len(clf.classes_) == 2 else 3
    rng = np.random.RandomState(0)  # the documented initialization
    W = rng.standard_normal((4, 8)) * 0.1 / 2.0
    a = rng.standard_normal((8, k)) * 0.1 / np.sqrt(8)
    F = np.maximum(X @ W, 0) @ a
    if k == 1:
        proba = 1 / (1 + np.exp(-F[:, 0]))
    else:
        proba = np.exp(F) / np.exp(F).sum(axis=1, keepdims=True)
    assert clf.loss_curve_[0] == pytest.approx(log_loss(y, proba), rel=1e-5)


@pytest.mark.parametrize("solver", ["sam", "usam", "asam"])
@pytest.mark.parametrize("data", [_binary, _three_classes])
def test_rho_zero_is_gradient_descent_bit_for_bit(solver, data):
    X, y = data()
    gd = _clf(solver="gd").fit(X, y)
    sam = _clf(solver=solver, rho=0.0).fit(X, y)
    for a, b in zip(gd.coefs_ + gd.intercepts_, sam.coefs_ + sam.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert gd.loss_curve_ == sam.loss_curve_
    assert gd.sharpness_ == sam.sharpness_


def test_sam_with_positive_rho_differs_from_gd():
    X, y = _binary()
    gd = _clf(solver="gd").fit(X, y)
    sam = _clf(solver="sam", rho=0.1).fit(X, y)
    assert not np.array_equal(gd.coefs_[0], sam.coefs_[0])


def test_sharpness_is_top_eigenvalue_of_exact_cross_entropy_hessian():
    X, y = _three_classes(n=45)
    clf = _clf(n_hidden=4, max_iter=100, activation="tanh", rho=0.05).fit(X, y)
    params = [
        torch.as_tensor(v)
        for v in [clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1]]
    ]
    shapes = [p.shape for p in params]
    Xt, labels = torch.as_tensor(X), torch.as_tensor(y)

    def flat_loss(v):
        pieces, start = [], 0
        for s in shapes:
            size = int(np.prod(s))
            pieces.append(v[start : start + size].reshape(s))
            start += size
        return _cross_entropy(pieces, Xt, labels, "tanh", 3)

    H = torch.autograd.functional.hessian(flat_loss, torch.cat([p.reshape(-1) for p in params]))
    assert clf.sharpness_ == pytest.approx(np.linalg.eigvalsh(H.numpy())[-1], rel=1e-3)


def test_sharpness_of_hidden_layer_only_when_output_frozen():
    X, y = _binary()
    clf = _clf(train_output_layer=False, activation="tanh").fit(X, y)
    W = torch.tensor(clf.coefs_[0], requires_grad=True)
    b = torch.tensor(clf.intercepts_[0], requires_grad=True)
    a, c = torch.tensor(clf.coefs_[1]), torch.tensor(clf.intercepts_[1])
    Xt, labels = torch.as_tensor(X), torch.as_tensor(y)
    expected = top_hessian_eigenvalue(
        lambda: _cross_entropy([W, b, a, c], Xt, labels, "tanh", 1), [W, b], tol=1e-10
    )
    assert clf.sharpness_ == pytest.approx(expected, rel=1e-3)


def test_frozen_output_layer_starts_at_the_class_log_odds():
    X, y = _three_classes()
    clf = _clf(train_output_layer=False).fit(X, y)
    np.testing.assert_allclose(clf.intercepts_[1], np.log(np.bincount(y) / len(y)), rtol=1e-6)
    np.testing.assert_allclose(np.abs(clf.coefs_[1]), 1 / np.sqrt(8), rtol=1e-6)


# --------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [_binary, _three_classes])
def test_probabilities_are_sigmoid_or_softmax_of_the_outputs(data):
    X, y = data()
    # small logits (the reference's 1 - p loses digits on confident ones)
    clf = _clf(init_scale=0.1, learning_rate=0.05, max_iter=100).fit(X, y)
    W, a = clf.coefs_
    b, c = clf.intercepts_
    F = np.maximum(X @ W + b, 0) @ a + c
    if F.shape[1] == 1:
        p = 1 / (1 + np.exp(-F[:, 0]))
        expected = np.c_[1 - p, p]
    else:
        expected = np.exp(F) / np.exp(F).sum(axis=1, keepdims=True)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(expected), rtol=1e-10)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(proba, axis=1)])


@pytest.mark.parametrize("k", [1, 3])
def test_log_proba_is_finite_for_huge_logits(k):
    X, y = (_binary if k == 1 else _three_classes)()
    clf = _clf(max_iter=1).fit(X, y)
    clf.coefs_[1] = clf.coefs_[1] * 1e6  # logits of order 1e5
    log_proba = clf.predict_log_proba(X)
    assert np.all(np.isfinite(log_proba)) and np.all(log_proba <= 0)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog"]),
        np.array([-3, 7]),
        np.array(["a", "b", "c"]),
        np.array([True, False]),
    ],
)
def test_classes_of_any_sortable_type(labels):
    X, codes = (_binary if len(labels) == 2 else _three_classes)()
    y = labels[codes]
    clf = _clf(max_iter=300, learning_rate=0.5).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    assert set(clf.predict(X)) <= set(labels)
    assert clf.score(X, y) > 0.8
    coded = _clf(max_iter=300, learning_rate=0.5).fit(X, np.searchsorted(np.sort(labels), y))
    np.testing.assert_array_equal(coded.predict_proba(X), clf.predict_proba(X))


def test_one_class_is_an_error_naming_the_classes():
    X, _ = _binary()
    with pytest.raises(ValueError, match=r"at least 2 classes .* got only one class: \['a'\]"):
        _clf().fit(X, np.full(len(X), "a"))


def test_continuous_targets_are_refused():
    X, _ = _binary()
    with pytest.raises(ValueError, match="Unknown label type"):
        _clf().fit(X, np.linspace(0, 1, len(X)))


def test_learns_iris():
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), SAMTwoLayerClassifier(random_state=0, tol=None))
    model.fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.9


# --------------------------------------------------------------------------
# the shared fit: stopping rule, sample weights, warm start, failures
# --------------------------------------------------------------------------


def test_early_stopping_watches_stratified_validation_accuracy():
    X, y = _three_classes(n=120)
    clf = _clf(early_stopping=True, validation_fraction=0.25, max_iter=300, tol=0.0)
    clf.set_params(n_iter_no_change=15, learning_rate=0.3, random_state=3).fit(X, y)
    scores = np.array(clf.validation_scores_)
    assert len(scores) == clf.n_iter_
    n_val = 30
    np.testing.assert_allclose(scores * n_val, np.round(scores * n_val), atol=1e-9)  # accuracies
    assert clf.best_validation_score_ == scores.max()
    _, X_val, _, y_val = train_test_split(
        X, y, test_size=n_val, random_state=np.random.RandomState(3), stratify=y
    )
    assert np.bincount(y_val).tolist() == [10, 10, 10]
    assert clf.score(X_val, y_val) == pytest.approx(scores.max())


@pytest.mark.parametrize("data", [_binary, _three_classes])
def test_sample_weight_is_repeated_rows(data):
    X, y = data(n=60)
    weights = np.random.RandomState(0).randint(0, 4, size=len(y))
    params = {"solver": "sam", "rho": 0.1, "max_iter": 50}
    weighted = _clf(**params).fit(X, y, sample_weight=weights)
    repeated = _clf(**params).fit(np.repeat(X, weights, axis=0), np.repeat(y, weights))
    for u, v in zip(weighted.coefs_ + weighted.intercepts_, repeated.coefs_ + repeated.intercepts_):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)
    assert weighted.sharpness_ == pytest.approx(repeated.sharpness_, rel=1e-3)


def test_warm_start_continues_exactly_and_refuses_new_classes():
    X, y = _three_classes()
    once = _clf(max_iter=20, rho=0.1).fit(X, y)
    twice = _clf(max_iter=10, rho=0.1, warm_start=True).fit(X, y)
    twice.fit(X, y)
    for u, v in zip(once.coefs_ + once.intercepts_, twice.coefs_ + twice.intercepts_):
        np.testing.assert_array_equal(u, v)
    assert twice.loss_curve_ == once.loss_curve_
    twice.fit(X[y < 2], y[y < 2])  # a subset of the classes is fine
    assert twice.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"warm_start=True but y has classes \[3\]"):
        twice.fit(X, np.where(y == 2, 3, y))
    assert twice.n_iter_ == 30  # the failed call changed nothing


def test_failed_fit_leaves_classifier_as_it_was(monkeypatch):
    # unfitted after a failed first fit; a failed refit keeps the earlier
    # fit (it used to leave the classifier unfitted, issue 21)
    X, y = _binary()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    clf = _clf()
    with monkeypatch.context() as patch:
        patch.setattr(two_layer, "measure_sharpness", boom)
        with pytest.raises(RuntimeError, match="boom"):
            clf.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    before = clf.fit(X, y).predict_proba(X)
    monkeypatch.setattr(two_layer, "measure_sharpness", boom)
    with pytest.raises(RuntimeError, match="boom"):
        clf.fit(X, 1 - y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_fit_leaves_torch_global_rng_untouched():
    X, y = _three_classes()
    state = torch.get_rng_state()
    _clf(batch_size=16, early_stopping=True).fit(X, y)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_hidden": 0}, "'n_hidden' parameter of SAMTwoLayerClassifier"),
        ({"rho": -1.0}, "'rho' parameter"),
        ({"solver": "adam"}, "'solver' parameter"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        _clf(**params).fit(*_binary())


# --------------------------------------------------------------------------
# scikit-learn API
# --------------------------------------------------------------------------


def test_pickle_round_trip_gives_identical_predictions():
    X, y = _three_classes()
    clf = _clf().fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.sharpness_ == clf.sharpness_


@pytest.mark.parametrize("scoring", ["accuracy", "neg_log_loss"])
def test_grid_search_over_rho_in_a_pipeline(scoring):
    X, y = _three_classes()
    pipe = make_pipeline(StandardScaler(), _clf(max_iter=30))
    search = GridSearchCV(pipe, {"samtwolayerclassifier__rho": [0.0, 0.05, 0.2]}, cv=3)
    search.set_params(scoring=scoring).fit(X, y)
    assert search.best_params_["samtwolayerclassifier__rho"] in (0.0, 0.05, 0.2)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_[-1].sharpness_ is not None
    assert search.predict_proba(X).shape == (len(X), 3)


def test_classifier_and_regressor_share_the_fit():
    # one fit, in the base class: the subclasses only route to it
    assert SAMTwoLayerClassifier._fit is SAMTwoLayerRegressor._fit
    assert SAMTwoLayerClassifier._train is SAMTwoLayerRegressor._train
    # the same parameters; the classifier's own defaults for the step and the
    # initial scale (test_classifier_defaults_learn_digits)
    own = {"init_scale": (1.0, 0.1), "learning_rate": (1.0, 0.05)}
    clf, reg = SAMTwoLayerClassifier().get_params(), SAMTwoLayerRegressor().get_params()
    assert clf.keys() == reg.keys()
    assert {k: (clf[k], reg[k]) for k in clf if clf[k] != reg[k]} == own


def _expected_failed_checks(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "the network trains in float32: weighted and repeated-row fits agree to "
            "about 1e-7 relative, the check asks for 1e-7 with atol 1e-9 "
            "(test_sample_weight_is_repeated_rows checks the equivalence at float32 "
            "tolerance), as for SAMTwoLayerRegressor"
        ),
    }


@parametrize_with_checks(
    [SAMTwoLayerClassifier(n_hidden=20, max_iter=200, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_history_attributes_documented_as_everywhere():
    from sksam._base import HISTORY_ATTRIBUTES_DOC

    assert HISTORY_ATTRIBUTES_DOC in SAMTwoLayerClassifier.__doc__


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(StandardScaler().fit_transform(X), y, random_state=0, stratify=y)


def test_early_stopping_on_the_initial_plateau_warns():
    # the validation accuracy sits at the majority share (0.628) for the first
    # dozen steps from a near-zero start: early stopping kept iteration 1's
    # weights (test accuracy 0.63) without a word
    X_train, X_test, y_train, y_test = _breast_cancer()
    clf = SAMTwoLayerClassifier(
        early_stopping=True, random_state=0, init_scale=0.1, learning_rate=0.05
    )  # the defaults this was found at, before the classifier had its own
    with pytest.warns(ConvergenceWarning, match="sat on the plateau around the initialization"):
        clf.fit(X_train, y_train)
    assert clf.n_iter_ == 12
    patient = clone(clf).set_params(n_iter_no_change=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patient.fit(X_train, y_train)
    assert patient.score(X_test, y_test) > 0.9


def test_divergence_names_rho_or_learning_rate_and_the_classifier_remedy():
    from sksam.exceptions import DivergenceWarning

    X, y = _binary()
    with pytest.warns(
        DivergenceWarning, match=r"rho=0 \(gradient descent\) is healthy: rho=1000000.0 is too"
    ):
        _clf(n_hidden=100, rho=1e6, max_iter=50).fit(X, y)
    with pytest.raises(ValueError, match=r"learning_rate=10000.0 is too large .*standardize X\)"):
        _clf(learning_rate=1e4, max_iter=50).fit(X * 100, y)
