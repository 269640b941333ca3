"""PyTorch modules used by the deep-net estimators.

:class:`MLP` is the default network of :class:`sksam.SAMNetClassifier` and
:class:`sksam.SAMNetRegressor`.
"""

import numbers

from torch import nn

__all__ = ["MLP"]

#: scikit-learn's names for the hidden-layer non-linearities (``MLPClassifier``).
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


class MLP(nn.Module):
    """A multi-layer perceptron: logits for a classifier, values for a regressor.

    ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` for each hidden
    layer, then a ``Linear`` layer with ``n_outputs`` outputs (one per
    class, or per regression target). PyTorch's default initialization.

    Parameters
    ----------
    n_features : int
        Input dimension (filled in from the data by the estimators).
    n_outputs : int
        Output dimension (filled in from the data by the estimators: the
        number of classes, or of regression targets).
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer, as in scikit-learn's ``MLPClassifier``.
    activation : {'relu', 'tanh', 'logistic', 'identity'}, default='relu'
        Non-linearity after each hidden layer.
    dropout : float, default=0.0
        Dropout probability after each hidden layer.
    batch_norm : bool, default=False
        Batch normalization before each activation. It cannot normalize a
        single row in training mode, so the estimators skip a last training
        batch of one row (a different row each epoch when shuffling), as
        ``drop_last`` would; a ``batch_size`` of 1 is an error that says so.

    Attributes
    ----------
    draws_random_numbers : bool
        ``False``: this class's own ``forward`` draws no random number (its
        dropout layers are modules of their own), so :class:`sksam.optim.SAM`
        with ``replay_rng='auto'`` replays the generator only when
        ``dropout > 0``.
    layers : torch.nn.Sequential
        The layers, in order.

    Examples
    --------
    >>> import torch
    >>> from sksam.modules import MLP
    >>> MLP(4, 3, hidden_layer_sizes=(8,))(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    draws_random_numbers = False

    def __init__(
        self,
        n_features,
        n_outputs,
        hidden_layer_sizes=(100,),
        activation="relu",
        dropout=0.0,
        batch_norm=False,
    ):
        super().__init__()
        for name, size in (("n_features", n_features), ("n_outputs", n_outputs)):
            if not _is_positive_int(size):
                raise ValueError(f"MLP: {name} must be a positive integer, got {size!r}.")
        sizes = (
            (hidden_layer_sizes,) if _is_positive_int(hidden_layer_sizes) else hidden_layer_sizes
        )
        try:
            valid = all(_is_positive_int(size) for size in sizes)
        except TypeError:
            valid = False
        if not valid:
            raise ValueError(
                "MLP: hidden_layer_sizes (module__hidden_layer_sizes of the estimators) must "
                f"be a tuple of positive integers, got {hidden_layer_sizes!r}."
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}."
            )
        layers, width = [], n_features
        for size in sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        """Compute the outputs, of shape ``(n_samples, n_outputs)``.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
            Input batch.

        Returns
        -------
        out : torch.Tensor of shape (n_samples, n_outputs)
            Logits (classification) or predicted values (regression).
        """
        return self.layers(X)


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
