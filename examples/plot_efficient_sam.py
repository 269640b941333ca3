"""
==================================================
SAM on a budget: the cheap variants side by side
==================================================

The point of this figure: **several variants keep most of SAM's accuracy gain
for a fraction of its extra cost** -- one point per variant, the cost per step
(relative to SGD) on one axis, the gain in test accuracy over SGD on the
other.

SAM takes two forward-backward passes per step. The cheap variants pay for
the second pass on some steps only (``'every_k'``, ``'looksam'``,
``'rst'``, ``'aesam'``) or never (``'msam'``, Momentum-SAM, which perturbs
along the momentum buffer). Every one of them is a ``solver`` value of
:class:`~sksam.SAMNetClassifier`, so one loop over ``solver`` compares them.
The data: scikit-learn's digits with 40% of the training labels replaced by
random classes, where SAM helps clearly; the test labels are clean.
"""

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sksam import SAMNetClassifier

torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0, stratify=y
)
rng = np.random.default_rng(0)
flipped = rng.random(len(y_train)) < 0.4
y_noisy = y_train.copy()
y_noisy[flipped] = rng.integers(0, 10, flipped.sum())

# %%
# One fit per variant and seed
# ----------------------------
# Each variant trains the same network with the same seed, with the radius
# ``rho`` that ``benchmarks/bench_efficient_sam.py`` tuned for it on other
# seeds of this problem (the cheap variants mostly want a larger one than
# SAM). ``sam_every=5`` makes the periodic variants pay for the second pass
# on one step in five, and ``'rst'`` with probability 1/5.
solvers = {
    "gd": "SGD",
    "sam": "SAM",
    "every_k": "every 5",
    "looksam": "LookSAM",
    "rst": "RST",
    "aesam": "AE-SAM",
    "msam": "Momentum-SAM",
}
rhos = {
    "gd": 0.0,
    "sam": 0.3,
    "every_k": 1.0,
    "looksam": 0.1,
    "rst": 1.0,
    "aesam": 0.3,
    "msam": 1.0,
}
seeds = [0] if QUICK else [0, 1]
epochs = 2 if QUICK else 30


def make(solver, seed, max_epochs):
    return SAMNetClassifier(
        solver=solver,
        rho=rhos[solver],
        sam_every=5,
        lr=0.05,
        optimizer__momentum=0.9,
        max_epochs=max_epochs,
        batch_size=64,
        module__hidden_layer_sizes=(256, 256),
        sharpness=None,
        random_state=seed,
    )


make("sam", 0, 1).fit(X_train, y_noisy)  # warm-up: first-call costs untimed
accuracy = {name: [] for name in solvers}
seconds = {name: [] for name in solvers}
for seed in seeds:
    for solver in solvers:
        clf = make(solver, seed, epochs)
        start = time.perf_counter()
        clf.fit(X_train, y_noisy)
        seconds[solver].append(time.perf_counter() - start)
        accuracy[solver].append(clf.score(X_test, y_test))

sgd_time = np.median(seconds["gd"])
sgd_acc = np.mean(accuracy["gd"])
cost = {name: np.median(seconds[name]) / sgd_time for name in solvers}
gain = {name: np.mean(accuracy[name]) - sgd_acc for name in solvers}
for name, label in solvers.items():
    share = gain[name] / gain["sam"] if gain["sam"] else float("nan")
    print(
        f"{label:<13} time x{cost[name]:.2f}  accuracy "
        f"{np.mean(accuracy[name]):.3f}  share of SAM's gain {share:.2f}"
    )

# %%
# Cost against gain
# -----------------
# Fit time includes skorch's fixed costs per epoch, so on a network this
# small the ratios understate what the skipped passes save on a large one
# (``benchmarks/bench_efficient_sam.py`` times the steps of a width-1024
# network). Points up and to the left are the good deals.
fig, ax = plt.subplots()
for name, label in solvers.items():
    ax.scatter(cost[name], gain[name], s=60)
    ax.annotate(
        label,
        (cost[name], gain[name]),
        textcoords="offset points",
        xytext=(6, 4),
    )
ax.axhline(0.0, color="gray", lw=0.8)
ax.set(
    xlabel="fit time relative to SGD",
    ylabel="test accuracy gain over SGD",
    title="digits, 40% noisy labels",
)
plt.show()
