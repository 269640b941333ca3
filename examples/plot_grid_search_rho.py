"""
===========================================================
Choosing rho by cross-validation in a scikit-learn pipeline
===========================================================

The point of this figure: **on the diabetes data, GD and SAM with a small
rho tie at their best number of steps, a large rho hurts, and the search
picks GD**: every (solver, rho, max_iter) candidate is one cell of the map,
the chosen one framed.

``rho`` is a hyperparameter like ``alpha`` in ridge regression, and
``solver`` is one too: put both in a
:class:`~sklearn.model_selection.GridSearchCV` and the search answers "does
SAM beat GD on my data, and at which radius?". Keeping GD among the
candidates lets it say "no" when SAM does not help. Kernel regression on
scikit-learn's diabetes data, with
:class:`~sklearn.kernel_ridge.KernelRidge` as the yardstick.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sksam import SAMKernelRegressor

QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, random_state=0
)

# %%
# The search
# ----------
# Features and target are standardized, so that ``rho`` (a radius in the
# function space) has the same meaning on any data. The number of steps is the
# regularization of early-stopped kernel regression, so it is searched too.
# GD ignores ``rho``: a list of two grids avoids fitting it once per radius.
model = TransformedTargetRegressor(
    make_pipeline(
        StandardScaler(),
        # the grid chooses max_iter: no validation part inside each fit
        SAMKernelRegressor(
            kernel="rbf", gamma=0.02, sharpness=None, early_stopping=False
        ),
    ),
    transformer=StandardScaler(),
)
prefix = "regressor__samkernelregressor__"
n_steps = [10, 100] if QUICK else [10, 30, 100, 300, 1000]
rhos = [0.1, 1.0] if QUICK else [0.03, 0.1, 0.3, 1.0]
grid = [
    {prefix + "solver": ["gd"], prefix + "max_iter": n_steps},
    {
        prefix + "solver": ["sam"],
        prefix + "rho": rhos,
        prefix + "max_iter": n_steps,
    },
]
search = GridSearchCV(model, grid, cv=5, scoring="neg_mean_squared_error")
search.fit(X_train, y_train)
print(
    "best parameters:",
    {k.removeprefix(prefix): v for k, v in search.best_params_.items()},
)
print(f"test MSE of the best model: {-search.score(X_test, y_test):.0f}")

# %%
# Kernel ridge regression with its own regularization searched, for comparison
kernel_ridge = GridSearchCV(
    make_pipeline(StandardScaler(), KernelRidge(kernel="rbf", gamma=0.02)),
    {"kernelridge__alpha": np.logspace(-3, 2, 11)},
    cv=5,
    scoring="neg_mean_squared_error",
).fit(X_train, y_train)
print(
    f"test MSE of KernelRidge:      {-kernel_ridge.score(X_test, y_test):.0f}"
)

# %%
# Every candidate's cross-validated error
# ---------------------------------------
# One row per solver and radius, one column per number of steps; the search's
# choice is framed. A heat map keeps every candidate visible (as lines, GD's
# curve hides under SAM's at small radii).
results = search.cv_results_
solver = np.asarray(results["param_" + prefix + "solver"])
rho = np.asarray(results["param_" + prefix + "rho"])
max_iter = np.asarray(results["param_" + prefix + "max_iter"])
rows = [("gd", None)] + [("sam", r) for r in rhos]
mse = np.full((len(rows), len(n_steps)), np.nan)
for i, (s, r) in enumerate(rows):
    for j, t in enumerate(n_steps):
        match = (solver == s) & (max_iter == t) & ((rho == r) if r else True)
        mse[i, j] = -results["mean_test_score"][match][0]

fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
mesh = ax.pcolormesh(mse, cmap="viridis_r", edgecolors="white")
for i in range(len(rows)):
    for j in range(len(n_steps)):
        dark = mse[i, j] > np.nanmean([mse.min(), mse.max()])
        color = "white" if dark else "black"
        ax.text(
            j + 0.5,
            i + 0.5,
            f"{mse[i, j]:.0f}",
            ha="center",
            va="center",
            color=color,
        )
best = np.unravel_index(np.argmin(mse), mse.shape)
ax.add_patch(
    plt.Rectangle(best[::-1], 1, 1, fill=False, edgecolor="red", linewidth=3)
)
ax.set_xticks(np.arange(len(n_steps)) + 0.5, n_steps)
ax.set_yticks(
    np.arange(len(rows)) + 0.5,
    ["gd" if r is None else f"sam, rho={r:g}" for _, r in rows],
)
ax.set(xlabel="max_iter (steps)", title="cross-validated MSE (framed: chosen)")
fig.colorbar(mesh, ax=ax, label="MSE")
plt.show()

# %%
# On this small, noisy data set the best SAM radius is no better than GD at
# its best number of steps: the convex case is where the paper expects the
# smallest gain, and the search reports it rather than assuming it. Read a
# column to see the effect of rho at a fixed number of steps: small radii
# change nothing, large ones act like a longer run.
