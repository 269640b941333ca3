"""The hook points of the one SAM pass: schedules and rules plugged in, not copied.

A SAM variant is a :class:`sksam._update_rules.SAMRule` (radius of the step,
perturbation, descent gradient) and a cheap variant a
:class:`sksam._update_rules.Schedule`, both driven by the one pass of
:class:`sksam.optim.SAM`; the schedules by one driver,
:class:`sksam._update_rules.ScheduledStep`, shared with the two-layer step.
Each hook is checked against a hand-written reference on flat vectors.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

import sksam._update_rules as schedules
from sksam import SAMTwoLayerRegressor
from sksam._update_rules import (
    GRAD_NORM_FLOOR,
    SAMRule,
    Schedule,
    ScheduledStep,
    check_rho,
    normalized_step,
    perturbation,
    scheduled_step,
)
from sksam.datasets import make_teacher_student
from sksam.optim import SAM, EveryK, LookSAM

from _reference import data as _data
from _reference import flat as _flat
from _reference import flat_grad
from _reference import mlp as _mlp

LR, RHO = 0.2, 0.3


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _loss_fn(x, y):
    return lambda module: nn.functional.mse_loss(module(x), y)


# -- the one normalized step ----------------------------------------------------


def test_normalized_step_has_norm_rho_along_the_direction():
    gen = torch.Generator().manual_seed(0)
    d = [
        torch.randn(3, 4, generator=gen, dtype=torch.float64),
        None,
        torch.randn(5, dtype=torch.float64),
    ]
    e = normalized_step(d, 0.7)
    assert e[1] is None
    direction = _flat([d[0], d[2]])
    torch.testing.assert_close(_flat([e[0], e[2]]), 0.7 * direction / direction.norm())


def test_normalized_step_per_parameter_radii_share_one_norm():
    d = [torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)]
    e = normalized_step(d, [0.5, 0.0])
    torch.testing.assert_close(e[0], torch.tensor([0.5 * 3 / 5], dtype=torch.float64))
    assert e[1] is None  # radius 0: not moved, but its direction counts in the norm
    flipped = normalized_step(d, -2.0, norm_of=[d[0]])  # a negative radius steps against d
    torch.testing.assert_close(flipped[1], torch.tensor([-2.0 * 4 / 3], dtype=torch.float64))


def test_normalized_step_of_a_zero_direction_is_zero_not_nan():
    e = normalized_step([torch.zeros(3)], 10.0)
    assert torch.equal(e[0], torch.zeros(3))
    tiny = normalized_step([torch.full((1,), 1e-20, dtype=torch.float64)], 1.0)
    assert tiny[0].item() == pytest.approx(1e-20 / GRAD_NORM_FLOOR)


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf")])
def test_check_rho_names_the_group(rho):
    with pytest.raises(ValueError, match=r"rho must be .* in param_groups\[2\]"):
        check_rho(rho, 2)


# -- rules: radius, perturbation, descent -------------------------------------------


class _ProportionalRadius(SAMRule):
    """GSAM's rho proportional to the learning rate: ``rho_t = c * lr_t``."""

    def __init__(self, c):
        self.c = c

    def radius(self, group):
        return self.c * group["lr"]


class _Weighted(SAMRule):
    """A WSAM-like descent: ``a * g_s + (1 - a) * g``, with a step counter as state."""

    needs_first_gradient = True

    def __init__(self, a):
        self.a, self.steps = a, 0

    def descent(self, params, first_grads):
        self.steps += 1
        for p, g in zip(params, first_grads):
            p.grad.mul_(self.a).add_(g, alpha=1 - self.a)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


class _LastLayerOnly(SAMRule):
    """SAM-ON-like: only the parameters in ``subset`` (by identity) are perturbed."""

    def __init__(self, subset):
        self.subset = subset

    def perturbation(self, solver, radii, params, grads, *, adaptive=None, eta=0.01):
        keep = [g if id(p) in self.subset else None for p, g in zip(params, grads)]
        return perturbation(solver, radii[0], params, keep)


def _weighted_reference(model, loss_fn, steps, a):
    w = _flat(model.parameters()).clone()
    path = []
    for _ in range(steps):
        g = flat_grad(model, loss_fn, w)
        g_s = flat_grad(model, loss_fn, w + RHO * g / g.norm())
        w = w - LR * (a * g_s + (1 - a) * g)
        path.append(w.clone())
    return path


def test_a_radius_rule_is_sam_at_that_radius_and_follows_the_learning_rate():
    x, y = _data()
    a, b = _mlp(), _mlp()
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=LR, rule=_ProportionalRadius(RHO / LR))
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    for _ in range(3):
        opt_a.step(_closure(a, opt_a, x, y))
        opt_b.step(_closure(b, opt_b, x, y))
    torch.testing.assert_close(_flat(a.parameters()), _flat(b.parameters()))
    # a learning rate of 0 gives radius 0: the base step, one closure call
    opt_a.param_groups[0]["lr"] = 0.0
    assert not opt_a.perturbs()


def test_a_radius_rule_that_goes_negative_is_refused_before_any_weight_moves():
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rule=_ProportionalRadius(-1.0))
    before = _flat(model.parameters())
    with pytest.raises(
        ValueError, match=r"rho must be non-negative, got rho=-0.2 in param_groups\[0\]"
    ):
        opt.step(_closure(model, opt, x, y))
    assert torch.equal(_flat(model.parameters()), before)


@pytest.mark.parametrize("protocol", ["closure", "chunks", "two_calls"])
def test_a_descent_rule_follows_its_hand_written_reference(protocol):
    x, y = _data()
    model = _mlp()
    expected = _weighted_reference(model, _loss_fn(x, y), 3, a=0.6)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, rule=_Weighted(0.6))
    for w in expected:
        if protocol == "closure":
            opt.step(_closure(model, opt, x, y))
        elif protocol == "chunks":
            opt.step_chunks(lambda i: _closure(model, opt, x, y)(), 1)
        else:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.first_step(zero_grad=True)
            nn.functional.mse_loss(model(x), y).backward()
            opt.second_step(zero_grad=True)
        torch.testing.assert_close(_flat(model.parameters()), w)
    assert opt.rule.steps == 3


def test_the_rule_is_copied_and_its_state_travels():
    x, y = _data()
    model = _mlp()
    rule = _Weighted(0.6)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, rule=rule)
    for _ in range(2):
        opt.step(_closure(model, opt, x, y))
    assert rule.steps == 0 and opt.rule.steps == 2
    twin = SAM(copy.deepcopy(model).parameters(), torch.optim.SGD, rho=RHO, lr=LR, rule=rule)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin.rule.steps == 2
    assert pickle.loads(pickle.dumps(opt)).rule.steps == 2


def test_a_perturbation_rule_moves_only_its_subset():
    x, y = _data()
    model = _mlp()
    last = list(model[3].parameters())
    w = _flat(model.parameters()).clone()
    g = flat_grad(model, _loss_fn(x, y), w)
    n_first = sum(p.numel() for p in model[0].parameters())
    e = torch.zeros_like(w)
    e[n_first:] = RHO * g[n_first:] / g[n_first:].norm()  # normalized over the subset
    expected = w - LR * flat_grad(model, _loss_fn(x, y), w + e)
    rule = _LastLayerOnly({id(p) for p in last})
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, rule=rule)
    opt.step(_closure(model, opt, x, y))
    torch.testing.assert_close(_flat(model.parameters()), expected)


def test_a_rule_must_be_a_sam_rule():
    with pytest.raises(TypeError, match="rule must be None or a sksam._update_rules.SAMRule"):
        SAM(_mlp().parameters(), torch.optim.SGD, lr=LR, rule="gsam")


# -- schedules: one protocol, one driver ---------------------------------------------


class _OddSteps(Schedule):
    """A new schedule written against the public protocol: SAM on odd steps."""

    def plan(self):
        return self.t % 2 == 1


def test_a_new_schedule_plugs_into_the_pass():
    x, y = _data()
    model = _mlp()
    w = _flat(model.parameters()).clone()
    loss_fn = _loss_fn(x, y)
    expected = []
    for t in range(4):
        g = flat_grad(model, loss_fn, w)
        d = flat_grad(model, loss_fn, w + RHO * g / g.norm()) if t % 2 == 1 else g
        w = w - LR * d
        expected.append(w.clone())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=_OddSteps())
    for w in expected:
        opt.step(_closure(model, opt, x, y))
        torch.testing.assert_close(_flat(model.parameters()), w)
    assert opt.schedule.t == 4


def test_the_schedule_protocol_is_public():
    # the driver and the optimizer call no underscored method of a schedule
    for name in (
        "plan",
        "decide",
        "after_sam",
        "plain",
        "advance",
        "state_dict",
        "load_state_dict",
    ):
        assert callable(getattr(Schedule, name))
    assert LookSAM.needs_first_gradient and LookSAM.edits_plain_gradient
    assert not EveryK.needs_first_gradient and not EveryK.edits_plain_gradient


def test_one_driver_serves_the_sam_pass_and_the_two_layer_step(monkeypatch):
    callers = []
    resolve = ScheduledStep.resolve

    def counted(self, *args, **kwargs):
        callers.append(type(self.schedule).__name__)
        return resolve(self, *args, **kwargs)

    monkeypatch.setattr(ScheduledStep, "resolve", counted)
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=EveryK(2))
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    assert callers == ["EveryK"] * 3
    X, target = make_teacher_student(n_samples=40, n_features=3, n_teacher=2, random_state=0)
    SAMTwoLayerRegressor(solver="every_k", sam_every=2, max_iter=4, tol=None, random_state=0).fit(
        X, target
    )
    assert callers.count("EveryK") == 3 + 4


def test_scheduled_step_copies_the_first_gradient_only_for_a_schedule_that_reads_it():
    seen = {}

    class _Reads(Schedule):
        needs_first_gradient = True

        def after_sam(self, grads, sam_grads, finite=True):
            seen["first"] = grads[0].clone()

    g = torch.tensor([1.0, 2.0])

    def sam_step():
        g.copy_(torch.tensor([5.0, 6.0]))  # the second gradient overwrites the storage
        return [g]

    assert scheduled_step(_Reads(), [g], sam_step)
    assert torch.equal(seen["first"], torch.tensor([1.0, 2.0]))
    assert not scheduled_step(_OddSteps(), [g], sam_step)  # t=0: plain


def test_the_driver_advances_the_schedule_when_the_step_raises():
    schedule = EveryK(2)
    with pytest.raises(RuntimeError, match="boom"):
        with ScheduledStep(schedule):
            raise RuntimeError("boom")
    assert schedule.t == 1
    assert schedules.sq_norm([None, torch.tensor([3.0, 4.0])]) == 25.0
