"""A PyTorch SAM optimizer that gets the hard parts right.

:class:`SAM` wraps any ``torch.optim.Optimizer`` (the *base* optimizer) and
takes the two-pass step of Sharpness-Aware Minimization (Foret et al., 2021)::

    g  = grad L(w)                      # first closure call
    e  = perturbation(g, w)             # sksam._update_rules, one home for all
    g' = grad L(w + e)                  # second closure call
    w <- base_step(w, g')               # the base optimizer, at the original w

It has the constructor of the widely used community version
(``SAM(params, base_optimizer, rho=0.05, adaptive=False, **kwargs)``), so it
can be swapped in, and fixes the pitfalls listed in ``DESIGN.md``:

* :meth:`SAM.step` calls the closure *first*, so it works where no gradient
  exists yet (skorch calls ``optimizer.step(step_fn)`` before any backward
  pass), and returns the loss of that first call, at the unperturbed weights;
* the weights are restored by copying the saved originals back (bit exact),
  for exactly the parameters that were perturbed;
* with ``model=...``, running statistics of normalization layers
  (BatchNorm's ``running_mean``, ``running_var`` and ``num_batches_tracked``)
  are saved before the second pass and put back after it, so they are updated
  once per step;
* the second pass replays the random number generator state of the first, so
  dropout masks are the same in both passes, and the generator is left where
  the first pass left it (as if only one pass had been taken); the replay is
  skipped only when ``model`` provably draws no random numbers
  (``replay_rng='auto'``);
* a zero gradient gives a zero perturbation (never a division by zero);
* ``rho=0`` (or ``solver='gd'``) calls the closure once and is the base
  optimizer bit for bit, weights and buffers;
* weight decay enters the ascent only if asked (``weight_decay_in_ascent``).

References
----------
Foret, Kleiner, Mobahi, Neyshabur (2021). Sharpness-Aware Minimization for
Efficiently Improving Generalization. ICLR.

Kwon, Kim, Park, Choi (2021). ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks. ICML.

Andriushchenko, Flammarion (2022). Towards Understanding Sharpness-Aware
Minimization. ICML.
"""

import torch
from torch.nn.modules.batchnorm import _NormBase

from ._update_rules import (
    ASAM_ETA,
    add_perturbation_,
    check_solver,
    is_perturbed,
    perturbation,
    restore_,
)

__all__ = ["SAM"]


def _resolve_solver(solver, adaptive):
    """The update rule named by the community flag ``adaptive`` or by ``solver``."""
    if solver is None:
        return "asam" if adaptive else "sam"
    check_solver(solver)
    if adaptive and solver != "asam":
        raise ValueError(
            f"adaptive=True selects ASAM but solver={solver!r} was given; "
            "pass solver='asam' or adaptive=False."
        )
    return solver


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization around any PyTorch optimizer.

    Each :meth:`step` moves the weights ``w`` with the base optimizer, using
    the gradient taken at a perturbed point::

        e = rho * g / ||g||                   solver='sam'  (Foret et al., 2021)
        e = rho * g                           solver='usam' (unnormalized)
        e = rho * T**2 g / ||T g||            solver='asam' (Kwon et al., 2021)
        w <- base_step(w, grad L(w + e))

    where ``g = grad L(w)``, ``||.||`` is the Euclidean norm over all
    parameters of all groups, and ``T = |w| + eta`` element-wise. The
    perturbations themselves come from :mod:`sksam._update_rules`.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters or parameter groups, as for any torch optimizer. A group
        may carry its own ``rho`` (and any base-optimizer option).
    base_optimizer : type of torch.optim.Optimizer
        The class of the optimizer that takes the descent step, for example
        ``torch.optim.SGD``; it is built on the same parameter groups.
    rho : float, default=0.05
        Radius of the perturbation, ``rho >= 0``. ``rho=0`` is the base
        optimizer exactly. Stored in ``param_groups``, so schedulers and
        ``set_params(optimizer__rho=...)`` in skorch reach it.
    adaptive : bool, default=False
        The community flag for ASAM: ``True`` is ``solver='asam'``.
    solver : {'sam', 'usam', 'asam', 'gd'}, default=None
        The perturbation rule; ``None`` means ``'asam'`` if ``adaptive`` else
        ``'sam'``. ``'usam'`` is the unnormalized variant ``e = rho * g``;
        ``'gd'`` never perturbs. Stored in ``param_groups``; must be the same
        in every group.
    eta : float, default=0.01
        ASAM's offset in ``T = |w| + eta``, which keeps zero weights
        perturbable. Only the *weights* are scaled, as in Kwon et al.: the
        tensors with more than one dimension (linear and convolution
        kernels). Biases and other one-dimensional tensors (normalization
        scales) use ``T = 1``. Must be the same in every group.
    weight_decay_in_ascent : bool, default=False
        Whether the ascent direction includes the base optimizer's L2 term,
        ``g + weight_decay * w`` (as in Foret et al., whose loss contains
        it). ``False`` (the community ports' choice) perturbs along the
        data-loss gradient only. The descent step applies weight decay as the
        base optimizer always does.
    model : torch.nn.Module, default=None
        The module being trained. When given, the running statistics of its
        normalization layers in training mode are saved before the second
        closure call and restored after it, so they are updated once per
        step, at the unperturbed weights. Without it they are updated twice.
    replay_rng : {'auto', True, False}, default='auto'
        Whether the second closure call replays the random numbers of the
        first, so that dropout masks are the same in both passes. ``'auto'``
        replays unless ``model`` is given and can draw no random number:
        every one of its modules is a layer known to be deterministic
        (``Linear``, convolutions, normalization layers, the usual
        activations and poolings, containers; not dropout, ``RReLU`` or
        attention) or a class that declares ``draws_random_numbers = False``
        (as :class:`sksam.net.MLP` does). A module of any other class might
        call ``torch.rand`` or ``F.dropout`` in its ``forward``, so it is
        replayed for. ``True`` always replays, ``False`` never does.
    **base_kwargs
        Passed to ``base_optimizer`` (``lr``, ``momentum``, ...).

    Attributes
    ----------
    base_optimizer : torch.optim.Optimizer
        The base optimizer. ``param_groups`` and ``state`` are its own
        objects, so learning-rate schedulers attached to either optimizer
        act on both.

    Notes
    -----
    **The closure** must clear the gradients, evaluate the loss, call
    ``backward()`` and return the loss, as for ``torch.optim.LBFGS``. It is
    called twice per step (once when ``rho=0``). Without a closure,
    :meth:`step` works only when no perturbation is needed (``rho=0``); the
    two-call protocol of the community version is :meth:`first_step` and
    :meth:`second_step`.

    **Random numbers.** The second call replays the generator state of the
    first (CPU, and the CUDA devices holding parameters), so dropout masks
    match; afterwards the generators are where the first call left them.
    This costs two state copies per step (2-7 us on a CPU, about 2% of a
    small MLP's step), which ``replay_rng='auto'`` saves when ``model``
    cannot draw random numbers. The modules of ``model`` (normalization
    layers, randomness) are looked up at its first step, and again when
    ``model`` is replaced.

    **Grad mode.** The closure always runs with gradients on (as for
    ``LBFGS``), also when :meth:`step` is called under ``torch.no_grad()``;
    the ascent and the weight copies are taken without autograd.

    **Gradient accumulation** lives in the closure: clear the gradients
    once, run ``backward()`` on each micro-batch's share of the loss, return
    the total. Both passes then see the gradient of the whole batch, so the
    step is the full-batch SAM step (community SAM code cannot do this, as it
    wipes the gradients between its two steps)::

        def closure():
            opt.zero_grad()
            total = 0.0
            for xb, yb in zip(x.chunk(4), y.chunk(4)):
                loss = loss_fn(model(xb), yb) / 4
                loss.backward()
                total += loss.detach()
            return total

    **Mixed precision.** bfloat16 autocast needs no loss scaling: put
    ``with torch.autocast(device_type, dtype=torch.bfloat16):`` around the
    forward pass inside the closure.

    **Not supported:** ``torch.amp.GradScaler`` for float16 (it cannot
    unscale twice per step and does not take closures; use bfloat16) and
    parameters spread over several devices (the gradient norm is taken on
    one device).

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, model=model)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)  # the loss at the unperturbed weights
    """

    def __init__(
        self,
        params,
        base_optimizer,
        rho=0.05,
        adaptive=False,
        *,
        solver=None,
        eta=ASAM_ETA,
        weight_decay_in_ascent=False,
        model=None,
        replay_rng="auto",
        **base_kwargs,
    ):
        if replay_rng not in ("auto", True, False):
            raise ValueError(f"replay_rng must be 'auto', True or False, got {replay_rng!r}.")
        if not rho >= 0:
            raise ValueError(f"rho must be non-negative, got rho={rho!r}.")
        if not eta >= 0:
            raise ValueError(f"eta must be non-negative, got eta={eta!r}.")
        defaults = dict(
            rho=rho,
            solver=_resolve_solver(solver, adaptive),
            eta=eta,
            weight_decay_in_ascent=weight_decay_in_ascent,
            **base_kwargs,
        )
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self._link_base()
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        self.replay_rng = replay_rng
        self._saved = None
        self._model_scan = None  # (model, normalization layers, draws random numbers)

    def _link_base(self):
        # One set of groups and one state for both optimizers: schedulers,
        # skorch's optimizer__* setters and state_dict all see the same thing.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    # -- the two halves of a step ------------------------------------------

    def perturbs(self):
        """Whether :meth:`step` evaluates the closure twice.

        Returns
        -------
        perturbs : bool
            ``False`` when every group has ``rho == 0`` or the solver is
            ``'gd'``: :meth:`step` is then the base optimizer, one closure
            call. (A step whose first pass leaves no gradient at all takes
            no second pass either.)
        """
        return self._perturbs(self._options()[0])

    def _perturbs(self, solver):
        groups = self.param_groups
        if len(groups) == 1:
            return is_perturbed(solver, groups[0]["rho"])
        return any(is_perturbed(solver, group["rho"]) for group in groups)

    def zero_grad(self, set_to_none=True):
        """Clear the gradients of all parameters.

        The same as ``torch.optim.Optimizer.zero_grad``, without its profiler
        range: the closure calls it twice per step, and on small models
        the range costs as much as clearing the gradients.

        Parameters
        ----------
        set_to_none : bool, default=True
            Set the gradients to ``None`` (``False``: fill them with zeros).
        """
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _options(self):
        """The solver and eta shared by every group (one global norm)."""
        groups = self.param_groups
        if len(groups) == 1:  # the usual case, without building sets
            check_solver(groups[0]["solver"])
            return groups[0]["solver"], groups[0]["eta"]
        solvers = {group["solver"] for group in groups}
        etas = {group["eta"] for group in groups}
        if len(solvers) > 1 or len(etas) > 1:
            raise ValueError(
                "All parameter groups must use the same solver and eta, got "
                f"solvers {sorted(solvers)} and etas {sorted(etas)}."
            )
        (solver,), (eta,) = solvers, etas
        check_solver(solver)
        return solver, eta

    def _ascent_inputs(self, solver):
        """Parameters, ascent gradients, ASAM flags and rho of each parameter.

        The flags are ``None`` (unused) unless ``solver`` is ``'asam'``.
        """
        params, grads, rhos = [], [], []
        for group in self.param_groups:
            group_params = group["params"]
            group_grads = [p.grad for p in group_params]
            decay = group.get("weight_decay", 0) if group["weight_decay_in_ascent"] else 0
            if decay:  # grad of L + decay/2 ||w||^2
                group_grads = [
                    g if g is None else g.add(p, alpha=decay)
                    for p, g in zip(group_params, group_grads)
                ]
            params += group_params
            grads += group_grads
            rhos += [group["rho"]] * len(group_params)
        # ASAM scales the weights only (Kwon et al.): tensors of 2 or more dimensions
        adaptive = [p.ndim > 1 for p in params] if solver == "asam" else None
        return params, grads, adaptive, rhos

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        """Move the weights to ``w + e`` using the gradients they hold now.

        Parameters
        ----------
        zero_grad : bool, default=False
            Clear the gradients afterwards.

        Returns
        -------
        perturbed : bool
            Whether any parameter was moved (``False`` for ``rho=0``,
            ``solver='gd'`` or when no parameter has a gradient).
        """
        perturbed = self._perturb(*self._options())
        if zero_grad:
            self.zero_grad()
        return perturbed

    def _perturb(self, solver, eta):
        """:meth:`first_step` without the grad-mode switch (callers hold no_grad)."""
        params, grads, adaptive, rhos = self._ascent_inputs(solver)
        if len(set(rhos)) <= 1:
            rho = rhos[0] if rhos else 0.0
            e = perturbation(solver, rho, params, grads, adaptive=adaptive, eta=eta)
        else:
            # Groups with their own rho share the global direction: the rules
            # are linear in rho, so take them at rho=1 and scale per group.
            e = perturbation(solver, 1.0, params, grads, adaptive=adaptive, eta=eta)
            if e is not None:
                e = [None if d is None or r == 0 else d * r for d, r in zip(e, rhos)]
        saved = None if e is None else add_perturbation_(params, e)
        self._saved = (params, saved) if saved is not None else None
        return saved is not None and any(s is not None for s in saved)

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        """Restore the weights saved by :meth:`first_step`, then take the base step.

        Parameters
        ----------
        zero_grad : bool, default=False
            Clear the gradients afterwards.
        """
        self._restore_and_step()
        if zero_grad:
            self.zero_grad()

    def _restore(self):
        if self._saved is not None:
            restore_(*self._saved)
            self._saved = None

    def _restore_and_step(self):
        self._restore()  # restore_ holds no_grad; the base step sets its own mode
        self.base_optimizer.step()

    # -- the closure protocol -----------------------------------------------

    def step(self, closure=None):
        """One SAM step: closure at ``w``, closure at ``w + e``, base step at ``w``.

        Parameters
        ----------
        closure : callable, default=None
            Clears the gradients, computes the loss, calls ``backward()`` and
            returns the loss. Required unless no perturbation is taken
            (``rho=0`` in every group, or ``solver='gd'``).

        Returns
        -------
        loss : torch.Tensor or None
            What the first closure call returned: the loss at the
            unperturbed weights.
        """
        solver, eta = self._options()
        if not self._perturbs(solver):
            # Exactly the base optimizer: one closure call, no copies.
            loss = None if closure is None else _call(closure)
            self.base_optimizer.step()
            return loss
        if closure is None:
            raise ValueError(
                "SAM.step() needs a closure that clears the gradients, computes "
                "the loss, calls backward() and returns the loss: it evaluates "
                "the gradient twice (or use first_step() and second_step())."
            )
        if self._replays_rng():
            devices = _cuda_devices(self.param_groups)
            before = _get_rng(devices)
        else:
            devices = before = None
        loss = _call(closure)
        # Only the ascent needs no_grad (weight decay adds w to g); the copies,
        # the restore and the base step hold their own, and the closures run
        # with gradients on without a mode switch per call.
        with torch.no_grad():
            perturbed = self._perturb(solver, eta)
        if perturbed:
            self._second_pass(closure, before, devices)
        self._restore_and_step()
        return loss

    def _second_pass(self, closure, rng_before, devices):
        """The closure at ``w + e``, replaying the first pass's random numbers.

        Running statistics are put back afterwards (updated once, at ``w``),
        and the generators are left where the first pass left them. No
        replay when ``rng_before`` is ``None``.
        """
        stats = _running_stats(self._scan_model()[0])
        saved_stats = [b.clone() for b in stats]
        if rng_before is not None:
            rng_after = _get_rng(devices)
            _set_rng(rng_before, devices)  # same dropout masks in both passes
        try:
            _call(closure)
        except BaseException:  # e.g. KeyboardInterrupt, which skorch survives
            self._restore()
            raise
        finally:
            if stats:
                with torch.no_grad():
                    torch._foreach_copy_(stats, saved_stats)
            if rng_before is not None:
                _set_rng(rng_after, devices)

    def _scan_model(self):
        """``model``'s normalization layers, and whether it may draw random numbers.

        Looked up at the first step of each ``model`` (a scan of every
        submodule per step costs more than the buffers it finds on small
        models), not again when layers are added to it.
        """
        model = self.model
        if model is None:
            return [], True
        cached = getattr(self, "_model_scan", None)
        if cached is None or cached[0] is not model:
            modules = list(model.modules())
            norms = [m for m in modules if isinstance(m, _NormBase)]
            cached = (model, norms, any(_may_draw_random_numbers(m) for m in modules))
            self._model_scan = cached
        return cached[1], cached[2]

    def _replays_rng(self):
        mode = getattr(self, "replay_rng", "auto")  # pickles from before the option
        return self._scan_model()[1] if mode == "auto" else mode

    # -- persistence --------------------------------------------------------

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict` and re-link the base optimizer.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict` (the base optimizer's state
            and the groups, including ``rho`` and ``solver``).
        """
        super().load_state_dict(state_dict)
        # torch replaced self.param_groups and self.state: hand them back to
        # the base optimizer, or its steps would ignore the loaded state.
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state

    def __getstate__(self):
        # torch pickles only defaults, state and param_groups; the base
        # optimizer and the model must travel too (pickle keeps the links).
        state = super().__getstate__()
        state.update(
            base_optimizer=self.base_optimizer,
            model=self.model,
            replay_rng=getattr(self, "replay_rng", "auto"),
            _saved=None,
            _model_scan=None,
        )
        return state

    def __repr__(self):
        return f"SAM({self.base_optimizer!r})"


def _call(closure):
    """``closure()`` with gradients on, as for ``torch.optim.LBFGS``."""
    if torch.is_grad_enabled():
        return closure()
    with torch.enable_grad():
        return closure()


def _cuda_devices(param_groups):
    if not torch.cuda.is_initialized():  # then no parameter is on a GPU
        return []
    return sorted({p.device.index or 0 for g in param_groups for p in g["params"] if p.is_cuda})


def _get_rng(devices):
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng(states, devices):
    cpu, cuda = states
    torch.set_rng_state(cpu)
    for device, state in zip(devices, cuda):
        torch.cuda.set_rng_state(state, device)


#: Layers whose ``forward`` draws no random number, in training mode too
#: (exact types: a subclass may override ``forward``). Not here: dropout,
#: ``RReLU``, ``FractionalMaxPool``, attention and transformer layers
#: (dropout inside), and any class torch may add later.
_DETERMINISTIC_MODULES = frozenset(
    getattr(torch.nn, name)
    for name in (
        "Sequential ModuleList ModuleDict Identity Flatten Unflatten Linear Bilinear "
        "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d "
        "Embedding EmbeddingBag BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm "
        "LayerNorm GroupNorm RMSNorm InstanceNorm1d InstanceNorm2d InstanceNorm3d "
        "LocalResponseNorm ReLU ReLU6 LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish "
        "Tanh Sigmoid Hardtanh Hardsigmoid Hardswish Softplus Softsign Softmax "
        "LogSoftmax Softmin Tanhshrink Threshold LogSigmoid GLU "
        "MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d "
        "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d "
        "AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d"
    ).split()
    if hasattr(torch.nn, name)
)


def _may_draw_random_numbers(module):
    """Whether ``module``'s own ``forward`` might draw random numbers."""
    cls = type(module)
    return not (cls in _DETERMINISTIC_MODULES or vars(cls).get("draws_random_numbers") is False)


def _running_stats(layers):
    """Running-statistics buffers of the normalization ``layers`` in training mode."""
    return [
        b
        for m in layers
        if m.training and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
