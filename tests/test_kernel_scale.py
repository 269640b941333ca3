"""SAMKernelRegressor past the n x n wall: Nystroem and primal paths, back ends, limits."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.kernel_approximation import Nystroem
from sklearn.metrics import r2_score
from sklearn.metrics.pairwise import rbf_kernel

from sksam import SAMKernelRegressor, _kernel_features
from sksam._update_rules import perturbation_scale


def _data(n=80, d=3, seed=0, n_outputs=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.2 * rng.standard_normal(n)
    if n_outputs:
        y = np.column_stack([y * (j + 1) + j for j in range(n_outputs)])
    return X, y, rng.standard_normal((30, d))


def _cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _feature_loop(Phi, y, *, solver, lr, rho, max_iter, w=None):
    """The rule of sksam._update_rules on theta, Phi given (the oracle)."""
    n = Phi.shape[0]
    w = np.ones(n) if w is None else w
    Y = y.reshape(n, -1)
    theta = np.zeros((Phi.shape[1], Y.shape[1]))

    def grad(t):
        return Phi.T @ (w[:, None] * (Phi @ t - Y)) / w.sum()

    for _ in range(max_iter):
        g = grad(theta)
        c = perturbation_scale(solver, rho, np.linalg.norm(g))
        theta = theta - lr * grad(theta + c * g)
    return theta


# --------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("solver, rho", [("gd", 0.0), ("sam", 0.1), ("usam", 0.5)])
def test_nystroem_with_all_rows_as_centres_is_the_exact_path(solver, rho):
    # gamma=1 keeps K well conditioned, so no eigenvalue falls below the cutoff
    X, y, X_test = _data(n=50)
    common = dict(solver=solver, rho=rho, gamma=1.0, max_iter=100)
    exact = SAMKernelRegressor(**common).fit(X, y)
    nys = SAMKernelRegressor(centers=X, **common).fit(X, y)
    assert nys.n_components_ == 50
    assert nys.learning_rate_ == pytest.approx(exact.learning_rate_, rel=1e-10)
    assert _relative(nys.predict(X_test), exact.predict(X_test)) < 1e-8
    assert_allclose(nys.loss_curve_, exact.loss_curve_, rtol=1e-8)
    assert nys.sharpness_ == pytest.approx(exact.sharpness_, rel=1e-10)


@pytest.mark.parametrize("solver, rho", [("gd", 0.0), ("sam", 0.2), ("usam", 0.5)])
def test_nystroem_equals_the_loop_on_sklearn_nystroem_features(solver, rho):
    # sklearn's features are K_CC^{-1/2} k(C, x) up to a rotation, under which
    # GD and SAM (Euclidean norm) are equivariant: the same predictions
    X, y, X_test = _data(n=120, n_outputs=2)
    feats = Nystroem(gamma=0.5, n_components=30, random_state=0).fit(X)
    model = SAMKernelRegressor(
        solver=solver, rho=rho, gamma=0.5, centers=feats.components_, max_iter=60
    ).fit(X, y)
    theta = _feature_loop(
        feats.transform(X), y, solver=solver, lr=model.learning_rate_, rho=rho, max_iter=60
    )
    assert _relative(model.predict(X_test), feats.transform(X_test) @ theta) < 1e-8


def test_nystroem_learning_rate_and_sharpness_are_eigenvalues_of_a():
    X, y, _ = _data(n=120)
    feats = Nystroem(gamma=0.5, n_components=30, random_state=0).fit(X)
    Phi = feats.transform(X)
    A = Phi.T @ Phi / 120
    lam_max = np.linalg.eigvalsh(A).max()
    model = SAMKernelRegressor(
        gamma=0.5, centers=feats.components_, max_iter=20, sharpness="top_eigenvalue"
    ).fit(X, y)  # the eigenvalue by name: the default became 'rho' (issue 18)
    assert model.learning_rate_ == pytest.approx(1 / lam_max, rel=1e-10)
    assert model.sharpness_ == pytest.approx(lam_max, rel=1e-10)
    trace = SAMKernelRegressor(
        gamma=0.5, centers=feats.components_, max_iter=20, sharpness="trace"
    ).fit(X, y)
    assert trace.sharpness_ == pytest.approx(np.trace(A), rel=1e-10)


def test_nystroem_rho_sharpness_equals_the_trust_region_on_a():
    from sksam.sharpness import quadratic_sharpness

    X, y, _ = _data(n=120)
    model = SAMKernelRegressor(
        solver="sam", rho=0.3, n_components=25, random_state=0, sharpness="rho", max_iter=40
    ).fit(X, y)
    # features L^{-1} k(C, x), K_CC = L L^T: an orthonormal basis of span{k(c, .)}
    L = np.linalg.cholesky(rbf_kernel(model.centers_, gamma=1 / 3))
    Phi = np.linalg.solve(L, rbf_kernel(model.centers_, X, gamma=1 / 3)).T
    A, b = Phi.T @ Phi / 120, Phi.T @ y / 120
    theta = model._path.V @ model._coef
    lam, U = np.linalg.eigh(A)
    expected = quadratic_sharpness(lam, U.T @ (A @ theta - b[:, None]), measure="rho", rho=0.3)
    assert model.sharpness_ == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("solver", ["gd", "sam"])
def test_primal_linear_path_equals_the_dual_path(solver):
    X, y, X_test = _data(n=60, d=4, n_outputs=2)
    primal = SAMKernelRegressor(solver=solver, rho=0.2, kernel="linear", max_iter=80).fit(X, y)
    dual = SAMKernelRegressor(solver=solver, rho=0.2, kernel="precomputed", max_iter=80)
    dual.fit(X @ X.T, y)
    assert primal.coef_.shape == (2, 4) and not hasattr(primal, "dual_coef_")
    assert _relative(primal.predict(X_test), dual.predict(X_test @ X.T)) < 1e-8
    assert_allclose(primal.coef_, (X.T @ dual.dual_coef_).T, rtol=1e-8)
    assert_allclose(primal.loss_curve_, dual.loss_curve_, rtol=1e-8)


def test_nystroem_staged_predict_is_the_path():
    X, y, X_test = _data(n=100)
    model = SAMKernelRegressor(solver="sam", rho=0.1, n_components=20, random_state=0)
    model.set_params(max_iter=30).fit(X, y)
    stages = list(model.staged_predict(X_test))
    assert len(stages) == 30
    assert_allclose(stages[-1], model.predict(X_test), rtol=1e-10)
    losses = [np.sum((p - y) ** 2) / 200 for p in model.staged_predict(X)]
    assert_allclose(losses[:-1], model.loss_curve_[1:], rtol=1e-9)
    assert model.loss_curve_[0] == pytest.approx(np.sum(y**2) / 200, rel=1e-12)


def test_nystroem_early_stopping_scores_are_r2_on_the_held_out_part():
    X, y, _ = _data(n=100)
    model = SAMKernelRegressor(
        solver="sam",
        rho=0.1,
        n_components=20,
        early_stopping=True,
        validation_fraction=0.2,
        max_iter=30,
        random_state=3,
    ).fit(X, y)
    # the reference: the same centres, fitted on the training part only
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    train, val = train_test_split(np.arange(100), test_size=20, random_state=check_random_state(3))
    reference = SAMKernelRegressor(solver="sam", rho=0.1, centers=model.centers_, max_iter=30)
    reference.fit(X[train], y[train])
    expected = [r2_score(y[val], p) for p in reference.staged_predict(X[val])]
    assert_allclose(model.validation_scores_, expected, rtol=1e-8)
    assert len(list(model.staged_predict(X[:2]))) == int(np.argmax(expected)) + 1


def test_streaming_in_many_blocks_equals_one_block(monkeypatch):
    X, y, X_test = _data(n=90)
    one = SAMKernelRegressor(n_components=20, random_state=0, max_iter=50).fit(X, y)
    monkeypatch.setattr(_kernel_features, "BLOCK_BYTES", 7 * 8 * 23)  # 7-row blocks
    many = SAMKernelRegressor(n_components=20, random_state=0, max_iter=50).fit(X, y)
    assert_allclose(many.predict(X_test), one.predict(X_test), rtol=1e-12)


# --------------------------------------------------------------------------
# sample weights
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"solver": "sam", "rho": 0.2},
        {"solver": "usam", "rho": 0.5, "kernel": "linear"},
        {"solver": "sam", "rho": 0.2, "centers": "first 15 rows"},
    ],
)
def test_integer_sample_weights_equal_repeated_rows(params):
    X, y, X_test = _data(n=40)
    if params.get("centers") == "first 15 rows":
        params = {**params, "centers": X[:15]}
    w = np.random.default_rng(1).integers(0, 4, size=40)
    weighted = SAMKernelRegressor(max_iter=60, **params).fit(X, y, sample_weight=w)
    repeated = SAMKernelRegressor(max_iter=60, **params).fit(np.repeat(X, w, 0), np.repeat(y, w))
    assert _relative(weighted.predict(X_test), repeated.predict(X_test)) < 1e-8
    assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-8)
    assert weighted.sharpness_ == pytest.approx(repeated.sharpness_, rel=1e-10)


def test_sample_weight_with_metadata_routing_in_grid_search():
    import sklearn
    from sklearn.model_selection import GridSearchCV

    X, y, _ = _data(n=60)
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=60)
    with sklearn.config_context(enable_metadata_routing=True):
        model = SAMKernelRegressor(max_iter=30).set_fit_request(sample_weight=True)
        model.set_score_request(sample_weight=False)
        search = GridSearchCV(model, {"rho": [0.0, 0.1]}, cv=2, refit=True)
        search.fit(X, y, sample_weight=w)
    direct = SAMKernelRegressor(max_iter=30, rho=search.best_params_["rho"]).fit(
        X, y, sample_weight=w
    )
    assert_allclose(search.best_estimator_.predict(X), direct.predict(X), rtol=1e-12)
    unweighted = SAMKernelRegressor(max_iter=30, rho=search.best_params_["rho"]).fit(X, y)
    assert _relative(direct.predict(X), unweighted.predict(X)) > 1e-4


def test_negative_or_zero_sample_weights_are_errors():
    X, y, _ = _data(n=20)
    with pytest.raises(ValueError, match="Negative values in data"):
        SAMKernelRegressor().fit(X, y, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="at least one non-zero"):
        SAMKernelRegressor().fit(X, y, sample_weight=np.zeros(20))
    model = SAMKernelRegressor(early_stopping=True, validation_fraction=0.2, random_state=0)
    _, val = model._split(20)
    w = np.zeros(20)
    w[val] = 1.0  # all the weight on the validation part
    with pytest.raises(ValueError, match="sample weights of the training"):
        model.fit(X, y, sample_weight=w)


# --------------------------------------------------------------------------
# errors and limits
# --------------------------------------------------------------------------


def test_early_stopping_with_one_validation_sample_is_an_error():
    # issue 7: a single validation sample scored R^2 = 0 at every step and the
    # fit silently returned the 1-step model
    X, y, _ = _data(n=10)
    for params in ({}, {"n_components": 5}):
        model = SAMKernelRegressor(early_stopping=True, validation_fraction=0.1, **params)
        with pytest.raises(ValueError, match="leaves 1 for validation and 9 for training"):
            model.fit(X, y)


def test_exact_path_too_large_for_memory_is_an_error_before_allocating(monkeypatch):
    # 100 MB "available": the 2000 x 2000 exact path plans ~96 MB, above 80% of it
    monkeypatch.setattr(_kernel_features, "available_memory", lambda: 10**8)
    X, y, _ = _data(n=2000)
    with pytest.raises(ValueError, match=r"2000 x 2000 matrix.*Set n_components"):
        SAMKernelRegressor(early_stopping=False).fit(X, y)  # the whole 2000 x 2000
    with pytest.raises(ValueError, match="feature-space path with 1500 features.*smaller"):
        SAMKernelRegressor(n_components=1500, gamma=1.0).fit(X, y)
    SAMKernelRegressor(n_components=20, max_iter=5).fit(X, y)  # O(M^2 + block M) memory


def test_predict_streams_in_blocks(monkeypatch):
    X, y, X_test = _data(n=50)
    model = SAMKernelRegressor(max_iter=20).fit(X, y)
    whole = model.predict(X_test)
    monkeypatch.setattr(_kernel_features, "BLOCK_BYTES", 8 * 50 * 4)  # 4-row blocks
    import sksam._kernel_models

    monkeypatch.setattr(sksam._kernel_models, "block_rows", _kernel_features.block_rows)
    assert _kernel_features.block_rows(50) == 4
    assert_allclose(model.predict(X_test), whole, rtol=1e-13)


@pytest.mark.parametrize(
    "params, match",
    [
        pytest.param(
            {"device": "cuda", "n_components": 5},
            "'cuda' is not available",
            marks=pytest.mark.skipif(_cuda_available(), reason="a CUDA device is present"),
        ),
        ({"device": "banana", "n_components": 5}, "not a torch device"),
        ({"dtype": "float16", "n_components": 5}, "dtype must be"),
        ({"dtype": "float32", "n_components": 5}, "needs a torch device"),
        ({"device": "cpu"}, "apply to the feature-space path"),
        ({"centers": np.ones((3, 2))}, r"centers must have shape \(n_centers, 3\)"),
        ({"centers": np.ones((3, 3)), "n_components": 4}, "n_components=4 but 3 centers"),
        ({"n_components": 0}, "'n_components' parameter"),
    ],
)
def test_bad_scale_parameters_are_named(params, match):
    pytest.importorskip("torch")
    X, y, _ = _data(n=20)
    with pytest.raises(ValueError, match=match):
        SAMKernelRegressor(max_iter=3, **params).fit(X, y)


def test_more_components_than_samples_warns_and_uses_all_rows():
    X, y, X_test = _data(n=20)
    with pytest.warns(UserWarning, match="n_components=30 is larger than the 20"):
        model = SAMKernelRegressor(n_components=30, gamma=1.0, max_iter=10).fit(X, y)
    assert model.centers_.shape == (20, 3)


def test_refit_in_another_parametrization_drops_the_old_attributes():
    X, y, _ = _data(n=40)
    model = SAMKernelRegressor(max_iter=5).fit(X, y)
    assert hasattr(model, "dual_coef_")
    model.set_params(n_components=10, random_state=0).fit(X, y)
    assert not hasattr(model, "dual_coef_") and not hasattr(model, "X_fit_")
    assert model.centers_.shape == (10, 3)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_pickle_of_a_nystroem_model(device):
    if device is not None:
        pytest.importorskip("torch")
    X, y, X_test = _data(n=60, n_outputs=2)
    model = SAMKernelRegressor(n_components=15, random_state=0, max_iter=20, device=device)
    model.fit(X, y)
    loaded = pickle.loads(pickle.dumps(model))
    assert_allclose(loaded.predict(X_test), model.predict(X_test), rtol=0)


def test_precomputed_kernel_with_n_components_uses_columns_as_centres():
    X, y, X_test = _data(n=60)
    K, K_test = rbf_kernel(X, gamma=0.4), rbf_kernel(X_test, X, gamma=0.4)
    pre = SAMKernelRegressor(kernel="precomputed", n_components=15, random_state=0, max_iter=30)
    pre.fit(K, y)
    on_x = SAMKernelRegressor(gamma=0.4, centers=X[pre.centers_], max_iter=30).fit(X, y)
    assert_allclose(pre.predict(K_test), on_x.predict(X_test), rtol=1e-10)


# --------------------------------------------------------------------------
# back ends: torch and dask give the numpy path
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "polynomial", "linear", "cosine", "chi2"])
def test_torch_cpu_equals_numpy(kernel):
    pytest.importorskip("torch")
    X, y, X_test = _data(n=70)
    if kernel == "chi2":  # computed by numpy, then moved: the fallback of other kernels
        X, X_test = np.abs(X), np.abs(X_test)
    common = dict(kernel=kernel, n_components=20, random_state=0, max_iter=40, solver="sam")
    ref = SAMKernelRegressor(**common).fit(X, y)
    torch_fit = SAMKernelRegressor(device="cpu", **common).fit(X, y)
    assert _relative(torch_fit.predict(X_test), ref.predict(X_test)) < 1e-10


def test_torch_float32_is_accurate_to_single_precision():
    pytest.importorskip("torch")
    X, y, X_test = _data(n=70)
    common = dict(n_components=20, random_state=0, max_iter=40, solver="sam")
    ref = SAMKernelRegressor(**common).fit(X, y)
    single = SAMKernelRegressor(device="cpu", dtype="float32", **common).fit(X, y)
    assert _relative(single.predict(X_test), ref.predict(X_test)) < 1e-4


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_cuda_equals_numpy(dtype, rtol):
    X, y, X_test = _data(n=300)
    common = dict(n_components=50, random_state=0, max_iter=100, solver="sam")
    ref = SAMKernelRegressor(**common).fit(X, y)
    gpu = SAMKernelRegressor(device="cuda", dtype=dtype, **common).fit(X, y)
    assert _relative(gpu.predict(X_test), ref.predict(X_test)) < rtol


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    # one in-process worker: no network port at all (inproc:// transport), no dashboard
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster, timeout=30)
    yield client
    client.close(timeout=30)
    cluster.close(timeout=30)


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 20, "random_state": 0, "solver": "sam"},
        {"kernel": "linear", "solver": "gd"},
        {"n_components": 20, "random_state": 0, "early_stopping": True},
    ],
)
def test_dask_equals_numpy(dask_client, params):
    da = pytest.importorskip("dask.array")
    X, y, X_test = _data(n=90)
    ref = SAMKernelRegressor(max_iter=40, **params).fit(X, y)
    on_dask = SAMKernelRegressor(max_iter=40, **params)
    on_dask.fit(da.from_array(X, chunks=(25, 3)), da.from_array(y, chunks=25))
    assert _relative(on_dask.predict(X_test), ref.predict(X_test)) < 1e-10
    lazy = on_dask.predict(da.from_array(X_test, chunks=(7, 3)))
    assert _relative(lazy.compute(), ref.predict(X_test)) < 1e-10
    if params.get("early_stopping"):
        assert_allclose(on_dask.validation_scores_, ref.validation_scores_, rtol=1e-10)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"centers": "first rows"}, "Input contains NaN"),  # pairwise_kernels checks
        ({"centers": "first rows", "device": "cpu"}, "contain NaN or infinite values"),
        ({"kernel": "linear"}, "contain NaN or infinite values"),
    ],
)
def test_dask_input_with_nan_is_an_error(dask_client, params, match):
    # dask chunks are read in the pass over the data, not validated up front
    da = pytest.importorskip("dask.array")
    X, y, _ = _data(n=30)
    X[17, 1] = np.nan
    if "centers" in params:
        params = {**params, "centers": X[:5]}  # row 17 is not a centre
    model = SAMKernelRegressor(**params)
    with pytest.raises(ValueError, match=match):
        model.fit(da.from_array(X, chunks=10), da.from_array(y, chunks=10))


def test_dask_array_needs_the_feature_space_path(dask_client):
    da = pytest.importorskip("dask.array")
    X, y, _ = _data(n=30)
    with pytest.raises(ValueError, match="A dask array needs the feature-space path"):
        SAMKernelRegressor().fit(da.from_array(X, chunks=10), da.from_array(y, chunks=10))
