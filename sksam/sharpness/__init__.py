"""Sharpness of a training loss: one home for every estimator.

Every measure is of the **mean** training loss ``L`` (the Hessian of the
summed loss is ``n`` times larger), at the fitted parameters ``w``, and is
named in :data:`MEASURES`:

``'top_eigenvalue'``
    The largest (signed) eigenvalue of the Hessian of ``L``; the standard
    meaning of "sharpness" in the SAM literature.
``'trace'``
    The trace of that Hessian.
``'rho'``
    The rho-sharpness ``max_{||e|| <= rho} L(w + e) - L(w)`` of Foret et al.
    (2021), with the estimator's ``rho``.
``'adaptive_rho'``
    The adaptive worst case ``max_{||e / |w| || <= rho} L(w + e) - L(w)``
    (Kwon et al., 2021; Andriushchenko et al., 2023): invariant under the
    rescalings of the weights that leave the function unchanged.
``'average'``, ``'adaptive_average'``
    The average case ``E L(w + e) - L(w)`` for Gaussian ``e`` of standard
    deviation ``rho`` per coordinate, or ``rho |w_i|`` (adaptive).
``'adaptive_rho_logitnorm'``
    ``'adaptive_rho'`` of the cross-entropy of the normalized logits
    (Andriushchenko et al., 2023); classifiers only (:data:`LOGIT_MEASURES`).

Two back ends answer them:

* :func:`quadratic_sharpness` and :func:`quadratic_model_sharpness` are exact
  for quadratic losses (kernel regression, linear models), from the Hessian
  or its eigendecomposition, the gradient and the weights;
* for any torch loss, :func:`top_hessian_eigenvalue` and
  :func:`hessian_trace` use Hessian-vector products (Lanczos, Hutchinson),
  :func:`rho_sharpness` and :func:`adaptive_rho_sharpness` projected gradient
  ascent, :func:`average_sharpness` Monte Carlo, all seeded by
  ``random_state``; :func:`torch_sharpness` dispatches on the name.

A **fitted** estimator is read by :func:`fitted_loss` (its loss as a function
of copies of its weights, once, for every use below):
:func:`estimator_sharpness` gives any measure per model or per layer with its
standard error, :func:`estimator_spectrum` the top eigenvalues and the
spectral density (:func:`top_hessian_eigenvalues`, :func:`hessian_spectrum`,
stochastic Lanczos quadrature), and :func:`filter_normalized_direction`,
:func:`loss_along` and :func:`interpolation_losses` the loss landscapes that
:mod:`sksam.inspection` draws.

The torch estimators call :func:`measure_sharpness`, which applies one table
of options, :data:`DEFAULT_OPTIONS`, so that a measure has the same precision
in every estimator. The user guide's page "Sharpness measures" says what each
measures, what it is invariant to, what it costs, and which to use when.
"""

from ._estimator import SharpnessResult, estimator_sharpness
from ._fitted import FittedLoss, fitted_loss
from ._hvp import hessian_trace, top_hessian_eigenvalue
from ._landscape import filter_normalized_direction, interpolation_losses, loss_along
from ._measure import (
    DEFAULT_OPTIONS,
    LOGIT_MEASURES,
    MEASURES,
    check_measure,
    measure_sharpness,
    torch_sharpness,
)
from ._perturbation import (
    adaptive_rho_sharpness,
    average_sharpness,
    normalized_logits_loss,
    rho_sharpness,
)
from ._quadratic import quadratic_model_sharpness, quadratic_sharpness
from ._spectrum import (
    SpectrumResult,
    estimator_spectrum,
    hessian_spectrum,
    spectral_density,
    top_hessian_eigenvalues,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "FittedLoss",
    "SharpnessResult",
    "SpectrumResult",
    "estimator_sharpness",
    "estimator_spectrum",
    "filter_normalized_direction",
    "fitted_loss",
    "interpolation_losses",
    "loss_along",
    "hessian_spectrum",
    "spectral_density",
    "top_hessian_eigenvalues",
    "LOGIT_MEASURES",
    "MEASURES",
    "adaptive_rho_sharpness",
    "average_sharpness",
    "check_measure",
    "hessian_trace",
    "measure_sharpness",
    "normalized_logits_loss",
    "quadratic_model_sharpness",
    "quadratic_sharpness",
    "rho_sharpness",
    "top_hessian_eigenvalue",
    "torch_sharpness",
]
