"""The rest of the SAM family: rules of the one SAM pass, and the radius of each step.

A *rule* overrides the hooks of :class:`sksam._update_rules.SAMRule`: the
ascent direction ``d`` of ``e = rho_t * d / ||d||`` (F-SAM), or the descent
gradient ``g_d`` made from ``g = grad L(w)`` and ``g_s = grad L(w + e)``
(GSAM, WSAM); closures, DDP, m-sharpness chunks, float16 loss scaling and
the restore stay the pass's own. :class:`BayesianSAM` (bSAM) also samples
the weights of the first pass.

==================  ===========================================  ===========================
rule                what it changes                              reference
==================  ===========================================  ===========================
``GSAM(alpha)``     ``g_d = g_s - alpha * g_perp``, ``g_perp``    Zhuang et al. (2022)
                    the part of ``g`` orthogonal to ``g_s``
``WSAM(gamma)``     ``g_d = g + gamma / (1 - gamma) (g_s - g)``   Yue et al. (2023)
``FriendlySAM``     ``d = g - sigma * m_t``, ``m_t = lmbda         Li et al. (2024)
(sigma, lmbda)      m_{t-1} + (1 - lmbda) g``
==================  ===========================================  ===========================

SAM-ON (Mueller et al., 2023), the perturbation of a subset of the
parameters only, is not a rule but the ``perturb`` option of
:class:`sksam.optim.SAM`, so that it composes with every rule and every
perturbation (``'sam'``, ``'asam'``, ...).

The radius ``rho_t`` of each step comes from a *rho schedule*
(:class:`ProportionalRho`, GSAM's radius that follows the learning rate,
or :class:`WarmupRho`); without one it is the group's ``rho``. A schedule's
radius never leaves ``[0, rho]``.

References
----------
Zhuang, Gong, Yuan, Cui, Adam, Dvornek, Tatikonda, Duncan, Liu (2022).
Surrogate Gap Minimization Improves Sharpness-Aware Training. ICLR.

Yue, Jiang, Ye, Gao, Liu, Zhang (2023). Sharpness-Aware Minimization
Revisited: Weighted Sharpness as a Regularization Term. KDD.

Li, Zhou, He, Cheng, Huang (2024). Friendly Sharpness-Aware Minimization.
CVPR.

Mueller, Vlaar, Rolnick, Hein (2023). Normalization Layers Are All That
Sharpness-Aware Minimization Needs. NeurIPS.
"""

import math
import numbers

import torch

from ._update_rules import (
    ASAM_ETA,
    GRAD_NORM_FLOOR,
    SAMRule,
    SeededGenerator,
    StepCounter,
    check_int,
    check_real,
    dot,
    inherit_docstrings,
    present_pairs,
)

__all__ = [
    "GSAM",
    "WSAM",
    "FriendlySAM",
    "BayesianSAM",
    "RhoSchedule",
    "ProportionalRho",
    "WarmupRho",
    "FAMILY_SOLVERS",
    "FAMILY_OPTIONS",
    "family_constraints",
    "family_for",
    "normalization_parameters",
]


@inherit_docstrings
class CombiningRule(SAMRule):
    """A rule whose descent gradient combines ``g`` (at ``w``) and ``g_s`` (at ``w + e``)."""

    needs_first_gradient = True

    def descent(self, params, first_grads):
        # (g, g_s) over the parameters that have both gradients
        self.combine_(*present_pairs(first_grads, [p.grad for p in params]))

    def combine_(self, first, second):
        """Turn ``second`` (``g_s``) into the rule's descent gradient ``g_d``.

        The formula of the class docstring on plain tensor lists, shared by
        :meth:`descent` and the two-layer estimators' hand-written step.

        Parameters
        ----------
        first : list of torch.Tensor
            ``g``, the gradient at ``w`` (not changed).
        second : list of torch.Tensor
            ``g_s``, the gradient at ``w + e``, overwritten with ``g_d``.
        """
        raise NotImplementedError  # abstract: GSAM and WSAM each define the formula


@inherit_docstrings
class GSAM(CombiningRule):
    """GSAM (Zhuang et al., 2022): descend the surrogate gap too.

    With ``g`` the gradient at ``w`` and ``g_s`` the gradient at the
    perturbed point, GSAM removes from the descent gradient a multiple of
    the part of ``g`` orthogonal to ``g_s``::

        g_perp = g - (g . g_s / ||g_s||**2) g_s
        g_d    = g_s - alpha * g_perp

    which lowers the surrogate gap ``L(w + e) - L(w)`` without changing
    the descent along ``g_s``. Dot products and norms are over all
    parameters together. ``alpha=0`` is SAM. The paper ties ``rho`` to the
    learning rate: combine with ``rho_schedule=ProportionalRho(...)``.

    Parameters
    ----------
    alpha : float, default=0.4
        Weight of the orthogonal component, in ``[0, 1]`` (the paper's range).

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, GSAM, ProportionalRho
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, rule=GSAM(0.4),
    ...           rho_schedule=ProportionalRho(rho_min=0.01))
    """

    _param_names = ("alpha",)

    def __init__(self, alpha=0.4):
        check_real("alpha", alpha, 0.0, 1.0)
        self.alpha = alpha

    @torch.no_grad()
    def combine_(self, first, second):
        g, s = first, second
        if self.alpha == 0 or not s:
            return
        coef = dot(g, s) / dot(s, s).clamp_min(GRAD_NORM_FLOOR**2)
        # g_d = g_s - alpha (g - coef g_s) = (1 + alpha coef) g_s - alpha g
        torch._foreach_mul_(s, 1.0 + self.alpha * coef)
        torch._foreach_add_(s, g, alpha=-self.alpha)


@inherit_docstrings
class WSAM(CombiningRule):
    """WSAM (Yue et al., 2023): sharpness as a weighted regularizer.

    WSAM minimizes ``L(w) + gamma / (1 - gamma) * (L(w + e) - L(w))``,
    whose gradient, with ``a = gamma / (1 - gamma)``, is::

        g_d = g + a * (g_s - g) = (1 - a) g + a g_s

    ``gamma=0`` is the base optimizer's gradient ``g``, ``gamma=0.5`` is SAM.
    This is the coupled form; the paper's default decouples the
    sharpness term from the base optimizer (the two agree for SGD
    without momentum, see :doc:`/which_sam`).

    Parameters
    ----------
    gamma : float, default=0.9
        Weight of the sharpness, in ``[0, 1)``.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, WSAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, rule=WSAM(0.9))
    """

    _param_names = ("gamma",)

    def __init__(self, gamma=0.9):
        check_real("gamma", gamma, 0.0, 1.0, closed_high=False)
        self.gamma = gamma

    @property
    def weight(self):
        """``a = gamma / (1 - gamma)``, the weight of the sharpness term."""
        return self.gamma / (1.0 - self.gamma)

    @torch.no_grad()
    def combine_(self, first, second):
        a = self.weight
        g, s = first, second
        if a == 1.0 or not s:  # gamma = 0.5 is SAM: g_d = g_s
            return
        torch._foreach_mul_(s, a)
        torch._foreach_add_(s, g, alpha=1.0 - a)


@inherit_docstrings
class FriendlySAM(SAMRule):
    """Friendly-SAM (Li et al., 2024): perturb along the gradient's noise only.

    An exponential moving average ``m_t`` of the first gradients estimates
    the full-batch gradient, and its part is removed from the ascent
    direction, as written in the paper::

        m_t = lmbda * m_{t-1} + (1 - lmbda) * g_t          (m_0 = 0)
        d_t = g_t - sigma * m_t
        e   = rho * d_t / ||d_t||

    The descent is SAM's. ``sigma=0`` is SAM. The average is over the
    gradients the ascent sees: the whole batch's (``ascent='global'``), a
    worker's (``'local'``) or a chunk's (:meth:`~sksam.optim.SAM.step_chunks`).
    A step whose gradient overflowed (float16) leaves it unchanged.

    Parameters
    ----------
    sigma : float, default=1.0
        How much of the average is removed, ``>= 0``.
    lmbda : float, default=0.9
        Forgetting rate of the average, in ``[0, 1)`` (the authors' code's
        default).

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, FriendlySAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, rule=FriendlySAM())
    """

    _param_names = ("sigma", "lmbda")

    def __init__(self, sigma=1.0, lmbda=0.9):
        check_real("sigma", sigma, 0.0, math.inf, closed_high=False)
        check_real("lmbda", lmbda, 0.0, 1.0, closed_high=False)
        self.sigma, self.lmbda = sigma, lmbda
        self.m = None

    def perturbation(self, solver, radii, params, grads, *, adaptive=None, eta=ASAM_ETA):
        directions = self.ascent(grads)
        return super().perturbation(solver, radii, params, directions, adaptive=adaptive, eta=eta)

    @torch.no_grad()
    def ascent(self, grads):
        """``d_t = g_t - sigma * m_t``, updating ``m`` (``None`` where ``g`` is ``None``).

        Parameters
        ----------
        grads : list of torch.Tensor or None
            The first gradients ``g_t`` (unscaled), not changed.

        Returns
        -------
        directions : list of torch.Tensor or None
            The ascent direction per parameter, before normalization.
        """
        if self.m is None or len(self.m) != len(grads):
            self.m = [None] * len(grads)
        present = [g for g in grads if g is not None]
        # an overflowed pass (float16) teaches the average nothing; no sync with the device
        finite = torch.stack(torch._foreach_norm(present)).isfinite().all() if present else None
        directions = []
        for j, g in enumerate(grads):
            if g is None:
                directions.append(None)
                continue
            old = self.m[j] if self.m[j] is not None else torch.zeros_like(g)
            self.m[j] = torch.where(finite, torch.lerp(old, g, 1.0 - self.lmbda), old)
            directions.append(g - self.sigma * self.m[j] if self.sigma else g)
        return directions

    def state_dict(self):
        return {"m": self.m}

    def load_state_dict(self, state):
        self.m = state["m"]


@inherit_docstrings
class BayesianSAM(SeededGenerator, SAMRule):
    """Bayesian SAM, bSAM (Moellenhoff & Khan, 2023): an Adam-like relaxation of Bayes.

    The weights ``w`` are the mean of a Gaussian posterior with precision
    ``N s`` per weight (``N`` the number of training samples). Each step,
    as written in the paper's algorithm::

        theta = w + xi / sqrt(N s),  xi ~ N(0, I)   # the first pass, at theta
        g     = grad L(theta)
        e     = rho * g / s                          # elementwise, unnormalized
        g_e   = grad L(w + e)                        # the second pass
        g_m  <- beta1 g_m + (1 - beta1) (g_e + delta w)
        s    <- beta2 s + (1 - beta2) (sqrt(s) |g| + delta + gamma)
        w    <- w - lr * g_m / s                     # the base optimizer's step

    so the base optimizer must be ``torch.optim.SGD`` without momentum or
    weight decay (``delta`` is the prior precision here): the descent hook
    hands it ``g_m / s``. The noise is drawn from the rule's own seeded
    generator (every worker draws the same), added before the first pass and
    removed exactly after it; the loss :meth:`~sksam.optim.SAM.step` returns
    is the first pass's, at ``theta``. :meth:`posterior_std` is the
    posterior's standard deviation, ``1 / sqrt(N s)``, the uncertainty the
    paper reads off the fit.

    Not supported: float16 loss scaling (the update is not homogeneous in
    the gradients' scale) and the two-call protocol (the first gradient must
    be taken at ``theta``).

    Parameters
    ----------
    num_data : int
        ``N``, the number of training samples.
    betas : tuple of two floats, default=(0.9, 0.999)
        Forgetting rates of ``g_m`` and ``s``, each in ``[0, 1)``.
    prior_precision : float, default=0.0
        ``delta``, the L2 term (weight decay) of the posterior, ``>= 0``.
    damping : float, default=0.1
        ``gamma``, added to ``s``'s update, ``>= 0``.
    init_precision : float, default=1.0
        ``s`` before the first step, ``> 0``.
    seed : int, default=0
        Seed of the noise's generator.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, BayesianSAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.01, lr=0.1,
    ...           rule=BayesianSAM(num_data=1000))
    """

    needs_first_gradient = True
    #: The first pass is taken at sampled weights (:meth:`sample`).
    samples_weights = True
    #: The update is not homogeneous in the loss scale of float16 training.
    supports_loss_scaling = False

    _param_names = ("num_data", "betas", "prior_precision", "damping", "init_precision", "seed")

    def __init__(
        self,
        num_data,
        betas=(0.9, 0.999),
        prior_precision=0.0,
        damping=0.1,
        init_precision=1.0,
        seed=0,
    ):
        check_int("num_data", num_data, 1)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got betas={betas!r}.")
        for beta in betas:
            check_real("betas", beta, 0.0, 1.0, closed_high=False)
        check_real("prior_precision", prior_precision, 0.0, math.inf, closed_high=False)
        check_real("damping", damping, 0.0, math.inf, closed_high=False)
        check_real("init_precision", init_precision, 0.0, math.inf, closed_low=False)
        check_int("seed", seed, 0)
        self.num_data, self.betas = num_data, tuple(betas)
        self.prior_precision, self.damping = prior_precision, damping
        self.init_precision, self.seed = init_precision, seed
        self.s = self.g_m = None
        self._gen = None

    def _state_for(self, params):
        if self.s is None or len(self.s) != len(params):
            self.s = [torch.full_like(p, self.init_precision) for p in params]
            self.g_m = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def sample(self, params):
        """The noise ``xi / sqrt(N s)`` added to the weights for the first pass.

        Parameters
        ----------
        params : list of torch.Tensor
            The parameters of every group, in order.

        Returns
        -------
        noise : list of torch.Tensor
            One tensor per parameter, drawn on the CPU from the rule's
            generator (the same draws in every process) and moved to the
            parameter's device.
        """
        self._state_for(params)
        gen = self._generator()
        noise = []
        for p, s in zip(params, self.s):
            xi = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            noise.append(xi / torch.sqrt(self.num_data * s))
        return noise

    def perturbation(self, solver, radii, params, grads, *, adaptive=None, eta=ASAM_ETA):
        if solver != "sam":
            raise ValueError(
                f"BayesianSAM takes solver='sam' (its own e = rho g / s), got {solver!r}."
            )
        self._state_for(params)
        return [None if g is None or r == 0 else g * r / s for g, r, s in zip(grads, radii, self.s)]

    @torch.no_grad()
    def descent(self, params, first_grads):
        self._state_for(params)
        beta1, beta2 = self.betas
        delta, gamma = self.prior_precision, self.damping
        for j, (p, g) in enumerate(zip(params, first_grads)):
            if p.grad is None or g is None:
                continue
            g_e = p.grad.add(p, alpha=delta) if delta else p.grad
            self.g_m[j].lerp_(g_e, 1.0 - beta1)
            s = self.s[j]
            s.lerp_(torch.sqrt(s) * g.abs() + (delta + gamma), 1.0 - beta2)
            p.grad = self.g_m[j] / s

    def posterior_std(self):
        """The standard deviation of the posterior per weight, ``1 / sqrt(N s)``.

        Returns
        -------
        std : list of torch.Tensor or None
            One tensor per parameter (``None`` before the first step).
        """
        if self.s is None:
            return None
        return [1.0 / torch.sqrt(self.num_data * s) for s in self.s]

    def state_dict(self):
        gen = None if self._gen is None else self._gen.get_state()
        return {"s": self.s, "g_m": self.g_m, "rng": gen}

    def load_state_dict(self, state):
        self.s, self.g_m = state["s"], state["g_m"]
        self._gen = None
        if state.get("rng") is not None:
            self._generator().set_state(state["rng"])


class RhoSchedule(StepCounter):
    """The radius of each step, from the group's ``rho`` and ``lr`` and the step count.

    Subclasses implement :meth:`radius`. The step counter ``t`` starts at
    0 and advances once per :meth:`sksam.optim.SAM.step`. Whatever a
    subclass computes, the radius used is clipped to ``[0, rho]``: a
    schedule can shrink ``rho``, never turn it negative or beyond it.
    """

    def start(self, group_index, group):
        """Called with each group before its radius is asked for, every step.

        Parameters
        ----------
        group_index : int
            Which group.
        group : dict
            The parameter group (``lr``, ``initial_lr``, ...).
        """

    def radius(self, rho, lr, group_index):
        """The radius of this step for a group with radius ``rho`` and rate ``lr``.

        Parameters
        ----------
        rho : float
            The group's ``rho``, the largest radius.
        lr : float
            The group's learning rate at this step.
        group_index : int
            Which group (for schedules that remember a per-group value).

        Returns
        -------
        rho_t : float
            The radius of this step (clipped to ``[0, rho]`` by :meth:`clipped`).
        """
        return rho

    def clipped(self, rho, lr, group_index):
        """:meth:`radius` clipped to ``[0, rho]`` (a float)."""
        value = float(self.radius(float(rho), float(lr), group_index))
        if not math.isfinite(value):
            raise ValueError(
                f"rho_schedule={self!r} gave a non-finite radius {value!r} at step {self.t} "
                f"(rho={rho!r}, lr={lr!r})."
            )
        return min(max(value, 0.0), float(rho))


@inherit_docstrings
class ProportionalRho(RhoSchedule):
    """GSAM's radius, proportional to the learning rate (Zhuang et al., 2022).

    ::

        rho_t = rho_min + (rho - rho_min) * (lr_t - lr_min) / (lr_max - lr_min)

    clipped to ``[rho_min, rho]``, so a learning rate below ``lr_min`` (a
    warm-up that starts at ``lr=0``) gives ``rho_min``, never a negative
    radius, and one above ``lr_max`` gives ``rho``. ``rho`` is the group's.

    Parameters
    ----------
    rho_min : float, default=0.0
        The radius at ``lr <= lr_min``, ``>= 0``.
    lr_max : float, default=None
        The learning rate at which the radius is ``rho``. ``None``: each
        group's ``initial_lr`` (set by torch's learning-rate schedulers),
        else its learning rate at the first step.
    lr_min : float, default=0.0
        The learning rate at which the radius is ``rho_min``, ``< lr_max``.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, GSAM, ProportionalRho
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, rule=GSAM(),
    ...           rho_schedule=ProportionalRho(rho_min=0.01))
    """

    _param_names = ("rho_min", "lr_max", "lr_min")

    def __init__(self, rho_min=0.0, lr_max=None, lr_min=0.0):
        check_real("rho_min", rho_min, 0.0, math.inf, closed_high=False)
        check_real("lr_min", lr_min, 0.0, math.inf, closed_high=False)
        if lr_max is not None:
            check_real("lr_max", lr_max, lr_min, math.inf, closed_low=False, closed_high=False)
        super().__init__()
        self.rho_min, self.lr_max, self.lr_min = rho_min, lr_max, lr_min
        self.first_lr = {}

    def start(self, group_index, group):
        # the group's learning rate at the first step, for lr_max=None
        if self.lr_max is None and group_index not in self.first_lr:
            self.first_lr[group_index] = float(group.get("initial_lr", group["lr"]))

    def radius(self, rho, lr, group_index):
        lr_max = self.lr_max if self.lr_max is not None else self.first_lr.get(group_index, lr)
        rho_min = min(self.rho_min, rho)
        if not lr_max > self.lr_min:
            return rho
        value = rho_min + (rho - rho_min) * (lr - self.lr_min) / (lr_max - self.lr_min)
        return min(max(value, rho_min), rho)

    def state_dict(self):
        return {"t": self.t, "first_lr": dict(self.first_lr)}

    def load_state_dict(self, state):
        self.t, self.first_lr = state["t"], dict(state["first_lr"])


@inherit_docstrings
class WarmupRho(RhoSchedule):
    """A radius that grows linearly from 0 to ``rho`` over the first ``steps`` steps.

    ``rho_t = rho * min(1, t / steps)``: step 0 takes the base optimizer's
    step (one gradient), step ``steps`` and later the full radius.

    Parameters
    ----------
    steps : int, default=100
        The length of the warm-up, ``>= 1``.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, WarmupRho
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1,
    ...           rho_schedule=WarmupRho(50))
    """

    _param_names = ("steps",)

    def __init__(self, steps=100):
        check_int("steps", steps, 1)
        super().__init__()
        self.steps = steps

    def radius(self, rho, lr, group_index):
        return rho * min(1.0, self.t / self.steps)


#: Normalization layers whose affine parameters SAM-ON perturbs.
_NORM_TYPES = tuple(
    getattr(torch.nn, name)
    for name in (
        "BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm LayerNorm GroupNorm RMSNorm "
        "InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyBatchNorm1d LazyBatchNorm2d "
        "LazyBatchNorm3d"
    ).split()
    if hasattr(torch.nn, name)
)


def normalization_parameters(model):
    """The parameters of ``model``'s normalization layers (SAM-ON's subset).

    Parameters
    ----------
    model : torch.nn.Module
        The module (a ``DistributedDataParallel`` wrapper is looked into).

    Returns
    -------
    params : list of torch.Tensor
        The weights and biases of its batch, layer, group, RMS and instance
        normalization layers, each once.
    """
    seen, params = set(), []
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    return params


#: Estimator ``solver`` values that are SAM with a rule or a subset.
FAMILY_SOLVERS = ("gsam", "wsam", "fsam", "sam_on")

#: The estimators' parameters for the rules' options (:func:`family_for`'s keywords).
FAMILY_OPTIONS = ("gsam_alpha", "wsam_gamma", "fsam_sigma", "fsam_lmbda")


def family_constraints():
    """scikit-learn's parameter constraints of :data:`FAMILY_OPTIONS` (the rules' ranges)."""
    from sklearn.utils._param_validation import Interval

    return {
        "gsam_alpha": [Interval(numbers.Real, 0, 1, closed="both")],
        "wsam_gamma": [Interval(numbers.Real, 0, 1, closed="left")],
        "fsam_sigma": [Interval(numbers.Real, 0, None, closed="left")],
        "fsam_lmbda": [Interval(numbers.Real, 0, 1, closed="left")],
    }


def family_for(solver, *, gsam_alpha=0.4, wsam_gamma=0.9, fsam_sigma=1.0, fsam_lmbda=0.9):
    """The perturbation and the :class:`sksam.optim.SAM` options behind a ``solver`` name.

    Parameters
    ----------
    solver : str
        ``'gsam'``, ``'wsam'``, ``'fsam'`` or ``'sam_on'``; any other value
        is returned unchanged, with no options.
    gsam_alpha : float, default=0.4
        :class:`GSAM`'s ``alpha``, for ``'gsam'``.
    wsam_gamma : float, default=0.9
        :class:`WSAM`'s ``gamma``, for ``'wsam'``.
    fsam_sigma, fsam_lmbda : float, default=1.0 and 0.9
        :class:`FriendlySAM`'s ``sigma`` and ``lmbda``, for ``'fsam'``.

    Returns
    -------
    perturbation : str
        ``'sam'`` for the family's names.
    options : dict
        ``rule`` (a new object; the defaults are the papers') or
        ``perturb='normalization'``.
    """
    if solver == "gsam":
        return "sam", {"rule": GSAM(gsam_alpha)}
    if solver == "wsam":
        return "sam", {"rule": WSAM(wsam_gamma)}
    if solver == "fsam":
        return "sam", {"rule": FriendlySAM(fsam_sigma, fsam_lmbda)}
    if solver == "sam_on":
        return "sam", {"perturb": "normalization"}
    return solver, {}
