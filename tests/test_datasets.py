"""The synthetic generators against their defining formulas."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel

from sksam._two_layer_model import ACTIVATIONS, NUMPY_ACTIVATIONS
from sksam.datasets import make_kernel_regression, make_teacher_student


def _teacher_weights(seed, n_outputs, n_features, n_teacher):
    """The documented draw order: teachers first, then X, then the noise."""
    rng = np.random.RandomState(seed)
    w = rng.standard_normal((n_outputs, n_features, n_teacher))
    return w / np.linalg.norm(w, axis=1, keepdims=True), rng


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_teacher_student_is_a_committee_of_unit_norm_units(activation):
    X, y, y_true = make_teacher_student(
        n_samples=50,
        n_features=6,
        n_teacher=3,
        activation=activation,
        noise=0.0,
        return_y_true=True,
        random_state=0,
    )
    w, _ = _teacher_weights(0, 1, 6, 3)
    np.testing.assert_allclose(y_true, NUMPY_ACTIVATIONS[activation](X @ w[0]).sum(axis=1))
    np.testing.assert_array_equal(y, y_true)  # no noise


def test_teacher_student_noise_has_the_requested_std():
    X, y, y_true = make_teacher_student(
        n_samples=20000, noise=0.5, return_y_true=True, random_state=1
    )
    residual = y - y_true
    # standard error of a std estimate: 0.5 / sqrt(2 n) = 0.0025
    assert residual.std() == pytest.approx(0.5, abs=0.01)
    assert abs(residual.mean()) < 0.02


def test_teacher_pre_activations_are_standard_normal():
    # unit-norm teacher weights and N(0, I) inputs: w.x ~ N(0, 1) for any d
    X, _, y_true = make_teacher_student(
        n_samples=20000,
        n_features=50,
        n_teacher=1,
        activation="identity",
        noise=0.0,
        return_y_true=True,
        random_state=2,
    )
    assert y_true.std() == pytest.approx(1.0, abs=0.03)
    assert X.shape == (20000, 50)


def test_teacher_student_shapes_and_outputs():
    X, y, y_true = make_teacher_student(
        n_samples=7, n_features=3, n_outputs=2, return_y_true=True, random_state=0
    )
    assert X.shape == (7, 3) and y.shape == (7, 2) and y_true.shape == (7, 2)
    assert not np.allclose(y_true[:, 0], y_true[:, 1])  # one teacher per output


def test_teacher_student_is_deterministic_and_shares_teacher_across_sizes():
    a = make_teacher_student(n_samples=30, return_y_true=True, random_state=3)
    b = make_teacher_student(n_samples=30, return_y_true=True, random_state=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # the teacher is drawn before the inputs, so train and test points drawn
    # in one call share it; a different seed gives a different teacher
    c = make_teacher_student(n_samples=30, return_y_true=True, random_state=4)
    assert not np.allclose(a[2], c[2])


def test_kernel_regression_returns_x_y_like_sklearn_make_functions():
    out = make_kernel_regression(n_samples=6, random_state=0)
    assert len(out) == 2
    X, y, y_true = make_kernel_regression(n_samples=6, return_y_true=True, random_state=0)
    np.testing.assert_array_equal(out[0], X)
    np.testing.assert_array_equal(out[1], y)
    with pytest.raises(ValueError, match="return_y_true must be a bool"):
        make_kernel_regression(return_y_true="yes")


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_teacher_student_returns_x_y_like_sklearn_make_functions(n_outputs):
    # X, y = make_teacher_student() used to fail: it returned three arrays
    X, y = make_teacher_student(n_samples=9, n_outputs=n_outputs, random_state=0)
    X3, y3, y_true = make_teacher_student(
        n_samples=9, n_outputs=n_outputs, return_y_true=True, random_state=0
    )
    np.testing.assert_array_equal(X, X3)
    np.testing.assert_array_equal(y, y3)  # the flag only adds the target
    assert y_true.shape == y.shape and not np.array_equal(y, y_true)


def test_kernel_target_is_in_the_rbf_span():
    X, y, y_true = make_kernel_regression(
        n_samples=40,
        n_features=3,
        n_centers=5,
        length_scale=0.7,
        noise=0.0,
        return_y_true=True,
        random_state=0,
    )
    rng = np.random.RandomState(0)  # documented order: centres, weights, X, noise
    centers = rng.standard_normal((5, 3))
    beta = rng.standard_normal(5)
    np.testing.assert_allclose(X, rng.standard_normal((40, 3)))
    gamma = 1.0 / (2 * 0.7**2)
    np.testing.assert_allclose(y_true, rbf_kernel(X, centers, gamma=gamma) @ beta)
    np.testing.assert_array_equal(y, y_true)


def test_kernel_regression_noise_and_determinism():
    X, y, y_true = make_kernel_regression(
        n_samples=20000, noise=0.3, return_y_true=True, random_state=5
    )
    assert (y - y_true).std() == pytest.approx(0.3, abs=0.01)
    again = make_kernel_regression(n_samples=20000, noise=0.3, random_state=5)
    np.testing.assert_array_equal(again[1], y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, "n_samples must be a positive integer; got 0"),
        ({"n_features": 2.5}, "n_features must be a positive integer; got 2.5"),
        ({"n_teacher": True}, "n_teacher must be a positive integer"),
        ({"noise": -1}, "noise must be a non-negative number; got -1"),
        ({"activation": "gelu"}, "Unknown activation 'gelu'"),
        ({"n_outputs": 0}, "n_outputs must be a positive integer"),
        ({"return_y_true": "yes"}, "return_y_true must be a bool; got 'yes'"),
    ],
)
def test_teacher_student_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_teacher_student(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_centers": 0}, "n_centers must be a positive integer"),
        ({"length_scale": 0.0}, "length_scale must be a positive number; got 0.0"),
        ({"noise": float("nan")}, "noise must be a non-negative number"),
    ],
)
def test_kernel_regression_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_kernel_regression(**kwargs)
