"""The small collaborators of the one SAM pass (:mod:`sksam.optim`).

The pass itself (closure at ``w``, perturb, closure at ``w + e``, restore)
lives in :class:`sksam.optim.SAM`; what varies around it is here, as plain
objects built once per step with their state passed in, the way
``torch.optim``'s functional optimizers take ``grad_scale`` and
``found_inf`` as arguments:

* :class:`Replay` puts back the random numbers of the first pass for the
  second (same dropout masks) and the running statistics of normalization
  layers after it (updated once per step);
* :class:`Scaling` unscales the ascent gradient of float16 training and
  sends the descent step through the ``GradScaler``;
* :class:`GradientLedger` tells the gradients the last step left behind
  from those the caller computed before calling the step;
* :class:`AscentSync` runs the first pass under ``no_sync`` for the
  per-worker ascent of ``DistributedDataParallel`` and all-reduces what must
  agree across ranks.
"""

import contextlib
import os
import sys
import warnings
from contextlib import contextmanager, nullcontext

import torch


class GradientLedger:
    """The gradients a step left behind, to recognise the caller's own.

    Each gradient is marked by its identity and version: a backward pass
    (or ``zero_``) on it changes one of them. A gradient set or changed
    since the last step was computed by the caller (``loss.backward();
    opt.step(closure)``, the community style).
    """

    def __init__(self):
        self.left = None
        self.warned = False

    def remember(self, params):
        """Mark the gradients of ``params`` as left by the optimizer."""
        self.left = _marks(params)

    def caller_made(self, params):
        """Whether some gradient was set or changed since the last step; warn once."""
        marks = _marks(params)
        left = self.left
        if left is None or len(left) != len(marks):
            left = [None] * len(marks)
        fresh = any(mark is not None and mark != old for mark, old in zip(marks, left))
        if fresh and not self.warned:
            self.warned = True
            warnings.warn(
                "SAM.step(closure) found gradients computed before it was called "
                "(loss.backward() before opt.step(closure), or gradients filled "
                "by zero_grad(set_to_none=False)). They are discarded: step() "
                "takes every gradient it uses from the closure, at the current "
                "weights, so the step is the SAM step, but the backward pass "
                "before it was wasted. Call opt.step(closure) alone (or "
                "first_step()/second_step()). This warning is shown once.",
                UserWarning,
                stacklevel=_caller_level(),
            )
        return fresh


def _marks(params):
    return [None if (g := p.grad) is None else (id(g), g._version) for p in params]


def _caller_level():
    """The ``stacklevel`` of a warning that points at the code calling the optimizer."""
    here = os.path.dirname(__file__)
    internal = {
        __file__,
        os.path.join(here, "optim.py"),
        contextlib.__file__,
        sys.modules[torch.optim.Optimizer.__module__].__file__,
    }
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename in internal:
        frame, level = frame.f_back, level + 1
    return level


class Replay:
    """Replay of the first pass's random numbers and running statistics.

    Parameters
    ----------
    stats : list of torch.Tensor
        Running-statistics buffers to put back after the second pass.
    replays_rng : bool
        Whether the second pass sees the random numbers of the first.
    devices : list of int
        CUDA devices whose generators are replayed too.
    """

    def __init__(self, stats, replays_rng, devices):
        self.stats = stats
        self.replays_rng = replays_rng
        self.devices = devices

    def capture(self):
        """The generator states before the first pass (``None``: no replay)."""
        return get_rng(self.devices) if self.replays_rng else None

    @contextmanager
    def second_pass(self, rng_before):
        """Run the body with the first pass's random numbers; keep the statistics.

        Afterwards the generators are where the first pass left them and the
        running statistics are as the first pass set them.
        """
        saved = [b.clone() for b in self.stats]
        if rng_before is not None:
            rng_after = get_rng(self.devices)
            set_rng(rng_before, self.devices)  # same dropout masks in both passes
        try:
            yield
        finally:
            if saved:
                with torch.no_grad():
                    torch._foreach_copy_(self.stats, saved)
            if rng_before is not None:
                set_rng(rng_after, self.devices)


class Scaling:
    """Loss scaling of float16 training around the pass; ``scaler=None`` is a no-op.

    Parameters
    ----------
    scaler : torch.amp.GradScaler or None
        An enabled scaler, or ``None``.
    """

    def __init__(self, scaler):
        self.scaler = scaler

    def ascent_grads(self, params):
        """The first pass's gradients for the ascent, and a non-finite flag.

        Without a scaler: ``(None, None)`` (the ascent reads ``.grad``).
        With one: unscaled copies (``.grad`` stays scaled, for the scaler's
        own bookkeeping) and a boolean tensor, true if any is inf or NaN.
        """
        if self.scaler is None:
            return None, None
        grads = [p.grad for p in params]
        present = [g for g in grads if g is not None]
        if not present:
            return grads, None
        unscaled = iter(torch._foreach_mul(present, 1.0 / self.scaler.get_scale()))
        grads = [None if g is None else next(unscaled) for g in grads]
        norms = torch._foreach_norm([g for g in grads if g is not None])
        found = torch.stack(norms).isfinite().all().logical_not()
        return grads, found

    def descend(self, optimizer, params, found=None):
        """The base step along ``.grad``, skipped by the scaler if ``found``."""
        if self.scaler is None:
            optimizer.step()
            return
        if found is not None:
            poison(params, found)  # an earlier pass overflowed: skip
        self.scaler.unscale_(optimizer)
        self.scaler.step(optimizer)


class AscentSync:
    """What the ranks of a ``DistributedDataParallel`` module must agree on.

    Parameters
    ----------
    model : torch.nn.Module or None
        The module being trained (DDP-wrapped or not).
    mode : {'global', 'local', 'chunks'}
        ``'global'``: DDP synchronises every backward pass. ``'local'``: the
        first pass runs under ``model.no_sync()`` (the per-worker ascent).
        ``'chunks'``: every pass runs under it (m-sharpness chunks), and the
        mean descent gradient is all-reduced once by :meth:`all_reduce_grads`.
    """

    def __init__(self, model, mode):
        self.model = model
        self.mode = mode
        self.ddp = hasattr(model, "no_sync")

    def first_pass(self):
        """The context of a SAM step's first pass: ``no_sync`` for a local ascent."""
        return self.model.no_sync() if self.ddp and self.mode == "local" else nullcontext()

    def whole_pass(self):
        """The context of every pass of a chunked step: ``no_sync``."""
        return self.model.no_sync() if self.ddp and self.mode == "chunks" else nullcontext()

    def agree(self, found):
        """Make the overflow flag ``found`` true on every rank if it is on one."""
        if found is None or not (self.ddp and self.mode == "local") or world_size() <= 1:
            return
        import torch.distributed as dist

        value = found.to(torch.float32)
        group = getattr(self.model, "process_group", None)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
        found.copy_(value > 0)

    def all_reduce_grads(self, params):
        """Average ``.grad`` over the ranks of the model's process group, if any."""
        if not hasattr(self.model, "no_sync") or world_size() <= 1:
            return
        import torch.distributed as dist

        group = getattr(self.model, "process_group", None)
        world = dist.get_world_size(group)
        buckets = {}
        for p in params:
            if p.grad is not None:
                buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=group)
            flat.div_(world)
            torch._foreach_copy_(
                grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)]
            )


def world_size():
    """The number of processes of the default group (1 without distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def poison(params, found):
    """Fill one gradient with inf where ``found``, so that the scaler skips the step."""
    for p in params:
        if p.grad is not None:
            p.grad.masked_fill_(found, float("inf"))
            return


def get_rng(devices):
    """The CPU generator state and those of the CUDA ``devices``."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def set_rng(states, devices):
    """Put back states taken by :func:`get_rng`."""
    cpu, cuda = states
    torch.set_rng_state(cpu)
    for device, state in zip(devices, cuda):
        torch.cuda.set_rng_state(state, device)
