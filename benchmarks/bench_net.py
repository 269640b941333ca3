"""Epoch time of SAMNetClassifier against what users would otherwise write.

Three ways to train the same MLP (64-100-10, SGD with momentum 0.9, batches
of 32) on the digits data, timed in one run, interleaved, one torch thread:

* ``SAMNetClassifier(solver='sam')``;
* a hand-written PyTorch SAM loop on the same module and the same batches
  (the community recipe: two backward passes, ``rho g/||g||`` ascent with
  the scale computed once per step, subtract it back, base step), the
  floor for SAM. It does not replay random numbers or protect BatchNorm
  statistics (this MLP has neither dropout nor BatchNorm) and restores by
  subtraction rather than by an exact copy;
* plain skorch ``NeuralNetClassifier`` with SGD (one gradient per step,
  skorch's default data loader, no validation split), what a skorch user
  would run without SAM;
* ``SAMNetClassifier(solver='sam')`` on skorch's own epoch loop, the
  fallback the nets take when a skorch release changes a method the fast
  loop reproduces (``sksam._skorch.FastLoopMixin``): its ratio to the first
  line is what the fast loop buys.

Epoch times are skorch's own ``history[:, 'dur']`` for the skorch nets and
``time.perf_counter`` around each epoch of the loop (synchronized on a GPU);
the medians over all epochs of all repeats are compared. The total ``fit``
time (set-up included, ``sharpness=None``) is reported as well.

Targets: SAMNetClassifier / hand-written SAM loop <= 1.15 (aim 1.05);
SAMNetClassifier / skorch SGD <= 2.05 (two gradients per step are the floor).

Usage::

    python benchmarks/bench_net.py [--epochs 10] [--repeats 5] [--device cuda] [--options]
    python benchmarks/bench_net.py --quick --options    # smoke run
"""

import argparse
import contextlib
import functools
import statistics
import time
import warnings
from unittest import mock

import numpy as np
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier
from torch import nn

import sksam._skorch
from sksam.net import MLP, SAMNetClassifier

LR, MOMENTUM, RHO, BATCH = 0.1, 0.9, 0.05, 32


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_samnet(X, y, epochs, device, seed, **options):
    clf = SAMNetClassifier(
        **{"solver": "sam", **options},
        rho=RHO,
        lr=LR,
        max_epochs=epochs,
        batch_size=BATCH,
        device=device,
        sharpness=None,
        random_state=seed,
        optimizer__momentum=MOMENTUM,
    )
    start = time.perf_counter()
    clf.fit(X, y)
    total = time.perf_counter() - start
    return list(clf.net_.history[:, "dur"]), total, clf.loss_curve_[-1]


@contextlib.contextmanager
def skorch_loop():
    """The nets as built when a speed pin fails: skorch's own epoch loop."""
    with mock.patch.object(sksam._skorch, "changed_pins", lambda purpose: ("forced",)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield


def run_samnet_skorch_loop(X, y, epochs, device, seed):
    with skorch_loop():
        return run_samnet(X, y, epochs, device, seed)


def run_skorch_sgd(X, y, epochs, device, seed):
    torch.manual_seed(seed)
    net = NeuralNetClassifier(
        MLP,
        module__n_features=X.shape[1],
        module__n_outputs=10,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=LR,
        optimizer__momentum=MOMENTUM,
        max_epochs=epochs,
        batch_size=BATCH,
        train_split=None,
        device=device,
        verbose=0,
    )
    start = time.perf_counter()
    net.fit(X, y.astype(np.int64))
    total = time.perf_counter() - start
    return list(net.history[:, "dur"]), total, net.history[-1, "train_loss"]


def run_hand_loop(X, y, epochs, device, seed):
    """The community SAM recipe, written out (what the optimizer replaces)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = MLP(X.shape[1], 10).to(device)
    params = list(model.parameters())
    base = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
    X_t = torch.as_tensor(X, device=device)
    y_t = torch.as_tensor(y.astype(np.int64), device=device)
    n, durations = len(X_t), []
    for _ in range(epochs):
        _sync(device)
        tic = time.perf_counter()
        model.train()
        order = torch.randperm(n).to(device)
        running = 0.0
        for begin in range(0, n, BATCH):
            index = order[begin : begin + BATCH]
            xb, yb = X_t[index], y_t[index]
            base.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            with torch.no_grad():
                norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
                scale = RHO / (norm + 1e-12)  # once per step, as the community version does
                e = [p.grad * scale for p in params]
                for p, e_p in zip(params, e):
                    p.add_(e_p)
            base.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            with torch.no_grad():
                for p, e_p in zip(params, e):
                    p.sub_(e_p)
            base.step()
            running += loss.item() * len(xb)
        _sync(device)
        durations.append(time.perf_counter() - tic)
    total = time.perf_counter() - start
    return durations, total, running / n


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--options",
        action="store_true",
        help="also time SAMNetClassifier with m=4 (m-sharpness), precision='bfloat16' "
        "and 'float16' (GradScaler; on a CPU only their closeness is meaningful), and "
        "solver='msam' (one gradient per step: compare with skorch SGD)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 1
    torch.set_num_threads(args.threads)

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    runners = {
        "SAMNetClassifier(sam)": run_samnet,
        "hand-written SAM loop": run_hand_loop,
        "skorch SGD": run_skorch_sgd,
        "SAMNetClassifier(skorch loop)": run_samnet_skorch_loop,
    }
    if args.options:
        for label, options in [
            ("SAMNetClassifier(m=4)", {"m": 4}),
            ("SAMNetClassifier(bf16)", {"precision": "bfloat16"}),
            ("SAMNetClassifier(fp16)", {"precision": "float16"}),
            ("SAMNetClassifier(msam)", {"solver": "msam"}),
        ]:
            runners[label] = functools.partial(run_samnet, **options)
    for runner in runners.values():  # warm-up: imports, allocator, first-call costs
        runner(X, y, 1, args.device, 0)
    epochs = {name: [] for name in runners}
    totals = {name: [] for name in runners}
    losses = {name: [] for name in runners}
    for repeat in range(args.repeats):  # interleaved, so load changes hit all three
        for name, runner in runners.items():
            durations, total, loss = runner(X, y, args.epochs, args.device, repeat)
            epochs[name] += durations
            totals[name].append(total)
            losses[name].append(loss)

    print(
        f"digits n={len(X)}, MLP 64-100-10, batch {BATCH}, "
        f"{args.epochs} epochs x {args.repeats} repeats, "
        f"device={args.device}, torch threads={torch.get_num_threads()}"
    )
    print(
        f"{'method':30s} {'epoch median (ms)':>18s} {'epoch min (ms)':>15s} "
        f"{'fit (s)':>8s} {'final train loss':>17s}"
    )
    for name in runners:
        print(
            f"{name:30s} {1e3 * statistics.median(epochs[name]):18.2f} "
            f"{1e3 * min(epochs[name]):15.2f} "
            f"{statistics.median(totals[name]):8.3f} {statistics.median(losses[name]):17.4f}"
        )
    ours, loop, sgd = "SAMNetClassifier(sam)", "hand-written SAM loop", "skorch SGD"
    for stat in (statistics.median, min):  # min is the robust one on a loaded machine
        ratio_loop = stat(epochs[ours]) / stat(epochs[loop])
        ratio_sgd = stat(epochs[ours]) / stat(epochs[sgd])
        print(
            f"epoch {stat.__name__:6s}: SAMNetClassifier / hand-written SAM loop = "
            f"{ratio_loop:.3f} (target <= 1.15, aim 1.05); "
            f"SAMNetClassifier / skorch SGD = {ratio_sgd:.3f} (aim <= 2.05)"
        )
    for name in runners:
        if name.startswith("SAMNetClassifier(") and name != ours:
            ratio = statistics.median(epochs[name]) / statistics.median(epochs[ours])
            print(f"epoch median: {name} / SAMNetClassifier(sam) = {ratio:.3f}")
    fit_ratio = statistics.median(totals[ours]) / statistics.median(totals[loop])
    print(
        "whole fit (median, set-up and validation included): "
        f"SAMNetClassifier / hand-written SAM loop = {fit_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
