"""SAMNetClassifier and SAMNetRegressor: PyTorch networks trained by GD or SAM through skorch.

Design: **composition**. Each estimator is a plain scikit-learn estimator
that validates the data, prepares the targets and builds a skorch net in
``fit``, stored as ``net_`` (the skorch machinery lives in
:mod:`sksam._skorch`, the default network in :mod:`sksam.modules`). A
subclass of skorch's net would inherit its departures from scikit-learn's
contract (attributes set in ``__init__``, no ``n_features_in_``, no errors on
NaN or empty data, integer labels only); composition passes scikit-learn's
estimator checks and still gives users the whole skorch API through
``net_``. The two estimators share everything but the targets, the loss
and the prediction (:class:`_BaseSAMNet`).

skorch's double-underscore routing works on the estimators themselves:
``module__*``, ``optimizer__*``, ``criterion__*``, ``iterator_train__*``,
``iterator_valid__*``, ``dataset__*`` and ``callbacks__*`` keyword arguments
are stored as attributes (as skorch does), returned by ``get_params``,
accepted by ``set_params`` and therefore by ``clone`` and ``GridSearchCV``.
"""

import abc
import contextlib
import copy
import inspect
import re
import warnings
from numbers import Integral, Real

import numpy as np
import torch

# Every torch.optim optimizer imports torch._dynamo (and sympy with it) the
# first time one is built; paid here, at import, so that a first fit does not
# take a second longer than the next one.
import torch._dynamo  # noqa: F401
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._base import (
    HISTORY_ATTRIBUTES_DOC,
    REGRESSOR_CONSTRAINTS,
    EstimatorHooks,
    FitHistory,
    FitTransaction,
    all_finite,
    check_device,
    diagnose_loss_curve,
    numeric_target,
    resolve_n_threads,
    torch_threads,
    user_stacklevel,
    warn_diverged,
    warn_interrupted,
)
from ._family import (
    FAMILY_OPTIONS,
    FAMILY_SOLVERS,
    BayesianSAM,
    family_constraints,
    family_for,
)
from ._skorch import (
    NetRandomState,
    NetSnapshot,
    TensorBatchLoader,  # noqa: F401  (importable from here, as before)
    accelerated_params,
    is_cpu,
    net_device,
    skorch_net_class,
    to_tensor,
    whole_fit_random_state,
)
from ._update_rules import SCHEDULED_SOLVERS, SOLVERS, is_perturbed, schedule_for
from .exceptions import DivergenceWarning
from .modules import MLP
from .optim import SAM, MomentumSAM
from .sharpness import LOGIT_MEASURES, MEASURES, measure_sharpness

# MLP (sksam.modules) is re-exported here for code written before the split.
__all__ = ["SAMNetClassifier", "SAMNetRegressor", "MLP"]

#: Prefixes of the skorch parameters that ``**kwargs`` may route.
ROUTED_PREFIXES = (
    "module",
    "optimizer",
    "criterion",
    "iterator_train",
    "iterator_valid",
    "dataset",
    "callbacks",
)

# Set by the estimator itself; a routed duplicate would silently disagree.
_RESERVED = {
    "optimizer__lr": "lr",
    "optimizer__rho": "rho",
    "optimizer__solver": "solver",
    "optimizer__adaptive": "solver",
    "optimizer__schedule": "solver",
    "optimizer__rule": "solver",
    "optimizer__perturb": "solver",
    "optimizer__base_optimizer": "optimizer",
    "optimizer__model": "module",
    "iterator_train__batch_size": "batch_size",
}


def _is_routed(name):
    prefix, sep, _ = name.partition("__")
    return bool(sep) and prefix in ROUTED_PREFIXES


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


#: torch's error when batch normalization is handed a single row in training mode.
SINGLE_ROW_ERROR = "Expected more than 1 value per channel"


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


@contextlib.contextmanager
def valid_split_hint(estimator_name):
    """Turn skorch's ``KeyError: 'valid_...'`` (no validation data) into a clear error."""
    try:
        yield
    except KeyError as exc:
        found = re.search(r"'(valid_\w*)'", str(exc))
        if not found:
            raise
        raise ValueError(valid_split_message(estimator_name, "a callback", found.group(1))) from exc


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


# -- class labels ---------------------------------------------------------------


def validate_classes(classes):
    """``classes`` of ``partial_fit`` as scikit-learn takes them: sorted unique labels.

    A 1-D array of finite, discrete labels (duplicates are dropped, as
    scikit-learn's ``partial_fit`` does); anything else is a ``ValueError``
    naming ``classes``.
    """
    array = np.asarray(classes)
    if array.ndim != 1:
        raise ValueError(
            f"classes must be a 1-D array of class labels; got an array of shape {array.shape}."
        )
    try:
        # scikit-learn's check casts NaN/inf to int on the way to its error:
        # that cast's RuntimeWarning says nothing the error below does not
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(unique_labels(array))
    except ValueError as exc:
        raise ValueError(
            f"classes must hold finite, discrete class labels; got {array.tolist()!r:.200}: {exc}"
        ) from exc


def check_n_classes(classes, where):
    """At least two classes, or a ``ValueError`` that says ``where`` they were counted."""
    if len(classes) < 2:
        raise ValueError(
            f"SAMNetClassifier needs at least 2 classes {where}; "
            f"got {len(classes)} class(es): {np.asarray(classes).tolist()!r}."
        )


def encode(y, classes, method):
    """``y`` as int64 indices into ``classes``; labels outside ``classes`` are an error."""
    unseen = np.setdiff1d(np.unique(y), classes)
    if len(unseen):
        raise ValueError(
            f"`y` has classes not in `self.classes_` ({method} keeps the classes): "
            f"`self.classes_` has {classes}, `y` has unseen {unseen}."
        )
    return np.asarray(np.searchsorted(classes, y), dtype=np.int64)  # CrossEntropyLoss's


def subsample(X, y, seed, max_samples):
    """At most ``max_samples`` rows (``sharpness_max_samples``), drawn with the fit's seed."""
    rng = np.random.RandomState(seed)
    n = len(X)
    if max_samples is not None and n > max_samples:
        index = torch.as_tensor(rng.choice(n, max_samples, replace=False), device=X.device)
        X, y = X[index], y[index]
    return X, y, rng


def _net_view(name, doc, attribute=None):
    """The read-only property ``name``: the fitted ``net_``'s ``attribute`` (or ``name``)."""
    return property(lambda self: getattr(self._fitted_net(name), attribute or name), doc=doc)


class _BaseSAMNet(EstimatorHooks, BaseEstimator):
    """What the classifier and the regressor share: parameters, training, sharpness.

    An ABC: its abstract members are the hooks a subclass implements, named
    as in ``sksam._base.HOOKS`` (``_encode_targets``, ``_scale_hint``,
    ``_loss``, ``_baseline_loss``, ``_logits_fn``), plus the net's own:
    ``_task`` (``'classifier'`` or ``'regressor'``, which picks the skorch
    net), ``_output_name`` (the keyword a module class takes for its output
    size), ``_default_lr`` and ``_n_outputs`` (the width of the output).
    """

    @property
    @abc.abstractmethod
    def _task(self):
        """``'classifier'`` or ``'regressor'``: the skorch net to build (a class attribute)."""

    @property
    @abc.abstractmethod
    def _output_name(self):
        """The keyword a module class takes for its output width (a class attribute)."""

    @property
    @abc.abstractmethod
    def _default_lr(self):
        """The learning rate of ``lr=None`` (a class attribute)."""

    @staticmethod
    @abc.abstractmethod
    def _loss():
        """The training loss, a new torch criterion module."""

    @abc.abstractmethod
    def _encode_targets(self, X, y, *, warm, partial, classes):
        """``(X, y, targets)``: checked data, ``y`` as the loss reads it, and the
        target's fitted attributes (``classes_`` or ``n_outputs_``)."""

    @abc.abstractmethod
    def _n_outputs(self, y):
        """Output columns the module must return for the encoded ``y``."""

    @abc.abstractmethod
    def _baseline_loss(self, y):
        """The loss of the best constant prediction of ``y`` (a tensor), or None."""

    @abc.abstractmethod
    def _logits_fn(self, module, X, y):
        """What the logit-normalized sharpness reads, or None (a regressor has no logits)."""

    _parameter_constraints = {
        "module": [None, callable],
        "solver": [
            StrOptions(
                set(SOLVERS) | set(SCHEDULED_SOLVERS) | set(FAMILY_SOLVERS) | {"msam", "bsam"}
            )
        ],
        "sam_every": [Interval(Integral, 1, None, closed="left")],
        **family_constraints(),
        "rho": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "optimizer": [callable],
        "train_split": [None, callable],
        "callbacks": [None, list, StrOptions({"disable"})],
        "device": [str, torch.device],
        "sharpness": [StrOptions(set(MEASURES)), None],
        "sharpness_max_samples": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "m": [Interval(Integral, 1, None, closed="left")],
        "precision": [StrOptions({"float32", "bfloat16", "float16"})],
        "accelerator": "no_validation",
        "n_threads": [
            Options(Integral, {-1}),
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
    }

    def __init__(
        self,
        module=None,
        *,
        solver="sam",
        rho=0.05,
        lr=None,
        max_epochs=20,
        batch_size=32,
        optimizer=torch.optim.SGD,
        train_split=None,
        callbacks=None,
        device="cpu",
        sharpness="top_eigenvalue",
        sharpness_max_samples=1000,
        random_state=None,
        warm_start=False,
        verbose=0,
        m=1,
        precision="float32",
        accelerator=None,
        n_threads=None,
        sam_every=5,
        gsam_alpha=0.4,
        wsam_gamma=0.9,
        fsam_sigma=1.0,
        fsam_lmbda=0.9,
        **kwargs,
    ):
        self.module = module
        self.solver = solver
        self.rho = rho
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.train_split = train_split
        self.callbacks = callbacks
        self.device = device
        self.sharpness = sharpness
        self.sharpness_max_samples = sharpness_max_samples
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.m = m
        self.precision = precision
        self.accelerator = accelerator
        self.n_threads = n_threads
        self.sam_every = sam_every
        self.gsam_alpha = gsam_alpha
        self.wsam_gamma = wsam_gamma
        self.fsam_sigma = fsam_sigma
        self.fsam_lmbda = fsam_lmbda
        for name, value in kwargs.items():  # skorch's way: routed params are attributes
            setattr(self, name, value)

    # -- parameters: the explicit ones plus skorch's routed ones -------------

    def _extra_params(self):
        """The ``**kwargs`` given to ``__init__`` or ``set_params``.

        Every public attribute that is neither an explicit parameter nor a
        fitted attribute (trailing underscore), as in skorch.
        """
        explicit = self._get_param_names()
        return {
            name: value
            for name, value in vars(self).items()
            if not (name.startswith("_") or name.endswith("_") or name in explicit)
        }

    def _routed_params(self):
        """The extra parameters, checked to be skorch routed ones (in ``fit``)."""
        extra = self._extra_params()
        for name in extra:
            if not _is_routed(name):
                raise ValueError(
                    f"Unknown parameter {name!r} of {type(self).__name__}; extra keyword "
                    "arguments must be skorch routed parameters starting with one of "
                    f"{', '.join(p + '__' for p in ROUTED_PREFIXES)}."
                )
        return extra

    def get_params(self, deep=True):
        """Get the parameters of this estimator, including skorch routed ones.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained estimators.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=deep)
        params.update(self._extra_params())
        return params

    def set_params(self, **params):
        """Set parameters, including skorch routed ones (``module__dropout=...``).

        Routed names (``module__*``, ``optimizer__*``, ``callbacks__*``...)
        are stored as attributes, as skorch does; any other name must be a
        parameter of the estimator, as in scikit-learn.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator
            This estimator.

        Raises
        ------
        ValueError
            For a name that is neither a parameter nor a routed one (a typo
            such as ``rhoo``), naming it and the valid parameters.
        """
        explicit = self._get_param_names()
        for name in list(params):
            if name not in explicit and _is_routed(name):
                setattr(self, name, params.pop(name))
        return super().set_params(**params)

    def __sklearn_is_fitted__(self):
        """Fitted once a network is trained (not by a ``fit`` that failed midway)."""
        return hasattr(self, "net_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = not is_cpu(self.device)  # cuDNN/cuBLAS kernels
        return tags

    # -- skorch's names, as read-only views onto net_ -------------------------------

    def _fitted_net(self, name):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: {name} is the "
                "fitted skorch net's (net_), which fit builds."
            )
        return self.net_

    history_ = _net_view(
        "history_",
        "skorch's ``History`` of the fitted net (``net_.history``), read-only.",
        attribute="history",
    )
    history = _net_view("history", "The name skorch users type: the same as ``history_``.")
    module_ = _net_view("module_", "The trained ``torch.nn.Module`` (``net_.module_``), read-only.")
    optimizer_ = _net_view("optimizer_", "The fitted optimizer (``net_.optimizer_``), read-only.")
    criterion_ = _net_view("criterion_", "The loss module (``net_.criterion_``), read-only.")

    def save_params(self, **kwargs):
        """Save the fitted net's parameters: skorch's ``net_.save_params``.

        Parameters
        ----------
        **kwargs : dict
            skorch's arguments (``f_params``, ``f_optimizer``, ``f_history``,
            ``f_criterion``, ``use_safetensors``).

        Returns
        -------
        None
        """
        return self._fitted_net("save_params").save_params(**kwargs)

    def load_params(self, **kwargs):
        """Load parameters into the fitted net: skorch's ``net_.load_params``.

        The estimator must be fitted (``fit`` builds the network, whose shape
        depends on the data); loading then replaces its weights, optimizer
        state or history.

        Parameters
        ----------
        **kwargs : dict
            skorch's arguments (``f_params``, ``f_optimizer``, ``f_history``,
            ``f_criterion``, ``checkpoint``, ``use_safetensors``).

        Returns
        -------
        None
        """
        return self._fitted_net("load_params").load_params(**kwargs)

    # -- training ------------------------------------------------------------------

    def _training_device(self, warm):
        if warm:
            if self.accelerator is not None:
                raise ValueError(
                    f"{type(self).__name__} with accelerator= trains from scratch at every "
                    "fit: warm_start=True and partial_fit are not supported with it."
                )
            return net_device(self.net_)
        if self.accelerator is not None:
            if self.precision != "float32":
                raise ValueError(
                    f"precision={self.precision!r} with accelerator=: set the precision on "
                    "the Accelerator (Accelerator(mixed_precision='bf16' or 'fp16')) and "
                    "leave precision='float32'."
                )
            return torch.device(self.accelerator.device)
        return check_device(self.device)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network on ``(X, y)`` for ``max_epochs`` epochs.

        With ``warm_start=True`` on a fitted estimator, training continues
        from the current weights and optimizer state instead. A call that
        fails leaves the estimator as it was (see ``warm_start``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (:class:`SAMNetClassifier`), or targets, cast to
            float32 (:class:`SAMNetRegressor`).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, partial=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y):
        """Train the network for one epoch over ``(X, y)``.

        The first call builds the network; later calls (and calls after
        ``fit``) continue from the current weights and optimizer state, as
        ``warm_start`` does, whatever ``warm_start`` and ``max_epochs`` are.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, cast to float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets, with as many columns as at the first call.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._fit(X, y, partial=True)

    def _fit(self, X, y, *, partial, classes=None):
        """``fit`` (``partial=False``) and ``partial_fit``: one transaction.

        Either the call succeeds, or the estimator is left as it was before
        it: its attributes are put back, and a network whose training was
        continued (``warm_start``, ``partial_fit``) gets back its weights,
        buffers, optimizer state, history and random state. Callbacks are
        user objects and keep whatever state they reached. A
        ``KeyboardInterrupt`` in the epoch loop ends training early and the
        model is kept, with a warning; anywhere else it is re-raised.
        """
        warm = self.__sklearn_is_fitted__() and (partial or self.warm_start)
        with FitTransaction(self, NetSnapshot(self.net_) if warm else None) as fit:
            X, y, targets = self._encode_targets(X, y, warm=warm, partial=partial, classes=classes)
            vars(self).update(targets)  # what the training reads (n_outputs)
            fitted = self._train(X, y, 1 if partial else self.max_epochs, warm)
            fit.commit({**targets, **fitted})
        return self

    def _train(self, X, y, epochs, warm, seed=None):
        """Train ``net_`` (built afresh unless ``warm``) for ``epochs`` epochs.

        ``y`` is the target array the loss expects (class indices, or a 2-D
        float array). The random numbers (initialization, batch order,
        dropout) come from the net's own :class:`~sksam._skorch.NetRandomState`,
        seeded from ``random_state`` for a new network and carried on by
        continued training, so that continued training draws the batch
        orders and dropout masks one uninterrupted run would; torch's global
        generators are left as they were. Returns the fitted attributes
        (the caller commits them); ``seed``, drawn from ``random_state``
        unless given, seeds a new net's random state and the sharpness
        sample.
        """
        device = self._training_device(warm)
        if not warm:
            check_callbacks(
                type(self).__name__, self.callbacks, self.train_split, self._extra_params()
            )
        X_t = to_tensor(X, device)
        y_t = torch.as_tensor(y, device=device)
        if seed is None:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        n_outputs = self._n_outputs(y)
        if warm:
            net = self.net_
            if getattr(net, "rng", None) is None:  # pickled before the net owned its state
                net.rng = NetRandomState(seed, device)
                if getattr(net, "accelerator", None) is None:
                    net.iterator_train__generator = net.rng.generator
        else:
            net = self._build_net(X.shape[1], n_outputs, NetRandomState(seed, device), len(X))
        first_epoch = len(net.history) if warm else 0
        with valid_split_hint(type(self).__name__):
            if not warm:
                with net.rng.active():
                    initialize(net)
                    if getattr(net, "accelerator", None) is None:
                        self._check_module(net.module_, X_t, n_outputs)
                        self._skip_single_rows(net)
            with self._threads(net, self._batch_rows(len(X))), whole_fit_random_state(net):
                self._run_epochs(net, X_t, y_t, epochs)
        if net.interrupted_:
            warn_interrupted(type(self).__name__)
        X_s, y_s, rng = subsample(X_t, y_t, seed, self.sharpness_max_samples)
        final_loss = self._final_loss(net, X_s, y_s, lambda: (X, y, epochs, warm, seed))
        with net.rng.active():
            sharpness = self._sharpness(net.module_, X_s, y_s, rng)
        history = FitHistory(epoch_losses(net.history), None, len(net.history))
        # an epoch stopped before its first batch (Ctrl-C, a callback) has no loss
        trained = [e for e in net.history[first_epoch:] if any(map(bool, e["batches"]))]
        self._warn_if_diverged(trained, y_t, final_loss, lambda: (X, y, epochs, warm, seed))
        if self.verbose:
            self._say_if_sam_cannot_act(history.loss_curve, y_t)
        return {"net_": net, **history.attributes(), "sharpness_": sharpness}

    def _say_if_sam_cannot_act(self, loss_curve, y):
        """A verbose line when training stopped where SAM and GD coincide.

        Far from a minimum (a training loss still a sizeable part of the
        constant prediction's), SAM and GD follow nearly the same path: SAM
        changes which minimum training settles in, and a short or slow
        schedule stops before reaching one.
        """
        if not self._perturbed() or not len(loss_curve):
            return
        final, baseline = loss_curve[-1], self._baseline_loss(y)
        if not baseline or not np.isfinite(final) or final <= FAR_FROM_MINIMUM * baseline:
            return
        print(
            f"{type(self).__name__}: the training loss ended at {final:.3g}, "
            f"{final / baseline:.0%} of a constant prediction's ({baseline:.3g}): training "
            f"stopped far from a minimum, where solver={self.solver!r} and solver='gd' "
            "follow nearly the same path and predict alike. SAM acts near a minimum: "
            "train longer (max_epochs), faster (lr, optimizer__momentum=0.9), or with a "
            "larger rho."
        )

    def _check_module(self, module, X, n_outputs):
        """The module must take ``X``'s width and return one column per class (or target).

        Otherwise the loss broadcasts a regression target across the columns,
        and a classifier trains extra classes it can then predict, all without
        an error until ``predict`` fails or returns the wrong shape; and a
        module whose input layer has another width fails deep inside torch.
        """
        X, n_features = X[:2], X.shape[1]
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

    @staticmethod
    def _skip_single_rows(net):
        """A module with batch normalization skips a last training batch of one row.

        Batch normalization cannot normalize one row in training mode;
        dropping such a batch (one row in an epoch, a different row each
        epoch when shuffling) is what ``drop_last`` does for every short
        batch, for less.
        """
        if any(isinstance(sub, _BatchNorm) for sub in net.module_.modules()):
            # a routed parameter, as skorch stores them (set_params would re-initialize)
            net.iterator_train__drop_single_row = True

    def _run_epochs(self, net, X, y, epochs):
        """``net.partial_fit``; batch normalization on a single row names ``batch_size``."""
        try:
            net.partial_fit(X, y, epochs=epochs)
        except ValueError as exc:
            if SINGLE_ROW_ERROR not in str(exc):
                raise
            raise ValueError(
                f"{type(self).__name__}: the module has batch normalization, which cannot "
                "normalize a single row in training mode, and a training batch (or an "
                f"m-sharpness chunk) had one row: batch_size={self.batch_size}, m={self.m}, "
                f"{len(X)} training rows. A last batch of one row is skipped, but not a "
                "batch_size of 1, a single training row, nor chunks of one row: use "
                "batch_size >= 2 * m (and a number of rows whose remainder by batch_size is "
                "0 or at least 2 * m), or a module without batch normalization "
                "(module__batch_norm=False)."
            ) from exc

    def _batch_rows(self, n_samples):
        return n_samples if self.batch_size is None else min(self.batch_size, n_samples)

    def _net_output(self, method, X):
        """``net_``'s ``method`` (``'predict'``, ``'predict_proba'``) on ``X``, checked."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with self._threads(self.net_, len(X)):
            return getattr(self.net_, method)(to_tensor(X, net_device(self.net_)))

    def _threads(self, net, n_rows):
        """The thread policy of :mod:`sksam._base` for ``n_rows`` rows through ``net``."""
        n_params = sum(p.numel() for p in net.module_.parameters())
        return torch_threads(resolve_n_threads(self.n_threads, n_rows * n_params))

    def _build_net(self, n_features, n_outputs, rng, n_samples):
        """The skorch net: the estimator's settings, with the user's routed ones on top."""
        params = {
            **self._net_params(n_outputs, rng, n_samples),
            **self._module_params(n_features, n_outputs),
            **self._user_params(),
        }
        if self.accelerator is None:
            return skorch_net_class(self._task, accelerated=False)(**params)
        net_class = skorch_net_class(self._task, accelerated=True)
        return net_class(**accelerated_params(params, self.accelerator))

    def _net_params(self, n_outputs, rng, n_samples):
        return dict(
            criterion=type(self._loss()),
            **self._optimizer_params(n_samples),
            lr=self._lr(),
            max_epochs=self.max_epochs,
            batch_size=-1 if self.batch_size is None else self.batch_size,
            train_split=self.train_split,
            # skorch's contract: callbacks are the user's objects, used as
            # they are (they may hold locks, files, writers); clone and
            # GridSearchCV copy them as they copy any parameter.
            callbacks=self.callbacks,
            # PrintLog formats a table at every epoch even when it prints nothing
            **({} if self.verbose else {"callbacks__print_log": None}),
            iterator_train=TensorBatchLoader,
            iterator_train__shuffle=True,
            iterator_train__generator=rng.generator,
            iterator_valid=TensorBatchLoader,
            device=self.device,
            verbose=self.verbose,
            m=self.m,
            precision=self.precision,
            rng=rng,
            **self._net_kwargs(n_outputs),
        )

    def _module_params(self, n_features, n_outputs):
        """The module (a copy of an instance), and the shapes a module class takes."""
        module = MLP if self.module is None else self.module
        if isinstance(module, nn.Module):
            return {"module": copy.deepcopy(module)}  # fit must not train the user's instance
        return {"module": module, **self._shape_params(module, n_features, n_outputs)}

    def _user_params(self):
        """The routed ``**kwargs``, none of which may duplicate an explicit parameter."""
        routed = self._routed_params()
        for name, owner in _RESERVED.items():
            if name in routed:
                raise ValueError(f"Set {owner!r} on {type(self).__name__} instead of {name!r}.")
        return routed

    def _net_kwargs(self, n_outputs):
        return {}

    def _optimizer_params(self, n_samples):
        """SAM around the base optimizer; a closure-driven base alone for plain GD.

        A base optimizer whose ``step`` needs a closure (``torch.optim.LBFGS``)
        evaluates the loss several times per step along its own line
        search; plain gradient descent hands it skorch's closure directly,
        and a perturbed solver, which would have to take the ascent inside
        that line search, is refused.
        """
        if self.solver in ("looksam", "aesam") and self.m > 1:
            raise ValueError(
                f"solver={self.solver!r} decides on the gradient of the whole batch "
                f"and cannot be shared by m-sharpness chunks; got m={self.m}. Use m=1, "
                "or solver='every_k' or 'rst'."
            )
        if self.solver == "msam":
            if self.m > 1 or self.precision != "float32" or self.accelerator is not None:
                raise ValueError(
                    "solver='msam' (Momentum-SAM) takes one plain gradient per step: it "
                    "supports m=1, precision='float32' and accelerator=None only; got "
                    f"m={self.m}, precision={self.precision!r}, "
                    f"accelerator={self.accelerator!r}."
                )
            if self.optimizer is not torch.optim.SGD:
                raise ValueError(
                    "solver='msam' (Momentum-SAM) is SGD with momentum: it needs "
                    f"optimizer=torch.optim.SGD, got {self.optimizer!r}."
                )
            # momentum as the base SGD's (0 unless optimizer__momentum is routed)
            return dict(optimizer=MomentumSAM, optimizer__rho=self.rho, optimizer__momentum=0.0)
        seed = self.random_state if isinstance(self.random_state, Integral) else 0
        if self.solver == "bsam":  # its posterior's precision counts the training rows
            return self._bsam_optimizer_params(n_samples, int(seed))
        rule, schedule = schedule_for(self.solver, self.sam_every, int(seed))
        family = {}
        if rule in FAMILY_SOLVERS:  # GSAM, WSAM, F-SAM: a rule with these options; SAM-ON: a subset
            options = {name: getattr(self, name) for name in FAMILY_OPTIONS}
            rule, family = family_for(rule, **options)
        if needs_closure(self.optimizer):
            if is_perturbed(rule, self.rho):
                raise ValueError(
                    f"optimizer={getattr(self.optimizer, '__name__', self.optimizer)} needs "
                    f"a closure at every step (a line search) and cannot be the base of "
                    f"solver={self.solver!r} with rho={self.rho!r}: use solver='gd' (or "
                    "rho=0) with it, or a first-order optimizer such as torch.optim.SGD."
                )
            if self.m != 1 or self.precision != "float32":
                raise ValueError(
                    f"optimizer={getattr(self.optimizer, '__name__', self.optimizer)} steps "
                    "through skorch's own closure, which supports neither m > 1 nor "
                    f"precision={self.precision!r}: use m=1 and precision='float32' with it."
                )
            return {"optimizer": self.optimizer}
        return dict(
            optimizer=SAM,
            optimizer__base_optimizer=self.optimizer,
            optimizer__rho=self.rho,
            optimizer__solver=rule,
            optimizer__schedule=schedule,
            **{f"optimizer__{name}": value for name, value in family.items()},
        )

    def _lr(self):
        return self._default_lr if self.lr is None else self.lr

    def sample_posterior(self, X, n_draws=20, random_state=None):
        """Predictions at weights drawn from bSAM's posterior (``solver='bsam'``).

        bSAM fits a Gaussian posterior over the weights, with mean the
        fitted weights and standard deviation ``1 / sqrt(N s)`` per weight
        (:class:`sksam.optim.BayesianSAM`). Each draw predicts with weights
        ``w + std * xi``, ``xi ~ N(0, I)``; the fitted weights are put back
        exactly afterwards. The mean over the draws is the predictive
        distribution of Moellenhoff & Khan (2023); their spread is its
        uncertainty. ``predict`` and ``predict_proba`` stay the predictions
        at the mean.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        n_draws : int, default=20
            Number of weights drawn, ``>= 1``.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        draws : ndarray of shape (n_draws, n_samples, ...)
            ``predict_proba`` (a classifier: ``n_classes`` columns) or
            ``predict`` (a regressor) at each draw: ``draws.mean(axis=0)``
            averages them.
        """
        check_is_fitted(self)
        rule = getattr(self.net_.optimizer_, "rule", None)
        if not isinstance(rule, BayesianSAM) or rule.s is None:
            raise ValueError(
                "sample_posterior draws from bSAM's posterior: fit with solver='bsam' "
                f"(this fit's optimizer has rule={rule!r})."
            )
        if isinstance(n_draws, bool) or not isinstance(n_draws, Integral) or n_draws < 1:
            raise ValueError(f"n_draws must be an integer >= 1, got n_draws={n_draws!r}.")
        predict = self.predict_proba if self._task == "classifier" else self.predict
        optimizer = self.net_.optimizer_
        params, std = optimizer._params(), optimizer.rule.posterior_std()
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            means = [p.detach().clone() for p in params]
            draws = []
            try:
                for _ in range(n_draws):
                    for p, mean, sd in zip(params, means, std):
                        xi = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                        p.copy_(mean + sd * xi)
                    draws.append(predict(X))
            finally:  # the trained weights back, bit for bit
                for p, mean in zip(params, means):
                    p.copy_(mean)
        return np.stack(draws)

    def _bsam_optimizer_params(self, n_samples, seed):
        """``solver='bsam'``: SAM with the rule :class:`~sksam._family.BayesianSAM`.

        Its ``num_data`` is ``n_samples``, the rows ``fit`` trains on, and
        ``seed`` seeds its posterior noise. A ``ValueError`` names the
        parameter when bSAM's update cannot be taken: another base optimizer
        than SGD, SGD's momentum or weight decay (bSAM's own momentum and
        prior precision replace them), ``m > 1`` (each chunk would update the
        posterior) or float16 loss scaling.
        """
        if self.optimizer is not torch.optim.SGD:
            raise ValueError(
                "solver='bsam' takes its own Adam-like step through torch.optim.SGD "
                f"(lr only): it needs optimizer=torch.optim.SGD, got {self.optimizer!r}."
            )
        routed = self._routed_params()
        for name in ("optimizer__momentum", "optimizer__weight_decay", "optimizer__nesterov"):
            if routed.get(name):
                raise ValueError(
                    f"solver='bsam' has its own momentum and prior precision; the base SGD "
                    f"takes neither: got {name}={routed[name]!r}. Remove it (or use "
                    "sksam.optim.SAM with BayesianSAM(betas=..., prior_precision=...))."
                )
        if self.m != 1 or self.precision == "float16":
            raise ValueError(
                "solver='bsam' updates its posterior once per step from the whole batch's "
                "gradients and is not homogeneous in float16's loss scale: it supports m=1 "
                f"and precision='float32' or 'bfloat16'; got m={self.m}, "
                f"precision={self.precision!r}."
            )
        return dict(
            optimizer=SAM,
            optimizer__base_optimizer=torch.optim.SGD,
            optimizer__rho=self.rho,
            optimizer__solver="sam",
            optimizer__rule=BayesianSAM(num_data=n_samples, seed=seed),
        )

    def _shape_params(self, module_class, n_features, n_outputs):
        """``module__n_features`` and the output size, where the class takes them."""
        try:
            accepted = inspect.signature(module_class).parameters
        except (TypeError, ValueError):
            return {}
        shapes = {"n_features": n_features, "n_outputs": n_outputs, self._output_name: n_outputs}
        return {f"module__{k}": v for k, v in shapes.items() if k in accepted}

    def _sharpness(self, module, X, y, rng):
        if self.sharpness is None:
            return None
        criterion = self._loss()

        def loss_fn():
            return criterion(module(X), y)

        params = [p for p in module.parameters() if p.requires_grad]
        return measure_sharpness(
            self.sharpness,
            loss_fn,
            params,
            rho=self.rho,
            random_state=rng,
            module=module,
            logits_fn=self._logits_fn(module, X, y),
        )

    # -- divergence ----------------------------------------------------------------

    def _final_loss(self, net, X, y, failed_fit):
        """The training loss at the fitted weights, in eval mode (what predict computes).

        The loss curve holds the losses *before* each step, so it cannot see
        a last step that blew the weights up; this loss can. A batch loss,
        a weight, an eval-mode output or this loss that is not finite
        (:func:`divergence`) is a ``ValueError``
        with the remedy: ``rho`` when the same fit without it stays finite
        (:meth:`_blame_rho`, given ``failed_fit()``), else ``lr``.
        """
        outputs = eval_forward(net.module_, X)
        with torch.no_grad():
            loss = float(self._loss()(outputs, y))
        failure = divergence(net, outputs, loss)
        if failure is not None:
            remedy = self._blame_rho(*failed_fit()) or (
                f"Use a smaller lr (or rho), or {self._scale_hint}."
            )
            raise ValueError(f"{failure} {remedy}")
        return loss

    def _warn_if_diverged(self, epochs, y, final_loss, failed_fit):
        """Warn when the loss blew up, or ended no better than a constant prediction.

        Both stay finite, so :func:`divergence` lets
        them through: a learning rate (or a ``rho``) far too large typically
        sends the loss up by orders of magnitude and back down to a network
        that predicts one class (or one value) for every sample.
        ``final_loss`` (after the last step) ends the curve, so a last step
        that diverged is seen too. ``failed_fit()`` gives the arguments of
        :meth:`_blame_rho`, called only when the curve failed.
        """
        losses = epoch_losses(epochs)
        if len(losses):
            losses = [*losses, final_loss]
        first = batch_losses(epochs)[:1]  # at the weights training started from
        cause = diagnose_loss_curve(losses, initial_loss=first[0] if first else None)
        if cause is None:
            cause = no_better_than_constant(epochs, self._baseline_loss(y))
        if cause is None:
            return
        remedy = self._blame_rho(*failed_fit()) or (
            f"Lower lr (now {self._lr():g}) or {self._scale_hint}"
        )
        warn_diverged(
            type(self).__name__,
            cause,
            remedy.rstrip(".") + "; check net_.history for the loss of each batch.",
        )

    def _perturbed(self):
        """Whether ``solver`` and ``rho`` perturb the weights (on some steps at least)."""
        return self.solver != "gd" and self.rho != 0

    def _blame_rho(self, X, y, epochs, warm, seed):
        """The remedy naming ``rho`` when the failed fit would not fail without it, else None.

        The counterfactual is the same training with ``rho=0`` (gradient
        descent): the same data, epochs, seed and initialization, without
        the user's callbacks, which are left untouched. Run only after a fit
        failed, for at most the cost of that fit. Skipped under Accelerate
        and for continued training (``warm_start``, ``partial_fit``), whose
        optimizer is the first fit's, whatever ``solver`` and ``rho`` say now.
        """
        if not self._perturbed() or self.accelerator is not None or warm:
            return None
        twin = self._gradient_descent_twin()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                twin._train(X, y, epochs, False, seed)
            except Exception:  # it fails too (or cannot tell): rho is not the cause
                return None
        if any(issubclass(w.category, DivergenceWarning) for w in caught):
            return None
        return (
            f"The same fit with rho=0 (gradient descent) does not diverge: "
            f"rho={self.rho:g} is too large for solver={self.solver!r} on this data. "
            "Lower rho (on standardized data useful values are about 0.01 to 0.5)."
        )

    def _gradient_descent_twin(self):
        """This estimator with ``rho=0`` and no callbacks, with the fitted targets' encoding."""
        params = self.get_params(deep=False)
        params = {k: v for k, v in params.items() if not k.startswith("callbacks__")}
        params.update(solver="gd", rho=0.0, callbacks=None, sharpness=None, verbose=0)
        twin = type(self)(**params)
        for name in ("classes_", "n_outputs_", "_y_ndim"):
            if name in vars(self):
                setattr(twin, name, getattr(self, name))
        return twin


#: A final training loss above this fraction of the constant prediction's is "far
#: from a minimum", where SAM and GD coincide (the verbose hint of ``fit``). On
#: scikit-learn's digits at the default settings it ends at 0.14 of it (0.33 of
#: ln 10), where SAM and GD predicted alike on every held-out row.
FAR_FROM_MINIMUM = 0.1


def _measure_names(names):
    """The sharpness measures of a docstring's type line, in the order of ``MEASURES``."""
    return ", ".join(repr(name) for name in MEASURES if name in names)


_PERTURBATION_DOC = """
        e = 0                          solver='gd'
        e = rho * g / ||g||            solver='sam'   (Foret et al., 2021)
        e = rho * g                    solver='usam'  (Andriushchenko & Flammarion, 2022)
        e = rho * T**2 g / ||T g||     solver='asam'  (Kwon et al., 2021)

    with ``g`` the mini-batch gradient of the {loss_name} at ``w``.
"""


def _attributes_doc(target, net_class, net_note):
    """The Attributes section: ``target``'s attributes first, then those both nets share."""
    return (
        f"""
    Attributes
    ----------{target}
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Feature names, when ``X`` had string column names.
    net_ : skorch.{net_class}
        The fitted skorch net: ``net_.history``, ``net_.callbacks_``,
        ``net_.module_``, ``net_.optimizer_``, ``net_.save_params``. It
        {net_note}
    history_ : skorch.history.History
        ``net_.history`` (also as ``history``, skorch's name), read-only.
    module_ : torch.nn.Module
        The trained network, ``net_.module_``, read-only.
    optimizer_ : torch.optim.Optimizer
        ``net_.optimizer_``, read-only.
    criterion_ : torch.nn.Module
        ``net_.criterion_``, read-only.
"""
        + HISTORY_ATTRIBUTES_DOC
        + """
        Here an iteration is an epoch, there is no ``early_stopping``
        parameter (skorch's ``EarlyStopping`` callback stops early), and the
        validation scores of a ``train_split`` are in ``net_.history``.
    sharpness_ : float or None
        The ``sharpness`` measure at the fitted weights, on the data of the
        last call to ``fit`` or ``partial_fit``; ``None`` if not asked.
"""
    )


_FIT_DOC = """
    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network; it must return {output} of shape ``(n_samples, {n_out})``
        ({loss_note}). A class is built with the ``module__*`` keyword
        arguments; if its constructor takes ``n_features``, ``n_outputs`` or
        ``{output_name}`` and they are not given, they are filled in from the
        data. An instance is deep-copied at every ``fit`` and its current
        weights are the starting point. ``None`` uses
        :class:`~sksam.modules.MLP` (one hidden layer of 100 ReLU units; set
        ``module__hidden_layer_sizes``, ``module__dropout``...).
    solver : {{'gd', 'sam', 'usam', 'asam', 'every_k', 'looksam', 'rst', 'aesam', 'msam', \
'gsam', 'wsam', 'fsam', 'sam_on', 'bsam'}}, default='sam'
        The update rule. The cheap variants of SAM (see the "SAM on a
        budget" guide): ``'every_k'`` takes the SAM step every
        ``sam_every`` steps and the base step otherwise, ``'looksam'``
        the same with LookSAM's reused direction in between, ``'rst'`` a
        SAM step with probability ``1 / sam_every``, ``'aesam'`` when the
        squared gradient norm is unusually large
        (:class:`sksam.optim.AESAM`), ``'msam'`` Momentum-SAM, one gradient
        per step (:class:`sksam.optim.MomentumSAM`, with
        ``optimizer=torch.optim.SGD``; set ``optimizer__momentum=0.9`` as
        the paper does). Search ``rho`` with the variant: the cheap ones
        often want a larger radius. The rest of the family, at SAM's cost
        (:doc:`/which_sam`): ``'gsam'`` (:class:`sksam.optim.GSAM`),
        ``'wsam'`` (:class:`sksam.optim.WSAM`), ``'fsam'`` Friendly-SAM
        (:class:`sksam.optim.FriendlySAM`), ``'sam_on'`` SAM-ON, which
        perturbs the normalization layers only (the module needs some),
        ``'bsam'`` Bayesian SAM (:class:`sksam.optim.BayesianSAM` with
        ``num_data`` the rows passed to ``fit``, its default options, its
        own Adam-like step through ``optimizer=torch.optim.SGD`` without
        momentum or weight decay, ``m=1``, no float16); its posterior's
        predictions: :meth:`sample_posterior`.
        The radius may follow a schedule:
        ``optimizer__rho_schedule=sksam.optim.ProportionalRho()``.
    rho : float, default=0.05
        Perturbation radius; ``rho=0`` is ``solver='gd'`` bit for bit.
        Ignored by ``'gd'``. A fit that stops with the training loss still
        high ends where ``solver='gd'`` ends (``verbose=1`` says so): train
        longer or faster and search ``rho`` (0.01 to 0.5); see the user
        guide, :ref:`When SAM acts <net-when-sam-acts>`. When a fit diverges
        (a ``DivergenceWarning`` or a non-finite error) and the same fit with
        ``rho=0`` does not, the message names ``rho``, not ``lr``.
    lr : float, default=None
        Learning rate of the base optimizer; ``None`` is {default_lr}.{lr_note} A rate so large that
        the loss blows up, or ends no lower than that of the best constant
        prediction, gives a ``sksam.exceptions.DivergenceWarning``; a
        non-finite loss or weight is an error.
    max_epochs : int, default=20
        Passes over the training data in one call to ``fit`` (more passes
        after the earlier ones with ``warm_start=True``).
    batch_size : int or None, default=32
        Samples per mini-batch; ``None`` is full-batch training.
    optimizer : type of torch.optim.Optimizer, default=torch.optim.SGD
        The base optimizer that takes the descent step; its options are
        routed with ``optimizer__*`` (``optimizer__momentum=0.9``). An
        optimizer whose ``step`` needs a closure (``torch.optim.LBFGS``)
        trains with ``solver='gd'`` (or ``rho=0``) only, as skorch runs it;
        with a perturbed solver ``fit`` refuses it.
    train_split : callable or None, default=None
        The validation split of skorch (for example ``skorch.dataset.ValidSplit(5)``),
        needed by callbacks that watch validation scores (skorch's
        ``EarlyStopping()`` watches ``valid_loss``: ``fit`` refuses it
        without a split). ``None`` trains on all the data, as scikit-learn's
        estimators do unless asked to hold data out.
    callbacks : list of skorch callbacks or (name, callback) tuples, \
            or 'disable', default=None
        Extra skorch callbacks (``ProgressBar``, ``EarlyStopping``,
        ``LRScheduler``, ``Checkpoint``, ``TensorBoard``...), used as they
        are, as skorch does (they need not be copyable: they may hold a
        writer, a file or a lock); ``clone`` and ``GridSearchCV`` copy them
        as any parameter. The fitted ones are in ``net_.callbacks_``.
    device : str or torch.device, default='cpu'
        Where to train, e.g. ``'cuda'``; a device this machine lacks is a
        ``ValueError`` at ``fit``. The training data is moved there once. A
        model trained on a GPU can be unpickled on a CPU-only machine.
    sharpness : {{{measures}}} or None, \
default='top_eigenvalue'
        The measure stored in ``sharpness_`` (see :mod:`sksam.sharpness`), of
        the mean training {loss_name} in eval mode; ``None`` skips it. Every
        measure but ``'top_eigenvalue'`` and ``'trace'`` uses the estimator's
        ``rho``.{logits_note}
    sharpness_max_samples : int or None, default=1000
        The sharpness is computed on at most this many training samples,
        drawn without replacement with ``random_state``; ``None`` uses all.
    random_state : int, RandomState instance or None, default=None
        Seeds the estimator's own torch generator, which draws the
        initialization, the batch order, dropout masks and the sharpness
        estimate: torch's global generators end every call as they began,
        and clones fitted at the same time in threads give the same models
        as one after the other. Training continued by ``warm_start`` or
        ``partial_fit`` resumes that generator where the previous call left
        it, so with an int seed ``fit`` for 4 epochs and ``fit`` for 2 then
        2 warm epochs give the same weights bit for bit. How this meets
        torch's global generators (dropout layers, threads, Accelerate): the
        user guide, :ref:`Random numbers in the nets <net-random-numbers>`.
    warm_start : bool, default=False
        When ``True`` and the estimator is fitted, ``fit`` continues
        training the current network for ``max_epochs`` more epochs: the
        weights, the optimizer's state (momentum buffers), ``net_.history``,
        ``loss_curve_`` and ``n_iter_`` carry on, and ``sharpness_`` is
        recomputed. The network, optimizer and callbacks are those of the
        first fit; changes to their parameters take effect at the next fit
        with ``warm_start=False``.
    verbose : int, default=0
        The verbosity of skorch (1 prints a table per epoch). With 1 or
        more, ``fit`` also prints a line when a perturbed solver stopped far
        from a minimum, where it predicts as ``solver='gd'`` would.
    m : int, default=1
        The m-sharpness option: each mini-batch is split into ``m`` chunks of (nearly)
        equal size, each takes its own ascent, and the base optimizer steps
        along the mean of their descent gradients (Foret et al., 2021;
        ``sksam.optim.SAM.step_chunks``). The same floating-point work as
        plain SAM, in ``2 * m`` smaller passes. ``m=1`` is plain SAM; it is
        also the step of ``m`` data-parallel workers with per-worker ascent.
    precision : {{'float32', 'bfloat16', 'float16'}}, default='float32'
        The forward passes run under ``torch.autocast`` with this dtype
        ('float32': no autocast). 'float16' also scales the loss with a
        ``torch.amp.GradScaler`` (both passes scaled, gradients unscaled
        before the ascent and the descent, a step skipped when either pass
        overflows). With ``accelerator`` set the precision on the
        ``Accelerator`` instead.
    accelerator : accelerate.Accelerator or None, default=None
        Train under Hugging Face Accelerate (several GPUs or processes),
        through skorch's ``AccelerateMixin`` with SAM's two passes done
        right: gradients are all-reduced by ``accelerator.backward`` in both
        passes (the global ascent; ``optimizer__ascent='local'`` for the
        per-worker one), the data loaders are sharded, and ``device`` is
        ignored (the accelerator places the data). Needs the ``accelerate``
        extra; ``warm_start`` and ``partial_fit`` are not supported with it.
    n_threads : int or None, default=None
        Number of torch threads during ``fit`` and prediction, restored afterwards.
        ``None``: one thread for small problems (fewer than ten million
        multiply-adds per batch) and inside joblib workers (so
        ``GridSearchCV(n_jobs=2)`` does not oversubscribe), torch's setting
        otherwise; ``-1``: one per core.
    sam_every : int, default=5
        Steps per SAM step of ``'every_k'``, ``'looksam'`` (the period) and
        ``'rst'`` (``1 / p``); ignored by the other solvers. ``'rst'``
        draws from a generator seeded by ``random_state`` (0 when it is not
        an int).
    gsam_alpha : float in [0, 1], default=0.4
        ``'gsam'``'s weight of the part of ``g`` orthogonal to the perturbed
        gradient ``g_s`` (:class:`sksam.optim.GSAM`'s ``alpha``; 0 is SAM).
    wsam_gamma : float in [0, 1), default=0.9
        ``'wsam'``'s weight of the sharpness (:class:`sksam.optim.WSAM`'s
        ``gamma``; 0.5 is SAM).
    fsam_sigma : float >= 0, default=1.0
        ``'fsam'``'s share of the average gradient removed from the ascent
        direction (:class:`sksam.optim.FriendlySAM`'s ``sigma``; 0 is SAM).
    fsam_lmbda : float in [0, 1), default=0.9
        ``'fsam'``'s forgetting rate of that average (``lmbda``).
    **kwargs
        The skorch routed parameters: ``module__*``, ``optimizer__*``,
        ``criterion__*``, ``iterator_train__*``, ``iterator_valid__*``,
        ``dataset__*`` and ``callbacks__*``.
"""


class SAMNetClassifier(ClassifierMixin, _BaseSAMNet):
    _task = "classifier"
    _output_name = "n_classes"
    _default_lr = 0.03

    __doc__ = (
        """A PyTorch classifier trained by gradient descent or SAM, through skorch.

    Every step of the base optimizer (``optimizer``, SGD by default) uses
    the gradient at a perturbed point ``w + e`` (see :class:`sksam.optim.SAM`)::
"""
        + _PERTURBATION_DOC.format(loss_name="cross-entropy")
        + _FIT_DOC.format(
            output="**logits**",
            default_lr="0.03",
            n_out="n_classes",
            loss_note="the loss is ``CrossEntropyLoss``",
            output_name="n_classes",
            loss_name="cross-entropy",
            measures=_measure_names(MEASURES),
            logits_note=(
                " ``'adaptive_rho_logitnorm'`` normalizes the logits (the module's outputs) first."
            ),
            lr_note=(
                " The default trains the default network on raw and on "
                "standardized inputs alike (on scikit-learn's digits, pixel "
                "values 0-16, ``lr=0.1`` fails to train); with standardized "
                "inputs and ``optimizer__momentum=0.9`` larger rates are "
                "usually better."
            ),
        )
        + _attributes_doc(
            """
    classes_ : ndarray of shape (n_classes,)
        The class labels (any type ``numpy.unique`` sorts, strings included).""",
            "NeuralNetClassifier",
            "sees labels encoded as ``0..n_classes-1``.",
        )
        + """
    See Also
    --------
    SAMNetRegressor : The regression twin.
    sksam.optim.SAM : The optimizer, usable in any training loop.

    Notes
    -----
    The estimator owns a skorch ``NeuralNetClassifier`` (``net_``) rather
    than being one, so it passes scikit-learn's estimator checks; skorch's
    API is one attribute away (``net_.history``, ``net_.callbacks_``,
    ``net_.save_params``, ``net_.module_``, ``net_.optimizer_``). Routed
    ``**kwargs`` behave as explicit parameters for ``get_params``,
    ``set_params``, ``clone`` and ``GridSearchCV``; unknown names are
    refused by ``set_params`` and by ``fit``.

    ``partial_fit`` runs one epoch over the data it is given (``classes``
    required at the first call). ``on_grad_computed`` is notified once per
    step with the gradient the base optimizer uses (``grad L(w + e)`` for
    SAM), so skorch's ``GradientNormClipping`` clips the descent gradient.
    ``train_loss`` is the loss at the unperturbed weights. Batch
    normalization statistics are updated once per SAM step and dropout
    masks are the same in both passes. The user guide has the details and
    the measured speed.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sksam import SAMNetClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SAMNetClassifier(rho=0.05, max_epochs=5, random_state=0,
    ...                        optimizer__momentum=0.9).fit(X / 16, y)
    >>> clf.predict(X[:3] / 16)
    array([0, 1, 2])
    """
    )

    def _logits_fn(self, module, X, y):
        """The module's outputs as logits and the class indices (logit-normalized sharpness)."""
        return lambda: (module(X), y)

    _scale_hint = "standardize X"

    @staticmethod
    def _loss():
        return nn.CrossEntropyLoss()

    def _n_outputs(self, y):
        return len(self.classes_)

    def _net_kwargs(self, n_outputs):
        return {"classes": list(range(n_outputs))}

    def _check_module(self, module, X, n_outputs):
        """As for any net; and the outputs should be logits, not probabilities."""
        super()._check_module(module, X, n_outputs)
        out = eval_forward(module, X[:8]).float()
        if (
            len(out) > 1
            and bool(((out >= 0) & (out <= 1)).all())
            and bool(torch.allclose(out.sum(dim=1), torch.ones(len(out)), atol=1e-4))
        ):
            warnings.warn(
                "The module's outputs already sum to one over the classes (does it end "
                "in nn.Softmax?): SAMNetClassifier expects logits, as CrossEntropyLoss "
                "applies the softmax itself; a softmax twice trains badly (predict_proba "
                "stays far from 0 and 1). Remove the final softmax.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _baseline_loss(self, y):
        """Cross-entropy of predicting the class frequencies: the entropy of ``y``."""
        counts = np.bincount(y.cpu().numpy(), minlength=len(self.classes_))
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum()) if len(p) > 1 else None

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Train the network for one epoch over ``(X, y)``.

        The first call builds the network for all of ``classes``; later
        calls (and calls after ``fit``) continue from the current weights
        and optimizer state, as ``warm_start`` does, whatever
        ``warm_start`` and ``max_epochs`` are.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, cast to float32.
        y : array-like of shape (n_samples,)
            Class labels, all in ``classes`` (``y`` needs not contain all of them).
        classes : array-like of shape (n_classes,), default=None
            Every class across all calls, e.g. ``np.unique(y_all)``.
            Required at the first call, optional later (it must then equal
            ``classes_``).

        Returns
        -------
        self : SAMNetClassifier
            The updated estimator.
        """
        return self._fit(X, y, partial=True, classes=classes)

    def _encode_targets(self, X, y, *, warm, partial, classes):
        """``X``, ``y`` as class indices, and ``classes_`` (new on a fresh fit)."""
        if partial and not warm and classes is None:
            # scikit-learn's wording (sklearn.utils.multiclass)
            raise ValueError("classes must be passed on the first call to partial_fit.")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=not warm)
        check_classification_targets(y)
        if classes is not None:
            classes = validate_classes(classes)
            if warm and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on the last call to fit "
                    f"or partial_fit, was: {self.classes_!r}"
                )
        method = "partial_fit" if partial else "warm_start"
        if warm:
            classes = self.classes_
            y_encoded = encode(y, classes, method)
        elif partial:
            check_n_classes(classes, "in `classes`")
            y_encoded = encode(y, classes, method)
        else:
            classes, y_encoded = np.unique(y, return_inverse=True)
            check_n_classes(classes, "in the data")
        # class indices as the int64 array CrossEntropyLoss expects
        return X, np.asarray(y_encoded, dtype=np.int64), {"classes_": classes}

    def predict_proba(self, X):
        """Class probabilities: the softmax of the network's logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return self._net_output("predict_proba", X).astype(np.float64)

    def predict(self, X):
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)  # checks the fit first
        return self.classes_[np.argmax(proba, axis=1)]


class SAMNetRegressor(RegressorMixin, _BaseSAMNet):
    _task = "regressor"
    _output_name = "n_outputs"
    _default_lr = 0.01
    _parameter_constraints = {**_BaseSAMNet._parameter_constraints, **REGRESSOR_CONSTRAINTS}

    __doc__ = (
        """A PyTorch regressor trained by gradient descent or SAM, through skorch.

    The regression twin of :class:`SAMNetClassifier` (skorch's
    ``NeuralNetRegressor`` semantics): the loss is the mean squared error
    ``MSELoss``, ``y`` may have one or several columns, and every step of
    the base optimizer uses the gradient at a perturbed point ``w + e``::
"""
        + _PERTURBATION_DOC.format(loss_name="mean squared error")
        + _FIT_DOC.format(
            output="the predictions",
            default_lr="0.01 (skorch's ``NeuralNetRegressor`` default)",
            n_out="n_outputs",
            loss_note="the loss is ``MSELoss``",
            output_name="n_outputs",
            loss_name="mean squared error",
            measures=_measure_names(set(MEASURES) - set(LOGIT_MEASURES)),
            logits_note=(
                " The logit measure of the classifier "
                "(``'adaptive_rho_logitnorm'``) needs logits, which a regressor "
                "does not have."
            ),
            lr_note=(
                " Standardize ``y`` (``TransformedTargetRegressor`` with a "
                "``StandardScaler``) as well as ``X``: the gradient of the "
                "squared error grows with the scale of the targets."
            ),
        )
        + _attributes_doc(
            """
    n_outputs_ : int
        Number of regression targets (columns of ``y``).""",
            "NeuralNetRegressor",
            "always sees a 2-D ``y``.",
        )
        + """
    See Also
    --------
    SAMNetClassifier : The classification twin, whose notes apply here too.
    sksam.optim.SAM : The optimizer, usable in any training loop.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam import SAMNetRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(200, 3)
    >>> y = X @ [1.0, -2.0, 0.5]
    >>> reg = SAMNetRegressor(max_epochs=30, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> bool(reg.score(X, y) > 0.9)
    True
    """
    )

    _scale_hint = "standardize X and y"

    @staticmethod
    def _loss():
        return nn.MSELoss()

    def _logits_fn(self, module, X, y):
        """A regressor has no logits (the logit-normalized sharpness is the classifier's)."""
        return None

    def _n_outputs(self, y):
        return y.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _baseline_loss(self, y):
        """Mean squared error of predicting the mean of each target."""
        baseline = float(y.double().var(dim=0, unbiased=False).mean())
        return baseline if baseline > 0 else None

    def _encode_targets(self, X, y, *, warm, partial, classes):
        """``X``, ``y`` as a 2-D float32 array, ``n_outputs_`` and the shape ``predict`` returns."""
        X, y = validate_data(
            self, X, y, dtype=np.float32, reset=not warm, multi_output=True, y_numeric=True
        )
        y_2d = numeric_target(y, type(self).__name__, np.float32).reshape(len(y), -1)
        if warm and y_2d.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y_2d.shape[1]} output(s), but {type(self).__name__} was fitted "
                f"with {self.n_outputs_}."
            )
        targets = {"n_outputs_": y_2d.shape[1], "_y_ndim": np.ndim(y)}
        if warm:
            targets = {"n_outputs_": self.n_outputs_, "_y_ndim": self._y_ndim}
        return X, np.ascontiguousarray(y_2d), targets

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            1-D when ``fit`` was given a 1-D ``y``.
        """
        y = np.asarray(self._net_output("predict", X), dtype=np.float64)
        return y.ravel() if self._y_ndim == 1 else y
