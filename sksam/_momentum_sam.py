"""Momentum-SAM: SAM's perturbation for the price of SGD (Becker et al., 2024).

Built on the pieces every SAM optimizer shares (:mod:`sksam._update_rules`):
the radius check of the groups, the normalized step ``rho * d / ||d||`` (here
along ``-v``) and the exact save and restore of the weights.
"""

from contextlib import contextmanager

import torch

from ._update_rules import (
    CheckedRadii,
    add_perturbation_,
    check_rho,
    normalized_step,
    restore_,
)


class MomentumSAM(CheckedRadii, torch.optim.Optimizer):
    """SGD with momentum whose gradient is taken at ``w - rho * v / ||v||``.

    Momentum-SAM (Becker et al., 2024) perturbs the weights along the
    negative momentum buffer ``v`` instead of the gradient, so each step
    costs one gradient, as SGD does::

        g  = grad L(w - rho * v / ||v||)          # the only pass
        v <- momentum * v + g + weight_decay * w
        w <- w - lr * v

    where ``||.||`` is the norm over all parameters of all groups. The
    first step (``v = 0``) takes the gradient at ``w``.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters or parameter groups; a group may carry its own ``lr``,
        ``momentum``, ``rho`` or ``weight_decay``.
    lr : float, default=0.1
        Learning rate, ``> 0``.
    momentum : float, default=0.9
        Momentum coefficient, in ``[0, 1)``.
    rho : float, default=0.3
        Radius of the perturbation, finite and ``>= 0``; ``rho=0`` is
        ``torch.optim.SGD`` with the same momentum, bit for bit. The
        direction of ``v`` moves less than the gradient's from batch to
        batch, and the paper's radii are larger than SAM's.
    weight_decay : float, default=0.0
        L2 coefficient, added to the gradient at the unperturbed ``w`` (as
        ``torch.optim.SGD`` does).
    model : torch.nn.Module, default=None
        Only for calls without a closure (below): when given, the
        unperturbed weights are put back before every forward pass in
        evaluation mode and before ``model.state_dict()``, and the
        perturbation again before the next forward pass in training mode.

    Notes
    -----
    **With a closure** (``opt.step(closure)``, as skorch and sksam's
    estimators call it) the weights are perturbed, the closure is called
    once, and the weights are restored exactly (copied back) before the
    momentum step: between steps they are always the unperturbed ``w``,
    so evaluation, ``predict`` and ``state_dict`` see ``w``.

    **Without a closure** (``loss.backward(); opt.step()``, the paper's
    drop-in form) the gradient must have been taken at the perturbed point,
    so the weights are left at ``w - rho * v / ||v||`` after each step for
    the caller's next forward pass. Then use :meth:`unperturbed` (or
    :meth:`restore`) before evaluating or saving, or pass ``model`` to have
    it done for you.

    **Checkpoints**: save ``model.state_dict()`` (the unperturbed ``w``;
    inside :meth:`unperturbed` without ``model``) and :meth:`state_dict`;
    to resume, load the model's weights, then :meth:`load_state_dict`. In the
    drop-in form the state says that the next forward pass wants the
    perturbed weights: they are perturbed again before it (at once without
    ``model``, so load the weights first), and the resumed run is the
    uninterrupted one.

    References
    ----------
    Becker, Altrock, Risse (2024). Momentum-SAM: Sharpness Aware
    Minimization without Computational Overhead. arXiv:2401.12033.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import MomentumSAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = MomentumSAM(model.parameters(), lr=0.1, rho=0.3)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)  # one gradient, weights back at w
    """

    def __init__(self, params, lr=0.1, momentum=0.9, rho=0.3, weight_decay=0.0, *, model=None):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got lr={lr!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got momentum={momentum!r}.")
        if not weight_decay >= 0:
            raise ValueError(
                f"weight_decay must be non-negative, got weight_decay={weight_decay!r}."
            )
        check_rho(rho)
        defaults = dict(lr=lr, momentum=momentum, rho=rho, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.model = model
        self._saved = None  # (params, copies, versions) while the weights are perturbed
        self._drop_in = False  # the caller's next forward pass wants w - rho v/|v|
        if model is not None:
            model.register_forward_pre_hook(self._before_forward)
            model.register_state_dict_pre_hook(self._before_state_dict)

    # -- the step --------------------------------------------------------------

    def step(self, closure=None):
        """One Momentum-SAM step.

        Parameters
        ----------
        closure : callable, default=None
            Computes the loss, calls ``backward()`` and returns the loss; it
            is called once, at the perturbed weights, which are then
            restored. Without it, ``.grad`` must hold the gradient taken at
            the weights as they are (perturbed by the previous step).

        Returns
        -------
        loss : torch.Tensor or None
            What the closure returned (at the perturbed weights).
        """
        for index, group in enumerate(self.param_groups):  # edits reach no setter
            check_rho(group["rho"], index)
        self.restore()
        if closure is None:  # the drop-in form: the next forward pass wants w - rho v/|v|
            self._update()
            self._drop_in = True
            self._apply()
            return None
        self._drop_in = False
        self._apply()
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            self.restore()
        self._update()
        return loss

    @torch.no_grad()
    def _update(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            for p, g, buf in zip(params, grads, bufs):
                if buf is None:  # as torch.optim.SGD: v_1 = g
                    self.state[p]["momentum_buffer"] = torch.clone(g).detach()
            new = [b for b in bufs if b is not None]
            if new:
                old_grads = [g for g, b in zip(grads, bufs) if b is not None]
                torch._foreach_mul_(new, group["momentum"])
                torch._foreach_add_(new, old_grads)
            v = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_add_(params, v, alpha=-group["lr"])

    @torch.no_grad()
    def _perturbation(self):
        """``-rho * v / ||v||`` per parameter (``None`` where there is no buffer).

        The norm is over the buffers of the groups that perturb (``rho != 0``);
        every group's ``rho`` was checked by :meth:`step`.
        """
        params, bufs, radii = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                params.append(p)
                bufs.append(self.state[p].get("momentum_buffer") if p in self.state else None)
                radii.append(-group["rho"])  # against the momentum: w - rho v/|v|
        norm_of = [b for b, r in zip(bufs, radii) if b is not None and r != 0]
        if not norm_of:
            return params, None
        return params, normalized_step(bufs, radii, norm_of)

    def _apply(self):
        """Move the weights to ``w - rho * v / ||v||`` (no-op if already there)."""
        if self._saved is not None:
            return
        params, e = self._perturbation()
        if e is not None:
            copies = add_perturbation_(params, e)
            self._saved = (params, copies, [p._version for p in params])

    # -- the unperturbed weights --------------------------------------------

    def restore(self):
        """Put back the unperturbed weights ``w`` (exact copies), if perturbed.

        Returns
        -------
        restored : bool
            Whether the weights were perturbed.
        """
        if self._saved is None:
            return False
        restore_(*self._saved[:2])
        self._saved = None
        return True

    @contextmanager
    def unperturbed(self):
        """Within the block the weights are ``w``; afterwards as they were.

        Yields
        ------
        None
        """
        was = self.restore()
        try:
            yield
        finally:
            if was:
                self._apply()

    def _before_forward(self, module, args):
        if not module.training:
            self.restore()
        elif self._drop_in:
            self._apply()

    def _before_state_dict(self, module, prefix, keep_vars):
        self.restore()

    # -- persistence --------------------------------------------------------

    def state_dict(self):
        """Return torch's state (momentum buffers, groups) and the drop-in flag.

        Returns
        -------
        state_dict : dict
            ``state`` and ``param_groups`` as torch's, plus ``drop_in``: in
            the drop-in form, the next forward pass wants ``w - rho v/|v|``.
        """
        state = super().state_dict()
        state["drop_in"] = self._drop_in
        return state

    def load_state_dict(self, state_dict):
        """Load a state saved by :meth:`state_dict`, perturbing again where it says so.

        Perturbed weights are put back to ``w`` first, unless the caller
        wrote them since (loading the model's checkpoint: they are ``w``). A
        group that lacks a key (an SGD state, say) takes this optimizer's
        default, as torch's ``add_param_group`` does. In the drop-in form
        the weights are perturbed again: before the next forward pass in
        training mode with ``model``, at once without it (load the model's
        weights first).

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        for index, group in enumerate(state_dict["param_groups"]):
            check_rho(group.get("rho", self.defaults["rho"]), index)
        if self._saved is not None and not self._weights_untouched():
            self._saved = None  # the caller loaded the weights w already: keep them
        self.restore()
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, default in self.defaults.items():
                group.setdefault(key, default)
        self._drop_in = bool(state_dict.get("drop_in", False))
        if self._drop_in and self.model is None:
            self._apply()

    def _weights_untouched(self):
        """Whether no weight was written since the perturbation was added."""
        params, _, versions = self._saved
        return all(p._version == v for p, v in zip(params, versions))

    def __getstate__(self):
        state = super().__getstate__()
        state.update(model=self.model, _saved=self._saved, _drop_in=self._drop_in)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        saved = self.__dict__.get("_saved")
        if saved is not None:  # new tensors, new version counters
            params, copies = saved[:2]
            self._saved = (params, copies, [p._version for p in params])

    def __repr__(self):
        return f"MomentumSAM(rho={self.defaults['rho']}, lr={self.defaults['lr']})"
