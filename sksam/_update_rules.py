"""The update rules of every sksam solver, in one place.

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

The pieces shared by every optimizer and estimator live here once:
:func:`check_rho` (the radius every entry point and every step checks),
:func:`normalized_step` (``e = rho * d / ||n||`` with its floor, used by SAM,
ASAM and Momentum-SAM) and :class:`SAMRule`, the three hooks of the SAM pass
(:class:`sksam.optim.SAM`) where the variants of SAM differ.

This module knows nothing about estimators; it imports torch only inside the
functions that work on tensors, so the numpy-only kernel regressor never pays
for it.
"""

import math

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


def ascent_direction(solver, params, grads, *, adaptive=None, eta=ASAM_ETA):
    """The direction ``d`` of ``solver``'s perturbation and the tensors of its norm.

    Parameters
    ----------
    solver : {'sam', 'usam', 'asam'}
        The update rule.
    params, grads : sequence of torch.Tensor
        As for :func:`perturbation`.
    adaptive : sequence of bool, optional
        For ``asam``: which parameters get the scaling ``T = |w| + eta``.
    eta : float, default=0.01
        ASAM's offset.

    Returns
    -------
    directions : list of torch.Tensor or None
        ``g`` (``T**2 g`` for the adaptive parameters of ``asam``).
    norm_of : list of torch.Tensor or None
        ``g`` (``T g`` likewise): ``||e|| = rho`` in that geometry.
    """
    if solver != "asam":
        return list(grads), list(grads)
    if adaptive is None:
        adaptive = [True] * len(params)
    directions, norm_of = [], []
    for w, g, is_adaptive in zip(params, grads, adaptive):
        if g is not None and is_adaptive:
            t = w.detach().abs().add_(eta)
            norm_of.append(t * g)  # T g, whose norm normalizes
            directions.append(t * t * g)  # T**2 g, the ascent direction
        else:
            norm_of.append(g)
            directions.append(g)
    return directions, norm_of


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
    directions, norm_of = ascent_direction(solver, params, grads, adaptive=adaptive, eta=eta)
    return normalized_step(directions, rho, norm_of)


class SAMRule:
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

    def state_dict(self):
        """The rule's own state, saved with the optimizer's.

        Returns
        -------
        state : dict
            Empty for plain SAM.
        """
        return {}

    def load_state_dict(self, state):
        """Put back a state from :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        """

    def __repr__(self):
        return f"{type(self).__name__}()"


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
