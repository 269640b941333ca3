"""Whether a net's training diverged, and why (private).

Functions of a skorch net's history, its module's outputs and the loss of
the best constant prediction: what is not finite after training (an
error), and the loss-curve rule that makes a finite blow-up a warning. The
estimator adds the remedy (which parameter to change).
"""

import numpy as np

from ._base import all_finite

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
