"""The kernel models' sharpness measures against hand-written quadratic forms."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel

from sksam import SAMKernelRegressor
from sksam.sharpness import LOGIT_MEASURES, quadratic_model_sharpness


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    Y = np.column_stack([X @ [1.0, -2.0, 0.5], np.sin(X[:, 0])])
    return X, Y + 0.1 * rng.standard_normal((n, 2))


def _weights(n, seed=1):
    w = np.random.default_rng(seed).uniform(0.2, 3.0, n)
    w[[2, 7]] = 0.0  # rows that take no part in the loss
    return w


@pytest.mark.parametrize("measure", ["adaptive_rho", "adaptive_average"])
def test_exact_adaptive_measures_are_in_the_dual_coefficients_with_weights(measure):
    # L(alpha) = ||W^1/2 (K alpha - y)||^2 / (2 sum w): H = K W K / n, g = K W (K alpha - y) / n
    X, Y = _data()
    w = _weights(len(X))
    model = SAMKernelRegressor(gamma=0.3, rho=0.2, max_iter=150, sharpness=measure)
    model.fit(X, Y, sample_weight=w)
    K, alpha, n = rbf_kernel(X, gamma=0.3), model.dual_coef_, w.sum()
    assert np.all(alpha[w == 0] == 0)  # a weightless row has no coefficient to scale
    expected = quadratic_model_sharpness(
        K @ (w[:, None] * K) / n,
        K @ (w[:, None] * (K @ alpha - Y)) / n,
        alpha,
        measure=measure,
        rho=0.2,
    )
    assert model.sharpness_ == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("measure", ["average", "adaptive_rho", "adaptive_average"])
def test_linear_path_measures_in_coef_with_weights(measure):
    X, Y = _data(n=40)
    w = _weights(len(X))
    model = SAMKernelRegressor(kernel="linear", rho=0.2, max_iter=100, sharpness=measure)
    model.fit(X, Y, sample_weight=w)
    assert hasattr(model, "coef_")
    W, n = model.coef_.T, w.sum()
    A = X.T @ (w[:, None] * X) / n
    expected = quadratic_model_sharpness(
        A, A @ W - X.T @ (w[:, None] * Y) / n, W, measure=measure, rho=0.2
    )
    assert model.sharpness_ == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("measure", ["rho", "average", "adaptive_rho", "adaptive_average"])
def test_nystroem_with_every_row_a_centre_measures_as_the_exact_path(measure):
    # the centre coefficients are the dual coefficients when the centres are the rows
    X, Y = _data(n=20)
    common = dict(gamma=0.3, rho=0.2, max_iter=60, sharpness=measure, solver="gd")
    exact = SAMKernelRegressor(**common).fit(X, Y)
    nystroem = SAMKernelRegressor(centers=X, **common).fit(X, Y)
    assert nystroem.n_components_ == len(X)  # no centre dropped
    assert nystroem.sharpness_ == pytest.approx(exact.sharpness_, rel=1e-5)


def test_adaptive_measures_change_with_the_solver_average_does_not():
    X, Y = _data()
    fits = {
        (s, m): SAMKernelRegressor(solver=s, gamma=0.3, rho=0.5, max_iter=100, sharpness=m)
        .fit(X, Y)
        .sharpness_
        for s in ("gd", "sam")
        for m in ("average", "adaptive_rho")
    }
    assert fits["gd", "average"] == fits["sam", "average"]
    assert fits["gd", "adaptive_rho"] != pytest.approx(fits["sam", "adaptive_rho"], rel=1e-3)


@pytest.mark.parametrize("measure", LOGIT_MEASURES)
@pytest.mark.parametrize("params", [{}, {"n_components": 10}, {"kernel": "linear"}])
def test_logit_measures_are_refused_by_name(measure, params):
    X, Y = _data()
    with pytest.raises(ValueError, match=rf"'sharpness' parameter.*Got '{measure}'"):
        SAMKernelRegressor(sharpness=measure, **params).fit(X, Y)
