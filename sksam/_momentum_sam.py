"""Momentum-SAM: SAM's perturbation for the price of SGD (Becker et al., 2024)."""

from contextlib import contextmanager

import torch

from ._update_rules import GRAD_NORM_FLOOR, add_perturbation_, restore_


class MomentumSAM(torch.optim.Optimizer):
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
        from .optim import _check_rho

        if not lr > 0:
            raise ValueError(f"lr must be positive, got lr={lr!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got momentum={momentum!r}.")
        if not weight_decay >= 0:
            raise ValueError(
                f"weight_decay must be non-negative, got weight_decay={weight_decay!r}."
            )
        _check_rho(rho)
        defaults = dict(lr=lr, momentum=momentum, rho=rho, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.model = model
        self._saved = None  # (params, copies) while the weights are perturbed
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
        loss = None
        if closure is not None:
            self.restore()
            self._drop_in = False
            self._apply()
            try:
                with torch.enable_grad():
                    loss = closure()
            finally:
                self.restore()
            self._update()
            return loss
        self.restore()
        self._update()
        self._drop_in = True
        self._apply()
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
        """``-rho * v / ||v||`` per parameter (``None`` where there is no buffer)."""
        params, bufs, rhos = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                params.append(p)
                bufs.append(self.state[p].get("momentum_buffer") if p in self.state else None)
                rhos.append(group["rho"])
        present = [b for b, r in zip(bufs, rhos) if b is not None and r != 0]
        if not present:
            return params, None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(present)))
        scale = norm.clamp_min(GRAD_NORM_FLOOR).reciprocal()
        e = [None if b is None or r == 0 else b * (scale * -r) for b, r in zip(bufs, rhos)]
        return params, e

    def _apply(self):
        """Move the weights to ``w - rho * v / ||v||`` (no-op if already there)."""
        if self._saved is not None:
            return
        params, e = self._perturbation()
        if e is not None:
            self._saved = (params, add_perturbation_(params, e))

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
        restore_(*self._saved)
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

    def __getstate__(self):
        state = super().__getstate__()
        state.update(model=self.model, _saved=self._saved, _drop_in=self._drop_in)
        return state

    def __repr__(self):
        return f"MomentumSAM(rho={self.defaults['rho']}, lr={self.defaults['lr']})"
