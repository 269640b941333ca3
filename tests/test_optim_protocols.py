"""Every way of calling sksam.optim.SAM against a hand-written SAM.

The closure styles people bring from other SAM code, m-sharpness on one
device (``step_chunks``) and float16 loss scaling (``grad_scaler=``).
"""

import copy
import warnings

import pytest
import torch
from torch import nn

from sksam.optim import SAM

from _reference import data as _data
from _reference import flat as _flat
from _reference import mlp as _mlp
from _reference import sam_gradient

RHO, LR, MOMENTUM = 0.2, 0.3, 0.9


def _loss(model, x, y):
    return nn.functional.mse_loss(model(x), y)


def _sam_direction(model, x, y, rho):
    """grad L(w + rho g/||g||) by autograd on a copy, without touching ``model``."""
    return sam_gradient(model, lambda m: _loss(m, x, y), rho)


def _reference(model, x, y, steps, chunks=1):
    """Hand-written SAM with SGD momentum; ``chunks`` > 1: one ascent per chunk."""
    model = copy.deepcopy(model)
    params = list(model.parameters())
    buffers = None
    for _ in range(steps):
        directions = [
            _sam_direction(model, xc, yc, RHO) for xc, yc in zip(x.chunk(chunks), y.chunk(chunks))
        ]
        d = [sum(parts) / chunks for parts in zip(*directions)]
        buffers = d if buffers is None else [MOMENTUM * b + di for b, di in zip(buffers, d)]
        with torch.no_grad():
            for p, b in zip(params, buffers):
                p.sub_(LR * b)
    return _flat(params)


def _sam(net, **kwargs):
    return SAM(net.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, **kwargs)


# -- item: every closure style is the SAM step ------------------------------


def _sksam_style(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    opt.step(closure)


def _community_style(model, opt, x, y):
    # davda54/sam's README: a first backward, then a closure that does not
    # clear the gradients, then zero_grad after the step.
    def closure():
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    _loss(model, x, y).backward()
    opt.step(closure)
    opt.zero_grad()


def _closure_without_zero_grad(model, opt, x, y):
    # no backward before, no zero_grad anywhere: step clears between passes
    def closure():
        loss = _loss(model, x, y)
        loss.backward()
        return loss

    opt.step(closure)


def _two_calls(model, opt, x, y):
    _loss(model, x, y).backward()
    opt.first_step(zero_grad=True)
    _loss(model, x, y).backward()
    opt.second_step(zero_grad=True)


def _accumulation_in_closure(model, opt, x, y):
    # micro-batches accumulate; the closure relies on step to clear
    def closure():
        total = 0.0
        for xb, yb in zip(x.chunk(4), y.chunk(4)):
            loss = _loss(model, xb, yb) / 4
            loss.backward()
            total += loss.detach()
        return total

    opt.step(closure)


def _zero_filled_before_step(model, opt, x, y):
    opt.zero_grad(set_to_none=False)
    _sksam_style(model, opt, x, y)


STYLES = [
    _sksam_style,
    _community_style,
    _closure_without_zero_grad,
    _two_calls,
    _accumulation_in_closure,
    _zero_filled_before_step,
]


@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__.strip("_"))
def test_every_calling_style_takes_the_sam_step(style):
    x, y = _data()
    model = _mlp()
    expected = _reference(model, x, y, steps=5)
    opt = _sam(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            style(model, opt, x, y)
    torch.testing.assert_close(_flat(model.parameters()), expected, rtol=1e-12, atol=1e-13)
    # only the community style wastes a backward pass, and is told once
    messages = [
        str(w.message) for w in caught if "found gradients computed before" in str(w.message)
    ]
    assert len(messages) == (1 if style is _community_style else 0)


def test_community_style_warns_once_and_counts_batchnorm_once():
    x, y = _data()
    model = _mlp(batch_norm=True)
    expected = _reference(model, x, y, steps=3)
    opt = _sam(model, model=model)
    with pytest.warns(UserWarning, match="backward pass before it was wasted") as record:
        _community_style(model, opt, x, y)
    assert record[0].filename == __file__  # points at the caller's opt.step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            _community_style(model, opt, x, y)
    torch.testing.assert_close(_flat(model.parameters()), expected, rtol=1e-12, atol=1e-13)
    # the caller's forward pass counted; neither of step's passes did
    assert model[1].num_batches_tracked.item() == 3


def test_stale_gradients_of_the_last_step_are_not_reused():
    # skorch and sksam's own loop never clear after the step: the next
    # step must not read the descent gradient of the last one.
    x, y = _data()
    model = _mlp()
    opt = _sam(model)
    _sksam_style(model, opt, x, y)
    assert all(p.grad is not None for p in model.parameters())
    _sksam_style(model, opt, x, y)
    torch.testing.assert_close(
        _flat(model.parameters()), _reference(_mlp(), x, y, 2), rtol=1e-12, atol=1e-13
    )


# -- ascent option on one process --------------------------------------------


def test_local_ascent_in_one_process_is_the_global_one():
    x, y = _data()
    runs = []
    for ascent in ("global", "local"):
        model = _mlp()
        opt = _sam(model, model=model, ascent=ascent)
        for _ in range(2):
            _sksam_style(model, opt, x, y)
        runs.append(_flat(model.parameters()))
    assert torch.equal(*runs)


def test_local_ascent_across_processes_needs_the_ddp_module(monkeypatch):
    import sksam.optim

    monkeypatch.setattr(sksam.optim, "world_size", lambda: 2)
    model = _mlp()
    opt = _sam(model, model=model, ascent="local")
    x, y = _data()
    with pytest.raises(ValueError, match="ascent='local' needs model= the DistributedDataParallel"):
        _sksam_style(model, opt, x, y)


def test_bad_ascent_is_named():
    with pytest.raises(ValueError, match="ascent must be 'global' or 'local', got 'sum'"):
        _sam(_mlp(), ascent="sum")


# -- m-sharpness on one device -------------------------------------------------


def _chunk_closure(model, x, y, n_chunks):
    xs, ys = x.chunk(n_chunks), y.chunk(n_chunks)

    def closure(i):
        loss = _loss(model, xs[i], ys[i])
        loss.backward()
        return loss

    return closure


def test_step_chunks_gives_each_chunk_its_own_ascent():
    x, y = _data()
    model = _mlp()
    expected = _reference(model, x, y, steps=3, chunks=4)
    opt = _sam(model)
    for _ in range(3):
        loss = opt.step_chunks(_chunk_closure(model, x, y, 4), 4)
    torch.testing.assert_close(_flat(model.parameters()), expected, rtol=1e-12, atol=1e-13)
    # the loss is the mean of the chunks' losses at the unperturbed weights
    with torch.no_grad():
        before = copy.deepcopy(model)
    opt2 = SAM(before.parameters(), torch.optim.SGD, rho=RHO, lr=0.0)
    loss = opt2.step_chunks(_chunk_closure(before, x, y, 4), 4)
    with torch.no_grad():
        chunk_losses = [_loss(before, xc, yc) for xc, yc in zip(x.chunk(4), y.chunk(4))]
    torch.testing.assert_close(loss, sum(chunk_losses) / 4, rtol=1e-14, atol=0)


def test_step_chunks_with_one_chunk_is_step():
    x, y = _data()
    runs = []
    for chunked in (False, True):
        model = _mlp()
        opt = _sam(model)
        for _ in range(2):
            if chunked:
                opt.step_chunks(_chunk_closure(model, x, y, 1), 1)
            else:
                _sksam_style(model, opt, x, y)
        runs.append(_flat(model.parameters()))
    assert torch.equal(*runs)


def test_step_chunks_at_rho_zero_is_the_full_batch_base_step():
    x, y = _data()
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, lr=LR)
    w = _flat(model.parameters())
    g = _flat(torch.autograd.grad(_loss(model, x, y), list(model.parameters())))
    opt.step_chunks(_chunk_closure(model, x, y, 4), 4)
    torch.testing.assert_close(_flat(model.parameters()), w - LR * g, rtol=1e-12, atol=1e-14)


def test_step_chunks_batchnorm_and_dropout():
    x, y = _data()
    model = _mlp(batch_norm=True, dropout=0.5)
    masks = []
    model[3].register_forward_hook(lambda m, inp, out: masks.append(out.detach() == 0))
    opt = _sam(model, model=model)
    opt.step_chunks(_chunk_closure(model, x, y, 4), 4)
    # BN: one update per chunk (first passes only); dropout: replayed per chunk
    assert model[1].num_batches_tracked.item() == 4
    assert len(masks) == 8
    for first, second in zip(masks[::2], masks[1::2]):
        assert torch.equal(first, second)
    assert not torch.equal(masks[0], masks[2])


@pytest.mark.parametrize("n_chunks", [0, -1, 2.0, True])
def test_step_chunks_needs_a_positive_integer(n_chunks):
    model = _mlp()
    opt = _sam(model)
    with pytest.raises(ValueError, match="n_chunks must be an integer >= 1"):
        opt.step_chunks(lambda i: None, n_chunks)


# -- float16 loss scaling --------------------------------------------------------


def _scaled_closure(model, x, y, scaler, autocast=False, inf_in_pass=None):
    calls = []

    def closure():
        calls.append(1)
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        if inf_in_pass == len(calls):
            with torch.no_grad():
                next(model.parameters()).grad[0, 0] = float("inf")
        return loss

    return closure


def _float32_run(steps, scaler=None, autocast=False):
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    opt = _sam(model)
    for _ in range(steps):
        if scaler is None:
            _sksam_style(model, opt, x, y)
        else:
            opt.step(_scaled_closure(model, x, y, scaler, autocast), grad_scaler=scaler)
            scaler.update()
    return model, opt


def test_grad_scaler_without_autocast_is_the_unscaled_step_bit_for_bit():
    # Scaling by a power of two and unscaling is exact in float32: the
    # scaler must not change a single bit of either pass.
    plain, _ = _float32_run(3)
    scaled, _ = _float32_run(3, torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert torch.equal(_flat(plain.parameters()), _flat(scaled.parameters()))


def test_float16_autocast_with_grad_scaler_follows_float32():
    before = _flat(_mlp(dtype=torch.float32).parameters())
    exact, _ = _float32_run(1)
    mixed, _ = _float32_run(1, torch.amp.GradScaler("cpu"), autocast=True)
    step_exact = _flat(exact.parameters()) - before
    step_mixed = _flat(mixed.parameters()) - before
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert (step_mixed - step_exact).norm() < 0.01 * step_exact.norm()
    assert not torch.equal(step_mixed, step_exact)  # float16 did run


@pytest.mark.parametrize("inf_in_pass", [1, 2])
def test_overflow_in_either_pass_skips_the_step_and_lowers_the_scale_once(inf_in_pass):
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    w0 = _flat(model.parameters())
    opt = _sam(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, backoff_factor=0.5)
    opt.step(_scaled_closure(model, x, y, scaler, inf_in_pass=inf_in_pass), grad_scaler=scaler)
    scaler.update()
    assert torch.equal(_flat(model.parameters()), w0)  # weights exactly as before
    assert not opt.state  # the base optimizer never stepped (no momentum buffer)
    assert scaler.get_scale() == 512.0
    # the next, finite step goes through, at the lowered scale
    opt.step(_scaled_closure(model, x, y, scaler), grad_scaler=scaler)
    scaler.update()
    assert not torch.equal(_flat(model.parameters()), w0)
    assert scaler.get_scale() == 512.0


def test_grad_scaler_step_with_a_closure_routes_to_sam():
    # The AMP idiom scaler.step(opt, closure) reaches SAM.step(grad_scaler=...)
    # (torch checks that the scaler has scaled something first, hence the
    # first step through opt.step).
    expected, _ = _float32_run(3, torch.amp.GradScaler("cpu"))
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    opt = _sam(model)
    scaler = torch.amp.GradScaler("cpu")
    opt.step(_scaled_closure(model, x, y, scaler), grad_scaler=scaler)
    scaler.update()
    for _ in range(2):
        with pytest.warns(FutureWarning, match="GradScaler is going to stop passing itself"):
            scaler.step(opt, _scaled_closure(model, x, y, scaler))
        scaler.update()
    assert torch.equal(_flat(model.parameters()), _flat(expected.parameters()))


def test_grad_scaler_at_rho_zero_is_the_usual_amp_loop():
    x, y = _data(dtype=torch.float32)
    runs = []
    for make in (
        lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM),
        lambda m: SAM(m.parameters(), torch.optim.SGD, rho=0.0, lr=LR, momentum=MOMENTUM),
    ):
        model = _mlp(dtype=torch.float32)
        opt = make(model)
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            with warnings.catch_warnings():  # torch's notice about its protocol
                warnings.filterwarnings("ignore", "GradScaler is going to stop", FutureWarning)
                scaler.step(opt)
            scaler.update()
        runs.append(_flat(model.parameters()))
    assert torch.equal(*runs)


def test_grad_scaler_needs_update_between_steps():
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    opt = _sam(model)
    scaler = torch.amp.GradScaler("cpu")
    opt.step(_scaled_closure(model, x, y, scaler), grad_scaler=scaler)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step"):
        opt.step(_scaled_closure(model, x, y, scaler), grad_scaler=scaler)


def test_step_chunks_with_grad_scaler_skips_on_overflow():
    x, y = _data(dtype=torch.float32)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        model = _mlp(dtype=torch.float32)
        opt = _sam(model)
        xs, ys = x.chunk(4), y.chunk(4)

        def closure(i, model=model, scaler=scaler):
            loss = _loss(model, xs[i], ys[i])
            (loss if scaler is None else scaler.scale(loss)).backward()
            return loss

        opt.step_chunks(closure, 4, grad_scaler=scaler)
        if scaler is not None:
            scaler.update()
        results.append(_flat(model.parameters()))
    assert torch.equal(*results)  # exact scaling, as for step
    # an overflow in one chunk's first pass skips the whole step
    model = _mlp(dtype=torch.float32)
    w0 = _flat(model.parameters())
    opt = _sam(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

    def overflowing(i):
        loss = _loss(model, x.chunk(4)[i], y.chunk(4)[i])
        scaler.scale(loss).backward()
        if i == 2:
            with torch.no_grad():
                model[0].bias.grad[0] = float("nan")
        return loss

    opt.step_chunks(overflowing, 4, grad_scaler=scaler)
    scaler.update()
    assert torch.equal(_flat(model.parameters()), w0)
    assert scaler.get_scale() == 2.0**9


@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__.strip("_"))
def test_every_calling_style_matches_pytorch_optimizers_sam(style):
    # kozistr/pytorch_optimizer's SAM, called as its documentation says:
    # backward first, then step(closure), which perturbs along that gradient.
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    x, y = _data()
    reference = _mlp()
    ref_opt = pytorch_optimizer.SAM(
        reference.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM
    )

    def ref_closure():
        ref_opt.zero_grad()
        loss = _loss(reference, x, y)
        loss.backward()
        return loss

    model = _mlp()
    opt = _sam(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(5):
            ref_closure()
            ref_opt.step(ref_closure)
            style(model, opt, x, y)
    # it takes the gradient norm in float32 (get_global_gradient_norm), so
    # float64 weights agree to about 1e-8 (today's bug was 5e-2 off)
    torch.testing.assert_close(
        _flat(model.parameters()), _flat(reference.parameters()), rtol=1e-5, atol=1e-7
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float16_autocast_with_grad_scaler_follows_float32():
    x, y = (t.cuda() for t in _data(dtype=torch.float32))
    steps = []
    for autocast in (False, True):
        model = _mlp(dtype=torch.float32).cuda()
        before = _flat(model.parameters())
        opt = _sam(model, model=model)
        scaler = torch.amp.GradScaler("cuda", enabled=autocast)

        def closure(model=model, scaler=scaler, autocast=autocast):
            with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            return loss

        opt.step(closure, grad_scaler=scaler)
        scaler.update()
        steps.append(_flat(model.parameters()) - before)
    assert (steps[1] - steps[0]).norm() < 0.01 * steps[0].norm()


def test_descent_gradient_clipping_through_the_base_optimizers_pre_hook():
    # The documented place to clip: a step pre-hook of the base optimizer
    # sees the final descent gradient, unscaled, and the weights back at w.
    x, y = _data(dtype=torch.float32)
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**8)):
        model = _mlp(dtype=torch.float32)
        w0 = _flat(model.parameters())
        opt = _sam(model)
        seen = []

        def clip(optimizer, args, kwargs, model=model, seen=seen):
            seen.append(_flat(model.parameters()))
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.01)

        opt.base_optimizer.register_step_pre_hook(clip)
        if scaler is None:
            _sksam_style(model, opt, x, y)
        else:
            opt.step(_scaled_closure(model, x, y, scaler), grad_scaler=scaler)
        assert torch.equal(seen[0], w0)
        assert _flat(p.grad for p in model.parameters()).norm() <= 0.01 * (1 + 1e-6)
        runs.append(_flat(model.parameters()))
    assert torch.equal(*runs)
