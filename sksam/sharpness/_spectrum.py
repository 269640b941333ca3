"""The Hessian's spectrum: top-k eigenvalues and the spectral density.

Both reuse the Lanczos iteration of :mod:`sksam.sharpness._hvp`:

* :func:`top_hessian_eigenvalues` runs it until the ``k`` largest Ritz values
  have converged;
* :func:`hessian_spectrum` is stochastic Lanczos quadrature (Golub and
  Meurant, 2010; Ubaru, Chen and Saad, 2017; the density of PyHessian, Yao
  et al., 2020): from a unit probe ``v``, ``m`` Lanczos steps give the
  tridiagonal ``T = S diag(theta) S^T``, and the nodes ``theta_j`` with the
  weights ``tau_j = S_1j**2`` are the Gauss quadrature of the spectral measure
  ``mu_v = sum_i (u_i . v)**2 delta(lambda_i)``: exact for polynomials of
  degree up to ``2m - 1`` (``v^T H^p v = sum_j tau_j theta_j**p``). For a
  random probe, ``E mu_v`` is the spectral density (each eigenvalue weighted
  ``1 / n``); the average over ``n_probes`` probes estimates it.
  :func:`spectral_density` smooths the nodes with a Gaussian of width
  ``sigma``.

References
----------
.. [1] G. H. Golub and G. Meurant, *Matrices, Moments and Quadrature with
   Applications*, Princeton 2010.
.. [2] S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
.. [3] Z. Yao, A. Gholami, K. Keutzer and M. W. Mahoney, "PyHessian: Neural
   networks through the lens of the Hessian", IEEE Big Data 2020.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._fitted import read_loss
from ._hvp import (
    HessianOperator,
    check_count,
    check_iterations,
    lanczos,
    ritz_values,
    shared_doc,
    tridiagonal_eigh,
)


@shared_doc("not modified")
def top_hessian_eigenvalues(loss_fn, params, k=5, *, max_iter=200, tol=1e-6, random_state=None):
    """The ``k`` largest (signed) eigenvalues of the Hessian of the mean loss.

    Lanczos with full reorthogonalization from one seeded Gaussian start
    (the iteration of :func:`~sksam.sharpness.top_hessian_eigenvalue`), run
    until the residual bounds of the ``k`` largest Ritz values fall below
    ``tol`` times their magnitude. From a single start, Lanczos sees each
    distinct eigenvalue once: an eigenvalue of multiplicity ``r`` is
    returned once, and the next ones follow it.

    Parameters
    ----------
    {loss_fn_params}
    k : int, default=5
        How many eigenvalues.
    max_iter : int, default=200
        Maximum Lanczos steps (Hessian-vector products).
    tol : float, default=1e-6
        Relative tolerance on the residual bounds.
    random_state : int, RandomState instance or None, default=None
        Seeds the start vector.

    Returns
    -------
    eigenvalues : ndarray of shape (min(k, steps),)
        Descending.

    Examples
    --------
    >>> import torch
    >>> w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    >>> h = torch.tensor([1.0, 4.0, 2.0, -3.0], dtype=torch.float64)
    >>> loss_fn = lambda: 0.5 * (h * w**2).sum()
    >>> top_hessian_eigenvalues(loss_fn, [w], k=3, random_state=0).round(6).tolist()
    [4.0, 2.0, 1.0]
    """
    check_count("k", k)
    check_iterations(max_iter, tol)
    hvp = HessianOperator(loss_fn, params)
    start = hvp.probe(check_random_state(random_state))
    alphas, betas = lanczos(hvp, start, max_iter, tol, k=k)
    return ritz_values(alphas, betas, k=k)[0]


@shared_doc("not modified")
def hessian_spectrum(loss_fn, params, *, n_iter=80, n_probes=5, random_state=None):
    """Stochastic Lanczos quadrature of the Hessian's spectral density.

    Parameters
    ----------
    {loss_fn_params}
    n_iter : int, default=80
        Lanczos steps per probe (``m``; fewer when the Krylov space is
        exhausted, as it is after ``n`` steps for ``n`` parameters).
    n_probes : int, default=5
        Independent Rademacher probes.
    random_state : int, RandomState instance or None, default=None
        Seeds the probes.

    Returns
    -------
    nodes : list of ndarray
        Per probe, the Ritz values ``theta_j`` (ascending).
    weights : list of ndarray
        Per probe, the quadrature weights ``tau_j`` (summing to 1).

    See Also
    --------
    spectral_density : The smoothed density from these nodes and weights.

    Examples
    --------
    {diagonal_loss_example}
    >>> nodes, weights = hessian_spectrum(loss_fn, [w], n_probes=1, random_state=0)
    >>> nodes[0].round(6).tolist(), weights[0].round(6).tolist()  # each 1/3: Rademacher
    ([1.0, 2.0, 4.0], [0.333333, 0.333333, 0.333333])
    """
    check_iterations(n_iter, 0.0)
    check_count("n_probes", n_probes)
    hvp = HessianOperator(loss_fn, params)
    rng = check_random_state(random_state)
    nodes, weights = [], []
    for _ in range(n_probes):
        probe = hvp.probe(rng, rademacher=True)
        alphas, betas = lanczos(hvp, probe, n_iter, None)
        theta, S = tridiagonal_eigh(alphas, betas)
        nodes.append(theta)
        weights.append(S[0] ** 2)
    return nodes, weights


def spectral_density(nodes, weights, *, grid=None, sigma=None, n_points=400):
    """The smoothed spectral density of :func:`hessian_spectrum`'s quadrature.

    ``phi(t) = mean over probes of sum_j tau_j N(t; theta_j, sigma**2)``:
    a probability density (it integrates to 1 over the real line).

    Parameters
    ----------
    nodes, weights : list of ndarray
        As returned by :func:`hessian_spectrum` (or exact eigenvalues with
        weights ``1 / n``).
    grid : array-like, default=None
        Where to evaluate; ``n_points`` points spanning the nodes plus
        ``5 sigma`` on each side when None.
    sigma : float, default=None
        Width of the Gaussian; 1% of the nodes' range when None (PyHessian's
        choice is 1e-5 of it, with its grid; too narrow to see on a plot).
    n_points : int, default=400
        Size of the default grid.

    Returns
    -------
    grid : ndarray of shape (n_points,)
        Where the density is evaluated.
    density : ndarray of shape (n_points,)
        Its values.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam.sharpness import spectral_density
    >>> grid, density = spectral_density([np.array([0.0])], [np.array([1.0])],
    ...                                  sigma=1.0, n_points=1001)
    >>> round(float(density.max()), 4)  # a standard normal's peak
    0.3989
    """
    all_nodes = np.concatenate([np.asarray(t, dtype=float) for t in nodes])
    low, high = float(all_nodes.min()), float(all_nodes.max())
    if sigma is None:
        sigma = 0.01 * max(high - low, abs(high), 1e-12)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}.")
    if grid is None:
        grid = np.linspace(low - 5 * sigma, high + 5 * sigma, n_points)
    grid = np.asarray(grid, dtype=float)
    density = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        z = (grid[:, None] - np.asarray(theta)[None, :]) / sigma
        density += np.exp(-0.5 * z**2) @ np.asarray(tau) / (sigma * np.sqrt(2 * np.pi))
    return grid, density / len(nodes)


class SpectrumResult:
    """What :func:`estimator_spectrum` found, per model or per layer.

    Built by :func:`estimator_spectrum`; the fields are kept as attributes
    of the same names.

    Parameters
    ----------
    groups : list of str
        ``['model']`` or the layer names.
    top_eigenvalues : list of ndarray of shape (k,)
        Per group, the mean over seeds of the ``k`` largest eigenvalues.
    top_stderr : list of ndarray of shape (k,)
        Their standard errors over the ``n_seeds`` Lanczos starts (0 when
        exact).
    nodes, weights : list of list of ndarray
        Per group, the quadrature of :func:`hessian_spectrum` (for the
        kernel models: the exact eigenvalues, each of weight ``1 / n``).
    exact : bool
        True for the kernel models (a dense eigendecomposition).
    n_samples : int
        Rows the loss was taken on.
    sample_index : ndarray of int
        Which rows of ``X`` those are.

    Examples
    --------
    >>> import numpy as np
    >>> from sksam.sharpness import SpectrumResult
    >>> result = SpectrumResult(
    ...     groups=["model"], top_eigenvalues=[np.array([2.0, 1.0])],
    ...     top_stderr=[np.zeros(2)], nodes=[[np.array([1.0, 2.0])]],
    ...     weights=[[np.array([0.5, 0.5])]], exact=True, n_samples=10,
    ...     sample_index=np.arange(10))
    >>> grid, density = result.density("model", sigma=0.1)
    """

    def __init__(
        self,
        *,
        groups,
        top_eigenvalues,
        top_stderr,
        nodes,
        weights,
        exact,
        n_samples,
        sample_index,
    ):
        self.groups = groups
        self.top_eigenvalues = top_eigenvalues
        self.top_stderr = top_stderr
        self.nodes = nodes
        self.weights = weights
        self.exact = exact
        self.n_samples = n_samples
        self.sample_index = sample_index

    def density(self, group=0, **kwargs):
        """:func:`spectral_density` of one group.

        Parameters
        ----------
        group : int or str, default=0
            The group's index or name.
        **kwargs : dict
            Passed to :func:`spectral_density` (``grid``, ``sigma``,
            ``n_points``).

        Returns
        -------
        grid : ndarray
            Where the density is evaluated.
        density : ndarray
            Its values.
        """
        index = self.groups.index(group) if isinstance(group, str) else group
        return spectral_density(self.nodes[index], self.weights[index], **kwargs)


def estimator_spectrum(
    estimator,
    X,
    y,
    *,
    k=5,
    by="model",
    n_iter=80,
    n_probes=5,
    n_seeds=3,
    max_samples=None,
    random_state=None,
):
    """Top eigenvalues and spectral density of a fitted estimator's Hessian.

    The loss is read by :func:`~sksam.sharpness.fitted_loss`, as in
    :func:`~sksam.sharpness.estimator_sharpness`. Kernel models: exact, from
    the eigendecomposition of ``S^1/2 K S^1/2`` (the Hessian in the RKHS on
    the data's span; every other direction has eigenvalue 0), or of the
    features' second moment for the feature-space paths. Torch models:
    :func:`top_hessian_eigenvalues` from ``n_seeds`` starts (mean and
    standard error) and :func:`hessian_spectrum` from ``n_probes`` probes,
    in eval mode.

    Parameters
    ----------
    estimator : fitted estimator
        A fitted sksam estimator (or a pipeline ending with one).
    X, y : array-like
        The data of the loss.
    k : int, default=5
        How many top eigenvalues.
    by : {'model', 'layer'}, default='model'
        The whole Hessian, or each layer's diagonal block.
    n_iter : int, default=80
        Lanczos steps per probe of the density.
    n_probes : int, default=5
        Probes of the density.
    n_seeds : int, default=3
        Starts of the top-eigenvalue Lanczos runs.
    max_samples : int, default=None
        Take the loss on at most this many rows.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsample, the starts and the probes.

    Returns
    -------
    result : SpectrumResult
        Top eigenvalues with their errors, and the density's quadrature.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sksam import SAMKernelRegressor
    >>> from sksam.sharpness import estimator_spectrum
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = SAMKernelRegressor(max_iter=5).fit(X, y / 100)
    >>> spectrum = estimator_spectrum(model, X, y / 100, k=2)
    >>> spectrum.exact, spectrum.top_eigenvalues[0].round(3).tolist()
    (True, [0.995, 0.002])
    """
    loss, groups, rng = read_loss(estimator, X, y, by, n_seeds, random_state, max_samples)
    fields = {"top_eigenvalues": [], "top_stderr": [], "nodes": [], "weights": []}
    for indices in groups.values():
        if loss.kind == "quadratic":
            eigenvalues = np.sort(loss.quadratic.eigen_terms()[0])
            top = eigenvalues[::-1][:k]
            parts = (
                top,
                np.zeros_like(top),
                [eigenvalues],
                [np.full(len(eigenvalues), 1 / len(eigenvalues))],
            )
        else:
            parts = _torch_spectrum(loss, indices, k, n_iter, n_probes, n_seeds, rng)
        for name, part in zip(fields, parts):
            fields[name].append(part)
    return SpectrumResult(
        groups=list(groups),
        exact=loss.kind == "quadratic",
        n_samples=loss.n_samples,
        sample_index=loss.sample_index,
        **fields,
    )


def _torch_spectrum(loss, indices, k, n_iter, n_probes, n_seeds, rng):
    params = [loss.params[i] for i in indices]
    seeds = rng.randint(np.iinfo(np.int32).max, size=n_seeds + 1)
    with loss.evaluating():
        runs = [
            top_hessian_eigenvalues(loss.loss_fn, params, k, random_state=int(seed))
            for seed in seeds[:-1]
        ]
        nodes, weights = hessian_spectrum(
            loss.loss_fn, params, n_iter=n_iter, n_probes=n_probes, random_state=int(seeds[-1])
        )
    size = min(len(run) for run in runs)
    runs = np.array([run[:size] for run in runs])
    stderr = runs.std(axis=0, ddof=1) / np.sqrt(n_seeds) if n_seeds > 1 else np.full(size, np.nan)
    return runs.mean(axis=0), stderr, nodes, weights
