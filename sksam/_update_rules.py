"""The update rules of every sksam solver, and when SAM's second gradient is paid for.

Every solver takes the same two-pass step on parameters ``w`` with mean
training loss ``L``::

    g = grad L(w)
    e = perturbation(g, w)            # the ascent step, zero for 'gd'
    w <- w - lr * grad L(w + e)       # the descent step of the base rule

and differs only in the perturbation ``e``:

========  ==============================================  ===========================
solver    perturbation ``e``                              reference
========  ==============================================  ===========================
``gd``    ``0``                                           plain gradient descent
``sam``   ``rho * g / ||g||``                             Foret et al. (2021)
``usam``  ``rho * g``                                     Andriushchenko & Flammarion
                                                          (2022)
``asam``  ``rho * T**2 g / ||T g||``, ``T = |w| + eta``   Kwon et al. (2021)
========  ==============================================  ===========================

For ``asam`` the scaling ``T`` applies to the parameters flagged *adaptive*
(by convention the weight matrices, as in Kwon et al.); the others use
``T = 1``. ``||.||`` is the Euclidean norm over all parameters together,
unless a caller passes its own norm (the kernel regressor measures the
gradient in the RKHS norm, see :mod:`sksam.kernel`).

Conventions every estimator relies on:

* ``rho == 0`` (or ``solver='gd'``) returns *no* perturbation, so callers skip
  the second gradient and reproduce gradient descent bit for bit.
* A zero gradient gives a zero perturbation, never a division by zero: the
  norm is floored at :data:`GRAD_NORM_FLOOR`, which leaves ``||e|| = rho``
  exact for every gradient with a norm above the floor.

What is here:

* the perturbation: :func:`check_rho` (the radius every entry point and every
  step checks), :func:`perturbation`, :func:`normalized_step` (the one home of
  ``e = rho * d / ||n||`` and its floor, used by SAM, ASAM and Momentum-SAM),
  :func:`add_perturbation_` and :func:`restore_`;
* :class:`SAMRule`, the three hooks of the SAM pass (:class:`sksam.optim.SAM`)
  where the variants of SAM differ, and :class:`CheckedRadii`, the radius
  check of the groups of SAM and Momentum-SAM;
* the bases every rule and schedule shares (:class:`Spec`,
  :class:`StepCounter`, :class:`SeededGenerator`) and their argument checks;
* the schedules, which decide step by step whether the SAM step (two
  gradients) or a plain step (one gradient) is taken and may change the plain
  step's gradient: the protocol :class:`Schedule`, its one driver
  :class:`ScheduledStep` (the SAM pass and the two-layer step both use it),
  and the rules:

  ================  ===========================================  ========================
  schedule          SAM step when                                reference
  ================  ===========================================  ========================
  ``EveryK(k)``     ``t % k == 0``                               composer's ``interval``
  ``LookSAM(k, a)`` ``t % k == 0``; other steps use                Liu et al. (2022)
                    ``g + a * |g| / |g_v| * g_v``
  ``RST(p, seed)``  a Bernoulli(``p``) draw from a seeded         Zhao et al. (2022)
                    ``torch.Generator``
  ``AESAM(c, d)``   ``|g|**2 >= mu_t + c_t * sigma_t``            Jiang et al. (2023)
  ================  ===========================================  ========================

  ``t`` counts the steps from 0 (the first step is a SAM step for the periodic
  rules). A schedule given to an optimizer or an estimator is a specification:
  each user copies it, so its counters and statistics belong to that user.

This module knows nothing about estimators; it imports torch only inside the
functions that work on tensors, so the numpy-only kernel regressor never pays
for it.

References
----------
Liu, Mai, Chen, Hsieh, You (2022). Towards Efficient and Scalable
Sharpness-Aware Minimization. CVPR.

Zhao, Zhang, Hu (2022). Randomized Sharpness-Aware Training for Boosting
Computational Efficiency in Deep Learning. arXiv:2203.09962.

Jiang, Yang, Zhang, Kwok (2023). An Adaptive Policy to Employ
Sharpness-Aware Minimization. ICLR.
"""

import math
import numbers

SOLVERS = ("gd", "sam", "usam", "asam")

#: Gradient norms below this are treated as this value (``e`` is then ~0).
GRAD_NORM_FLOOR = 1e-12

#: Default ``eta`` of ASAM's scaling ``T = |w| + eta`` (Kwon et al., 2021).
ASAM_ETA = 0.01


def check_solver(solver):
    """Raise a ``ValueError`` naming ``solver`` if it is not a known solver."""
    if solver not in SOLVERS:
        raise ValueError(
            f"Unknown solver {solver!r}; expected one of {', '.join(map(repr, SOLVERS))}."
        )


def check_rho(rho, group=None):
    """Refuse a radius that would move the weights to a non-finite point.

    Parameters
    ----------
    rho : float or torch.Tensor
        The radius, finite and ``>= 0``.
    group : int, optional
        The index of the parameter group that holds it, named in the error.

    Raises
    ------
    ValueError
        If ``rho`` is negative, infinite or NaN.
    """
    value = rho
    if hasattr(rho, "numel"):  # a tensor: one number, or refused
        value = rho.item() if rho.numel() == 1 else float("nan")
    if value >= 0 and math.isfinite(value):
        return
    problem = "non-negative" if value < 0 else "finite"  # NaN: not finite
    where = "" if group is None else f" in param_groups[{group}]"
    raise ValueError(f"rho must be {problem}, got rho={rho!r}{where}.")


def is_perturbed(solver, rho):
    """Whether ``solver`` with radius ``rho`` (or one radius per parameter) perturbs."""
    check_solver(solver)
    if isinstance(rho, (list, tuple)):
        return solver != "gd" and any(r != 0 for r in rho)
    return solver != "gd" and rho != 0


def perturbation_scale(solver, rho, grad_norm):
    """Scalar ``c`` such that the perturbation is ``e = c * d``.

    ``d`` is the ascent direction: ``g`` for ``sam`` and ``usam``, ``T**2 g``
    for ``asam``; ``grad_norm`` is ``||g||`` (``||T g||`` for ``asam``).

    Parameters
    ----------
    solver : {'gd', 'sam', 'usam', 'asam'}
        The update rule.
    rho : float
        Radius of the perturbation, ``rho >= 0``.
    grad_norm : float or torch.Tensor
        Norm of the (scaled) gradient. Ignored by ``gd`` and ``usam``.

    Returns
    -------
    scale : float or torch.Tensor
        ``0`` for ``gd``, ``rho`` for ``usam`` and
        ``rho / max(grad_norm, GRAD_NORM_FLOOR)`` for ``sam`` and ``asam``.
    """
    if not is_perturbed(solver, rho):
        return 0.0
    if solver == "usam":
        return rho
    if hasattr(grad_norm, "clamp_min"):  # a tensor: stay on its device, no sync
        return _times(_inverse_norm(grad_norm), rho)
    return rho / max(grad_norm, GRAD_NORM_FLOOR)


def _inverse_norm(norm):
    """``1 / max(norm, GRAD_NORM_FLOOR)`` of a tensor norm, on its device."""
    return norm.clamp_min(GRAD_NORM_FLOOR).reciprocal_()


def _times(inverse, rho):
    """``rho / norm`` as torch computes it (reciprocal, then product)."""
    return inverse * rho if hasattr(rho, "shape") else inverse.mul(rho)


def normalized_step(directions, rho, norm_of=None):
    """``e = rho * d / max(||n||, GRAD_NORM_FLOOR)``, one tensor per parameter.

    The one home of the normalized perturbation: SAM's ``rho g / ||g||``,
    ASAM's ``rho T**2 g / ||T g||`` and Momentum-SAM's ``-rho v / ||v||``
    all go through it, so the floor that turns a zero direction into a zero
    perturbation (never a division by zero) is the same for all.

    Parameters
    ----------
    directions : sequence of torch.Tensor or None
        The ascent direction ``d`` per parameter (``None``: not perturbed).
    rho : float, torch.Tensor or sequence of float
        The radius; a sequence gives one radius per parameter (the rule is
        linear in it: groups with their own ``rho`` share one direction and
        one norm). A negative radius steps against ``d``.
    norm_of : sequence of torch.Tensor, optional
        The tensors whose joint Euclidean norm ``||n||`` normalizes
        (``None`` entries skipped); defaults to the directions.

    Returns
    -------
    e : list of torch.Tensor or None
        ``None`` where the direction is ``None`` or the radius is 0.
    """
    import torch

    present = [d for d in directions if d is not None]
    norm_of = present if norm_of is None else [n for n in norm_of if n is not None]
    if not present or not norm_of:
        return [None] * len(directions)
    # One fused call per list instead of one per tensor (same bits on CPU).
    inverse = _inverse_norm(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(norm_of))))
    if not isinstance(rho, (list, tuple)):
        e = iter(torch._foreach_mul(present, _times(inverse, rho)))
        return [None if d is None else next(e) for d in directions]
    scales = {}  # one scale per distinct radius
    for r in rho:
        if r != 0 and r not in scales:
            scales[r] = _times(inverse, r)
    return [None if d is None or r == 0 else d * scales[r] for d, r in zip(directions, rho)]


def present_pairs(a, b):
    """The entries of ``a`` and ``b`` where both are present (not ``None``), as two lists."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def dot(a, b):
    """``sum_i a_i . b_i`` over the pairs where both are present (a 0-d tensor)."""
    import torch

    terms = [torch.sum(x * y) for x, y in zip(a, b) if x is not None and y is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def perturbation(solver, rho, params, grads, *, adaptive=None, eta=ASAM_ETA):
    """Perturbation ``e`` of a list of torch parameters, one tensor each.

    Parameters
    ----------
    solver : {'gd', 'sam', 'usam', 'asam'}
        The update rule.
    rho : float, torch.Tensor or sequence of float
        Radius of the perturbation; a sequence gives one per parameter.
    params : sequence of torch.Tensor
        Current parameters ``w``.
    grads : sequence of torch.Tensor or None
        ``grad L(w)`` for each parameter; ``None`` for a parameter that has
        no gradient (it is then not perturbed).
    adaptive : sequence of bool, optional
        For ``asam``: which parameters get the scaling ``T = |w| + eta``.
        Defaults to all of them.
    eta : float, default=0.01
        ASAM's offset, which keeps zero weights perturbable.

    Returns
    -------
    e : list of torch.Tensor or None, or None
        ``None`` as a whole when the solver takes no second gradient
        (``gd``, or ``rho == 0``); otherwise one tensor per parameter,
        ``None`` where ``grads`` is ``None``.
    """
    import torch

    if not is_perturbed(solver, rho):
        return None
    if solver == "usam":  # unnormalized: e = rho * g
        if isinstance(rho, (list, tuple)):
            return [None if g is None or r == 0 else g * r for g, r in zip(grads, rho)]
        e = iter(torch._foreach_mul([g for g in grads if g is not None], rho))
        return [None if g is None else next(e) for g in grads]
    if solver != "asam":
        return normalized_step(list(grads), rho, list(grads))
    if adaptive is None:
        adaptive = [True] * len(params)
    directions, norm_of = [], []
    for w, g, is_adaptive in zip(params, grads, adaptive):
        if g is not None and is_adaptive:
            t = w.detach().abs().add_(eta)
            norm_of.append(t * g)  # T g, whose norm normalizes: ||e|| = rho in that geometry
            directions.append(t * t * g)  # T**2 g, the ascent direction
        else:
            norm_of.append(g)
            directions.append(g)
    return normalized_step(directions, rho, norm_of)


# --------------------------------------------------------------------------
# the bases every rule and schedule shares, and their argument checks
# --------------------------------------------------------------------------


def check_int(name, value, low):
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}.")


def check_real(name, value, low, high, *, closed_low=True, closed_high=True):
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite number in range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if closed_low else value > low)
    ok = ok and (value <= high if closed_high else value < high)
    if not ok:
        lo, hi = "[" if closed_low else "(", "]" if closed_high else ")"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {name}={value!r}.")


def inherit_docstrings(cls):
    """Give the methods ``cls`` overrides without a docstring their base's (same contract)."""
    for name, member in vars(cls).items():
        if callable(member) and not name.startswith("__") and member.__doc__ is None:
            for base in cls.__mro__[1:]:
                doc = getattr(getattr(base, name, None), "__doc__", None)
                if doc:
                    member.__doc__ = doc
                    break
    return cls


class Spec:
    """A specification copied by each user: ``repr``, equality, ``get_params``, state."""

    #: The constructor's arguments, each stored under its own name (:meth:`get_params`).
    _param_names = ()

    def get_params(self, deep=True):
        """The constructor arguments, as a dict (for ``repr`` and cloning).

        Parameters
        ----------
        deep : bool, default=True
            Ignored (no nested objects); accepted so that scikit-learn's
            ``clone`` rebuilds the object from these arguments.

        Returns
        -------
        params : dict
            The arguments this object was built with.
        """
        return {name: getattr(self, name) for name in self._param_names}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_params() == other.get_params()

    def __hash__(self):
        return hash((type(self), tuple(self.get_params().items())))

    def state_dict(self):
        """The counters and statistics, saved with the optimizer's state.

        Returns
        -------
        state : dict
            What :meth:`load_state_dict` takes back.
        """
        return {}

    def load_state_dict(self, state):
        """Put back a state from :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        """


@inherit_docstrings
class StepCounter(Spec):
    """A :class:`Spec` that counts the steps: ``t`` from 0, one :meth:`advance` per step."""

    def __init__(self):
        self.t = 0

    def advance(self):
        """End the step: count it."""
        self.t += 1

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = state["t"]


class SeededGenerator:
    """A private ``torch.Generator`` seeded with ``self.seed``, pickled as its state.

    torch's global generator is neither read nor advanced, and every worker
    of a data-parallel job draws the same sequence.
    """

    _gen = None

    def _generator(self):
        import torch

        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        return self._gen

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("_gen") is not None:
            state["_gen"] = state["_gen"].get_state()
        return state

    def __setstate__(self, state):
        gen = state.pop("_gen", None)
        self.__dict__.update(state, _gen=None)
        if gen is not None:
            self._generator().set_state(gen)


class SAMRule(Spec):
    """The three points where a SAM variant differs: the hooks of the SAM pass.

    :class:`sksam.optim.SAM` takes every step through one pass (closure at
    ``w``, perturb, closure at ``w + e``, restore, base step), which holds
    what every variant needs: loss scaling, replay of random numbers and
    running statistics, ``DistributedDataParallel``, m-sharpness chunks,
    gradient accumulation in the closure and the schedules. A variant
    changes only what this class returns; this base class is plain SAM
    (and USAM and ASAM, by ``solver``). Pass an instance as
    ``SAM(..., rule=...)``; it is copied, and its :meth:`state_dict`
    travels with the optimizer's.

    The pass calls, in order, per step (per chunk for ``step_chunks``):

    1. :meth:`radius` once per group: the ``rho`` of this step (a rho
       schedule goes here). The pass checks it (finite, ``>= 0``) and
       takes the base step alone when every radius is 0.
    2. :meth:`perturbation` with the first gradient: the ``e`` added to
       the weights (the ascent direction, its norm, which parameters move).
    3. :meth:`descent` after the second gradient, with the weights back at
       ``w``: changes ``.grad`` (the gradient at ``w + e``) in place into the
       gradient the base optimizer steps along, from the first gradient when
       :attr:`needs_first_gradient`.
    """

    #: Whether :meth:`descent` reads the first pass's gradient (kept for it).
    needs_first_gradient = False

    def radius(self, group):
        """The radius of ``group`` for this step.

        Parameters
        ----------
        group : dict
            A parameter group (``rho``, ``lr``, ...).

        Returns
        -------
        rho : float or torch.Tensor
            ``group['rho']``.
        """
        return group["rho"]

    def perturbation(self, solver, radii, params, grads, *, adaptive=None, eta=ASAM_ETA):
        """The perturbation ``e`` of this step (``None``: no second pass).

        Parameters
        ----------
        solver : {'sam', 'usam', 'asam'}
            The groups' solver.
        radii : list of float
            The radius of each parameter (its group's :meth:`radius`).
        params : list of torch.Tensor
            The parameters of every group, in order.
        grads : list of torch.Tensor or None
            The ascent gradients (unscaled; with the L2 term when
            ``weight_decay_in_ascent``).
        adaptive : list of bool, optional
            ASAM's flags (the tensors of 2 or more dimensions).
        eta : float, default=0.01
            ASAM's offset.

        Returns
        -------
        e : list of torch.Tensor or None, or None
            As :func:`perturbation`, which this default returns.
        """
        if len(set(radii)) <= 1:  # one radius: the scalar path, one fused product
            radii = radii[0] if radii else 0.0
        return perturbation(solver, radii, params, grads, adaptive=adaptive, eta=eta)

    def descent(self, params, first_grads):
        """Turn ``.grad`` (the gradient at ``w + e``) into the descent gradient.

        Parameters
        ----------
        params : list of torch.Tensor
            The parameters, back at ``w``; change their ``.grad`` in place.
        first_grads : list of torch.Tensor or None
            The first pass's gradients at ``w`` when
            :attr:`needs_first_gradient`, else ``None``. Both are in the
            closure's scale (multiplied by the loss scale under float16
            scaling).
        """


class CheckedRadii:
    """A ``torch.optim.Optimizer`` mixin: a group's ``rho`` is checked where it enters."""

    def add_param_group(self, param_group):
        """Add a parameter group, refusing a negative or non-finite ``rho``.

        Parameters
        ----------
        param_group : dict
            As for ``torch.optim.Optimizer.add_param_group``; it may carry
            its own ``rho`` and any other option of the optimizer.
        """
        if "rho" in param_group:
            check_rho(param_group["rho"], len(self.param_groups))
        super().add_param_group(param_group)


def add_perturbation_(params, e):
    """Add ``e`` to ``params`` in place; return exact copies of the originals.

    The copies let :func:`restore_` put back the very same bits, rather than
    subtracting ``e`` again (which leaves rounding error behind).
    """
    import torch

    with torch.no_grad():  # clones of leaves are then plain tensors, no detach
        moved = [(w, e_w) for w, e_w in zip(params, e) if e_w is not None]
        copies = iter([w.clone() for w, _ in moved])
        if moved:
            torch._foreach_add_([w for w, _ in moved], [e_w for _, e_w in moved])
    return [None if e_w is None else next(copies) for e_w in e]


def restore_(params, saved):
    """Copy back the originals saved by :func:`add_perturbation_`.

    Restores exactly the parameters that were perturbed (``saved`` is not
    ``None``), whatever gradients they hold now.
    """
    import torch

    pairs = [(w, original) for w, original in zip(params, saved) if original is not None]
    if pairs:
        with torch.no_grad():
            torch._foreach_copy_([w for w, _ in pairs], [original for _, original in pairs])


# --------------------------------------------------------------------------
# the schedules: the protocol, its rules and its one driver
# --------------------------------------------------------------------------


@inherit_docstrings
class Schedule(StepCounter):
    """The protocol of a schedule: which steps take SAM's second gradient.

    Every step calls, through :class:`ScheduledStep`: :meth:`plan` before
    the first pass (``True``: SAM step, ``False``: plain step, ``None``:
    decided after the first pass by :meth:`decide`, from the squared norm
    of the first gradient); then :meth:`after_sam` after a SAM step, with
    both gradients, or :meth:`plain` on a plain step, which may change the
    gradient in place; and :meth:`advance` when the step ends. The base
    class takes every step (it is SAM). A subclass overrides what it needs,
    and :meth:`get_params`, :meth:`state_dict` and :meth:`load_state_dict`
    when it has options or state.
    """

    #: Whether the rule is defined per step, so m-sharpness chunks can share it.
    per_chunk_ok = True
    #: Whether :meth:`after_sam` reads the first gradient (a caller that
    #: overwrites it with the second keeps a copy).
    needs_first_gradient = False
    #: Whether :meth:`plain` may change the gradient.
    edits_plain_gradient = False

    def plan(self):
        """Before the first pass: ``True`` (SAM), ``False`` (plain) or ``None`` (decide).

        Returns
        -------
        take : bool or None
            Whether this step takes the SAM step; ``None``: :meth:`decide`
            says, after the first pass.
        """
        return True

    def decide(self, sq_norm):
        """After the first pass, when :meth:`plan` said ``None``.

        Parameters
        ----------
        sq_norm : float or torch.Tensor
            ``|g|**2`` of the first gradient over all parameters.

        Returns
        -------
        take : bool
            Whether this step takes the SAM step.
        """
        return True

    def after_sam(self, grads, sam_grads, finite=True):
        """Called after a SAM step.

        Parameters
        ----------
        grads : list of torch.Tensor or None
            The first gradients ``g`` (``None`` unless
            :attr:`needs_first_gradient`).
        sam_grads : list of torch.Tensor or None
            The descent gradients ``g_s``.
        finite : bool, default=True
            ``False`` when float16 loss scaling found an overflow.
        """

    def plain(self, grads):
        """Called on a plain step with the gradients the base step will use.

        Parameters
        ----------
        grads : list of torch.Tensor or None
            Changed in place by a rule that :attr:`edits_plain_gradient`.
        """


@inherit_docstrings
class EveryK(Schedule):
    """SAM every ``k`` steps, the base optimizer's plain step otherwise.

    Steps ``0, k, 2k, ...`` take the SAM step (two gradients); the others
    one gradient: ``1 + 1/k`` gradients per step on average.

    Parameters
    ----------
    k : int, default=5
        The period, ``k >= 1``; ``k=1`` is SAM.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, EveryK
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, schedule=EveryK(5))
    """

    _param_names = ("k",)

    def __init__(self, k=5):
        check_int("k", k, 1)
        super().__init__()
        self.k = k

    def plan(self):
        return self.t % self.k == 0


@inherit_docstrings
class LookSAM(EveryK):
    """LookSAM (Liu et al., 2022): reuse the part of the SAM gradient orthogonal to ``g``.

    Every ``k`` steps (``t % k == 0``) the SAM gradient ``g_s`` is computed
    and its component orthogonal to the plain gradient ``g`` kept::

        g_v = g_s - (g_s . g / |g|**2) g

    The other steps take one gradient and step along::

        g + alpha * |g| / |g_v| * g_v

    (plain ``g`` before the first refresh or when ``g_v = 0``). Norms and
    dot products are over all parameters together, as written in the
    paper's algorithm. ``1 + 1/k`` gradients per step; ``g_v`` costs one
    copy of the gradients.

    Parameters
    ----------
    k : int, default=5
        Steps between two refreshes of ``g_v``, ``k >= 1``.
    alpha : float, default=0.7
        Weight of the reused component, ``alpha >= 0``.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, LookSAM
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, schedule=LookSAM(5))
    """

    per_chunk_ok = False
    needs_first_gradient = True
    edits_plain_gradient = True

    _param_names = ("k", "alpha")

    def __init__(self, k=5, alpha=0.7):
        super().__init__(k)
        check_real("alpha", alpha, 0.0, math.inf, closed_high=False)
        self.alpha = alpha
        self.g_v = None

    def after_sam(self, grads, sam_grads, finite=True):
        import torch

        if not finite:  # an overflowed pass (float16): keep the last g_v
            return
        g, s = present_pairs(grads, sam_grads)
        if not g:
            return
        coef = dot(s, g) / dot(g, g).clamp_min(GRAD_NORM_FLOOR**2)
        # g_v = g_s - (g_s.g / |g|^2) g, aligned with the parameters (None: no gradient)
        g_v = iter(torch._foreach_add(s, torch._foreach_mul(g, -coef)))
        self.g_v = [
            next(g_v) if g is not None and s is not None else None for g, s in zip(grads, sam_grads)
        ]

    def plain(self, grads):
        # g + alpha |g| / |g_v| g_v (plain g before the first refresh of g_v)
        import torch

        if self.g_v is None:
            return
        g, v = present_pairs(grads, self.g_v)
        if not g:
            return
        g_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g)))
        v_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
        if float(v_norm) == 0.0:
            return
        # a Python scalar: no temporary copy of g_v (the norm was read already)
        torch._foreach_add_(g, v, alpha=self.alpha * float(g_norm) / float(v_norm))

    def state_dict(self):
        """The counters and statistics, saved with the optimizer's state.

        Returns
        -------
        state : dict
            The step counter ``t`` and ``g_v``.
        """
        return {"t": self.t, "g_v": self.g_v}

    def load_state_dict(self, state):
        self.t, self.g_v = state["t"], state["g_v"]


@inherit_docstrings
class RST(SeededGenerator, Schedule):
    """Randomized switching (Zhao et al., 2022): SAM with probability ``p``.

    Each step draws ``u ~ U[0, 1)`` from a private ``torch.Generator``
    seeded with ``seed`` (torch's global generator is neither read nor
    advanced) and takes the SAM step when ``u < p``, the plain step
    otherwise: ``1 + p`` gradients per step on average. Every worker of a
    data-parallel job draws the same sequence, so they switch together.

    Parameters
    ----------
    p : float, default=0.5
        Probability of a SAM step, in ``[0, 1]``.
    seed : int, default=0
        Seed of the generator.

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, RST
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, schedule=RST(0.5, seed=0))
    """

    _param_names = ("p", "seed")

    def __init__(self, p=0.5, seed=0):
        check_real("p", p, 0.0, 1.0)
        check_int("seed", seed, 0)
        super().__init__()
        self.p, self.seed = p, seed
        self._gen = None

    def plan(self):
        import torch

        return bool(torch.rand((), generator=self._generator()) < self.p)

    def state_dict(self):
        """The counters and statistics, saved with the optimizer's state.

        Returns
        -------
        state : dict
            The step counter ``t`` and the generator's state.
        """
        return {"t": self.t, "rng": self._generator().get_state()}

    def load_state_dict(self, state):
        self.t = state["t"]
        self._generator().set_state(state["rng"])


@inherit_docstrings
class AESAM(Schedule):
    """AE-SAM (Jiang et al., 2023): SAM only where the gradient is unusually large.

    With ``s_t = |g_t|**2`` the squared norm of the first gradient, its
    exponential moving mean and variance are updated, then compared::

        mu_t      = delta * mu_{t-1} + (1 - delta) * s_t
        sigma2_t  = delta * sigma2_{t-1} + (1 - delta) * (s_t - mu_t)**2
        SAM step  if  s_t >= mu_t + c_t * sqrt(sigma2_t),  plain step otherwise

    from ``mu_0 = sigma2_0 = 0``. The paper moves ``c_t`` linearly from
    ``lambda_1`` to ``lambda_2`` over training: pass ``c=(c_first, c_last)``
    with ``total_steps``; a single number keeps it fixed. Reading ``s_t``
    waits for the device once per step.

    Parameters
    ----------
    c : float or tuple of two floats, default=0.0
        The threshold, in standard deviations; a pair ``(c_first, c_last)``
        goes linearly from the first to the last over ``total_steps``.
    delta : float, default=0.9
        Forgetting rate of the moving statistics, in ``(0, 1)``.
    total_steps : int, default=None
        The length of the linear schedule of ``c`` (required with a pair).

    Examples
    --------
    >>> import torch
    >>> from sksam.optim import SAM, AESAM
    >>> model = torch.nn.Linear(3, 1)
    >>> schedule = AESAM(c=(-1.0, 1.0), total_steps=1000)
    >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, schedule=schedule)
    """

    per_chunk_ok = False

    _param_names = ("c", "delta", "total_steps")

    def __init__(self, c=0.0, delta=0.9, total_steps=None):
        pair = isinstance(c, (tuple, list))
        if pair:
            if len(c) != 2:
                raise ValueError(f"c must be a number or a pair (c_first, c_last), got c={c!r}.")
            for value in c:
                check_real("c", value, -math.inf, math.inf, closed_low=False, closed_high=False)
            if total_steps is None:
                raise ValueError(
                    "c=(c_first, c_last) needs total_steps, the length of its schedule."
                )
        else:
            check_real("c", c, -math.inf, math.inf, closed_low=False, closed_high=False)
        if total_steps is not None:
            check_int("total_steps", total_steps, 1)
        check_real("delta", delta, 0.0, 1.0, closed_low=False, closed_high=False)
        super().__init__()
        self.c = tuple(c) if pair else c
        self.delta, self.total_steps = delta, total_steps
        self.mean = self.var = 0.0

    def threshold_c(self):
        """``c_t`` of the current step.

        Returns
        -------
        c : float
            The number of standard deviations of this step's test.
        """
        if not isinstance(self.c, tuple):
            return self.c
        first, last = self.c
        frac = min(self.t / max(self.total_steps - 1, 1), 1.0)
        return first + (last - first) * frac

    def plan(self):
        return None  # decided from the first gradient's norm

    def decide(self, sq_norm):
        s, d = float(sq_norm), self.delta
        self.mean = d * self.mean + (1 - d) * s
        self.var = d * self.var + (1 - d) * (s - self.mean) ** 2
        return s >= self.mean + self.threshold_c() * math.sqrt(self.var)

    def state_dict(self):
        """The counters and statistics, saved with the optimizer's state.

        Returns
        -------
        state : dict
            The step counter ``t`` and the moving mean and variance.
        """
        return {"t": self.t, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state):
        self.t, self.mean, self.var = state["t"], state["mean"], state["var"]


#: Estimator ``solver`` values that are SAM under a schedule.
SCHEDULED_SOLVERS = ("every_k", "looksam", "rst", "aesam")


def schedule_for(solver, sam_every=5, seed=0, *, p=None, c=0.0, total_steps=None):
    """The perturbation rule and the schedule behind an estimator's ``solver``.

    Parameters
    ----------
    solver : str
        ``'every_k'``, ``'looksam'``, ``'rst'`` or ``'aesam'`` (SAM's
        perturbation under that schedule); any other value is returned
        unchanged, without schedule.
    sam_every : int, default=5
        Steps per SAM step: the period ``k`` of ``'every_k'`` and
        ``'looksam'``, and ``p = 1 / sam_every`` of ``'rst'`` (the same
        expected cost) unless ``p`` is given. ``'aesam'`` decides by itself.
    seed : int, default=0
        Seed of ``'rst'``'s generator.
    p : float or None, default=None
        ``'rst'``'s probability of a SAM step (None: ``1 / sam_every``).
    c : float or tuple of two floats, default=0.0
        ``'aesam'``'s threshold (a pair moves over ``total_steps``).
    total_steps : int or None, default=None
        ``'aesam'``'s schedule length, used with a pair ``c`` only.

    Returns
    -------
    rule : str
        The perturbation rule (``'sam'`` for the scheduled solvers).
    schedule : EveryK, LookSAM, RST, AESAM or None
        The schedule, a new object.
    """
    if solver == "every_k":
        return "sam", EveryK(sam_every)
    if solver == "looksam":
        return "sam", LookSAM(sam_every)
    if solver == "rst":
        return "sam", RST(1.0 / sam_every if p is None else p, seed=seed)
    if solver == "aesam":
        return "sam", AESAM(c, total_steps=total_steps if isinstance(c, tuple) else None)
    return solver, None


def sq_norm(grads):
    """``|g|**2`` over every tensor of ``grads`` (``None`` skipped; 0.0 if none)."""
    import torch

    present = [g for g in grads if g is not None]
    if not present:
        return 0.0
    return torch.stack(torch._foreach_norm(present)).square().sum()


class ScheduledStep:
    """One step under a schedule (or none): the one driver of :class:`Schedule`.

    Built when the step begins (it calls ``plan``), closed when the step
    ends (``advance``, also when the step raised); :meth:`resolve` runs
    after each first gradient (once per step, or once per m-sharpness
    chunk). Use it as a context manager.

    Parameters
    ----------
    schedule : Schedule or None
        ``None``: every step is a SAM step.
    perturbs : bool, default=True
        ``False``: the step takes no perturbation at all (``rho=0``): every
        pass is plain and the schedule is not consulted.

    Attributes
    ----------
    planned : bool or None
        What ``plan`` said: ``False`` lets the caller skip what only a SAM
        step needs (capturing random numbers, the per-worker ascent).
    """

    def __init__(self, schedule, *, perturbs=True):
        self.schedule = schedule if perturbs else None
        if not perturbs:
            self.planned = False
        else:
            self.planned = True if schedule is None else schedule.plan()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.schedule is not None:
            self.schedule.advance()

    def resolve(self, grads, sam_step, *, norm_grads=None, overflow=None, first_survives=False):
        """After the first gradient: take the SAM step or the plain one.

        Parameters
        ----------
        grads : list of torch.Tensor or None
            The first gradients, as the base step would use them (a plain
            step may change them in place).
        sam_step : callable
            ``sam_step()`` takes the second gradient and returns the list of
            descent gradients, or ``None`` when nothing was perturbed.
        norm_grads : list of torch.Tensor, optional
            The gradients whose norm ``decide`` reads (the unscaled ones
            under loss scaling); defaults to ``grads``.
        overflow : torch.Tensor, optional
            True when the first gradient overflowed (float16 loss scaling);
            read (a wait for the device) only to tell ``after_sam``.
        first_survives : bool, default=False
            Whether the tensors of ``grads`` survive ``sam_step`` unchanged
            (the SAM optimizer sets fresh ``.grad`` tensors); otherwise they
            are copied when the schedule reads them afterwards.

        Returns
        -------
        taken : bool
            Whether the SAM step was taken.
        """
        schedule = self.schedule
        take = self.planned
        if take is None:
            take = schedule.decide(sq_norm(grads if norm_grads is None else norm_grads))
        if not take:
            if schedule is not None:
                schedule.plain(grads)
            return False
        first = None
        if schedule is not None and schedule.needs_first_gradient:
            first = grads if first_survives else [None if g is None else g.clone() for g in grads]
        sam_grads = sam_step()
        if schedule is not None and sam_grads is not None:
            finite = overflow is None or not bool(overflow)
            schedule.after_sam(first, sam_grads, finite)
        return True


def scheduled_step(schedule, first_grads, sam_step):
    """One whole step under ``schedule`` for code that holds its gradients itself.

    ``first_grads`` are the gradients at ``w`` (a list of tensors, changed
    in place on plain steps by a schedule that
    :attr:`~Schedule.edits_plain_gradient`); ``sam_step()`` takes the SAM
    step's second gradient and returns the list of the SAM gradients (it
    may overwrite ``first_grads``' storage: they are copied first when the
    schedule needs them). Returns whether the SAM step was taken.
    """
    with ScheduledStep(schedule) as step:
        return step.resolve(first_grads, sam_step)
