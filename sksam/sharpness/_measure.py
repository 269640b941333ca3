"""The measures by name: one table for the estimators, one dispatch for torch.

Each measure is one entry of :data:`_TORCH`, a function of
``(loss_fn, params, rho, random_state, options)``; :data:`MEASURES` is read
from it, so a new entry (with its options in :data:`DEFAULT_OPTIONS`, and its
quadratic form in :func:`~sksam.sharpness.quadratic_sharpness`) makes every
estimator's ``sharpness`` parameter accept the name with no edit there.
"""

from ._hvp import eval_mode, hessian_trace, shared_doc, top_hessian_eigenvalue
from ._perturbation import (
    adaptive_rho_sharpness,
    average_sharpness,
    normalized_logits_loss,
    rho_sharpness,
)


def _adaptive_average(loss_fn, params, rho, **options):
    return average_sharpness(loss_fn, params, rho, adaptive=True, **options)


#: name -> (function of ``(loss_fn, params, rho, **options)``, needs ``rho``)
_TORCH = {
    "top_eigenvalue": (lambda f, p, rho, **o: top_hessian_eigenvalue(f, p, **o), False),
    "trace": (lambda f, p, rho, **o: hessian_trace(f, p, **o), False),
    "rho": (rho_sharpness, True),
    "adaptive_rho": (adaptive_rho_sharpness, True),
    "average": (average_sharpness, True),
    "adaptive_average": (_adaptive_average, True),
    # adaptive worst case of the normalized-logit cross-entropy: needs logits_fn
    "adaptive_rho_logitnorm": (adaptive_rho_sharpness, True),
}

#: Names accepted by the ``sharpness`` parameter of every estimator (or ``None``).
MEASURES = tuple(_TORCH)

#: The measures defined for classifiers only: they are computed on the
#: normalized logits, which the caller hands over as ``logits_fn``.
LOGIT_MEASURES = ("adaptive_rho_logitnorm",)

#: Options of each measure, the same in every estimator so that the same
#: measure has the same precision everywhere:
#:
#: - ``top_eigenvalue``: Lanczos stops when its residual bound is ``1e-4`` of
#:   the eigenvalue, which leaves the eigenvalue accurate to about the square
#:   of that (over the relative spectral gap), after a few dozen
#:   Hessian-vector products (at most ``max_iter``);
#: - ``trace``: 100 Rademacher probes, a relative standard error of about
#:   ``sqrt(2 / 100)`` of the off-diagonal Hessian mass;
#: - ``rho``, ``adaptive_rho``, ``adaptive_rho_logitnorm``: 20 steps of
#:   monotone projected gradient ascent from SAM's (ASAM's) own first-order
#:   perturbation, and 20 more from one seeded random start (43 gradients);
#:   ``eta = 0``, the definition of Andriushchenko et al. (2023);
#: - ``average``, ``adaptive_average``: 50 antithetic pairs (101 forward
#:   passes, no gradient).
DEFAULT_OPTIONS = {
    "top_eigenvalue": {"tol": 1e-4, "max_iter": 100},
    "trace": {"n_probes": 100},
    "rho": {"max_iter": 20, "n_restarts": 1},
    "adaptive_rho": {"max_iter": 20, "n_restarts": 1, "eta": 0.0},
    "average": {"n_samples": 50},
    "adaptive_average": {"n_samples": 50, "eta": 0.0},
    "adaptive_rho_logitnorm": {"max_iter": 20, "n_restarts": 1, "eta": 0.0},
}


def check_measure(measure, *, classifier=None):
    """Raise a ``ValueError`` naming ``measure`` unless it is known or ``None``.

    Parameters
    ----------
    measure : str or None
        A name of :data:`MEASURES`, or None.
    classifier : bool, optional
        False for a regressor, which refuses the measures of
        :data:`LOGIT_MEASURES` (they need a classifier's logits); None checks
        the name only.

    Examples
    --------
    >>> from sksam.sharpness import check_measure
    >>> check_measure("trace")
    >>> check_measure("max")
    Traceback (most recent call last):
    ...
    ValueError: Unknown sharpness measure 'max'; expected one of ... or None.
    """
    if measure is not None and measure not in MEASURES:
        raise ValueError(
            f"Unknown sharpness measure {measure!r}; expected one of "
            f"{', '.join(map(repr, MEASURES))} or None."
        )
    if classifier is False and measure in LOGIT_MEASURES:
        raise ValueError(
            f"sharpness={measure!r} is measured on a classifier's logits; "
            "a regressor has none: choose another measure."
        )


@shared_doc("left exactly as they were")
def torch_sharpness(
    loss_fn, params, measure, *, rho=None, module=None, random_state=None, logits_fn=None, **options
):
    """Sharpness ``measure`` of the mean loss ``loss_fn()`` at ``params``.

    Dispatches by name to :func:`~sksam.sharpness.top_hessian_eigenvalue`
    (``'top_eigenvalue'``), :func:`~sksam.sharpness.hessian_trace`
    (``'trace'``), :func:`~sksam.sharpness.rho_sharpness` (``'rho'``),
    :func:`~sksam.sharpness.adaptive_rho_sharpness` (``'adaptive_rho'``;
    ``'adaptive_rho_logitnorm'`` on the loss of
    :func:`~sksam.sharpness.normalized_logits_loss`) or
    :func:`~sksam.sharpness.average_sharpness` (``'average'``,
    ``'adaptive_average'``), with those functions' defaults.
    If ``module`` is given, it (and all its submodules) is switched to **eval
    mode** for the computation, so dropout is off and batch normalization uses
    its running statistics (and does not update them), and each submodule's
    own train/eval flag is restored afterwards, even after an error.

    Parameters
    ----------
    {loss_fn_params}
    measure : str
        A name of :data:`MEASURES`, see :mod:`sksam.sharpness`.
    rho : float, optional
        Radius (or standard deviation) of the perturbation; required by every
        measure but ``'top_eigenvalue'`` and ``'trace'``.
    module : torch.nn.Module, optional
        The module ``loss_fn`` runs, for the eval-mode switch.
    random_state : int, RandomState instance or None, default=None
        Seeds the start vector, probes, starts or perturbations.
    logits_fn : callable, optional
        For the measures of :data:`LOGIT_MEASURES` (and required by them):
        ``logits_fn()`` returns ``(logits, y)``, the classifier's raw outputs
        from the current ``params`` and the class indices; ``loss_fn`` is not
        used then. See :func:`~sksam.sharpness.normalized_logits_loss`.
    **options
        Passed to the function of the measure (``max_iter``, ``tol``,
        ``method``, ``n_probes``, ``n_restarts``, ``eta``, ``n_samples``).

    Returns
    -------
    value : float
        The sharpness.

    Examples
    --------
    {diagonal_loss_example}
    >>> torch_sharpness(loss_fn, [w], "trace", random_state=0)
    7.0
    """
    check_measure(measure)
    if measure is None:
        raise ValueError("measure is None: there is no sharpness to compute.")
    function, needs_rho = _TORCH[measure]
    if needs_rho and rho is None:
        raise ValueError(f"measure={measure!r} needs the radius rho; got rho=None.")
    if measure in LOGIT_MEASURES:
        if logits_fn is None:
            raise ValueError(
                f"measure={measure!r} needs logits_fn, which returns a classifier's "
                "logits and the class indices."
            )
        loss_fn = normalized_logits_loss(logits_fn)
    with eval_mode(module):
        return float(function(loss_fn, params, rho, random_state=random_state, **options))


@shared_doc("left exactly as they were")
def measure_sharpness(
    measure, loss_fn, params, *, rho, random_state, module=None, logits_fn=None, **options
):
    """Sharpness ``measure`` of the mean loss ``loss_fn()`` at ``params``, or None.

    The entry point every torch estimator calls at the end of ``fit``:
    :func:`~sksam.sharpness.torch_sharpness` with the options of
    :data:`DEFAULT_OPTIONS` for ``measure`` (``options`` overrides them).

    Parameters
    ----------
    measure : str or None
        A name of :data:`MEASURES`; None returns None (the estimator's
        ``sharpness=None``).
    {loss_fn_params}
    rho : float
        The estimator's radius, used by every measure but
        ``'top_eigenvalue'`` and ``'trace'``.
    random_state : int, RandomState instance or None
        Seeds the start vector, probes, starts or perturbations.
    module : torch.nn.Module, optional
        The module ``loss_fn`` runs: evaluated in eval mode, then restored.
    logits_fn : callable, optional
        Classifiers pass it (regressors cannot): ``logits_fn()`` returns
        ``(logits, y)``, the raw outputs of the module on the training data
        from the current ``params`` and the class indices; required by the
        measures of :data:`LOGIT_MEASURES`, unused by the others.
    **options
        Overrides of :data:`DEFAULT_OPTIONS` (``tol``, ``max_iter``,
        ``n_probes``, ``method``, ``n_restarts``, ``eta``, ``n_samples``).

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
    check_measure(measure)
    if measure is None:
        return None
    options = {**DEFAULT_OPTIONS[measure], **options}
    return torch_sharpness(
        loss_fn,
        params,
        measure,
        rho=rho,
        module=module,
        random_state=random_state,
        logits_fn=logits_fn,
        **options,
    )
