"""The SAM family in the two-layer estimators: GSAM, WSAM, Friendly-SAM and the radius schedule.

Each solver is checked against the paper's update written out in numpy (the
network's gradient included) over several full-batch steps.
"""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from sksam import SAMTwoLayerClassifier, SAMTwoLayerRegressor
from sksam.optim import ProportionalRho, WarmupRho

FAMILY = ["gsam", "wsam", "fsam"]
OPTIONS = {"gsam_alpha": 0.3, "wsam_gamma": 0.8, "fsam_sigma": 0.7, "fsam_lmbda": 0.6}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3)
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * rng.randn(40)
    return X, y


def _reg(solver="sam", **kwargs):
    options = dict(
        n_hidden=6,
        activation="tanh",
        init_scale=0.5,
        learning_rate=0.2,
        max_iter=5,
        tol=None,
        sharpness=None,
        random_state=0,
    )
    return SAMTwoLayerRegressor(solver=solver, **{**options, **kwargs})


# ----------------------------------------------------------- the reference


def _unflatten(w, d, h):
    W = w[: d * h].reshape(d, h)
    a = w[d * h : d * h + h].reshape(h, 1)
    b = w[d * h + h : d * h + 2 * h]
    c = w[d * h + 2 * h :]
    return W, a, b, c


def _gradient(w, X, y, h):
    """Gradient of ``(1 / 2n) sum (tanh(X W + b) a + c - y)**2`` in the layout ``[W, a, b, c]``."""
    W, a, b, c = _unflatten(w, X.shape[1], h)
    A = np.tanh(X @ W + b)
    R = (A @ a + c - y[:, None]) / len(X)
    D = (R @ a.T) * (1.0 - A**2)
    return np.concatenate([(X.T @ D).ravel(), (A.T @ R).ravel(), D.sum(0), R.sum(0)])


def _reference_path(w, X, y, h, *, solver, rho, lr, steps, warmup=None, **opts):
    """The paper's update, step by step, in float64 numpy."""
    m = np.zeros_like(w)
    for t in range(steps):
        rho_t = rho if warmup is None else rho * min(1.0, t / warmup)
        g = _gradient(w, X, y, h)
        if rho_t == 0:  # the base step alone
            w = w - lr * g
            continue
        d = g
        if solver == "fsam":  # Li et al. (2024): d = g - sigma m, m an EMA of g
            m = opts["fsam_lmbda"] * m + (1 - opts["fsam_lmbda"]) * g
            d = g - opts["fsam_sigma"] * m
        g_s = _gradient(w + rho_t * d / np.linalg.norm(d), X, y, h)
        g_d = g_s
        if solver == "gsam":  # Zhuang et al. (2022): g_s - alpha g_perp
            g_perp = g - (g @ g_s) / (g_s @ g_s) * g_s
            g_d = g_s - opts["gsam_alpha"] * g_perp
        if solver == "wsam":  # Yue et al. (2023): g + gamma / (1 - gamma) (g_s - g)
            weight = opts["wsam_gamma"] / (1 - opts["wsam_gamma"])
            g_d = g + weight * (g_s - g)
        w = w - lr * g_d
    return w


def _flat(reg):
    W, a = reg.coefs_
    b, c = reg.intercepts_
    return np.concatenate([W.ravel(), a.ravel(), b, c])


@pytest.mark.parametrize("solver", ["sam", *FAMILY])
@pytest.mark.parametrize("warmup", [None, 2])
def test_each_solver_follows_the_paper_over_several_steps(problem, solver, warmup):
    X, y = problem
    schedule = None if warmup is None else WarmupRho(warmup)
    # one gradient step first, so the family starts away from the initialization
    reg = _reg("gd", max_iter=1, warm_start=True).fit(X, y)
    start = _flat(reg)
    reg.set_params(solver=solver, rho=0.3, max_iter=5, rho_schedule=schedule, **OPTIONS)
    reg.fit(X, y)
    expected = _reference_path(
        start, X, y, 6, solver=solver, rho=0.3, lr=0.2, steps=5, warmup=warmup, **OPTIONS
    )
    gd = _reference_path(start, X, y, 6, solver="gd", rho=0.0, lr=0.2, steps=5)
    sam = _reference_path(start, X, y, 6, solver="sam", rho=0.3, lr=0.2, steps=5, warmup=warmup)
    assert np.abs(expected - gd).max() > 1e-3  # the perturbation acts
    if solver != "sam":
        assert np.abs(expected - sam).max() > 1e-4  # and the rule too
    np.testing.assert_allclose(_flat(reg), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- the limits


@pytest.mark.parametrize("solver", FAMILY)
def test_rho_zero_is_gradient_descent_bit_for_bit(problem, solver):
    X, y = problem
    gd = _reg("gd").fit(X, y)
    family = _reg(solver, rho=0.0, **OPTIONS).fit(X, y)
    assert np.array_equal(_flat(gd), _flat(family))


@pytest.mark.parametrize(
    "params", [{"solver": "gsam", "gsam_alpha": 0.0}, {"solver": "wsam", "wsam_gamma": 0.5}]
)
@pytest.mark.parametrize("schedule", [None, ProportionalRho(rho_min=0.01)])
def test_the_limit_that_is_sam_is_sam_bit_for_bit(problem, params, schedule):
    # fsam_sigma=0 is SAM too, to rounding (its average is still updated)
    X, y = problem
    sam = _reg("sam", rho=0.3).fit(X, y)
    # ProportionalRho at a constant learning rate is the full radius
    family = _reg(rho=0.3, rho_schedule=schedule, **params).fit(X, y)
    assert np.array_equal(_flat(sam), _flat(family))


def test_friendly_sam_with_sigma_zero_is_sam(problem):
    X, y = problem
    sam = _reg("sam", rho=0.3).fit(X, y)
    fsam = _reg("fsam", rho=0.3, fsam_sigma=0.0).fit(X, y)
    assert np.array_equal(_flat(sam), _flat(fsam))


def test_a_warm_up_that_never_ends_is_gradient_descent(problem):
    X, y = problem
    gd = _reg("gd").fit(X, y)
    # the first step's radius is 0: one step of a warm-up of 1e9 steps stays ~0
    warm = _reg("gsam", rho=0.3, max_iter=1, rho_schedule=WarmupRho(10**9)).fit(X, y)
    assert np.array_equal(_flat(_reg("gd", max_iter=1).fit(X, y)), _flat(warm))
    assert not np.array_equal(_flat(gd), _flat(_reg("gsam", rho=0.3).fit(X, y)))


# ------------------------------------------------------- the estimator API


@pytest.mark.parametrize("solver", ["fsam", "gsam"])
def test_two_warm_fits_are_one_fit(problem, solver):
    # Friendly-SAM's average and the warm-up's step count carry on
    X, y = problem
    params = dict(rho=0.3, rho_schedule=WarmupRho(4), **OPTIONS)
    one = _reg(solver, max_iter=6, **params).fit(X, y)
    two = _reg(solver, max_iter=3, warm_start=True, **params).fit(X, y).fit(X, y)
    assert np.array_equal(_flat(one), _flat(two))
    # the estimator's own schedule is never advanced (clone rebuilds it anyway)
    assert two.rho_schedule.t == 0


def test_sam_on_is_refused_with_its_reason(problem):
    X, y = problem
    with pytest.raises(ValueError, match="normalization layers only.*module__batch_norm=True"):
        _reg("sam_on").fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"gsam_alpha": 1.5}, "gsam_alpha"),
        ({"wsam_gamma": 1.0}, "wsam_gamma"),
        ({"fsam_sigma": -1.0}, "fsam_sigma"),
        ({"fsam_lmbda": 1.0}, "fsam_lmbda"),
        ({"rho_schedule": 0.5}, "rho_schedule"),
        ({"solver": "bsam"}, "solver"),
    ],
)
def test_bad_family_parameters_are_named(problem, params, match):
    X, y = problem
    with pytest.raises(InvalidParameterError, match=match):
        _reg(**{"solver": "gsam", **params}).fit(X, y)


def test_grid_search_over_the_family(problem):
    X, y = problem
    search = GridSearchCV(
        _reg("sam", max_iter=3),
        [
            {"solver": ["sam", *FAMILY], "rho": [0.05, 0.2]},
            {"solver": ["gsam"], "gsam_alpha": [0.1, 0.9], "rho_schedule": [None, WarmupRho(2)]},
        ],
        cv=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 12
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize("solver", FAMILY)
def test_the_classifier_takes_the_family(problem, solver):
    X, y = problem
    labels = (y > np.median(y)).astype(int)
    kwargs = dict(n_hidden=6, max_iter=5, tol=None, sharpness=None, random_state=0)
    gd = SAMTwoLayerClassifier(solver="gd", **kwargs).fit(X, labels)
    zero = SAMTwoLayerClassifier(solver=solver, rho=0.0, **kwargs).fit(X, labels)
    family = SAMTwoLayerClassifier(solver=solver, rho=0.3, **kwargs).fit(X, labels)
    assert np.array_equal(gd.coefs_[0], zero.coefs_[0])
    assert not np.array_equal(gd.coefs_[0], family.coefs_[0])


def test_verbose_fit_of_a_family_solver_does_not_fail(problem, capsys):
    # the stopping line asks whether the solver perturbs
    X, y = problem
    _reg("wsam", max_iter=2, verbose=True).fit(X, y)
    assert "stopped" in capsys.readouterr().out
