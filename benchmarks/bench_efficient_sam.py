"""SAM at nearly SGD's cost? The cheap variants side by side.

Two questions, one run, one torch thread:

(a) **Cost.** Wall time per step of each variant against plain SGD on a
    problem where compute, not Python overhead, dominates: an MLP
    64-1024-1024-10 on batches of 256 (random data). Rounds are
    interleaved (every variant once per round, in turn) and the median
    over rounds of each variant's time per step is divided by SGD's median.
    The forward passes per step are counted with a forward hook.

(b) **Gain.** The digits data (scikit-learn's, 8x8 images) with 40% of the
    training labels replaced by a random class, an MLP 64-H-H-10 trained
    by SGD with momentum 0.9 for a fixed number of epochs. ``rho`` is tuned
    per variant on *separate* seeds (a small grid, the mean test accuracy
    over the tuning seeds), then every variant is run on the evaluation
    seeds, paired with SGD and SAM on the same seed (same split, noise,
    initialisation and batches). The share of SAM's gain a variant keeps is
    ``(acc_variant - acc_sgd) / (acc_sam - acc_sgd)`` of the seed means;
    the spread is the standard deviation of the per-seed paired gains
    ``acc_variant - acc_sgd``.

The variants: SAM; SAM every k steps (``EveryK``); LookSAM; randomized
switching (``RST``); AE-SAM; Momentum-SAM; and the rest of the family at
SAM's cost: GSAM (``alpha=0.4``), WSAM (``gamma=0.9``, whose rho grid is
the grid times ``--wsam-factor``: its step is about SAM's at ``a * rho``
with ``a = gamma / (1 - gamma) = 9``), Friendly-SAM (``sigma=1``,
``lmbda=0.9``), SAM-ON (only the normalization layers perturbed; it
needs ``--batch-norm``, which puts a BatchNorm after each hidden layer of
every variant's network) and bSAM (Bayesian SAM: its own Adam-like step
through momentum-free SGD, ``num_data`` the training rows, an unnormalized
perturbation ``rho g / s`` whose grid is the grid times ``--bsam-factor``).
``--variants`` runs a subset (SGD and SAM are always run: they are the pair
every gain is measured against). ``--foreach`` also times the
perturbation and restore of SAM's pass through ``torch._foreach_*`` against
a per-tensor loop, on the parameters of the MLP of (a).

Timings depend on the machine and on what else runs on it; the numbers a
run prints are for that machine only (the notes that quote them say on
which machine, and whether it was busy).

Usage (from the repository root; ``PYTHONPATH=.`` when sksam is not
installed)::

    python benchmarks/bench_efficient_sam.py                 # both parts
    python benchmarks/bench_efficient_sam.py --part cost --foreach
    python benchmarks/bench_efficient_sam.py --quick         # smoke run
"""

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sksam._update_rules import add_perturbation_, restore_
from sksam.optim import (
    AESAM,
    GSAM,
    RST,
    SAM,
    WSAM,
    BayesianSAM,
    EveryK,
    FriendlySAM,
    LookSAM,
    MomentumSAM,
)


def _sam(**options):
    """A builder ``(model, lr, rho, momentum) -> SAM`` around SGD with ``options``."""

    def make(model, lr, rho, mom):
        return SAM(
            model.parameters(),
            torch.optim.SGD,
            rho=rho,
            lr=lr,
            momentum=mom,
            model=model,
            **options,
        )

    return make


#: name -> builder of the optimizer given (model, lr, rho, momentum)
VARIANTS = {
    "SGD": lambda m, lr, rho, mom: _sam()(m, lr, 0.0, mom),
    "SAM": _sam(),
    "every-5": _sam(schedule=EveryK(5)),
    "LookSAM-5": _sam(schedule=LookSAM(5, alpha=0.7)),
    "RST-0.5": _sam(schedule=RST(0.5, seed=0)),
    "AE-SAM": _sam(schedule=AESAM(c=0.0, delta=0.9)),
    "Momentum-SAM": lambda m, lr, rho, mom: MomentumSAM(
        m.parameters(), lr=lr, momentum=mom, rho=rho
    ),
    "GSAM": _sam(rule=GSAM(alpha=0.4)),
    "WSAM": _sam(rule=WSAM(gamma=0.9)),
    "F-SAM": _sam(rule=FriendlySAM(sigma=1.0, lmbda=0.9)),
    "SAM-ON": _sam(perturb="normalization"),
    # bSAM carries its own momentum and precision: the base SGD takes none
    "bSAM": lambda m, lr, rho, mom: _sam(rule=BayesianSAM(num_data=DIGITS_TRAIN_ROWS))(
        m, lr, rho, 0.0
    ),
}

#: Variants that need normalization layers in the network.
NEEDS_NORM = {"SAM-ON"}


def mlp(width, seed, d_in=64, d_out=10, batch_norm=False):
    torch.manual_seed(seed)
    layers = []
    for n_in in (d_in, width):
        layers.append(nn.Linear(n_in, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


def chosen_variants(args):
    """The variants this run measures, SGD and SAM first."""
    names = args.variants or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    names = ["SGD", "SAM"] + [n for n in names if n not in ("SGD", "SAM")]
    if not args.batch_norm:
        skipped = [n for n in names if n in NEEDS_NORM]
        if skipped:
            print(f"skipping {skipped}: they need --batch-norm")
        names = [n for n in names if n not in NEEDS_NORM]
    return names


def closure_for(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


# -- (a) cost ------------------------------------------------------------------


def cost(args):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 64, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    runs = {}
    for name in chosen_variants(args):
        model = mlp(args.width, 0, batch_norm=args.batch_norm)
        forwards = []
        model.register_forward_hook(lambda *a, f=forwards: f.append(1))
        opt = VARIANTS[name](model, 0.01, 0.05, 0.9)
        runs[name] = (model, opt, forwards, [])
        for _ in range(2):  # warm-up
            opt.step(closure_for(model, opt, x, y))
    for _ in range(args.rounds):
        for model, opt, _, times in runs.values():
            closure = closure_for(model, opt, x, y)
            start = time.perf_counter()
            for _ in range(args.steps):
                opt.step(closure)
            times.append((time.perf_counter() - start) / args.steps)
    sgd = statistics.median(runs["SGD"][3])
    print(
        f"\n(a) time per step, MLP 64-{args.width}-{args.width}-10"
        f"{' with BatchNorm' if args.batch_norm else ''}, batch {args.batch}, "
        f"{args.rounds} interleaved rounds of {args.steps} steps, 1 thread"
    )
    print(f"{'variant':<14}{'ms/step':>9}{'x SGD':>8}{'passes/step':>13}")
    result = {}
    for name, (_, _, forwards, times) in runs.items():
        med = statistics.median(times)
        passes = len(forwards) / (2 + args.rounds * args.steps)
        result[name] = (med / sgd, passes)
        print(f"{name:<14}{med * 1e3:>9.2f}{med / sgd:>8.2f}{passes:>13.2f}")
    return result


def foreach_ratio(args):
    """Perturb + restore of all parameters: foreach against a per-tensor loop."""
    model = mlp(args.width, 0)
    params = list(model.parameters())
    e = [torch.randn_like(p) * 1e-3 for p in params]

    def with_foreach():
        restore_(params, add_perturbation_(params, e))

    @torch.no_grad()
    def with_loop():
        saved = [p.clone() for p in params]
        for p, d in zip(params, e):
            p.add_(d)
        for p, s in zip(params, saved):
            p.copy_(s)

    times = {"foreach": [], "loop": []}
    for _ in range(args.rounds * 4):
        for name, fn in (("foreach", with_foreach), ("loop", with_loop)):
            start = time.perf_counter()
            for _ in range(20):
                fn()
            times[name].append((time.perf_counter() - start) / 20)
    fe, lo = statistics.median(times["foreach"]), statistics.median(times["loop"])
    print(
        f"\nperturb + restore, {len(params)} tensors of MLP width {args.width}: "
        f"foreach {fe * 1e6:.0f} us, per-tensor loop {lo * 1e6:.0f} us, loop/foreach {lo / fe:.2f}"
    )
    small = mlp(32, 0)
    params = list(small.parameters())
    e = [torch.randn_like(p) * 1e-3 for p in params]
    times = {"foreach": [], "loop": []}
    for _ in range(args.rounds * 4):
        for name, fn in (("foreach", with_foreach), ("loop", with_loop)):
            start = time.perf_counter()
            for _ in range(200):
                fn()
            times[name].append((time.perf_counter() - start) / 200)
    fe, lo = statistics.median(times["foreach"]), statistics.median(times["loop"])
    print(
        f"perturb + restore, {len(params)} tensors of MLP width 32: "
        f"foreach {fe * 1e6:.1f} us, per-tensor loop {lo * 1e6:.1f} us, loop/foreach {lo / fe:.2f}"
    )


# -- (b) gain ------------------------------------------------------------------

#: Training rows of :func:`noisy_digits` (70% of the 1797 digits): bSAM's ``num_data``.
DIGITS_TRAIN_ROWS = 1257


def noisy_digits(seed, noise):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y_tr)) < noise
    y_tr = y_tr.copy()
    y_tr[flip] = rng.integers(0, 10, flip.sum())
    as_t = torch.from_numpy
    return as_t(X_tr), as_t(y_tr).long(), as_t(X_te), as_t(y_te).long()


def accuracy(name, rho, seed, args):
    X_tr, y_tr, X_te, y_te = noisy_digits(seed, args.noise)
    model = mlp(args.hidden, seed, batch_norm=args.batch_norm)
    opt = VARIANTS[name](model, args.lr, rho, 0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(X_tr), generator=gen)
        for idx in order.split(args.train_batch):
            opt.step(closure_for(model, opt, X_tr[idx], y_tr[idx]))
    if hasattr(opt, "restore"):
        opt.restore()
    model.eval()
    with torch.no_grad():
        return (model(X_te).argmax(1) == y_te).float().mean().item()


def gain(args):
    tune_seeds = list(range(100, 100 + args.tune_seeds))
    eval_seeds = list(range(args.seeds))
    print(
        f"\n(b) digits, {int(args.noise * 100)}% label noise, "
        f"MLP 64-{args.hidden}-{args.hidden}-10{' with BatchNorm' if args.batch_norm else ''}, "
        f"SGD momentum 0.9 lr {args.lr}, {args.epochs} epochs, batch {args.train_batch}; "
        f"rho tuned on seeds {tune_seeds} over {args.grid}, evaluated on seeds {eval_seeds}"
    )
    names = chosen_variants(args)
    factors = {
        "Momentum-SAM": args.msam_factor,
        "WSAM": args.wsam_factor,
        "bSAM": args.bsam_factor,
    }
    chosen = {"SGD": 0.0}
    for name in names:
        if name == "SGD":
            continue
        grid = [g * factors.get(name, 1.0) for g in args.grid]
        scores = {rho: np.mean([accuracy(name, rho, s, args) for s in tune_seeds]) for rho in grid}
        chosen[name] = max(scores, key=scores.get)
        print(
            f"  tuned {name:<13} rho={chosen[name]:<6g} "
            + " ".join(f"{r:g}:{v:.3f}" for r, v in scores.items())
        )
    acc = {
        name: np.array([accuracy(name, chosen[name], s, args) for s in eval_seeds])
        for name in names
    }
    sam_gain = acc["SAM"].mean() - acc["SGD"].mean()
    header = f"{'variant':<14}{'rho':>6}{'test acc':>10}{'gain':>8}{'+-sd':>7}"
    print(f"\n{header}{'share of SAM gain':>19}")
    result = {}
    for name, values in acc.items():
        paired = values - acc["SGD"]
        share = paired.mean() / sam_gain if sam_gain else float("nan")
        result[name] = (chosen[name], values.mean(), paired.mean(), paired.std(ddof=1), share)
        print(
            f"{name:<14}{chosen[name]:>6g}{values.mean():>10.3f}{paired.mean():>8.3f}"
            f"{paired.std(ddof=1):>7.3f}{share:>19.2f}"
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["cost", "gain", "both"], default="both")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--foreach", action="store_true", help="time foreach perturb/restore")
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument("--grid", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument(
        "--msam-factor", type=float, default=4.0, help="Momentum-SAM's grid is the grid times this"
    )
    parser.add_argument(
        "--wsam-factor", type=float, default=0.25, help="WSAM's grid is the grid times this"
    )
    parser.add_argument(
        "--bsam-factor", type=float, default=0.1, help="bSAM's grid is the grid times this"
    )
    parser.add_argument(
        "--batch-norm", action="store_true", help="BatchNorm after each hidden layer (SAM-ON)"
    )
    parser.add_argument("--variants", nargs="+", help=f"a subset of {list(VARIANTS)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.width, args.rounds, args.steps = 128, 2, 2
        args.epochs, args.seeds, args.tune_seeds, args.grid = 2, 2, 1, [0.05]
    torch.set_num_threads(1)
    print("one torch thread; timings are from this machine only")
    if args.part in ("cost", "both"):
        cost(args)
        if args.foreach:
            foreach_ratio(args)
    if args.part in ("gain", "both"):
        gain(args)


if __name__ == "__main__":
    main()
