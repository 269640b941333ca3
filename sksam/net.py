"""SAMNetClassifier: any PyTorch classifier trained by GD or SAM through skorch.

Design: **composition**. :class:`SAMNetClassifier` is a plain scikit-learn
estimator (``ClassifierMixin, BaseEstimator``) that validates the data,
encodes the labels and builds a skorch ``NeuralNetClassifier`` in ``fit``,
stored as ``net_``. A subclass of skorch's net would inherit its departures
from scikit-learn's contract (attributes set in ``__init__``, no
``n_features_in_``, no errors on NaN or empty data, integer labels only:
about 24 of scikit-learn's estimator checks fail); composition passes them
all and still gives users the whole skorch API through ``net_``:
``net_.history``, ``net_.callbacks_``, ``net_.save_params(...)``,
``net_.module_``, ``net_.optimizer_`` (a :class:`sksam.optim.SAM`).

skorch's double-underscore routing works on the estimator itself:
``module__*``, ``optimizer__*`` (the base optimizer's options, e.g.
``optimizer__momentum=0.9``, or SAM's ``optimizer__eta``),
``criterion__*``, ``iterator_train__*``, ``iterator_valid__*``,
``dataset__*`` and ``callbacks__*`` keyword arguments are stored as
attributes (as skorch does), returned by ``get_params``, accepted by
``set_params`` and therefore by ``clone`` and ``GridSearchCV``.
"""

import contextlib
import copy
import inspect
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import Dataset, get_len, unpack_data
from skorch.history import History
from skorch.utils import TeeGenerator
from torch import nn
from torch.utils.data import DataLoader, Subset

from ._update_rules import SOLVERS
from .optim import SAM
from .sharpness import MEASURES, torch_sharpness

__all__ = ["MLP", "SAMNetClassifier"]

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
    "optimizer__base_optimizer": "optimizer",
    "optimizer__model": "module",
    "iterator_train__batch_size": "batch_size",
}

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}


def _is_routed(name):
    prefix, sep, _ = name.partition("__")
    return bool(sep) and prefix in ROUTED_PREFIXES


class MLP(nn.Module):
    """The default network: a multi-layer perceptron that outputs logits.

    ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` for each hidden
    layer, then a ``Linear`` layer with one output per class. PyTorch's
    default initialization.

    Parameters
    ----------
    n_features : int
        Input dimension (filled in from the data by :class:`SAMNetClassifier`).
    n_classes : int
        Output dimension (filled in from the data by :class:`SAMNetClassifier`).
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer, as in scikit-learn's ``MLPClassifier``.
    activation : {'relu', 'tanh', 'logistic', 'identity'}, default='relu'
        Non-linearity after each hidden layer.
    dropout : float, default=0.0
        Dropout probability after each hidden layer.
    batch_norm : bool, default=False
        Batch normalization before each activation.

    Attributes
    ----------
    draws_random_numbers : bool
        ``False``: this class's own ``forward`` draws no random number (its
        dropout layers are modules of their own), so :class:`sksam.optim.SAM`
        with ``replay_rng='auto'`` replays the generator only when
        ``dropout > 0``.
    """

    draws_random_numbers = False

    def __init__(
        self,
        n_features,
        n_classes,
        hidden_layer_sizes=(100,),
        activation="relu",
        dropout=0.0,
        batch_norm=False,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}."
            )
        layers, width = [], n_features
        for size in hidden_layer_sizes:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(_ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        """Logits of shape ``(n_samples, n_classes)``."""
        return self.layers(X)


#: Batches whose rows :class:`TensorBatchLoader` gathers in one go.
_CHUNK_BATCHES = 32


class TensorBatchLoader:
    """Mini-batches sliced from whole tensors: a ``DataLoader`` without collation.

    skorch's default ``DataLoader`` fetches and collates one sample at a
    time, which dominates an epoch on small data. When the dataset holds
    tensors (as :class:`SAMNetClassifier` arranges, on the training device)
    this loader indexes whole batches at once (when shuffling, it gathers
    the rows of 32 batches at a time and slices the batches from them); the
    order of the samples is drawn from torch's global generator, like
    ``DataLoader``'s. Any other
    dataset, or any extra ``DataLoader`` option (``num_workers``,
    ``collate_fn``...), falls back to a ``DataLoader``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Usually a skorch ``Dataset`` of tensors, or a ``Subset`` of one.
    batch_size : int, default=128
        Samples per batch; the last batch may be smaller.
    shuffle : bool, default=False
        Draw a new order of the samples at every pass.
    **loader_kwargs
        Options that only a ``DataLoader`` understands.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, **loader_kwargs):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.loader_kwargs = loader_kwargs

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        X, y = _tensors(self.dataset)
        if X is None or self.loader_kwargs:
            loader = DataLoader(
                self.dataset, batch_size=self.batch_size, shuffle=self.shuffle, **self.loader_kwargs
            )
            yield from loader
            return
        n = len(X)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                stop = start + self.batch_size
                yield X[start:stop], (None if y is None else y[start:stop])
            return
        order = torch.randperm(n).to(X.device)
        # Gather the rows of _CHUNK_BATCHES batches at a time and slice the
        # batches from them: the same batches as X[order[start:stop]], for
        # one gather per chunk instead of two per batch (a few per cent of a
        # small epoch), and at most that many batches of memory.
        chunk = self.batch_size * _CHUNK_BATCHES
        for first in range(0, n, chunk):
            index = order[first : first + chunk]
            X_chunk = X.index_select(0, index)
            y_chunk = None if y is None else y.index_select(0, index)
            for start in range(0, len(index), self.batch_size):
                stop = start + self.batch_size
                yield X_chunk[start:stop], (None if y_chunk is None else y_chunk[start:stop])


def _tensors(dataset):
    """``(X, y)`` tensors behind a skorch ``Dataset`` or a ``Subset`` of one."""
    if isinstance(dataset, Subset):
        X, y = _tensors(dataset.dataset)
        if X is None:
            return None, None
        index = torch.as_tensor(np.asarray(dataset.indices), device=X.device)
        return X[index], (None if y is None else y[index])
    if isinstance(dataset, Dataset) and torch.is_tensor(dataset.X):
        if dataset.y is None or torch.is_tensor(dataset.y):
            return dataset.X, dataset.y
    return None, None


class _History(History):
    """skorch's ``History`` with per-batch bookkeeping that skips its slicing logic.

    ``History.__getitem__`` parses every index for its column/row slicing
    syntax; the three per-batch calls only need the last row, which plain
    list indexing gives.
    """

    def new_batch(self):
        """Register a new batch row for the current epoch."""
        list.__getitem__(self, -1)["batches"].append({})

    def record_batch(self, attr, value):
        """Record ``value`` in column ``attr`` of the current batch."""
        list.__getitem__(self, -1)["batches"][-1][attr] = value


class _SAMNet(NeuralNetClassifier):
    """skorch's classifier, handing the module to :class:`SAM` (running stats).

    The other overrides trim skorch's per-batch overhead, which SAM pays
    twice per step (two closure calls); none changes what users see.
    """

    def initialize_history(self):
        """A fresh :class:`_History` (skorch's, with faster batch records)."""
        if isinstance(self.history_, _History):
            self.history_.clear()
        else:
            self.history_ = _History()
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's parameters for the optimizer, plus ``model`` for SAM."""
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if (
            prefix == "optimizer"
            and isinstance(self.optimizer, type)
            and issubclass(self.optimizer, SAM)
        ):
            kwargs["model"] = self.module_
        return args, kwargs

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's epoch loop (same hooks, same history records), cheaper per batch.

        As in skorch: for each batch ``on_batch_begin``, the step,
        ``<prefix>_loss`` and ``<prefix>_batch_size`` in the batch's history
        row, ``on_batch_end``; then ``<prefix>_batch_count``. The batch size
        of a tensor is its length; skorch's ``get_len`` walks nested
        containers for it, which costs about 2% of a small SAM epoch.
        """
        if iterator is None:
            return
        loss_key, size_key = prefix + "_loss", prefix + "_batch_size"
        batch_count = 0
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            self.history.record_batch(loss_key, step["loss"].item())
            self.history.record_batch(size_key, _batch_len(batch))
            self.notify("on_batch_end", batch=batch, training=training, **step)
            batch_count += 1
        self.history.record(prefix + "_batch_count", batch_count)

    def train_step(self, batch, **fit_params):
        """One optimizer step, with skorch's per-batch work done once, not per pass.

        skorch's own ``train_step`` hands the optimizer a closure that does
        all of its bookkeeping (zeroing through skorch, the step accumulator,
        ``on_grad_computed``) at every call, so twice per SAM step. Here the
        closure only computes: it clears the gradients, runs the module and
        the criterion on the batch and calls ``backward``, the same in both
        passes. A batch of tensors already on the device goes straight to
        ``module_`` and ``criterion_`` (what skorch's ``infer`` and
        ``get_loss`` do with it); anything else goes through ``infer`` and
        ``get_loss``. The step returns the first pass's loss and prediction,
        at the unperturbed weights: ``history`` records that loss as
        ``train_loss``.

        ``on_grad_computed`` is notified once per step, with the gradient
        the base optimizer is about to use: after the second pass for SAM
        (the weights are then still at ``w + e``, where that gradient was
        taken; they are restored right after), after the only pass for GD.
        So ``GradientNormClipping`` clips the descent gradient, as it would
        for plain SGD. (Clipping the ascent gradient would not change
        ``solver='sam'`` at all: its perturbation is normalized.)

        Parameters
        ----------
        batch : tuple
            ``(X, y)`` from the training iterator.
        **fit_params : dict
            Passed to the module's ``forward``, as in skorch.

        Returns
        -------
        step : dict
            ``{'loss': loss, 'y_pred': y_pred}`` of the first pass.
        """
        optimizer = self.optimizer_
        if not isinstance(optimizer, SAM) or len(self._optimizers) != 1:
            return super().train_step(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        direct = (
            not fit_params
            and self._on_device(Xi)
            and self._on_device(yi)
            and not isinstance(self.criterion_, nn.NLLLoss)  # get_loss takes its log
        )
        passes = 2 if optimizer.perturbs() else 1
        steps = []

        def closure():
            optimizer.zero_grad()
            if direct:
                y_pred = self.module_(Xi)
                loss = self.criterion_(y_pred, yi)
            else:
                y_pred = self.infer(Xi, **fit_params)
                loss = self.get_loss(y_pred, yi, X=Xi, training=True)
            loss.backward()
            steps.append({"loss": loss, "y_pred": y_pred})
            if len(steps) == passes:
                self._notify_grad_computed(batch)
            return loss

        optimizer.step(closure)
        if len(steps) < passes:  # no gradient in the first pass, so no second
            self._notify_grad_computed(batch)
        return steps[0]

    def _on_device(self, x):
        """Whether ``x`` is a tensor that skorch's ``to_tensor`` would leave as is."""
        if type(x) is not torch.Tensor:  # subclasses (PackedSequence...) go to skorch
            return False
        device = self.device
        if device is None:
            return True
        cached = self.__dict__.get("_device_cache_")
        if cached is None or cached[0] != device:
            cached = self._device_cache_ = (device, _resolved_device(device))
        return x.device == cached[1]

    def _notify_grad_computed(self, batch):
        listeners = getattr(self, "_listeners_", {}).get("on_grad_computed", ())
        if not listeners and _is_base_hook(self, "on_grad_computed"):
            return  # nobody listens: skip building the parameter generator
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )

    def initialize_callbacks(self):
        """skorch's callbacks, and for each hook the callbacks that implement it."""
        super().initialize_callbacks()
        self._listeners_ = {
            hook: [cb for _, cb in self.callbacks_ if _implements(cb, hook)] for hook in _HOOKS
        }
        return self

    def notify(self, method_name, **cb_kwargs):
        """Call the net's hook ``method_name``, then the callbacks that implement it."""
        # skorch calls every callback at every hook, three times per batch;
        # calling only those that override the no-op hook is the same thing,
        # for less per batch.
        listeners = getattr(self, "_listeners_", {}).get(method_name)
        if listeners is None:
            return super().notify(method_name, **cb_kwargs)
        getattr(self, method_name)(self, **cb_kwargs)
        for cb in listeners:
            getattr(cb, method_name)(self, **cb_kwargs)

    def _set_training(self, training=True):
        # train_step calls this at every batch, and
        # Module.train() walks every submodule through the slow __setattr__
        # (about a tenth of a small epoch). Switch only when a top-level flag
        # differs, which it does after every evaluation.
        modules = [getattr(self, name + "_") for name in self._modules + self._criteria]
        if any(m.training != training for m in modules if isinstance(m, nn.Module)):
            super()._set_training(training)


class SAMNetClassifier(ClassifierMixin, BaseEstimator):
    """A PyTorch classifier trained by gradient descent or SAM, through skorch.

    Every step of the base optimizer (``optimizer``, SGD by default) uses
    the gradient at a perturbed point ``w + e`` (see :class:`sksam.optim.SAM`)::

        e = 0                          solver='gd'
        e = rho * g / ||g||            solver='sam'   (Foret et al., 2021)
        e = rho * g                    solver='usam'  (Andriushchenko & Flammarion, 2022)
        e = rho * T**2 g / ||T g||     solver='asam'  (Kwon et al., 2021)

    with ``g`` the mini-batch gradient of the cross-entropy at ``w``.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        The network; it must return **logits** of shape
        ``(n_samples, n_classes)`` (the loss is ``CrossEntropyLoss``). A
        class is built with the ``module__*`` keyword arguments; if its
        constructor takes ``n_features`` or ``n_classes`` and they are not
        given, they are filled in from the data. An instance is deep-copied
        at every ``fit`` and its current weights are the starting point.
        ``None`` uses :class:`MLP` (one hidden layer of 100 ReLU units; set
        ``module__hidden_layer_sizes``, ``module__dropout``...).
    solver : {'gd', 'sam', 'usam', 'asam'}, default='sam'
        The update rule.
    rho : float, default=0.05
        Perturbation radius; ``rho=0`` is ``solver='gd'`` bit for bit.
        Ignored by ``'gd'``.
    lr : float, default=0.03
        Learning rate of the base optimizer. The default trains the default
        network on raw and on standardized inputs alike (on scikit-learn's
        digits, pixel values 0-16, ``lr=0.1`` fails to train); with
        standardized inputs and ``optimizer__momentum=0.9`` larger rates
        are usually better.
    max_epochs : int, default=20
        Passes over the training data in one call to ``fit`` (more passes
        after the earlier ones with ``warm_start=True``).
    batch_size : int or None, default=32
        Samples per mini-batch; ``None`` is full-batch training.
    optimizer : type of torch.optim.Optimizer, default=torch.optim.SGD
        The base optimizer that takes the descent step; its options are
        routed with ``optimizer__*`` (``optimizer__momentum=0.9``).
    train_split : callable or None, default=None
        skorch's validation split (for example ``skorch.dataset.ValidSplit(5)``),
        needed by callbacks that watch ``valid_loss``. ``None`` trains on
        all the data.
    callbacks : list of skorch callbacks or (name, callback) tuples, \
            or 'disable', default=None
        Extra skorch callbacks (``ProgressBar``, ``EarlyStopping``,
        ``LRScheduler``, ``Checkpoint``...), deep-copied at every ``fit``;
        the fitted ones are in ``net_.callbacks_``.
    device : str or torch.device, default='cpu'
        Where to train, e.g. ``'cuda'``. The training data is moved there
        once. A model trained on a GPU can be unpickled on a CPU-only machine.
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        The measure stored in ``sharpness_`` (see :mod:`sksam.sharpness`), of
        the mean training cross-entropy in eval mode; ``None`` skips it.
    sharpness_max_samples : int or None, default=1000
        The sharpness is computed on at most this many training samples,
        drawn without replacement with ``random_state``; ``None`` uses all.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the batch order, dropout and the sharpness
        estimate. torch's global generators are left untouched. Training
        continued by ``warm_start`` or ``partial_fit`` resumes torch's
        generator where the previous call left it, so with an int seed
        ``fit`` for 4 epochs and ``fit`` for 2 then 2 warm epochs give the
        same weights bit for bit, and so do two identical sequences of
        ``partial_fit`` calls.
    warm_start : bool, default=False
        When ``True`` and the estimator is fitted, ``fit`` continues
        training the current network for ``max_epochs`` more epochs: the
        weights, the optimizer's state (momentum buffers), ``net_.history``,
        ``loss_curve_`` and ``n_iter_`` carry on, and ``sharpness_`` is
        recomputed. ``X`` must have the same features and ``y`` only classes
        of ``classes_``. The network, optimizer and callbacks are those
        of the first fit; changes to their parameters (``module``, ``lr``,
        ``rho``, ``solver``, ``optimizer__*``...) take effect at the next
        fit with ``warm_start=False``.
    verbose : int, default=0
        skorch's verbosity (1 prints a table per epoch).
    **kwargs
        skorch routed parameters: ``module__*``, ``optimizer__*``,
        ``criterion__*``, ``iterator_train__*``, ``iterator_valid__*``,
        ``dataset__*`` and ``callbacks__*``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (any type ``numpy.unique`` sorts, strings included).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Feature names, when ``X`` had string column names.
    net_ : skorch.NeuralNetClassifier
        The fitted skorch net: ``net_.history``, ``net_.callbacks_``,
        ``net_.module_``, ``net_.optimizer_``, ``net_.save_params``. It
        sees labels encoded as ``0..n_classes-1``.
    loss_curve_ : ndarray of shape (`n_iter_`,)
        Mean training loss of each epoch, taken at the unperturbed weights
        (the first closure call of every SAM step).
    n_iter_ : int
        Number of epochs run (fewer than ``max_epochs`` after early
        stopping), counting those of earlier calls continued by
        ``warm_start`` or ``partial_fit``.
    sharpness_ : float or None
        The ``sharpness`` measure at the fitted weights, on the data of the
        last call to ``fit`` or ``partial_fit``; ``None`` if not asked.

    See Also
    --------
    sksam.optim.SAM : The optimizer, usable in any training loop.

    Notes
    -----
    **Composition, not inheritance.** The estimator owns a skorch
    ``NeuralNetClassifier`` (``net_``) rather than being one, so it passes
    all of scikit-learn's estimator checks (string labels, NaN and empty-data
    errors, ``n_features_in_``, no attribute set in ``__init__``). skorch's
    API is one attribute away: ``net_.history`` (per-epoch and per-batch
    records), ``net_.callbacks_``, ``net_.save_params(f_params=...)`` /
    ``net_.load_params(...)``, ``net_.module_`` and ``net_.optimizer_``
    (a :class:`sksam.optim.SAM`, whose ``base_optimizer`` is ``optimizer``).
    Routed ``**kwargs`` behave as explicit parameters: ``get_params``
    returns them, so ``clone``, pipelines and ``GridSearchCV`` (e.g. over
    ``module__hidden_layer_sizes``) work; unknown names are refused by
    ``fit``.

    **Speed.** Whole training sets are kept as tensors on ``device`` and
    batches are gathered from them (:class:`TensorBatchLoader`) instead of
    collated sample by sample; skorch's ``PrintLog`` is dropped when
    ``verbose=0``; the callbacks are called only at the hooks they
    implement; skorch's per-batch work (zeroing through skorch, the step
    accumulator, ``on_grad_computed``) runs once per SAM step, not once per
    gradient; batches of tensors on the device go straight to the module
    and the criterion, and are counted by their length; the generator
    replay of :class:`sksam.optim.SAM` is skipped when the module draws no
    random numbers (the default :class:`MLP` without dropout). On digits
    (MLP 64-100-10, batches of 32, one CPU thread) an epoch takes about
    1.05-1.1 times as long as a hand-written PyTorch SAM loop
    (``benchmarks/bench_net.py``).

    **Incremental training.** ``warm_start=True`` makes ``fit`` continue
    the fitted network for ``max_epochs`` more epochs; ``partial_fit``
    runs one epoch over the data it is given (scikit-learn's convention
    for ``MLPClassifier``), ``classes`` being required at the first call.
    Both keep the weights, the optimizer's state, ``net_.history`` and
    ``classes_``, and refuse other features or unseen labels. Each call
    recomputes ``sharpness_`` on its own data (at most
    ``sharpness_max_samples`` samples): on digits (1797 samples, 1000 for
    the measure) that makes a ``partial_fit`` about 2 times as long with
    ``'top_eigenvalue'`` or ``'rho'`` and about 5 times with ``'trace'``.
    For many small calls, set ``sharpness=None`` and set the measure back
    before the last call (or use :func:`sksam.sharpness.torch_sharpness`
    on ``net_.module_``). Callbacks see ``on_train_begin`` and ``on_train_end``
    at every call, as with skorch's own ``partial_fit``; skorch's
    ``LRScheduler`` then rebuilds its torch scheduler, which for chainable
    schedules such as ``StepLR`` takes one step more than a single long
    fit would (2 + 2 warm epochs of ``StepLR(step_size=1, gamma=0.5)``
    end at ``lr / 32``, 4 epochs at ``lr / 16``).

    **Callbacks and the two passes.** ``on_grad_computed`` is notified once
    per step, with the gradient the base optimizer uses: ``grad L(w + e)``
    for SAM (the weights are still at ``w + e`` then), ``grad L(w)`` for GD.
    So skorch's ``GradientNormClipping`` clips the descent gradient, as it
    would for plain SGD; the ascent direction uses the unclipped gradient
    (for ``solver='sam'`` clipping it would change nothing, the perturbation
    being normalized).

    The loss recorded by skorch (``train_loss``) is the loss at the
    unperturbed weights, as for gradient descent, so curves of the two
    solvers compare directly. With ``module`` holding batch normalization,
    its running statistics are updated once per SAM step (at ``w``), and
    dropout masks are the same in both passes of a step.

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

    _parameter_constraints = {
        "module": [None, callable],
        "solver": [StrOptions(set(SOLVERS))],
        "rho": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
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
    }

    def __init__(
        self,
        module=None,
        *,
        solver="sam",
        rho=0.05,
        lr=0.03,
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
                    f"Unknown parameter {name!r} of SAMNetClassifier; extra keyword "
                    "arguments must be skorch routed parameters starting with one of "
                    f"{', '.join(p + '__' for p in ROUTED_PREFIXES)}."
                )
        return extra

    def get_params(self, deep=True):
        """Parameters of this estimator, including skorch routed ones.

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

        Routed names and unknown plain names are stored as attributes (an
        unknown name is refused by ``fit``, not here, as scikit-learn asks);
        other names go through scikit-learn's ``set_params``.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : SAMNetClassifier
        """
        explicit = self._get_param_names()
        for name in list(params):
            # skorch routed names, and unknown plain names (rejected by fit,
            # as scikit-learn wants set_params itself never to raise on them)
            if name not in explicit and (_is_routed(name) or "__" not in name):
                setattr(self, name, params.pop(name))
        return super().set_params(**params)

    def __sklearn_is_fitted__(self):
        """Fitted once a network is trained (not by a ``fit`` that failed midway)."""
        return hasattr(self, "net_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = not _is_cpu(self.device)  # cuDNN/cuBLAS kernels
        return tags

    # -- fitting -------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network on ``(X, y)`` for ``max_epochs`` epochs.

        With ``warm_start=True`` on a fitted estimator, training continues
        from the current weights and optimizer state instead.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, cast to float32.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : SAMNetClassifier
            The fitted estimator.
        """
        warm = self.warm_start and self.__sklearn_is_fitted__()
        X, y = validate_data(self, X, y, dtype=np.float32, reset=not warm)
        check_classification_targets(y)
        if warm:
            y_encoded = _encode(y, self.classes_, "warm_start")
        else:
            classes, y_encoded = np.unique(y, return_inverse=True)
            _check_n_classes(classes, "in the data")
            self.classes_ = classes
        return self._train(X, y_encoded, self.max_epochs, warm)

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
        fitted = self.__sklearn_is_fitted__()
        if not fitted and classes is None:
            # scikit-learn's wording (sklearn.utils.multiclass)
            raise ValueError("classes must be passed on the first call to partial_fit.")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=not fitted)
        check_classification_targets(y)
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if fitted and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on the last call to fit "
                    f"or partial_fit, was: {self.classes_!r}"
                )
        if not fitted:
            _check_n_classes(classes, "in `classes`")
            y_encoded = _encode(y, classes, "partial_fit")
            self.classes_ = classes
        else:
            y_encoded = _encode(y, self.classes_, "partial_fit")
        return self._train(X, y_encoded, 1, fitted)

    def _train(self, X, y_encoded, epochs, warm):
        """Train ``net_`` (built afresh unless ``warm``) for ``epochs`` epochs.

        torch's generators are forked: seeded from ``random_state`` for a
        new network, restored to where the previous call left them when
        continuing (``_rng_state_``), so that continued training draws the
        batch orders and dropout masks one uninterrupted run would.
        """
        device = torch.device(self.net_.device) if warm else self._check_device()
        X_t = _to_tensor(X, device)
        y_t = torch.as_tensor(np.asarray(y_encoded, dtype=np.int64), device=device)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        if warm:
            net, start = self.net_, self._rng_state_
        else:
            net, start = self._build_net(X.shape[1], len(self.classes_)), seed
        with _seeded(start, device) as rng_state:
            if warm:
                net.partial_fit(X_t, y_t, epochs=epochs)
            else:
                net.fit(X_t, y_t, epochs=epochs)
        _check_finite(net)
        self.net_ = net
        self._rng_state_ = rng_state
        self.loss_curve_ = _epoch_losses(net.history)
        self.n_iter_ = len(net.history)
        self.sharpness_ = self._sharpness(X_t, y_t, seed)
        return self

    def _check_device(self):
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r} but CUDA is not available on this machine; "
                "use device='cpu'."
            )
        return device

    def _build_net(self, n_features, n_classes):
        routed = self._routed_params()
        for name, owner in _RESERVED.items():
            if name in routed:
                raise ValueError(f"Set {owner!r} on SAMNetClassifier instead of {name!r}.")
        module = MLP if self.module is None else self.module
        if isinstance(module, nn.Module):
            module = copy.deepcopy(module)  # fit must not train the user's instance
        else:
            routed = {**_shape_params(module, n_features, n_classes), **routed}
        if not self.verbose and "callbacks__print_log" not in routed:
            # PrintLog formats a table at every epoch even when it prints nothing
            routed["callbacks__print_log"] = None
        return _SAMNet(
            module=module,
            criterion=nn.CrossEntropyLoss,
            optimizer=SAM,
            optimizer__base_optimizer=self.optimizer,
            optimizer__rho=self.rho,
            optimizer__solver=self.solver,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=-1 if self.batch_size is None else self.batch_size,
            train_split=self.train_split,
            callbacks=copy.deepcopy(self.callbacks),
            classes=list(range(n_classes)),
            iterator_train=TensorBatchLoader,
            iterator_train__shuffle=True,
            iterator_valid=TensorBatchLoader,
            device=self.device,
            verbose=self.verbose,
            **routed,
        )

    def _sharpness(self, X, y, seed):
        if self.sharpness is None:
            return None
        rng = np.random.RandomState(seed)
        n = len(X)
        if self.sharpness_max_samples is not None and n > self.sharpness_max_samples:
            index = torch.as_tensor(
                rng.choice(n, self.sharpness_max_samples, replace=False), device=X.device
            )
            X, y = X[index], y[index]
        module = self.net_.module_
        criterion = nn.CrossEntropyLoss()

        def loss_fn():
            return criterion(module(X), y)

        params = [p for p in module.parameters() if p.requires_grad]
        return float(
            torch_sharpness(
                loss_fn, params, self.sharpness, rho=self.rho, module=module, random_state=rng
            )
        )

    # -- prediction ------------------------------------------------------------

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
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        proba = self.net_.predict_proba(_to_tensor(X, torch.device(self.net_.device)))
        return proba.astype(np.float64)

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


#: Per-batch callback hooks, filtered by :meth:`_SAMNet.notify`.
_HOOKS = ("on_batch_begin", "on_batch_end", "on_grad_computed")


def _batch_len(batch):
    """Number of samples in ``batch``, as skorch's ``run_single_epoch`` counts them."""
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(X) if type(X) is torch.Tensor else get_len(X)


def _is_base_hook(net, hook):
    """Whether ``net``'s own ``hook`` is skorch's no-op."""
    return getattr(type(net), hook) is getattr(NeuralNetClassifier, hook) and hook not in vars(net)


def _implements(callback, hook):
    """Whether ``callback`` does something at ``hook`` (is not the base no-op)."""
    return hook in vars(callback) or getattr(type(callback), hook, None) is not getattr(
        Callback, hook
    )


def _resolved_device(device):
    """``device`` as a ``torch.device``, with the current index for a bare ``'cuda'``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _is_cpu(device):
    return torch.device(device).type == "cpu"


def _to_tensor(X, device):
    # torch warns on read-only arrays (memory maps); copy those.
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])
    return torch.as_tensor(X, device=device)


def _shape_params(module_class, n_features, n_classes):
    """``module__n_features``/``module__n_classes`` where the class takes them."""
    try:
        accepted = inspect.signature(module_class).parameters
    except (TypeError, ValueError):
        return {}
    shapes = {"n_features": n_features, "n_classes": n_classes}
    return {f"module__{k}": v for k, v in shapes.items() if k in accepted}


@contextlib.contextmanager
def _seeded(start, device):
    """Run inside a fork of torch's CPU generator (and the training GPU's).

    ``start`` is an int seed, or a state yielded by an earlier call, to
    resume from. Yields a dict that holds, on exit, the generators' state
    at the end of the block.
    """
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    end = {}
    with torch.random.fork_rng(devices=cuda):
        if isinstance(start, dict):
            torch.set_rng_state(start["cpu"])
            for index in cuda:
                if "cuda" in start:
                    torch.cuda.set_rng_state(start["cuda"], index)
        else:
            torch.default_generator.manual_seed(start)
            for index in cuda:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(start)
        yield end
        end["cpu"] = torch.get_rng_state()
        for index in cuda:
            end["cuda"] = torch.cuda.get_rng_state(index)


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


def _epoch_losses(history):
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


def _check_finite(net):
    losses = _epoch_losses(net.history)
    params = torch.cat([p.detach().reshape(-1) for p in net.module_.parameters()])
    if not (np.all(np.isfinite(losses)) and bool(torch.isfinite(params).all())):
        raise ValueError(
            "Training diverged: the loss or the weights are not finite. Use a smaller lr (or rho)."
        )
