"""Activations of the one-hidden-layer model, in numpy: one home for their names.

Used by :class:`sksam.SAMTwoLayerRegressor` (to predict) and by
:func:`sksam.datasets.make_teacher_student` (to label), so that a student can
always be given its teacher's activation.
"""

import numpy as np

NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "quadratic": np.square,
    "identity": lambda z: z,
}
