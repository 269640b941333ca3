"""Top-k eigenvalues and spectral density, against dense eigendecompositions and curvlinops."""

import numpy as np
import pytest
import torch
from sklearn.utils import check_random_state

from sksam.sharpness import hessian_spectrum, spectral_density, top_hessian_eigenvalues
from sksam.sharpness._hvp import random_vector


class _TanhNet:
    """A 4-5-2 tanh network on 30 points (37 parameters), with its dense Hessian."""

    def __init__(self, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
        self.Y = torch.randn(30, 2, generator=gen, dtype=torch.float64)
        shapes = [(4, 5), (5,), (5, 2), (2,)]
        self.params = [
            torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes
        ]

    def loss_at(self, *params):
        w1, b1, w2, b2 = params
        return 0.5 * ((torch.tanh(self.X @ w1 + b1) @ w2 + b2 - self.Y) ** 2).sum(dim=1).mean()

    def loss_fn(self):
        return self.loss_at(*self.params)

    def dense_hessian(self, indices=(0, 1, 2, 3)):
        blocks = torch.autograd.functional.hessian(self.loss_at, tuple(self.params))
        sizes = [p.numel() for p in self.params]
        rows = [
            torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in indices], dim=1)
            for i in indices
        ]
        return torch.cat(rows, dim=0).numpy()


def test_top_k_eigenvalues_match_a_dense_eigendecomposition():
    net = _TanhNet()
    exact = np.linalg.eigvalsh(net.dense_hessian())[::-1]
    found = top_hessian_eigenvalues(net.loss_fn, net.params, k=6, random_state=0)
    np.testing.assert_allclose(found, exact[:6], rtol=1e-8)


def test_top_k_eigenvalues_of_one_layer_are_its_diagonal_block():
    net = _TanhNet(1)
    exact = np.linalg.eigvalsh(net.dense_hessian(indices=(0, 1)))[::-1]
    found = top_hessian_eigenvalues(net.loss_fn, net.params[:2], k=3, random_state=0)
    np.testing.assert_allclose(found, exact[:3], rtol=1e-8)


def test_lanczos_quadrature_reproduces_the_probe_moments_exactly():
    # m Lanczos steps integrate polynomials of degree <= 2m - 1 exactly:
    # sum_j tau_j theta_j^p = v^T H^p v / ||v||^2 for the (regenerated) probe v
    net = _TanhNet(2)
    H = net.dense_hessian()
    m = 4
    nodes, weights = hessian_spectrum(net.loss_fn, net.params, n_iter=m, n_probes=1, random_state=3)
    v = random_vector(check_random_state(3), H.shape[0], net.params[0], rademacher=True).numpy()
    v = v / np.linalg.norm(v)
    for p in range(2 * m):
        moment = v @ np.linalg.matrix_power(H, p) @ v
        assert np.sum(weights[0] * nodes[0] ** p) == pytest.approx(moment, rel=1e-8, abs=1e-12)


def test_full_lanczos_quadrature_has_the_eigenvalues_as_nodes():
    net = _TanhNet(3)
    exact = np.linalg.eigvalsh(net.dense_hessian())
    nodes, weights = hessian_spectrum(
        net.loss_fn, net.params, n_iter=200, n_probes=2, random_state=0
    )
    for theta, tau in zip(nodes, weights):
        assert len(theta) == len(exact)  # the Krylov space is all of R^37
        np.testing.assert_allclose(np.sort(theta), exact, atol=1e-8)
        assert tau.sum() == pytest.approx(1.0)


def test_spectral_density_is_a_probability_density_with_the_nodes_mean():
    nodes = [np.array([1.0, 3.0]), np.array([2.0])]
    weights = [np.array([0.5, 0.5]), np.array([1.0])]
    grid, density = spectral_density(nodes, weights, sigma=0.1, n_points=4000)
    step = grid[1] - grid[0]
    assert density.sum() * step == pytest.approx(1.0, rel=1e-6)
    assert (grid * density).sum() * step == pytest.approx(2.0, rel=1e-6)


def test_spectrum_counts_a_parameter_listed_twice_once():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)

    def loss_fn():
        return 0.5 * (h * w**2).sum()

    np.testing.assert_allclose(top_hessian_eigenvalues(loss_fn, [w, w], k=3), [4, 2, 1])
    nodes, _ = hessian_spectrum(loss_fn, [w, w], n_probes=1, random_state=0)
    np.testing.assert_allclose(nodes[0], [1, 2, 4])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, p: top_hessian_eigenvalues(f, p, k=0), "k must be a positive integer"),
        (lambda f, p: hessian_spectrum(f, p, n_probes=0), "n_probes must be a positive"),
        (lambda f, p: hessian_spectrum(f, p, n_iter=0), "max_iter must be a positive"),
    ],
)
def test_spectrum_errors_name_the_parameter(call, match):
    net = _TanhNet()
    with pytest.raises(ValueError, match=match):
        call(net.loss_fn, net.params)


# --------------------------------------------------------------------------
# against curvlinops (installed where it can be; not a test dependency)
# --------------------------------------------------------------------------


def _curvlinops_problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)
    ).double()
    X, Y = torch.randn(40, 4, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    params = [p for p in model.parameters()]
    criterion = torch.nn.MSELoss()
    return model, params, criterion, X, Y


def test_hessian_agrees_with_curvlinops():
    curvlinops = pytest.importorskip("curvlinops")
    model, params, criterion, X, Y = _curvlinops_problem()
    operator = curvlinops.HessianLinearOperator(model, criterion, params, [(X, Y)])
    n = sum(p.numel() for p in params)
    dense = (operator @ torch.eye(n, dtype=torch.float64)).numpy()
    exact = np.linalg.eigvalsh((dense + dense.T) / 2)[::-1]

    def loss_fn():
        return criterion(model(X), Y)

    found = top_hessian_eigenvalues(loss_fn, params, k=5, random_state=0)
    np.testing.assert_allclose(found, exact[:5], rtol=1e-8)
    nodes, weights = hessian_spectrum(loss_fn, params, n_iter=200, n_probes=1, random_state=0)
    np.testing.assert_allclose(np.sort(nodes[0]), exact[::-1], atol=1e-8)


def test_spectral_density_agrees_with_curvlinops_in_its_mean():
    curvlinops = pytest.importorskip("curvlinops")
    from curvlinops.papyan2020traces.spectrum import lanczos_approximate_spectrum

    model, params, criterion, X, Y = _curvlinops_problem()
    operator = curvlinops.HessianLinearOperator(model, criterion, params, [(X, Y)])
    n = sum(p.numel() for p in params)
    trace_per_dim = float(torch.trace(operator @ torch.eye(n, dtype=torch.float64))) / n
    torch.manual_seed(0)
    grid_c, density_c = lanczos_approximate_spectrum(
        operator, ncv=n, num_points=2000, num_repeats=20
    )
    grid_c, density_c = np.asarray(grid_c), np.asarray(density_c)
    mean_c = np.sum(grid_c * density_c) / np.sum(density_c)

    def loss_fn():
        return criterion(model(X), Y)

    nodes, weights = hessian_spectrum(loss_fn, params, n_iter=n, n_probes=20, random_state=0)
    grid, density = spectral_density(nodes, weights, n_points=2000)
    mean = np.sum(grid * density) / np.sum(density)
    # both estimate tr(H) / n from 20 probes (theirs Gaussian, ours Rademacher):
    # they agree to their Monte Carlo error (about 8% here)
    assert mean == pytest.approx(trace_per_dim, rel=0.15)
    assert mean_c == pytest.approx(trace_per_dim, rel=0.15)
