"""Every way into the optimizers' state: checked, exact, or filled as torch does.

A radius reaches the optimizers through the constructor, ``add_param_group``,
``param_groups[i]['rho'] = ...`` (no setter: checked at every step) and
``load_state_dict``; a NaN or negative one must be refused with an error
naming rho and the group before any weight moves. A checkpoint of
Momentum-SAM's drop-in form must resume the very run it interrupted, and a
state saved by another optimizer must load or say why not.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

from sksam.optim import SAM, MomentumSAM

from _reference import data as _data
from _reference import flat as _flat
from _reference import mlp as _mlp

LR, RHO = 0.2, 0.3
BAD_RHOS = [
    (float("nan"), "rho must be finite, got rho=nan"),
    (-0.1, "rho must be non-negative, got rho=-0.1"),
    (float("inf"), "rho must be finite, got rho=inf"),
]


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _sam(model):
    return SAM(
        [{"params": model[0].parameters()}, {"params": model[3].parameters()}],
        torch.optim.SGD,
        rho=RHO,
        lr=LR,
    )


def _msam(model):
    return MomentumSAM(
        [{"params": model[0].parameters()}, {"params": model[3].parameters()}], lr=LR, rho=RHO
    )


OPTIMIZERS = [pytest.param(_sam, id="SAM"), pytest.param(_msam, id="MomentumSAM")]


# -- a bad radius, by every entry -------------------------------------------------


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("rho, message", BAD_RHOS)
@pytest.mark.parametrize("with_closure", [True, False])
def test_a_rho_set_in_param_groups_is_refused_at_the_step(make, rho, message, with_closure):
    # param_groups[i]['rho'] = nan used to reach the perturbation: NaN weights
    x, y = _data()
    model = _mlp()
    opt = make(model)
    opt.step(_closure(model, opt, x, y))  # Momentum-SAM: now v != 0
    opt.param_groups[1]["rho"] = rho
    before = _flat(model.parameters())
    with pytest.raises(ValueError, match=rf"{message} in param_groups\[1\]"):
        if with_closure:
            opt.step(_closure(model, opt, x, y))
        else:
            nn.functional.mse_loss(model(x), y).backward()
            opt.step() if isinstance(opt, MomentumSAM) else opt.first_step()
    assert torch.equal(_flat(model.parameters()), before)


def test_a_tensor_rho_set_in_param_groups_is_refused_at_the_step():
    x, y = _data()
    model = _mlp()
    opt = _sam(model)
    opt.param_groups[0]["rho"] = torch.tensor(float("nan"))
    with pytest.raises(
        ValueError, match=r"rho must be finite, got rho=tensor\(nan\) in param_groups\[0\]"
    ):
        opt.step(_closure(model, opt, x, y))


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("rho, message", BAD_RHOS)
def test_a_rho_in_a_loaded_state_is_refused_and_nothing_is_loaded(make, rho, message):
    x, y = _data()
    model = _mlp()
    opt = make(model)
    opt.step(_closure(model, opt, x, y))
    state = copy.deepcopy(opt.state_dict())
    state["param_groups"][1]["rho"] = rho
    state["param_groups"][1]["lr"] = 123.0
    with pytest.raises(ValueError, match=rf"{message} in param_groups\[1\]"):
        opt.load_state_dict(state)
    assert opt.param_groups[1]["rho"] == RHO and opt.param_groups[1]["lr"] == LR


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("rho, message", BAD_RHOS)
def test_a_rho_in_an_added_group_is_refused(make, rho, message):
    model = _mlp()
    opt = SAM(model[0].parameters(), torch.optim.SGD, lr=LR) if make is _sam else None
    opt = opt or MomentumSAM(model[0].parameters(), lr=LR)
    with pytest.raises(ValueError, match=rf"{message} in param_groups\[1\]"):
        opt.add_param_group({"params": model[3].parameters(), "rho": rho})
    assert len(opt.param_groups) == 1


# -- Momentum-SAM's drop-in form: a checkpoint resumes the same run -------------------


def _drop_in_steps(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()  # at w - rho v/|v|
        opt.step()


@pytest.mark.parametrize("with_model", [True, False])
def test_momentum_sam_drop_in_resumes_exactly_after_a_checkpoint(with_model):
    # the first step after loading used to take its gradient at the unperturbed w
    x, y = _data()
    model = _mlp()
    opt = MomentumSAM(model.parameters(), lr=LR, rho=RHO, model=model if with_model else None)
    _drop_in_steps(model, opt, x, y, 3)
    with opt.unperturbed():  # what model= does inside model.state_dict()
        checkpoint = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    _drop_in_steps(model, opt, x, y, 3)
    with opt.unperturbed():
        uninterrupted = _flat(model.parameters())

    resumed = _mlp(seed=1)  # other weights: everything comes from the checkpoint
    resumed_opt = MomentumSAM(
        resumed.parameters(), lr=LR, rho=RHO, model=resumed if with_model else None
    )
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["opt"])
    _drop_in_steps(resumed, resumed_opt, x, y, 3)
    with resumed_opt.unperturbed():
        torch.testing.assert_close(_flat(resumed.parameters()), uninterrupted, rtol=0, atol=1e-12)


@pytest.mark.parametrize("with_model", [True, False])
def test_momentum_sam_drop_in_resumes_in_the_same_process(with_model):
    # the weights are loaded while the optimizer holds copies of other ones:
    # the loaded weights are w, the copies must not overwrite them
    x, y = _data()
    model = _mlp()
    opt = MomentumSAM(model.parameters(), lr=LR, rho=RHO, model=model if with_model else None)
    _drop_in_steps(model, opt, x, y, 3)
    with opt.unperturbed():
        checkpoint = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    _drop_in_steps(model, opt, x, y, 3)
    with opt.unperturbed():
        uninterrupted = _flat(model.parameters())
    _drop_in_steps(model, opt, x, y, 2)  # further on, perturbed: then roll back
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    _drop_in_steps(model, opt, x, y, 3)
    with opt.unperturbed():
        torch.testing.assert_close(_flat(model.parameters()), uninterrupted, rtol=0, atol=1e-12)
    twin_model, twin_opt = pickle.loads(pickle.dumps((model, opt)))  # perturbed, copies held
    state = copy.deepcopy(twin_opt.state_dict())
    state["drop_in"] = False
    twin_opt.load_state_dict(state)  # no weight written since the pickle: w is put back
    with opt.unperturbed():
        assert torch.equal(_flat(twin_model.parameters()), _flat(model.parameters()))


def test_momentum_sam_loading_a_state_puts_back_the_unperturbed_weights_first():
    x, y = _data()
    model = _mlp()
    opt = MomentumSAM(model.parameters(), lr=LR, rho=RHO)
    _drop_in_steps(model, opt, x, y, 2)
    with opt.unperturbed():
        w = _flat(model.parameters())
    state = copy.deepcopy(opt.state_dict())
    state["drop_in"] = False  # a state saved by the closure form
    opt.load_state_dict(state)
    assert torch.equal(_flat(model.parameters()), w)


# -- a state saved by another optimizer ---------------------------------------------


def test_an_sgd_state_loads_into_sam_with_sam_defaults_for_the_missing_keys():
    # used to fail at the next step with KeyError: 'solver'
    x, y = _data()
    a, b = _mlp(), _mlp()
    sgd = torch.optim.SGD(a.parameters(), lr=LR, momentum=0.9)
    sgd.step(_closure(a, sgd, x, y))
    b.load_state_dict(a.state_dict())
    sam = SAM(b.parameters(), torch.optim.SGD, rho=0.0, lr=LR, momentum=0.9)
    sam.load_state_dict(copy.deepcopy(sgd.state_dict()))
    group = sam.param_groups[0]
    assert (group["rho"], group["solver"], group["weight_decay_in_ascent"]) == (0.0, "sam", False)
    for _ in range(2):  # the momentum buffers were loaded: rho=0 continues SGD bit for bit
        sgd.step(_closure(a, sgd, x, y))
        sam.step(_closure(b, sam, x, y))
    assert torch.equal(_flat(a.parameters()), _flat(b.parameters()))
    perturbing = SAM(_mlp().parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    perturbing.load_state_dict(copy.deepcopy(sgd.state_dict()))
    assert perturbing.param_groups[0]["rho"] == RHO and perturbing.perturbs()


def test_an_sgd_state_loads_into_momentum_sam():
    x, y = _data()
    a, b = _mlp(), _mlp()
    sgd = torch.optim.SGD(a.parameters(), lr=LR, momentum=0.9)
    sgd.step(_closure(a, sgd, x, y))
    b.load_state_dict(a.state_dict())
    msam = MomentumSAM(b.parameters(), lr=LR, rho=0.0)
    msam.load_state_dict(copy.deepcopy(sgd.state_dict()))
    assert msam.param_groups[0]["rho"] == 0.0
    for _ in range(2):
        sgd.step(_closure(a, sgd, x, y))
        msam.step(_closure(b, msam, x, y))
    assert torch.equal(_flat(a.parameters()), _flat(b.parameters()))


# -- what a divergence diagnosis needs: the loss at w + e -------------------------------


@pytest.mark.parametrize("chunks", [None, 2])
def test_the_losses_at_w_and_at_the_perturbed_point_are_kept(chunks):
    # with rho far too large the loss at w + e dwarfs the loss at w: the radius,
    # not the learning rate, is what a divergence message must name
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=1e6, lr=LR)
    if chunks is None:
        loss = opt.step(_closure(model, opt, x, y))
    else:
        halves = [(x[:8], y[:8]), (x[8:], y[8:])]
        loss = opt.step_chunks(lambda i: _closure(model, opt, *halves[i])(), chunks)
    at_w, at_w_plus_e = opt.last_losses
    assert float(at_w) == pytest.approx(float(loss.detach()))
    assert not at_w.requires_grad and not at_w_plus_e.requires_grad
    assert float(at_w_plus_e) > 1e3 * float(at_w)
    opt.param_groups[0]["rho"] = 0.0
    opt.step(_closure(model, opt, x, y))
    assert opt.last_losses[1] is None  # no second pass, no loss at w + e
