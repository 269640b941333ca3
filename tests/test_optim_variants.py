"""The cheap SAM variants: each rule against a hand-written reference, pass counts, compositions."""

import copy
import pickle

import pytest
import torch
from torch import nn

from sksam.optim import AESAM, RST, SAM, EveryK, LookSAM, MomentumSAM

from _reference import data as _data
from _reference import flat as _flat
from _reference import mlp as _mlp
from _reference import variant_path

LR, RHO = 0.2, 0.3


def _closure(model, opt, x, y, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _loss_fn(x, y):
    return lambda module: nn.functional.mse_loss(module(x), y)


CASES = [
    ("sam", None, {}),
    ("every_k", EveryK(3), {"k": 3}),
    ("looksam", LookSAM(k=3, alpha=0.7), {"k": 3, "alpha": 0.7}),
    ("rst", RST(p=0.5, seed=3), {"p": 0.5, "seed": 3}),
    ("aesam", AESAM(c=0.5, delta=0.9), {"c": 0.5, "delta": 0.9}),
    ("aesam", AESAM(c=-0.5, delta=0.5), {"c": -0.5, "delta": 0.5}),
]


@pytest.mark.parametrize("rule, schedule, options", CASES)
def test_each_rule_follows_its_hand_written_reference(rule, schedule, options):
    x, y = _data()
    model = _mlp()
    expected, grads_taken = variant_path(model, _loss_fn(x, y), 7, LR, RHO, rule, **options)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=schedule)
    calls = []
    for w in expected:
        opt.step(_closure(model, opt, x, y, calls))
        torch.testing.assert_close(_flat(model.parameters()), w)
    assert len(calls) == grads_taken


def test_the_schedules_do_switch():
    # The references above must exercise both branches of every rule.
    x, y = _data()
    for rule, _, options in CASES[1:]:
        _, grads = variant_path(_mlp(), _loss_fn(x, y), 7, LR, RHO, rule, **options)
        assert 7 < grads < 14, rule


def test_momentum_sam_follows_its_hand_written_reference():
    x, y = _data()
    model = _mlp()
    expected, grads_taken = variant_path(model, _loss_fn(x, y), 6, LR, RHO, "msam", momentum=0.9)
    opt = MomentumSAM(model.parameters(), lr=LR, momentum=0.9, rho=RHO)
    calls = []
    for w in expected:
        opt.step(_closure(model, opt, x, y, calls))
        # between steps the weights are the unperturbed w
        torch.testing.assert_close(_flat(model.parameters()), w)
    assert len(calls) == grads_taken == 6


def test_momentum_sam_at_rho_zero_is_sgd_with_momentum_bit_for_bit():
    x, y = _data()
    a, b = _mlp(), _mlp()
    opt_a = MomentumSAM(a.parameters(), lr=LR, momentum=0.9, rho=0.0, weight_decay=0.01)
    opt_b = torch.optim.SGD(b.parameters(), lr=LR, momentum=0.9, weight_decay=0.01)
    for _ in range(4):
        opt_a.step(_closure(a, opt_a, x, y))
        opt_b.step(_closure(b, opt_b, x, y))
    assert torch.equal(_flat(a.parameters()), _flat(b.parameters()))


def test_momentum_sam_without_closure_keeps_the_perturbation_and_restores_for_eval():
    x, y = _data()
    closure_model, drop_in = _mlp(), _mlp()
    ref = MomentumSAM(closure_model.parameters(), lr=LR, rho=RHO)
    opt = MomentumSAM(drop_in.parameters(), lr=LR, rho=RHO, model=drop_in)
    for _ in range(3):
        ref.step(_closure(closure_model, ref, x, y))
        opt.zero_grad()
        nn.functional.mse_loss(drop_in(x), y).backward()  # at w - rho v/|v|
        opt.step()
    w = _flat(closure_model.parameters())
    # the drop-in form leaves the weights perturbed for the next forward pass...
    assert not torch.allclose(_flat(drop_in.parameters()), w)
    with opt.unperturbed():
        torch.testing.assert_close(_flat(drop_in.parameters()), w)
    # ... and model= restores them for evaluation and for state_dict
    drop_in.eval()
    drop_in(x)
    torch.testing.assert_close(_flat(drop_in.parameters()), w)
    drop_in.train()
    drop_in(x)  # training again: perturbed again
    assert not torch.allclose(_flat(drop_in.parameters()), w)
    saved = drop_in.state_dict()
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in saved.values()]), w)


def _counted(model):
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "make_opt, passes",
    [
        (lambda p: torch.optim.SGD(p, lr=LR), 8),
        (lambda p: SAM(p, torch.optim.SGD, rho=0.0, lr=LR), 8),
        (lambda p: SAM(p, torch.optim.SGD, rho=RHO, lr=LR), 16),
        (lambda p: SAM(p, torch.optim.SGD, rho=RHO, lr=LR, schedule=EveryK(4)), 10),
        (lambda p: SAM(p, torch.optim.SGD, rho=RHO, lr=LR, schedule=LookSAM(4)), 10),
        (lambda p: MomentumSAM(p, lr=LR, rho=RHO), 8),
    ],
)
def test_forward_passes_per_step(make_opt, passes):
    # SGD 1, SAM 2, every-k and LookSAM 1 + 1/k, Momentum-SAM 1 (8 steps).
    x, y = _data()
    model = _mlp()
    forwards = _counted(model)
    opt = make_opt(model.parameters())
    for _ in range(8):
        opt.step(_closure(model, opt, x, y))
    assert len(forwards) == passes


def test_rst_and_aesam_count_their_coin_and_their_test():
    x, y = _data()
    for schedule, rule, options in [
        (RST(p=0.3, seed=5), "rst", {"p": 0.3, "seed": 5}),
        (AESAM(c=0.5), "aesam", {"c": 0.5, "delta": 0.9}),
    ]:
        model = _mlp()
        _, grads = variant_path(model, _loss_fn(x, y), 10, LR, RHO, rule, **options)
        forwards = _counted(model)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=schedule)
        for _ in range(10):
            opt.step(_closure(model, opt, x, y))
        assert len(forwards) == grads


def test_rst_never_touches_the_global_generator():
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=RST(0.5))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for _ in range(4):
        opt.step(_closure(model, opt, x, y))
    assert torch.equal(torch.get_rng_state(), before)


def test_aesam_linear_threshold_goes_from_first_to_last():
    schedule = AESAM(c=(-1.0, 1.0), total_steps=5)
    values = []
    for _ in range(5):
        values.append(schedule.threshold_c())
        schedule.advance()
    assert values == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])


def test_schedule_at_rho_zero_is_the_base_optimizer_bit_for_bit():
    x, y = _data()
    a, b = _mlp(), _mlp()
    opt_a = SAM(a.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=LookSAM(2))
    opt_b = torch.optim.SGD(b.parameters(), lr=LR)
    opt_a.step(_closure(a, opt_a, x, y))  # a refresh: g_v is stored
    opt_b.step(lambda: None)
    b.load_state_dict(a.state_dict())
    for group in opt_a.param_groups:
        group["rho"] = 0.0
    for _ in range(3):
        opt_a.step(_closure(a, opt_a, x, y))
        opt_b.step(_closure(b, opt_b, x, y))
    assert torch.equal(_flat(a.parameters()), _flat(b.parameters()))


# -- compositions ------------------------------------------------------------------


def test_every_k_with_chunks_switches_the_whole_step():
    x, y = _data()
    model = _mlp()
    forwards = _counted(model)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=EveryK(2))
    xs, ys = x.chunk(2), y.chunk(2)

    def closure(i):
        loss = nn.functional.mse_loss(model(xs[i]), ys[i])
        loss.backward()
        return loss

    for _ in range(4):
        opt.step_chunks(closure, 2)
    assert len(forwards) == 2 * (2 + 1 + 2 + 1)


@pytest.mark.parametrize("schedule", [LookSAM(2), AESAM()])
def test_whole_step_rules_refuse_chunks(schedule):
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=schedule)
    with pytest.raises(ValueError, match="cannot be shared by m-sharpness chunks"):
        opt.step_chunks(lambda i: None, 2)


@pytest.mark.parametrize("schedule", [LookSAM(2), AESAM()])
def test_whole_step_rules_refuse_the_local_ascent_of_several_workers(monkeypatch, schedule):
    import sksam.optim

    monkeypatch.setattr(sksam.optim, "world_size", lambda: 2)
    model = _mlp()
    opt = SAM(
        model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, ascent="local", schedule=schedule
    )
    with pytest.raises(ValueError, match="needs ascent='global' with several workers"):
        opt.step(lambda: None)


def test_the_two_call_protocol_takes_no_schedule():
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=EveryK(2))
    with pytest.raises(ValueError, match="first_step\\(\\)/second_step\\(\\) always take it"):
        opt.first_step()


@pytest.mark.parametrize("schedule", [EveryK(2), LookSAM(2), AESAM(c=-0.5)])
def test_grad_scaler_without_autocast_is_the_unscaled_step_bit_for_bit(schedule):
    x, y = _data(dtype=torch.float32)
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        model = _mlp(dtype=torch.float32)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=schedule)
        for _ in range(5):
            if scaler is None:
                opt.step(_closure(model, opt, x, y))
                continue

            def closure():
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                scaler.scale(loss).backward()
                return loss

            opt.step(closure, grad_scaler=scaler)
            scaler.update()
        runs.append(_flat(model.parameters()))
    assert torch.equal(*runs)


def test_batchnorm_and_dropout_with_a_schedule():
    x, y = _data()
    model = _mlp(batch_norm=True, dropout=0.3)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, model=model, schedule=EveryK(2))
    for _ in range(4):
        opt.step(_closure(model, opt, x, y))
    assert model[1].num_batches_tracked.item() == 4  # once per step, SAM or not


def test_schedule_state_travels_with_state_dict_and_pickle():
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=LookSAM(3))
    for _ in range(4):
        opt.step(_closure(model, opt, x, y))
    twin = copy.deepcopy(model)
    twin_opt = SAM(twin.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=LookSAM(3))
    twin_opt.load_state_dict(opt.state_dict())
    clone = pickle.loads(pickle.dumps((model, opt)))
    for m, o in [(model, opt), (twin, twin_opt), clone]:
        for _ in range(3):
            o.step(_closure(m, o, x, y))
    assert torch.equal(_flat(model.parameters()), _flat(twin.parameters()))
    assert torch.equal(_flat(model.parameters()), _flat(clone[0].parameters()))


def test_the_given_schedule_is_a_specification():
    schedule = EveryK(2)
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, schedule=schedule)
    x, y = _data()
    opt.step(_closure(model, opt, x, y))
    assert schedule.t == 0 and opt.schedule.t == 1


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EveryK(0), "k must be an integer >= 1, got k=0"),
        (lambda: LookSAM(2, alpha=-1.0), "alpha must be a number in"),
        (lambda: RST(p=1.5), "p must be a number in \\[0.0, 1.0\\], got p=1.5"),
        (lambda: AESAM(delta=1.0), "delta must be a number in \\(0.0, 1.0\\)"),
        (lambda: AESAM(c=(0.0, 1.0)), "needs total_steps"),
        (lambda: AESAM(c=float("nan")), "c must be a number"),
        (lambda: SAM(_mlp().parameters(), torch.optim.SGD, schedule="every"), "schedule must be"),
        (lambda: MomentumSAM(_mlp().parameters(), rho=float("inf")), "rho must be finite"),
        (lambda: MomentumSAM(_mlp().parameters(), momentum=1.0), "momentum must be in"),
    ],
)
def test_bad_options_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_momentum_sam_state_dict_and_pickle_continue_the_same_trajectory():
    x, y = _data()
    model = _mlp()
    opt = MomentumSAM(model.parameters(), lr=LR, rho=RHO)
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    twin = copy.deepcopy(model)
    twin_opt = MomentumSAM(twin.parameters(), lr=LR, rho=RHO)
    # a copy, as torch.save/torch.load make: torch's state_dict shares the buffers
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    clone = pickle.loads(pickle.dumps((model, opt)))
    for m, o in [(model, opt), (twin, twin_opt), clone]:
        for _ in range(3):
            o.step(_closure(m, o, x, y))
    assert torch.equal(_flat(model.parameters()), _flat(twin.parameters()))
    assert torch.equal(_flat(model.parameters()), _flat(clone[0].parameters()))


def test_momentum_sam_restores_the_weights_when_the_closure_fails():
    x, y = _data()
    model = _mlp()
    opt = MomentumSAM(model.parameters(), lr=LR, rho=RHO)
    opt.step(_closure(model, opt, x, y))  # now v != 0: the next step perturbs
    before = _flat(model.parameters())

    def failing():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        opt.step(failing)
    assert torch.equal(_flat(model.parameters()), before)
