"""Cost of a 2-D loss landscape: an MLP on digits at 25 x 25 points, one thread.

The target (under a minute on a laptop-class CPU core) bounds what
:class:`sksam.inspection.LossLandscapeDisplay` costs at its default
resolution. Printed: the time of the whole display computation (the two
filter-normalized directions and the 625 evaluations of the loss on all
1797 digits, one point after another: no copy of the model, the weights are
handed to the module by ``torch.func.functional_call``) and, side by
side, the grid evaluated with ``torch.func.vmap`` over batches of points
(``vectorize=True``), which is slower on a CPU.

Run::

    python benchmarks/bench_landscape.py                  # 25 x 25, 100 hidden units
    python benchmarks/bench_landscape.py --resolution 51  # 2601 points
"""

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from sksam import SAMNetClassifier
from sksam.inspection import LossLandscapeDisplay
from sksam.sharpness import filter_normalized_direction, fitted_loss, loss_along


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=25)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    net = SAMNetClassifier(
        module__hidden_layer_sizes=(args.hidden,), max_epochs=5, random_state=0
    ).fit(X, y)
    n_points = args.resolution**2

    start = time.perf_counter()
    display = LossLandscapeDisplay.from_estimator(
        net, X, y, dims=2, resolution=args.resolution, batch_size=args.batch_size, draw=False
    )
    batched = time.perf_counter() - start
    surface = display.train_losses[0]

    loss = fitted_loss(net, X, y)
    directions = [filter_normalized_direction(loss, random_state=k) for k in (0, 1)]
    axis = np.linspace(-1, 1, args.resolution)
    A, B = np.meshgrid(axis, axis)
    points = np.column_stack([A.ravel(), B.ravel()])
    start = time.perf_counter()
    loss_along(loss, directions, points, batch_size=args.batch_size, vectorize=True)
    vectorized = time.perf_counter() - start

    print(f"MLP 64-{args.hidden}-10 on digits ({len(X)} rows), one thread")
    print(
        f"2-D landscape, {args.resolution} x {args.resolution} = {n_points} points: "
        f"{batched:.2f} s for the whole display (target < 60 s); the grid alone "
        f"with vmap over {args.batch_size} points a batch: {vectorized:.2f} s"
    )
    print(
        f"loss at the fitted weights {surface[args.resolution // 2, args.resolution // 2]:.4f}, "
        f"range over the grid [{surface.min():.4f}, {surface.max():.4f}]"
    )


if __name__ == "__main__":
    main()
