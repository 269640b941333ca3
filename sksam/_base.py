"""What the estimators share: constraints, the stopping rule, history, warnings.

scikit-learn's ``BaseMultilayerPerceptron`` is the model: one place owns the
parameter constraints, the validation split, the no-improvement rule, the
fitted history, the verbose line and the warnings, and each estimator adds its
model and its docstring. Nothing here imports an estimator; torch is imported
only inside the functions that need it (devices, threads).

The spine every estimator family stands on:

- :class:`FitTransaction`: a fit succeeds or changes nothing. The fitted
  state is built aside and assigned at once; on an exception (or a
  ``KeyboardInterrupt``) the estimator is put back exactly as it was, with a
  :class:`Snapshot` of what continued training mutates in place.
- :class:`FitHistory`: the one record a fit appends its losses and scores to,
  turned into the history attributes by :meth:`FitHistory.attributes`, which
  have one type and meaning in every estimator (:data:`HISTORY_ATTRIBUTES_DOC`).
- :func:`check_finite`: the one finiteness check, for numbers, arrays and
  tensors.
- :class:`EstimatorHooks`: the hooks a concrete estimator implements, with
  one name per idea across the kernel, two-layer and net families
  (:data:`HOOKS`); each family's base is an ABC that adds its own.
- :func:`sample_weights`: checked sample weights, rescaled to mean 1 where the
  objective is a weighted mean.
- :func:`torch_threads` and :func:`resolve_n_threads`: the thread policy every
  torch ``fit`` and ``predict`` runs under: one thread for small problems
  (:data:`SMALL_PROBLEM`) and inside joblib workers, whose pools would
  otherwise wait on each other; the previous count restored afterwards.
"""

import contextlib
import math
import numbers
import os
import sys
import threading
import warnings
from abc import ABC, abstractmethod

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight

from ._update_rules import SOLVERS
from .exceptions import DivergenceWarning
from .sharpness import LOGIT_MEASURES, MEASURES

__all__ = [
    "COMMON_CONSTRAINTS",
    "EstimatorHooks",
    "FitHistory",
    "FitTransaction",
    "HISTORY_ATTRIBUTES_DOC",
    "HOOKS",
    "MIN_VALIDATION_SAMPLES",
    "N_THREADS_CONSTRAINT",
    "REGRESSOR_CONSTRAINTS",
    "SAM_SHARE_COINCIDE",
    "SMALL_PROBLEM",
    "Snapshot",
    "StoppingRule",
    "all_finite",
    "check_device",
    "check_finite",
    "diagnose_loss_curve",
    "in_joblib_worker",
    "numeric_target",
    "print_progress",
    "rescale_weights",
    "resolve_n_threads",
    "sample_weights",
    "torch_threads",
    "user_stacklevel",
    "validation_split",
    "warn_diverged",
    "warn_interrupted",
    "warn_not_converged",
    "winners",
]

#: ``_parameter_constraints`` shared by the estimators; each merges them into
#: its own (``{**COMMON_CONSTRAINTS, ...}``), as scikit-learn's MLPs do.
COMMON_CONSTRAINTS = {
    "solver": [StrOptions(set(SOLVERS))],
    "rho": [Interval(numbers.Real, 0, None, closed="left")],
    "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    "tol": [Interval(numbers.Real, 0, None, closed="left"), None],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    "sharpness": [StrOptions(set(MEASURES)), None],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}

#: What a regressor changes in :data:`COMMON_CONSTRAINTS`: the logit-normalized
#: sharpness measures read a classifier's logits, which a regressor has not.
REGRESSOR_CONSTRAINTS = {
    "sharpness": [StrOptions(set(MEASURES) - set(LOGIT_MEASURES)), None],
}

#: Fewest samples in each part of the validation split: R^2 of a single
#: sample is 0 whatever the model (its variance is 0), so early stopping on it
#: would silently keep the first iterate.
MIN_VALIDATION_SAMPLES = 2

#: The numpydoc text of the history attributes, one meaning for every
#: estimator: each class docstring carries it verbatim (tested).
HISTORY_ATTRIBUTES_DOC = """\
    n_iter_ : int
        Number of iterations run (over all ``warm_start`` calls).
    loss_curve_ : list of float
        Mean training loss at each iteration, evaluated at the weights the
        iteration started from (with mini-batches, the mean of the batch
        losses over the epoch).
    best_loss_ : float
        ``min(loss_curve_)``.
    validation_scores_ : list of float or None
        :math:`R^2` (accuracy for classifiers) on the validation split at each
        iteration when early stopping was used, else None.
    best_validation_score_ : float or None
        ``max(validation_scores_)``: the score of the weights kept when
        early stopping was used, else None."""


# --------------------------------------------------------------------------
# the spine: the hooks, the transaction, the history record, finiteness
# --------------------------------------------------------------------------

#: The hooks of the estimator families, one name per idea (see :class:`EstimatorHooks`).
HOOKS = {
    # shared by every family (abstract in EstimatorHooks)
    "_encode_targets": "y, checked, as the array the loss reads, with the target's fitted "
    "attributes (classes_, n_outputs_).",
    "_scale_hint": "the words that tell the user how to rescale the data "
    "('standardize X' for a classifier, 'standardize X and y' for a regressor).",
    # shared by two families or more (abstract in the families that call them)
    "_loss": "the training loss (two-layer: a name of the model's losses; net: the "
    "torch criterion).",
    "_y_checks": "validate_data's keywords for y (multi_output, y_numeric).",
    "_validation_score": "the score early stopping maximizes (R^2 for a regressor, "
    "accuracy for a classifier).",
    "_baseline_loss": "the training loss of the best constant prediction (what a fit "
    "that learned nothing ends at).",
    "_logits_fn": "what the logit-normalized sharpness reads, or None (a regressor has no logits).",
    "_labels": "class labels from the model's outputs (classifiers).",
}


class EstimatorHooks(ABC):
    """The contract every sksam estimator base shares: the hooks of :data:`HOOKS`.

    Each family's base (``_BaseSAMKernel``, ``_BaseTwoLayer``,
    ``_BaseSAMNet``) derives from this ABC and declares the family's further
    hooks as abstract methods, so that a subclass that forgets one cannot be
    instantiated and the list of hooks lives in code, not in a docstring.
    The signatures are the family's; the meaning is the one in :data:`HOOKS`.
    """

    @property
    @abstractmethod
    def _scale_hint(self):
        """How to rescale the data, as words for an error message (a class attribute)."""

    @abstractmethod
    def _encode_targets(self, *args, **kwargs):
        """The checked target as the array the loss reads, and its fitted attributes."""


#: The fitted attributes ``validate_data`` sets on the estimator itself.
VALIDATED_ATTRIBUTES = ("n_features_in_", "feature_names_in_")


class Snapshot(ABC):
    """What continued training mutates in place, saved to be put back on failure.

    The estimator's attributes are restored by :class:`FitTransaction`
    itself; a snapshot covers the objects they point to that training
    changes in place (a network's weights, optimizer state, history, random
    state).
    """

    @abstractmethod
    def restore(self):
        """Put the saved state back."""


class FitTransaction:
    """A fit that succeeds or changes nothing: ``with FitTransaction(est) as fit:``.

    On entry the estimator's attributes are saved. The body builds the
    fitted state aside and hands it to :meth:`commit`; on a normal exit it
    is assigned at once: fitted attributes (names ending in ``_``) of an
    earlier fit that are not in it are dropped, except those
    ``validate_data`` has just set (:data:`VALIDATED_ATTRIBUTES`). If the
    body raises, or a ``KeyboardInterrupt`` arrives, ``snapshot.restore()``
    runs and the attributes are put back exactly as they were: an unfitted
    estimator stays unfitted, a fitted one keeps its model. The exception
    propagates.

    Parameters
    ----------
    estimator : estimator
        The estimator being fitted.
    snapshot : Snapshot or None, default=None
        The continued-training state to restore on failure (``warm_start``,
        ``partial_fit``); None when the fit builds everything afresh.

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> est = BaseEstimator()
    >>> with FitTransaction(est) as fit:
    ...     fit.commit({"coef_": 1.0})
    >>> est.coef_
    1.0
    >>> try:
    ...     with FitTransaction(est) as fit:
    ...         est.coef_ = 2.0
    ...         raise ValueError("no")
    ... except ValueError:
    ...     pass
    >>> est.coef_
    1.0
    """

    def __init__(self, estimator, snapshot=None):
        self.estimator = estimator
        self.snapshot = snapshot
        self.fitted = None

    def __enter__(self):
        self.saved = dict(vars(self.estimator))
        return self

    def commit(self, fitted):
        """Hand over the fitted state, assigned when the ``with`` block ends normally.

        Parameters
        ----------
        fitted : dict
            Every attribute of the fit, by name.
        """
        self.fitted = dict(fitted)

    def __exit__(self, kind, value, traceback):
        state = vars(self.estimator)
        if kind is not None:
            try:
                if self.snapshot is not None:
                    self.snapshot.restore()
            finally:
                state.clear()
                state.update(self.saved)
            return False
        if self.fitted is not None:
            for name in [n for n in state if n.endswith("_") and not n.startswith("__")]:
                if name not in self.fitted and name not in VALIDATED_ATTRIBUTES:
                    del state[name]
            state.update(self.fitted)
        return False


class FitHistory:
    """The one record a fit appends to; :meth:`attributes` gives the fitted history.

    Parameters
    ----------
    loss_curve : sequence of float, default=()
        Training losses so far (an earlier fit's, under ``warm_start``).
    validation_scores : sequence of float or None, default=None
        Validation scores so far; None without early stopping.
    n_iter : int, default=0
        Iterations run so far.

    Attributes
    ----------
    loss_curve : list of float
    validation_scores : list of float or None
    n_iter : int
    first_iteration : int
        ``n_iter`` when this record was made: where this call started.
    best_validation_score : float or None
        The score of the weights kept, when it is not ``max(validation_scores)``.
    """

    def __init__(self, loss_curve=(), validation_scores=None, n_iter=0):
        self.loss_curve = list(loss_curve)
        self.validation_scores = None if validation_scores is None else list(validation_scores)
        self.n_iter = int(n_iter)
        self.first_iteration = self.n_iter
        self.best_validation_score = None

    @classmethod
    def continued(cls, estimator, *, early_stopping):
        """The history of a fitted ``estimator``, to extend (``warm_start``)."""
        scores = list(estimator.validation_scores_ or []) if early_stopping else None
        return cls(estimator.loss_curve_, scores, estimator.n_iter_)

    def append(self, loss, score=None):
        """Record one iteration."""
        self.n_iter += 1
        self.loss_curve.append(float(loss))
        if score is not None:
            if self.validation_scores is None:
                self.validation_scores = []
            self.validation_scores.append(float(score))

    def attributes(self):
        """The history attributes of :data:`HISTORY_ATTRIBUTES_DOC`, by name.

        Returns
        -------
        attributes : dict
            ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
            ``best_validation_score_`` and ``n_iter_``.
        """
        curve = [float(v) for v in self.loss_curve]
        scores = best = None
        if self.validation_scores is not None:
            scores = [float(v) for v in self.validation_scores]
            best = self.best_validation_score
            if best is None and scores:
                best = max(scores)
            best = None if best is None else float(best)
        return {
            "loss_curve_": curve,
            "best_loss_": float(min(curve)) if curve else float("nan"),
            "validation_scores_": scores,
            "best_validation_score_": best,
            "n_iter_": int(self.n_iter),
        }


def all_finite(*values):
    """Whether every number in ``values`` is finite.

    Each value is a number, a numpy array, a torch tensor (on any device;
    torch is not imported here) or a list/tuple of these; None is skipped.
    """
    for value in values:
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not all_finite(*value):
                return False
        elif hasattr(value, "detach"):  # a torch tensor, checked where it lives
            if not bool(value.detach().isfinite().all()):
                return False
        elif not np.all(np.isfinite(np.asarray(value, dtype=float))):
            return False
    return True


def check_finite(values, message):
    """Raise ``ValueError(message)`` unless every number in ``values`` is finite.

    The one finiteness check of the estimators (losses, weights, outputs,
    sharpness); the message names the cause and the parameter to change.

    Parameters
    ----------
    values : number, array, tensor, or list/tuple of these
        What must be finite (see :func:`all_finite`).
    message : str
        The error message.

    Raises
    ------
    ValueError
        If a value is NaN or infinite.
    """
    if not all_finite(values):
        raise ValueError(message)


# --------------------------------------------------------------------------
# the validation split and the stopping rule
# --------------------------------------------------------------------------


def validation_split(n_samples, validation_fraction, random_state, *, stratify=None):
    """Training and validation row indices for ``early_stopping``.

    The validation part has ``ceil(validation_fraction * n_samples)`` rows, as
    in :func:`~sklearn.model_selection.train_test_split`.

    Parameters
    ----------
    n_samples : int
        Number of rows to split.
    validation_fraction : float
        Fraction of the rows held out, in (0, 1).
    random_state : int, RandomState instance or None
        Seeds the shuffle (a RandomState instance is advanced).
    stratify : array-like of shape (n_samples,), default=None
        Class labels to stratify on (classifiers).

    Returns
    -------
    train_idx : ndarray of int
        Sorted training rows.
    val_idx : ndarray of int
        Sorted validation rows.

    Raises
    ------
    ValueError
        If either part would have fewer than :data:`MIN_VALIDATION_SAMPLES` rows.
    """
    n_val = math.ceil(validation_fraction * n_samples)
    if n_val < MIN_VALIDATION_SAMPLES or n_samples - n_val < MIN_VALIDATION_SAMPLES:
        raise ValueError(
            f"early_stopping needs at least {MIN_VALIDATION_SAMPLES} validation and "
            f"{MIN_VALIDATION_SAMPLES} training samples, but validation_fraction="
            f"{validation_fraction} of n_samples={n_samples} leaves {n_val} for "
            f"validation and {n_samples - n_val} for training; change "
            "validation_fraction or use more samples."
        )
    train, val = train_test_split(
        np.arange(n_samples),
        test_size=n_val,
        random_state=random_state,
        stratify=stratify,
    )
    return np.sort(train), np.sort(val)


class StoppingRule:
    """MLPRegressor's no-improvement rule, on the training loss or a validation score.

    An iteration *improves* when the loss falls below ``best_loss - tol`` (or,
    with ``on_validation``, the score rises above ``best_score + tol``);
    training stops after more than ``n_iter_no_change`` consecutive iterations
    without improvement, as in
    :class:`~sklearn.neural_network.MLPRegressor`.

    Parameters
    ----------
    tol : float or None
        Tolerance of an improvement. None never stops, but the best loss,
        score and iteration are still tracked.
    n_iter_no_change : int
        Iterations without improvement tolerated.
    on_validation : bool
        Judge by the validation score passed to :meth:`update` (higher is
        better) instead of the training loss.

    Attributes
    ----------
    best_loss : float
        Smallest training loss seen (``inf`` before the first update).
    best_score : float or None
        Highest validation score seen (None without ``on_validation``).
    best_iteration : int
        Iteration (1-based) of the best score, or of the best loss without
        ``on_validation``; 0 before the first update.
    is_best : bool
        Whether the last update set a new best (score with
        ``on_validation``, loss otherwise): the caller snapshots its weights.
    stopped : bool
        Whether the rule has asked to stop.
    n_updates : int
        Number of updates so far.
    """

    def __init__(self, tol, n_iter_no_change, *, on_validation):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.on_validation = on_validation
        self.best_loss = np.inf
        self.best_score = None
        self.best_iteration = 0
        self.is_best = False
        self.stopped = False
        self.n_updates = 0
        self._no_improvement = 0

    def update(self, loss, score=None):
        """Record one iteration.

        Parameters
        ----------
        loss : float
            Training loss of the iteration.
        score : float, optional
            Validation score of the iteration; required with ``on_validation``.

        Returns
        -------
        stop : bool
            True when training should stop.
        """
        self.n_updates += 1
        tol = 0.0 if self.tol is None else self.tol
        if self.on_validation:
            if score is None:
                raise ValueError("StoppingRule(on_validation=True).update needs a score.")
            best = -np.inf if self.best_score is None else self.best_score
            improved = score >= best + tol
            self.is_best = score > best
            if self.is_best:
                self.best_score = float(score)
        else:
            improved = loss <= self.best_loss - tol
            self.is_best = loss < self.best_loss
        if loss < self.best_loss:
            self.best_loss = float(loss)
        if self.is_best:
            self.best_iteration = self.n_updates
        self._no_improvement = 0 if improved else self._no_improvement + 1
        self.stopped = self.tol is not None and self._no_improvement > self.n_iter_no_change
        return self.stopped


# --------------------------------------------------------------------------
# divergence: diagnosis and warnings
# --------------------------------------------------------------------------


#: A loss that ends more than this many times above its start has diverged: a
#: healthy run ends below the loss of its initialization.
RISE_FACTOR = 2.0
#: A loss that at any iteration exceeds its start this many times has jumped by
#: orders of magnitude, even if it came back down (dead units often follow).
JUMP_FACTOR = 1e3
#: "No decrease at all" is only judged on runs of at least this many iterations.
MIN_ITER_NO_DECREASE = 10
#: ... and only when the loss ended this much (relatively) above its start:
#: SAM started at a minimum rises a little without being wrong.
NO_DECREASE_RISE = 0.5


def diagnose_loss_curve(losses, *, initial_loss=None):
    """The cause of a failed training, in words, or None if the curve looks healthy.

    A curve has failed when (checked in this order) a loss is not finite;
    a loss exceeds ``JUMP_FACTOR`` (1000) times the start; the last loss is
    above ``RISE_FACTOR`` (2) times the start; or, over at least
    ``MIN_ITER_NO_DECREASE`` iterations, the loss never went below its start
    and ended ``NO_DECREASE_RISE`` (50 %) above it. Healthy GD and SAM runs,
    including SAM's small oscillations, pass.

    Parameters
    ----------
    losses : sequence of float
        Training loss per iteration.
    initial_loss : float, optional
        The loss before training; defaults to ``losses[0]``.

    Returns
    -------
    cause : str or None
        For example ``'the training loss rose from 0.5 to 7.2e+05 (iteration 12)'``.
    """
    losses = np.asarray(losses, dtype=float)
    if losses.size == 0:
        return None
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        return f"the training loss became non-finite at iteration {bad[0] + 1}"
    start = float(losses[0] if initial_loss is None else initial_loss)
    if not (math.isfinite(start) and start > 0):
        return None  # a zero start (an exact fit) has nothing to diverge from
    peak = int(np.argmax(losses))
    if losses[peak] > JUMP_FACTOR * start:
        return (
            f"the training loss jumped from {start:.3g} to {losses[peak]:.3g} "
            f"(iteration {peak + 1})"
        )
    if losses[-1] > RISE_FACTOR * start:
        return f"the training loss rose from {start:.3g} to {losses[-1]:.3g}"
    if (
        losses.size >= MIN_ITER_NO_DECREASE
        and losses.min() >= start
        and losses[-1] > (1 + NO_DECREASE_RISE) * start
    ):
        return (
            f"the training loss never decreased in {losses.size} iterations "
            f"(from {start:.3g} to {losses[-1]:.3g})"
        )
    return None


def user_stacklevel():
    """``stacklevel`` of the first frame outside sksam, skorch and sklearn's fit wrapper.

    Counted for a ``warnings.warn`` called by the caller of this function's
    caller (the ``warn_*`` helpers), so the warning names the user's line.
    """
    internal = (
        os.path.dirname(os.path.abspath(__file__)) + os.sep,
        os.sep + "skorch" + os.sep,
        os.sep + os.path.join("sklearn", "base.py"),
        os.sep + os.path.join("sklearn", "utils", "_set_output.py"),
    )
    frame, level = sys._getframe(2), 2  # stacklevel 2: the caller of the warn_* helper
    while frame is not None and any(part in frame.f_code.co_filename for part in internal):
        frame, level = frame.f_back, level + 1
    return level


def warn_diverged(estimator_name, cause, remedy):
    """Warn with a :class:`DivergenceWarning` that names the cause and the remedy.

    Parameters
    ----------
    estimator_name : str
        Class name of the estimator.
    cause : str
        What went wrong, e.g. from :func:`diagnose_loss_curve`.
    remedy : str
        What the user should change, as a sentence.
    """
    warnings.warn(
        f"{estimator_name}: training diverged: {cause}. {remedy}",
        DivergenceWarning,
        stacklevel=user_stacklevel(),
    )


def warn_not_converged(estimator_name, max_iter, what="the optimization"):
    """Warn with a :class:`~sklearn.exceptions.ConvergenceWarning` that ``max_iter`` was hit.

    Parameters
    ----------
    estimator_name : str
        Class name of the estimator.
    max_iter : int
        The iteration budget that was exhausted.
    what : str, default='the optimization'
        What has not converged, e.g. ``'the validation score still improves'``.
    """
    warnings.warn(
        f"{estimator_name}: maximum iterations ({max_iter}) reached and {what} "
        "hasn't converged yet; increase max_iter or set tol=None.",
        ConvergenceWarning,
        stacklevel=user_stacklevel(),
    )


def warn_interrupted(estimator_name):
    """Warn that a ``KeyboardInterrupt`` ended training (the current weights are kept).

    Parameters
    ----------
    estimator_name : str
        Class name of the estimator.
    """
    warnings.warn(
        f"{estimator_name}: Training interrupted by user; the current weights are kept.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


# --------------------------------------------------------------------------
# sample weights
# --------------------------------------------------------------------------


def sample_weights(sample_weight, n_samples):
    """Checked ``sample_weight`` as float64, rescaled exactly to a mean near 1.

    Every estimator that takes ``sample_weight`` minimizes a weighted *mean*
    loss, :math:`\\sum_i w_i \\ell_i / \\sum_i w_i`, which does not change when
    all the weights are multiplied by one constant; rescaling them here
    (:func:`rescale_weights`) makes the computation as scale-free as the
    objective, so that weights of 1e-170 or 1e308 fit what weights of 1 do
    (their sums and squares would otherwise underflow or overflow).

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), float or None
        The user's weights (None: all 1); validated by scikit-learn's
        ``_check_sample_weight`` (finite, non-negative, 1-D, one per row).
    n_samples : int
        Number of rows.

    Returns
    -------
    sample_weight : ndarray of shape (n_samples,)
        The weights times a power of two, with a mean in [0.5, 1).

    Raises
    ------
    ValueError
        If a weight is negative or not finite, the shape is wrong, or every
        weight is 0 (the message names ``sample_weight``).
    """
    checked = _check_sample_weight(
        sample_weight,
        np.empty((n_samples, 0)),
        dtype=np.float64,
        ensure_non_negative=True,
        allow_all_zero_weights=True,
    )
    return rescale_weights(checked)


def rescale_weights(weights, name="sample_weight"):
    """Non-negative ``weights`` times the power of two that brings their mean into [0.5, 1).

    A power of two changes no digit, so weights ``2^k w`` give bit-identical
    fits and the rescaling commutes with multiplying by other weights (class
    weights); scaling by the largest weight first keeps the sum from
    overflowing (1e308 weights).

    Parameters
    ----------
    weights : ndarray of shape (n_samples,)
        Non-negative.
    name : str, default='sample_weight'
        What the weights are called in the error messages.

    Returns
    -------
    weights : ndarray of shape (n_samples,)

    Raises
    ------
    ValueError
        If a weight is infinite, or every weight is 0 (the weighted mean is
        undefined).
    """
    top = float(np.max(weights)) if weights.size else 0.0
    if not math.isfinite(top):
        raise ValueError(f"{name} must be finite, but a weight is {top}.")
    if not top > 0:
        raise ValueError(
            f"{name} must contain at least one non-zero number: all {weights.size} "
            "weights are 0, so the weighted mean loss is undefined; give some sample a "
            "positive weight."
        )
    weights = np.ldexp(weights, -np.frexp(top)[1])  # max in [0.5, 1): the sum is finite
    return np.ldexp(weights, -np.frexp(np.mean(weights))[1])


# --------------------------------------------------------------------------
# history, progress lines, devices
# --------------------------------------------------------------------------


#: Below this share of the weights' movement due to SAM's perturbation, a fit
#: stopped where SAM and gradient descent give nearly the same model, and the
#: verbose output of the kernel and two-layer estimators says so. On the
#: gallery's teacher-student problem (200 points, 100 hidden units), default
#: two-layer fits stop at a share of 4-6 % with test errors within 1 % of
#: gradient descent's; rho=0.2 reaches 15-24 % and 4000 steps 20-150 %, where
#: SAM's error is clearly lower.
SAM_SHARE_COINCIDE = 0.10


def print_progress(iteration, loss, score=None):
    """Print the verbose line of one iteration, the same in every estimator.

    Parameters
    ----------
    iteration : int
        The 1-based iteration.
    loss : float
        Its training loss.
    score : float, optional
        Its validation score.
    """
    line = f"Iteration {iteration}, loss = {loss:.8f}"
    if score is not None:
        line += f", validation score = {score:.6f}"
    print(line, flush=True)


def _available_devices():
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device):
    """The torch device ``device`` names, after checking that this machine has it.

    Parameters
    ----------
    device : str or torch.device
        For example ``'cpu'``, ``'cuda'`` or ``'cuda:1'``.

    Returns
    -------
    device : torch.device

    Raises
    ------
    ValueError
        If ``device`` is not a device name, or names a device this machine
        lacks; the message lists the available ones.
    """
    import torch

    available = ", ".join(map(repr, _available_devices()))
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device ({exc}); available: {available}."
        ) from exc
    usable = parsed.type == "cpu"
    if parsed.type == "cuda" and torch.cuda.is_available():
        usable = parsed.index is None or parsed.index < torch.cuda.device_count()
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        usable = mps is not None and mps.is_available()
    if not usable:
        raise ValueError(
            f"device={device!r} is not available on this machine; available: {available}."
        )
    return parsed


def numeric_target(y, estimator_name, dtype=np.float64):
    """``y`` as an array of ``dtype``, or a ``ValueError`` that names ``y``.

    scikit-learn's ``y_numeric=True`` converts only object arrays, so a
    string array such as ``['a', 'b']`` would otherwise fail with numpy's
    bare "could not convert string to float".
    """
    try:
        return np.asarray(y, dtype=dtype)
    except (TypeError, ValueError) as exc:
        example = np.asarray(y).ravel()[:1].tolist()[0]  # 'a', not np.str_('a')
        raise ValueError(
            f"{estimator_name} is a regressor: y must be numeric, got {example!r} "
            "(class labels need a classifier, e.g. SAMNetClassifier)."
        ) from exc


def winners(outputs):
    """Index of the class of each row of ``outputs`` (2D, one column per class or one).

    The column with the largest output (the first on a tie), or, for one
    column (two classes), whether the output is positive: the rule of
    :class:`sklearn.linear_model.RidgeClassifier`, and for outputs read as
    logits the class of highest probability.
    """
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).astype(np.intp)
    return outputs.argmax(axis=1)


# --------------------------------------------------------------------------
# the thread policy of the torch estimators (user guide, "Threads")
# --------------------------------------------------------------------------


#: The constraint of the estimators' ``n_threads`` parameter.
N_THREADS_CONSTRAINT = [
    Interval(numbers.Integral, 1, None, closed="left"),
    Options(numbers.Integral, {-1}),
    None,
]

#: Multiply-adds per training step below which one thread is used by default
#: (measured by ``benchmarks/bench_threads.py``; user guide, "Threads").
SMALL_PROBLEM = 100_000_000


def in_joblib_worker():
    """Whether this code runs inside a worker of a parallel joblib call.

    joblib raises the nesting level of the active backend in its workers
    (processes and threads alike), which is how scikit-learn's
    ``n_jobs`` parallelism reaches us.

    Returns
    -------
    inside : bool
    """
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return getattr(backend, "nesting_level", 0) > 0


def resolve_n_threads(n_threads, work_per_step):
    """The number of torch threads for a call, following the module's policy.

    Parameters
    ----------
    n_threads : int or None
        The estimator's parameter: None for the automatic policy, a positive
        count, or -1 for one thread per core.
    work_per_step : float
        Multiply-adds of one training step (for a two-layer network,
        ``n_samples * n_hidden * (n_features + n_outputs)``).

    Returns
    -------
    n_threads : int or None
        The count to set, or None to leave torch's setting alone.
    """
    if n_threads is None:
        if work_per_step < SMALL_PROBLEM or in_joblib_worker():
            return 1
        return None
    if n_threads == -1:
        return os.cpu_count() or 1
    return int(n_threads)


# torch's thread count is one setting for the whole process: fits running in
# threads (joblib's threading backend) share it, so the first to enter saves it
# and the last to leave restores it.
_LOCK = threading.Lock()
_ACTIVE = {"depth": 0, "saved": None}


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch threads, then restore the previous count.

    Nested and concurrent blocks (fits in joblib threads) are counted: the
    count before the first block is restored when the last one ends.

    Parameters
    ----------
    n_threads : int or None
        None leaves torch's setting alone.

    Yields
    ------
    n_threads : int
        The count in effect inside the block.
    """
    import torch

    if n_threads is None:
        yield torch.get_num_threads()
        return
    with _LOCK:
        if _ACTIVE["depth"] == 0:
            _ACTIVE["saved"] = torch.get_num_threads()
        _ACTIVE["depth"] += 1
        torch.set_num_threads(n_threads)
    try:
        yield n_threads
    finally:
        with _LOCK:
            _ACTIVE["depth"] -= 1
            if _ACTIVE["depth"] == 0:
                torch.set_num_threads(_ACTIVE["saved"])
