"""The dense-eigenbasis route and the vectorized steps of the kernel path solver.

Both must give the path of the step-by-step rule (1) in a Krylov basis: the
references here are that loop, written out, and the Krylov route itself.
"""

import functools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from sksam import SAMKernelClassifier, SAMKernelRegressor, _kernel_path
from sksam._kernel_path import (
    Diverged,
    StoppingCriterion,
    dual_dynamics,
    eigh_flops,
    fit_krylov_path,
    krylov_flops,
    prefers_eigh,
    primal_dynamics,
    run_steps,
)
from sksam._update_rules import perturbation_scale


def _reference_steps(dynamics, *, lr, solver, rho, max_iter, monitor=None):
    """Rule (1) one step at a time on the ``m x k`` state (the former loop)."""
    a = np.zeros_like(dynamics.z)
    residual = -dynamics.z
    col = dynamics.h[:, None]
    scales, losses = [], []
    for t in range(max_iter):
        norm2 = float(np.vdot(residual, dynamics.norm_weight * residual))
        c = perturbation_scale(solver, rho, np.sqrt(max(norm2, 0.0)))
        f = lr * (1.0 + c * col)
        a, residual = a - dynamics.step_weight * f * residual, residual * (1.0 - col * f)
        loss = dynamics.loss(a, residual)
        if not np.isfinite(loss):
            raise Diverged(t + 1)
        scales.append(c)
        losses.append(loss)
        if monitor is not None and monitor(t + 1, a, loss):
            break
    return a, scales, losses


def _problem(n, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    K = np.exp(-0.5 * ((X[:, None] - X[None]) ** 2).sum(-1))
    return K, rng.standard_normal((n, k))


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("kind", ["dual", "primal"])
def test_vectorized_steps_are_the_step_by_step_loop(solver, k, kind):
    K, Y = _problem(40, k, seed=k)
    theta, V = np.linalg.eigh(K)
    z = V.T @ Y
    if kind == "dual":
        dynamics = dual_dynamics(theta, z, 40.0)
        lr = 0.9 * 40 / theta[-1]
    else:
        yy = float(np.sum(Y**2)) / 40
        dynamics = primal_dynamics(theta / 40, V.T @ (K @ Y) / 40 / np.sqrt(40), yy)
        lr = 0.9 * 40 / theta[-1]
    settings = dict(lr=lr, solver=solver, rho=0.3, max_iter=3000)
    a, scales, losses = run_steps(dynamics, **settings)
    a_ref, scales_ref, losses_ref = _reference_steps(dynamics, **settings)
    assert len(losses) == len(losses_ref) == 3000
    assert _relative(a, a_ref) < 1e-10
    assert_allclose(scales, scales_ref, rtol=1e-10)
    assert_allclose(losses, losses_ref, rtol=1e-10, atol=1e-14 * abs(losses_ref[0]))


@pytest.mark.parametrize("solver", ["gd", "usam"])
def test_closed_form_over_many_steps(solver):
    # 50000 steps: the closed form against the loop that multiplies them out
    K, Y = _problem(30, 3, seed=5)
    theta, V = np.linalg.eigh(K)
    dynamics = dual_dynamics(theta, V.T @ Y, 30.0)
    settings = dict(lr=20 / theta[-1], solver=solver, rho=0.2, max_iter=50000)
    a, _, losses = run_steps(dynamics, **settings)
    a_ref, _, losses_ref = _reference_steps(dynamics, **settings)
    assert _relative(a, a_ref) < 1e-10
    assert_allclose(losses, losses_ref, rtol=1e-10)


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
def test_stopping_rule_stops_at_the_same_step(solver):
    K, Y = _problem(50, 2, seed=2)
    theta, V = np.linalg.eigh(K)
    dynamics = dual_dynamics(theta, V.T @ Y, 50.0)
    settings = dict(lr=40 / theta[-1], solver=solver, rho=0.2, max_iter=20000)
    stopping = StoppingCriterion(1e-4, 10)
    monitor = stopping.watch(None)
    assert not monitor.needs_iterate
    a, scales, losses = run_steps(dynamics, monitor=monitor, **settings)
    reference = stopping.watch(None)
    a_ref, _, losses_ref = _reference_steps(dynamics, monitor=reference, **settings)
    assert monitor.rule.stopped and len(losses) == len(losses_ref) < 20000
    assert len(scales) == len(losses)
    assert _relative(a, a_ref) < 1e-10


def test_divergence_is_reported_at_the_same_step():
    K, Y = _problem(20, 1, seed=3)
    theta, V = np.linalg.eigh(K)
    dynamics = dual_dynamics(theta, V.T @ Y, 20.0)
    settings = dict(lr=2.5 * 20 / theta[-1], solver="gd", rho=0.0, max_iter=5000)
    with pytest.raises(Diverged) as ours:
        run_steps(dynamics, **settings)
    with pytest.raises(Diverged) as reference:
        _reference_steps(dynamics, **settings)
    assert abs(ours.value.step - reference.value.step) <= 1


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
@pytest.mark.parametrize("k", [1, 5])
def test_eigh_route_is_the_krylov_route(solver, k):
    K, Y = _problem(70, k, seed=7)
    n = 70.0
    lr = 0.5 * n / np.linalg.eigvalsh(K)[-1]

    def solve(path):
        a, _, losses = run_steps(
            dual_dynamics(path.theta, path.z, n), lr=lr, solver=solver, rho=0.1, max_iter=2000
        )
        return a, losses

    common = dict(scale=float(np.linalg.eigvalsh(K)[-1]), solve=solve, rtol=0.0)
    path_k, a_k, losses_k, info_k = fit_krylov_path(K, Y, method="krylov", **common)
    path_e, a_e, losses_e, info_e = fit_krylov_path(K, Y, method="eigh", **common)
    assert info_k["exact"] and info_e["exact"] and info_e["size"] == 70
    assert _relative(path_e.V @ a_e, path_k.V @ a_k) < 1e-10
    assert_allclose(losses_e, losses_k, rtol=1e-10)


def test_cost_model_picks_eigh_when_the_basis_would_fill_the_space():
    # digits: n = 1347, 10 outputs; the first check has sqrt(max_iter) columns per output
    assert prefers_eigh(1347, 10 * int(np.sqrt(100000)), 1.5)
    assert prefers_eigh(1347, 10 * int(np.sqrt(3000)), 1.5)
    assert not prefers_eigh(1347, 10 * 24, 1.5)
    assert not prefers_eigh(5000, 1 * 31, 1.5)
    # the break-even: the basis' least cost against the dense eigendecomposition
    n = 1000
    assert krylov_flops(n, n, [n]) > eigh_flops(n) > krylov_flops(n, 150, [100, 150])
    # growing from p to m columns costs the difference of growing to each
    assert_allclose(
        krylov_flops(n, 300, [], start=200), krylov_flops(n, 300, []) - krylov_flops(n, 200, [])
    )


def test_basis_that_does_not_settle_switches_to_the_eigenbasis():
    # rtol=0: the basis never settles before filling the space; once its next
    # check costs more than eigh, the path is finished in the eigenbasis
    rng = np.random.default_rng(4)
    U = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    K = (U * np.geomspace(1e-8, 1.0, 300)) @ U.T  # K^-1 Y converges only at the end
    Y = rng.standard_normal((300, 2))
    calls = []

    def solve(path):
        calls.append(type(path).__name__)
        return path.z / path.theta[:, None], None  # K^-1 Y: changes until the end

    path, a, _, info = fit_krylov_path(K, Y, scale=1.0, solve=solve, first_check=10, rtol=0.0)
    assert calls[0] == "KrylovPath" and calls[-1] == "EigenPath"
    assert info["exact"] and info["size"] == 300
    assert_allclose(K @ (path.V @ a), Y, atol=1e-6)


def _fit_both(monkeypatch, make, X, y, **fit):
    models = {}
    for method in ("krylov", "eigh"):
        forced = functools.partial(fit_krylov_path, method=method, rtol=0.0)
        monkeypatch.setattr(_kernel_path, "fit_krylov_path", forced)
        models[method] = make().fit(X, y, **fit)
    return models["krylov"], models["eigh"]


@pytest.mark.parametrize("solver", ["gd", "sam", "usam"])
@pytest.mark.parametrize("n_outputs", [1, 6])
def test_regressor_same_fit_on_both_routes(monkeypatch, solver, n_outputs):
    rng = np.random.default_rng(n_outputs)
    X = rng.standard_normal((90, 4))
    y = np.sin(X @ rng.standard_normal((4, n_outputs))) + 0.1 * rng.standard_normal((90, n_outputs))
    y = y[:, 0] if n_outputs == 1 else y
    w = rng.uniform(0.5, 2.0, 90)

    def make():
        return SAMKernelRegressor(
            solver=solver,
            rho=0.1,
            max_iter=1500,
            early_stopping=True,
            n_iter_no_change=50,
            random_state=0,
            sharpness=None,
        )

    krylov, eigen = _fit_both(monkeypatch, make, X, y, sample_weight=w)
    assert eigen.krylov_size_ == 81 and krylov.n_iter_ == eigen.n_iter_
    assert_allclose(eigen.validation_scores_, krylov.validation_scores_, rtol=1e-10)
    assert_allclose(eigen.loss_curve_, krylov.loss_curve_, rtol=1e-10)
    assert _relative(eigen.predict(X), krylov.predict(X)) < 1e-10
    assert _relative(eigen.dual_coef_, krylov.dual_coef_) < 1e-9


@pytest.mark.parametrize("solver", ["gd", "sam"])
def test_classifier_same_fit_on_both_routes(monkeypatch, solver):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    y = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-1, -0.3, 0.3, 1])  # 5 classes
    w = rng.uniform(0.5, 2.0, 120)

    def make():
        return SAMKernelClassifier(solver=solver, rho=0.05, max_iter=5000, tol=1e-4)

    krylov, eigen = _fit_both(monkeypatch, make, X, y, sample_weight=w)
    assert krylov.n_iter_ == eigen.n_iter_ < 5000  # stopped by the rule
    assert_allclose(eigen.loss_curve_, krylov.loss_curve_, rtol=1e-10)
    scores = krylov.decision_function(X)
    assert _relative(eigen.decision_function(X), scores) < 1e-10
