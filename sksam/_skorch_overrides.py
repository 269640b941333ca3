"""Every skorch internal the deep-net estimators override, and its pin (private).

skorch documents ``train_step``, ``train_step_single`` and the ``get_*`` /
``initialize_*`` methods as safe to override; :mod:`sksam._skorch` goes
further. This table is the one list of what it overrides, why (``purpose``:
``'correctness'``, what SAM needs, in ``SAMStepMixin``; ``'speed'``, the
same results for less per batch, in ``FastLoopMixin`` and ``FastHistory``;
``'accelerate'``, the ``accelerator=`` path only), how, and the pin:
``tests/test_net_skorch.py`` checks that each method still exists in skorch
with our signature, and, where ``fingerprint`` is set, that skorch's source
(docstrings and formatting ignored, :func:`source_fingerprint`) is still
the one we read, failing with the method's name when skorch changes it.
A changed ``'speed'`` pin does not fail: the nets then run skorch's own
loop, with a warning (:func:`changed_pins`), so a skorch release that
changes one of those methods costs speed, never a wrong number.
``MIRRORED`` lists the skorch methods we do not override but whose
behaviour a fast path reproduces (or that an override leaves unused),
pinned the same way.
"""

import ast
import functools
import hashlib
import inspect
import textwrap
from collections import namedtuple

from skorch import NeuralNet, NeuralNetClassifier
from skorch.hf import AccelerateMixin  # imports accelerate only when used
from skorch.history import History

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

_SKORCH_CLASSES = {
    "NeuralNet": NeuralNet,
    "NeuralNetClassifier": NeuralNetClassifier,
    "History": History,
    "AccelerateMixin": AccelerateMixin,
}


def changed_pins(purpose):
    """The pinned skorch methods of ``purpose`` whose source is not the one we read.

    ``'speed'``: the methods :class:`sksam._skorch.FastLoopMixin` re-implements
    or mirrors; when one changed (or its source cannot be read), the nets
    use skorch's own loop instead (:func:`sksam._skorch.skorch_net_class`).
    Checked against :data:`COPIED` as it is at the call.

    Parameters
    ----------
    purpose : str
        A ``purpose`` of :data:`OVERRIDES` or :data:`MIRRORED`.

    Returns
    -------
    names : tuple of str
        ``"Class.method"`` names, sorted; empty when every pin holds.
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
    return vars(_SKORCH_CLASSES[cls])[name]


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
