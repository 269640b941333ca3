"""The kernel estimators under hostile use: failed and interrupted fits, extreme scales,
dask edge cases, memory limits, feature names."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.kernel_ridge import KernelRidge
from sklearn.utils.validation import check_is_fitted

import sksam._kernel_models as _sharpness_home  # calls quadratic_sharpness (patched below)
from sksam import SAMKernelRegressor, SAMKernelRegressorCV, _kernel_features


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


def _state(estimator):
    """The estimator's attributes, arrays copied (to compare before and after)."""
    return {
        key: value.copy() if isinstance(value, np.ndarray) else value
        for key, value in vars(estimator).items()
    }


def _assert_same_state(before, estimator):
    after = vars(estimator)
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert_array_equal(after[key], value, err_msg=key)
        else:
            assert after[key] is value or after[key] == value, key


# --------------------------------------------------------------------------
# a fit succeeds or changes nothing
# --------------------------------------------------------------------------


def _spread_and_collapsed():
    """A: far-apart rows (K ~ I, s_max ~ 1/n); B: one row repeated (K = 1, s_max = 1)."""
    rng = np.random.default_rng(1)
    X_a = 10 * rng.standard_normal((40, 3))
    X_b = np.repeat(X_a[:1], 40, axis=0)
    return X_a, X_b, rng.standard_normal(40)


def test_failed_refit_keeps_the_earlier_fit_whole():
    # before: X_fit_ became B while dual_coef_ stayed A's, and predict was silently wrong
    X_a, X_b, y = _spread_and_collapsed()
    model = SAMKernelRegressor(solver="gd", gamma=10.0, learning_rate=20.0, max_iter=30)
    model.fit(X_a, y)
    expected = model.predict(X_a)
    before = _state(model)
    with pytest.raises(ValueError, match="learning_rate=20.0 makes solver 'gd' diverge"):
        model.fit(X_b, y)
    _assert_same_state(before, model)
    assert_array_equal(model.predict(X_a), expected)


def test_failed_first_fit_leaves_the_estimator_unfitted():
    _, X_b, y = _spread_and_collapsed()
    model = SAMKernelRegressor(solver="gd", gamma=10.0, learning_rate=20.0)
    with pytest.raises(ValueError, match="diverge"):
        model.fit(X_b, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    assert not hasattr(model, "n_features_in_")


@pytest.mark.parametrize("params", [{}, {"n_components": 10, "random_state": 0}])
def test_interrupt_during_sharpness_restores_the_earlier_fit(monkeypatch, params):
    X, y = _data()
    model = SAMKernelRegressor(sharpness="rho", max_iter=20, **params).fit(X, y)
    expected = model.predict(X)
    before = _state(model)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_sharpness_home, "quadratic_sharpness", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X[:30] + 1.0, y[:30])
    _assert_same_state(before, model)
    assert_array_equal(model.predict(X), expected)
    fresh = SAMKernelRegressor(sharpness="rho", max_iter=20, **params)
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)


def test_non_finite_sharpness_is_an_error_not_a_fitted_model(monkeypatch):
    # a NaN sharpness (or a stale one from an earlier fit) must not reach the user
    X, y = _data()
    model = SAMKernelRegressor(sharpness="rho", max_iter=20).fit(X, y)
    old = model.sharpness_
    monkeypatch.setattr(_sharpness_home, "quadratic_sharpness", lambda *a, **k: np.nan)
    with pytest.raises(ValueError, match=r"sharpness \('rho'\) of the fitted model is not finite"):
        model.fit(2 * X, y)
    assert model.sharpness_ == old


def test_cv_failed_refit_keeps_the_earlier_fit():
    # before: validate_data had already reset n_features_in_ to the new X's 5 columns
    X, y = _data()
    search = SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=2).fit(X, y)
    expected = search.predict(X)
    before = _state(search)
    wider = np.hstack([X, X[:, :2]])
    with pytest.raises(ValueError, match="rhos must be a non-empty list"):
        search.set_params(rhos=[-1.0]).fit(wider, y)
    search.set_params(rhos=[0.1])
    before["rhos"] = search.rhos
    _assert_same_state(before, search)
    assert_array_equal(search.predict(X), expected)


# --------------------------------------------------------------------------
# dask edge cases
# --------------------------------------------------------------------------


def test_empty_dask_array_is_a_clear_error():
    da = pytest.importorskip("dask.array")
    X, y = da.zeros((0, 3), chunks=2), da.zeros(0, chunks=2)
    with pytest.raises(ValueError, match=r"0 sample\(s\).*minimum of 1 is required"):
        SAMKernelRegressor(n_components=5).fit(X, y)


def test_unknown_dask_chunk_sizes_name_the_cause_and_the_fix():
    da = pytest.importorskip("dask.array")
    X, y = _data()
    Xd, yd = da.from_array(X, chunks=10), da.from_array(y, chunks=10)
    keep = Xd[:, 0] > 0
    with pytest.raises(ValueError, match=r"X and y has unknown chunk sizes.*compute_chunk_sizes"):
        SAMKernelRegressor(n_components=5).fit(Xd[keep], yd[keep])
    with pytest.raises(ValueError, match=r"array y has unknown.*y\.compute_chunk_sizes\(\)"):
        SAMKernelRegressor(n_components=5).fit(Xd, yd[keep])


# --------------------------------------------------------------------------
# extreme scales
# --------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"n_components": 15, "random_state": 0}])
@pytest.mark.parametrize("scale", [2.0**-600, 1e-170, 1e150, 2.0**500])
def test_the_path_is_scale_equivariant_in_y_and_rho(params, scale):
    # GD/USAM paths are linear in y; SAM's is equivariant in (y, rho) jointly.
    # Before: squares of y under- or overflowed (GD predicted zeros, SAM did GD).
    X, y = _data()
    for solver, rho in (("gd", 0.0), ("usam", 0.3), ("sam", 0.3)):
        ref = SAMKernelRegressor(solver=solver, rho=rho, max_iter=30, sharpness=None, **params)
        ref.fit(X, y)
        scaled_rho = rho * scale if solver == "sam" else rho
        model = SAMKernelRegressor(
            solver=solver, rho=scaled_rho, max_iter=30, sharpness=None, **params
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            model.fit(X, y * scale)
        assert_allclose(model.predict(X) / scale, ref.predict(X), rtol=1e-9, atol=0)


def test_y_whose_squares_overflow_is_an_error_naming_the_remedy():
    # before: all-zero predictions and only numpy's overflow RuntimeWarning
    X, y = _data()
    with pytest.raises(ValueError, match=r"loss overflows float64.*Standardize y"):
        SAMKernelRegressor(solver="gd", max_iter=10).fit(X, y * 1e155)


@pytest.mark.parametrize("scale", [1e-300, 1e-160])
@pytest.mark.parametrize("d", [3, 100])  # primal (d < n) and exact (d >= n) linear paths
def test_a_kernel_that_underflows_is_named(scale, d):
    # before: zeros predicted silently (1e-300), or blamed on the kernel's PSD-ness (1e-160)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, d)) * scale, rng.standard_normal(40)
    with pytest.raises(ValueError, match=r"too small for float64.*Standardize X") as info:
        SAMKernelRegressor(kernel="linear", max_iter=10).fit(X, y)
    assert "positive semi-definite" not in str(info.value)


def test_a_zero_kernel_on_zero_data_still_fits():
    X, y = np.zeros((10, 2)), np.arange(10.0)
    model = SAMKernelRegressor(kernel="linear", max_iter=5).fit(X, y)
    assert_array_equal(model.predict(X), 0.0)


# --------------------------------------------------------------------------
# the memory guard
# --------------------------------------------------------------------------


def _limits(monkeypatch, meminfo=None, cgroup=None, rlimit=None):
    monkeypatch.setattr(_kernel_features, "_meminfo_available", lambda: meminfo)
    monkeypatch.setattr(_kernel_features, "_cgroup_available", lambda: cgroup)
    monkeypatch.setattr(_kernel_features, "_rlimit_available", lambda: rlimit)


@pytest.mark.parametrize(
    "limits, source",
    [
        ({"meminfo": 10**12, "cgroup": 10**8}, "cgroup"),
        ({"meminfo": 10**12, "rlimit": 10**8}, "RLIMIT_AS"),
        ({"meminfo": 10**8, "cgroup": 10**12, "rlimit": 10**12}, "machine's available"),
    ],
)
def test_memory_guard_respects_the_tightest_limit(monkeypatch, limits, source):
    _limits(monkeypatch, **limits)
    assert _kernel_features.available_memory() == 10**8
    X, y = _data(n=2000)
    with pytest.raises(ValueError, match=rf"2000 x 2000 matrix.*\(under [^)]*{source}"):
        SAMKernelRegressor().fit(X, y)


def test_memory_guard_without_any_limit_known(monkeypatch):
    _limits(monkeypatch)
    assert _kernel_features.available_memory() is None
    X, y = _data(n=50)
    SAMKernelRegressor(max_iter=5).fit(X, y)


def test_cgroup_v2_and_v1_readers(monkeypatch, tmp_path):
    def files(limit, usage, name):
        (tmp_path / f"{name}.limit").write_text(limit)
        (tmp_path / f"{name}.usage").write_text(usage)
        return (str(tmp_path / f"{name}.limit"), str(tmp_path / f"{name}.usage"))

    v2_unlimited = files("max\n", "123\n", "v2max")
    v2 = files("1000000\n", "250000\n", "v2")
    v1_unlimited = files(f"{2**63 - 4096}\n", "5\n", "v1max")
    v1 = files("4000\n", "1000\n", "v1")
    missing = (str(tmp_path / "absent"), str(tmp_path / "absent"))
    cases = [
        ((v2, v1), 750000),
        ((v2_unlimited, v1), 3000),
        ((missing, v1_unlimited), None),
        ((v2_unlimited, v1_unlimited), None),
        ((missing, missing), None),
    ]
    for cgroup_files, expected in cases:
        monkeypatch.setattr(_kernel_features, "CGROUP_FILES", cgroup_files)
        assert _kernel_features._cgroup_available() == expected


def test_rlimit_reader(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert _kernel_features._rlimit_available() is None
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2**50, resource.RLIM_INFINITY))
    left = _kernel_features._rlimit_available()
    assert 0 < left < 2**50  # the limit minus this process's address space


# --------------------------------------------------------------------------
# feature names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: SAMKernelRegressorCV(rhos=[0.1], max_iter=10, cv=2),
        lambda: SAMKernelRegressor(max_iter=10),
    ],
)
def test_reordered_columns_are_refused_as_scikit_learn_does(make):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    reordered = frame[["c", "a", "b"]]
    with pytest.raises(ValueError) as reference:
        KernelRidge().fit(frame, y).predict(reordered)
    model = make().fit(frame, y)
    with pytest.raises(ValueError) as ours:
        model.predict(reordered)
    assert str(ours.value) == str(reference.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before: "X has feature names, but ..." from the CV
        pred = model.predict(frame)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        assert_allclose(model.predict(X), pred, rtol=1e-12)  # as KernelRidge warns


# --------------------------------------------------------------------------
# sharpness measures the kernel models cannot yet compute exactly
# --------------------------------------------------------------------------


def _unwired_measures():
    from sksam._kernel_models import KERNEL_MEASURES
    from sksam.sharpness import MEASURES

    return sorted(set(MEASURES) - set(KERNEL_MEASURES)) or ["not_a_measure"]


@pytest.mark.parametrize("measure", _unwired_measures())
@pytest.mark.parametrize("make", [SAMKernelRegressor, SAMKernelRegressorCV])
def test_a_measure_the_kernel_cannot_compute_is_refused_not_approximated(measure, make):
    # before: the Nystroem and linear paths answered 'rho' for any other name
    X, y = _data()
    with pytest.raises(ValueError, match=rf"'sharpness' parameter.*Got '{measure}'"):
        make(sharpness=measure).fit(X, y)


# --------------------------------------------------------------------------
# the transactional rule as a property: any failure, anywhere, changes nothing
# --------------------------------------------------------------------------

#: Where a fit can fail: (module, name) of a function it calls on the way.
_FAILURE_POINTS = [
    ("sksam._kernel_models", "quadratic_sharpness"),  # the sharpness stage
    ("sksam._kernel_models", "top_eigenvalue"),  # building the problem
    ("sksam._kernel_path", "run_steps"),  # inside the path solver
    ("sksam._kernel_path", "fit_krylov_path"),
    ("sksam._base", "StoppingRule"),  # the stopping rule handed in
    ("sksam.kernel", "FitHistory"),  # finishing
]


def test_any_failure_anywhere_leaves_the_estimator_as_before():
    hypothesis = pytest.importorskip("hypothesis")
    import importlib

    from hypothesis import strategies as st

    X, y = _data()
    params = [
        {"sharpness": "rho"},
        {"n_components": 10, "random_state": 0, "sharpness": "rho"},
        {"kernel": "linear", "sharpness": "rho"},
        {"early_stopping": True, "random_state": 0, "tol": 1e-3, "sharpness": "rho"},
    ]

    @hypothesis.settings(max_examples=20, deadline=None, derandomize=True)
    @hypothesis.given(
        st.sampled_from(params),
        st.sampled_from(_FAILURE_POINTS),
        st.sampled_from([ValueError, KeyboardInterrupt, MemoryError]),
        st.booleans(),
    )
    def check(fit_params, point, error, fitted_before):
        module, name = importlib.import_module(point[0]), point[1]
        model = SAMKernelRegressor(max_iter=20, **fit_params)
        if fitted_before:
            model.fit(X[:30], y[:30])
        before = _state(model)
        original = getattr(module, name)

        def failing(*args, **kwargs):
            raise error("injected")

        setattr(module, name, failing)
        try:
            with pytest.raises(error, match="injected"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(X, y)
        finally:
            setattr(module, name, original)
        _assert_same_state(before, model)
        if not fitted_before:
            with pytest.raises(NotFittedError):
                check_is_fitted(model)

    check()
