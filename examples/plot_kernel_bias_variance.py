"""
=====================================================
SAM versus gradient descent in kernel regression
=====================================================

The point of these figures: in kernel regression, **SAM's bias falls faster
than GD's and its variance rises a little faster, so at the best stopping
time it is at most slightly better**; the second figure shows why, through
the exact spectral filters of GD and unnormalized SAM.

This is the convex half of the paper (Behdin & Mazumder, arXiv:2302.11836):
kernel regression trained from zero by gradient descent (GD) or SAM and
stopped early. The gain is small in this convex case.

We measure both terms by refitting on many noise draws with the inputs and the
target function fixed. :meth:`~sksam.SAMKernelRegressor.staged_predict` gives
the prediction after every step, so one fit yields a whole curve.
"""

# %%
# The data: a target in the RBF kernel's function space, plus noise
# -----------------------------------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics.pairwise import rbf_kernel

from sksam import SAMKernelRegressor
from sksam.datasets import make_kernel_regression

# the second figure (one panel) is the gallery's thumbnail
# sphinx_gallery_thumbnail_number = 2
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

n_train, noise, gamma = 300, 0.5, 0.5  # gamma = 1 / (2 length_scale**2)
X, _, f_true = make_kernel_regression(
    return_y_true=True,
    n_samples=n_train + 1000,
    n_features=5,
    noise=0.0,
    random_state=0,
)
X_train, f_train = X[:n_train], f_true[:n_train]
X_test, f_test = X[n_train:], f_true[n_train:]

# %%
# Staged predictions over 30 noise draws
# --------------------------------------
# A small step makes the path long enough to see bias and variance evolve.
solvers = {
    "GD": dict(solver="gd"),
    "SAM (rho=0.4)": dict(solver="sam", rho=0.4),
}
n_draws, max_iter = (4, 50) if QUICK else (30, 250)
rng = np.random.default_rng(0)
noises = noise * rng.standard_normal((n_draws, n_train))

staged = {}
for name, params in solvers.items():
    model = SAMKernelRegressor(
        gamma=gamma,
        learning_rate=1.0,
        max_iter=max_iter,
        sharpness=None,
        early_stopping=False,  # the whole path, on every training row
        **params,
    )
    staged[name] = np.array(
        [
            list(model.fit(X_train, f_train + eps).staged_predict(X_test))
            for eps in noises
        ]
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
    print(
        f"{name:>14}: best prediction error {error[best]:.4f} "
        f"at iteration {best + 1}"
    )
for ax, title in zip(axes, ("squared bias", "variance", "prediction error")):
    ax.set(title=title, xlabel="iteration", yscale="log")
axes[0].legend()
plt.show()

# %%
# SAM's bias falls faster and its variance rises a little faster: the same
# trade-off as a larger step, but not the same path. With the best stopping
# time for each, SAM's prediction error is at most GD's, as the theory says;
# the difference is small, because the problem is convex.
#
# The spectral filters, exactly
# -----------------------------
# Why? Write the training kernel matrix as :math:`K/n = \sum_i s_i u_i
# u_i^\top`. From :math:`f = 0`, GD's fitted values after :math:`T` steps of
# size :math:`\eta` are :math:`\sum_i \phi_T(s_i)\, (u_i^\top y)\, u_i`
# with the filter :math:`\phi_T(s) = 1 - (1 - \eta s)^T`: directions of
# large eigenvalue are fitted first, the small ones (where the noise lives)
# last. Unnormalized SAM (``solver='usam'``) steps along the gradient at
# :math:`f + \rho g`, which multiplies each eigenvalue by
# :math:`1 + \rho s`: its filter is :math:`1 - (1 - \eta s (1 + \rho
# s))^T`, larger than GD's everywhere and most in the middle of the
# spectrum, hence the faster fall of the bias. (SAM proper normalizes the
# gradient: its effective radius :math:`c_t = \rho / \lVert g_t \rVert`
# grows as the gradient shrinks, so its filter is not a fixed function of
# :math:`s`. USAM with a constant :math:`c` is its closed-form cousin; we take
# :math:`c = 30`, the value :math:`0.4 / \lVert g_t \rVert` passes
# through here between 100 and 250 steps.)
#
# The curves below are the formulas; the dots are read off fitted
# estimators, as :math:`u_i^\top \hat f / u_i^\top y` on the training
# points, and fall on them.
rho, steps = 30.0, [10, 50, 250]
y_train = f_train + noises[0]
eigenvalues, vectors = np.linalg.eigh(
    rbf_kernel(X_train, gamma=gamma) / n_train
)
eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]  # largest first
shown = np.arange(0, 120, 4)  # a few of the leading directions, for legibility
grid = np.geomspace(eigenvalues[shown[-1]], eigenvalues[0], 200)

fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
for k, T in enumerate(steps):
    for solver, scale, style in [("gd", 0.0, "-"), ("usam", rho, "--")]:
        (line,) = ax.plot(
            grid,
            1 - (1 - grid * (1 + scale * grid)) ** T,  # learning_rate = 1
            style,
            color=f"C{k}",
            label=f"{solver.upper()}, T={T}",
        )
        model = SAMKernelRegressor(
            solver=solver,
            rho=rho,
            gamma=gamma,
            learning_rate=1.0,
            max_iter=T,
            sharpness=None,
            early_stopping=False,
        ).fit(X_train, y_train)
        fitted = vectors.T @ model.predict(X_train)
        measured = fitted / (vectors.T @ y_train)
        ax.plot(eigenvalues[shown], measured[shown], "o", color=f"C{k}", ms=4)
ax.set(
    xscale="log",
    xlabel="eigenvalue $s$ of $K/n$",
    ylabel="fraction of $u^\\top y$ fitted",
    title="GD (solid) and USAM (dashed) filters; dots: fitted",
)
ax.legend(ncols=3, fontsize="small", loc="upper left")
plt.show()

# %%
# At every stopping time USAM's curve lies left of GD's: it reaches the same
# fraction of a direction at a smaller eigenvalue, which is the lower bias
# of the first figure, and lets in a little more of the noisy small-eigenvalue
# directions, which is the higher variance.
