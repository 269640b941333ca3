"""Defaults of the kernel estimators that show what SAM does (issue 18)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.datasets import load_diabetes
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksam import SAMKernelRegressor, SAMKernelRegressorCV
from sksam.sharpness import quadratic_sharpness


def _diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), (y - y.mean()) / y.std()


def test_default_sharpness_is_rho_and_tells_gd_and_sam_apart():
    X, y = _diabetes()
    assert SAMKernelRegressor().sharpness == "rho"
    assert SAMKernelRegressorCV().sharpness == "rho"
    gd = SAMKernelRegressor(solver="gd").fit(X, y)
    sam = SAMKernelRegressor(solver="sam").fit(X, y)
    assert gd.sharpness_ > 0 and sam.sharpness_ > 0
    assert abs(sam.sharpness_ - gd.sharpness_) > 0.1 * gd.sharpness_


def test_default_rho_sharpness_is_the_trust_region_at_the_fitted_weights():
    X, y = _diabetes()
    model = SAMKernelRegressor(max_iter=300).fit(X, y)
    K = model._get_kernel(X)
    n = len(y)
    lam, U = np.linalg.eigh(K / n)
    # theta = K^{1/2} alpha, g = K^{1/2} (K alpha - y) / n: in the eigenbasis of K / n
    residual = U.T @ (K @ model.dual_coef_ - y)
    gradient = np.sqrt(np.clip(lam * n, 0, None)) * residual / n
    expected = quadratic_sharpness(lam, gradient, measure="rho", rho=model.rho)
    assert model.sharpness_ == pytest.approx(expected, rel=1e-6)


def test_top_eigenvalue_is_the_same_for_every_solver():
    # the Hessian of the squared loss, K / n, does not depend on the weights
    X, y = _diabetes()
    values = {
        SAMKernelRegressor(solver=solver, rho=rho, max_iter=200, sharpness="top_eigenvalue")
        .fit(X, y)
        .sharpness_
        for solver, rho in [("gd", 0.05), ("sam", 0.1), ("sam", 1.0), ("usam", 0.1)]
    }
    assert len(values) == 1
    K = SAMKernelRegressor()._get_kernel(X)
    assert_allclose(values.pop(), np.linalg.eigvalsh(K).max() / len(y), rtol=1e-12)


def test_default_max_iter_reaches_nystroem_ridge():
    # the old default (1000 steps) stopped ~1% short of Nystroem + Ridge(alpha=1e-3)
    rng = np.random.default_rng(0)

    def data(n):
        X = rng.standard_normal((n, 20))
        return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * rng.standard_normal(n)

    X, y = data(3000)
    X_test, y_test = data(2000)
    params = dict(gamma=1 / 20, n_components=200, random_state=0, sharpness=None)
    model = SAMKernelRegressor(**params).fit(X, y)
    assert model.max_iter == model.n_iter_ == 10000
    ridge = make_pipeline(
        Nystroem(gamma=1 / 20, n_components=200, random_state=0), Ridge(alpha=1e-3)
    ).fit(X, y)

    def rmse(pred):
        return np.sqrt(np.mean((pred - y_test) ** 2))

    reference = rmse(ridge.predict(X_test))
    stages = [rmse(p) for t, p in enumerate(model.staged_predict(X_test), 1) if t in (1000,)]
    assert rmse(model.predict(X_test)) < 1.002 * reference
    assert stages[0] > 1.004 * reference
