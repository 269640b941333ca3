"""
=========================================================
When does SAM help? A map over label noise and run length
=========================================================

The point of this figure: on a one-hidden-layer network, **SAM beats
gradient descent by 10-30% when the labels are noisy and both run a long
fixed schedule, loses when the labels are clean, and ties once each is
stopped at its best step.**

Behdin & Mazumder (arXiv:2302.11836) prove that SAM's prediction error is
below GD's when a network with one hidden layer is trained on noisy labels:
GD fits the noise, SAM fits less of it. The theory says nothing about how
large the gain is for a given noise level and training length, nor how it
compares with GD's own remedy, early stopping. This example measures both on
the teacher-student data of :func:`~sksam.datasets.make_teacher_student` and
draws them with :class:`~sksam.inspection.GainMapDisplay`.
"""

# %%
# The grid
# --------
# Four label-noise levels (standard deviation of the Gaussian noise added to
# the teacher's outputs) by five training lengths, two seeds per noise level.
# Each (noise, seed, solver) is one warm-started run, stopped at every
# training length to measure its prediction error against the *noiseless*
# teacher on 1000 fresh points. The student has 200 ReLU units, full-batch
# steps of size 0.05 and SAM's ``rho=0.2`` (the setting of
# ``benchmarks/claim_two_layer.py``). ``SKSAM_QUICK=1`` (used by the test
# suite) shrinks the grid to a smoke test.
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from sksam import SAMTwoLayerRegressor
from sksam.datasets import make_teacher_student
from sksam.inspection import GainMapDisplay

# small full-batch problems: more threads only add overhead
torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"

noises = [0.0, 1.0] if QUICK else [0.0, 0.25, 0.5, 1.0]
lengths = [50, 100] if QUICK else [250, 500, 1000, 2000, 4000]
seeds = [0] if QUICK else [0, 1]
n_train, n_test = 200, 1000


def error_path(solver, X_train, y_train, X_test, f_test, seed):
    """Prediction error after each of ``lengths`` steps of one warm run."""
    model = SAMTwoLayerRegressor(
        solver=solver,
        rho=0.2,
        n_hidden=200,
        learning_rate=0.05,
        tol=None,  # run exactly the steps asked for
        sharpness=None,
        warm_start=True,
        random_state=seed,
    )
    errors, done = [], 0
    for steps in lengths:
        model.set_params(max_iter=steps - done).fit(X_train, y_train)
        errors.append(np.mean((model.predict(X_test) - f_test) ** 2))
        done = steps
    return errors


errors = {"gd": np.zeros((len(noises), len(lengths))), "sam": None}
errors["sam"] = np.zeros_like(errors["gd"])
for i, noise in enumerate(noises):
    for seed in seeds:
        X, y, f = make_teacher_student(
            n_samples=n_train + n_test,
            n_features=10,
            n_teacher=4,
            noise=noise,
            return_y_true=True,
            random_state=seed,
        )
        data = X[:n_train], y[:n_train], X[n_train:], f[n_train:]
        for solver in errors:
            errors[solver][i] += np.array(
                error_path(solver, *data, seed)
            ) / len(seeds)

# %%
# The map
# -------
# Each cell is SAM's relative gain ``1 - error(SAM) / error(GD)`` after the
# same number of steps (blue: SAM better). The triangle marks, in each row,
# the length at which GD's error is smallest: GD stopped early at its best.
# The last column compares both methods stopped at their own best length.
# Those best lengths are chosen on the test error here (an oracle, the best
# case for both); a validation split picks them in practice.
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
display = GainMapDisplay.from_errors(
    errors["gd"],
    errors["sam"],
    row_values=noises,
    column_values=lengths,
    row_name="label noise (std)",
    column_name="full-batch steps",
    reference_name="GD",
    ax=ax,
    limit=0.5,  # colours saturate at +-50%; the numbers are exact
)
ax.set_title("SAM's gain over GD in prediction error", pad=22)
plt.show()

# %%
# The numbers behind the map:
print("prediction error, rows = noise, columns = steps")
for name in errors:
    print(name.upper())
    print(np.array2string(errors[name], precision=3))
print("both at their best stop:", np.round(display.best_gain, 3))

# %%
# What the map says
# -----------------
# * **Noisy labels and a long fixed schedule** (lower right): GD keeps
#   fitting the noise and its error grows, SAM's grows much less; this is the
#   regime of the paper's theorem, and the gain is 10-30%.
# * **Clean labels** (top row): there is no noise to resist, and SAM's
#   perturbed gradient only slows the fit; SAM is worse at every length.
# * **Short runs** (left): neither method has fitted the noise yet; SAM is
#   slightly behind because it converges more slowly.
# * **Both stopped at their best** (last column): the gain vanishes on noisy
#   labels. Early stopping is GD's own defence against fitting noise; SAM's
#   practical advantage is that it needs no stopping time to be tuned.
#
# The same comparison on your own data is a grid search with ``'gd'`` and
# ``'sam'`` and ``max_iter`` among the candidates (see the grid-search
# example).
