"""Our skorch net: every override, in one place, with its pin (private).

:class:`sksam.SAMNetClassifier` and :class:`sksam.SAMNetRegressor` each own
a skorch net (``net_``) built from the classes here: :class:`SkorchSAMClassifier`
and :class:`SkorchSAMRegressor`, skorch's ``NeuralNetClassifier`` and
``NeuralNetRegressor`` with :class:`SAMNetMixin` in front; with the net's
data path (its device, tensors, :class:`TensorBatchLoader`) and the
estimator's random state (:class:`NetRandomState`).

skorch documents ``train_step``, ``train_step_single`` and the ``get_*`` /
``initialize_*`` methods as safe to override; we go further. :data:`OVERRIDES`
is the one list of what we override, why (``purpose``: ``'correctness'``,
what SAM needs, in :class:`SAMStepMixin`; ``'speed'``, the same results for
less per batch, in :class:`FastLoopMixin` and :class:`FastHistory`, which can
be removed without changing a number; ``'accelerate'``, the ``accelerator=``
path only), how, and the pin: ``tests/test_net_skorch.py`` checks that each
method still exists in skorch with our signature, and, where ``fingerprint``
is set, that skorch's source (docstrings and formatting ignored,
:func:`source_fingerprint`) is still the one we read, failing with the
method's name when skorch changes it. A changed ``'speed'`` pin does not
fail: the nets then run skorch's own loop, with a warning
(:func:`changed_pins`), so a skorch release that changes one of those
methods costs speed, never a wrong number. :data:`MIRRORED` lists the skorch
methods we do not override but whose behaviour a fast path reproduces (or
that an override leaves unused), pinned the same way.
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
import warnings
from collections import namedtuple

import numpy as np
import skorch
import torch
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset, get_len, unpack_data
from skorch.hf import AccelerateMixin  # imports accelerate only when used
from skorch.history import History
from skorch.utils import TeeGenerator
from torch import nn
from torch.utils.data import DataLoader, Subset

from ._base import Snapshot, user_stacklevel
from .optim import SAM, MomentumSAM

# -- the overrides and their pins --------------------------------------------------

#: Pinned against skorch 1.4.0.
SKORCH_VERSION = "1.4.0"

Override = namedtuple("Override", "purpose how fingerprint note")

OVERRIDES = {
    # -- correctness: what SAM needs (SAMStepMixin) ------------------------------
    "NeuralNet.__init__": Override(
        "correctness",
        "extended",
        None,
        "Three more parameters: ``m`` and ``precision``, read by ``train_step``, and "
        "``rng`` (a ``NetRandomState``: the estimator's random numbers).",
    ),
    "NeuralNet.train_step": Override(
        "correctness",
        "re-implemented",
        "517109f451b151b0",
        "One closure that computes only (clear gradients, forward, loss, backward); "
        "skorch's per-step bookkeeping (step accumulator, ``on_grad_computed``) runs "
        "once per SAM step instead of once per pass.",
    ),
    "NeuralNet.fit_loop": Override(
        "correctness",
        "extended",
        None,
        "skorch's, noting a ``KeyboardInterrupt`` in ``interrupted_`` (skorch's "
        "``partial_fit`` swallows it); the step plan (precision, scaler, device) is "
        "made once here, and the listener cache dropped at the end.",
    ),
    "NeuralNet.get_params_for_optimizer": Override(
        "correctness",
        "extended",
        None,
        "skorch's, plus ``model=`` the first module for ``sksam.optim.SAM``.",
    ),
    # -- speed: same results, less per batch (FastLoopMixin, FastHistory) ---------
    "NeuralNet.run_single_epoch": Override(
        "speed",
        "re-implemented",
        "26e1bb2a69a0a4c3",
        "The same hooks and history records as skorch's, with the batch size of a "
        "tensor taken by ``len`` instead of skorch's ``get_len``.",
    ),
    "NeuralNet.notify": Override(
        "speed",
        "re-implemented",
        "18b3579cf8f07cd0",
        "For the per-batch hooks, calls only the callbacks of ``callbacks_`` that "
        "implement the hook (a cache checked against ``callbacks_`` at every call); "
        "same order as skorch's.",
    ),
    "NeuralNet._set_training": Override(
        "speed",
        "guarded",
        "b45cc3574aeaedd6",
        "skorch's, skipped when every module already is in the requested mode.",
    ),
    "NeuralNet.initialize_history": Override(
        "speed",
        "replaced",
        "7206a56f4bc54da3",
        "skorch's, with a ``FastHistory`` as the default (a user's history is kept).",
    ),
    "History.new_batch": Override(
        "speed",
        "re-implemented",
        "259969f3f798ce19",
        "Plain list indexing of the last row instead of ``History``'s slicing parser.",
    ),
    "History.record_batch": Override(
        "speed",
        "re-implemented",
        "a4621257bbcab558",
        "As ``History.new_batch``.",
    ),
    # -- accelerator= only (AcceleratedSAMMixin) --------------------------------
    "AccelerateMixin.train_step": Override(
        "accelerate",
        "replaced by ours",
        "b1033fa6432086ce",
        "Our ``train_step`` runs instead, so skorch's ``train_step_single`` and "
        "``_step_optimizer`` of that mixin (which call ``optimizer.step()`` without a "
        "closure, so cannot run SAM) are not used.",
    ),
    "AccelerateMixin._initialize_accelerator": Override(
        "accelerate",
        "re-implemented",
        "1af18d6c389acede",
        "skorch's preparation, except for modules without trainable parameters (the "
        "usual criteria, which DistributedDataParallel refuses), then SAM's ``model`` "
        "set to the prepared module.",
    ),
}

#: skorch methods we do not override but whose behaviour a fast path
#: reproduces, or that an override makes unused: pinned as well.
MIRRORED = {
    "NeuralNet.infer": Override(
        "speed",
        "mirrored",
        "d460a7804e14a036",
        "A batch of tensors on the device goes straight to ``module_`` (what "
        "``infer`` does with it), unless a subclass overrides ``infer``.",
    ),
    "NeuralNet.get_loss": Override(
        "speed",
        "mirrored",
        "ba674830d377b3be",
        "... and to ``criterion_``, unless a subclass overrides ``get_loss``.",
    ),
    "NeuralNetClassifier.get_loss": Override(
        "speed", "mirrored", "90d000207315361e", "As ``NeuralNet.get_loss``."
    ),
    "AccelerateMixin.train_step_single": Override(
        "mirrored", "not used", "b6a9297f270cbdb1", "See ``AccelerateMixin.train_step``."
    ),
    "AccelerateMixin._step_optimizer": Override(
        "mirrored", "not used", "be534e706d9bdb33", "See ``AccelerateMixin.train_step``."
    ),
}

#: The pinned fingerprints (:func:`source_fingerprint`) of the skorch methods we
#: re-implement or mirror. A different fingerprint means skorch changed the
#: method: re-read it, update our version, then the table above.
COPIED = {name: o.fingerprint for name, o in {**OVERRIDES, **MIRRORED}.items() if o.fingerprint}

SKORCH_CLASSES = {
    "NeuralNet": NeuralNet,
    "NeuralNetClassifier": NeuralNetClassifier,
    "History": History,
    "AccelerateMixin": AccelerateMixin,
}


def changed_pins(purpose):
    """The pinned skorch methods of ``purpose`` whose source is not the one we read.

    ``'speed'``: the methods :class:`FastLoopMixin` re-implements
    or mirrors; when one changed (or its source cannot be read), the nets
    use skorch's own loop instead (:func:`skorch_net_class`). Checked
    against :data:`COPIED` as it is at the call; ``"Class.method"`` names,
    sorted, empty when every pin holds.
    """
    rows = {**OVERRIDES, **MIRRORED}
    pinned = tuple(sorted((n, COPIED[n]) for n, o in rows.items() if o.purpose == purpose))
    return _changed(pinned)


@functools.cache
def _changed(pinned):
    changed = []
    for name, fingerprint in pinned:
        try:
            found = source_fingerprint(skorch_method(name))
        except (OSError, TypeError, KeyError, SyntaxError):  # no source, or no method
            found = None
        if found != fingerprint:
            changed.append(name)
    return tuple(changed)


def skorch_method(qualname):
    """The skorch function named ``"Class.method"``."""
    cls, name = qualname.split(".")
    return vars(SKORCH_CLASSES[cls])[name]


def source_fingerprint(func):
    """A hash of ``func``'s code, blind to docstrings, comments and formatting."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    dump = "\n".join(ast.dump(node) for node in body)
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


def describe():
    """The table as reST definitions, for :mod:`sksam._skorch`'s docstring."""
    return "\n".join(
        f"``{name}`` ({o.purpose}, {o.how})\n    {o.note}\n"
        for name, o in {**OVERRIDES, **MIRRORED}.items()
    )


__doc__ += "\n" + describe()

# -- the data path: devices, tensors, batches ----------------------------------------


def resolved_device(device):
    """``device`` as a ``torch.device``, with the current index for a bare ``'cuda'``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def net_device(net):
    """Where ``net`` holds its module: its ``device``, or its accelerator's."""
    if net.device is None:
        return torch.device(net.accelerator.device)
    return torch.device(net.device)


def is_cpu(device):
    """Whether ``device`` names the CPU (an invalid name counts as one: ``fit`` says why)."""
    try:
        return torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        return True  # fit will say what is wrong with it


def to_tensor(X, device):
    """``X`` as a float32 tensor on ``device``."""
    # torch warns on read-only arrays (memory maps); copy those.
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])
    return torch.as_tensor(X, device=device)


#: Batches whose rows :class:`TensorBatchLoader` gathers in one go.
CHUNK_BATCHES = 32


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
    drop_single_row : bool, default=False
        Skip a last batch of one row (when there are more rows): batch
        normalization cannot normalize a single row in training mode. The
        estimators set it for a module with batch normalization.
    **loader_kwargs
        Options that only a ``DataLoader`` understands.
    """

    def __init__(
        self,
        dataset,
        batch_size=128,
        shuffle=False,
        generator=None,
        drop_single_row=False,
        **loader_kwargs,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_single_row = drop_single_row
        self.loader_kwargs = loader_kwargs

    def __len__(self):
        n = len(self.dataset)
        return math.ceil(n / self.batch_size) - int(self._drops_last(n))

    def _drops_last(self, n):
        """Whether the last of the batches of ``n`` rows is a single row to skip."""
        return self.drop_single_row and n > 1 and self.batch_size > 1 and n % self.batch_size == 1

    def __iter__(self):
        if not self._drops_last(len(self.dataset)):
            yield from self._batches()
            return
        for batch in self._batches():
            if batch_rows(batch) > 1:  # only the last batch can be a single row
                yield batch

    def _batches(self):
        X, y = dataset_tensors(self.dataset)
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
        # Gather the rows of CHUNK_BATCHES batches at a time and slice the
        # batches from them: the same batches as X[order[start:stop]], for
        # one gather per chunk instead of two per batch (a few per cent of a
        # small epoch), and at most that many batches of memory.
        chunk = self.batch_size * CHUNK_BATCHES
        for first in range(0, n, chunk):
            index = order[first : first + chunk]
            X_chunk = X.index_select(0, index)
            y_chunk = None if y is None else y.index_select(0, index)
            for start in range(0, len(index), self.batch_size):
                stop = start + self.batch_size
                yield X_chunk[start:stop], (None if y_chunk is None else y_chunk[start:stop])


def dataset_tensors(dataset):
    """``(X, y)`` tensors behind a skorch ``Dataset`` or a ``Subset`` of one."""
    if isinstance(dataset, Subset):
        X, y = dataset_tensors(dataset.dataset)
        if X is None:
            return None, None
        index = torch.as_tensor(np.asarray(dataset.indices), device=X.device)
        return X[index], (None if y is None else y[index])
    if isinstance(dataset, Dataset) and torch.is_tensor(dataset.X):
        if dataset.y is None or torch.is_tensor(dataset.y):
            return dataset.X, dataset.y
    return None, None


def batch_rows(batch):
    """Number of samples in ``batch``, as skorch's ``run_single_epoch`` counts them."""
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(X) if type(X) is torch.Tensor else get_len(X)


# -- the random state -----------------------------------------------------------------

#: Held while torch's global generators hold an estimator's state
#: (:meth:`NetRandomState.active`): fits in other threads wait instead of
#: drawing from (or resetting) the same global state.
GLOBAL_RNG_LOCK = threading.RLock()


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
            self.cuda_index = resolved_device(device).index
            cuda = torch.Generator(device=torch.device("cuda", self.cuda_index))
            self.cuda_state = cuda.manual_seed(seed).get_state()

    def get_state(self):
        """The CPU generator's state and the GPU's (or None), for :meth:`set_state`."""
        return self.generator.get_state(), self.cuda_state

    def set_state(self, state):
        """Go back to a state returned by :meth:`get_state`."""
        self.generator.set_state(state[0])
        self.cuda_state = state[1]

    @contextlib.contextmanager
    def active(self):
        """Lend torch's global generators this state for the block, then take it back."""
        with GLOBAL_RNG_LOCK:
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
RANDOM_LAYERS = tuple(
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
    """
    for sub in module.modules():
        cls = type(sub)
        if isinstance(sub, RANDOM_LAYERS):
            return True
        if vars(cls).get("draws_random_numbers") is False:
            continue
        if not cls.__module__.startswith("torch.nn."):
            return True
    return False


def whole_fit_random_state(net):
    """Under Accelerate, the whole epoch loop runs with the estimator's random state.

    Accelerate's data loaders and processes draw from torch's global
    generators; one process per device means no other fit shares them.
    Elsewhere only a training step of a module that draws random numbers
    borrows it (:meth:`NetRandomState.active`).
    """
    if getattr(net, "accelerator", None) is None:
        return contextlib.nullcontext()
    return net.rng.active()


# -- the net --------------------------------------------------------------------------

#: The names the classes of an estimator pickled by an earlier sksam had here
#: (its net and its history), for unpickling it.
MOVED = {
    "_SAMNetClassifier": "SkorchSAMClassifier",
    "_SAMNetRegressor": "SkorchSAMRegressor",
    "_AcceleratedSAMNetClassifier": "AcceleratedSkorchSAMClassifier",
    "_AcceleratedSAMNetRegressor": "AcceleratedSkorchSAMRegressor",
    "_History": "FastHistory",
}


def __getattr__(name):
    """Resolve :data:`MOVED` names (unpickling an estimator of an earlier release)."""
    if name in MOVED:
        return globals()[MOVED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FastHistory(History):
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
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}

#: Per-batch callback hooks, filtered by :meth:`FastLoopMixin.notify`.
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_grad_computed")


class StepPlan:
    """How each training step of one fit runs, decided once when the fit starts.

    The autocast context, the loss scaler, the ``backward`` call and the
    device whose tensors skip skorch's conversions: from ``precision``,
    ``device`` and ``accelerator``, which do not change during a fit.

    Parameters
    ----------
    net : skorch.NeuralNet
        An initialized net with :class:`SAMStepMixin`.
    """

    def __init__(self, net):
        self.accelerator = getattr(net, "accelerator", None)
        self.device = None if net.device is None else resolved_device(net.device)
        self.dtype = None
        if self.accelerator is not None:
            self.scaler = self.accelerator.scaler
        else:
            self.dtype = AUTOCAST.get(getattr(net, "precision", "float32"))
            self.scaler = None
            if getattr(net, "precision", "float32") == "float16":
                if net.__dict__.get("grad_scaler_") is None:  # kept across fits
                    net.grad_scaler_ = torch.amp.GradScaler(self.device.type)
                self.scaler = net.grad_scaler_

    def autocast(self):
        """The autocast context of a forward pass (none for float32)."""
        if self.accelerator is not None:
            return self.accelerator.autocast()
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss):
        """``loss.backward()``, through the loss scaler or the accelerator."""
        if self.accelerator is not None:
            self.accelerator.backward(loss)  # scales the loss itself under float16
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def on_device(self, x):
        """Whether ``x`` is a tensor that skorch's ``to_tensor`` would leave as is."""
        if type(x) is not torch.Tensor:  # subclasses (PackedSequence...) go to skorch
            return False
        return self.device is None or x.device == self.device


class SAMStepMixin:
    """What SAM needs from skorch's net (correctness; see ``OVERRIDES``).

    skorch's ``train_step`` hands the optimizer a closure that does all of
    skorch's per-batch bookkeeping at every call, so twice per SAM step,
    and no model for SAM; ``partial_fit`` swallows ``KeyboardInterrupt``.
    A net with only this mixin computes what skorch's net computes (with
    ``on_grad_computed`` once per step).
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
        interruption. The step plan (:class:`StepPlan`) and the listener
        cache live only while the loop runs.
        """
        self.interrupted_ = False
        self._plan_ = StepPlan(self)
        try:
            return super().fit_loop(X, y, epochs, _routing_method=_routing_method, **fit_params)
        except KeyboardInterrupt as exc:
            self.interrupted_ = not raised_by_callback(exc)
            raise
        finally:
            self.__dict__.pop("_plan_", None)
            self.__dict__.pop("_listeners_", None)

    def _plan(self):
        plan = self.__dict__.get("_plan_")
        return StepPlan(self) if plan is None else plan  # a step outside fit_loop

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

    def train_step(self, batch, **fit_params):
        """One optimizer step, with skorch's per-batch work done once, not per pass.

        The closure only computes: it clears the gradients, runs the module
        and the criterion on the batch under :meth:`StepPlan.autocast` and
        calls :meth:`StepPlan.backward`, the same in both passes. The step
        returns the first pass's loss and prediction, at the unperturbed
        weights: ``history`` records that loss as ``train_loss``. With
        ``m > 1`` the batch is split into ``m`` chunks, each with its own
        perturbation (``SAM.step_chunks``).

        ``on_grad_computed`` is notified once per step, with the gradient
        the base optimizer is about to use: after the second pass for SAM
        (the weights are then still at ``w + e``, where that gradient was
        taken; they are restored right after), after the only pass for GD.
        With ``m > 1`` it is notified after the last chunk's second pass.
        :class:`~sksam.optim.MomentumSAM` takes the same step with its one
        pass (at its perturbed weights, which it restores).

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
        optimizer = closure_optimizer_of(self.optimizer_)
        if optimizer is None or len(self._optimizers) != 1:
            with self._random_numbers():
                return super().train_step(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        plan = self._plan()
        scaler = plan.scaler
        m = getattr(self, "m", 1)
        if m > 1 and len(Xi) > 1 and isinstance(optimizer, SAM):
            return self._chunked_step(optimizer, batch, Xi, yi, min(m, len(Xi)), plan, fit_params)
        forward = self._forward_loss(Xi, yi, fit_params, plan)
        passes = gradient_passes(optimizer)
        steps = []

        def closure():
            optimizer.zero_grad()
            y_pred, loss = forward()
            plan.backward(loss)
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

    def _chunked_step(self, optimizer, batch, Xi, yi, m, plan, fit_params):
        """The m-sharpness step: ``m`` chunks of the batch, each with its own ascent."""
        chunks = list(zip(Xi.tensor_split(m), yi.tensor_split(m)))
        forwards = [self._forward_loss(Xc, yc, fit_params, plan) for Xc, yc in chunks]
        firsts, calls, passes = {}, [0], m * (2 if optimizer.perturbs() else 1)

        def closure(i):
            y_pred, loss = forwards[i]()
            plan.backward(loss)
            firsts.setdefault(i, y_pred)
            calls[0] += 1
            if calls[0] == passes:
                self._notify_grad_computed(batch)
            return loss

        with self._random_numbers():
            loss = optimizer.step_chunks(closure, m, grad_scaler=plan.scaler)
        if plan.scaler is not None:
            plan.scaler.update()
        if calls[0] < passes:
            self._notify_grad_computed(batch)
        y_pred = torch.cat([firsts[i] for i in range(m)])
        return {"loss": torch.as_tensor(loss).detach(), "y_pred": y_pred}

    def _forward_loss(self, Xi, yi, fit_params, plan):
        """A function returning ``(y_pred, loss)`` on the batch, as skorch computes them."""

        def forward():
            with plan.autocast():
                y_pred = self.infer(Xi, **fit_params)
                return y_pred, self.get_loss(y_pred, yi, X=Xi, training=True)

        return forward

    def _notify_grad_computed(self, batch):
        if is_base_hook(self, "on_grad_computed") and not self._listeners("on_grad_computed"):
            return  # nobody listens: skip building the parameter generator
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )

    def _listeners(self, hook):
        """The callbacks that implement ``hook``; all of them (skorch calls all)."""
        return [cb for _, cb in getattr(self, "callbacks_", ())]


class FastLoopMixin:
    """Less of skorch's per-batch overhead, same results (speed; see ``OVERRIDES``).

    SAM pays skorch's per-batch overhead twice per step (two closure
    calls); on small networks that overhead is a large part of an epoch.
    Every method here computes what skorch's does, faster; removing the
    mixin changes no number.
    """

    def initialize_history(self):
        """skorch's, with a :class:`FastHistory` (faster batch records) as the default.

        A history given by the user (``history=MyHistory()``) is kept and
        cleared, as skorch does.
        """
        if self.history_ is None:
            self.history_ = FastHistory()
        else:
            self.history_.clear()
        return self

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
            self.history.record_batch(size_key, batch_rows(batch))
            self.notify("on_batch_end", batch=batch, training=training, **step)
            batch_count += 1
        self.history.record(prefix + "_batch_count", batch_count)

    def _forward_loss(self, Xi, yi, fit_params, plan):
        """A batch of tensors on the device goes straight to ``module_`` and ``criterion_``.

        That is what skorch's ``infer`` and ``get_loss`` do with such a
        batch; anything else (and a subclass overriding either) goes
        through them.
        """
        if (
            fit_params
            or not computes_as_skorch(type(self))
            or not (plan.on_device(Xi) and plan.on_device(yi))
            or isinstance(self.criterion_, nn.NLLLoss)  # the classifier takes its log
        ):
            return super()._forward_loss(Xi, yi, fit_params, plan)

        def forward():
            with plan.autocast():
                y_pred = self.module_(Xi)
                return y_pred, self.criterion_(y_pred, yi)

        return forward

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
            by_hook = {h: [cb for _, cb in callbacks if implements(cb, h)] for h in BATCH_HOOKS}
            cached = self._listeners_ = (list(callbacks), by_hook)
        return cached[1][hook]

    def notify(self, method_name, **cb_kwargs):
        """Call the net's hook ``method_name``, then the callbacks that implement it."""
        # skorch calls every callback at every hook, three times per batch;
        # calling only those that override the no-op hook is the same thing,
        # for less per batch.
        if method_name not in BATCH_HOOKS:
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


class SAMNetMixin(FastLoopMixin, SAMStepMixin):
    """skorch's net for SAM (:class:`SAMStepMixin`), faster (:class:`FastLoopMixin`)."""


class SkorchSAMClassifier(SAMNetMixin, NeuralNetClassifier):
    """skorch's ``NeuralNetClassifier`` with :class:`SAMNetMixin`."""


class SkorchSAMRegressor(SAMNetMixin, NeuralNetRegressor):
    """skorch's ``NeuralNetRegressor`` with :class:`SAMNetMixin`."""


class PlainSkorchSAMClassifier(SAMStepMixin, NeuralNetClassifier):
    """skorch's ``NeuralNetClassifier`` with SAM's step only: skorch's own epoch loop."""


class PlainSkorchSAMRegressor(SAMStepMixin, NeuralNetRegressor):
    """skorch's ``NeuralNetRegressor`` with SAM's step only: skorch's own epoch loop."""


class AcceleratedSAMMixin:
    """skorch's ``AccelerateMixin`` with SAM's two passes done right ('accelerate' overrides).

    Everything ``AccelerateMixin`` prepares and unwraps is kept; its training
    step, which calls ``optimizer.step()`` without a closure, gives way to
    :meth:`SAMStepMixin.train_step` (the user guide, :doc:`/distributed`, says
    what that keeps and changes).
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
        sam = closure_optimizer_of(self.optimizer_)
        if isinstance(sam, SAM):
            sam.model = self.module_  # the prepared module: DDP's no_sync
        return self

    def _random_numbers(self):
        # the estimator lends its random state to the whole epoch loop
        return contextlib.nullcontext()


class AcceleratedSkorchSAMClassifier(
    AcceleratedSAMMixin, SAMNetMixin, AccelerateMixin, NeuralNetClassifier
):
    """:class:`SkorchSAMClassifier` under Accelerate."""


class AcceleratedSkorchSAMRegressor(
    AcceleratedSAMMixin, SAMNetMixin, AccelerateMixin, NeuralNetRegressor
):
    """:class:`SkorchSAMRegressor` under Accelerate."""


class PlainAcceleratedSkorchSAMClassifier(
    AcceleratedSAMMixin, SAMStepMixin, AccelerateMixin, NeuralNetClassifier
):
    """:class:`PlainSkorchSAMClassifier` under Accelerate."""


class PlainAcceleratedSkorchSAMRegressor(
    AcceleratedSAMMixin, SAMStepMixin, AccelerateMixin, NeuralNetRegressor
):
    """:class:`PlainSkorchSAMRegressor` under Accelerate."""


#: (task, accelerated, fast loop) -> the skorch net class the estimators build.
NET_CLASSES = {
    ("classifier", False, True): SkorchSAMClassifier,
    ("regressor", False, True): SkorchSAMRegressor,
    ("classifier", True, True): AcceleratedSkorchSAMClassifier,
    ("regressor", True, True): AcceleratedSkorchSAMRegressor,
    ("classifier", False, False): PlainSkorchSAMClassifier,
    ("regressor", False, False): PlainSkorchSAMRegressor,
    ("classifier", True, False): PlainAcceleratedSkorchSAMClassifier,
    ("regressor", True, False): PlainAcceleratedSkorchSAMRegressor,
}


def skorch_net_class(task, accelerated):
    """The skorch net class for ``task`` (``'classifier'`` or ``'regressor'``).

    With :class:`FastLoopMixin` when the skorch methods it reproduces are
    still the ones it was written against (:func:`changed_pins`); otherwise
    skorch's own epoch loop, which gives the same numbers more slowly,
    with a warning that names the changed methods.
    """
    changed = changed_pins("speed")
    if changed:
        warnings.warn(
            f"skorch {skorch.__version__} changed {', '.join(changed)}, which sksam's fast "
            f"epoch loop reproduces (written against skorch {SKORCH_VERSION}): the nets "
            "train with skorch's own epoch loop instead, which gives the same results "
            "with more overhead per batch. A newer sksam restores the fast loop.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return NET_CLASSES[task, accelerated, not changed]


def accelerated_params(params, accelerator):
    """``params`` of a skorch net for the accelerated net: Accelerate shards and places data.

    Accelerate shards ``DataLoader``s (not :class:`TensorBatchLoader`),
    places the data itself, and its loaders draw from the global generators;
    its PrintLog sink (``accelerator.print``) ignores ``verbose``.
    """
    params = dict(params)
    if params.get("callbacks__print_log", ...) is None:
        del params["callbacks__print_log"]
        params.setdefault("callbacks__print_log__sink", silent)
    del params["iterator_train__generator"]
    params.update(
        iterator_train=DataLoader, iterator_valid=DataLoader, device=None, accelerator=accelerator
    )
    return params


def silent(*args, **kwargs):
    """A print that prints nothing (PrintLog's sink when ``verbose=0`` under Accelerate)."""


def closure_optimizer_of(optimizer):
    """The optimizer behind ``optimizer`` whose step :meth:`SAMStepMixin.train_step` drives.

    :class:`SAM` (two passes, or one) and :class:`MomentumSAM` (one pass at
    its own perturbed weights): both call the closure and restore the
    weights themselves. ``None`` for any other optimizer (skorch's step).
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    return inner if isinstance(inner, (SAM, MomentumSAM)) else None


def gradient_passes(optimizer):
    """Closure calls per step of a :func:`closure_optimizer_of` optimizer."""
    return 2 if isinstance(optimizer, SAM) and optimizer.perturbs() else 1


@functools.cache
def computes_as_skorch(net_class):
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


def raised_by_callback(exc):
    """Whether ``exc`` was raised in a method of a skorch callback (its innermost frame)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return isinstance(tb.tb_frame.f_locals.get("self"), Callback)


def is_base_hook(net, hook):
    """Whether ``net``'s own ``hook`` is skorch's no-op."""
    return getattr(type(net), hook) is getattr(NeuralNet, hook) and hook not in vars(net)


def implements(callback, hook):
    """Whether ``callback`` does something at ``hook`` (is not the base no-op)."""
    return hook in vars(callback) or getattr(type(callback), hook, None) is not getattr(
        Callback, hook
    )


class NetSnapshot(Snapshot):
    """What continued training changes in a net, saved to be put back after a failure.

    The net family's :class:`~sksam._base.Snapshot` for
    :class:`~sksam._base.FitTransaction`, which puts the estimator's
    attributes back itself.

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
