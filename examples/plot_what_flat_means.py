"""
==========================================
What "flat" means: GD and SAM side by side
==========================================

The point of these figures: **on noisy digits, SAM's weights sit where the
training loss rises more slowly in every direction we can look at, and every
sharpness measure, classical or adaptive, is smaller there** (which describes
where SAM stopped, not why it generalizes better: see the last section).

SAM is said to find *flatter* minima. This example looks at that claim in
every way :mod:`sksam.sharpness` and :mod:`sksam.inspection` offer, for two
networks trained on digits with 30% of the training labels flipped, from the
**same initialization**, one by plain SGD (``solver='gd'``) and one by SAM:

1. the loss on the straight line from GD's weights to SAM's;
2. the loss on a plane through each of them, along random
   *filter-normalized* directions (Li et al., NeurIPS 2018);
3. the Hessian's spectrum: its density, its top eigenvalues, and a
   per-layer trace, with the standard errors of the stochastic estimates;
4. six sharpness numbers, the classical ones beside the *adaptive* ones that
   do not change when a ReLU layer's weights are scaled up and the next
   layer's down (which leaves the function as it was).

Every number is read from the fitted estimators
(:func:`~sksam.sharpness.estimator_sharpness`), with no refit.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksam import SAMNetClassifier
from sksam.inspection import LossLandscapeDisplay, SharpnessSpectrumDisplay
from sksam.sharpness import estimator_sharpness

torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

X, y = load_digits(return_X_y=True)
X = X.astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0
)
rng = np.random.default_rng(0)
flipped = rng.choice(len(y_train), size=int(0.3 * len(y_train)), replace=False)
y_noisy = y_train.copy()
y_noisy[flipped] = (
    y_train[flipped] + rng.integers(1, 10, size=len(flipped))
) % 10


def fit(solver):
    """The same network, initialization and batches; only the solver."""
    return make_pipeline(
        StandardScaler(),
        SAMNetClassifier(
            solver=solver,
            rho=1.0,
            lr=0.05,
            max_epochs=2 if QUICK else 30,
            batch_size=64,
            optimizer__momentum=0.9,
            module__hidden_layer_sizes=(128,),
            sharpness=None,
            random_state=0,
        ),
    ).fit(X_train, y_noisy)


gd, sam = fit("gd"), fit("sam")
for name, model in (("GD ", gd), ("SAM", sam)):
    train, test = model.score(X_train, y_noisy), model.score(X_test, y_test)
    print(
        f"{name}: accuracy on the noisy training labels {train:.3f}, "
        f"on the clean test labels {test:.3f}"
    )

# %%
# 1. The line from GD's weights to SAM's
# --------------------------------------
# Both started from the same weights, so the line between them is meaningful
# (two independent initializations would sit in unrelated places of the loss
# surface). The training loss is that of the noisy labels; the test loss is
# on clean labels, dashed.
resolution = 9 if QUICK else 41
LossLandscapeDisplay.from_interpolation(
    gd,
    sam,
    X_train,
    y_noisy,
    X_test=X_test,
    y_test=y_test,
    resolution=resolution,
)
plt.show()

# %%
# 2. A plane through each fit
# ---------------------------
# Two Gaussian directions (the same draw for both), each filter rescaled to
# the norm of the fitted filter; biases are not moved (the paper's default).
# The loss is the mean cross-entropy on the noisy training labels.
display = LossLandscapeDisplay.from_estimators(
    [gd, sam],
    X_train,
    y_noisy,
    dims=2,
    resolution=5 if QUICK else 25,
    random_state=0,
)
plt.show()

# %%
# 3. The Hessian's spectrum
# -------------------------
# Density by stochastic Lanczos quadrature, the five largest eigenvalues
# (error bars: three Lanczos starts), and the trace of each layer's block of
# the Hessian (error bars: the spread of 100 Hutchinson probes). The loss is
# taken on 500 training rows, drawn once (``max_samples``).
spectra = SharpnessSpectrumDisplay.from_estimators(
    [gd, sam],
    X_train,
    y_noisy,
    n_iter=20 if QUICK else 60,
    n_probes=2 if QUICK else 5,
    max_samples=500,
)
plt.show()

# %%
# 4. Classical and adaptive sharpness, with standard errors
# ---------------------------------------------------------
classical = ["top_eigenvalue", "trace", "rho", "average"]
adaptive = ["adaptive_rho", "adaptive_average", "adaptive_rho_logitnorm"]
print(f"{'measure':>24}  {'GD':>18}  {'SAM':>18}")
for measure in classical + adaptive:
    cells = []
    for model in (gd, sam):
        result = estimator_sharpness(
            model,
            X_train,
            y_noisy,
            measure=measure,
            rho=0.05,
            max_samples=500,
            random_state=0,
            n_seeds=2 if QUICK else 3,
        )
        cells.append(f"{result.value:10.4g} +- {result.stderr[0]:<6.2g}")
    print(f"{measure:>24}  {cells[0]:>18}  {cells[1]:>18}")

# %%
# What the pictures show, and what they do not
# --------------------------------------------
# They show the loss *near* each fitted point, along a handful of directions
# (one line, one random plane, the Krylov space of a few probes): SAM's
# weights sit where the training loss on the noisy labels rises more slowly
# in those directions and the Hessian's largest eigenvalues are smaller. They
# do not show that this flatness *causes* the better test accuracy: the
# classical measures change when the network is reparametrized without
# changing its function, a random plane sees two of thousands of dimensions,
# and Andriushchenko et al. (ICML 2023) found the correlation of sharpness
# with generalization weak and setting-dependent, even for the adaptive
# measures. Read the pictures as a description of where each optimizer
# stopped, not as an explanation of why one generalizes better.
