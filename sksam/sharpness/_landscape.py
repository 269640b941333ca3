"""Loss landscapes: the loss along lines and planes through a fitted model's weights.

Directions follow Li, Xu, Taylor, Studer and Goldstein, "Visualizing the loss
landscape of neural nets", NeurIPS 2018: a Gaussian direction ``d`` is
**filter-normalized**, each filter ``d_i`` (the weights into one output unit:
a row of a ``Linear`` weight, an output channel of a ``Conv``) rescaled to the
norm of the same filter of the weights, ``d_i <- d_i / ||d_i|| * ||w_i||``, so
that a step of 1 along ``d`` changes every unit by as much as its own weights
and the pictures of two networks with differently scaled weights compare.
Biases and the parameters of normalization layers have no filters; the
paper's default (its code's ``ignore='biasbn'``) is a **zero** direction for
them: they stay at their fitted values. With ``ignore=None`` each such
parameter is normalized as one filter, ``d <- d / ||d|| * ||w||``. It is never
normalized element by element: a per-element rule makes ``|d_j| = |w_j|``, a
direction equal to the weights up to signs (the bias bug of the
``loss-landscapes`` package).

The loss on a grid of points is evaluated through the model's functional
form (``torch.func.functional_call``: no copy of the model per point,
optionally ``torch.func.vmap`` over a batch of points), in eval mode, on
copies of the weights: the estimator is left exactly as it was. The kernel
models' loss is quadratic in their coefficients, so it is evaluated in
closed form along any directions:
``L(w + sum_k a_k d_k) = [1, a]^T G [1, a] / 2`` with the Gram matrix ``G`` of
the residual ``F w - Y`` and the output changes ``F d_k``.
"""

import numpy as np
from sklearn.utils import check_random_state

#: Values of ``ignore``.
IGNORE = ("biasbn", None)


def filter_normalized_direction(loss, *, ignore="biasbn", random_state=None):
    """One random filter-normalized direction for the weights of ``loss``.

    Parameters
    ----------
    loss : FittedLoss
        From :func:`~sksam.sharpness.fitted_loss`.
    ignore : {'biasbn', None}, default='biasbn'
        ``'biasbn'``: zero direction for biases and normalization-layer
        parameters (Li et al., 2018); None: each of them normalized as one
        filter.
    random_state : int, RandomState instance or None, default=None
        Seeds the Gaussian draw.

    Returns
    -------
    direction : list of torch.Tensor
        One tensor per parameter of ``loss.params``.

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> from sksam.sharpness import filter_normalized_direction, fitted_loss
    >>> X, y = make_teacher_student(n_samples=50, random_state=0)
    >>> model = SAMTwoLayerRegressor(n_hidden=4, max_iter=5, tol=None,
    ...                              random_state=0).fit(X, y)
    >>> loss = fitted_loss(model, X, y)
    >>> W, b = loss.params[:2]
    >>> d_W, d_b = filter_normalized_direction(loss, random_state=0)[:2]
    >>> bool(((d_W.norm(dim=0) - W.detach().norm(dim=0)).abs() < 1e-9).all())
    True
    >>> d_b.abs().max().item()  # a bias does not move (Li et al.'s default)
    0.0
    """
    import torch

    if ignore not in IGNORE:
        raise ValueError(f"ignore must be 'biasbn' or None; got {ignore!r}.")
    rng = check_random_state(random_state)
    direction = []
    for weight, axis in zip(loss.params, loss.filter_axis):
        weight = weight.detach()
        # drawn for every parameter, so that ignore= changes no other tensor's draw
        d = torch.as_tensor(rng.standard_normal(tuple(weight.shape)), dtype=weight.dtype)
        d = d.to(weight.device)
        if axis is None:
            d = torch.zeros_like(d) if ignore == "biasbn" else _rescale(d, weight, None)
        else:
            d = _rescale(d, weight, axis)
        direction.append(d)
    return direction


def _rescale(d, weight, axis):
    """``d`` with each filter (slice along ``axis``; all of it when None) of ``weight``'s norm."""
    import torch

    if axis is None:
        norm_d, norm_w = torch.linalg.vector_norm(d), torch.linalg.vector_norm(weight)
        return d * (norm_w / norm_d.clamp_min(torch.finfo(d.dtype).tiny))
    moved_d, moved_w = d.movedim(axis, 0), weight.movedim(axis, 0)
    dims = tuple(range(1, moved_d.ndim))
    norm_d = torch.linalg.vector_norm(moved_d, dim=dims, keepdim=True)
    norm_w = torch.linalg.vector_norm(moved_w, dim=dims, keepdim=True)
    scaled = moved_d * (norm_w / norm_d.clamp_min(torch.finfo(d.dtype).tiny))
    return scaled.movedim(0, axis)


def loss_along(loss, directions, points, *, origin=None, batch_size=64, vectorize=False, verbose=0):
    """The loss at ``origin + sum_k points[:, k] * directions[k]``, for each point.

    Parameters
    ----------
    loss : FittedLoss
        From :func:`~sksam.sharpness.fitted_loss`.
    directions : list of list of torch.Tensor
        ``K`` directions, each shaped like ``loss.params``.
    points : array-like of shape (n_points, K)
        Coordinates along the directions.
    origin : list of torch.Tensor, default=None
        Where the directions start; the fitted weights when None.
    batch_size : int, default=64
        Points whose weights are built together (memory: that many copies of
        the weights; the progress advances by batch).
    vectorize : bool, default=False
        Evaluate a batch in one call through ``torch.func.vmap`` rather
        than point after point. On a CPU it is slower (an MLP on digits:
        4.1 s against 2.2 s for 625 points, one thread; batched matrix
        products with a batch of weights beat the plain ones only on wide
        hardware); a model that ``vmap`` cannot run falls back to the loop.
    verbose : int, default=0
        Show progress (tqdm if installed, else a line per batch).

    Returns
    -------
    losses : ndarray of shape (n_points,)
        The loss at each point.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.sharpness import filter_normalized_direction, fitted_loss, loss_along
    >>> X, y = load_diabetes(return_X_y=True)
    >>> loss = fitted_loss(SAMKernelRegressor(max_iter=5).fit(X, y / 100), X, y / 100)
    >>> d = filter_normalized_direction(loss, random_state=0)
    >>> values = loss_along(loss, [d], [[-1.0], [0.0], [1.0]])
    >>> bool(values[1] == values.min())  # the fit is the lowest of the three
    True
    """
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if points.shape[1] != len(directions):
        raise ValueError(
            f"points have {points.shape[1]} coordinates for {len(directions)} directions."
        )
    origin = [p.detach() for p in loss.params] if origin is None else origin
    if loss.kind == "quadratic":
        return _quadratic_along(loss, origin, directions, points)
    return _batched_along(loss, origin, directions, points, batch_size, vectorize, verbose)


def _quadratic_along(loss, origin, directions, points):
    """Closed form: ``[1, a]^T G [1, a] / 2`` with ``G`` the Gram matrix of the residuals."""
    q = loss.quadratic
    beta = origin[0].detach().cpu().numpy()
    columns = [q.F @ beta - q.Y] + [q.F @ d[0].detach().cpu().numpy() for d in directions]
    stacked = np.stack([c.ravel() for c in columns])  # (K + 1, n * outputs)
    shares = np.repeat(q.shares, q.Y.shape[1])
    gram = (stacked * shares) @ stacked.T
    ones = np.hstack([np.ones((len(points), 1)), points])
    return 0.5 * np.einsum("pi,ij,pj->p", ones, gram, ones)


def _batched_along(loss, origin, directions, points, batch_size, vectorize, verbose):
    import torch

    steps = torch.as_tensor(points, dtype=origin[0].dtype, device=origin[0].device)
    values = []
    batches = list(range(0, len(points), batch_size))
    with torch.no_grad(), loss.evaluating():
        batched = _vmapped(loss) if vectorize else _looped(loss)
        for start in _progress(batches, verbose):
            chunk = steps[start : start + batch_size]
            tensors = [
                w.unsqueeze(0)
                + sum(
                    chunk[:, k].reshape(-1, *([1] * w.ndim)) * d[i].unsqueeze(0)
                    for k, d in enumerate(directions)
                )
                for i, w in enumerate(origin)
            ]
            values.append(batched(tensors).reshape(-1).double().cpu().numpy())
    return np.concatenate(values)


def _looped(loss):
    """``loss_of`` point after point over a leading batch axis (views, no copies)."""
    import torch

    def batched(tensors):
        size = tensors[0].shape[0]
        return torch.stack([loss.loss_of([t[i] for t in tensors]) for i in range(size)])

    return batched


def _vmapped(loss):
    """``loss_of`` over a leading batch axis: ``vmap``, or a loop when the model refuses it."""
    from torch.func import vmap

    mapped, looped = vmap(loss.loss_of), _looped(loss)

    def batched(tensors):
        try:
            return mapped(tensors)
        except (RuntimeError, NotImplementedError, ValueError):
            # a module that vmap cannot run (data-dependent control flow,
            # in-place updates): one point at a time
            return looped(tensors)

    return batched


def _progress(items, verbose):
    if not verbose:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _printing(items)
    return tqdm(items, desc="loss landscape", unit="batch")


def _printing(items):
    for i, item in enumerate(items, start=1):
        yield item
        print(f"loss landscape: batch {i}/{len(items)}", flush=True)


def check_grid(resolution, span):
    """The coordinates ``linspace(low, high, resolution)`` of a landscape axis."""
    if not (isinstance(resolution, (int, np.integer)) and resolution >= 2):
        raise ValueError(f"resolution must be an integer >= 2; got {resolution!r}.")
    low, high = (-span, span) if np.ndim(span) == 0 else span
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            f"span must be a positive number or an increasing pair (low, high); got {span!r}."
        )
    return np.linspace(low, high, resolution)


def interpolation_losses(start, end, alphas, *, verbose=0):
    """The loss along the line from ``start``'s weights to ``end``'s.

    ``L((1 - a) w_start + a w_end)`` for each ``a`` of ``alphas`` (``0``:
    ``start``, ``1``: ``end``), evaluated with ``start``'s model and data. The
    two must have the same parameters (the same architecture). For the
    kernel models the line is taken in function space,
    ``f_a = (1 - a) f_start + a f_end``, the same line when their
    coefficients share coordinates, and exact (closed form) in every case.

    Parameters
    ----------
    start, end : FittedLoss
        From :func:`~sksam.sharpness.fitted_loss` on the same data.
    alphas : array-like of shape (n_points,)
        Positions along the line.
    verbose : int, default=0
        Show progress.

    Returns
    -------
    losses : ndarray of shape (n_points,)
        The loss at each position.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.sharpness import fitted_loss, interpolation_losses
    >>> X, y = load_diabetes(return_X_y=True)
    >>> gd, sam = (SAMKernelRegressor(solver=s, max_iter=5).fit(X, y / 100)
    ...            for s in ("gd", "sam"))
    >>> values = interpolation_losses(fitted_loss(gd, X, y / 100),
    ...                               fitted_loss(sam, X, y / 100), [0.0, 1.0])
    >>> bool(abs(values[0] - 0.5 * ((gd.predict(X) - y / 100) ** 2).mean()) < 1e-12)
    True
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if start.kind == "quadratic" or end.kind == "quadratic":
        return _quadratic_interpolation(start, end, alphas)
    shapes = [(n, tuple(p.shape)) for n, p in zip(start.names, start.params)]
    if shapes != [(n, tuple(p.shape)) for n, p in zip(end.names, end.params)]:
        raise ValueError(
            "The two estimators have different parameters (names or shapes): an "
            "interpolation needs the same architecture."
        )
    origin = [p.detach() for p in start.params]
    direction = [[e.detach() - s for e, s in zip(end.params, origin)]]
    return _batched_along(start, origin, direction, alphas[:, None], 64, False, verbose)


def _quadratic_interpolation(start, end, alphas):
    if start.kind != end.kind:
        raise ValueError("An interpolation needs two models of the same kind (kernel or torch).")
    a, b = start.quadratic, end.quadratic
    if a.Y.shape != b.Y.shape or not np.allclose(a.Y, b.Y):
        raise ValueError("The two kernel models' losses must be taken on the same data.")
    f_start, f_end = a.F @ a.beta, b.F @ b.beta
    shares = a.shares[:, None]
    r0, delta = f_start - a.Y, f_end - f_start  # f_a - Y = r0 + a * delta
    c0, c1, c2 = (np.sum(shares * u * v) for u, v in ((r0, r0), (r0, delta), (delta, delta)))
    return 0.5 * (c0 + 2 * alphas * c1 + alphas**2 * c2)
