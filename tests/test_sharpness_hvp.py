"""Sharpness by Hessian-vector products, against exact Hessians and closed forms."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from sksam.sharpness import (
    MEASURES,
    hessian_trace,
    measure_sharpness,
    quadratic_sharpness,
    rho_sharpness,
    top_hessian_eigenvalue,
    torch_sharpness,
)

# --------------------------------------------------------------------------
# problems with a known Hessian
# --------------------------------------------------------------------------


class _SmallNet:
    """A 3-4-2 tanh network on 12 points: its exact Hessian is 26 x 26."""

    def __init__(self, seed=0, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(12, 3, generator=gen, dtype=dtype)
        self.y = torch.randn(12, 2, generator=gen, dtype=dtype)
        shapes = [(3, 4), (4,), (4, 2), (2,)]
        self.params = [torch.randn(*s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]

    def loss_at(self, w1, b1, w2, b2):
        out = torch.tanh(self.X @ w1 + b1) @ w2 + b2
        return 0.5 * ((out - self.y) ** 2).sum(dim=1).mean()

    def loss_fn(self):
        return self.loss_at(*self.params)

    def exact_hessian(self):
        """``torch.autograd.functional.hessian`` of the loss of the flat vector."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        shapes = [p.shape for p in self.params]

        def flat_loss(vector):
            pieces, start = [], 0
            for s in shapes:
                size = int(np.prod(s))
                pieces.append(vector[start : start + size].reshape(s))
                start += size
            return self.loss_at(*pieces)

        return torch.autograd.functional.hessian(flat_loss, flat).numpy()


class _Quadratic:
    """``L(w) = g.w + w.H.w / 2`` at ``w = 0``: gradient ``g``, Hessian ``H``."""

    def __init__(self, eigenvalues, seed=0):
        rng = np.random.RandomState(seed)
        q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
        self.H = q @ np.diag(eigenvalues) @ q.T
        self.g = rng.standard_normal(len(eigenvalues))
        self.w = torch.zeros(len(eigenvalues), dtype=torch.float64, requires_grad=True)
        self._H = torch.as_tensor(self.H)
        self._g = torch.as_tensor(self.g)

    def loss_fn(self):
        return self._g @ self.w + 0.5 * self.w @ self._H @ self.w


def _trust_region_max(H, g, rho):
    """``max_{||e|| <= rho} g.e + e.H.e/2`` from the secular equation.

    The maximizer is ``e = (mu I - H)^{-1} g`` with ``mu > lambda_max(H)``
    solving ``||e|| = rho`` (Moré & Sorensen 1983; the "easy case", which
    holds when ``g`` has a component along the top eigenvector).
    """
    lam, U = np.linalg.eigh(H)
    z = U.T @ g

    def norm_gap(mu):
        return np.linalg.norm(z / (mu - lam)) - rho

    lo = lam[-1] + 1e-12
    hi = lam[-1] + np.linalg.norm(g) / rho + abs(lam).max() + 1.0
    mu = brentq(norm_gap, lo, hi, xtol=1e-15, rtol=1e-15)
    e = U @ (z / (mu - lam))
    return g @ e + 0.5 * e @ H @ e


# --------------------------------------------------------------------------
# top eigenvalue
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lanczos_matches_eigh_of_exact_hessian(seed):
    net = _SmallNet(seed)
    expected = np.linalg.eigh(net.exact_hessian())[0][-1]
    value = top_hessian_eigenvalue(net.loss_fn, net.params, random_state=seed)
    assert abs(value - expected) <= 1e-4 * abs(expected)


def test_power_iteration_matches_eigh_of_exact_hessian():
    net = _SmallNet(0)
    expected = np.linalg.eigh(net.exact_hessian())[0][-1]
    value = top_hessian_eigenvalue(
        net.loss_fn, net.params, method="power", max_iter=2000, tol=1e-12, random_state=0
    )
    assert abs(value - expected) <= 1e-4 * abs(expected)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalue_is_signed_not_largest_magnitude(method):
    # eigenvalues -5 .. 1: the largest magnitude is -5, the largest algebraic 1
    quad = _Quadratic(np.array([-5.0, -3.0, -1.0, 0.5, 1.0]))
    value = top_hessian_eigenvalue(
        quad.loss_fn, [quad.w], method=method, max_iter=3000, tol=1e-13, random_state=0
    )
    assert value == pytest.approx(1.0, rel=1e-4)


def test_negative_definite_hessian_gives_negative_eigenvalue():
    quad = _Quadratic(np.array([-4.0, -3.0, -2.0]))
    value = top_hessian_eigenvalue(quad.loss_fn, [quad.w], random_state=0)
    assert value == pytest.approx(-2.0, rel=1e-10)


@pytest.mark.parametrize("dim", [7, 40])  # 40: past the basis's first two growths
def test_lanczos_is_exact_once_the_krylov_space_is_full(dim):
    eigenvalues = np.linspace(-1.0, 3.0, dim)
    quad = _Quadratic(eigenvalues)
    value = top_hessian_eigenvalue(quad.loss_fn, [quad.w], tol=0.0, random_state=3)
    assert value == pytest.approx(3.0, rel=1e-12)


def test_linear_loss_has_zero_curvature():
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    assert top_hessian_eigenvalue(lambda: w.sum(), [w], random_state=0) == 0.0
    assert hessian_trace(lambda: w.sum(), [w], n_probes=3, random_state=0) == 0.0


def test_float32_parameters_are_measured_in_float64_basis():
    net = _SmallNet(0, dtype=torch.float32)
    expected = np.linalg.eigh(net.exact_hessian().astype(np.float64))[0][-1]
    value = top_hessian_eigenvalue(net.loss_fn, net.params, random_state=0)
    assert abs(value - expected) <= 1e-4 * abs(expected)


# --------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------


def test_hutchinson_trace_within_monte_carlo_error():
    net = _SmallNet(0)
    H = net.exact_hessian()
    n_probes = 400
    # Var(z.H.z) = 2 sum_{i != j} H_ij^2 for Rademacher z
    std = np.sqrt(2 * ((H**2).sum() - (np.diag(H) ** 2).sum()) / n_probes)
    estimate, reported_std = hessian_trace(
        net.loss_fn, net.params, n_probes=n_probes, random_state=0, return_std=True
    )
    assert abs(estimate - np.trace(H)) <= 4 * std
    assert reported_std == pytest.approx(std, rel=0.3)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    diag = torch.tensor([1.0, -2.0, 3.5, 0.25], dtype=torch.float64)
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    value = hessian_trace(lambda: 0.5 * (diag * w * w).sum(), [w], n_probes=2, random_state=0)
    assert value == pytest.approx(2.75, rel=1e-14)


def test_rademacher_probes_are_plus_minus_one_with_mean_zero(monkeypatch):
    # A known bug elsewhere drew randint(0, 1): every probe all -1. Record
    # the probes the estimator actually multiplies by the Hessian.
    from sksam.sharpness import _hvp

    n, n_probes = 50, 200
    seen = []
    original = _hvp.random_vector

    def spy(rng, size, like, *, rademacher=False):
        v = original(rng, size, like, rademacher=rademacher)
        seen.append(v.clone())
        return v

    monkeypatch.setattr(_hvp, "random_vector", spy)
    w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    hessian_trace(lambda: 0.5 * (w * w).sum(), [w], n_probes=n_probes, random_state=0)
    probes = torch.stack(seen).numpy()
    assert probes.shape == (n_probes, n)
    assert set(np.unique(probes)) == {-1.0, 1.0}
    # mean of 10000 fair signs: standard deviation 0.01
    assert abs(probes.mean()) < 0.04
    # and the coordinates are not tied to each other
    assert abs(np.corrcoef(probes[:, 0], probes[:, 1])[0, 1]) < 0.3


# --------------------------------------------------------------------------
# rho-sharpness
# --------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.05, 0.5, 2.0])
def test_rho_sharpness_matches_trust_region_closed_form(rho):
    quad = _Quadratic(np.array([-1.0, 0.2, 0.7, 1.5, 3.0]), seed=1)
    expected = _trust_region_max(quad.H, quad.g, rho)
    value = rho_sharpness(quad.loss_fn, [quad.w], rho, max_iter=500)
    assert value == pytest.approx(expected, rel=1e-5)  # rho: an ascent, from below


def test_rho_sharpness_is_a_lower_bound_that_improves_on_sam_point():
    quad = _Quadratic(np.array([-1.0, 0.2, 0.7, 1.5, 3.0]), seed=1)
    rho = 1.0
    e_sam = rho * quad.g / np.linalg.norm(quad.g)
    sam_value = quad.g @ e_sam + 0.5 * e_sam @ quad.H @ e_sam
    exact = _trust_region_max(quad.H, quad.g, rho)
    for max_iter in [0, 1, 3, 10]:
        value = rho_sharpness(quad.loss_fn, [quad.w], rho, max_iter=max_iter)
        assert sam_value - 1e-12 <= value <= exact + 1e-12
    assert rho_sharpness(quad.loss_fn, [quad.w], rho, max_iter=0) == pytest.approx(
        sam_value, rel=1e-12
    )


def test_rho_sharpness_with_zero_gradient_uses_seeded_direction():
    # at a minimum of a PSD quadratic the answer is rho^2 lambda_max / 2
    H = torch.diag(torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    value = rho_sharpness(lambda: 0.5 * w @ H @ w, [w], 0.3, max_iter=200, random_state=0)
    assert value == pytest.approx(0.5 * 0.3**2 * 4.0, rel=1e-8)
    assert rho_sharpness(lambda: 0.5 * w @ H @ w, [w], 0.0) == 0.0


def _diagonal_quadratic(lam, g):
    H = torch.diag(torch.tensor(lam, dtype=torch.float64))
    g = torch.tensor(g, dtype=torch.float64)
    w = torch.zeros(len(lam), dtype=torch.float64, requires_grad=True)
    return (lambda: g @ w + 0.5 * w @ H @ w), w


@pytest.mark.parametrize("n_other", [1, 9])
def test_rho_sharpness_hard_case_is_found_by_the_random_start(n_other):
    # the gradient has no component on the top eigenvector (the hard case; at
    # the end of training the top direction converges first): an ascent from
    # SAM's point never leaves the other eigenvectors and stops near
    # rho^2 / 2 * 1; the seeded random start reaches rho^2 / 2 * 5
    lam, g = [5.0] + [1.0] * n_other, [0.0] + [1e-9] * n_other
    loss_fn, w = _diagonal_quadratic(lam, g)
    exact = quadratic_sharpness(lam, g, measure="rho", rho=0.1)
    assert exact == pytest.approx(0.5 * 0.1**2 * 5.0, rel=1e-6)
    from_sam_only = rho_sharpness(loss_fn, [w], 0.1, random_state=0)
    assert from_sam_only < 0.25 * exact
    value = rho_sharpness(loss_fn, [w], 0.1, n_restarts=1, random_state=0)
    assert exact - 1e-12 >= value >= exact * (1 - 1e-6)
    # the estimators' options include the random start
    assert measure_sharpness("rho", loss_fn, [w], rho=0.1, random_state=0) == value


def test_rho_sharpness_is_never_negative():
    # a concave quadratic with its maximum inside the ball: e = 0 is feasible,
    # so the sharpness is >= 0 (steps of length rho from SAM's point all lose)
    loss_fn, w = _diagonal_quadratic([-3.0, -1.0], [1e-3, 1e-3])
    exact = quadratic_sharpness([-3.0, -1.0], [1e-3, 1e-3], measure="rho", rho=10.0)
    value = rho_sharpness(loss_fn, [w], 10.0, random_state=0)
    assert 0.0 <= value <= exact


def test_rho_sharpness_ascent_is_monotone_in_max_iter():
    quad = _Quadratic(np.array([-1.0, 0.2, 0.7, 1.5, 3.0]), seed=2)
    values = [rho_sharpness(quad.loss_fn, [quad.w], 0.8, max_iter=k) for k in range(12)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] <= _trust_region_max(quad.H, quad.g, 0.8) + 1e-12


def test_rho_sharpness_restores_parameters_bit_for_bit():
    net = _SmallNet(0)
    before = [p.detach().clone() for p in net.params]
    rho_sharpness(net.loss_fn, net.params, 0.37, max_iter=5)
    for p, b in zip(net.params, before):
        assert torch.equal(p, b)


def test_rho_sharpness_restores_parameters_after_an_error():
    net = _SmallNet(0)
    before = [p.detach().clone() for p in net.params]
    calls = []

    def failing_loss():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("boom")
        return net.loss_fn()

    with pytest.raises(RuntimeError, match="boom"):
        rho_sharpness(failing_loss, net.params, 0.5, max_iter=5)
    for p, b in zip(net.params, before):
        assert torch.equal(p, b)


# --------------------------------------------------------------------------
# no side effects, determinism, dispatch
# --------------------------------------------------------------------------


def _logits_fn(net):
    """The logit-normalized measures read ``_SmallNet``'s 2 outputs as logits."""
    labels = net.y.argmax(dim=1)
    return lambda: (torch.tanh(net.X @ net.params[0] + net.params[1]) @ net.params[2], labels)


@pytest.mark.parametrize("measure", MEASURES)
def test_grad_attributes_are_never_touched(measure):
    net = _SmallNet(0)
    extra = {"logits_fn": _logits_fn(net)}
    torch_sharpness(net.loss_fn, net.params[:3], measure, rho=0.1, random_state=0, **extra)
    assert all(p.grad is None for p in net.params)
    # and existing gradients are left as they were
    for p in net.params:
        p.grad = torch.full_like(p, 7.0)
    torch_sharpness(net.loss_fn, net.params[:3], measure, rho=0.1, random_state=0, **extra)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in net.params)
    assert all(not p.grad.requires_grad for p in net.params)


@pytest.mark.parametrize("measure", MEASURES)
def test_same_random_state_same_value(measure):
    net = _SmallNet(0)
    kwargs = {"max_iter": 5} if measure != "trace" else {"n_probes": 5}
    if measure == "top_eigenvalue":
        kwargs["tol"] = 0.0
    if "average" in measure:
        kwargs = {"n_samples": 5}
    kwargs["logits_fn"] = _logits_fn(net)
    params = net.params[:3]  # the logits do not use the last bias
    a = torch_sharpness(net.loss_fn, params, measure, rho=0.3, random_state=4, **kwargs)
    b = torch_sharpness(net.loss_fn, params, measure, rho=0.3, random_state=4, **kwargs)
    assert a == b


def test_different_random_state_different_probes():
    net = _SmallNet(0)
    a = hessian_trace(net.loss_fn, net.params, n_probes=3, random_state=0)
    b = hessian_trace(net.loss_fn, net.params, n_probes=3, random_state=1)
    assert a != b


def _module_with_mixed_modes():
    module = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Linear(5, 1)
    ).double()
    module.train()
    module[1].eval()  # a submodule in its own mode must keep it
    return module


@pytest.mark.parametrize("measure", MEASURES)
def test_train_eval_modes_restored_and_eval_used(measure):
    module = _module_with_mixed_modes()
    X = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randn(20, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    modes_seen = []

    def loss_fn():
        modes_seen.append([m.training for m in module.modules()])
        return 0.5 * ((module(X) - y) ** 2).mean()

    def logits_fn():
        modes_seen.append([m.training for m in module.modules()])
        return module(X), (y[:, 0] > 0).long()

    params = list(module.parameters())
    torch_sharpness(
        loss_fn, params, measure, rho=0.1, module=module, random_state=0, logits_fn=logits_fn
    )
    assert modes_seen
    assert all(not any(modes) for modes in modes_seen)
    assert [m.training for m in module.modules()] == [True, True, False, True, True]


def test_modes_restored_after_an_error():
    module = _module_with_mixed_modes()

    def loss_fn():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        torch_sharpness(loss_fn, list(module.parameters()), "trace", module=module)
    assert [m.training for m in module.modules()] == [True, True, False, True, True]


def test_dispatch_agrees_with_the_functions():
    net = _SmallNet(1)
    assert torch_sharpness(
        net.loss_fn, net.params, "top_eigenvalue", random_state=0
    ) == top_hessian_eigenvalue(net.loss_fn, net.params, random_state=0)
    assert torch_sharpness(
        net.loss_fn, net.params, "trace", random_state=0, n_probes=4
    ) == hessian_trace(net.loss_fn, net.params, n_probes=4, random_state=0)
    assert torch_sharpness(net.loss_fn, net.params, "rho", rho=0.2) == rho_sharpness(
        net.loss_fn, net.params, 0.2
    )


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_errors_name_the_problem():
    net = _SmallNet(0)
    with pytest.raises(ValueError, match="Unknown sharpness measure 'sharp'"):
        torch_sharpness(net.loss_fn, net.params, "sharp")
    with pytest.raises(ValueError, match="measure is None"):
        torch_sharpness(net.loss_fn, net.params, None)
    with pytest.raises(ValueError, match="needs the radius rho"):
        torch_sharpness(net.loss_fn, net.params, "rho")
    with pytest.raises(ValueError, match="rho must be non-negative"):
        rho_sharpness(net.loss_fn, net.params, -1.0)
    with pytest.raises(ValueError, match="Unknown method 'qr'"):
        top_hessian_eigenvalue(net.loss_fn, net.params, method="qr")
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        top_hessian_eigenvalue(net.loss_fn, net.params, max_iter=0)
    with pytest.raises(ValueError, match="n_probes must be a positive integer"):
        hessian_trace(net.loss_fn, net.params, n_probes=0)
    with pytest.raises(ValueError, match="params is empty"):
        hessian_trace(net.loss_fn, [])
    with pytest.raises(ValueError, match="requires_grad=True"):
        hessian_trace(net.loss_fn, [torch.zeros(3)])
    with pytest.raises(ValueError, match="scalar tensor"):
        top_hessian_eigenvalue(lambda: net.params[0] * 2, net.params)
    with pytest.raises(ValueError, match="non-finite loss"):
        top_hessian_eigenvalue(lambda: net.loss_fn() * float("nan"), net.params)


# --------------------------------------------------------------------------
# a parameter listed twice, an infinite radius (silent / misleading before)
# --------------------------------------------------------------------------


def _diag_142():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    return w, lambda: 0.5 * (h * w**2).sum()  # Hessian diag(1, 4, 2)


@pytest.mark.parametrize(
    "measure, expected",
    [("top_eigenvalue", 4.0), ("trace", 7.0), ("rho", 4 * 0.1**2 / 2)],
)
def test_a_parameter_listed_twice_counts_once(measure, expected):
    w, loss_fn = _diag_142()
    value = measure_sharpness(measure, loss_fn, [w, w], rho=0.1, random_state=0)
    assert value == pytest.approx(expected, rel=1e-5)  # rho: an ascent, from below


def test_average_sharpness_of_a_parameter_listed_twice_counts_once():
    from sksam.sharpness import average_sharpness

    w, loss_fn = _diag_142()
    once = average_sharpness(loss_fn, [w], 0.1, n_samples=20, random_state=0)
    assert average_sharpness(loss_fn, [w, w], 0.1, n_samples=20, random_state=0) == once


@pytest.mark.parametrize("rho", [np.inf, np.nan, -1.0])
def test_an_infinite_radius_is_blamed_on_rho_not_on_the_loss(rho):
    from sksam.sharpness import average_sharpness

    w, loss_fn = _diag_142()
    for function in (average_sharpness, rho_sharpness):
        with pytest.raises(ValueError, match="rho must be non-negative and finite"):
            function(loss_fn, [w], rho)
