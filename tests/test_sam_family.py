"""The SAM family (GSAM, WSAM, Friendly-SAM, SAM-ON) and the radius schedules.

Each rule against a hand-written reference (plain torch on flat vectors,
from the papers' equations), against pytorch_optimizer's class where its
definition agrees, and bit for bit against the base optimizer at rho=0.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

from sksam.optim import (
    GSAM,
    SAM,
    WSAM,
    BayesianSAM,
    EveryK,
    FriendlySAM,
    ProportionalRho,
    WarmupRho,
)

from _reference import data as _data
from _reference import flat as _flat
from _reference import flat_grad
from _reference import mlp as _mlp

LR, RHO, MOM, STEPS = 0.2, 0.3, 0.9, 6


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


# -- the papers' equations, on flat vectors ------------------------------------


def gsam_descent(g, g_s, alpha):
    """Zhuang et al. (2022): g_s minus alpha times the part of g orthogonal to g_s."""
    g_perp = g - (g @ g_s) / (g_s @ g_s) * g_s
    return g_s - alpha * g_perp


def wsam_descent(g, g_s, gamma):
    """Yue et al. (2023): the gradient of L + gamma / (1 - gamma) (L(w + e) - L(w))."""
    return g + gamma / (1 - gamma) * (g_s - g)


class FriendlyAscent:
    """Li et al. (2024): m_t = lmbda m_{t-1} + (1 - lmbda) g_t, d_t = g_t - sigma m_t."""

    def __init__(self, sigma, lmbda):
        self.sigma, self.lmbda, self.m = sigma, lmbda, 0.0

    def __call__(self, g):
        self.m = self.lmbda * self.m + (1 - self.lmbda) * g
        return g - self.sigma * self.m


def reference_path(model, loss_fn, steps, *, rho=RHO, ascent=None, descent=None, mask=None):
    """Flat weights after each SGD-with-momentum step of a SAM variant.

    ``ascent(g)`` gives the ascent direction (default ``g``), ``descent(g,
    g_s)`` the descent gradient (default ``g_s``); ``mask`` (a 0/1 flat
    vector) restricts the ascent to a subset of the weights (SAM-ON).
    """
    w, v, path = _flat(model.parameters()).clone(), None, []
    for _ in range(steps):
        g = flat_grad(model, loss_fn, w)
        d = g if ascent is None else ascent(g)
        if mask is not None:
            d = d * mask
        g_s = flat_grad(model, loss_fn, w + rho * d / d.norm())
        g_d = g_s if descent is None else descent(g, g_s)
        v = g_d if v is None else MOM * v + g_d
        w = w - LR * v
        path.append(w)
    return path


def _norm_mask(model):
    return torch.cat(
        [
            torch.full((p.numel(),), float(isinstance(m, nn.BatchNorm1d)), dtype=p.dtype)
            for m in model.modules()
            for p in m.parameters(recurse=False)
        ]
    )


CASES = {
    "gsam": (dict(rule=GSAM(0.4)), dict(descent=lambda g, s: gsam_descent(g, s, 0.4))),
    "gsam_alpha1": (dict(rule=GSAM(1.0)), dict(descent=lambda g, s: gsam_descent(g, s, 1.0))),
    "wsam": (dict(rule=WSAM(0.9)), dict(descent=lambda g, s: wsam_descent(g, s, 0.9))),
    "wsam_small": (dict(rule=WSAM(0.3)), dict(descent=lambda g, s: wsam_descent(g, s, 0.3))),
    "fsam": (dict(rule=FriendlySAM(1.0, 0.9)), dict(ascent=FriendlyAscent(1.0, 0.9))),
    "fsam_sigma": (dict(rule=FriendlySAM(0.5, 0.6)), dict(ascent=FriendlyAscent(0.5, 0.6))),
}


def _sgd_sam(model, **options):
    return SAM(
        model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOM, model=model, **options
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_rule_follows_the_paper_over_several_steps(name):
    options, reference = CASES[name]
    x, y = _data()
    model = _mlp()
    expected = reference_path(model, _loss_fn(x, y), STEPS, **reference)
    opt = _sgd_sam(model, **options)
    calls = []
    for w in expected:
        opt.step(_closure(model, opt, x, y, calls))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)
    assert len(calls) == 2 * STEPS


def test_sam_on_perturbs_the_normalization_layers_only():
    x, y = _data()
    model = _mlp(batch_norm=True)
    model.eval()  # batch statistics would make the flat-vector reference stateful
    expected = reference_path(model, _loss_fn(x, y), STEPS, mask=_norm_mask(model))
    opt = _sgd_sam(model, perturb="normalization")
    for w in expected:
        opt.step(_closure(model, opt, x, y))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)


def test_perturb_names_any_subset_and_refuses_an_empty_one():
    x, y = _data()
    model = _mlp()
    last = list(model.parameters())[-2:]  # the output layer
    mask = torch.cat(
        [torch.full((p.numel(),), float(i >= 2)) for i, p in enumerate(model.parameters())]
    )
    expected = reference_path(model, _loss_fn(x, y), 3, mask=mask.double())
    opt = _sgd_sam(model, perturb=last)
    for w in expected:
        opt.step(_closure(model, opt, x, y))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="names no parameter"):
        _sgd_sam(model, perturb=[torch.zeros(2)])
    with pytest.raises(ValueError, match="needs model="):
        SAM(model.parameters(), torch.optim.SGD, lr=0.1, perturb="normalization")
    with pytest.raises(ValueError, match="found no normalization layer"):
        _sgd_sam(model, perturb="normalization")
    with pytest.raises(ValueError, match="perturb must be"):
        _sgd_sam(model, perturb="norms")


# -- rho = 0 is the base optimizer, bit for bit ----------------------------------


FAMILY = {
    "gsam": dict(rule=GSAM(0.4)),
    "wsam": dict(rule=WSAM(0.9)),
    "fsam": dict(rule=FriendlySAM()),
    "sam_on": dict(perturb="normalization"),
    "proportional": dict(rule=GSAM(), rho_schedule=ProportionalRho(rho_min=0.0)),
    "warmup": dict(rho_schedule=WarmupRho(3)),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_rho_zero_is_the_base_optimizer_bit_for_bit(name):
    x, y = _data()
    models = [_mlp(batch_norm=True), _mlp(batch_norm=True)]
    sgd = torch.optim.SGD(models[0].parameters(), lr=LR, momentum=MOM, weight_decay=1e-3)
    sam = SAM(
        models[1].parameters(),
        torch.optim.SGD,
        rho=0.0,
        lr=LR,
        momentum=MOM,
        weight_decay=1e-3,
        model=models[1],
        **FAMILY[name],
    )
    calls = []
    for _ in range(4):
        sgd.step(_closure(models[0], sgd, x, y))
        sam.step(_closure(models[1], sam, x, y, calls))
    assert torch.equal(_flat(models[0].parameters()), _flat(models[1].parameters()))
    assert len(calls) == 4  # one pass per step


# -- closures, accumulation, m-sharpness, float16 scaling --------------------------


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam"])
def test_gradient_accumulation_in_the_closure_is_the_whole_batch_step(name):
    x, y = _data()
    models = [_mlp(), _mlp()]
    opts = [_sgd_sam(m, **copy.deepcopy(FAMILY[name])) for m in models]
    for _ in range(3):
        opts[0].step(_closure(models[0], opts[0], x, y))

        def accumulating(model=models[1], opt=opts[1]):
            opt.zero_grad()
            total = 0.0
            for xb, yb in zip(x.chunk(4), y.chunk(4)):
                loss = nn.functional.mse_loss(model(xb), yb) / 4
                loss.backward()
                total += loss.detach()
            return total

        opts[1].step(accumulating)
    torch.testing.assert_close(_flat(models[0].parameters()), _flat(models[1].parameters()))


@pytest.mark.parametrize("name", ["gsam", "wsam"])
def test_step_chunks_mixes_each_chunks_own_gradients(name):
    # m-sharpness: every chunk its own ascent and its own g, g_s; the mean of the mixes
    x, y = _data()
    model = _mlp()
    options, reference = CASES[name]
    descent = reference["descent"]
    loss_fns = [_loss_fn(xc, yc) for xc, yc in zip(x.chunk(2), y.chunk(2))]
    w, v = _flat(model.parameters()).clone(), None
    opt = _sgd_sam(model, **options)
    for _ in range(3):
        mixes = []
        for fn in loss_fns:
            g = flat_grad(model, fn, w)
            g_s = flat_grad(model, fn, w + RHO * g / g.norm())
            mixes.append(descent(g, g_s))
        g_d = sum(mixes) / 2
        v = g_d if v is None else MOM * v + g_d
        w = w - LR * v

        def closure(i):
            loss = nn.functional.mse_loss(model(x.chunk(2)[i]), y.chunk(2)[i])
            loss.backward()
            return loss

        opt.step_chunks(closure, 2)
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)


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


def _run32(options, steps, scaler=None, autocast=False):
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    opt = _sgd_sam(model, **copy.deepcopy(options))
    for _ in range(steps):
        if scaler is None:
            opt.step(_closure(model, opt, x, y))
        else:
            opt.step(_scaled_closure(model, x, y, scaler, autocast), grad_scaler=scaler)
            scaler.update()
    return model, opt


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam"])
def test_grad_scaler_is_the_unscaled_step_bit_for_bit(name):
    # g and g_s carry the same power-of-two scale: mixing them scaled is exact
    plain, _ = _run32(FAMILY[name], 3)
    scaled, _ = _run32(FAMILY[name], 3, torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert torch.equal(_flat(plain.parameters()), _flat(scaled.parameters()))


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam"])
def test_float16_autocast_follows_float32(name):
    before = _flat(_mlp(dtype=torch.float32).parameters())
    exact, _ = _run32(FAMILY[name], 1)
    mixed, _ = _run32(FAMILY[name], 1, torch.amp.GradScaler("cpu"), autocast=True)
    step_exact = _flat(exact.parameters()) - before
    step_mixed = _flat(mixed.parameters()) - before
    assert (step_mixed - step_exact).norm() < 0.02 * step_exact.norm()
    assert not torch.equal(step_mixed, step_exact)  # float16 did run


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam"])
@pytest.mark.parametrize("inf_in_pass", [1, 2])
def test_an_overflow_skips_the_step_and_teaches_the_rule_nothing(name, inf_in_pass):
    x, y = _data(dtype=torch.float32)
    model = _mlp(dtype=torch.float32)
    w0 = _flat(model.parameters())
    opt = _sgd_sam(model, **copy.deepcopy(FAMILY[name]))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, backoff_factor=0.5)
    opt.step(_scaled_closure(model, x, y, scaler, inf_in_pass=inf_in_pass), grad_scaler=scaler)
    scaler.update()
    assert torch.equal(_flat(model.parameters()), w0)
    assert scaler.get_scale() == 512.0
    if name == "fsam":
        assert all(m is None or bool(m.isfinite().all()) for m in opt.rule.m)
        if inf_in_pass == 1:
            assert all(m is None or not m.any() for m in opt.rule.m)


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam"])
def test_the_two_call_protocol_takes_the_same_step(name):
    x, y = _data()
    models = [_mlp(), _mlp()]
    opts = [_sgd_sam(m, **copy.deepcopy(FAMILY[name])) for m in models]
    loss_fn = _loss_fn(x, y)
    for _ in range(3):
        opts[0].step(_closure(models[0], opts[0], x, y))
        opts[1].zero_grad()
        loss_fn(models[1]).backward()
        opts[1].first_step(zero_grad=True)
        loss_fn(models[1]).backward()
        opts[1].second_step(zero_grad=True)
    torch.testing.assert_close(_flat(models[0].parameters()), _flat(models[1].parameters()))


def test_a_rule_composes_with_a_schedule():
    # EveryK(2): the SAM steps are GSAM's, the others plain gradient steps
    x, y = _data()
    model = _mlp()
    loss_fn = _loss_fn(x, y)
    w, v = _flat(model.parameters()).clone(), None
    opt = _sgd_sam(model, rule=GSAM(0.5), schedule=EveryK(2))
    for t in range(4):
        g = flat_grad(model, loss_fn, w)
        if t % 2 == 0:
            g_d = gsam_descent(g, flat_grad(model, loss_fn, w + RHO * g / g.norm()), 0.5)
        else:
            g_d = g
        v = g_d if v is None else MOM * v + g_d
        w = w - LR * v
        opt.step(_closure(model, opt, x, y))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)


def test_the_rule_state_travels_with_state_dict_and_pickle():
    x, y = _data()
    model = _mlp()
    opt = _sgd_sam(model, rule=FriendlySAM(), rho_schedule=WarmupRho(4))
    for _ in range(2):
        opt.step(_closure(model, opt, x, y))
    clone = pickle.loads(pickle.dumps((model, opt)))
    state = opt.state_dict()
    assert state["rho_schedule"] == {"t": 2}
    fresh = _sgd_sam(_mlp(), rule=FriendlySAM(), rho_schedule=WarmupRho(4))
    fresh.load_state_dict(state)
    assert fresh.rho_schedule.t == 2
    for a, b in zip(fresh.rule.m, opt.rule.m):
        assert torch.equal(a, b)
    m2, opt2 = clone
    opt.step(_closure(model, opt, x, y))
    opt2.step(_closure(m2, opt2, x, y))
    assert torch.equal(_flat(model.parameters()), _flat(m2.parameters()))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GSAM(1.5), "alpha must be a number in"),
        (lambda: WSAM(1.0), "gamma must be a number in"),
        (lambda: FriendlySAM(lmbda=1.0), "lmbda must be a number in"),
        (lambda: FriendlySAM(sigma=-1.0), "sigma must be a number in"),
        (lambda: WarmupRho(0), "steps must be an integer"),
        (lambda: ProportionalRho(rho_min=-0.1), "rho_min must be a number in"),
        (lambda: ProportionalRho(lr_max=0.1, lr_min=0.2), "lr_max must be a number in"),
    ],
)
def test_invalid_options_name_the_parameter(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rule_and_rho_schedule_types_are_checked():
    model = _mlp()
    with pytest.raises(TypeError, match="rule must be"):
        _sgd_sam(model, rule="gsam")
    with pytest.raises(TypeError, match="rho_schedule must be"):
        _sgd_sam(model, rho_schedule=0.1)


# -- the radius of each step -----------------------------------------------------


def _warmup_then_decay(opt, warmup=3, total=8):
    def factor(t):
        return t / warmup if t < warmup else (total - t) / (total - warmup)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def test_proportional_rho_follows_the_learning_rate_and_never_goes_negative():
    # A warm-up from lr=0: the radius stays in [rho_min, rho] (big_vision #80)
    x, y = _data()
    model = _mlp()
    rho_min, lr_min = 0.05, 0.01
    opt = _sgd_sam(model, rho_schedule=ProportionalRho(rho_min=rho_min, lr_min=lr_min))
    scheduler = _warmup_then_decay(opt)
    radii, lrs, calls = [], [], []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(_closure(model, opt, x, y, calls))
        radii.append(opt.last_rho[0])
        scheduler.step()
    assert lrs[0] == 0.0
    for lr, r in zip(lrs, radii):
        expected = rho_min + (RHO - rho_min) * (lr - lr_min) / (LR - lr_min)
        assert r == pytest.approx(min(max(expected, rho_min), RHO))
    assert min(radii) == rho_min and max(radii) == pytest.approx(RHO)


def test_proportional_rho_at_lr_zero_with_rho_min_zero_is_the_base_step():
    x, y = _data()
    models = [_mlp(), _mlp()]
    sam = _sgd_sam(models[0], rule=GSAM(), rho_schedule=ProportionalRho(lr_min=0.0))
    sgd = torch.optim.SGD(models[1].parameters(), lr=LR, momentum=MOM)
    for opt in (sam, sgd):
        opt.param_groups[0]["lr"] = 0.0
        opt.param_groups[0]["initial_lr"] = LR
    calls = []
    sam.step(_closure(models[0], sam, x, y, calls))
    sgd.step(_closure(models[1], sgd, x, y))
    assert sam.last_rho == [0.0] and len(calls) == 1
    assert torch.equal(_flat(models[0].parameters()), _flat(models[1].parameters()))


def test_pytorch_optimizers_proportion_scheduler_goes_negative_in_the_same_warm_up():
    # The documented difference: its radius is not clipped (big_vision #80)
    _pytorch_optimizer_4_1()
    from pytorch_optimizer.lr_scheduler.proportion import ProportionScheduler

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = _warmup_then_decay(opt)
    # lr = 0 in the first warm-up step: below min_value, and below 0 with min_value=0
    theirs = ProportionScheduler(scheduler, max_lr=LR, min_lr=0.01, max_value=RHO, min_value=0.05)
    assert theirs.get_lr() < 0.05
    theirs = ProportionScheduler(scheduler, max_lr=LR, min_lr=0.01, max_value=RHO, min_value=0.0)
    assert theirs.get_lr() < 0
    ours = ProportionalRho(rho_min=0.0, lr_max=LR, lr_min=0.01)
    assert ours.clipped(RHO, 0.0, 0) == 0.0


def test_warmup_rho_grows_linearly_from_zero():
    x, y = _data()
    model = _mlp()
    opt = _sgd_sam(model, rho_schedule=WarmupRho(4))
    calls, radii = [], []
    for _ in range(6):
        opt.step(_closure(model, opt, x, y, calls))
        radii.append(opt.last_rho[0])
    assert radii == pytest.approx([0.0, RHO / 4, RHO / 2, 3 * RHO / 4, RHO, RHO])
    assert len(calls) == 1 + 2 * 5  # the first step is the base step


def test_the_radius_schedule_reaches_the_ascent():
    # WarmupRho(2) against a reference whose rho follows t / 2
    x, y = _data()
    model = _mlp()
    loss_fn = _loss_fn(x, y)
    opt = _sgd_sam(model, rule=GSAM(0.4), rho_schedule=WarmupRho(2))
    w, v = _flat(model.parameters()).clone(), None
    for t in range(4):
        rho_t = RHO * min(1.0, t / 2)
        g = flat_grad(model, loss_fn, w)
        g_d = (
            g
            if rho_t == 0
            else gsam_descent(g, flat_grad(model, loss_fn, w + rho_t * g / g.norm()), 0.4)
        )
        v = g_d if v is None else MOM * v + g_d
        w = w - LR * v
        opt.step(_closure(model, opt, x, y))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)


def _pytorch_optimizer_4_1():
    """Skip unless pytorch_optimizer >= 4.1, the version the comparisons were read from."""
    pytest.importorskip("pytorch_optimizer")
    from importlib.metadata import version

    major_minor = tuple(int(part) for part in version("pytorch_optimizer").split(".")[:2])
    if major_minor < (4, 1):
        pytest.skip(f"pytorch_optimizer {version('pytorch_optimizer')} < 4.1")


# -- against pytorch_optimizer's classes on the same model, data and seeds --------


@pytest.fixture
def pyopt(monkeypatch):
    """pytorch_optimizer's ``optimizer.sam``, its global norm taken in float64.

    It accumulates the squared gradient norm in float32 whatever the
    parameters' dtype (7 digits: the paths then differ by ~1e-6 after six
    steps, plain SAM included); in float64 the comparison is to rounding.
    """
    # the version these agreements and differences were read from
    _pytorch_optimizer_4_1()
    sam = pytest.importorskip("pytorch_optimizer.optimizer.sam")

    def float64_norm(param_groups, device=None, *, weight_adaptive=False):
        grads = [p.grad for group in param_groups for p in group["params"] if p.grad is not None]
        return torch.stack([torch.sum(g * g) for g in grads]).sum().reshape(1)

    monkeypatch.setattr(sam, "get_global_gradient_norm", float64_norm)
    return sam


def _pair_of_paths(make_theirs, step_theirs, options, steps=STEPS, momentum=MOM):
    """Flat weights after each step: ours (SAM with ``options``) and theirs."""
    x, y = _data()
    ours_model, their_model = _mlp(), _mlp()
    ours = SAM(
        ours_model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=momentum, **options
    )
    theirs = make_theirs(their_model)
    paths = ([], [])
    for _ in range(steps):
        ours.step(_closure(ours_model, ours, x, y))
        step_theirs(theirs, their_model, x, y)
        paths[0].append(_flat(ours_model.parameters()))
        paths[1].append(_flat(their_model.parameters()))
    return paths


def _max_diff(paths):
    return max(float((a - b).abs().max()) for a, b in zip(*paths))


def test_gsam_agrees_with_pytorch_optimizer_with_its_proportional_rho(pyopt):
    from pytorch_optimizer.lr_scheduler.proportion import ProportionScheduler

    def make(model):
        base = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOM)
        scheduler = torch.optim.lr_scheduler.LinearLR(base, 1.0, 0.25, total_iters=STEPS)
        rho = ProportionScheduler(scheduler, max_lr=LR, min_lr=0.0, max_value=RHO, min_value=0.1)
        opt = pyopt.GSAM(model.parameters(), base, model, rho, alpha=0.4)
        opt.lr_scheduler = scheduler
        return opt

    def step(opt, model, x, y):
        def closure():
            opt.base_optimizer.zero_grad()
            with torch.enable_grad():
                out = model(x)
                loss = nn.functional.mse_loss(out, y)
            loss.backward()
            return out, loss.detach()

        opt.step(closure)
        opt.lr_scheduler.step()
        opt.update_rho_t()

    x, y = _data()
    ours_model, their_model = _mlp(), _mlp()
    ours = _sgd_sam(ours_model, rule=GSAM(0.4), rho_schedule=ProportionalRho(rho_min=0.1))
    ours_lr = torch.optim.lr_scheduler.LinearLR(ours, 1.0, 0.25, total_iters=STEPS)
    theirs = make(their_model)
    for _ in range(STEPS):
        ours.step(_closure(ours_model, ours, x, y))
        ours_lr.step()
        step(theirs, their_model, x, y)
        torch.testing.assert_close(
            _flat(ours_model.parameters()), _flat(their_model.parameters()), rtol=0, atol=1e-11
        )


def _wsam_step(opt, model, x, y):
    opt.step(_closure(model, opt, x, y))


@pytest.mark.parametrize("decouple, momentum", [(False, MOM), (True, 0.0)])
def test_wsam_agrees_with_pytorch_optimizer_where_the_definitions_agree(pyopt, decouple, momentum):
    # coupled: the gradient of the paper's objective; decoupled equals it for plain SGD

    def make(model):
        return pyopt.WSAM(
            model,
            model.parameters(),
            torch.optim.SGD,
            rho=RHO,
            gamma=0.9,
            decouple=decouple,
            lr=LR,
            momentum=momentum,
        )

    paths = _pair_of_paths(make, _wsam_step, {"rule": WSAM(0.9)}, momentum=momentum)
    assert _max_diff(paths) < 1e-10  # a = 9 amplifies the rounding of g_s - g


def test_wsam_decoupled_with_momentum_is_a_different_update(pyopt):
    # Its default, decouple=True, steps the base optimizer along g and adds
    # lr * a * (g_s - g) outside the momentum: not the gradient of the objective.

    def make(model):
        return pyopt.WSAM(
            model, model.parameters(), torch.optim.SGD, rho=RHO, gamma=0.9, lr=LR, momentum=MOM
        )

    paths = _pair_of_paths(make, _wsam_step, {"rule": WSAM(0.9)})
    assert _max_diff(([paths[0][0]], [paths[1][0]])) < 1e-12  # same first step
    assert _max_diff(paths) > 0.1


class OfficialFriendlyAscent:
    """F-SAM as the authors' code and pytorch_optimizer compute it.

    ``d_t = g_t - sigma * m_{t-1}`` with ``m_1 = g_1`` (the paper: ``m_t``,
    from ``m_0 = 0``); equal in direction to the paper's at the first step.
    """

    def __init__(self, sigma, lmbda):
        self.sigma, self.lmbda, self.m = sigma, lmbda, None

    def __call__(self, g):
        if self.m is None:
            self.m = g.clone()
            return g
        d = g - self.sigma * self.m
        self.m = self.lmbda * self.m + (1 - self.lmbda) * g
        return d


def test_friendly_sam_pytorch_optimizer_follows_the_official_code_not_the_paper(pyopt):

    def make(model):
        return pyopt.FriendlySAM(
            model.parameters(), torch.optim.SGD, rho=RHO, sigma=1.0, lmbda=0.9, lr=LR, momentum=MOM
        )

    def step(opt, model, x, y):
        closure = _closure(model, opt, x, y)
        closure()  # it perturbs along the gradients present when step() is called
        opt.step(closure)

    paths = _pair_of_paths(make, step, {"rule": FriendlySAM(1.0, 0.9)})
    assert _max_diff(([paths[0][0]], [paths[1][0]])) < 1e-12  # the first step agrees
    assert _max_diff(paths) > 0.01  # then m differs: m_1 = g_1 against (1 - lmbda) g_1
    x, y = _data()
    model = _mlp()
    official = reference_path(model, _loss_fn(x, y), STEPS, ascent=OfficialFriendlyAscent(1.0, 0.9))
    assert _max_diff((official, paths[1])) < 1e-11


# -- bSAM ------------------------------------------------------------------------


def bsam_path(model, loss_fn, steps, *, rho, lr, n, betas, delta, gamma, seed):
    """Moellenhoff & Khan (2023), the algorithm of the paper, on flat vectors."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [p.shape for p in model.parameters()]
    w = _flat(model.parameters()).clone()
    s, g_m, path = torch.ones_like(w), torch.zeros_like(w), []
    for _ in range(steps):
        xi = torch.cat(
            [torch.randn(shape, generator=gen, dtype=w.dtype).reshape(-1) for shape in shapes]
        )
        g = flat_grad(model, loss_fn, w + xi / torch.sqrt(n * s))
        g_e = flat_grad(model, loss_fn, w + rho * g / s)
        g_m = betas[0] * g_m + (1 - betas[0]) * (g_e + delta * w)
        s = betas[1] * s + (1 - betas[1]) * (torch.sqrt(s) * g.abs() + delta + gamma)
        w = w - lr * g_m / s
        path.append(w)
    return path, s


BSAM_OPTIONS = dict(num_data=50, betas=(0.8, 0.9), prior_precision=0.01, damping=0.1, seed=3)


def _bsam(model, rho=0.05, **options):
    rule = BayesianSAM(**{**BSAM_OPTIONS, **options})
    return SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1, model=model, rule=rule)


def test_bsam_follows_the_paper_over_several_steps():
    x, y = _data()
    model = _mlp()
    options = dict(rho=0.05, lr=0.1, n=50, betas=(0.8, 0.9), delta=0.01, gamma=0.1, seed=3)
    expected, s = bsam_path(model, _loss_fn(x, y), STEPS, **options)
    opt = _bsam(model)
    calls = []
    for w in expected:
        opt.step(_closure(model, opt, x, y, calls))
        torch.testing.assert_close(_flat(model.parameters()), w, rtol=1e-10, atol=1e-12)
    assert len(calls) == 2 * STEPS
    std = _flat(opt.rule.posterior_std())
    torch.testing.assert_close(std, 1 / torch.sqrt(50 * s))


def test_bsam_removes_the_noise_and_the_perturbation_exactly():
    # with lr=0 the mean never moves: the sampled and perturbed weights are put back
    x, y = _data()
    model = _mlp()
    w0 = _flat(model.parameters())
    opt = _bsam(model, rho=0.5)
    opt.param_groups[0]["lr"] = 0.0
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    assert torch.equal(_flat(model.parameters()), w0)


def test_bsam_rho_zero_is_the_base_step_and_it_refuses_what_it_cannot_do():
    x, y = _data()
    models = [_mlp(), _mlp()]
    sam, sgd = _bsam(models[0], rho=0.0), torch.optim.SGD(models[1].parameters(), lr=0.1)
    for _ in range(3):
        sam.step(_closure(models[0], sam, x, y))
        sgd.step(_closure(models[1], sgd, x, y))
    assert torch.equal(_flat(models[0].parameters()), _flat(models[1].parameters()))
    opt = _bsam(_mlp())
    with pytest.raises(ValueError, match="does not support float16 loss scaling"):
        opt.step(lambda: None, grad_scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="only step\\(closure\\) can do"):
        opt.first_step()
    with pytest.raises(ValueError, match="num_data must be an integer"):
        BayesianSAM(num_data=0)


def test_bsam_state_travels_with_state_dict():
    x, y = _data()
    models = [_mlp(), _mlp()]
    opt = _bsam(models[0])
    for _ in range(2):
        opt.step(_closure(models[0], opt, x, y))
    other = _bsam(models[1])
    other.load_state_dict(opt.state_dict())
    with torch.no_grad():
        for a, b in zip(models[1].parameters(), models[0].parameters()):
            a.copy_(b)
    opt.step(_closure(models[0], opt, x, y))
    other.step(_closure(models[1], other, x, y))
    assert torch.equal(_flat(models[0].parameters()), _flat(models[1].parameters()))
