"""quadratic_sharpness against brute force on small explicit quadratics."""

import itertools
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize

from sksam.sharpness import quadratic_sharpness


def _brute_force(H, g, rho, n_starts=40, seed=0):
    """max_{||e|| <= rho} g.e + e.H.e/2 by SLSQP from many starts (a lower bound)."""
    rng = np.random.default_rng(seed)

    def negative(e):
        return -(g @ e + 0.5 * e @ H @ e)

    def negative_grad(e):
        return -(g + H @ e)

    ball = {"type": "ineq", "fun": lambda e: rho**2 - e @ e, "jac": lambda e: -2 * e}
    best = 0.0  # e = 0 is feasible
    for _ in range(n_starts):
        start = rng.standard_normal(len(g))
        start *= rho * rng.uniform() ** (1 / len(g)) / np.linalg.norm(start)
        res = minimize(
            negative,
            start,
            jac=negative_grad,
            constraints=[ball],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        e = res.x * min(1.0, rho / np.linalg.norm(res.x))  # exactly feasible
        best = max(best, -negative(e))
    return best


def _sphere_sampling_2d(H, g, rho, n=200_001):
    """Dense sampling of the circle and the disc's radii for a 2d quadratic."""
    phi = np.linspace(0, 2 * np.pi, n)
    directions = np.stack([np.cos(phi), np.sin(phi)])
    best = 0.0
    for radius in np.linspace(0, rho, 201):
        e = radius * directions
        values = g @ e + 0.5 * np.einsum("in,ij,jn->n", e, H, e)
        best = max(best, values.max())
    return best


def _random_quadratic(m, seed, definite=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, m))
    H = (A + A.T) / 2
    if definite == "negative":
        H = -A @ A.T - 0.1 * np.eye(m)
    return H, rng.standard_normal(m)


def _in_eigenbasis(H, g):
    lam, U = np.linalg.eigh(H)
    return lam, U.T @ g


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rho", [0.1, 1.0, 5.0])
def test_rho_sharpness_equals_brute_force(seed, rho):
    H, g = _random_quadratic(4, seed)
    lam, g_eig = _in_eigenbasis(H, g)
    value = quadratic_sharpness(lam, g_eig, measure="rho", rho=rho)
    brute = _brute_force(H, g, rho)
    assert value >= brute - 1e-10  # brute force is a lower bound ...
    assert value == pytest.approx(brute, rel=1e-7, abs=1e-10)  # ... that is tight


def test_rho_sharpness_equals_dense_sampling_in_2d():
    H = np.array([[1.0, 0.7], [0.7, -0.5]])
    g = np.array([0.3, -0.2])
    lam, g_eig = _in_eigenbasis(H, g)
    value = quadratic_sharpness(lam, g_eig, measure="rho", rho=0.8)
    sampled = _sphere_sampling_2d(H, g, 0.8)
    assert sampled <= value + 1e-12
    assert value == pytest.approx(sampled, rel=1e-8)


def test_hard_case_gradient_orthogonal_to_top_eigenvector():
    # ||e(mu_*)|| = ||(0, 0.1/1, 0.2/3)|| < rho: no root above mu_* = 2
    lam = np.array([2.0, 1.0, -1.0])
    g = np.array([0.0, 0.1, 0.2])
    value = quadratic_sharpness(lam, g, measure="rho", rho=1.0)
    assert value == pytest.approx(_brute_force(np.diag(lam), g, 1.0), rel=1e-8)
    # closed form: e = (tau, 0.1, 0.2/3) with ||e|| = 1
    tail = np.array([0.1 / 1.0, 0.2 / 3.0])
    tau2 = 1.0 - tail @ tail
    expected = g[1:] @ tail + 0.5 * (lam[1:] @ tail**2 + 2.0 * tau2)
    assert value == pytest.approx(expected, rel=1e-14)


def test_near_hard_case_is_continuous():
    lam = np.array([2.0, 1.0, -1.0])
    g = np.array([0.0, 0.1, 0.2])
    hard = quadratic_sharpness(lam, g, measure="rho", rho=1.0)
    for tiny in (1e-4, 1e-8, 1e-12):
        near = quadratic_sharpness(lam, g + [tiny, 0, 0], measure="rho", rho=1.0)
        assert near == pytest.approx(hard, abs=2 * tiny)


def test_interior_maximum_of_a_concave_quadratic():
    H, g = _random_quadratic(3, 0, definite="negative")
    g *= 1e-3  # the unconstrained maximizer -H^{-1} g lies inside the ball
    lam, g_eig = _in_eigenbasis(H, g)
    value = quadratic_sharpness(lam, g_eig, measure="rho", rho=10.0)
    assert value == pytest.approx(0.5 * g @ np.linalg.solve(-H, g), rel=1e-12)


@pytest.mark.parametrize("lam, expected", [([3.0, -1.0], 0.5 * 3.0 * 0.25), ([-3.0, -1.0], 0.0)])
def test_zero_gradient(lam, expected):
    assert quadratic_sharpness(lam, [0.0, 0.0], measure="rho", rho=0.5) == pytest.approx(expected)


def test_rho_zero_is_zero():
    assert quadratic_sharpness([1.0, 2.0], [1.0, 1.0], measure="rho", rho=0.0) == 0.0


def test_small_rho_matches_first_order_expansion():
    lam, g = np.array([1.0, 0.5, -0.2]), np.array([0.3, -0.4, 0.5])
    rho = 1e-6
    value = quadratic_sharpness(lam, g, measure="rho", rho=rho)
    e = rho * g / np.linalg.norm(g)  # first order: the normalized gradient
    assert value == pytest.approx(g @ e + 0.5 * lam @ e**2, rel=1e-9)


def test_multi_output_is_a_block_diagonal_hessian():
    rng = np.random.default_rng(3)
    lam = rng.standard_normal(4)
    G = rng.standard_normal((4, 3))
    value = quadratic_sharpness(lam, G, measure="rho", rho=0.7)
    stacked = quadratic_sharpness(np.repeat(lam, 3), G.ravel(), measure="rho", rho=0.7)
    assert value == pytest.approx(stacked, rel=1e-13)
    H = np.kron(np.diag(lam), np.eye(3))
    assert value == pytest.approx(_brute_force(H, G.ravel(), 0.7), rel=1e-7)
    assert quadratic_sharpness(lam, G, measure="trace") == pytest.approx(3 * lam.sum())
    assert quadratic_sharpness(lam, G, measure="top_eigenvalue") == lam.max()


def test_top_eigenvalue_and_trace():
    H, g = _random_quadratic(5, 1)
    lam, g_eig = _in_eigenbasis(H, g)
    assert quadratic_sharpness(lam, g_eig) == pytest.approx(np.linalg.eigvalsh(H).max())
    assert quadratic_sharpness(lam, g_eig, measure="trace") == pytest.approx(np.trace(H))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"measure": "hessian_norm"}, "Unknown sharpness measure 'hessian_norm'"),
        ({"measure": None}, "measure is None"),
        ({"measure": "rho"}, "needs the radius rho"),
        ({"measure": "rho", "rho": -1.0}, "rho must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quadratic_sharpness([1.0, 2.0], [0.1, 0.2], **kwargs)


@pytest.mark.parametrize(
    "lam, g, match",
    [
        ([1.0, 2.0], [0.1, 0.2, 0.3], r"gradient must have shape \(2,\)"),
        ([], [], "non-empty 1d array"),
        ([[1.0, 2.0]], [0.1, 0.2], "non-empty 1d array"),
        ([1.0, np.nan], [0.1, 0.2], "must be finite"),
        ([1.0, 2.0], [np.inf, 0.2], "must be finite"),
    ],
)
def test_bad_shapes_and_values_are_named(lam, g, match):
    with pytest.raises(ValueError, match=match):
        quadratic_sharpness(lam, g, measure="rho", rho=1.0)


def test_agrees_with_shared_namespace():
    from sksam import sharpness

    assert sharpness.quadratic_sharpness is quadratic_sharpness
    assert_allclose(quadratic_sharpness([1.0], [1.0], measure="rho", rho=1.0), 1.5)


# --------------------------------------------------------------------------
# degenerate trust-region problems (issue 14: "f(a) and f(b) must have
# different signs" escaped from scipy on these)
# --------------------------------------------------------------------------


def _one_eigenvalue_closed_form(lam, g_norm, rho):
    """``max_{r <= rho} g_norm r + lam r**2 / 2``: e along g, H = lam I."""
    r = rho if lam >= 0 else min(rho, g_norm / -lam)
    return g_norm * r + 0.5 * lam * r**2


@pytest.mark.parametrize("lam", [3.0, 1.0, 1e-8, 0.0, -0.5])
@pytest.mark.parametrize("g_scale", [1e200, 1.0, 1e-3, 1e-9, 1e-17, 1e-200])
@pytest.mark.parametrize("rho", [1e-3, 0.05, 1.0, 30.0])
@pytest.mark.parametrize("m, k", [(1, 1), (1, 2), (3, 1), (2, 3)])
def test_single_eigenvalue_is_the_closed_form(lam, g_scale, rho, m, k):
    # H = lam I: every direction is a top eigenvector, and the whole gradient
    # lies on the top eigenspace; the secular root sits on the end of the bracket
    rng = np.random.default_rng(m + 10 * k)
    G = g_scale * rng.standard_normal((m, k))
    value = quadratic_sharpness(np.full(m, lam), G, measure="rho", rho=rho)
    top = np.abs(G).max()  # ||G|| without squaring 1e-200 into zero
    expected = _one_eigenvalue_closed_form(lam, top * np.linalg.norm(G / top), rho)
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_repeated_and_degenerate_spectra_equal_dense_sampling(seed):
    # 2d problems with a repeated top eigenvalue, the gradient on or off the top
    # eigenvector, nearly zero gradients: brute force over the disc
    rng = np.random.default_rng(seed)
    top = rng.choice([0.0, 1.0, 2.5])
    lam = np.array([top, rng.choice([top, top - 1.0, -1.0])])
    g = rng.standard_normal(2) * rng.choice([1.0, 1e-3, 1e-12])
    g[rng.integers(2)] *= rng.choice([0.0, 1.0])  # sometimes exactly on an axis
    rho = rng.choice([0.01, 0.3, 2.0])
    value = quadratic_sharpness(lam, g, measure="rho", rho=rho)
    sampled = _sphere_sampling_2d(np.diag(lam), g, rho)
    assert sampled <= value + 1e-12 * (1 + value)
    assert value == pytest.approx(sampled, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("hard", ["orthogonal", "nearly", "repeated"])
def test_hard_cases_in_3d_equal_brute_force(seed, hard):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(-1, 2, 3))[::-1].copy()
    if hard == "repeated":
        lam[1] = lam[0]
    g = rng.standard_normal(3) * 0.1
    if hard == "orthogonal":
        g[0] = 0.0
    elif hard == "nearly":
        g[0] = 1e-13
    rho = float(rng.choice([0.2, 1.0, 3.0]))
    value = quadratic_sharpness(lam, g, measure="rho", rho=rho)
    brute = _brute_force(np.diag(lam), g, rho, n_starts=30, seed=seed)
    assert value >= brute - 1e-10
    assert value == pytest.approx(brute, rel=1e-7, abs=1e-10)


def test_top_eigenvalue_repeated_with_a_rounding_difference():
    # the kernel estimator appends lambda_max next to a Ritz value that may
    # differ from it in the last bit: a gap of one ulp must not break the root
    top = 0.7
    lam = np.array([np.nextafter(top, 1.0), top, 0.2])
    g = np.array([3e-9, 0.0, 1e-9])
    value = quadratic_sharpness(lam, g, measure="rho", rho=0.05)
    assert value == pytest.approx(_brute_force(np.diag(lam), g, 0.05), rel=1e-9)


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_one_feature_linear_kernel_fits_never_fail(n_outputs):
    # the families: one feature (a single Hessian eigenvalue), one or two
    # outputs (a repeated one), seeds x sizes x rho x solvers; before the fix
    # about 15% (1 output) and 30% (2 outputs) of these raised from brentq
    from sksam import SAMKernelRegressor

    failures = []
    for seed, n, rho, solver in itertools.product(
        range(5), [1, 2, 5, 50], [0.01, 1.0, 10.0], ["gd", "sam", "usam"]
    ):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, 1))
        y = rng.standard_normal((n, n_outputs))
        model = SAMKernelRegressor(
            kernel="linear", sharpness="rho", rho=rho, solver=solver, max_iter=50
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is not the point here
            try:
                model.fit(X, y)
            except ValueError as exc:
                failures.append((seed, n, rho, solver, str(exc)))
                continue
        # H = X^T X / n (one eigenvalue), g = X^T (f - y) / n: the closed form
        w = model.predict(np.ones((1, 1))) - model.predict(np.zeros((1, 1)))
        residual = X @ w.reshape(1, -1) - y
        G = X.T @ residual / n
        expected = _one_eigenvalue_closed_form((X**2).mean(), np.linalg.norm(G), rho)
        assert model.sharpness_ == pytest.approx(expected, rel=1e-6, abs=1e-14), (seed, n)
    assert not failures
