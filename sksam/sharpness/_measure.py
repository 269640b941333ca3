"""The one sharpness call of the torch estimators, with one table of options."""

from ._hvp import hessian_trace, rho_sharpness, top_hessian_eigenvalue

#: Options of each measure, the same in every estimator so that the same
#: measure has the same precision everywhere:
#:
#: - ``top_eigenvalue``: Lanczos stops when its residual bound is ``1e-4`` of
#:   the eigenvalue, which leaves the eigenvalue accurate to about the square
#:   of that (over the relative spectral gap), after a few dozen
#:   Hessian-vector products (at most ``max_iter``);
#: - ``trace``: 100 Rademacher probes, a relative standard error of about
#:   ``sqrt(2 / 100)`` of the off-diagonal Hessian mass;
#: - ``rho``: 20 steps of projected gradient ascent from SAM's own first-order
#:   perturbation.
DEFAULT_OPTIONS = {
    "top_eigenvalue": {"tol": 1e-4, "max_iter": 100},
    "trace": {"n_probes": 100},
    "rho": {"max_iter": 20},
}


def measure_sharpness(measure, loss_fn, params, *, rho, random_state, module=None, **options):
    """Sharpness ``measure`` of the mean loss ``loss_fn()`` at ``params``, or None.

    The entry point every torch estimator calls at the end of ``fit``:
    :func:`~sksam.sharpness.torch_sharpness` with the options of
    :data:`DEFAULT_OPTIONS` for ``measure`` (``options`` overrides them).

    Parameters
    ----------
    measure : {'top_eigenvalue', 'trace', 'rho'} or None
        The measure; None returns None (the estimator's ``sharpness=None``).
    loss_fn : callable
        ``loss_fn()`` returns the mean training loss as a scalar tensor,
        computed from the current ``params``.
    params : list of torch.Tensor
        Parameters with ``requires_grad=True``; left as they were.
    rho : float
        The estimator's radius, used by ``measure='rho'``.
    random_state : int, RandomState instance or None
        Seeds the start vector, probes or start direction.
    module : torch.nn.Module, optional
        The module ``loss_fn`` runs: evaluated in eval mode, then restored.
    **options
        Overrides of :data:`DEFAULT_OPTIONS` (``tol``, ``max_iter``,
        ``n_probes``, ``method``).

    Returns
    -------
    value : float or None
        The sharpness; None when ``measure`` is None.

    Examples
    --------
    >>> import torch
    >>> from sksam.sharpness import measure_sharpness
    >>> w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> loss_fn = lambda: (w**2).sum() + w[0] * w[1]  # Hessian [[2, 1], [1, 2]]
    >>> round(measure_sharpness("top_eigenvalue", loss_fn, [w], rho=0.05, random_state=0), 6)
    3.0
    """
    from . import check_measure
    from ._hvp import _eval_mode

    check_measure(measure)
    if measure is None:
        return None
    options = {**DEFAULT_OPTIONS[measure], **options}
    with _eval_mode(module):
        if measure == "top_eigenvalue":
            value = top_hessian_eigenvalue(loss_fn, params, random_state=random_state, **options)
        elif measure == "trace":
            value = hessian_trace(loss_fn, params, random_state=random_state, **options)
        else:
            value = rho_sharpness(loss_fn, params, rho, random_state=random_state, **options)
    return float(value)
