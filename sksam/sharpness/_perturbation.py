"""Sharpness by perturbing the weights: worst case in a ball, average case.

All functions take the ``loss_fn`` and ``params`` of :mod:`sksam.sharpness._hvp`
(a no-argument callable returning the **mean** loss from the current values of
``params``) and measure how much the loss rises when the weights move by ``e``:

* worst case, :func:`rho_sharpness` and :func:`adaptive_rho_sharpness`:
  ``max_{||e / c|| <= rho} L(w + e) - L(w)`` with ``c = 1`` (Foret et al.,
  2021) or ``c = |w| + eta`` elementwise (Kwon et al., 2021; Andriushchenko
  et al., 2023), by monotone projected gradient ascent in ``u = e / c``;
* average case, :func:`average_sharpness`: ``E L(w + e) - L(w)`` for
  ``e ~ N(0, rho**2 diag(c**2))``, by Monte Carlo with antithetic pairs;
* the logit-normalized loss of Andriushchenko et al. (2023),
  :func:`normalized_logits_loss`, which the ``*_logitnorm`` measures apply to
  a classifier's outputs.

Parameters are moved in place while ``L(w + e)`` is evaluated and are copied
back bit for bit before returning, even after an error.

References
----------
.. [1] P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware
   Minimization for Efficiently Improving Generalization", ICLR 2021.
.. [2] J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware
   Minimization for Scale-Invariant Learning of Deep Neural Networks",
   ICML 2021.
.. [3] M. Andriushchenko, F. Croce, M. Mueller, M. Hein, N. Flammarion, "A
   Modern Look at the Relationship between Sharpness and Generalization",
   ICML 2023.
"""

import contextlib

import numpy as np
from sklearn.utils import check_random_state

from ._hvp import (
    check_count,
    check_loss,
    check_params,
    flatten_like,
    loss_and_gradient,
    random_vector,
    shared_doc,
    split_vector,
    standard_error,
)

#: What becomes of the parameters, in the shared ``params`` entry.
_MOVED = "moved while the loss is evaluated and restored bit for bit"


@shared_doc(_MOVED)
def rho_sharpness(loss_fn, params, rho, *, max_iter=20, n_restarts=0, random_state=None):
    r"""Compute SAM's rho-sharpness ``max_{||e|| <= rho} L(w + e) - L(w)``, from below.

    The sharpness of Foret et al. (2021), the quantity SAM minimizes alongside
    the loss, for the mean loss ``L = loss_fn()``. The inner maximization is
    non-concave, so it is solved approximately by monotone projected gradient
    ascent on the ball :math:`\|e\| \le \rho`, from SAM's own first-order
    solution :math:`e_0 = \rho\, g / \|g\|` (``g = grad L(w)``; a seeded random
    direction if ``g = 0``)::

        u      = grad L(w + e_k)
        e'     = project(e_k + s * u / ||u||)
        e_k+1  = e' if L(w + e') > L(w + e_k), else e_k and s <- s / 2

    with the step ``s`` starting at ``rho``. For a quadratic loss the fixed
    points on the sphere are those with ``grad L(w + e) = mu e``, ``mu >= 0``,
    the first-order conditions of the trust-region problem. Each of the
    ``n_restarts`` further runs starts from a seeded random point of the
    sphere: an ascent started on SAM's point never leaves the span of the
    eigenvectors that carry the gradient, so when the gradient is (nearly)
    orthogonal to the top eigenvector (the trust-region *hard case*, common
    at the end of training, where the top direction converged first) only a
    random start finds the top direction. The returned value is the largest
    ``L(w + e) - L(w)`` over every iterate and ``e = 0``: every iterate is
    feasible, so the result is a **lower bound** on the true rho-sharpness,
    never negative, and exact when an ascent reaches the global maximizer.

    Parameters
    ----------
    {loss_fn_params}
    rho : float
        Radius of the ball, ``rho >= 0`` (Euclidean norm over all
        parameters together).
    max_iter : int, default=20
        Ascent steps per start (one loss and gradient each).
    n_restarts : int, default=0
        Further ascents from seeded random points of the sphere.
    random_state : int, RandomState instance or None, default=None
        Seeds the random starts (and the first one when the gradient
        vanishes).

    Returns
    -------
    sharpness : float
        ``max(0, max_k L(w + e_k) - L(w))``; ``0.0`` when ``rho == 0``.

    Examples
    --------
    {diagonal_loss_example}
    >>> value = rho_sharpness(loss_fn, [w], rho=0.1, random_state=0)
    >>> round(value, 6)  # 4 * 0.1**2 / 2, along the top eigenvector
    0.02
    """
    return _worst_case(loss_fn, params, rho, None, max_iter, n_restarts, random_state)


@shared_doc(_MOVED)
def adaptive_rho_sharpness(
    loss_fn, params, rho, *, eta=0.0, max_iter=20, n_restarts=0, random_state=None
):
    r"""Adaptive worst-case sharpness ``max_{||e / c|| <= rho} L(w + e) - L(w)``.

    The perturbation is measured relative to the weights, ``c = |w| + eta``
    elementwise (Kwon et al., 2021; Andriushchenko et al., 2023, with
    ``eta = 0``): the ball is the ellipsoid
    :math:`\{T u : \|u\| \le \rho\}`, ``T = diag(c)``. With ``eta = 0`` the
    value is unchanged by any rescaling of the weights by positive factors
    that leaves the function unchanged (a ReLU network's layer 1 times ``a``
    and layer 2 divided by ``a``): ``w -> S w`` maps the ellipsoid onto itself
    up to ``S``. Coordinates with ``c_i = 0`` are not perturbed.

    The maximization is :func:`rho_sharpness`'s ascent in ``u``, whose
    gradient is ``T grad L``, started at ``u_0 = rho T g / ||T g||`` (ASAM's
    own perturbation ``e_0 = rho T**2 g / ||T g||``), plus ``n_restarts``
    seeded random starts: a lower bound, never negative.

    Parameters
    ----------
    {loss_fn_params}
    rho : float
        Radius of the ball in ``u = e / c``, ``rho >= 0``.
    eta : float, default=0.0
        Added to ``|w|``, ``eta >= 0``; ASAM uses ``0.01`` so that zero weights
        can move, at the price of exact invariance.
    max_iter : int, default=20
        Ascent steps per start (one loss and gradient each).
    n_restarts : int, default=0
        Further ascents from seeded random points of the sphere.
    random_state : int, RandomState instance or None, default=None
        Seeds the random starts.

    Returns
    -------
    sharpness : float
        The largest loss increase found, ``>= 0``.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    >>> loss_fn = lambda: 0.5 * (w**2).sum()
    >>> # max over ||e / |w| || <= 0.1 of w.e + ||e||^2 / 2, as the quadratic's
    >>> # quadratic_model_sharpness(np.eye(2), w, w, measure="adaptive_rho", rho=0.1)
    >>> round(adaptive_rho_sharpness(loss_fn, [w], 0.1, max_iter=50), 6)
    0.420714
    """
    if not eta >= 0:
        raise ValueError(f"eta must be non-negative; got {eta!r}.")
    params = check_params(params)
    scale = flatten_like([p.detach().abs() + eta for p in params], params)
    return _worst_case(loss_fn, params, rho, scale, max_iter, n_restarts, random_state)


@shared_doc(_MOVED)
def average_sharpness(
    loss_fn,
    params,
    rho,
    *,
    adaptive=False,
    eta=0.0,
    n_samples=50,
    random_state=None,
    return_std=False,
):
    r"""Average-case sharpness ``E_e L(w + e) - L(w)``, ``e ~ N(0, rho**2 diag(c**2))``.

    Gaussian perturbations with standard deviation ``rho`` per coordinate
    (``c = 1``), or ``rho (|w_i| + eta)`` when ``adaptive`` (Andriushchenko et
    al., 2023). Estimated by Monte Carlo with ``n_samples`` antithetic pairs
    ``(e, -e)`` drawn from a seeded generator: the pair's mean
    ``(L(w + e) + L(w - e)) / 2 - L(w)`` has no first-order term, so at a
    point with a large gradient the estimate does not carry its noise. For a
    quadratic loss the value is ``rho**2 / 2 * sum_i c_i**2 H_ii``
    (``rho**2 / 2 * tr H`` when ``c = 1``): an unbiased estimate of it.
    The adaptive version with ``eta = 0`` is invariant under the rescalings
    that leave a ReLU network's function unchanged.

    Parameters
    ----------
    {loss_fn_params}
    rho : float
        Standard deviation of the perturbation (relative to ``c``), ``>= 0``.
    adaptive : bool, default=False
        Scale the perturbation elementwise by ``|w| + eta``.
    eta : float, default=0.0
        Added to ``|w|`` when ``adaptive``, ``eta >= 0``.
    n_samples : int, default=50
        Number of antithetic pairs: ``2 * n_samples + 1`` loss evaluations,
        no gradient.
    random_state : int, RandomState instance or None, default=None
        Seeds the perturbations.
    return_std : bool, default=False
        Also return the standard error of the estimate.

    Returns
    -------
    sharpness : float
        The estimate; ``0.0`` when ``rho == 0``.
    std : float
        Its standard error; only if ``return_std`` (``nan`` for one pair).

    Examples
    --------
    {diagonal_loss_example}
    >>> value = average_sharpness(loss_fn, [w], 0.1, n_samples=2000, random_state=0)
    >>> abs(value - 0.1**2 / 2 * 7) < 1e-3  # rho**2 / 2 * trace
    True
    """
    _check_average(rho, eta, n_samples)
    if rho == 0:
        check_params(params)
        return (0.0, 0.0) if return_std else 0.0
    terms = average_terms(
        loss_fn,
        params,
        rho,
        adaptive=adaptive,
        eta=eta,
        n_samples=n_samples,
        random_state=random_state,
    )
    value = float(terms.mean())
    if not return_std:
        return value
    return value, standard_error(terms)


def average_terms(
    loss_fn, params, rho, *, adaptive=False, eta=0.0, n_samples=50, random_state=None
):
    """The ``n_samples`` antithetic terms ``(L(w + e) + L(w - e)) / 2 - L(w)``.

    Their mean is :func:`average_sharpness`; their spread its standard error.
    """
    import torch

    _check_average(rho, eta, n_samples)
    params = check_params(params)
    rng = check_random_state(random_state)
    terms = []
    with _restoring(params) as saved, torch.no_grad():
        flat = flatten_like(saved, params)
        scale = flat.abs() + eta if adaptive else torch.ones_like(flat)
        base = _value_at(loss_fn, params, saved)
        for _ in range(n_samples):
            e = rho * scale * random_vector(rng, flat.numel(), params[0])
            plus = _value_at(loss_fn, params, saved, e)
            minus = _value_at(loss_fn, params, saved, -e)
            terms.append(0.5 * (plus + minus) - base)
    return np.asarray(terms)


def normalized_logits_loss(logits_fn):
    r"""The cross-entropy of a classifier on normalized logits, as a ``loss_fn``.

    Andriushchenko et al. (2023) measure the sharpness of classifiers on the
    loss of the logits centred and scaled to unit norm per sample,

    .. math::

        \tilde z = \frac{z - \bar z\, \mathbf 1}{\lVert z - \bar z\,
        \mathbf 1\rVert}, \qquad
        \tilde L(w) = \frac1n \sum_i \operatorname{CE}(\tilde z_i, y_i),

    so that the measure does not grow with the scale of the logits (which the
    cross-entropy loss keeps pushing up once the data are separated) and
    compares models by the geometry of their decisions rather than their
    confidence. A single logit ``z`` (binary logistic) is read as the two
    logits ``(0, z)``; for two classes the normalized logits only keep the
    sign of ``z``, so the loss is piecewise constant: prefer the measure with
    three classes or more.

    Parameters
    ----------
    logits_fn : callable
        ``logits_fn()`` returns ``(logits, y)``: the classifier's raw outputs
        of shape ``(n, n_classes)`` (or ``(n,)`` / ``(n, 1)`` for one binary
        logit), computed from the current parameters, and the class indices
        ``y`` of shape ``(n,)``.

    Returns
    -------
    loss_fn : callable
        A no-argument callable returning the mean normalized-logit
        cross-entropy as a scalar tensor, for any function of this module.

    Examples
    --------
    >>> import torch
    >>> W = torch.eye(3, dtype=torch.float64, requires_grad=True)
    >>> X, y = torch.eye(3, dtype=torch.float64), torch.tensor([0, 1, 2])
    >>> loss_fn = normalized_logits_loss(lambda: (100 * X @ W, y))
    >>> round(loss_fn().item(), 4)  # the same as for X @ W: the scale is gone
    0.4623
    """
    import torch
    import torch.nn.functional as F

    def loss_fn():
        logits, y = logits_fn()
        if logits.ndim == 1 or logits.shape[1] == 1:  # one binary logit z: (0, z)
            z = logits.reshape(-1, 1)
            logits = torch.cat([torch.zeros_like(z), z], dim=1)
        centred = logits - logits.mean(dim=1, keepdim=True)
        norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
        # all-equal logits have no direction: leave them at zero (loss log C)
        normalized = centred / norms.clamp_min(torch.finfo(centred.dtype).tiny)
        return F.cross_entropy(normalized, y.reshape(-1).long())

    return loss_fn


# --------------------------------------------------------------------------
# the ascent shared by the worst-case measures
# --------------------------------------------------------------------------


def _check_average(rho, eta, n_samples):
    _check_radius(rho)
    if not eta >= 0:
        raise ValueError(f"eta must be non-negative; got {eta!r}.")
    check_count("n_samples", n_samples)


def _check_radius(rho):
    # an infinite radius moves the weights to infinity: the loss there is not
    # a sharpness, and loss_fn would be blamed for the inf it returns
    if not 0 <= rho < np.inf:
        raise ValueError(f"rho must be non-negative and finite; got {rho!r}.")


def _worst_case(loss_fn, params, rho, scale, max_iter, n_restarts, random_state):
    """``max_{||u|| <= rho} L(w + c u) - L(w)`` by ascent from several starts (c=1: None)."""
    import torch

    _check_radius(rho)
    check_count("max_iter", max_iter, minimum=0)
    check_count("n_restarts", n_restarts, minimum=0)
    params = check_params(params)
    if rho == 0:
        return 0.0
    rng = check_random_state(random_state)
    base_loss, grad = loss_and_gradient(loss_fn, params)
    scale = torch.ones_like(grad) if scale is None else scale
    first = scale * grad  # the gradient in u
    starts = [first] if torch.linalg.vector_norm(first).item() > 0 else []
    while len(starts) < 1 + n_restarts:
        # isotropic in u (so a rescaling that keeps c * u keeps the start too),
        # on the coordinates that can move
        starts.append(random_vector(rng, grad.numel(), params[0]) * (scale > 0))
    best = 0.0  # e = 0 is in the ball
    with _restoring(params) as saved:
        for start in starts:
            if torch.linalg.vector_norm(start).item() == 0.0:  # every c_i = 0
                continue
            u = rho * start / torch.linalg.vector_norm(start)
            best = max(best, _ascent(loss_fn, params, saved, scale, u, rho, max_iter) - base_loss)
    return float(best)


def _ascent(loss_fn, params, saved, scale, u, rho, max_iter):
    """Monotone projected gradient ascent of ``L(w + c * u)`` on ``||u|| <= rho``."""
    import torch

    value, grad = _loss_and_gradient_at(loss_fn, params, saved, scale * u)
    step = rho
    for _ in range(max_iter):
        direction = scale * grad  # the gradient in u
        norm = torch.linalg.vector_norm(direction).item()
        if norm == 0.0:  # a stationary point of L: nothing to climb
            break
        candidate = u + step * direction / norm
        candidate = candidate * min(1.0, rho / torch.linalg.vector_norm(candidate).item())
        new_value, new_grad = _loss_and_gradient_at(loss_fn, params, saved, scale * candidate)
        if new_value > value:
            u, value, grad = candidate, new_value, new_grad
        else:  # overshot: try a shorter step from the same point
            step /= 2
    return value


def _loss_and_gradient_at(loss_fn, params, saved, e):
    _move(params, saved, e)
    return loss_and_gradient(loss_fn, params)


def _value_at(loss_fn, params, saved, e=None):
    """``L(w + e)`` (``L(w)`` with ``e`` None, the parameters left where they are)."""
    if e is not None:
        _move(params, saved, e)
    loss = loss_fn()
    check_loss(loss)
    return loss.item()


@contextlib.contextmanager
def _restoring(params):
    """Copies of ``params`` (``w``), copied back bit for bit on leaving, even after an error."""
    import torch

    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved):
                p.copy_(original)


def _move(params, saved, e):
    import torch

    with torch.no_grad():
        for p, original, e_p in zip(params, saved, split_vector(e, params)):
            p.copy_(original + e_p)
