"""Checks of a net fit: what the user hands in, and what training gives back (private).

Functions of their arguments only. Before training, each raising a
``ValueError`` that names the parameter to change: a module that is not a
module, of the wrong width, with batch normalization on single rows;
callbacks that watch validation scores without a validation split; an
optimizer that needs a closure. After training, from a skorch net's history,
its module's outputs and the loss of the best constant prediction: what is
not finite (an error), and the loss-curve rule that makes a finite blow-up a
warning; the estimator adds the remedy (which parameter to change).
"""

import inspect
import re

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._base import all_finite

# -- the module ------------------------------------------------------------------


def initialize(net):
    """skorch's ``initialize``, with a clear error for a module that is not a module."""
    try:
        net.initialize()  # what skorch's fit does before partial_fit
    except Exception as exc:
        check_is_module(net.__dict__.get("module_"), exc)
        raise
    check_is_module(net.module_)


def check_is_module(module, cause=None):
    """A ``ValueError`` naming ``module`` unless it is a ``torch.nn.Module`` (or None)."""
    if module is not None and not isinstance(module, nn.Module):
        raise ValueError(
            "module must be a torch.nn.Module class or instance, or a callable returning "
            f"one; it gave a {type(module).__name__} ({module!r:.60})."
        ) from cause


def eval_forward(module, X):
    """``module(X)`` in eval mode (no dropout draw, no running-statistics update)."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(X)
    finally:
        module.train(training)
    if isinstance(out, tuple):
        out = out[0]  # skorch's convention: the first output is the prediction
    return out


def check_output_width(module, X, n_outputs, n_features):
    """A module must take ``n_features`` columns and return one column per class (or target).

    Otherwise the loss broadcasts a regression target across the columns,
    and a classifier trains extra classes it can then predict, all without
    an error until ``predict`` fails or returns the wrong shape; and a
    module whose input layer has another width fails deep inside torch.
    """
    try:
        out = eval_forward(module, X)
    except RuntimeError as exc:
        raise ValueError(
            f"The module failed on the first rows of X, which has {n_features} features "
            f"(n_features_in_): {exc} Make the module's input layer take {n_features} "
            "features (module__n_features for a class that takes it)."
        ) from exc
    if isinstance(out, torch.Tensor) and tuple(out.shape) != (len(X), n_outputs):
        raise ValueError(
            f"The module returns an output of shape {tuple(out.shape)} for {len(X)} "
            f"samples, but y needs ({len(X)}, {n_outputs}): one column per class "
            "(SAMNetClassifier) or per target (SAMNetRegressor). Pass the output "
            "width through module__* parameters or fix the module's last layer."
        )


def has_batch_norm(module):
    """Whether ``module`` holds a batch normalization layer (``BatchNorm1d``...)."""
    return any(isinstance(sub, _BatchNorm) for sub in module.modules())


#: torch's error when batch normalization is handed a single row in training mode.
SINGLE_ROW_ERROR = "Expected more than 1 value per channel"


def single_row_message(estimator_name, batch_size, m, n_samples):
    """Why batch normalization failed on one row, naming ``batch_size`` and ``m``."""
    return (
        f"{estimator_name}: the module has batch normalization, which cannot normalize "
        "a single row in training mode, and a training batch (or an m-sharpness chunk) "
        f"had one row: batch_size={batch_size}, m={m}, {n_samples} training rows. A "
        "last batch of one row is skipped, but not a batch_size of 1, a single training "
        "row, nor chunks of one row: use batch_size >= 2 * m (and a number of rows whose "
        "remainder by batch_size is 0 or at least 2 * m), or a module without batch "
        "normalization (module__batch_norm=False)."
    )


def needs_closure(optimizer):
    """Whether ``optimizer``'s ``step`` requires a closure (``torch.optim.LBFGS``)."""
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (AttributeError, TypeError, ValueError):
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


# -- the callbacks ---------------------------------------------------------------


def valid_split_message(estimator_name, callback_name, monitor):
    """The error for a callback watching ``monitor``, a validation score, without a split."""
    return (
        f"Callback {callback_name!r} monitors {monitor!r}, a validation score, but "
        f"{estimator_name} has train_split=None (no validation data). Pass "
        "train_split=skorch.dataset.ValidSplit(5) to hold out 20% of the data, or "
        "monitor a training score (e.g. monitor='train_loss')."
    )


class ValidSplitHint:
    """Turn skorch's ``KeyError: 'valid_...'`` (no validation data) into a clear error."""

    def __init__(self, estimator_name):
        self.estimator_name = estimator_name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is KeyError:
            found = re.search(r"'(valid_\w*)'", str(exc))
            if found:
                raise ValueError(
                    valid_split_message(self.estimator_name, "a callback", found.group(1))
                ) from exc
        return False


def check_callbacks(estimator_name, callbacks, train_split, routed):
    """Refuse callbacks that watch validation scores when there is no validation split.

    skorch would fail at the end of the first epoch with ``KeyError:
    'valid_loss'``.
    """
    if train_split is not None or callbacks in (None, "disable"):
        return
    for entry in callbacks:
        name, callback = entry if isinstance(entry, tuple) else (type(entry).__name__, entry)
        monitor = routed.get(f"callbacks__{name}__monitor", getattr(callback, "monitor", None))
        if isinstance(monitor, str) and monitor.startswith("valid_"):
            raise ValueError(valid_split_message(estimator_name, name, monitor))


# -- after training: finiteness and divergence -----------------------------------

#: A batch loss this many times the first one, with a final loss no better than a
#: constant prediction's, means the learning rate threw the network away.
PEAK_FACTOR = 1.5

#: ... and the rise must be this many robust standard deviations (scaled median
#: absolute deviation) of the batch losses: noise alone stays below about 7.
PEAK_NOISE_FACTOR = 12.0


def batch_losses(epochs):
    """The training loss of every batch of ``epochs`` (skorch's history rows), in order."""
    return [b["train_loss"] for e in epochs for b in e["batches"] if "train_loss" in b]


def epoch_losses(history):
    """Mean training loss of each epoch, from skorch's per-batch records.

    The same weighted mean as skorch's ``train_loss`` column, but available
    even with ``callbacks='disable'``.
    """
    losses = []
    for epoch in history:
        batches = [b for b in epoch["batches"] if "train_loss" in b]
        sizes = [b["train_batch_size"] for b in batches]
        losses.append(
            np.average([b["train_loss"] for b in batches], weights=sizes) if batches else np.nan
        )
    return np.asarray(losses, dtype=float)


def first_batch_loss(epochs):
    """The loss of the first batch of ``epochs``: at the weights training started from."""
    losses = batch_losses(epochs)
    return losses[0] if losses else None


def divergence(net, outputs, loss):
    """What is not finite after training ``net``, in words, or None.

    A batch loss or a weight; else the eval-mode ``outputs`` on the
    training data (what ``predict`` computes: batch normalization's running
    statistics may have blown up while the training loss stayed finite);
    else the ``loss`` at the fitted weights (finite outputs whose loss
    overflows float32). Checked by the one finiteness check,
    :func:`sksam._base.all_finite`; the estimator adds the remedy.
    """
    if not all_finite(batch_losses(net.history), list(net.module_.parameters())):
        return "Training diverged: the loss or the weights are not finite."
    if not all_finite(outputs):
        return (
            "Training diverged: the network's outputs in eval mode (what predict "
            "computes) are not finite on the training data."
        )
    if not all_finite(loss):
        return f"Training diverged: the training loss at the fitted weights is {loss}."
    return None


def no_better_than_constant(epochs, baseline):
    """The cause when the loss jumped up and ended no lower than a constant's.

    Judged only when some batch loss rose above ``PEAK_FACTOR`` times
    the first one (``baseline`` is the best constant prediction's loss,
    or ``None``): a learning rate too small also ends near the
    constant prediction's loss, but never sends the loss up.
    """
    losses = epoch_losses(epochs)
    batches = np.array(batch_losses(epochs))
    if not batches.size or not np.isfinite(losses[-1]):
        return None
    start, peak = batches[0], max(batches)
    if baseline is None or peak <= PEAK_FACTOR * start or losses[-1] < baseline:
        return None
    # Small batches of a regression target scatter widely even when the
    # weights barely move (a learning rate too small): a peak that is
    # merely the largest of many noisy batch losses is not a jump.
    spread = 1.4826 * np.median(np.abs(batches - np.median(batches)))
    if peak - start <= PEAK_NOISE_FACTOR * spread:
        return None
    return (
        f"the training loss went up from {start:.4g} to {peak:.4g} and ended at "
        f"{losses[-1]:.4g}, no better than the best constant prediction ({baseline:.4g})"
    )
