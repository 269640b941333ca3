"""The activations of the one-hidden-layer model: one table of names.

Used by :class:`sksam.SAMTwoLayerRegressor` (to train and to predict) and by
:func:`sksam.datasets.make_teacher_student` (to label), so that a student can
always be given its teacher's activation. The names are scikit-learn's
(:class:`~sklearn.neural_network.MLPRegressor`'s ``activation``), plus
``'quadratic'`` (:math:`z^2`, a model of the theory).
"""

import numpy as np

#: The accepted names, in the order of the documentation.
ACTIVATIONS = ("relu", "tanh", "logistic", "quadratic", "identity")

#: ``name -> numpy function`` (prediction, data generation).
NUMPY_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "quadratic": np.square,
    "identity": lambda z: z,
}

#: ``name -> name of the torch function`` (out of place, differentiable by
#: autograd); None for the identity.
TORCH_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "logistic": "sigmoid",
    "quadratic": "square",
    "identity": None,
}


def torch_activation(name, Z):
    """``sigma(Z)`` out of place, for autograd (Hessian-vector products, tests).

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    Z : torch.Tensor
        Pre-activations.

    Returns
    -------
    A : torch.Tensor
    """
    import torch

    function = TORCH_ACTIVATIONS[name]
    return Z if function is None else getattr(torch, function)(Z)
