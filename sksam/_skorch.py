"""The skorch machinery behind the deep-net estimators (private).

:class:`sksam.SAMNetClassifier` and :class:`sksam.SAMNetRegressor` each own
a skorch net (``net_``) built from the classes here: :class:`_SAMNetClassifier`
and :class:`_SAMNetRegressor`, skorch's ``NeuralNetClassifier`` and
``NeuralNetRegressor`` with :class:`_SAMNetMixin` in front.

Where this module goes beyond skorch's documented override points
---------------------------------------------------------------------
skorch documents ``train_step``, ``train_step_single`` and the ``get_*`` /
``initialize_*`` methods as safe to override. Every override of a skorch
internal is listed here (``OVERRIDES``), and ``tests/test_net_skorch.py``
pins each one: the method must still exist in skorch with the same
signature, and for the methods whose body we re-implement the test compares
a fingerprint of skorch's source (docstrings and formatting ignored) with
the one of the version we read (``COPIED``), failing with the method's name
when skorch changes it; behavioural tests compare our history records and
weights with skorch's own on a small fit.

``NeuralNet.run_single_epoch`` (re-implemented)
    The same hooks and history records as skorch's, with the batch size of
    a tensor taken by ``len`` instead of skorch's ``get_len``.
``NeuralNet.train_step`` (re-implemented)
    One closure that computes only (clear gradients, forward, loss,
    backward); skorch's per-step bookkeeping (step accumulator,
    ``on_grad_computed``) runs once per SAM step instead of once per pass.
    Batches of tensors on the device skip ``infer``/``get_loss`` (what they
    would do to such a batch); other batches go through them.
``NeuralNet.notify`` (re-implemented)
    For the per-batch hooks, calls only the callbacks of ``callbacks_``
    that implement the hook (a cache checked against ``callbacks_`` at
    every call); same order as skorch's.
``NeuralNet.fit_loop`` (extended)
    skorch's, noting a ``KeyboardInterrupt`` in ``interrupted_`` (skorch's
    ``partial_fit`` swallows it) and dropping the listener cache at the end.
``NeuralNet._set_training`` (guarded)
    skorch's, skipped when every module already is in the requested mode.
``NeuralNet.initialize_history`` (replaced)
    A :class:`_History` instead of skorch's ``History``.
``NeuralNet.get_params_for_optimizer`` (extended)
    skorch's, plus ``model=module_`` for :class:`sksam.optim.SAM`.
``History.new_batch``, ``History.record_batch`` (re-implemented)
    Plain list indexing of the last row instead of ``History``'s slicing
    parser.
``NeuralNet.__init__`` (extended)
    Three more parameters, ``m`` and ``precision``, read by ``train_step``,
    and ``rng`` (a :class:`NetRandomState`: the estimator's random numbers).
``AccelerateMixin.train_step`` (replaced, with ``accelerator=`` only)
    Our ``train_step`` runs instead, so skorch's ``train_step_single`` and
    ``_step_optimizer`` of that mixin (which call ``optimizer.step()``
    without a closure, so cannot run SAM) are not used; see
    :class:`_AcceleratedSAMMixin`.
``AccelerateMixin._initialize_accelerator`` (re-implemented, ``accelerator=`` only)
    skorch's preparation, except for modules without trainable parameters
    (the usual criteria, which DistributedDataParallel refuses), then SAM's
    ``model`` set to the prepared module.

The per-batch fast paths also rely on skorch's ``NeuralNet.infer``,
``NeuralNet.get_loss`` and ``NeuralNetClassifier.get_loss`` (mirrored for
tensors on the device), also fingerprinted, as are the ``AccelerateMixin``
methods we replace.
"""

import ast
import contextlib
import copy
import functools
import hashlib
import inspect
import math
import textwrap
import threading

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset, get_len, unpack_data
from skorch.hf import AccelerateMixin  # imports accelerate only when used
from skorch.history import History
from skorch.utils import TeeGenerator
from torch import nn
from torch.utils.data import DataLoader, Subset

from .optim import SAM

#: skorch internals overridden here: ``"Class.method": what we do`` (see the module docstring).
OVERRIDES = {
    "NeuralNet.run_single_epoch": "re-implemented",
    "NeuralNet.train_step": "re-implemented",
    "NeuralNet.notify": "re-implemented",
    "NeuralNet.fit_loop": "extended",
    "NeuralNet._set_training": "guarded",
    "NeuralNet.initialize_history": "replaced",
    "NeuralNet.get_params_for_optimizer": "extended",
    "History.new_batch": "re-implemented",
    "History.record_batch": "re-implemented",
    "NeuralNet.__init__": "extended (m, precision)",
    "AccelerateMixin._initialize_accelerator": "re-implemented (accelerator= only)",
    "AccelerateMixin.train_step": "replaced by ours (accelerator= only)",
}

#: Fingerprints (:func:`source_fingerprint`) of the skorch 1.4.0 methods whose
#: behaviour we re-implement or mirror. A different fingerprint means skorch
#: changed the method: re-read it and update our version, then this table.
COPIED = {
    "NeuralNet.run_single_epoch": "26e1bb2a69a0a4c3",
    "NeuralNet.train_step": "517109f451b151b0",
    "NeuralNet.notify": "18b3579cf8f07cd0",
    "NeuralNet._set_training": "b45cc3574aeaedd6",
    "NeuralNet.initialize_history": "7206a56f4bc54da3",
    "NeuralNet.infer": "d460a7804e14a036",
    "NeuralNet.get_loss": "ba674830d377b3be",
    "NeuralNetClassifier.get_loss": "90d000207315361e",
    "History.new_batch": "259969f3f798ce19",
    "History.record_batch": "a4621257bbcab558",
    "AccelerateMixin.train_step": "b1033fa6432086ce",
    "AccelerateMixin.train_step_single": "b6a9297f270cbdb1",
    "AccelerateMixin._step_optimizer": "be534e706d9bdb33",
    "AccelerateMixin._initialize_accelerator": "1af18d6c389acede",
}

_SKORCH_CLASSES = {
    "NeuralNet": NeuralNet,
    "NeuralNetClassifier": NeuralNetClassifier,
    "History": History,
    "AccelerateMixin": AccelerateMixin,
}


def skorch_method(qualname):
    """The skorch function named ``"Class.method"``."""
    cls, name = qualname.split(".")
    return vars(_SKORCH_CLASSES[cls])[name]


def source_fingerprint(func):
    """A hash of ``func``'s code, blind to docstrings, comments and formatting."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    dump = "\n".join(ast.dump(node) for node in body)
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


#: Batches whose rows :class:`TensorBatchLoader` gathers in one go.
_CHUNK_BATCHES = 32


class TensorBatchLoader:
    """Mini-batches sliced from whole tensors: a ``DataLoader`` without collation.

    skorch's default ``DataLoader`` fetches and collates one sample at a
    time, which dominates an epoch on small data. When the dataset holds
    tensors (as the estimators arrange, on the training device) this loader
    indexes whole batches at once (when shuffling, it gathers the rows of 32
    batches at a time and slices the batches from them); the order of the
    samples is drawn from ``generator``, like ``DataLoader``'s.
    Any other dataset, or any extra ``DataLoader`` option (``num_workers``,
    ``collate_fn``...), falls back to a ``DataLoader``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Usually a skorch ``Dataset`` of tensors, or a ``Subset`` of one.
    batch_size : int, default=128
        Samples per batch; the last batch may be smaller.
    shuffle : bool, default=False
        Draw a new order of the samples at every pass.
    generator : torch.Generator or None, default=None
        The CPU generator the order is drawn from (also handed to the
        ``DataLoader`` fallback); ``None`` draws from torch's global one.
    **loader_kwargs
        Options that only a ``DataLoader`` understands.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, generator=None, **loader_kwargs):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.loader_kwargs = loader_kwargs

    def __len__(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        X, y = _tensors(self.dataset)
        if X is None or self.loader_kwargs:
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                shuffle=self.shuffle,
                generator=self.generator,
                **self.loader_kwargs,
            )
            yield from loader
            return
        n = len(X)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                stop = start + self.batch_size
                yield X[start:stop], (None if y is None else y[start:stop])
            return
        order = torch.randperm(n, generator=self.generator).to(X.device)
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
    syntax; the per-batch calls only need the last row, which plain list
    indexing gives.
    """

    def new_batch(self):
        """Register a new batch row for the current epoch."""
        list.__getitem__(self, -1)["batches"].append({})

    def record_batch(self, attr, value):
        """Record ``value`` in column ``attr`` of the current batch."""
        list.__getitem__(self, -1)["batches"][-1][attr] = value


#: ``precision`` -> autocast dtype (float32 runs without autocast).
_AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}

#: Per-batch callback hooks, filtered by :meth:`_SAMNetMixin.notify`.
_HOOKS = ("on_batch_begin", "on_batch_end", "on_grad_computed")


class _SAMNetMixin:
    """skorch's net, handing the module to :class:`SAM` and trimming per-batch work.

    SAM pays skorch's per-batch overhead twice per step (two closure
    calls); the overrides (listed in the module docstring) remove it
    without changing what users see.
    """

    def __init__(self, *args, m=1, precision="float32", rng=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.m = m
        self.precision = precision
        self.rng = rng

    def fit_loop(self, X, y=None, epochs=None, *, _routing_method="fit", **fit_params):
        """skorch's loop; notes a ``KeyboardInterrupt`` (which skorch's ``partial_fit`` swallows).

        ``interrupted_`` tells the estimator that the user stopped training
        (Ctrl-C). A ``KeyboardInterrupt`` raised by a callback is skorch's
        way for a callback to end training (``EarlyStopping``), not an
        interruption. The listener cache of :meth:`notify` lives only while
        the loop runs.
        """
        self.interrupted_ = False
        try:
            return super().fit_loop(X, y, epochs, _routing_method=_routing_method, **fit_params)
        except KeyboardInterrupt as exc:
            self.interrupted_ = not _raised_by_callback(exc)
            raise
        finally:
            self.__dict__.pop("_listeners_", None)

    def _random_numbers(self):
        """Where a training step draws its random numbers: the estimator's state, if given.

        Only modules that may draw random numbers (:func:`draws_random_numbers`)
        pay for lending torch's global generators the estimator's state.
        """
        rng = getattr(self, "rng", None)
        if rng is None:
            return contextlib.nullcontext()
        module = getattr(self, self._modules[0] + "_", None) if self._modules else None
        cached = self.__dict__.get("_draws_")
        if cached is None or cached[0] is not module:
            draws = not isinstance(module, nn.Module) or draws_random_numbers(module)
            cached = self._draws_ = (module, draws)
        return rng.active() if cached[1] else contextlib.nullcontext()

    def initialize_history(self):
        """skorch's, with a :class:`_History` (faster batch records) as the default.

        A history given by the user (``history=MyHistory()``) is kept and
        cleared, as skorch does.
        """
        if self.history_ is None:
            self.history_ = _History()
        else:
            self.history_.clear()
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's parameters for the optimizer, plus ``model`` for SAM."""
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if (
            prefix == "optimizer"
            and isinstance(self.optimizer, type)
            and issubclass(self.optimizer, SAM)
            and self._modules
        ):
            # the first module: skorch's module_, or a subclass's own name
            kwargs.setdefault("model", getattr(self, self._modules[0] + "_", None))
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
        the criterion on the batch (under autocast for ``precision``
        'bfloat16' or 'float16', or the accelerator's) and calls
        ``backward`` (through the loss scaler for 'float16', through
        ``accelerator.backward`` under Accelerate), the same in both passes.
        A batch of tensors already on the device goes straight to
        ``module_`` and ``criterion_`` (what skorch's ``infer`` and
        ``get_loss`` do with it); anything else goes through ``infer`` and
        ``get_loss``. The step returns the first pass's loss and prediction,
        at the unperturbed weights: ``history`` records that loss as
        ``train_loss``. With ``m > 1`` the batch is split into ``m`` chunks,
        each with its own perturbation (``SAM.step_chunks``).

        ``on_grad_computed`` is notified once per step, with the gradient
        the base optimizer is about to use: after the second pass for SAM
        (the weights are then still at ``w + e``, where that gradient was
        taken; they are restored right after), after the only pass for GD.
        With ``m > 1`` it is notified after the last chunk's second pass.

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
        optimizer = _sam_of(self.optimizer_)
        if optimizer is None or len(self._optimizers) != 1:
            with self._random_numbers():
                return super().train_step(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        scaler = self._grad_scaler()
        m = getattr(self, "m", 1)
        if m > 1 and len(Xi) > 1:
            return self._chunked_step(optimizer, batch, Xi, yi, min(m, len(Xi)), scaler, fit_params)
        forward = self._forward_loss(Xi, yi, fit_params)
        passes = 2 if optimizer.perturbs() else 1
        steps = []

        def closure():
            optimizer.zero_grad()
            y_pred, loss = forward()
            self._backward(loss, scaler)
            steps.append({"loss": loss, "y_pred": y_pred})
            if len(steps) == passes:
                self._notify_grad_computed(batch)
            return loss

        with self._random_numbers():
            if scaler is None:
                optimizer.step(closure)
            else:
                optimizer.step(closure, grad_scaler=scaler)
        if scaler is not None:
            scaler.update()
        if len(steps) < passes:  # no gradient in the first pass, so no second
            self._notify_grad_computed(batch)
        return steps[0]

    def _chunked_step(self, optimizer, batch, Xi, yi, m, scaler, fit_params):
        """The m-sharpness step: ``m`` chunks of the batch, each with its own ascent."""
        chunks = list(zip(Xi.tensor_split(m), yi.tensor_split(m)))
        forwards = [self._forward_loss(Xc, yc, fit_params) for Xc, yc in chunks]
        firsts, calls, passes = {}, [0], m * (2 if optimizer.perturbs() else 1)

        def closure(i):
            y_pred, loss = forwards[i]()
            self._backward(loss, scaler)
            firsts.setdefault(i, y_pred)
            calls[0] += 1
            if calls[0] == passes:
                self._notify_grad_computed(batch)
            return loss

        with self._random_numbers():
            loss = optimizer.step_chunks(closure, m, grad_scaler=scaler)
        if scaler is not None:
            scaler.update()
        if calls[0] < passes:
            self._notify_grad_computed(batch)
        y_pred = torch.cat([firsts[i] for i in range(m)])
        return {"loss": torch.as_tensor(loss).detach(), "y_pred": y_pred}

    def _backward(self, loss, scaler):
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            accelerator.backward(loss)  # scales the loss itself under float16
        elif scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def _grad_scaler(self):
        """The loss scaler of float16 training, or None."""
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            return accelerator.scaler
        if getattr(self, "precision", "float32") != "float16":
            return None
        scaler = self.__dict__.get("grad_scaler_")
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler(_resolved_device(self.device).type)
        return scaler

    def _autocast(self):
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            return accelerator.autocast()
        dtype = _AUTOCAST.get(getattr(self, "precision", "float32"))
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(_resolved_device(self.device).type, dtype=dtype)

    def _forward_loss(self, Xi, yi, fit_params):
        """A function returning ``(y_pred, loss)`` on the batch, as skorch computes them."""
        direct = (
            not fit_params
            and _skorchs_own(type(self))
            and self._on_device(Xi)
            and self._on_device(yi)
            and not isinstance(self.criterion_, nn.NLLLoss)  # the classifier takes its log
        )
        autocast = self._autocast

        if direct:

            def forward():
                with autocast():
                    y_pred = self.module_(Xi)
                    return y_pred, self.criterion_(y_pred, yi)

        else:

            def forward():
                with autocast():
                    y_pred = self.infer(Xi, **fit_params)
                    return y_pred, self.get_loss(y_pred, yi, X=Xi, training=True)

        return forward

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
        listeners = self._listeners("on_grad_computed")
        if not listeners and _is_base_hook(self, "on_grad_computed"):
            return  # nobody listens: skip building the parameter generator
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )

    def _listeners(self, hook):
        """The callbacks of ``callbacks_`` that implement the per-batch ``hook``.

        Cached while the training loop runs, and checked against
        ``callbacks_`` at every call: a callback added to or removed from
        ``callbacks_`` (even by another callback) is seen at the next batch.
        """
        callbacks = self.__dict__.get("callbacks_")
        if callbacks is None:
            return None
        cached = self.__dict__.get("_listeners_")
        if cached is None or cached[0] != callbacks:
            by_hook = {h: [cb for _, cb in callbacks if _implements(cb, h)] for h in _HOOKS}
            cached = self._listeners_ = (list(callbacks), by_hook)
        return cached[1][hook]

    def notify(self, method_name, **cb_kwargs):
        """Call the net's hook ``method_name``, then the callbacks that implement it."""
        # skorch calls every callback at every hook, three times per batch;
        # calling only those that override the no-op hook is the same thing,
        # for less per batch.
        if method_name not in _HOOKS:
            return super().notify(method_name, **cb_kwargs)
        listeners = self._listeners(method_name)
        if listeners is None:
            return super().notify(method_name, **cb_kwargs)
        getattr(self, method_name)(self, **cb_kwargs)
        for cb in listeners:
            getattr(cb, method_name)(self, **cb_kwargs)

    def _set_training(self, training=True):
        # train_step calls this at every batch, and Module.train() walks
        # every submodule through the slow __setattr__ (about a tenth of a
        # small epoch). Switch only when a top-level flag differs, which it
        # does after every evaluation.
        modules = [getattr(self, name + "_") for name in self._modules + self._criteria]
        if any(m.training != training for m in modules if isinstance(m, nn.Module)):
            super()._set_training(training)


class _SAMNetClassifier(_SAMNetMixin, NeuralNetClassifier):
    """skorch's ``NeuralNetClassifier`` with :class:`_SAMNetMixin`."""


class _SAMNetRegressor(_SAMNetMixin, NeuralNetRegressor):
    """skorch's ``NeuralNetRegressor`` with :class:`_SAMNetMixin`."""


class _AcceleratedSAMMixin:
    """skorch's ``AccelerateMixin`` with SAM's two passes done right.

    skorch's ``AccelerateMixin`` (``skorch.hf``) prepares the module, the
    criterion, the optimizer, the data loaders and the ``LRScheduler``
    policies with the accelerator, and unwraps the module after training;
    all of that is kept. Its training step is replaced by
    :meth:`_SAMNetMixin.train_step`, as skorch's cannot run SAM (its
    ``_step_optimizer`` calls ``optimizer.step()`` without a closure): our
    closure runs the prepared module under ``accelerator.autocast()`` and
    calls ``accelerator.backward`` (which all-reduces the gradient under
    DDP and scales it under float16), and :class:`SAM` steps with the
    accelerator's ``GradScaler``. So ``AccelerateMixin.train_step`` (and
    its ``accelerator.accumulate`` context), ``train_step_single`` and
    ``_step_optimizer`` are not used. ``_initialize_accelerator`` leaves
    parameterless criteria unprepared (DistributedDataParallel refuses them)
    and hands SAM the prepared (DDP-wrapped) module, whose ``no_sync`` the
    per-worker ascent (``optimizer__ascent='local'``) needs.
    """

    def _initialize_accelerator(self):
        """skorch's preparation, except for parameterless modules; SAM gets the prepared module.

        skorch prepares every criterion, and DistributedDataParallel refuses
        a module without trainable parameters (``CrossEntropyLoss``): those
        are left as they are, which is what preparing them would do on one
        process.
        """
        if self._wrapped_with_accelerator:
            return self
        prepare = self.accelerator.prepare
        for kind, names in (("criterion", self._criteria), ("module", self._modules)):
            with self._current_init_context(kind):
                for name in names:
                    module = getattr(self, name + "_")
                    if isinstance(module, nn.Module) and any(
                        p.requires_grad for p in module.parameters()
                    ):
                        setattr(self, name + "_", prepare(module))
        with self._current_init_context("optimizer"):
            for name in self._optimizers:
                optimizer = getattr(self, name + "_")
                if isinstance(optimizer, torch.optim.Optimizer):
                    setattr(self, name + "_", prepare(optimizer))
        for _, callback in self.callbacks_:
            if isinstance(callback, LRScheduler):
                callback.policy_ = prepare(callback.policy_)
        self._wrapped_with_accelerator = True
        sam = _sam_of(self.optimizer_)
        if sam is not None:
            sam.model = self.module_  # the prepared module: DDP's no_sync
        return self

    def _random_numbers(self):
        # the estimator lends its random state to the whole epoch loop
        return contextlib.nullcontext()


class _AcceleratedSAMNetClassifier(
    _AcceleratedSAMMixin, _SAMNetMixin, AccelerateMixin, NeuralNetClassifier
):
    """:class:`_SAMNetClassifier` under Accelerate."""


class _AcceleratedSAMNetRegressor(
    _AcceleratedSAMMixin, _SAMNetMixin, AccelerateMixin, NeuralNetRegressor
):
    """:class:`_SAMNetRegressor` under Accelerate."""


def _sam_of(optimizer):
    """The :class:`SAM` behind ``optimizer`` (Accelerate wraps it), or None."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    return inner if isinstance(inner, SAM) else None


@functools.cache
def _skorchs_own(net_class):
    """Whether ``net_class`` computes a batch as skorch does: ``infer``, ``get_loss``
    and the components not overridden, and the module and criterion in ``module_``
    and ``criterion_`` (what the direct path of ``train_step`` assumes)."""
    own = {
        "infer": {NeuralNet.infer},
        "get_loss": {NeuralNet.get_loss, NeuralNetClassifier.get_loss, NeuralNetRegressor.get_loss},
        "initialize_module": {NeuralNet.initialize_module},
        "initialize_criterion": {NeuralNet.initialize_criterion},
    }
    return all(getattr(net_class, name) in allowed for name, allowed in own.items())


def _raised_by_callback(exc):
    """Whether ``exc`` was raised in a method of a skorch callback (its innermost frame)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return isinstance(tb.tb_frame.f_locals.get("self"), Callback)


def _batch_len(batch):
    """Number of samples in ``batch``, as skorch's ``run_single_epoch`` counts them."""
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(X) if type(X) is torch.Tensor else get_len(X)


def _is_base_hook(net, hook):
    """Whether ``net``'s own ``hook`` is skorch's no-op."""
    return getattr(type(net), hook) is getattr(NeuralNet, hook) and hook not in vars(net)


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


#: Held while torch's global generators hold an estimator's state
#: (:meth:`NetRandomState.active`): fits in other threads wait instead of
#: drawing from (or resetting) the same global state.
_GLOBAL_RNG_LOCK = threading.RLock()


class NetRandomState:
    """The random numbers an estimator owns: a CPU generator, and its GPU's state.

    torch's layers and initializers draw from torch's global generators
    (``nn.Linear``'s initialization, ``nn.Dropout``); only some functions
    take a ``generator=`` argument. So the estimator keeps its own state
    here: the batch order is drawn from :attr:`generator` directly
    (``torch.randperm(generator=...)``), and code that can only draw from
    the global generators (building the module, a training step of a module
    with dropout) runs inside :meth:`active`, which lends the global
    generators this state under a process-wide lock and takes it back,
    leaving the global state as it found it. A fresh instance seeded with
    ``s`` draws the numbers ``torch.manual_seed(s)`` would.

    Parameters
    ----------
    seed : int
        The seed of the CPU generator (and of the GPU's, when ``device`` is
        a CUDA device).
    device : torch.device
        Where training runs: a CUDA device's generator state is owned too.
    """

    def __init__(self, seed, device):
        self.generator = torch.Generator().manual_seed(seed)
        self.cuda_index = None
        self.cuda_state = None
        if device.type == "cuda":
            self.cuda_index = _resolved_device(device).index
            cuda = torch.Generator(device=torch.device("cuda", self.cuda_index))
            self.cuda_state = cuda.manual_seed(seed).get_state()

    def get_state(self):
        """The generators' state, to hand back to :meth:`set_state`.

        Returns
        -------
        state : tuple
            The CPU generator's state and the GPU's (or None).
        """
        return self.generator.get_state(), self.cuda_state

    def set_state(self, state):
        """Go back to a state returned by :meth:`get_state`.

        Parameters
        ----------
        state : tuple
            As returned by :meth:`get_state`.
        """
        self.generator.set_state(state[0])
        self.cuda_state = state[1]

    @contextlib.contextmanager
    def active(self):
        """Lend torch's global generators this state for the block, then take it back.

        Yields
        ------
        None
        """
        with _GLOBAL_RNG_LOCK:
            saved_cpu = torch.get_rng_state()
            saved_cuda = None
            if self.cuda_state is not None:
                saved_cuda = torch.cuda.get_rng_state(self.cuda_index)
                torch.cuda.set_rng_state(self.cuda_state, self.cuda_index)
            torch.set_rng_state(self.generator.get_state())
            try:
                yield
            finally:
                self.generator.set_state(torch.get_rng_state())
                torch.set_rng_state(saved_cpu)
                if saved_cuda is not None:
                    self.cuda_state = torch.cuda.get_rng_state(self.cuda_index)
                    torch.cuda.set_rng_state(saved_cuda, self.cuda_index)


#: torch layers whose ``forward`` draws random numbers in training mode.
_RANDOM_LAYERS = tuple(
    getattr(nn, name)
    for name in (
        "Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout RReLU "
        "FractionalMaxPool2d FractionalMaxPool3d MultiheadAttention"
    ).split()
    if hasattr(nn, name)
)


def draws_random_numbers(module):
    """Whether a training-mode forward of ``module`` may draw random numbers.

    Yes when a submodule is one of torch's random layers (dropout...), or is
    not one of torch's own layers and does not declare
    ``draws_random_numbers = False`` in its class.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    draws : bool
    """
    for sub in module.modules():
        cls = type(sub)
        if isinstance(sub, _RANDOM_LAYERS):
            return True
        if vars(cls).get("draws_random_numbers") is False:
            continue
        if not cls.__module__.startswith("torch.nn."):
            return True
    return False


class NetSnapshot:
    """What continued training changes in a net, saved to be put back after a failure.

    The module's parameters and buffers, the optimizer's state, the length
    of the history and the random state. Callbacks are user objects and
    keep what they did.

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialized net.
    """

    def __init__(self, net):
        self.net = net
        self.module = {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
        self.optimizer = copy.deepcopy(net.optimizer_.state_dict())
        self.n_epochs = len(net.history)
        rng = getattr(net, "rng", None)
        self.rng = None if rng is None else rng.get_state()

    def restore(self):
        """Put the saved state back into the net."""
        net = self.net
        with torch.no_grad():
            for name, value in net.module_.state_dict().items():
                value.copy_(self.module[name])
        net.optimizer_.load_state_dict(self.optimizer)
        del net.history[self.n_epochs :]
        if self.rng is not None:
            net.rng.set_state(self.rng)


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
