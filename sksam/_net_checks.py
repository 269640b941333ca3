"""Checks and small helpers of the skorch nets (:mod:`sksam.net`), kept apart from the estimators.

Functions of their arguments only: data conversion, error checks on the module,
the callbacks and the fitted network, and the divergence diagnosis. ``sksam.net``
imports this module, never the reverse.
"""

import contextlib
import inspect
import re

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ._skorch import epoch_losses

#: A batch loss this many times the first one, with a final loss no better than a
#: constant prediction's, means the learning rate threw the network away.
PEAK_FACTOR = 1.5

#: ... and the rise must be this many robust standard deviations (scaled median
#: absolute deviation) of the batch losses: noise alone stays below about 7.
PEAK_NOISE_FACTOR = 12.0


def _net_device(net):
    """Where ``net`` holds its module: its ``device``, or its accelerator's."""
    if net.device is None:
        return torch.device(net.accelerator.device)
    return torch.device(net.device)


def _whole_fit_rng(net):
    """Under Accelerate, the whole epoch loop runs with the estimator's random state.

    Accelerate's data loaders and processes draw from torch's global
    generators; one process per device means no other fit shares them.
    """
    if getattr(net, "accelerator", None) is None:
        return contextlib.nullcontext()
    return net.rng.active()


def _for_accelerate(params, accelerator):
    """``params`` for the accelerated net: Accelerate shards DataLoaders and places the data.

    Accelerate shards ``DataLoader``s (not our tensor loader), places the
    data itself, and its loaders draw from the global generators; its
    PrintLog sink (``accelerator.print``) ignores ``verbose``.
    """
    params = dict(params)
    if params.get("callbacks__print_log", ...) is None:
        del params["callbacks__print_log"]
        params.setdefault("callbacks__print_log__sink", _silent)
    del params["iterator_train__generator"]
    params.update(
        iterator_train=DataLoader, iterator_valid=DataLoader, device=None, accelerator=accelerator
    )
    return params


def _silent(*args, **kwargs):
    """A print that prints nothing (PrintLog's sink when ``verbose=0`` under Accelerate)."""


def _first_batch_loss(epochs):
    """The loss of the first batch of ``epochs``: at the weights training started from."""
    for epoch in epochs:
        for batch in epoch["batches"]:
            if "train_loss" in batch:
                return batch["train_loss"]
    return None


def _labels(y_encoded):
    return np.asarray(y_encoded, dtype=np.int64)


def _is_cpu(device):
    try:
        return torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        return True  # fit will say what is wrong with it


def _to_tensor(X, device):
    # torch warns on read-only arrays (memory maps); copy those.
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])
    return torch.as_tensor(X, device=device)


def _valid_split_message(estimator_name, callback_name, monitor):
    return (
        f"Callback {callback_name!r} monitors {monitor!r}, a validation score, but "
        f"{estimator_name} has train_split=None (no validation data). Pass "
        "train_split=skorch.dataset.ValidSplit(5) to hold out 20% of the data, or "
        "monitor a training score (e.g. monitor='train_loss')."
    )


class _valid_split_hint:
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
                    _valid_split_message(self.estimator_name, "a callback", found.group(1))
                ) from exc
        return False


def _check_finite(net, remedy_suffix=""):
    # Batch by batch: an epoch interrupted before its first batch has no loss.
    losses = [b["train_loss"] for e in net.history for b in e["batches"] if "train_loss" in b]
    params = torch.cat([p.detach().reshape(-1) for p in net.module_.parameters()])
    if not (np.all(np.isfinite(losses)) and bool(torch.isfinite(params).all())):
        raise ValueError(
            "Training diverged: the loss or the weights are not finite. Use a smaller lr "
            f"(or rho), or standardize X{remedy_suffix}."
        )


def _initialize(net):
    """skorch's ``initialize``, with a clear error for a module that is not a module."""
    try:
        net.initialize()  # what skorch's fit does before partial_fit
    except Exception as exc:
        _check_is_module(net.__dict__.get("module_"), exc)
        raise
    _check_is_module(net.module_)


def _check_is_module(module, cause=None):
    if module is not None and not isinstance(module, nn.Module):
        raise ValueError(
            "module must be a torch.nn.Module class or instance, or a callable returning "
            f"one; it gave a {type(module).__name__} ({module!r:.60})."
        ) from cause


def _check_finite_outputs(outputs, remedy_suffix=""):
    """The trained network must predict finite values where it was trained.

    The training loss is computed in training mode; ``predict`` runs in
    eval mode (``outputs``), where batch normalization uses its running
    statistics, which may have blown up while the training loss stayed finite.
    """
    if not bool(torch.isfinite(outputs).all()):
        raise ValueError(
            "Training diverged: the network's outputs in eval mode (what predict "
            "computes) are not finite on the training data. Use a smaller lr (or rho), "
            f"or standardize X{remedy_suffix}."
        )


def _eval_forward(module, X):
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


def _check_output_width(module, X, n_outputs, n_features):
    """A module must take ``n_features`` columns and return one column per class (or target).

    Otherwise the loss broadcasts a regression target across the columns,
    and a classifier trains extra classes it can then predict, all without
    an error until ``predict`` fails or returns the wrong shape; and a
    module whose input layer has another width fails deep inside torch.
    """
    try:
        out = _eval_forward(module, X)
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


def _needs_closure(optimizer):
    """Whether ``optimizer``'s ``step`` requires a closure (``torch.optim.LBFGS``)."""
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (AttributeError, TypeError, ValueError):
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def _check_n_classes(classes, where):
    if len(classes) < 2:
        raise ValueError(
            f"SAMNetClassifier needs at least 2 classes {where}; "
            f"got {len(classes)} class(es): {np.asarray(classes).tolist()!r}."
        )


def _encode(y, classes, method):
    """``y`` as indices into ``classes``; labels outside ``classes`` are an error."""
    unseen = np.setdiff1d(np.unique(y), classes)
    if len(unseen):
        raise ValueError(
            f"`y` has classes not in `self.classes_` ({method} keeps the classes): "
            f"`self.classes_` has {classes}, `y` has unseen {unseen}."
        )
    return np.searchsorted(classes, y)


def _check_callbacks(estimator_name, callbacks, train_split, routed):
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
            raise ValueError(_valid_split_message(estimator_name, name, monitor))


def _subsample(X, y, seed, max_samples):
    """At most ``max_samples`` rows (``sharpness_max_samples``), drawn with the fit's seed."""
    rng = np.random.RandomState(seed)
    n = len(X)
    if max_samples is not None and n > max_samples:
        index = torch.as_tensor(rng.choice(n, max_samples, replace=False), device=X.device)
        X, y = X[index], y[index]
    return X, y, rng


def _no_better_than_constant(epochs, baseline):
    """The cause when the loss jumped up and ended no lower than a constant's.

    Judged only when some batch loss rose above ``PEAK_FACTOR`` times
    the first one (``baseline`` is the best constant prediction's loss,
    or ``None``): a learning rate too small also ends near the
    constant prediction's loss, but never sends the loss up.
    """
    losses = epoch_losses(epochs)
    batch_losses = np.array(
        [b["train_loss"] for e in epochs for b in e["batches"] if "train_loss" in b]
    )
    if not batch_losses.size or not np.isfinite(losses[-1]):
        return None
    start, peak = batch_losses[0], max(batch_losses)
    if baseline is None or peak <= PEAK_FACTOR * start or losses[-1] < baseline:
        return None
    # Small batches of a regression target scatter widely even when the
    # weights barely move (a learning rate too small): a peak that is
    # merely the largest of many noisy batch losses is not a jump.
    spread = 1.4826 * np.median(np.abs(batch_losses - np.median(batch_losses)))
    if peak - start <= PEAK_NOISE_FACTOR * spread:
        return None
    return (
        f"the training loss went up from {start:.4g} to {peak:.4g} and ended at "
        f"{losses[-1]:.4g}, no better than the best constant prediction ({baseline:.4g})"
    )
