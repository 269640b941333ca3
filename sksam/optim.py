"""SAM, a PyTorch optimizer that gets the hard parts right, and the collaborators of its pass.

:class:`SAM` wraps any ``torch.optim.Optimizer`` (the *base* optimizer) and
takes the two-pass step of Sharpness-Aware Minimization (Foret et al., 2021)::

    g  = grad L(w)                      # first closure call
    e  = perturbation(g, w)             # sksam._update_rules, one home for all
    g' = grad L(w + e)                  # second closure call
    w <- base_step(w, g')               # the base optimizer, at the original w

It has the constructor of the widely used community version
(``SAM(params, base_optimizer, rho=0.05, adaptive=False, **kwargs)``), so it
can be swapped in. What it does beyond that (the closure called first, exact
restores, BatchNorm statistics updated once, dropout replay, ``DistributedDataParallel``,
float16 loss scaling, m-sharpness) is described in the user guide,
:ref:`sam-step`.

Every step goes through one pass, :meth:`SAM._pass`; a SAM variant is a rule
plugged into it, not a copy of it, so that everything above holds for it.
Which steps are SAM steps is a :class:`~sksam._update_rules.Schedule`
(``SAM(schedule=...)``), driven by :class:`~sksam._update_rules.ScheduledStep`,
the driver of the two-layer estimators' step too; what a SAM step does is a
:class:`~sksam._update_rules.SAMRule` (``SAM(rule=...)``), whose three hooks
(radius, perturbation, descent gradient) are documented there.

What varies around the pass is held by small collaborators, built once per
step with their state passed in, as ``torch.optim``'s functional optimizers
take ``grad_scale`` and ``found_inf`` as arguments: :class:`Replay` (the
first pass's random numbers and running statistics), :class:`Scaling`
(float16 loss scaling), :class:`GradientLedger` (the gradients the caller
computed before the step) and :class:`AscentSync` (what the ranks of
``DistributedDataParallel`` must agree on).

References
----------
Foret, Kleiner, Mobahi, Neyshabur (2021). Sharpness-Aware Minimization for
Efficiently Improving Generalization. ICLR.

Kwon, Kim, Park, Choi (2021). ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks. ICML.

Andriushchenko, Flammarion (2022). Towards Understanding Sharpness-Aware
Minimization. ICML.
"""

import contextlib
import copy
import sys
import warnings
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch.nn.modules.batchnorm import _NormBase

from ._family import (
    GSAM,
    WSAM,
    BayesianSAM,
    FriendlySAM,
    ProportionalRho,
    RhoSchedule,
    WarmupRho,
    normalization_parameters,
)
from ._momentum_sam import MomentumSAM
from ._update_rules import (
    AESAM,
    ASAM_ETA,
    RST,
    CheckedRadii,
    EveryK,
    LookSAM,
    SAMRule,
    Schedule,
    ScheduledStep,
    add_perturbation_,
    check_rho,
    check_solver,
    is_perturbed,
    restore_,
)

__all__ = [
    "SAM",
    "MomentumSAM",
    "EveryK",
    "LookSAM",
    "RST",
    "AESAM",
    "GSAM",
    "WSAM",
    "FriendlySAM",
    "BayesianSAM",
    "ProportionalRho",
    "WarmupRho",
]

#: The values of ``SAM(ascent=...)``.
ASCENTS = ("global", "local")

#: The rule of plain SAM (USAM, ASAM by ``solver``): no hook overridden.
PLAIN_RULE = SAMRule()


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


class SAM(CheckedRadii, torch.optim.Optimizer):
    """Sharpness-Aware Minimization around any PyTorch optimizer.

    Each :meth:`step` moves the weights ``w`` with the base optimizer, using
    the gradient taken at a perturbed point::

        e = rho * g / ||g||                   solver='sam'  (Foret et al., 2021)
        e = rho * g                           solver='usam' (unnormalized)
        e = rho * T**2 g / ||T g||            solver='asam' (Kwon et al., 2021)
        w <- base_step(w, grad L(w + e))

    where ``g = grad L(w)``, ``||.||`` is the Euclidean norm over all
    parameters of all groups, and ``T = |w| + eta`` element-wise. Every
    sksam estimator computes these perturbations with the same code.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters or parameter groups, as for any torch optimizer. A group
        may carry its own ``rho`` (and any base-optimizer option).
    base_optimizer : type of torch.optim.Optimizer
        The class of the optimizer that takes the descent step, for example
        ``torch.optim.SGD``; it is built on the same parameter groups.
    rho : float, default=0.05
        Radius of the perturbation, finite and ``>= 0`` (checked here and in
        every group given or added). ``rho=0`` is the base
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
        (as :class:`sksam.modules.MLP` does). A module of any other class might
        call ``torch.rand`` or ``F.dropout`` in its ``forward``, so it is
        replayed for. ``True`` always replays, ``False`` never does.
    ascent : {'global', 'local'}, default='global'
        Where the perturbation is computed when ``model`` is a
        ``torch.nn.parallel.DistributedDataParallel`` module. ``'global'``:
        from the gradient of the whole (all-reduced) batch, the SAM step of
        the global batch, the same for any number of workers (the default,
        so that ``rho`` keeps its meaning when workers are added). ``'local'``:
        every worker perturbs along its own batch's gradient (the first pass
        runs under ``model.no_sync()``, forward and backward), and only the
        descent gradient is all-reduced: the m-sharpness of Foret et al.
        with ``m`` the per-worker batch, one all-reduce per step instead of
        two. The same in one process. See also :meth:`step_chunks`.
    schedule : EveryK, LookSAM, RST or AESAM, default=None
        Which steps pay for the second gradient (see "Cheaper steps"
        below). ``None``: every step is a SAM step. The object is copied:
        its counters and statistics belong to this optimizer (and travel
        with :meth:`state_dict` and pickling).
    rule : GSAM, WSAM, FriendlySAM or sksam._update_rules.SAMRule, default=None
        The hooks of a SAM variant (radius of the step, perturbation,
        descent gradient; see :class:`sksam._update_rules.SAMRule`):
        :class:`GSAM` and :class:`WSAM` change the descent gradient,
        :class:`FriendlySAM` the ascent direction (:doc:`/which_sam`).
        ``None``: SAM, USAM or ASAM as ``solver`` says. Copied, like
        ``schedule``; its own state travels with :meth:`state_dict`.
    perturb : 'all', 'normalization' or iterable of torch.Tensor, default='all'
        Which parameters the ascent moves; the norm of the ascent is
        taken over them only and the others stay at ``w`` in the second
        pass. ``'normalization'`` is SAM-ON (Mueller et al., 2023): the
        weights and biases of ``model``'s normalization layers (needs
        ``model``). An iterable names the parameters itself. Composes with
        every ``solver`` and ``rule``.
    rho_schedule : ProportionalRho, WarmupRho or RhoSchedule, default=None
        The radius of each step from the group's radius (the rule's
        ``radius``, ``rho`` by default) and learning rate, clipped to
        ``[0, rho]``: never negative, and a step whose radius is 0 is the
        base optimizer's step. ``None``: ``rho`` at every step. Copied, as
        ``schedule``; :attr:`last_rho` holds the radius of each group at the last step.
    **base_kwargs
        Passed to ``base_optimizer`` (``lr``, ``momentum``, ...).

    Attributes
    ----------
    base_optimizer : torch.optim.Optimizer
        The base optimizer. ``param_groups`` and ``state`` are its own
        objects, so learning-rate schedulers attached to either optimizer
        act on both.
    last_losses : tuple of (torch.Tensor or None, torch.Tensor or None)
        The losses of the last :meth:`step`: at ``w`` (what it returned) and
        at the perturbed point ``w + e`` (``None`` when the step took no
        second pass), detached, without waiting for the device. A loss
        finite at ``w`` and far larger, or not finite, at ``w + e`` says
        that the radius, not the learning rate, threw the step away.
    last_rho : list of float or None
        The radius of each group at the last step (after ``rho_schedule``);
        ``None`` before the first.

    Notes
    -----
    The closure evaluates the loss, calls ``backward()`` and returns the
    loss, as for ``torch.optim.LBFGS``; :meth:`step` calls it twice (once
    when no perturbation is taken) and clears the gradients before each
    call. The two-call protocol of the community version is
    :meth:`first_step` and :meth:`second_step`. Gradient accumulation,
    mixed precision, clipping, several workers, the cheaper ``schedule``
    steps and what is not supported: see the user guide,
    :ref:`sam-step`.

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
        ascent="global",
        schedule=None,
        rule=None,
        perturb="all",
        rho_schedule=None,
        **base_kwargs,
    ):
        if replay_rng not in ("auto", True, False):
            raise ValueError(f"replay_rng must be 'auto', True or False, got {replay_rng!r}.")
        if ascent not in ASCENTS:
            raise ValueError(f"ascent must be 'global' or 'local', got {ascent!r}.")
        check_rho(rho)
        if not eta >= 0:
            raise ValueError(f"eta must be non-negative, got eta={eta!r}.")
        defaults = dict(
            rho=rho,
            solver=_resolve_solver(solver, adaptive),
            eta=eta,
            weight_decay_in_ascent=weight_decay_in_ascent,
            **base_kwargs,
        )
        if isinstance(base_optimizer, torch.optim.Optimizer) or not callable(base_optimizer):
            raise TypeError(
                "base_optimizer must be an optimizer class such as torch.optim.SGD "
                "(SAM builds it on the same parameters, with the keyword arguments "
                f"it is given, e.g. SAM(params, torch.optim.SGD, lr=0.1)); got {base_optimizer!r}."
            )
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        # One set of groups and one state for both optimizers: schedulers,
        # skorch's optimizer__* setters and state_dict all see the same thing.
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        self.replay_rng = replay_rng
        self.ascent = ascent
        self._saved = None
        self._model_scan = None  # (model, normalization layers, draws random numbers)
        self._ledger = GradientLedger()  # the gradients the last step left behind
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(
                "schedule must be None or one of sksam.optim's schedules "
                f"(EveryK, LookSAM, RST, AESAM), got {schedule!r}."
            )
        if rule is not None and not isinstance(rule, SAMRule):
            raise TypeError(f"rule must be None or a sksam._update_rules.SAMRule, got {rule!r}.")
        # Copies: the counters and statistics belong to this optimizer.
        self.schedule = copy.deepcopy(schedule)
        self.rule = copy.deepcopy(rule)
        self.last_losses = (None, None)
        if rho_schedule is not None and not isinstance(rho_schedule, RhoSchedule):
            raise TypeError(
                "rho_schedule must be None or one of sksam.optim's radius schedules "
                f"(ProportionalRho, WarmupRho), got {rho_schedule!r}."
            )
        self.rho_schedule = copy.deepcopy(rho_schedule)
        self.perturb = perturb if isinstance(perturb, str) else "subset"
        self._perturb_mask = self._resolve_perturb(perturb)
        #: The radius of each group at the last step (``rho`` without a rho_schedule).
        self.last_rho = None

    def _resolve_perturb(self, perturb):
        """Which parameters the ascent moves, one flag each in group order (``None``: all)."""
        if isinstance(perturb, str):
            if perturb == "all":
                return None
            if perturb != "normalization":
                raise ValueError(
                    "perturb must be 'all', 'normalization' or an iterable of parameters, "
                    f"got perturb={perturb!r}."
                )
            if self.model is None:
                raise ValueError(
                    "perturb='normalization' (SAM-ON) needs model=, the module whose "
                    "normalization layers are perturbed."
                )
            chosen = normalization_parameters(self.model)
            if not chosen:
                raise ValueError(
                    "perturb='normalization' (SAM-ON) found no normalization layer with "
                    f"parameters in model={type(self.model).__name__}."
                )
        else:
            chosen = list(perturb)
            if not chosen or not all(isinstance(p, torch.Tensor) for p in chosen):
                raise ValueError(
                    "perturb must be 'all', 'normalization' or a non-empty iterable of the "
                    f"parameters to perturb, got perturb={perturb!r}."
                )
        ids = {id(p) for p in chosen}
        mask = tuple(id(p) in ids for p in self._params())
        if not any(mask):
            raise ValueError(
                f"perturb={perturb!r} names no parameter of this optimizer: nothing "
                "would be perturbed."
            )
        return mask

    # -- the two halves of a step ------------------------------------------

    def perturbs(self):
        """Whether :meth:`step` evaluates the closure twice.

        Returns
        -------
        perturbs : bool
            ``False`` when every group has ``rho == 0`` or the solver is
            ``'gd'``: :meth:`step` is then the base optimizer, one closure
            call. A step whose first pass leaves no gradient at all takes
            no second pass either, and with a ``schedule`` ``True`` means
            that the schedule decides, step by step.
        """
        return self._perturbs(self._options()[0], self._radii())

    @staticmethod
    def _perturbs(solver, radii):
        return any(is_perturbed(solver, rho) for rho in radii)

    def _rule(self):
        """The :class:`SAMRule` of this optimizer (plain SAM for pickles from before it)."""
        return getattr(self, "rule", None) or PLAIN_RULE

    def _radii(self):
        """The radius of each group for this step, checked (once per group per step).

        ``param_groups[i]['rho'] = ...`` reaches no setter: a NaN or negative
        radius set that way is refused here, before any weight moves.
        """
        rule = self._rule()
        schedule = getattr(self, "rho_schedule", None)
        radii = []
        for index, group in enumerate(self.param_groups):
            rho = rule.radius(group)
            check_rho(rho, index)
            if schedule is not None:  # clipped to [0, rho]: never negative
                schedule.start(index, group)
                rho = schedule.clipped(rho, group.get("lr", 0.0), index)
            radii.append(rho)
        self.last_rho = radii
        return radii

    def _end_step(self):
        """Count the step in the radius schedule."""
        schedule = getattr(self, "rho_schedule", None)
        if schedule is not None:
            schedule.advance()

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
            _ledger(self).remember(self._params())  # zeros are not the caller's
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

    def _ascent_inputs(self, solver, radii, grads_override=None):
        """Parameters, ascent gradients, ASAM flags and radius of each parameter.

        The flags are ``None`` (unused) unless ``solver`` is ``'asam'``. The
        gradients are the parameters' ``.grad``, or ``grads_override`` (one
        per parameter, in group order) when given.
        """
        params, grads, rhos = [], [], []
        override = None if grads_override is None else iter(grads_override)
        for group, rho in zip(self.param_groups, radii):
            group_params = group["params"]
            if override is None:
                group_grads = [p.grad for p in group_params]
            else:
                group_grads = [next(override) for _ in group_params]
            decay = group.get("weight_decay", 0) if group["weight_decay_in_ascent"] else 0
            if decay:  # grad of L + decay/2 ||w||^2
                group_grads = [
                    g if g is None else g.add(p, alpha=decay)
                    for p, g in zip(group_params, group_grads)
                ]
            params += group_params
            grads += group_grads
            rhos += [rho] * len(group_params)
        mask = getattr(self, "_perturb_mask", None)
        if mask is not None:  # SAM-ON: the others have no ascent, and no share of its norm
            grads = [g if j < len(mask) and mask[j] else None for j, g in enumerate(grads)]
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
        if getattr(self, "schedule", None) is not None:
            raise ValueError(
                f"schedule={self.schedule!r} decides inside step(closure) whether "
                "to take the second pass; first_step()/second_step() always take it."
            )
        if getattr(self._rule(), "samples_weights", False):
            raise ValueError(
                f"rule={self._rule()!r} takes the first gradient at sampled weights, "
                "which only step(closure) can do; first_step()/second_step() do not support it."
            )
        solver, eta = self._options()
        self._first = None
        if self._rule().needs_first_gradient:  # the caller may zero .grad in place
            self._first = [None if p.grad is None else p.grad.clone() for p in self._params()]
        perturbed = self._perturb(solver, eta, self._radii())
        if zero_grad:
            self.zero_grad()
        return perturbed

    def _perturb(self, solver, eta, radii, grads=None):
        """:meth:`first_step` without the grad-mode switch (callers hold no_grad)."""
        params, grads, adaptive, rhos = self._ascent_inputs(solver, radii, grads)
        e = self._rule().perturbation(solver, rhos, params, grads, adaptive=adaptive, eta=eta)
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
        self._end_step()
        if zero_grad:
            self.zero_grad()

    def _restore(self):
        if self._saved is not None:
            restore_(*self._saved)
            self._saved = None

    def _restore_and_step(self):
        self._restore()  # restore_ holds no_grad; the base step sets its own mode
        self._rule().descent(self._params(), getattr(self, "_first", None))
        self._first = None
        self.base_optimizer.step()

    # -- the closure protocol -----------------------------------------------

    #: ``GradScaler.step(opt, closure)`` hands itself to :meth:`step` as
    #: ``grad_scaler=`` instead of unscaling once and stepping blindly.
    _step_supports_amp_scaling = True

    def step(self, closure=None, grad_scaler=None):
        """One SAM step: closure at ``w``, closure at ``w + e``, base step at ``w``.

        Parameters
        ----------
        closure : callable, default=None
            Computes the loss, calls ``backward()`` on it (on
            ``grad_scaler.scale(loss)`` with a scaler) and returns the loss.
            It may clear the gradients first or not: :meth:`step` clears
            them before each call. Required unless no perturbation is taken
            (``rho=0`` in every group, or ``solver='gd'``).
        grad_scaler : torch.amp.GradScaler, default=None
            The loss scaler of float16 mixed precision. Both passes are
            scaled by the closure; the ascent gradient is unscaled before
            its norm is taken, the descent gradient before the base step
            (``grad_scaler.unscale_`` and ``grad_scaler.step`` on
            :attr:`base_optimizer`), and the step is skipped when either
            pass produced an inf or NaN. Call ``grad_scaler.update()`` after
            the step, once, as usual. ``grad_scaler.step(opt, closure)``
            calls this method with ``grad_scaler`` set.

        Returns
        -------
        loss : torch.Tensor or None
            What the first closure call returned: the loss at the
            unperturbed weights.
        """
        return self._run([closure], grad_scaler, chunked=False)

    def step_chunks(self, closure, n_chunks, grad_scaler=None):
        """One m-sharpness step: each chunk of the batch gets its own perturbation.

        The batch is split by the caller into ``n_chunks`` chunks ``B_i``
        (``closure(i)`` evaluates chunk ``i``). Each chunk takes its own
        ascent and its own gradient at its perturbed point, and the base
        optimizer steps along their mean::

            e_i = perturbation(grad L_i(w))       for i = 0 .. n_chunks-1
            w <- base_step(w, mean_i grad L_i(w + e_i))

        This is the m-sharpness of Foret et al. (2021) with ``m`` the chunk
        size, and the step that ``n_chunks`` data-parallel workers take with
        ``ascent='local'`` (one chunk each). With ``n_chunks=1`` it is
        :meth:`step`. Its cost, and its behaviour under
        ``DistributedDataParallel`` and with normalization layers and dropout:
        :doc:`/distributed`.

        Parameters
        ----------
        closure : callable
            ``closure(i)`` computes the mean loss of chunk ``i``, calls
            ``backward()`` on it (on ``grad_scaler.scale(loss)`` with a
            scaler) and returns it. It is called twice per chunk, with the
            gradients cleared before each call. Use chunks of equal size:
            their gradients are averaged with equal weights, as
            data-parallel workers average theirs.
        n_chunks : int
            The number of chunks, ``>= 1``.
        grad_scaler : torch.amp.GradScaler, default=None
            As in :meth:`step`: the step is skipped when any pass of any
            chunk overflowed; call ``grad_scaler.update()`` afterwards.

        Returns
        -------
        loss : torch.Tensor or float
            The mean over the chunks of the first pass's loss, at the
            unperturbed weights.
        """
        if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be an integer >= 1, got n_chunks={n_chunks!r}.")
        return self._run([partial(closure, i) for i in range(n_chunks)], grad_scaler, chunked=True)

    # -- the one pass ---------------------------------------------------------

    def _run(self, closures, grad_scaler, chunked):
        """One step of :meth:`step` (one closure) or :meth:`step_chunks` (one per chunk)."""
        try:
            return self._run_step(closures, grad_scaler, chunked)
        finally:
            self._end_step()

    def _run_step(self, closures, grad_scaler, chunked):
        # The collaborators, the radii and the schedule's ScheduledStep are chosen
        # once; then _pass per chunk and the base step along the (mean) gradient.
        scaling = Scaling(_active(grad_scaler, self))
        if scaling.scaler is not None and not getattr(self._rule(), "supports_loss_scaling", True):
            raise ValueError(
                f"rule={self._rule()!r} does not support float16 loss scaling "
                "(grad_scaler=): train in float32 or bfloat16."
            )
        solver, eta = self._options()
        radii = self._radii()
        perturbs = self._perturbs(solver, radii)
        # The schedule rules the steps that would perturb; rho=0 is the base step.
        schedule = getattr(self, "schedule", None) if perturbs else None
        if schedule is not None:
            self._check_schedule(schedule, chunked, len(closures))
        self.last_losses = (None, None)
        with ScheduledStep(schedule, perturbs=perturbs) as step:
            if not chunked and not perturbs:
                return self._base_step(closures[0], scaling)
            if closures[0] is None:
                raise ValueError(
                    "SAM.step() needs a closure that computes the loss, calls "
                    "backward() and returns the loss: it evaluates the gradient "
                    "twice (or use first_step() and second_step())."
                )
            mode = "chunks" if chunked else ("local" if self._check_ascent() else "global")
            if mode == "local" and self._rule().needs_first_gradient and self.model is not None:
                # A rule that mixes g and g_s mixes each worker's own (both passes
                # under no_sync, one all-reduce of the mix): step_chunks, one chunk.
                chunked, mode = True, "chunks"
            sync = AscentSync(self.model, mode)
            options = (solver, eta, radii)
            with self._fresh_start(True):
                if not chunked:
                    loss, found = self._pass(closures[0], options, step, scaling, sync)
                    sync.agree(found)  # every rank skips, or none
                    scaling.descend(self.base_optimizer, self._params(), found)
                    return loss
                return self._chunked(closures, options, step, scaling, sync)

    def _base_step(self, closure, scaling):
        """Exactly the base optimizer: one closure call (if any), no copies."""
        with self._fresh_start(closure is not None):
            loss = None if closure is None else self._first_call(closure)
            scaling.descend(self.base_optimizer, self._params())
        self.last_losses = (_detached(loss), None)
        return loss

    def _chunked(self, closures, options, step, scaling, sync):
        """:meth:`_pass` per chunk, then the base step along the mean gradient."""
        params = self._params()
        total, losses, perturbed_losses, found = None, [], [], None
        with sync.whole_pass():
            for closure in closures:
                self.zero_grad()
                loss, found_i = self._pass(closure, options, step, scaling, sync)
                losses.append(loss)
                perturbed_losses.append(self.last_losses[1])
                found = _either(found, found_i)
                total = _accumulate(total, [p.grad for p in params])
        _set_mean_grads(params, total, len(closures))
        del total
        if found is not None:
            poison(params, found)  # before the all-reduce: every rank skips
        sync.all_reduce_grads(params)
        scaling.descend(self.base_optimizer, params)
        loss = _mean_loss(losses)
        taken = [value for value in perturbed_losses if value is not None]
        self.last_losses = (_detached(loss), _mean_loss(taken) if taken else None)
        return loss

    def _pass(self, closure, options, step, scaling, sync):
        """The one SAM pass: closure at ``w``, perturb, closure at ``w + e``, restore.

        ``step`` (a :class:`ScheduledStep`) decides whether this is a SAM
        step; the rule's hooks give the perturbation and the descent
        gradient. Leaves the descent gradient in ``.grad`` and the weights
        at ``w``; returns the first call's loss and the overflow flag of the
        ascent gradient (``None`` without loss scaling or on a plain step).
        """
        params = self._params()
        planned = step.planned
        replay = self._replay() if planned is not False else None
        rng = None if replay is None else replay.capture()
        with sync.first_pass() if planned is not False else nullcontext():
            with self._sampled(params, planned is not False):
                loss = self._first_call(closure)
        self.last_losses = (_detached(loss), None)
        grads, found = (None, None) if planned is False else scaling.ascent_grads(params)
        ascent = [grads]  # handed over, so that no reference outlives the ascent

        def sam_step():
            return self._second_pass(closure, options, ascent.pop(), replay, rng, sync)

        taken = step.resolve(
            [p.grad for p in params],
            sam_step,
            norm_grads=grads,
            overflow=found,
            first_survives=True,  # the second pass sets fresh .grad tensors
        )
        return loss, (found if taken else None)

    def _second_pass(self, closure, options, grads, replay, rng, sync):
        """Perturb, closure at ``w + e``, restore, the rule's descent gradient.

        Returns the descent gradients, or ``None`` when nothing was perturbed
        (then ``.grad`` still holds the first gradient).
        """
        params = self._params()
        solver, eta, radii = options
        rule = self._rule()
        first = [p.grad for p in params] if rule.needs_first_gradient else None
        # Only the ascent needs no_grad (weight decay adds w to g); the copies,
        # the restore and the base step hold their own, and the closures run
        # with gradients on without a mode switch per call.
        with torch.no_grad():
            perturbed = self._perturb(solver, eta, radii, grads)
        del grads
        if not perturbed:
            self._restore()
            return None
        self.zero_grad()
        with replay.second_pass(rng):
            try:
                perturbed_loss = _call(closure)
            except BaseException:  # e.g. KeyboardInterrupt, which skorch survives
                self._restore()
                raise
        self._restore()
        self.last_losses = (self.last_losses[0], _detached(perturbed_loss))
        if rule is not PLAIN_RULE:
            with torch.no_grad():
                rule.descent(params, first)
        return [p.grad for p in params]

    @contextmanager
    def _sampled(self, params, sam_step):
        """The first pass at weights the rule samples (bSAM), put back exactly after it."""
        rule = self._rule()
        noise = (
            rule.sample(params) if sam_step and getattr(rule, "samples_weights", False) else None
        )
        saved = None if noise is None else add_perturbation_(params, noise)
        try:
            yield
        finally:
            if saved is not None:
                restore_(params, saved)

    def _replay(self):
        """The :class:`Replay` of this step (``model``'s statistics, its randomness)."""
        replays = self._replays_rng()
        devices = _cuda_devices(self.param_groups) if replays else []
        return Replay(_running_stats(self._scan_model()[0]), replays, devices)

    def _replays_rng(self):
        """Whether the second pass replays the first pass's random numbers."""
        mode = getattr(self, "replay_rng", "auto")  # pickles from before the option
        return self._scan_model()[1] if mode == "auto" else mode

    def _check_schedule(self, schedule, chunked, n_chunks):
        """Refuse the combinations a schedule's rule does not define."""
        if chunked and n_chunks > 1 and not schedule.per_chunk_ok:
            raise ValueError(
                f"schedule={schedule!r} is defined on the gradient of the whole step "
                "and cannot be shared by m-sharpness chunks; use step() or "
                "n_chunks=1, or a schedule that switches per step (EveryK, RST)."
            )
        if not schedule.per_chunk_ok and getattr(self, "ascent", "global") == "local":
            if world_size() > 1:
                raise ValueError(
                    f"schedule={schedule!r} needs ascent='global' with several "
                    "workers: with per-worker gradients the ranks would disagree "
                    "on the step (and wait for each other forever)."
                )

    # -- helpers of the two protocols ------------------------------------------

    @contextmanager
    def _fresh_start(self, calls_closure):
        """Clear the gradients before a step that calls the closure (:ref:`sam-step`).

        After the caller's own forward pass (``loss.backward();
        opt.step(closure)``) the running statistics are kept as it set them.
        """
        if not calls_closure:
            yield
            _ledger(self).remember(self._params())
            return
        stats = saved = None
        if _ledger(self).caller_made(self._params()):
            stats = _running_stats(self._scan_model()[0])
            saved = [b.clone() for b in stats]
        self.zero_grad()
        try:
            yield
        finally:
            if stats:
                with torch.no_grad():
                    torch._foreach_copy_(stats, saved)
            _ledger(self).remember(self._params())

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def _first_call(self, closure):
        """The closure at ``w``; an error if it left no gradient at all.

        The gradients were cleared (to ``None``) before the call: if none is
        set afterwards the closure did not call ``backward()``, and the step
        would silently leave every weight where it is.
        """
        loss = _call(closure)
        if all(p.grad is None for p in self._params()) and _reaches_params(loss, self._params()):
            raise ValueError(
                "The closure given to SAM.step() computed no gradient: it must call "
                "loss.backward() (or grad_scaler.scale(loss).backward()) before "
                "returning the loss; otherwise no weight would move."
            )
        return loss

    def _check_ascent(self):
        """Whether the first pass runs under ``model.no_sync()``; checks ``model``."""
        if getattr(self, "ascent", "global") != "local":
            return False
        if hasattr(self.model, "no_sync"):
            return True
        if world_size() > 1:
            raise ValueError(
                "ascent='local' needs model= the DistributedDataParallel module "
                "(it runs the first pass under model.no_sync()); got "
                f"model={type(self.model).__name__}."
            )
        return False  # one process: the local ascent is the global one

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

    # -- persistence --------------------------------------------------------

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict` and re-link the base optimizer.

        Every group's ``rho`` is checked before anything is loaded. A group
        that lacks a key (a state saved by ``torch.optim.SGD``, say, has no
        ``rho`` or ``solver``) takes this optimizer's default for it, as
        torch's ``add_param_group`` fills a group given without some key.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict` (the base optimizer's state
            and the groups, including ``rho`` and ``solver``).
        """
        for index, group in enumerate(state_dict["param_groups"]):
            check_rho(group.get("rho", self.defaults["rho"]), index)
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, default in self.defaults.items():
                group.setdefault(key, default)
        for name, spec in self._specs():
            if name in state_dict:
                spec.load_state_dict(state_dict[name])
        # torch replaced self.param_groups and self.state: hand them back to
        # the base optimizer, or its steps would ignore the loaded state.
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state

    def state_dict(self):
        """The state of the base optimizer and the groups, and the schedule's.

        Returns
        -------
        state_dict : dict
            The ``state`` and ``param_groups`` of torch, plus ``schedule`` (its
            step counter and statistics), ``rule`` (its state) and
            ``rho_schedule`` (its step counter) when they are set.
        """
        state = super().state_dict()
        for name, spec in self._specs():
            state[name] = copy.deepcopy(spec.state_dict())
        return state

    def _specs(self):
        """``(name, object)`` of the schedule, rule and rho schedule that are set."""
        for name in ("schedule", "rule", "rho_schedule"):
            spec = getattr(self, name, None)  # pickles from before the option lack it
            if spec is not None:
                yield name, spec

    def __getstate__(self):
        # torch pickles only defaults, state and param_groups; the base
        # optimizer and the model must travel too (pickle keeps the links).
        state = super().__getstate__()
        state.update(
            base_optimizer=self.base_optimizer,
            model=self.model,
            replay_rng=getattr(self, "replay_rng", "auto"),
            ascent=getattr(self, "ascent", "global"),
            schedule=getattr(self, "schedule", None),
            rule=getattr(self, "rule", None),
            rho_schedule=getattr(self, "rho_schedule", None),
            perturb=getattr(self, "perturb", "all"),
            _perturb_mask=getattr(self, "_perturb_mask", None),
            last_rho=getattr(self, "last_rho", None),
            last_losses=(None, None),
            _saved=None,
            _model_scan=None,
            _ledger=GradientLedger(),
        )
        return state

    def __repr__(self):
        return f"SAM({self.base_optimizer!r})"


def _reaches_params(loss, params):
    """Whether ``loss`` still holds a graph that gives some parameter a gradient.

    Called when no parameter has a gradient after the closure: then either
    the closure never called ``backward()`` (the graph is intact and reaches
    the parameters) or the loss does not depend on them (nothing to do).
    """
    params = [p for p in params if p.requires_grad]
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad and params):
        return False
    try:
        with torch.enable_grad():
            grads = torch.autograd.grad(loss.sum(), params, allow_unused=True, retain_graph=True)
    except RuntimeError:  # the graph was freed by a backward pass
        return False
    return any(g is not None for g in grads)


def _call(closure):
    """``closure()`` with gradients on, as for ``torch.optim.LBFGS``."""
    if torch.is_grad_enabled():
        return closure()
    with torch.enable_grad():
        return closure()


def _active(grad_scaler, optimizer):
    """``grad_scaler`` if it scales at all, else ``None``."""
    if grad_scaler is None and hasattr(optimizer, "found_inf"):
        # A GradScaler that sets attributes instead of passing itself would
        # hand step() scaled gradients without saying so.
        raise RuntimeError(
            "GradScaler.step(optimizer, closure) did not pass grad_scaler= to "
            "SAM.step; call optimizer.step(closure, grad_scaler=scaler) instead."
        )
    if grad_scaler is None or not grad_scaler.is_enabled():
        return None
    return grad_scaler


def _detached(loss):
    """``loss`` without its graph (a number or ``None`` as it is)."""
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def _either(found, other):
    if found is None or other is None:
        return other if found is None else found
    return found | other


def _ledger(optimizer):
    """The optimizer's :class:`GradientLedger` (made for pickles from before it)."""
    ledger = getattr(optimizer, "_ledger", None)
    if ledger is None:
        ledger = optimizer._ledger = GradientLedger()
    return ledger


def _accumulate(total, grads):
    """``total + grads`` in place, one tensor per parameter (``None``: no gradient)."""
    if total is None:
        return [None if g is None else g.detach().clone() for g in grads]
    pairs = []
    for j, g in enumerate(grads):
        if g is not None:
            if total[j] is None:
                total[j] = g.detach().clone()
            else:
                pairs.append((total[j], g))
    if pairs:  # one fused call, as torch.optim does (fewer kernels on a GPU)
        torch._foreach_add_([t for t, _ in pairs], [g for _, g in pairs])
    return total


def _set_mean_grads(params, total, n):
    present = [t for t in total if t is not None]
    if present:
        torch._foreach_div_(present, n)
    for p, t in zip(params, total):
        p.grad = t


def _mean_loss(losses):
    values = [_detached(loss) for loss in losses]
    return sum(values) / len(values)


def _cuda_devices(param_groups):
    if not torch.cuda.is_initialized():  # then no parameter is on a GPU
        return []
    return sorted({p.device.index or 0 for g in param_groups for p in g["params"] if p.is_cuda})


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
) | frozenset(  # wrappers whose forward calls the wrapped module's
    (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
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


# --------------------------------------------------------------------------
# the small collaborators of the one pass
# --------------------------------------------------------------------------


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
    internal = {
        __file__,
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
