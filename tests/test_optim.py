"""sksam.optim.SAM against its defining equations, then its plumbing."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from sksam._update_rules import ASAM_ETA
from sksam.optim import SAM

from _reference import data as _data
from _reference import flat as _flat
from _reference import mlp as _mlp


def _closure(model, opt, x, y, record=None):
    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if record is not None:
            record.append(loss.detach().clone())
        return loss

    return closure


def _grad(model, x, y):
    """grad L(w) by autograd, without touching .grad."""
    loss = nn.functional.mse_loss(model(x), y)
    return torch.autograd.grad(loss, list(model.parameters()))


# -- the perturbation ------------------------------------------------------


def _perturbation_after_first_step(solver, rho=0.3, **kwargs):
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, solver=solver, lr=0.1, **kwargs)
    w0 = [p.detach().clone() for p in model.parameters()]
    _closure(model, opt, x, y)()
    g = [p.grad.clone() for p in model.parameters()]
    assert opt.first_step()
    e = [p.detach() - w for p, w in zip(model.parameters(), w0)]
    return model, opt, w0, g, e


def test_sam_perturbation_has_norm_rho_along_the_gradient():
    _, _, _, g, e = _perturbation_after_first_step("sam", rho=0.3)
    flat_e, flat_g = _flat(e), _flat(g)
    assert torch.linalg.vector_norm(flat_e).item() == pytest.approx(0.3, rel=1e-12)
    cosine = flat_e @ flat_g / (flat_e.norm() * flat_g.norm())
    assert cosine.item() == pytest.approx(1.0, rel=1e-12)


def test_usam_perturbation_is_rho_times_the_gradient():
    _, _, _, g, e = _perturbation_after_first_step("usam", rho=0.3)
    torch.testing.assert_close(_flat(e), 0.3 * _flat(g), rtol=1e-12, atol=1e-15)


def test_asam_scales_weights_only():
    # e = rho T^2 g / ||T g||, T = |w| + eta on matrices, T = 1 on biases.
    _, _, w0, g, e = _perturbation_after_first_step("asam", rho=0.5)
    t = [w.abs() + ASAM_ETA if w.ndim > 1 else torch.ones_like(w) for w in w0]
    norm = torch.linalg.vector_norm(_flat([ti * gi for ti, gi in zip(t, g)]))
    expected = [0.5 * ti * ti * gi / norm for ti, gi in zip(t, g)]
    torch.testing.assert_close(_flat(e), _flat(expected), rtol=1e-12, atol=1e-15)


def test_adaptive_flag_is_asam():
    _, _, _, _, e_flag = _perturbation_after_first_step(None, rho=0.5, adaptive=True)
    _, _, _, _, e_asam = _perturbation_after_first_step("asam", rho=0.5)
    torch.testing.assert_close(_flat(e_flag), _flat(e_asam), rtol=0, atol=0)


def test_weight_decay_in_ascent_perturbs_along_the_l2_gradient():
    wd = 0.7
    _, _, w0, g, e = _perturbation_after_first_step(
        "sam", rho=0.3, weight_decay=wd, weight_decay_in_ascent=True
    )
    direction = _flat([gi + wd * wi for gi, wi in zip(g, w0)])
    torch.testing.assert_close(_flat(e), 0.3 * direction / direction.norm(), rtol=1e-12, atol=1e-15)
    # and the default leaves weight decay to the descent step only
    _, _, _, g, e = _perturbation_after_first_step("sam", rho=0.3, weight_decay=wd)
    torch.testing.assert_close(_flat(e), 0.3 * _flat(g) / _flat(g).norm(), rtol=1e-12, atol=1e-15)


def test_groups_with_their_own_rho_share_the_global_direction():
    model = _mlp()
    x, y = _data()
    first, second = list(model[0].parameters()), list(model[3].parameters())
    opt = SAM([{"params": first, "rho": 0.2}, {"params": second}], torch.optim.SGD, rho=0.0, lr=0.1)
    w0 = [p.detach().clone() for p in model.parameters()]
    _closure(model, opt, x, y)()
    g = _flat([p.grad for p in model.parameters()])
    opt.first_step()
    e = _flat([p.detach() - w for p, w in zip(model.parameters(), w0)])
    n_first = sum(p.numel() for p in first)
    torch.testing.assert_close(e[:n_first], 0.2 * g[:n_first] / g.norm(), rtol=1e-12, atol=1e-15)
    assert torch.equal(e[n_first:], torch.zeros_like(e[n_first:]))


# -- one step against the equation ------------------------------------------


@pytest.mark.parametrize("solver", ["sam", "usam"])
def test_one_step_equals_the_sam_equation(solver):
    # w1 = w - lr * grad L(w + e), e = rho g/||g|| (sam) or rho g (usam)
    rho, lr = 0.2, 0.3
    model = _mlp()
    x, y = _data()
    w = [p.detach().clone() for p in model.parameters()]
    g = _grad(model, x, y)
    scale = rho / _flat(g).norm() if solver == "sam" else rho
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for p, gi in zip(shifted.parameters(), g):
            p.add_(scale * gi)
    g_shifted = _grad(shifted, x, y)
    expected = [wi - lr * gi for wi, gi in zip(w, g_shifted)]

    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, solver=solver, lr=lr)
    record = []
    loss = opt.step(_closure(model, opt, x, y, record))
    torch.testing.assert_close(_flat(model.parameters()), _flat(expected), rtol=1e-13, atol=1e-15)
    # the returned loss is the first one, at the unperturbed weights
    assert len(record) == 2
    assert loss.item() == record[0].item()
    assert record[1].item() > record[0].item()  # the ascent step went uphill


def test_gradient_accumulated_in_the_closure_gives_the_full_batch_step():
    # The documented recipe: micro-batches accumulate inside the closure, so
    # both passes see the whole batch's gradient.
    x, y = _data(n=16)
    full, accumulated = _mlp(), _mlp()
    opt_full = SAM(full.parameters(), torch.optim.SGD, rho=0.2, lr=0.3)
    opt_acc = SAM(accumulated.parameters(), torch.optim.SGD, rho=0.2, lr=0.3)

    def closure():
        opt_acc.zero_grad()
        total = 0.0
        for xb, yb in zip(x.chunk(4), y.chunk(4)):
            loss = nn.functional.mse_loss(accumulated(xb), yb) / 4
            loss.backward()
            total += loss.detach()
        return total

    for _ in range(3):
        loss_full = opt_full.step(_closure(full, opt_full, x, y))
        loss_acc = opt_acc.step(closure)
        torch.testing.assert_close(loss_acc, loss_full.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(
        _flat(accumulated.parameters()), _flat(full.parameters()), rtol=1e-12, atol=1e-14
    )


def test_bfloat16_autocast_in_the_closure():
    # bfloat16 needs no loss scaling; the step follows the float32 one closely
    x, y = _data(dtype=torch.float32)
    models = [_mlp(dtype=torch.float32) for _ in range(2)]
    opts = [SAM(m.parameters(), torch.optim.SGD, rho=0.1, lr=0.1) for m in models]

    def closure(model, opt, autocast):
        def run():
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.mse_loss(model(x).float(), y)
            loss.backward()
            return loss

        return run

    before = _flat(models[0].parameters()).detach().clone()
    for model, opt, autocast in zip(models, opts, (False, True)):
        opt.step(closure(model, opt, autocast))
    exact, mixed = (_flat(m.parameters()).detach() for m in models)
    assert all(p.dtype == torch.float32 for p in models[1].parameters())
    assert torch.isfinite(mixed).all()
    step_exact, step_mixed = exact - before, mixed - before
    # bfloat16 keeps about 3 significant digits: the steps agree to a few
    # percent, and differ (the forward pass did run in bfloat16)
    assert (step_mixed - step_exact).norm() < 0.05 * step_exact.norm()
    assert not torch.equal(step_mixed, step_exact)


def test_weights_are_restored_bit_for_bit_before_the_base_step():
    # With lr=0 the base step is the identity, so w must come back exactly.
    model = _mlp(dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    w0 = _flat([p.detach().clone() for p in model.parameters()])
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.37, lr=0.0)
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    assert torch.equal(_flat(model.parameters()), w0)


# -- rho = 0 is the base optimizer bit for bit -------------------------------


@pytest.mark.parametrize(
    "base, kwargs",
    [
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
        (torch.optim.Adam, dict(lr=0.01)),
    ],
)
@pytest.mark.parametrize("solver", ["sam", "usam", "asam", "gd"])
def test_rho_zero_is_the_base_optimizer_bit_for_bit(base, kwargs, solver):
    x, y = _data(dtype=torch.float32)
    runs = []
    for make in (
        lambda m: base(m.parameters(), **kwargs),
        lambda m: SAM(m.parameters(), base, rho=0.0, solver=solver, model=m, **kwargs),
    ):
        model = _mlp(dtype=torch.float32, batch_norm=True, dropout=0.3)
        opt = make(model)
        torch.manual_seed(1)
        for _ in range(5):
            opt.step(_closure(model, opt, x, y))
        runs.append((_flat(model.parameters()), _flat(model.buffers()).float()))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])


def test_gd_solver_ignores_rho():
    x, y = _data(dtype=torch.float32)
    weights = []
    for rho, solver in [(0.0, "sam"), (0.5, "gd")]:
        model = _mlp(dtype=torch.float32)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, solver=solver, lr=0.1)
        for _ in range(3):
            opt.step(_closure(model, opt, x, y))
        weights.append(_flat(model.parameters()))
    assert torch.equal(*weights)


# -- BatchNorm and dropout -----------------------------------------------------


def test_batchnorm_statistics_are_updated_once_per_step():
    model = _mlp(batch_norm=True)
    bn = model[1]
    x, y = _data()
    with torch.no_grad():
        batch_mean = model[0](x).mean(0)  # BN input at the unperturbed weights
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, model=model)
    opt.step(_closure(model, opt, x, y))
    # running_mean <- (1 - momentum) * 0 + momentum * mean at w
    torch.testing.assert_close(bn.running_mean, bn.momentum * batch_mean, rtol=1e-12, atol=1e-15)
    assert bn.num_batches_tracked.item() == 1


def test_without_the_model_batchnorm_sees_both_passes():
    # Documents why ``model=`` exists: the second pass would count too.
    model = _mlp(batch_norm=True)
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    opt.step(_closure(model, opt, x, y))
    assert model[1].num_batches_tracked.item() == 2


def test_cumulative_batchnorm_counts_one_batch_per_step():
    # momentum=None averages over num_batches_tracked: the momentum=0 trick
    # would still bump the counter, saving the buffers does not.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 7), nn.BatchNorm1d(7, momentum=None), nn.Linear(7, 1)
    ).double()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, model=model)
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    assert model[1].num_batches_tracked.item() == 3


def test_dropout_masks_are_equal_in_both_passes():
    model = _mlp(dropout=0.5)
    x, y = _data()
    masks = []
    model[2].register_forward_hook(lambda m, inp, out: masks.append(out.detach() == 0))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, model=model)
    torch.manual_seed(3)
    opt.step(_closure(model, opt, x, y))
    assert len(masks) == 2
    assert masks[0].any() and torch.equal(masks[0], masks[1])
    # the generator is left where a single pass leaves it
    after_sam = torch.rand(4)
    torch.manual_seed(3)
    model(x)
    assert torch.equal(torch.rand(4), after_sam)


class _Noisy(nn.Module):
    """Draws its own noise in forward: no module-level sign of randomness."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 1).double()
        self.noises = []

    def forward(self, x):
        noise = torch.rand(x.shape, dtype=x.dtype)
        self.noises.append(noise)
        return self.linear(x + noise)


@pytest.mark.parametrize("replay_rng, equal", [("auto", True), (True, True), (False, False)])
def test_random_numbers_of_a_custom_forward_are_replayed(replay_rng, equal):
    model = _Noisy()
    x, y = _data()
    opt = SAM(
        model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, model=model, replay_rng=replay_rng
    )
    torch.manual_seed(0)
    opt.step(_closure(model, opt, x, y))
    assert len(model.noises) == 2
    assert torch.equal(*model.noises) is equal
    # a replay leaves the generator where one pass leaves it
    after = torch.rand(3)
    torch.manual_seed(0)
    for _ in range(1 if equal else 2):
        torch.rand(x.shape, dtype=x.dtype)
    assert torch.equal(torch.rand(3), after)


class _Quiet(nn.Module):
    draws_random_numbers = False  # the declaration 'auto' trusts

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 1))

    def forward(self, x):
        return self.body(x)


class _MyLinear(nn.Linear):
    pass


@pytest.mark.parametrize(
    "make_model, replays",
    [
        (
            lambda: nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 1)),
            False,
        ),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.Dropout(0.5), nn.Linear(7, 1)), True),
        (lambda: nn.Sequential(nn.Linear(5, 7), nn.RReLU(), nn.Linear(7, 1)), True),
        (lambda: _Quiet(), False),
        (lambda: nn.Sequential(_Quiet(), nn.Dropout(0.1)), True),
        (lambda: nn.Sequential(_MyLinear(5, 1)), True),  # a subclass may override forward
        (lambda: None, True),  # nothing known about the model
    ],
)
def test_replay_rng_auto_replays_unless_the_model_cannot_draw(monkeypatch, make_model, replays):
    import sksam.optim as collaborators

    calls = []
    get_rng = collaborators.get_rng
    monkeypatch.setattr(
        collaborators, "get_rng", lambda devices: calls.append(1) or get_rng(devices)
    )
    model = make_model()
    net = model if model is not None else nn.Sequential(nn.Linear(5, 1))
    net.double()
    x, y = _data()
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, model=model)
    opt.step(_closure(net, opt, x, y))
    assert len(calls) == (2 if replays else 0)


def test_replay_rng_survives_pickle():
    model = _Noisy()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, model=model, replay_rng=False)
    assert pickle.loads(pickle.dumps(opt)).replay_rng is False


# -- guards and errors -----------------------------------------------------------


def test_zero_gradient_gives_zero_perturbation():
    model = _mlp()
    x, y = _data()
    w0 = _flat([p.detach().clone() for p in model.parameters()])
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)

    def zero_loss():
        opt.zero_grad()
        loss = 0.0 * model(x).sum()
        loss.backward()
        return loss

    opt.step(zero_loss)
    assert torch.equal(_flat(model.parameters()), w0)


def test_parameter_without_gradient_in_the_first_pass_is_left_alone():
    # The community KeyError 'old_p': a parameter gets a gradient only in
    # the second pass. It is not perturbed, and the restore does not touch it.
    model = nn.Linear(5, 1).double()
    extra = nn.Parameter(torch.ones(1, dtype=torch.float64))
    x, y = _data()
    opt = SAM([*model.parameters(), extra], torch.optim.SGD, rho=0.1, lr=0.5)
    calls = []

    def closure():
        opt.zero_grad()
        out = model(x) if not calls else model(x) + extra
        calls.append(1)
        loss = nn.functional.mse_loss(out, y)
        loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 2
    assert extra.item() != 1.0  # the base step used its second-pass gradient


@pytest.mark.parametrize(
    "solver, rho, expected",
    [("sam", 0.1, True), ("usam", 0.1, True), ("sam", 0.0, False), ("gd", 0.1, False)],
)
def test_perturbs_says_whether_step_calls_the_closure_twice(solver, rho, expected):
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, solver=solver, lr=0.1)
    record = []
    opt.step(_closure(model, opt, x, y, record))
    assert opt.perturbs() is expected
    assert len(record) == (2 if expected else 1)


def test_perturbs_follows_rho_in_the_groups():
    model = _mlp()
    opt = SAM(
        [{"params": model[0].parameters(), "rho": 0.0}, {"params": model[3].parameters()}],
        torch.optim.SGD,
        rho=0.2,
        lr=0.1,
    )
    assert opt.perturbs()
    opt.param_groups[1]["rho"] = 0.0
    assert not opt.perturbs()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_clears_like_torch(set_to_none):
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    nn.functional.mse_loss(model(x), y).backward()
    opt.zero_grad(set_to_none=set_to_none)
    for p in model.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, torch.zeros_like(p))


def test_closures_run_with_gradients_even_under_no_grad():
    # As for LBFGS: step() may be called in a no_grad block; the closure
    # still needs autograd, and the caller's mode is left as it was.
    x, y = _data()
    results = []
    for no_grad in (False, True):
        model = _mlp()
        opt = SAM(
            model.parameters(),
            torch.optim.SGD,
            rho=0.2,
            lr=0.3,
            weight_decay=0.1,
            weight_decay_in_ascent=True,
        )
        modes = []

        def closure():
            modes.append(torch.is_grad_enabled())
            return _closure(model, opt, x, y)()

        with torch.set_grad_enabled(not no_grad):
            opt.step(closure)
            assert torch.is_grad_enabled() is not no_grad
        assert modes == [True, True]
        assert all(p.is_leaf and p.grad_fn is None for p in model.parameters())
        results.append(_flat(model.parameters()))
    assert torch.equal(*results)


def test_batchnorm_of_a_replaced_model_is_protected_instead():
    # The normalization layers are looked up once per model, not once per
    # step, and again when ``model`` is replaced.
    x, y = _data()
    first, second = _mlp(batch_norm=True), _mlp(seed=1, batch_norm=True)
    opt = SAM(first.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, model=first)
    opt.step(_closure(first, opt, x, y))
    opt.model = second

    def both():
        opt.zero_grad()
        loss = nn.functional.mse_loss(first(x), y) + nn.functional.mse_loss(second(x), y)
        loss.backward()
        return loss

    opt.step(both)
    assert second[1].num_batches_tracked.item() == 1  # protected: once per step
    assert first[1].num_batches_tracked.item() == 1 + 2  # no longer: both passes


def test_step_without_closure_needs_one():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    with pytest.raises(ValueError, match="SAM.step\\(\\) needs a closure"):
        opt.step()


def test_step_without_closure_is_fine_at_rho_zero():
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, lr=0.1)
    nn.functional.mse_loss(model(x), y).backward()
    w0 = _flat([p.detach().clone() for p in model.parameters()])
    g = _flat([p.grad for p in model.parameters()])
    assert opt.step() is None
    torch.testing.assert_close(_flat(model.parameters()), w0 - 0.1 * g, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("rho", [0.0, 0.1])
@pytest.mark.parametrize("chunks", [False, True])
def test_a_closure_without_backward_is_an_error_not_a_silent_no_op(rho, chunks):
    # without backward() no parameter has a gradient, and the step would leave
    # every weight where it is without a sign
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    w0 = _flat([p.detach().clone() for p in model.parameters()])
    with pytest.raises(ValueError, match=r"computed no gradient: it must call loss.backward\(\)"):
        if chunks:
            opt.step_chunks(lambda i: nn.functional.mse_loss(model(x), y), 2)
        else:
            opt.step(lambda: nn.functional.mse_loss(model(x), y))
    torch.testing.assert_close(_flat(model.parameters()), w0, rtol=0, atol=0)


@pytest.mark.parametrize("base", ["sgd", "instance"])
def test_base_optimizer_must_be_a_class(base):
    # SAM(params, torch.optim.SGD(params, lr=0.1)) is the common slip
    model = _mlp()
    if base == "instance":
        base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="base_optimizer must be an optimizer class"):
        SAM(model.parameters(), base, rho=0.1, lr=0.1)


def test_first_and_second_step_protocol():
    # The community two-call protocol gives the same step as the closure.
    x, y = _data()
    results = []
    for use_closure in (True, False):
        model = _mlp()
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.3)
        if use_closure:
            opt.step(_closure(model, opt, x, y))
        else:
            nn.functional.mse_loss(model(x), y).backward()
            opt.first_step(zero_grad=True)
            nn.functional.mse_loss(model(x), y).backward()
            opt.second_step(zero_grad=True)
            assert all(p.grad is None for p in model.parameters())
        results.append(_flat(model.parameters()))
    assert torch.equal(*results)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=-0.1), "rho must be non-negative, got rho=-0.1"),
        (dict(eta=-1.0), "eta must be non-negative"),
        (dict(solver="adam"), "Unknown solver 'adam'"),
        (dict(adaptive=True, solver="usam"), "adaptive=True selects ASAM but solver='usam'"),
        (dict(replay_rng="yes"), "replay_rng must be 'auto', True or False, got 'yes'"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAM(_mlp().parameters(), torch.optim.SGD, lr=0.1, **kwargs)


@pytest.mark.parametrize(
    "rho", [float("inf"), float("nan"), -float("inf"), torch.tensor(float("inf"))]
)
def test_non_finite_rho_is_refused_at_construction(rho):
    # rho=inf used to be accepted and gave non-finite weights at the first step.
    with pytest.raises(ValueError, match="rho must be (finite|non-negative), got rho="):
        SAM(_mlp().parameters(), torch.optim.SGD, lr=0.1, rho=rho)


@pytest.mark.parametrize("rho", [float("inf"), -1.0])
def test_a_group_rho_is_checked_too(rho):
    model = _mlp()
    groups = [{"params": model[0].parameters(), "rho": rho}, {"params": model[3].parameters()}]
    with pytest.raises(ValueError, match="rho must be"):
        SAM(groups, torch.optim.SGD, lr=0.1)
    opt = SAM(model[0].parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="rho must be"):
        opt.add_param_group({"params": model[3].parameters(), "rho": rho})


def test_groups_must_share_the_solver():
    model = _mlp()
    opt = SAM(
        [{"params": model[0].parameters(), "solver": "usam"}, {"params": model[3].parameters()}],
        torch.optim.SGD,
        lr=0.1,
    )
    x, y = _data()
    with pytest.raises(ValueError, match="same solver and eta"):
        opt.step(_closure(model, opt, x, y))


# -- plumbing: groups, schedulers, persistence -------------------------------


def test_param_groups_are_the_base_optimizers_own():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.state is opt.base_optimizer.state
    group = opt.param_groups[0]
    assert (group["rho"], group["solver"], group["lr"], group["momentum"]) == (0.1, "sam", 0.1, 0.9)
    # a change of rho in the groups changes the next step
    group["rho"] = 0.0
    assert not opt.first_step()


def test_lr_scheduler_drives_the_base_optimizer():
    model = _mlp()
    x, y = _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(3):
        w = _flat([p.detach().clone() for p in model.parameters()])
        opt.step(_closure(model, opt, x, y))
        g = _flat([p.grad for p in model.parameters()])  # grad at w + e
        # the base step used the scheduled lr
        expected = w - 0.4 * 0.5 ** len(lrs) * g
        torch.testing.assert_close(_flat(model.parameters()), expected, rtol=1e-12, atol=1e-14)
        lrs.append(opt.base_optimizer.param_groups[0]["lr"])
        sched.step()
    assert lrs == [0.4, 0.2, 0.1]


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.step(_closure(model, opt, x, y))


def test_state_dict_round_trip_continues_the_same_trajectory():
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    _train(model, opt, x, y, 3)
    saved_model = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)

    model2 = _mlp(seed=5)
    model2.load_state_dict(saved_model)
    opt2 = SAM(model2.parameters(), torch.optim.SGD, rho=0.7, lr=0.5, momentum=0.1)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.state is opt2.base_optimizer.state
    assert opt2.param_groups[0]["rho"] == 0.1 and opt2.param_groups[0]["momentum"] == 0.9

    _train(model, opt, x, y, 2)
    _train(model2, opt2, x, y, 2)
    assert torch.equal(_flat(model.parameters()), _flat(model2.parameters()))


def test_pickle_keeps_the_links():
    model = _mlp(batch_norm=True)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, model=model)
    x, y = _data()
    _train(model, opt, x, y, 2)
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    assert opt2.model is model2
    _train(model, opt, x, y, 2)
    _train(model2, opt2, x, y, 2)
    assert torch.equal(_flat(model.parameters()), _flat(model2.parameters()))
    assert model2[1].num_batches_tracked.item() == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_matches_cpu_and_replays_cuda_dropout():
    x, y = _data(dtype=torch.float32)
    results = []
    for device in ("cpu", "cuda"):
        model = _mlp(dtype=torch.float32).to(device)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.3, model=model)
        opt.step(_closure(model, opt, x.to(device), y.to(device)))
        results.append(_flat(model.parameters()).cpu())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    model = _mlp(dtype=torch.float32, dropout=0.5).cuda()
    masks = []
    model[2].register_forward_hook(lambda m, inp, out: masks.append(out.detach() == 0))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, model=model)
    opt.step(_closure(model, opt, x.cuda(), y.cuda()))
    assert torch.equal(masks[0], masks[1])


def test_an_error_in_the_second_pass_leaves_the_weights_unperturbed():
    model = _mlp(batch_norm=True)
    x, y = _data()
    w0 = _flat([p.detach().clone() for p in model.parameters()])
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, model=model)
    closure, calls = _closure(model, opt, x, y), []

    def interrupted():
        calls.append(1)
        loss = closure()
        if len(calls) == 2:
            raise KeyboardInterrupt
        return loss

    with pytest.raises(KeyboardInterrupt):
        opt.step(interrupted)
    assert torch.equal(_flat(model.parameters()), w0)
    assert model[1].num_batches_tracked.item() == 1
