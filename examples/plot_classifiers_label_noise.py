"""
===========================================================
Kernel and two-layer classifiers on noisy labels: GD vs SAM
===========================================================

The point of this figure: **on digits with 30% of the training labels
flipped and a schedule long enough to fit them all, SAM lifts the two-layer
network's clean test accuracy by five points and finds a flatter minimum by
every measure, classical and adaptive; it changes nothing for the kernel
classifier; and stopping early, with either solver, beats both by more.**

Both of the paper's model families as classifiers:
:class:`~sksam.SAMKernelClassifier` (kernel regression on ``±1`` class codes)
and :class:`~sksam.SAMTwoLayerClassifier` (one hidden ReLU layer,
cross-entropy loss), each trained by full-batch gradient descent
(``solver='gd'``) and by SAM, over three seeds (train/test split, flipped
labels and initialization). Next to the test accuracy (on clean labels) the
figure shows the sharpness of the fitted solutions, by a classical measure
and by the adaptive measures of current research (see :doc:`/sharpness`).
"""

# %%
# Digits with flipped training labels
# -----------------------------------
# Half of the digits train, half test; 30% of the training labels are
# replaced by a different random class, the test labels stay clean.
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sksam import SAMKernelClassifier, SAMTwoLayerClassifier
from sksam.sharpness import measure_sharpness

torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

SEEDS = [0] if QUICK else [0, 1, 2]
NOISE = 0.3
X_digits, y_digits = load_digits(return_X_y=True)


def noisy_digits(seed):
    """A standardized split, ``NOISE`` of its training labels flipped."""
    X_train, X_test, y_train, y_test = train_test_split(
        X_digits, y_digits, test_size=0.5, stratify=y_digits, random_state=seed
    )
    scaler = StandardScaler().fit(X_train)
    rng = np.random.default_rng(seed)
    y_noisy = y_train.copy()
    flipped = rng.choice(
        len(y_train), int(NOISE * len(y_train)), replace=False
    )
    y_noisy[flipped] = (
        y_train[flipped] + rng.integers(1, 10, len(flipped))
    ) % 10
    return scaler.transform(X_train), y_noisy, scaler.transform(X_test), y_test


# %%
# The two models
# --------------
# The kernel classifier runs 3000 steps of its path from zero, long enough to
# fit nearly all the training labels, flipped ones included. Its sharpness is
# computed by the estimator itself, exactly (the loss is quadratic), at the
# estimator's ``rho``: for ``solver='gd'``, ``rho`` only sets that radius, so
# both solvers are measured at SAM's training radius. Its top eigenvalue is
# shown only as a check: in kernel regression the Hessian does not depend on
# the weights, so GD and SAM have the same top eigenvalue by construction; the
# classical measure that can tell them apart is ``'rho'``. The accuracy of
# this model hardly moved with SAM's radius (0.05, 0.2 or 1.0: within 0.2
# points of GD's after 1000 or 10000 steps on the first seed).
KERNEL_RHO = 1.0
KERNEL_MEASURES = ("top_eigenvalue", "rho", "adaptive_rho")


def fit_kernel(solver, X, y, **params):
    # the fit at max_iter on every row ('auto' would hold out 10%)
    params = {
        "max_iter": 300 if QUICK else 3000,
        "early_stopping": False,
        **params,
    }
    return SAMKernelClassifier(
        solver=solver,
        rho=KERNEL_RHO,
        gamma=1 / 64,  # 1 / n_features on standardized pixels
        **params,
    ).fit(X, y)


# %%
# The network has 128 hidden units and runs 1000 full-batch steps; its
# step size, initialization scale and stopping rule are given explicitly, so
# the example does not depend on the defaults. SAM's radius ``NET_RHO = 2.0``
# is large by the standards of image benchmarks; it was picked by trying a few
# values on the first seed (0.1 to 1.0 gained one to four points over GD, 4.0
# no longer fitted the training labels): search it by cross-validation on
# your own data. The network is fitted with ``sharpness=None``, and the
# measures are taken afterwards with :func:`sksam.sharpness.measure_sharpness`
# on the mean training cross-entropy, at one radius for both solvers: the
# classical top Hessian eigenvalue, the adaptive worst case
# ``'adaptive_rho'`` and its version on normalized logits,
# ``'adaptive_rho_logitnorm'``, the one Andriushchenko et al. (2023)
# recommend for classifiers. These are the values ``sharpness_`` would hold
# for ``sharpness=measure`` if the estimator's ``rho`` were the measuring
# radius; measuring afterwards keeps one fit per solver and one radius for
# both.
NET_RHO = 2.0
MEASURE_RHO = 0.5  # radius of the adaptive measures (relative to |w|)
NET_MEASURES = ("top_eigenvalue", "adaptive_rho", "adaptive_rho_logitnorm")


def fit_net(solver, X, y, seed, **params):
    params = {
        "max_iter": 100 if QUICK else 1000,
        "random_state": seed,
        **params,
    }
    return SAMTwoLayerClassifier(
        solver=solver,
        rho=NET_RHO,
        n_hidden=128,
        activation="relu",  # the forward pass net_sharpness rebuilds
        init_scale=1.0,
        learning_rate=0.5,
        tol=None,
        sharpness=None,
        **params,
    ).fit(X, y)


def net_sharpness(net, X, y, measure):
    """``measure`` of the mean training cross-entropy at the weights."""
    W, a = (
        torch.tensor(w, dtype=torch.float64, requires_grad=True)
        for w in net.coefs_
    )
    b, c = (
        torch.tensor(w, dtype=torch.float64, requires_grad=True)
        for w in net.intercepts_
    )
    X = torch.tensor(X, dtype=torch.float64)
    target = torch.tensor(np.searchsorted(net.classes_, y))

    def logits_fn():
        return torch.relu(X @ W + b) @ a + c, target

    def loss_fn():
        return torch.nn.functional.cross_entropy(*logits_fn())

    return measure_sharpness(
        measure,
        loss_fn,
        [W, b, a, c],
        rho=MEASURE_RHO,
        random_state=0,
        logits_fn=logits_fn,
    )


# %%
# GD versus SAM, three seeds
# --------------------------
# Each solver trains each model twice: for the whole schedule (its sharpness
# is measured there), and with ``early_stopping=True``, which holds out 20% of
# the (noisy) training labels and keeps the step of best accuracy on them. The
# best step comes within the first 200 in these runs, so the early-stopped
# fits run 200 steps.
SOLVERS = ("gd", "sam")
MODELS = ("kernel", "two-layer")
accuracy = {
    (model, solver, early): []
    for model in MODELS
    for solver in SOLVERS
    for early in (False, True)
}
train_accuracy = {key: [] for key in accuracy if not key[2]}
sharpness = {}
for seed in SEEDS:
    X_train, y_noisy, X_test, y_test = noisy_digits(seed)
    for solver in SOLVERS:
        for measure in KERNEL_MEASURES:
            model = fit_kernel(solver, X_train, y_noisy, sharpness=measure)
            sharpness.setdefault(("kernel", solver, measure), []).append(
                model.sharpness_
            )
        accuracy["kernel", solver, False].append(model.score(X_test, y_test))
        train_accuracy["kernel", solver, False].append(
            model.score(X_train, y_noisy)
        )
        net = fit_net(solver, X_train, y_noisy, seed)
        accuracy["two-layer", solver, False].append(net.score(X_test, y_test))
        train_accuracy["two-layer", solver, False].append(
            net.score(X_train, y_noisy)
        )
        for measure in NET_MEASURES:
            sharpness.setdefault(("two-layer", solver, measure), []).append(
                net_sharpness(net, X_train, y_noisy, measure)
            )
        early = {
            "early_stopping": True,
            "validation_fraction": 0.2,
            "max_iter": 50 if QUICK else 200,
            "random_state": seed,
        }
        model = fit_kernel(solver, X_train, y_noisy, sharpness=None, **early)
        accuracy["kernel", solver, True].append(model.score(X_test, y_test))
        net = fit_net(solver, X_train, y_noisy, seed, **early)
        accuracy["two-layer", solver, True].append(net.score(X_test, y_test))

for model in MODELS:
    measures = KERNEL_MEASURES if model == "kernel" else NET_MEASURES
    for solver in SOLVERS:
        full, early = (
            accuracy[model, solver, False],
            accuracy[model, solver, True],
        )
        fitted = np.mean(train_accuracy[model, solver, False])
        print(
            f"{model} {solver.upper()}: test accuracy {np.mean(full):.3f} "
            f"± {np.std(full):.3f}, early-stopped {np.mean(early):.3f} "
            f"± {np.std(early):.3f}; fits {fitted:.0%} of its noisy labels"
        )
        for m in measures:
            values = sharpness[model, solver, m]
            print(f"    {m:<23} {np.mean(values):.4g} ± {np.std(values):.2g}")

# %%
# Test accuracy and sharpness
# ---------------------------
# Left, the clean test accuracy (bars: mean over seeds, dots: seeds; hatched:
# early-stopped). Right,
# each measure of SAM's solution divided by the same measure of GD's, seed by
# seed, so that measures of different scales (a squared loss for the kernel
# model, a cross-entropy for the network) share one axis: below 1, SAM's
# solution is flatter.
fig, (ax_acc, ax_sharp) = plt.subplots(1, 2, figsize=(11, 4.5))
colors = {"gd": "tab:blue", "sam": "tab:orange"}
width = 0.2
for i, model in enumerate(MODELS):
    for k, (early, solver) in enumerate(
        (early, solver) for early in (False, True) for solver in SOLVERS
    ):
        values = accuracy[model, solver, early]
        x = i + (k - 1.5) * width
        ax_acc.bar(
            x,
            np.mean(values),
            width,
            color=colors[solver],
            hatch="//" if early else None,
            edgecolor="white",
            label=(solver.upper() + (", early-stopped" if early else ""))
            if i == 0
            else None,
        )
        ax_acc.plot([x] * len(values), values, "k.")
ax_acc.set_xticks([0, 1], ["SAMKernelClassifier", "SAMTwoLayerClassifier"])
ax_acc.set(ylabel="test accuracy (clean labels)", ylim=(0.5, 1.1))
ax_acc.set_title(f"{NOISE:.0%} of the training labels flipped")
ax_acc.legend(loc="upper center", ncol=2, fontsize=8)

bars = [("kernel", m) for m in KERNEL_MEASURES] + [
    ("two-layer", m) for m in NET_MEASURES
]
for j, (model, measure) in enumerate(bars):
    ratios = np.divide(
        sharpness[model, "sam", measure], sharpness[model, "gd", measure]
    )
    adaptive = measure.startswith("adaptive")
    ax_sharp.bar(
        j,
        np.mean(ratios),
        0.6,
        color="tab:green" if adaptive else "tab:gray",
        label=("adaptive" if adaptive else "classical")
        if j in (1, 2)
        else None,
    )
    ax_sharp.plot([j] * len(ratios), ratios, "k.")
ax_sharp.axhline(1.0, color="k", lw=0.8)
ax_sharp.set_xticks(
    range(len(bars)),
    [f"{model}\n{measure}" for model, measure in bars],
    rotation=30,
    ha="right",
    fontsize=8,
)
ax_sharp.set(ylabel="sharpness of SAM / sharpness of GD")
ax_sharp.legend()
ax_sharp.set_title("below 1: SAM's solution is flatter")
fig.tight_layout()
plt.show()

# %%
# What the numbers say
# ---------------------
# **The two-layer network, trained to the end.** Both solvers fit every
# training label, the flipped ones included, yet SAM's network is five points
# more accurate on clean test labels (0.775 against 0.725, on each of the
# three seeds), and its minimum is flatter by all three measures: the top
# Hessian eigenvalue falls about fourfold (1.45 to 0.34), the adaptive worst
# case ``'adaptive_rho'`` as much (0.037 to 0.0094), and the logit-normalized
# one by about 40%. The adaptive measures are invariant under the rescalings
# of the weights that leave the network's function unchanged, so this
# flatness is not an artifact of SAM picking a differently scaled copy of the
# same network. This is where SAM helps.
#
# **The kernel classifier.** SAM changes nothing: the same test accuracy as
# GD (0.806 on average: equal on two seeds, one test digit apart on the
# third), both fitting 99% of the noisy labels. Its sharpness shows why a
# single number can mislead. The top eigenvalue is the same for both, by
# construction. ``'rho'`` ranks SAM's solution three times *sharper*: GD's
# value, 0.128, is the curvature term :math:`\rho^2 \lambda_{\max} / 2`
# alone (its gradient is nearly zero), while SAM's, 0.384, adds
# :math:`\rho \cdot \rho \lambda_{\max}`, the value expected if SAM with a
# fixed radius, at the step :math:`1/\lambda_{\max}` of
# ``learning_rate='auto'``, ends up bouncing across the minimum along the
# sharpest direction at distance :math:`\rho` instead of settling in it.
# The adaptive measure barely moves (1% apart).
#
# **What helps more than SAM: stopping early.** Holding out 20% of the noisy
# labels and keeping the step of best accuracy on them gives about 0.93
# (kernel) and 0.90 (network) with either solver, 12 to 18 points above the
# fits run to the end; once training stops early, SAM adds nothing here (the
# early-stopped GD and SAM differ by less than their spread over seeds). So
# the flatter minimum SAM finds is a better minimum of the noisy training
# loss, not a substitute for not fitting the noise. Use ``sharpness_`` to
# describe a solution rather than to predict its accuracy (across models it
# does not, as Andriushchenko et al., 2023, found), and choose models by
# validation accuracy.
