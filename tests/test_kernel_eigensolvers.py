"""The kernel path does not depend on one LAPACK driver.

A driver that fails (``LinAlgError``) on some machines is simulated here by
monkeypatching it to raise, so every test runs the fallback whatever the BLAS
build; the subnormal kernel matrix that made OpenBLAS's ``dsyevr`` raise
"Internal Error" on some CPUs is checked by what reaches the eigensolvers,
not by whether this machine's LAPACK happens to fail on it.
"""

import numpy as np
import pytest
import scipy.sparse.linalg
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics.pairwise import rbf_kernel

from sksam import SAMKernelClassifier, SAMKernelRegressor, _kernel_path
from sksam._kernel_path import flush_subnormal, symmetric_eigh, top_eigenvalue

TINY = np.finfo(np.float64).tiny


def _subnormal_data():
    """The issue's data: rows 10 apart, gamma=10, so off-diagonal entries are ~1e-310."""
    rng = np.random.default_rng(1)
    X = 10 * rng.standard_normal((40, 3))
    return X, rng.standard_normal(40)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)


def _internal_error(*args, **kwargs):
    raise np.linalg.LinAlgError("Internal Error.")


def _failing_scipy(monkeypatch):
    """Every scipy eigen-driver the kernel path calls raises, as dsyevr did on subnormals."""
    monkeypatch.setattr(_kernel_path, "eigh", _internal_error)
    monkeypatch.setattr(_kernel_path, "eigvalsh", _internal_error)


def _failing_dense(monkeypatch):
    """scipy's and numpy's dense drivers all raise: only Lanczos is left."""
    _failing_scipy(monkeypatch)
    monkeypatch.setattr(np.linalg, "eigh", _internal_error)
    monkeypatch.setattr(np.linalg, "eigvalsh", _internal_error)


def test_the_issue_matrix_has_subnormal_entries():
    # the premise of the tests below: the kernel of this data underflows to subnormals
    X, _ = _subnormal_data()
    K = rbf_kernel(X, gamma=10.0)
    assert np.any((K != 0) & (np.abs(K) < TINY))


def test_subnormal_kernel_fits_and_no_subnormal_reaches_an_eigensolver(monkeypatch):
    # before: scipy.linalg.eigvalsh(K, subset_by_index=...) got K's 1e-310 entries and
    # raised "LinAlgError: Internal Error." on some CPUs (fit crashed)
    seen = []
    real_eigh, real_eigvalsh = _kernel_path.eigh, _kernel_path.eigvalsh

    def recording(real):
        def solver(M, *args, **kwargs):
            seen.append(np.any((M != 0) & (np.abs(M) < TINY)))
            return real(M, *args, **kwargs)

        return solver

    monkeypatch.setattr(_kernel_path, "eigh", recording(real_eigh))
    monkeypatch.setattr(_kernel_path, "eigvalsh", recording(real_eigvalsh))
    X, y = _subnormal_data()
    model = SAMKernelRegressor(gamma=10.0).fit(X, y)  # the issue's call
    assert seen and not any(seen)
    assert model.n_iter_ == model.max_iter and np.all(np.isfinite(model.predict(X)))
    # the rows are isolated (K = I to about 1e-12, s_max = 1 / n): GD's
    # first step, lr = 1 / s_max = n, interpolates every row exactly
    gd = SAMKernelRegressor(solver="gd", gamma=10.0, max_iter=1).fit(X, y)
    assert_allclose(gd.learning_rate_, 40.0, rtol=1e-14)
    assert_allclose(gd.predict(X), y, rtol=1e-10)


def test_flush_subnormal_zeroes_only_subnormal_entries():
    M = np.array([[1.0, 1e-310, -1e-320], [TINY, 0.0, -2 * TINY], [1e-300, 5.0, -1e-309]])
    flushed = flush_subnormal(M.copy())
    assert_array_equal(flushed, [[1.0, 0.0, 0.0], [TINY, 0.0, -2 * TINY], [1e-300, 5.0, 0.0]])


@pytest.mark.parametrize(
    "params",
    [
        {"solver": "sam", "max_iter": 300},  # Krylov basis + dense top eigenvalue
        {"solver": "gd", "max_iter": 300, "sharpness": "adaptive_rho"},
        {"solver": "sam", "n_components": 20, "random_state": 0, "max_iter": 300},
        {"solver": "usam", "kernel": "linear", "max_iter": 100, "sharpness": "top_eigenvalue"},
    ],
)
def test_fit_survives_failing_scipy_drivers(monkeypatch, params):
    # before: the LinAlgError of scipy's driver reached the user
    X, y = _data()
    expected = SAMKernelRegressor(**params).fit(X, y)
    _failing_scipy(monkeypatch)
    model = SAMKernelRegressor(**params).fit(X, y)
    assert_allclose(model.predict(X), expected.predict(X), rtol=1e-9, atol=1e-12)
    assert_allclose(model.learning_rate_, expected.learning_rate_, rtol=1e-12)
    assert_allclose(model.sharpness_, expected.sharpness_, rtol=1e-9)


def test_adaptive_sharpness_survives_a_failing_numpy_driver(monkeypatch):
    X, y = _data()
    expected = SAMKernelRegressor(max_iter=100, sharpness="adaptive_rho").fit(X, y)
    real, calls = np.linalg.eigh, []

    def first_call_fails(M, *args, **kwargs):
        # the first is the kernel model's eigh of K (the later ones are the
        # sharpness module's, which is not the kernel path's)
        calls.append(M.shape)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("Internal Error.")
        return real(M, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "eigh", first_call_fails)
    model = SAMKernelRegressor(max_iter=100, sharpness="adaptive_rho").fit(X, y)
    assert calls[0] == (60, 60)
    assert_allclose(model.sharpness_, expected.sharpness_, rtol=1e-9)


def test_eigen_route_survives_failing_dense_drivers(monkeypatch):
    # a classifier with many classes and steps takes one dense eigh of K (EigenPath)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    y = np.arange(60) % 6
    params = dict(max_iter=2000, solver="gd")
    expected = SAMKernelClassifier(**params).fit(X, y)
    assert expected.krylov_size_ == 60  # the full eigenbasis
    calls = []

    def evd_fails(M, *args, driver=None, **kwargs):
        calls.append(driver)
        if driver == "evd":
            raise np.linalg.LinAlgError("Internal Error.")
        return real(M, *args, driver=driver, **kwargs)

    real = _kernel_path.eigh
    monkeypatch.setattr(_kernel_path, "eigh", evd_fails)
    model = SAMKernelClassifier(**params).fit(X, y)
    assert "evd" in calls and "ev" in calls
    assert_allclose(model.decision_function(X), expected.decision_function(X), atol=1e-9)


def test_top_eigenvalue_falls_back_to_lanczos(monkeypatch):
    K = rbf_kernel(_data(40)[0], gamma=0.5)
    expected = np.linalg.eigvalsh(K)[-1]
    _failing_dense(monkeypatch)
    assert_allclose(top_eigenvalue(K), expected, rtol=1e-12)


def test_top_eigenvalue_of_a_large_matrix_falls_back_to_dense(monkeypatch):
    K = rbf_kernel(_data(150)[0], gamma=0.5)
    expected = np.linalg.eigvalsh(K)[-1]

    def no_convergence(*args, **kwargs):
        raise scipy.sparse.linalg.ArpackNoConvergence("no convergence", [], [])

    monkeypatch.setattr(_kernel_path, "eigsh", no_convergence)
    assert_allclose(top_eigenvalue(K), expected, rtol=1e-12)


def test_symmetric_eigh_tries_every_driver_then_names_the_failures(monkeypatch):
    M = np.diag([1.0, 2.0, 3.0])
    _failing_scipy(monkeypatch)
    values, vectors = symmetric_eigh(M)  # numpy's driver
    assert_allclose(values, [1.0, 2.0, 3.0])
    monkeypatch.setattr(np.linalg, "eigh", _internal_error)
    with pytest.raises(np.linalg.LinAlgError, match="Every eigensolver failed.*Internal Error"):
        symmetric_eigh(M)


def test_fit_with_every_dense_driver_failing_uses_lanczos(monkeypatch):
    # every dense eigvalsh fails: the top eigenvalue (hence learning_rate='auto')
    # comes from a Lanczos estimate, to machine precision
    X, y = _data()
    expected = SAMKernelRegressor(max_iter=50).fit(X, y)
    monkeypatch.setattr(_kernel_path, "eigvalsh", _internal_error)
    monkeypatch.setattr(np.linalg, "eigvalsh", _internal_error)
    model = SAMKernelRegressor(max_iter=50).fit(X, y)
    assert_allclose(model.learning_rate_, expected.learning_rate_, rtol=1e-10)
    assert_allclose(model.predict(X), expected.predict(X), rtol=1e-8, atol=1e-12)
