"""
=====================================================
SAM versus gradient descent in kernel regression
=====================================================

The convex half of the paper (Behdin & Mazumder, arXiv:2302.11836): kernel
regression trained from zero by gradient descent (GD) or SAM and stopped early.
Along the iterations, SAM has a **lower bias** and a **slightly higher
variance** than GD, so at a well-chosen stopping time its prediction error is
at most GD's. The gain is small in this convex case.

We measure both terms by refitting on many noise draws with the inputs and the
target function fixed. :meth:`~sksam.SAMKernelRegressor.staged_predict` gives
the prediction after every step, so one fit yields a whole curve.
"""

# %%
# The data: a target in the RBF kernel's function space, plus noise
# -----------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np

from sksam import SAMKernelRegressor
from sksam.datasets import make_kernel_regression

n_train, noise, gamma = 300, 0.5, 0.5  # gamma = 1 / (2 length_scale**2)
X, _, f_true = make_kernel_regression(
    n_samples=n_train + 1000, n_features=5, noise=0.0, random_state=0
)
X_train, f_train = X[:n_train], f_true[:n_train]
X_test, f_test = X[n_train:], f_true[n_train:]

# %%
# Staged predictions over 30 noise draws
# --------------------------------------
# A small step makes the path long enough to see bias and variance evolve.
solvers = {"GD": dict(solver="gd"), "SAM (rho=0.4)": dict(solver="sam", rho=0.4)}
n_draws, max_iter = 30, 250
rng = np.random.default_rng(0)
noises = noise * rng.standard_normal((n_draws, n_train))

staged = {}
for name, params in solvers.items():
    model = SAMKernelRegressor(
        gamma=gamma, learning_rate=1.0, max_iter=max_iter, sharpness=None, **params
    )
    staged[name] = np.array(
        [list(model.fit(X_train, f_train + eps).staged_predict(X_test)) for eps in noises]
    )  # (n_draws, max_iter, n_test)

# %%
# Bias, variance and prediction error along the iterations
# --------------------------------------------------------
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
iterations = np.arange(1, max_iter + 1)
for name, preds in staged.items():
    bias2 = ((preds.mean(axis=0) - f_test) ** 2).mean(axis=1)
    variance = preds.var(axis=0).mean(axis=1)
    error = ((preds - f_test) ** 2).mean(axis=(0, 2))
    for ax, values in zip(axes, (bias2, variance, error)):
        ax.plot(iterations, values, label=name)
    best = error.argmin()
    print(f"{name:>14}: best prediction error {error[best]:.4f} at iteration {best + 1}")
for ax, title in zip(axes, ("squared bias", "variance", "prediction error")):
    ax.set(title=title, xlabel="iteration", yscale="log")
axes[0].legend()
plt.show()

# %%
# SAM's bias falls faster and its variance rises a little faster: the same
# trade-off as a larger step, but not the same path. With the best stopping
# time for each, SAM's prediction error is at most GD's, as the theory says;
# the difference is small, because the problem is convex.
