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

This module knows nothing about estimators; it imports torch only inside the
functions that work on tensors, so the numpy-only kernel regressor never pays
for it.
"""

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


def is_perturbed(solver, rho):
    """Whether ``solver`` with radius ``rho`` takes a second gradient."""
    check_solver(solver)
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
        # rho / norm, as torch computes it (reciprocal, then product), in place
        scale = grad_norm.clamp_min(GRAD_NORM_FLOOR).reciprocal_()
        return scale * rho if hasattr(rho, "shape") else scale.mul_(rho)
    return rho / max(grad_norm, GRAD_NORM_FLOOR)


def perturbation(solver, rho, params, grads, *, adaptive=None, eta=ASAM_ETA):
    """Perturbation ``e`` of a list of torch parameters, one tensor each.

    Parameters
    ----------
    solver : {'gd', 'sam', 'usam', 'asam'}
        The update rule.
    rho : float or torch.Tensor
        Radius of the perturbation.
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
    if adaptive is None:
        adaptive = [True] * len(params)
    directions, scaled = [], []
    for w, g, is_adaptive in zip(params, grads, adaptive):
        if g is None:
            directions.append(None)
            continue
        if solver == "asam" and is_adaptive:
            t = w.detach().abs().add_(eta)
            scaled.append(t * g)  # T g, whose norm normalizes
            directions.append(t * t * g)  # T**2 g, the ascent direction
        else:
            scaled.append(g)
            directions.append(g)
    if not scaled:
        return [None] * len(params)
    # One fused call per list instead of one per tensor (same bits on CPU).
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scaled)))
    scale = perturbation_scale(solver, rho, norm)
    e = iter(torch._foreach_mul([d for d in directions if d is not None], scale))
    return [None if d is None else next(e) for d in directions]


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
