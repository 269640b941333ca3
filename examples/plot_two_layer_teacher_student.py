"""
======================================================
SAM versus gradient descent on a one-hidden-layer net
======================================================

The non-convex half of the paper (Behdin & Mazumder, arXiv:2302.11836): a
network with one hidden layer, trained by full-batch gradient descent (GD) or
SAM on noisy labels from a small "teacher" network. GD fits the noise; SAM does
not, so its prediction error (against the noiseless teacher) is clearly lower,
and the solution it finds is flatter (a smaller top Hessian eigenvalue).
"""

# %%
# Teacher-student data
# --------------------
# Four ReLU teacher units in ten dimensions, label noise of standard deviation
# 0.5, 200 training points; the test points are scored against the noiseless
# teacher.
import matplotlib.pyplot as plt
import numpy as np

from sksam import SAMTwoLayerRegressor
from sksam.datasets import make_teacher_student
from sksam.inspection import SolverComparisonDisplay, TrainingCurveDisplay

X, y, f_true = make_teacher_student(
    n_samples=2200, n_features=10, n_teacher=4, noise=0.5, random_state=0
)
X_train, y_train = X[:200], y[:200]
X_test, f_test = X[200:], f_true[200:]

# %%
# One fit per solver
# ------------------
# A wide student (200 hidden units) and many full-batch steps: enough capacity
# and time for GD to interpolate the noise.
student = SAMTwoLayerRegressor(
    n_hidden=200, rho=0.2, learning_rate=0.05, max_iter=4000, tol=None, random_state=0
)
display = SolverComparisonDisplay.from_estimator(
    student, X_train, y_train, X_test, f_test, solvers=("gd", "sam")
)
display.axes_[0].set_ylabel("MSE against the noiseless teacher")
for fit in display.estimators_:
    error = np.mean((fit.predict(X_test) - f_test) ** 2)
    print(f"{fit.solver:>4}: prediction error {error:.3f}, sharpness {fit.sharpness_:.3f}")

# %%
# Training curves
# ---------------
# GD drives the training loss towards zero, i.e. it memorizes the noise
# (whose variance is 0.25 / 2 in this loss's units); SAM's training loss levels off.
TrainingCurveDisplay.from_estimators(display.estimators_)
plt.show()
