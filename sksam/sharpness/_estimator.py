"""Sharpness of a fitted estimator, per model or per layer, with its standard error."""

import numpy as np

from ._fitted import read_loss
from ._hvp import standard_error, trace_terms
from ._measure import DEFAULT_OPTIONS, LOGIT_MEASURES, check_measure, torch_sharpness
from ._perturbation import average_terms
from ._quadratic import quadratic_model_sharpness, quadratic_sharpness

#: Measures whose single computation already averages independent probes
#: (Rademacher vectors, Gaussian perturbations): their standard error comes
#: from the spread of the probes. The others are repeated over seeds.
_PROBED = {"trace": "n_probes", "average": "n_samples", "adaptive_average": "n_samples"}


class SharpnessResult:
    """What :func:`estimator_sharpness` measured, with its uncertainty.

    Built by :func:`estimator_sharpness`; the parameters are kept as
    attributes of the same names.

    Parameters
    ----------
    measure : str
        The measure (a name of :data:`~sksam.sharpness.MEASURES`).
    rho : float or None
        The radius used (None for ``'top_eigenvalue'`` and ``'trace'``).
    groups : list of str
        ``['model']``, or the layer (parameter-group) names.
    values : ndarray of shape (n_groups,)
        The sharpness of each group: the measure of the loss as a function
        of that group's parameters, the others held at their fitted values
        (for a layer, the diagonal block of the Hessian).
    stderr : ndarray of shape (n_groups,)
        Standard error of each value: the spread of the probe vectors
        (``'trace'``, the average measures) or of the ``n_seeds`` runs
        (the others) divided by the square root of their number; ``0.0``
        for the exact kernel values.
    samples : list of ndarray
        Per group, the values the mean and its error were taken from.
    exact : bool
        True for the closed forms of the kernel models.
    n_samples : int
        Rows of the data the loss was taken on.
    sample_index : ndarray of int
        Which rows of ``X`` those are (a subsample when ``max_samples`` is
        smaller than the data).

    Examples
    --------
    >>> import numpy as np
    >>> from sksam.sharpness import SharpnessResult
    >>> result = SharpnessResult(
    ...     measure="trace", rho=None, groups=["hidden", "output"],
    ...     values=[3.0, 1.0], stderr=[0.2, 0.1], samples=[[3.0], [1.0]],
    ...     exact=False, n_samples=50, sample_index=np.arange(50))
    >>> result
    SharpnessResult(trace: hidden=3+-0.2, output=1+-0.1; n_samples=50)
    """

    def __init__(
        self, *, measure, rho, groups, values, stderr, samples, exact, n_samples, sample_index
    ):
        self.measure = measure
        self.rho = rho
        self.groups = groups
        self.values = np.asarray(values, dtype=float)
        self.stderr = np.asarray(stderr, dtype=float)
        self.samples = samples
        self.exact = exact
        self.n_samples = n_samples
        self.sample_index = sample_index

    @property
    def value(self):
        """The value of the first group: the whole model's when ``by='model'``."""
        return float(self.values[0])

    def to_frame(self):
        """One row per group: ``group``, ``value``, ``stderr``, ``n_estimates``.

        Returns
        -------
        frame : pandas.DataFrame
            The groups as rows; ``n_estimates`` counts the probes or seeds.
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is a test dependency
            raise ImportError("SharpnessResult.to_frame requires pandas.") from exc
        return pd.DataFrame(
            {
                "group": self.groups,
                "value": self.values,
                "stderr": self.stderr,
                "n_estimates": [len(s) for s in self.samples],
            }
        )

    def __repr__(self):
        rows = ", ".join(
            f"{g}={v:.4g}" + ("" if self.exact else f"+-{e:.2g}")
            for g, v, e in zip(self.groups, self.values, self.stderr)
        )
        return f"SharpnessResult({self.measure}: {rows}; n_samples={self.n_samples})"


def estimator_sharpness(
    estimator,
    X,
    y,
    *,
    measure="top_eigenvalue",
    rho=None,
    by="model",
    n_seeds=3,
    sample_weight=None,
    max_samples=None,
    random_state=None,
    **options,
):
    """Sharpness of a fitted estimator's loss on ``(X, y)``, without refitting.

    The estimator's weights are read once (:func:`fitted_loss`) and never
    changed; a net is evaluated in eval mode (dropout off, batch
    normalization on its running statistics) and its train/eval flags are
    put back after.

    The kernel models' values are **exact**, from the closed forms of their
    quadratic loss (the ones their ``sharpness_`` uses: the measures that are
    not adaptive in the RKHS, or the orthonormal features of the
    feature-space paths; the adaptive ones in the coefficients). The torch
    models' values are the estimates of
    :func:`~sksam.sharpness.torch_sharpness` with the options of
    :data:`~sksam.sharpness.DEFAULT_OPTIONS`: ``'trace'`` and the average
    measures report the standard error of their probes; the others are run
    from ``n_seeds`` seeds and report the mean and its standard error
    (Lanczos and the worst-case ascent give lower bounds that change little
    with the seed when they have converged: a large error says they have
    not).

    Parameters
    ----------
    estimator : fitted estimator
        A fitted sksam estimator, or a Pipeline / TransformedTargetRegressor
        ending with one (``X`` goes through its transformers).
    X : array-like of shape (n_samples, n_features)
        The data of the loss (the training data for the training loss).
    y : array-like
        Its targets.
    measure : str, default='top_eigenvalue'
        A name of :data:`~sksam.sharpness.MEASURES`.
    rho : float, default=None
        The radius of the measures that need one; the estimator's ``rho``
        when None.
    by : {'model', 'layer'}, default='model'
        One value for all the parameters, or one per layer (parameter
        group: ``hidden`` and ``output`` for the two-layer estimators, each
        submodule owning parameters for the nets, one ``coef`` group for the
        kernel models).
    n_seeds : int, default=3
        Runs of the seeded measures (``'top_eigenvalue'``, the worst-case
        measures), for the standard error.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights of the mean loss (not for the nets).
    max_samples : int, default=None
        Take the loss on at most this many rows, drawn by ``random_state``.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsample, the probes and the runs.
    **options
        Overrides of :data:`~sksam.sharpness.DEFAULT_OPTIONS` for the torch
        models (``n_probes``, ``max_iter``, ``tol``, ...).

    Returns
    -------
    result : SharpnessResult
        ``values``, ``stderr``, ``to_frame()`` and the rows used.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.sharpness import estimator_sharpness
    >>> X, y = load_diabetes(return_X_y=True)
    >>> y = (y - y.mean()) / y.std()
    >>> model = SAMKernelRegressor(
    ...     max_iter=20, sharpness="rho", rho=0.1, early_stopping=False
    ... ).fit(X, y)
    >>> result = estimator_sharpness(model, X, y, measure="rho")
    >>> bool(abs(result.value - model.sharpness_) < 1e-10), result.exact
    (True, True)
    """
    check_measure(measure)
    if measure is None:
        raise ValueError("measure is None: there is no sharpness to compute.")
    loss, groups, rng = read_loss(
        estimator, X, y, by, n_seeds, random_state, max_samples, sample_weight
    )
    if rho is None:
        rho = getattr(_final(estimator), "rho", None)
    rho = None if measure in ("top_eigenvalue", "trace") else rho
    if loss.kind == "quadratic":
        value = _quadratic_value(loss.quadratic, measure, rho)
        samples = [np.array([value]) for _ in groups]
        values, errors, exact = [value] * len(groups), [0.0] * len(groups), True
    else:
        samples = [
            _torch_samples(loss, idx, measure, rho, n_seeds, rng, options)
            for idx in groups.values()
        ]
        values = [float(np.mean(s)) for s in samples]
        errors = [standard_error(s) for s in samples]
        exact = False
    return SharpnessResult(
        measure=measure,
        rho=rho,
        groups=list(groups),
        values=values,
        stderr=errors,
        samples=samples,
        exact=exact,
        n_samples=loss.n_samples,
        sample_index=loss.sample_index,
    )


def _final(estimator):
    while hasattr(estimator, "steps") or hasattr(estimator, "regressor_"):
        estimator = estimator[-1] if hasattr(estimator, "steps") else estimator.regressor_
    return estimator


def _quadratic_value(quadratic, measure, rho):
    if measure in LOGIT_MEASURES:
        raise ValueError(
            f"measure={measure!r} is defined on a classifier's logits; a kernel model's "
            "loss is quadratic and has none: use 'adaptive_rho'."
        )
    if measure.startswith("adaptive"):
        hessian, gradient, weights = quadratic.adaptive_terms()
        return quadratic_model_sharpness(hessian, gradient, weights, measure=measure, rho=rho)
    eigenvalues, gradient = quadratic.eigen_terms()
    return quadratic_sharpness(eigenvalues, gradient, measure=measure, rho=rho)


def _torch_samples(loss, indices, measure, rho, n_seeds, rng, options):
    """The estimates the value and its error come from, for the parameters ``indices``."""
    params = [loss.params[i] for i in indices]
    logits_fn = loss.logits_fn if loss.logits_of is not None else None
    settings = {**DEFAULT_OPTIONS[measure], **options}
    seeds = rng.randint(np.iinfo(np.int32).max, size=n_seeds)
    with loss.evaluating():
        if measure in _PROBED:
            return _probe_terms(loss.loss_fn, params, measure, rho, settings, int(seeds[0]))
        return np.array(
            [
                torch_sharpness(
                    loss.loss_fn,
                    params,
                    measure,
                    rho=rho,
                    random_state=int(seed),
                    logits_fn=logits_fn,
                    **settings,
                )
                for seed in seeds
            ]
        )


def _probe_terms(loss_fn, params, measure, rho, settings, seed):
    """The per-probe terms of the trace or of the average-case sharpness."""
    if measure == "trace":
        return trace_terms(loss_fn, params, n_probes=settings["n_probes"], random_state=seed)
    return average_terms(
        loss_fn,
        params,
        rho,
        adaptive=measure == "adaptive_average",
        eta=settings.get("eta", 0.0),
        n_samples=settings["n_samples"],
        random_state=seed,
    )
