"""The update rules against their defining equations."""

import numpy as np
import pytest
import torch

from sksam._update_rules import (
    GRAD_NORM_FLOOR,
    SOLVERS,
    add_perturbation_,
    check_solver,
    perturbation,
    perturbation_scale,
    restore_,
)


def _params_and_grads(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(3, 4, generator=gen, dtype=torch.float64),
        torch.randn(4, generator=gen, dtype=torch.float64),
    ]
    grads = [
        torch.randn(3, 4, generator=gen, dtype=torch.float64),
        torch.randn(4, generator=gen, dtype=torch.float64),
    ]
    return params, grads


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_unknown_solver_is_named():
    with pytest.raises(ValueError, match="Unknown solver 'adam'"):
        check_solver("adam")


@pytest.mark.parametrize("solver", SOLVERS)
def test_rho_zero_means_no_second_gradient(solver):
    params, grads = _params_and_grads()
    assert perturbation(solver, 0.0, params, grads) is None
    assert perturbation_scale(solver, 0.0, 3.0) == 0.0


def test_gd_never_perturbs():
    params, grads = _params_and_grads()
    assert perturbation("gd", 0.5, params, grads) is None


def test_sam_perturbation_has_norm_rho_along_gradient():
    params, grads = _params_and_grads()
    e = perturbation("sam", 0.3, params, grads)
    flat_e, flat_g = _flat(e), _flat(grads)
    assert torch.linalg.vector_norm(flat_e).item() == pytest.approx(0.3, rel=1e-14)
    cosine = flat_e @ flat_g / (flat_e.norm() * flat_g.norm())
    assert cosine.item() == pytest.approx(1.0, rel=1e-14)


def test_usam_perturbation_is_rho_times_gradient():
    params, grads = _params_and_grads()
    e = perturbation("usam", 0.3, params, grads)
    torch.testing.assert_close(_flat(e), 0.3 * _flat(grads), rtol=0, atol=0)


def test_asam_matches_kwon_et_al():
    params, grads = _params_and_grads()
    rho, eta = 0.5, 0.01
    adaptive = [True, False]  # weights scaled, bias not
    e = perturbation("asam", rho, params, grads, adaptive=adaptive, eta=eta)
    t = [params[0].abs() + eta, torch.ones_like(params[1])]
    t_g = _flat([ti * gi for ti, gi in zip(t, grads)])
    expected = _flat([ti * ti * gi for ti, gi in zip(t, grads)]) * rho / t_g.norm()
    torch.testing.assert_close(_flat(e), expected, rtol=1e-14, atol=0)
    # the perturbation has norm rho in the T^-1 geometry
    t_inv_e = _flat([ei / ti for ei, ti in zip(e, t)])
    assert t_inv_e.norm().item() == pytest.approx(rho, rel=1e-14)


@pytest.mark.parametrize("solver", ["sam", "asam"])
def test_zero_gradient_gives_zero_perturbation(solver):
    params, grads = _params_and_grads()
    zeros = [torch.zeros_like(g) for g in grads]
    e = perturbation(solver, 10.0, params, zeros)
    assert all(torch.equal(ei, torch.zeros_like(ei)) for ei in e)
    assert perturbation_scale(solver, 1.0, 0.0) == 1.0 / GRAD_NORM_FLOOR


def test_parameters_without_gradient_are_left_alone():
    params, grads = _params_and_grads()
    e = perturbation("sam", 0.2, params, [grads[0], None])
    assert e[1] is None
    assert torch.linalg.vector_norm(e[0]).item() == pytest.approx(0.2, rel=1e-14)


def test_restore_gives_back_the_same_bits():
    params, grads = _params_and_grads()
    before = [p.clone() for p in params]
    e = perturbation("sam", 0.123456789, params, grads)
    saved = add_perturbation_(params, e)
    assert not torch.equal(params[0], before[0])
    restore_(params, saved)
    for p, b in zip(params, before):
        assert torch.equal(p, b)


def test_scale_keeps_tensor_on_its_device():
    norm = torch.tensor(2.0)
    scale = perturbation_scale("sam", 0.5, norm)
    assert isinstance(scale, torch.Tensor)
    np.testing.assert_allclose(scale.item(), 0.25)
