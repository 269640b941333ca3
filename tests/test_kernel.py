"""SAMKernelRegressor: closed forms and naive loops first, invariances, then the API."""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sksam import SAMKernelRegressor, SAMKernelRegressorCV, _kernel_path
from sksam._update_rules import perturbation_scale
from sksam.exceptions import DivergenceWarning
from sksam.sharpness import quadratic_sharpness


def _data(n=60, d=3, n_outputs=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.2 * rng.standard_normal(n)
    if n_outputs is not None:
        y = np.column_stack([y * (j + 1) + j for j in range(n_outputs)])
    X_test = rng.standard_normal((25, d))
    return X, y, X_test


def _spectral_filter(K, y, *, lr, max_iter, rho=0.0):
    """The closed form of GD / USAM: (1 - (1 - lr s_i)^T) z_i / lambda_i along u_i."""
    lam, U = np.linalg.eigh(K)
    n = K.shape[0]
    s = (lam / n) * (1 + rho * lam / n)
    x = lr * s
    # -expm1(T log1p(-x)) = 1 - (1 - x)^T without cancellation for small x
    small = np.abs(x) < 0.5
    gain = (
        np.where(
            small,
            -np.expm1(max_iter * np.log1p(-np.where(small, x, 0.0))),
            1.0 - (1.0 - x) ** max_iter,
        )
        / lam
    )
    return U @ (gain[:, None] * (U.T @ y.reshape(n, -1)))


def _naive_loop(K, y, *, solver, lr, rho, max_iter):
    """The rule of sksam._update_rules on alpha, two products K v per step.

    ``losses[t]`` is the loss at the weights step ``t + 1`` starts from.
    """
    n = K.shape[0]
    Y = y.reshape(n, -1)
    alpha = np.zeros_like(Y)
    losses = []
    for _ in range(max_iter):
        r = K @ alpha - Y
        losses.append(np.sum(r**2) / (2 * n))
        Kr = K @ r
        c = perturbation_scale(solver, rho, np.sqrt(np.sum(r * Kr)) / n)
        alpha = alpha - (lr / n) * (r + (c / n) * Kr)
    return alpha, losses


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# --------------------------------------------------------------------------
# oracles: closed forms, naive loops, exact Hessians
# --------------------------------------------------------------------------


@pytest.mark.parametrize("solver, rho", [("gd", 0.0), ("usam", 0.3), ("usam", 2.0)])
@pytest.mark.parametrize("kernel", ["rbf", "polynomial"])
@pytest.mark.parametrize("n_outputs", [None, 2])
def test_gd_and_usam_equal_the_spectral_filter(solver, rho, kernel, n_outputs):
    X, y, X_test = _data(n_outputs=n_outputs)
    model = SAMKernelRegressor(solver=solver, rho=rho, kernel=kernel, max_iter=300).fit(X, y)
    K = model._get_kernel(X)
    alpha = _spectral_filter(K, y, lr=model.learning_rate_, max_iter=300, rho=rho)
    expected = model._get_kernel(X_test, X) @ alpha
    assert _relative(model.predict(X_test).reshape(expected.shape), expected) < 1e-8


@pytest.mark.parametrize("solver", ["gd", "usam"])
def test_spectral_filter_when_the_basis_is_not_the_whole_space(solver):
    # n = 500 and 2000 steps: the basis stops growing long before n columns
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 5))
    y = np.cos(X[:, 0]) + X[:, 1] ** 2 + 0.3 * rng.standard_normal(500)
    model = SAMKernelRegressor(solver=solver, rho=1.0, max_iter=2000, early_stopping=False)
    model.fit(X, y)
    assert model.krylov_size_ < 250
    K = model._get_kernel(X)
    alpha = _spectral_filter(
        K, y, lr=model.learning_rate_, max_iter=2000, rho=1.0 if solver == "usam" else 0.0
    ).ravel()
    assert _relative(model.dual_coef_, alpha) < 1e-8
    assert _relative(K @ model.dual_coef_, K @ alpha) < 1e-8


def _bounces(model, s_max):
    """Whether SAM's factor along the top eigenvector left [-1, 1] (it regrows)."""
    return np.max(model.learning_rate_ * s_max * (1 + model._scales * s_max)) > 2


@pytest.mark.parametrize(
    "rho, max_iter, n_outputs", [(0.05, 100, None), (0.05, 200, 3), (0.5, 200, None)]
)
def test_sam_equals_the_naive_loop(rho, max_iter, n_outputs):
    X, y, _ = _data(n_outputs=n_outputs)
    K = rbf_kernel(X, gamma=1 / 3)
    lr = 0.5 * K.shape[0] / np.linalg.eigvalsh(K).max()
    model = SAMKernelRegressor(solver="sam", rho=rho, learning_rate=lr, max_iter=max_iter).fit(X, y)
    alpha, losses = _naive_loop(K, y, solver="sam", lr=lr, rho=rho, max_iter=max_iter)
    assert _relative(model.dual_coef_.reshape(alpha.shape), alpha) < 1e-8
    assert_allclose(model.loss_curve_, losses, rtol=1e-8)


def _exact_spectral_sam(K, y, *, lr, rho, max_iter):
    """SAM in K's full eigenbasis, each residual component updated by its factor.

    A loop on alpha recomputes r = K alpha - y, which floors every component of
    r at ~eps |y|; when SAM shrinks the top component below that floor and then
    regrows it (the "bounce"), such a loop regrows rounding noise instead.
    """
    lam, U = np.linalg.eigh(K)
    n = K.shape[0]
    z = U.T @ y.reshape(n, -1)
    a, r = np.zeros_like(z), -z
    for _ in range(max_iter):
        c = perturbation_scale("sam", rho, np.sqrt(max(np.sum(lam[:, None] * r**2), 0)) / n)
        d = (lr / n) * (1 + c * lam[:, None] / n)
        a, r = a - d * r, r * (1 - lam[:, None] * d)
    return U @ a


@pytest.mark.parametrize("rho, n_outputs", [(0.05, None), (0.5, 3)])
def test_sam_where_it_bounces_equals_the_exact_spectral_path(rho, n_outputs):
    X, y, _ = _data(n_outputs=n_outputs)
    K = rbf_kernel(X, gamma=1 / 3)
    s_max = np.linalg.eigvalsh(K).max() / 60
    model = SAMKernelRegressor(solver="sam", rho=rho, learning_rate=0.5 / s_max, max_iter=200)
    model.fit(X, y)
    assert _bounces(model, s_max)  # the regime this test is about
    alpha = _exact_spectral_sam(K, y, lr=0.5 / s_max, rho=rho, max_iter=200)
    assert _relative(model.dual_coef_.reshape(alpha.shape), alpha) < 1e-8


def test_usam_loss_curve_equals_the_naive_loop():
    X, y, _ = _data()
    model = SAMKernelRegressor(solver="usam", rho=0.4, max_iter=50).fit(X, y)
    K = model._get_kernel(X)
    alpha, losses = _naive_loop(K, y, solver="usam", lr=model.learning_rate_, rho=0.4, max_iter=50)
    assert_allclose(model.loss_curve_, losses, rtol=1e-9)
    assert _relative(model.dual_coef_, alpha.ravel()) < 1e-9


@pytest.mark.parametrize("solver", ["sam", "usam"])
def test_rho_zero_is_gradient_descent_bit_for_bit(solver):
    X, y, X_test = _data()
    gd = SAMKernelRegressor(solver="gd", max_iter=100).fit(X, y)
    other = SAMKernelRegressor(solver=solver, rho=0.0, max_iter=100).fit(X, y)
    assert_array_equal(other.dual_coef_, gd.dual_coef_)
    assert_array_equal(other.predict(X_test), gd.predict(X_test))
    assert other.loss_curve_ == gd.loss_curve_


def test_sam_differs_from_gd():
    X, y, X_test = _data()
    gd = SAMKernelRegressor(solver="gd", max_iter=100).fit(X, y)
    sam = SAMKernelRegressor(solver="sam", rho=0.2, max_iter=100).fit(X, y)
    assert _relative(sam.predict(X_test), gd.predict(X_test)) > 1e-3


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
def test_staged_predict_is_the_path(solver):
    X, y, X_test = _data(n_outputs=2)
    model = SAMKernelRegressor(solver=solver, rho=0.1, max_iter=40).fit(X, y)
    stages = list(model.staged_predict(X_test))
    assert len(stages) == model.n_iter_ == 40
    assert_allclose(stages[-1], model.predict(X_test), rtol=1e-10, atol=1e-12)
    # the first GD step from zero: alpha = (lr / n) y (SAM's first step too, on K y)
    K_test = model._get_kernel(X_test, X)
    if solver == "gd":
        assert_allclose(stages[0], K_test @ (model.learning_rate_ / 60 * y), rtol=1e-10)
    # every stage against the naive loop stopped there
    K = model._get_kernel(X)
    for t in (1, 7, 23):
        alpha, _ = _naive_loop(K, y, solver=solver, lr=model.learning_rate_, rho=0.1, max_iter=t)
        assert_allclose(stages[t - 1], K_test @ alpha, rtol=1e-8, atol=1e-10)


def test_staged_predict_of_training_data_gives_the_loss_curve():
    X, y, _ = _data()
    model = SAMKernelRegressor(solver="sam", rho=0.1, max_iter=30).fit(X, y)
    losses = [np.sum((p - y) ** 2) / (2 * len(y)) for p in model.staged_predict(X)]
    # loss_curve_[t] is the loss where step t + 1 starts: at zero, then stage t
    assert model.loss_curve_[0] == pytest.approx(np.sum(y**2) / (2 * len(y)), rel=1e-12)
    assert_allclose(losses[:-1], model.loss_curve_[1:], rtol=1e-9)


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
def test_top_eigenvalue_sharpness_is_exact_and_solver_free(solver):
    X, y, _ = _data()
    # the default measure became 'rho' (issue 18): the eigenvalue is asked for by name
    model = SAMKernelRegressor(solver=solver, rho=0.2, max_iter=50, sharpness="top_eigenvalue").fit(
        X, y
    )
    K = model._get_kernel(X)
    assert model.sharpness_ == pytest.approx(np.linalg.eigvalsh(K).max() / 60, rel=1e-12)


def test_trace_sharpness_is_exact():
    X, y, _ = _data(n_outputs=2)
    model = SAMKernelRegressor(sharpness="trace", kernel="polynomial", max_iter=20).fit(X, y)
    K = model._get_kernel(X)
    assert model.sharpness_ == pytest.approx(2 * np.trace(K) / 60, rel=1e-12)


@pytest.mark.parametrize("solver", ["gd", "sam"])
def test_rho_sharpness_equals_the_full_eigendecomposition(solver):
    X, y, _ = _data()
    model = SAMKernelRegressor(solver=solver, rho=0.3, sharpness="rho", max_iter=80).fit(X, y)
    K = model._get_kernel(X)
    lam, U = np.linalg.eigh(K)
    lam = np.clip(lam, 0, None)
    r = K @ model.dual_coef_ - y
    gradient = np.sqrt(lam) * (U.T @ r) / 60  # g = Phi^T r / n in H's eigenbasis
    expected = quadratic_sharpness(lam / 60, gradient, measure="rho", rho=0.3)
    assert model.sharpness_ == pytest.approx(expected, rel=1e-8)


def test_rho_sharpness_depends_on_the_solver():
    X, y, _ = _data()
    values = [
        SAMKernelRegressor(solver=s, rho=0.3, sharpness="rho", max_iter=80).fit(X, y).sharpness_
        for s in ("gd", "sam")
    ]
    assert values[0] != pytest.approx(values[1], rel=1e-3)


def test_rho_sharpness_when_the_top_eigenvector_carries_no_gradient():
    # y orthogonal to the top eigenvector of K: the basis never meets it, the
    # measure must still see lambda_max (the hard case of the trust region).
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    lam = np.linspace(0.1, 1.0, 30)
    lam[-1] = 20.0
    K = (U * lam) @ U.T
    y = U[:, :5] @ rng.standard_normal(5)
    model = SAMKernelRegressor(
        solver="gd", kernel="precomputed", rho=2.0, sharpness="rho", max_iter=10
    ).fit(K, y)
    r = K @ model.dual_coef_ - y
    gradient = np.sqrt(lam) * (U.T @ r) / 30
    expected = quadratic_sharpness(lam / 30, gradient, measure="rho", rho=2.0)
    assert model.sharpness_ == pytest.approx(expected, rel=1e-8)
    assert model.sharpness_ >= 0.5 * 4.0 * 20.0 / 30  # at least e along u_top


def test_multi_output_gd_is_columnwise_and_sam_norm_is_joint():
    X, y, X_test = _data(n_outputs=2)
    both = SAMKernelRegressor(solver="gd", max_iter=60).fit(X, y)
    for j in range(2):
        single = SAMKernelRegressor(solver="gd", max_iter=60, learning_rate=both.learning_rate_)
        single.fit(X, y[:, j])
        assert_allclose(both.predict(X_test)[:, j], single.predict(X_test), rtol=1e-9)
    sam_both = SAMKernelRegressor(solver="sam", rho=0.3, max_iter=60).fit(X, y)
    sam_one = SAMKernelRegressor(solver="sam", rho=0.3, max_iter=60).fit(X, y[:, 0])
    assert _relative(sam_both.predict(X_test)[:, 0], sam_one.predict(X_test)) > 1e-6


# --------------------------------------------------------------------------
# learning rate, divergence, Krylov basis
# --------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
def test_auto_learning_rate(solver):
    X, y, _ = _data()
    model = SAMKernelRegressor(solver=solver, rho=0.5, max_iter=200).fit(X, y)
    s_max = np.linalg.eigvalsh(model._get_kernel(X)).max() / 60
    expected = 1 / (s_max * (1 + 0.5 * s_max)) if solver == "usam" else 1 / s_max
    assert model.learning_rate_ == pytest.approx(expected, rel=1e-12)
    if solver != "sam":  # the filter contracts every component: monotone loss
        assert np.all(np.diff(model.loss_curve_) <= 1e-15)


def test_sam_stays_within_rho_of_gd_along_every_eigenvector():
    # the bound behind learning_rate='auto' for 'sam' (see the docstring)
    X, y, _ = _data()
    rho = 0.3
    K = rbf_kernel(X, gamma=1 / 3)
    lam, U = np.linalg.eigh(K)
    gd = SAMKernelRegressor(solver="gd", max_iter=300).fit(X, y)
    sam = SAMKernelRegressor(solver="sam", rho=rho, max_iter=300).fit(X, y)
    # theta's coordinate along eigenvector i of H is sqrt(lambda_i) u_i^T alpha
    diff = np.sqrt(np.clip(lam, 0, None)) * (U.T @ (sam.dual_coef_ - gd.dual_coef_))
    assert np.abs(diff).max() <= rho * (1 + 1e-9)


@pytest.mark.parametrize("solver, factor", [("gd", 2.0), ("sam", 2.5), ("usam", 2.0)])
def test_divergent_learning_rate_is_an_error(solver, factor):
    X, y, _ = _data()
    auto = SAMKernelRegressor(solver=solver, rho=0.5, max_iter=5).fit(X, y).learning_rate_
    model = SAMKernelRegressor(solver=solver, rho=0.5, learning_rate=factor * auto)
    with pytest.raises(ValueError, match=f"learning_rate=.* makes solver '{solver}' diverge"):
        model.fit(X, y)


def test_learning_rate_just_below_the_bound_is_accepted_and_finite():
    X, y, X_test = _data()
    auto = SAMKernelRegressor(solver="gd", max_iter=5).fit(X, y).learning_rate_
    model = SAMKernelRegressor(solver="gd", learning_rate=1.99 * auto, max_iter=500).fit(X, y)
    assert np.isfinite(model.predict(X_test)).all()


def test_non_psd_kernel_divergence_is_an_error_not_nan():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    lam = np.linspace(-0.5, 1.0, 20)
    K = (U * lam) @ U.T
    y = rng.standard_normal(20)
    with pytest.raises(ValueError, match="diverged at step"):
        SAMKernelRegressor(solver="gd", kernel="precomputed", max_iter=5000).fit(K, y)


def test_basis_becomes_invariant_on_small_problems():
    X, y, _ = _data(n=20)
    model = SAMKernelRegressor(max_iter=2000).fit(X, y)
    assert model.krylov_size_ <= 20


def test_krylov_path_helper_reports_exactness():
    K = np.diag([3.0, 2.0, 1.0, 0.5])
    Y = np.ones((4, 1))
    path, a, _, info = _kernel_path.fit_krylov_path(
        K, Y, scale=3.0, solve=lambda p: (p.z / p.theta[:, None], None)
    )
    assert info["exact"] and info["size"] == 4
    assert_allclose(path.V @ a, np.linalg.solve(K, Y), rtol=1e-12)


def test_basis_size_limit_warns(monkeypatch):
    import functools

    X, y, _ = _data(n=200)
    limited = functools.partial(_kernel_path.fit_krylov_path, max_dim=6, first_check=2)
    monkeypatch.setattr(_kernel_path, "fit_krylov_path", limited)
    with pytest.warns(ConvergenceWarning, match="Krylov basis reached 6 columns"):
        SAMKernelRegressor(solver="gd", max_iter=500).fit(X, y)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ([1e-6, 8e-7, 9e-7], True),  # stuck at a floor below STAGNATION_RTOL
        ([1e-6, 4e-7, 9e-7], False),  # halved once: still converging
        ([1e-5, 8e-6, 9e-6], False),  # stuck, but above STAGNATION_RTOL
        ([8e-7, 9e-7], False),  # too few checks
    ],
)
def test_stagnation_rule(changes, expected):
    assert _kernel_path._stagnates(changes) is expected


def test_krylov_deflation_with_collinear_outputs():
    X, y, X_test = _data()
    Y = np.column_stack([y, 2 * y])  # the second block column is deflated
    model = SAMKernelRegressor(solver="gd", max_iter=50).fit(X, Y)
    assert_allclose(model.predict(X_test)[:, 1], 2 * model.predict(X_test)[:, 0], rtol=1e-10)


def test_zero_target_gives_zero_model():
    X, _, X_test = _data()
    model = SAMKernelRegressor(max_iter=10).fit(X, np.zeros(60))
    assert_array_equal(model.predict(X_test), 0.0)
    assert model.loss_curve_ == [0.0] * 10
    assert model.best_loss_ == 0.0


# --------------------------------------------------------------------------
# tol, n_iter_no_change and early stopping (MLPRegressor's semantics)
# --------------------------------------------------------------------------


def test_tol_none_runs_exactly_max_iter():
    X, y, _ = _data()
    model = SAMKernelRegressor(max_iter=77).fit(X, y)
    assert model.n_iter_ == len(model.loss_curve_) == 77
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.validation_scores_ is None


def test_tol_stops_like_mlp():
    X, y, _ = _data()
    # every step after the first fails to improve by tol: the count passes
    # n_iter_no_change after n_iter_no_change + 1 more steps
    model = SAMKernelRegressor(solver="gd", tol=1e6, n_iter_no_change=4, max_iter=100).fit(X, y)
    assert model.n_iter_ == len(model.loss_curve_) == 4 + 2


def test_tol_reached_max_iter_warns():
    X, y, _ = _data()
    with pytest.warns(
        ConvergenceWarning, match="maximum iterations \\(5\\) reached and the training loss"
    ):
        SAMKernelRegressor(solver="gd", tol=0.0, max_iter=5).fit(X, y)


def test_early_stopping_returns_the_best_validated_iterate():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    y = np.sin(2 * X[:, 0]) + 1.0 * rng.standard_normal(120)  # noisy: GD overfits
    model = SAMKernelRegressor(
        solver="gd",
        kernel="rbf",
        gamma=2.0,
        early_stopping=True,
        validation_fraction=0.25,
        max_iter=3000,
        random_state=0,
    ).fit(X, y)
    scores = model.validation_scores_
    assert len(scores) == len(model.loss_curve_) == 3000
    assert model.n_iter_ == 3000  # steps run; the best one is returned
    assert model.best_validation_score_ == max(scores)
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.X_fit_.shape[0] == 90 and model.dual_coef_.shape == (90,)
    stages = list(model.staged_predict(X))
    assert len(stages) == int(np.argmax(scores)) + 1 < 3000
    assert_allclose(stages[-1], model.predict(X), rtol=1e-10)


def test_early_stopping_validation_scores_are_r2_on_the_held_out_part():
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    X, y, _ = _data(n=80)
    model = SAMKernelRegressor(
        solver="sam", rho=0.1, early_stopping=True, max_iter=30, random_state=3
    ).fit(X, y)
    train, val = train_test_split(np.arange(80), test_size=0.1, random_state=check_random_state(3))
    train, val = np.sort(train), np.sort(val)
    reference = SAMKernelRegressor(solver="sam", rho=0.1, max_iter=30).fit(X[train], y[train])
    expected = [r2_score(y[val], p) for p in reference.staged_predict(X[val])]
    assert_allclose(model.validation_scores_, expected, rtol=1e-8)


def test_early_stopping_with_tol_stops_before_max_iter():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    y = np.sin(2 * X[:, 0]) + 1.0 * rng.standard_normal(120)
    model = SAMKernelRegressor(
        solver="gd",
        gamma=2.0,
        early_stopping=True,
        tol=1e-4,
        n_iter_no_change=5,
        max_iter=3000,
        random_state=0,
    ).fit(X, y)
    assert len(model.validation_scores_) < 3000


def test_early_stopping_with_a_precomputed_kernel():
    X, y, X_test = _data(n=80)
    K, K_test = rbf_kernel(X, gamma=0.5), rbf_kernel(X_test, X, gamma=0.5)
    common = dict(solver="sam", rho=0.1, early_stopping=True, max_iter=40, random_state=1)
    on_x = SAMKernelRegressor(kernel="rbf", gamma=0.5, **common).fit(X, y)
    on_k = SAMKernelRegressor(kernel="precomputed", **common).fit(K, y)
    assert_allclose(on_k.predict(K_test), on_x.predict(X_test), rtol=1e-10)


# --------------------------------------------------------------------------
# invariances and kernels
# --------------------------------------------------------------------------


def test_precomputed_and_callable_kernels_equal_the_named_one():
    X, y, X_test = _data()
    named = SAMKernelRegressor(kernel="polynomial", degree=2, coef0=1.0, gamma=0.3, max_iter=50)
    named.fit(X, y)
    pre = SAMKernelRegressor(kernel="precomputed", max_iter=50)
    pre.fit(polynomial_kernel(X, degree=2, coef0=1.0, gamma=0.3), y)
    pred_pre = pre.predict(polynomial_kernel(X_test, X, degree=2, coef0=1.0, gamma=0.3))
    assert_allclose(pred_pre, named.predict(X_test), rtol=1e-10)

    def poly(a, b, scale):
        return (scale * a @ b + 1.0) ** 2

    call = SAMKernelRegressor(kernel=poly, kernel_params={"scale": 0.3}, max_iter=50).fit(X, y)
    assert_allclose(call.predict(X_test), named.predict(X_test), rtol=1e-8)


def test_sparse_input_equals_dense():
    X, y, X_test = _data()
    dense = SAMKernelRegressor(max_iter=50).fit(X, y)
    sp = SAMKernelRegressor(max_iter=50).fit(sparse.csr_matrix(X), y)
    assert_allclose(sp.predict(sparse.csr_matrix(X_test)), dense.predict(X_test), rtol=1e-10)


def test_sample_order_does_not_change_the_model():
    X, y, X_test = _data()
    perm = np.random.default_rng(0).permutation(60)
    a = SAMKernelRegressor(solver="sam", rho=0.1, max_iter=100).fit(X, y)
    b = SAMKernelRegressor(solver="sam", rho=0.1, max_iter=100).fit(X[perm], y[perm])
    assert_allclose(b.predict(X_test), a.predict(X_test), rtol=1e-9)


def test_pickle_round_trip_gives_identical_predictions():
    X, y, X_test = _data(n_outputs=2)
    model = SAMKernelRegressor(solver="sam", rho=0.1, max_iter=30).fit(X, y)
    loaded = pickle.loads(pickle.dumps(model))
    assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    for a, b in zip(loaded.staged_predict(X_test), model.staged_predict(X_test)):
        assert_array_equal(a, b)
    assert loaded.sharpness_ == model.sharpness_


def test_fit_is_deterministic():
    X, y, X_test = _data(n=150)
    a = SAMKernelRegressor(max_iter=300).fit(X, y).predict(X_test)
    b = SAMKernelRegressor(max_iter=300).fit(X, y).predict(X_test)
    assert_array_equal(a, b)


def test_pipeline_and_grid_search_over_rho():
    X, y, _ = _data(n=80)
    search = GridSearchCV(
        # the eigenvalue by name: the default 'rho' sharpness is 0 at rho=0 (issue 18)
        make_pipeline(
            StandardScaler(), SAMKernelRegressor(max_iter=50, sharpness="top_eigenvalue")
        ),
        {"samkernelregressor__rho": [0.0, 0.1], "samkernelregressor__solver": ["gd", "sam"]},
        cv=3,
    ).fit(X, y)
    assert search.best_estimator_[-1].sharpness_ > 0
    assert set(search.cv_results_["param_samkernelregressor__rho"]) == {0.0, 0.1}


def test_verbose_prints_steps(capsys):
    X, y, _ = _data(n=20)
    SAMKernelRegressor(max_iter=3, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 3, loss =" in out and "Krylov basis:" in out


def test_sharpness_none_skips_it():
    X, y, _ = _data(n=20)
    assert SAMKernelRegressor(sharpness=None, max_iter=3).fit(X, y).sharpness_ is None


# --------------------------------------------------------------------------
# bad input: clear errors naming the problem
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        (
            {"rho": -0.1},
            r"'rho' parameter of SAMKernelRegressor must be a float in the range \[0.0, inf",
        ),
        ({"solver": "adam"}, "'solver' parameter of SAMKernelRegressor must be a str among"),
        ({"learning_rate": 0.0}, "'learning_rate' parameter of SAMKernelRegressor must be"),
        ({"learning_rate": -1.0}, "'learning_rate' parameter of SAMKernelRegressor must be"),
        ({"learning_rate": "fast"}, "'learning_rate' parameter"),
        ({"max_iter": 0}, "'max_iter' parameter"),
        ({"kernel": "banana"}, "'kernel' parameter"),
        ({"sharpness": "hessian_norm"}, "'sharpness' parameter"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"tol": -1.0}, "'tol' parameter"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X, y, _ = _data(n=10)
    with pytest.raises(ValueError, match=match):
        SAMKernelRegressor(**params).fit(X, y)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), np.array([1.0, 2.0]), "Input X contains NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), np.array([1.0, 2.0]), "Input X contains infinity"),
        (np.ones((2, 2)), np.array([1.0, np.nan]), "Input y contains NaN"),
        (np.array([["a", "b"], ["c", "d"]]), np.array([1.0, 2.0]), "could not convert string"),
        (np.ones((2, 2)), np.array(["a", "b"]), "y must be numeric"),
        (np.empty((0, 3)), np.empty(0), "0 sample\\(s\\)"),
        (np.ones((3, 2)), np.ones(4), "inconsistent numbers of samples"),
        (np.ones(3), np.ones(3), "Expected 2D array, got 1D array"),
    ],
)
def test_bad_input_is_named(X, y, match):
    with pytest.raises(ValueError, match=match):
        SAMKernelRegressor(max_iter=2).fit(X, y)


def test_wrong_number_of_features_at_predict():
    X, y, _ = _data()
    model = SAMKernelRegressor(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but SAMKernelRegressor is expecting 3"):
        model.predict(np.ones((4, 2)))


def test_precomputed_kernel_must_be_square_and_symmetric():
    with pytest.raises(ValueError, match="must be the square kernel matrix"):
        SAMKernelRegressor(kernel="precomputed").fit(np.ones((4, 3)), np.ones(4))
    K = np.eye(4)
    K[0, 1] = 0.5
    with pytest.raises(ValueError, match="kernel matrix is not symmetric"):
        SAMKernelRegressor(kernel="precomputed").fit(K, np.ones(4))


def test_non_finite_kernel_values_are_named():
    def bad(a, b):
        return np.nan

    with pytest.raises(ValueError, match="returned NaN or infinite values"):
        SAMKernelRegressor(kernel=bad).fit(np.ones((3, 2)), np.ones(3))


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SAMKernelRegressor().predict(np.ones((2, 2)))


# --------------------------------------------------------------------------
# scikit-learn's estimator checks
# --------------------------------------------------------------------------


def _expected_failures(estimator):
    if estimator.early_stopping is True:  # 'auto' is off on the checks' small data sets
        reason = (
            "the validation split draws rows: repeated rows can fall on both sides of "
            "it, while a weighted row is on one side (as in MLPRegressor)"
        )
        return {
            "check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason,
        }
    if estimator.kernel == "precomputed":
        return {
            "check_positive_only_tag_during_fit": (
                "the check passes X X^T minus its mean as a precomputed kernel; that "
                "matrix has negative eigenvalues, along which gradient descent "
                "diverges, and fit says so with a ValueError (KernelRidge solves a "
                "linear system instead and does not care)"
            )
        }
    return {}


@parametrize_with_checks(
    [
        SAMKernelRegressor(max_iter=50),
        # the checks fit on 10 samples: 0.2 leaves the 2 validation samples R^2 needs
        SAMKernelRegressor(
            solver="gd", max_iter=50, early_stopping=True, validation_fraction=0.2, random_state=0
        ),
        # rho is a radius in the RKHS norm: X X^T of the checks has eigenvalues in
        # the hundreds, and rho=0.05 would make SAM's loss rise (a DivergenceWarning)
        SAMKernelRegressor(kernel="precomputed", max_iter=50, rho=0.001),
        SAMKernelRegressor(max_iter=200, n_components=40, random_state=0),
        SAMKernelRegressor(kernel="linear", solver="gd", max_iter=50),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        # the checks' data sets are smaller than n_components=40: all rows become
        # centres, which the fit says (tested in test_kernel_scale.py)
        warnings.filterwarnings("ignore", "n_components=40 is larger", UserWarning)
        check(estimator)


def test_clone_keeps_parameters_only():
    X, y, _ = _data(n=20)
    model = SAMKernelRegressor(rho=0.3, max_iter=5).fit(X, y)
    fresh = clone(model)
    assert fresh.get_params() == model.get_params()
    assert not hasattr(fresh, "dual_coef_")


def test_sam_loss_that_ends_far_above_its_start_warns_naming_rho():
    # a polynomial kernel of degree 10 on standard normal X has eigenvalues up to
    # 2.5e7: rho=0.05 in its RKHS norm is a huge radius, and SAM's training loss
    # ends 1500 times above its start (R^2 = -1566 on the training data)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=80)
    with pytest.warns(
        DivergenceWarning, match=r"training loss jumped from .* Lower rho \(now 0.05"
    ):
        SAMKernelRegressor(kernel="poly", degree=10).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SAMKernelRegressor(kernel="poly", degree=10, rho=1e-6).fit(X, y)


@pytest.mark.parametrize("estimator", [SAMKernelRegressor(max_iter=5), SAMKernelRegressorCV(cv=2)])
def test_string_targets_are_an_error_naming_y(estimator):
    X = np.arange(8.0).reshape(4, 2)
    with pytest.raises(ValueError, match="is a regressor: y must be numeric, got 'a'"):
        estimator.fit(X, np.array(["a", "b", "a", "b"]))
    # numeric strings are numbers
    estimator.fit(X, np.array(["1", "2", "1.5", "0"]))
