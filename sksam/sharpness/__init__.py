"""Sharpness of a training loss: one home for every estimator.

Three measures, all of the **mean** training loss ``L`` (the Hessian of the
summed loss is ``n`` times larger), at the fitted parameters ``w``:

``'top_eigenvalue'``
    The largest (signed) eigenvalue of the Hessian of ``L``; the standard
    meaning of "sharpness" in the SAM literature.
``'trace'``
    The trace of that Hessian.
``'rho'``
    The rho-sharpness ``max_{||e|| <= rho} L(w + e) - L(w)`` of Foret et al.
    (2021), with the estimator's ``rho``.

Two back ends answer them:

* :func:`quadratic_sharpness` is exact for quadratic losses given the Hessian's
  eigenvalues and the gradient in its eigenbasis (kernel regression);
* :func:`top_hessian_eigenvalue`, :func:`hessian_trace` and
  :func:`rho_sharpness` work on any torch loss through Hessian-vector products
  (Lanczos, Hutchinson with Rademacher probes, projected gradient ascent),
  seeded by ``random_state``; :func:`torch_sharpness` dispatches on the measure.

The torch estimators call :func:`measure_sharpness`, which applies one table
of options, :data:`DEFAULT_OPTIONS`, so that a measure has the same precision
in every estimator.
"""

from ._hvp import hessian_trace, top_hessian_eigenvalue
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

__all__ = [
    "DEFAULT_OPTIONS",
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
