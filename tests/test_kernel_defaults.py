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
    # the whole path (deterministic): with early_stopping='auto' and random_state=None each fit
    # holds out other rows, and on one shared split both solvers stop near the same iterate
    gd = SAMKernelRegressor(solver="gd", early_stopping=False).fit(X, y)
    sam = SAMKernelRegressor(solver="sam", early_stopping=False).fit(X, y)
    assert gd.sharpness_ > 0 and sam.sharpness_ > 0
    assert abs(sam.sharpness_ - gd.sharpness_) > 0.1 * gd.sharpness_


def test_default_rho_sharpness_is_the_trust_region_at_the_fitted_weights():
    X, y = _diabetes()
    model = SAMKernelRegressor(max_iter=300, early_stopping=False).fit(X, y)  # all rows
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
        SAMKernelRegressor(
            solver=solver, rho=rho, max_iter=200, sharpness="top_eigenvalue", early_stopping=False
        )
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
    # the path of max_iter steps on all the rows (early_stopping='auto' would hold
    # out 300 of them, and draw the 200 centres from the others)
    model = SAMKernelRegressor(early_stopping=False, **params).fit(X, y)
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


# --------------------------------------------------------------------------
# early_stopping='auto', one max_iter for the twins, a short verbose
# --------------------------------------------------------------------------


def test_the_twins_share_one_default_max_iter():
    from sksam import SAMKernelClassifier, SAMKernelClassifierCV

    # before: 10000 for the estimators, 1000 for their CV twins
    defaults = {
        cls().max_iter for cls in (SAMKernelRegressor, SAMKernelRegressorCV, SAMKernelClassifier)
    } | {SAMKernelClassifierCV().max_iter}
    assert len(defaults) == 1


@pytest.mark.parametrize("n, early", [(199, False), (200, True)])
def test_early_stopping_auto_holds_out_a_validation_part_from_200_samples(n, early):
    from sksam import SAMKernelClassifier
    from sksam.kernel import EARLY_STOPPING_AUTO_SAMPLES

    assert EARLY_STOPPING_AUTO_SAMPLES == 200
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    y = np.sin(X[:, 0]) + 0.3 * rng.standard_normal(n)
    for model, target in ((SAMKernelRegressor(max_iter=30), y), (SAMKernelClassifier(), y > 0)):
        assert model.early_stopping == "auto"
        model.set_params(max_iter=30).fit(X, target)
        assert model.do_early_stopping_ is early
        assert (model.validation_scores_ is not None) is early
    # an explicit bool wins over the size
    explicit = SAMKernelRegressor(max_iter=5, early_stopping=not early).fit(X, y)
    assert explicit.do_early_stopping_ is (not early)


def test_default_regressor_does_not_overfit_diabetes():
    # before (max_iter=10000, no early stopping): test R^2 -0.45 where
    # KernelRidge(kernel='rbf') gets 0.23; early_stopping='auto' holds out 10%
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    ridge = make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")).fit(X_train, y_train)
    model = make_pipeline(StandardScaler(), SAMKernelRegressor(random_state=0))
    model.fit(X_train, y_train)
    assert model[-1].do_early_stopping_
    assert ridge.score(X_test, y_test) == pytest.approx(0.231, abs=1e-3)
    # the 33-row validation part is noisy: 0.15 to 0.23 over its seeds
    assert model.score(X_test, y_test) > 0.1
    long = make_pipeline(StandardScaler(), SAMKernelRegressor(early_stopping=False))
    assert long.fit(X_train, y_train).score(X_test, y_test) < -0.4  # the old default


def test_the_cv_twins_choose_the_steps_by_cv_without_a_validation_part():
    X, y = _diabetes()
    search = SAMKernelRegressorCV(solvers=["gd"], rhos=[0.05], max_iter=20, cv=3).fit(X, y)
    assert search.estimator_.early_stopping is False
    assert not search.estimator_.do_early_stopping_
    assert search.estimator_.n_iter_ == search.n_iter_


def test_verbose_prints_a_few_dozen_lines_and_says_when_sam_is_gd(capsys):
    # before: one line per step, 10 000 lines at the defaults
    X, y = _diabetes()
    SAMKernelRegressor(verbose=1, early_stopping=False).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 35
    iterations = [line for line in lines if line.startswith("Iteration ")]
    assert iterations[0].startswith("Iteration 1,")
    assert iterations[-1].startswith("Iteration 10000,")
    assert lines[-1].startswith("SAMKernelRegressor: stopped after 10000 iterations at max_iter.")
    assert "SAM and gradient descent give nearly the same model" in lines[-1]


def test_verbose_reports_the_kept_iteration_and_sam_share(capsys):
    X, y = _diabetes()
    model = SAMKernelRegressor(rho=2.0, max_iter=300, verbose=1, random_state=0).fit(X, y)
    last = capsys.readouterr().out.splitlines()[-1]
    kept = 1 + int(np.argmax(model.validation_scores_))
    assert f"kept iteration {kept}, of the best validation score" in last
    assert "SAM's perturbation accounts for" in last
    assert "nearly the same model" not in last  # rho=2 on standardized y: SAM acts


def test_sam_share_is_zero_for_gd_steps_and_the_drift_over_the_movement():
    from sksam._kernel_path import dual_dynamics, sam_share

    theta, z = np.array([1.0, 4.0]), np.array([[1.0], [2.0]])
    dynamics = dual_dynamics(theta, z, n=2)
    assert sam_share(dynamics, lr=0.5, scales=[0.0, 0.0]) == 0.0
    # one step from zero: a = w lr (1 + c h) z, of which w lr c h z is SAM's
    h, c = theta / 2, 0.3
    moved, drift = 0.5 * (1 + c * h) * z[:, 0], 0.5 * c * h * z[:, 0]
    expected = np.sqrt(np.sum(h * drift**2)) / np.sqrt(np.sum(h * moved**2))
    assert sam_share(dynamics, lr=0.5, scales=[c]) == pytest.approx(expected)
