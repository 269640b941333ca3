"""Exact sharpness of a quadratic loss (kernel regression).

For a quadratic loss the second-order expansion is the loss itself::

    L(w + e) - L(w) = g.e + e.H.e / 2,

so every measure is a function of the Hessian's eigenvalues ``lambda_i`` and
the gradient's coordinates ``g_i`` in the Hessian's eigenbasis, and is
computed exactly:

* the top eigenvalue is ``max_i lambda_i``;
* the trace is ``sum_i lambda_i`` (times the number of outputs, see below);
* the rho-sharpness ``max_{||e|| <= rho} g.e + e.H.e / 2`` is a trust-region
  subproblem, solved through its dual (the S-lemma gives strong duality [1]_)::

      max_{||e|| <= rho} g.e + e.H.e / 2
          = min_{mu >= mu_*} D(mu),
      D(mu) = (1/2) sum_i g_i**2 / (mu - lambda_i) + mu rho**2 / 2,
      mu_* = max(max_i lambda_i, 0).

  ``D`` is convex on ``(mu_*, inf)``; its derivative vanishes at the root of
  the secular equation ``sum_i g_i**2 / (mu - lambda_i)**2 = rho**2``, where
  the maximizer is ``e_i = g_i / (mu - lambda_i)`` on the sphere. If there is
  no root above ``mu_*`` (the *hard case*: ``g`` has no component along the top
  eigenvector and ``||e(mu_*)|| <= rho``, or an interior maximum of a concave
  quadratic when every ``lambda_i < 0``), the minimum is ``D(mu_*)``, where the
  sum skips the terms with ``lambda_i = mu_*`` (their ``g_i`` are zero) [2]_.
  Evaluating the value as ``D`` at the root rather than through ``e`` keeps it
  accurate near the hard case: ``D`` is flat at its minimum, so an error in
  ``mu`` enters the value only to second order.

Several outputs share one Hessian: the loss summed over ``k`` outputs has the
Hessian ``I_k (x) H`` (``k`` copies of every eigenvalue) and the gradient
``(g_1, ..., g_k)``; the ball ``||e|| <= rho`` is taken over all outputs
jointly.

References
----------
.. [1] A. Ben-Tal and M. Teboulle, "Hidden convexity in some nonconvex
   quadratically constrained quadratic programming", Math. Programming 72,
   1996; S-lemma: I. Polik and T. Terlaky, SIAM Review 49(3), 2007.
.. [2] J. J. More and D. C. Sorensen, "Computing a trust region step",
   SIAM J. Sci. Stat. Comput. 4(3), 1983; A. R. Conn, N. I. M. Gould and
   Ph. L. Toint, *Trust-Region Methods*, SIAM 2000, ch. 7.
"""

import numbers

import numpy as np
from scipy.optimize import brentq


def quadratic_sharpness(hessian_eigenvalues, gradient, *, measure="top_eigenvalue", rho=None):
    """Exact sharpness of ``L(w + e) = L(w) + g.e + e.H.e / 2``.

    Parameters
    ----------
    hessian_eigenvalues : array-like of shape (m,)
        Eigenvalues of ``H`` (the Hessian of the mean loss), in the basis
        where ``gradient`` is expressed. Eigenvalues of ``H`` missing from the
        list are taken to be eigenvalues whose eigenvectors carry no gradient
        and are not the largest (they change none of the measures but the
        trace).
    gradient : array-like of shape (m,) or (m, n_outputs)
        ``g`` in the eigenbasis of ``H``; the columns are the outputs, which
        share ``H`` (the full Hessian is ``I_{n_outputs} (x) H``).
    measure : {'top_eigenvalue', 'trace', 'rho'}, default='top_eigenvalue'
        ``'top_eigenvalue'``: ``max_i lambda_i``. ``'trace'``:
        ``n_outputs * sum_i lambda_i``. ``'rho'``:
        ``max_{||e|| <= rho} g.e + e.H.e / 2``, the rho-sharpness
        ``max L(w + e) - L(w)`` of Foret et al. (2021), exact for a quadratic
        (trust-region dual, hard case included; see the module docstring).
    rho : float, default=None
        Radius of the ball, ``rho >= 0``; required for ``measure='rho'``.

    Returns
    -------
    value : float
        The sharpness.

    Raises
    ------
    ValueError
        If the measure is unknown or ``None``, the shapes do not match, an
        input is not finite, or ``rho`` is missing or negative for
        ``measure='rho'``.

    Examples
    --------
    >>> from sksam.sharpness import quadratic_sharpness
    >>> quadratic_sharpness([2.0, 1.0], [0.0, 0.0], measure="rho", rho=1.0)
    1.0
    """
    from . import check_measure

    check_measure(measure)
    if measure is None:
        raise ValueError("measure is None: there is no sharpness to compute.")
    eigenvalues, gradient = _check_inputs(hessian_eigenvalues, gradient)
    if measure == "top_eigenvalue":
        return float(eigenvalues.max())
    if measure == "trace":
        return float(gradient.shape[1] * eigenvalues.sum())
    return _rho_sharpness(eigenvalues, gradient, _check_rho(rho))


def _check_inputs(eigenvalues, gradient):
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    gradient = np.asarray(gradient, dtype=np.float64)
    if eigenvalues.ndim != 1 or eigenvalues.size == 0:
        raise ValueError(
            f"hessian_eigenvalues must be a non-empty 1d array, got shape {eigenvalues.shape}."
        )
    if gradient.ndim == 1:
        gradient = gradient[:, None]
    if gradient.ndim != 2 or gradient.shape[0] != eigenvalues.shape[0]:
        raise ValueError(
            f"gradient must have shape ({eigenvalues.shape[0]},) or "
            f"({eigenvalues.shape[0]}, n_outputs) to match hessian_eigenvalues, "
            f"got shape {gradient.shape}."
        )
    if not (np.isfinite(eigenvalues).all() and np.isfinite(gradient).all()):
        raise ValueError("hessian_eigenvalues and gradient must be finite.")
    return eigenvalues, gradient


def _check_rho(rho):
    if rho is None:
        raise ValueError("measure='rho' needs the radius rho.")
    if not isinstance(rho, numbers.Real) or not np.isfinite(rho) or rho < 0:
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}.")
    return float(rho)


def _rho_sharpness(eigenvalues, gradient, rho):
    """``min_{mu >= mu_*} D(mu)``: the trust-region dual, see the module docstring."""
    if rho == 0.0:
        return 0.0
    # k outputs sharing H: k copies of each eigenvalue, one per gradient column.
    lam = np.repeat(eigenvalues, gradient.shape[1])
    g2 = (gradient**2).ravel()
    mu_star = max(lam.max(), 0.0)

    def dual(mu):
        # terms with mu == lambda_i only occur when g_i == 0 (the hard case)
        gap = mu - lam
        keep = gap > 0
        return 0.5 * np.sum(g2[keep] / gap[keep]) + 0.5 * mu * rho**2

    def step_norm(mu):  # ||e(mu)||, e_i = g_i / (mu - lambda_i)
        gap = mu - lam
        if np.any((gap <= 0) & (g2 > 0)):
            return np.inf
        keep = g2 > 0
        return np.sqrt(np.sum(g2[keep] / gap[keep] ** 2))

    if step_norm(mu_star) <= rho:  # hard case, or an interior maximum
        return float(dual(mu_star))
    # ||e(mu)|| decreases from +inf at mu_* to <= rho at mu_* + ||g|| / rho,
    # since there ||e(mu)|| <= ||g|| / (mu - max_i lambda_i) <= rho.
    upper = mu_star + np.sqrt(g2.sum()) / rho
    root = brentq(
        lambda mu: 1.0 / rho - 1.0 / step_norm(mu),  # nearly linear in mu
        mu_star,
        upper,
        xtol=1e-300,
        rtol=4 * np.finfo(float).eps,
        maxiter=500,
    )
    return float(dual(root))
