"""Synthetic regression problems with a known noiseless target.

The paper's claims are about the *prediction error* ``E[(f_hat(x) - f*(x))^2]``
against the noiseless target ``f*``, not about the error on noisy labels. So
the generators can return, besides the inputs ``X`` and the noisy labels
``y = f*(X) + noise`` to train on, the noiseless ``f*(X)`` to score against:
:func:`make_teacher_student` and :func:`make_kernel_regression` return ``(X, y)``
like every scikit-learn ``make_*`` and add ``y_true`` with ``return_y_true=True`` (as
:func:`~sklearn.datasets.make_regression` adds ``coef`` with ``coef=True``). Draw the training and
the test points in one call (they must share the same teacher or target
function) and split them afterwards::

    X, y, y_true = make_teacher_student(n_samples=1200, return_y_true=True, random_state=0)
    X_train, y_train = X[:200], y[:200]
    X_test, f_test = X[200:], y_true[200:]      # score predictions against f_test

Both generators use only numpy and are deterministic given ``random_state``.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ._two_layer_model import ACTIVATIONS, NUMPY_ACTIVATIONS

__all__ = ["make_teacher_student", "make_kernel_regression"]


def _check_arguments(noise, return_y_true, **counts):
    """Raise on the first bad argument the two generators share (``counts``: the sizes)."""
    for name, value in counts.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not (isinstance(noise, numbers.Real) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number; got {noise!r}.")
    if not isinstance(return_y_true, (bool, np.bool_)):
        raise ValueError(f"return_y_true must be a bool; got {return_y_true!r}.")


def make_teacher_student(
    n_samples=200,
    n_features=10,
    n_teacher=4,
    *,
    activation="relu",
    noise=0.5,
    n_outputs=1,
    return_y_true=False,
    random_state=None,
):
    r"""Regression data labelled by a random one-hidden-layer teacher network.

    The inputs are standard Gaussian, :math:`x \sim N(0, I_d)`, and the
    teacher is a sum of ``n_teacher`` units with unit-norm weights,

    .. math::

        f^*(x) = \sum_{j=1}^{m} \sigma(w_j^{*\top} x), \qquad
        w_j^* \sim \text{uniform on the unit sphere of } \mathbb{R}^d,

    so each pre-activation :math:`w_j^{*\top} x` is standard normal whatever
    ``n_features`` is. Output weights are all one (a "committee machine", the
    usual teacher of teacher-student studies, e.g. Goldt et al. 2019), with one
    independent teacher per output when ``n_outputs > 1``. The labels are
    :math:`y = f^*(x) + \varepsilon`, :math:`\varepsilon \sim N(0,
    \text{noise}^2)`.

    A student network much wider than the teacher (say 200 units for 4) can
    fit the noise; this is the setting where the paper finds SAM's prediction
    error clearly below gradient descent's.

    Parameters
    ----------
    n_samples : int, default=200
        Number of points (draw training and test points together).
    n_features : int, default=10
        Input dimension ``d``.
    n_teacher : int, default=4
        Number of hidden units ``m`` of the teacher.
    activation : {'relu', 'tanh', 'logistic', 'quadratic', 'identity'}, default='relu'
        The teacher's activation :math:`\sigma`.
    noise : float, default=0.5
        Standard deviation of the Gaussian label noise.
    n_outputs : int, default=1
        Number of targets, each from its own teacher.
    return_y_true : bool, default=False
        Also return the noiseless teacher outputs ``y_true``.
    random_state : int, RandomState instance or None, default=None
        Seeds the teacher, the inputs and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The inputs.
    y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        The noisy labels, ``y_true`` plus noise.
    y_true : ndarray of the shape of ``y``
        The noiseless teacher outputs :math:`f^*(X)`, to measure the
        prediction error ``mean((predict(X) - y_true)**2)``. Only returned
        if ``return_y_true`` is True.

    References
    ----------
    .. [1] S. Goldt, M. Advani, A. M. Saxe, F. Krzakala, L. Zdeborová,
       "Dynamics of stochastic gradient descent for two-layer neural networks
       in the teacher-student setup", NeurIPS 2019.
    .. [2] K. Behdin, R. Mazumder, "On Statistical Properties of
       Sharpness-Aware Minimization: Provable Guarantees", arXiv:2302.11836.

    Examples
    --------
    >>> from sksam.datasets import make_teacher_student
    >>> X, y = make_teacher_student(n_samples=5, n_features=3, random_state=0)
    >>> X.shape, y.shape
    ((5, 3), (5,))
    >>> X, y, y_true = make_teacher_student(n_samples=5, return_y_true=True, random_state=0)
    >>> bool(abs(y - y_true).max() > 0)  # y_true is noiseless
    True
    """
    _check_arguments(
        noise,
        return_y_true,
        n_samples=n_samples,
        n_features=n_features,
        n_teacher=n_teacher,
        n_outputs=n_outputs,
    )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {activation!r}; expected one of "
            f"{', '.join(map(repr, ACTIVATIONS))}."
        )
    rng = check_random_state(random_state)
    teachers = rng.standard_normal((n_outputs, n_features, n_teacher))
    teachers /= np.linalg.norm(teachers, axis=1, keepdims=True)
    X = rng.standard_normal((n_samples, n_features))
    sigma = NUMPY_ACTIVATIONS[activation]
    y_true = np.stack([sigma(X @ w).sum(axis=1) for w in teachers], axis=1)
    y = y_true + noise * rng.standard_normal(y_true.shape)
    if n_outputs == 1:
        y, y_true = y.ravel(), y_true.ravel()
    return (X, y, y_true) if return_y_true else (X, y)


def make_kernel_regression(
    n_samples=400,
    n_features=5,
    n_centers=20,
    *,
    length_scale=1.0,
    noise=0.5,
    return_y_true=False,
    random_state=None,
):
    r"""Regression data whose target lies in the RBF kernel's function space.

    The target is a finite combination of Gaussian bumps,

    .. math::

        f^*(x) = \sum_{m=1}^{M} \beta_m
        \exp\!\Big(-\frac{\lVert x - c_m\rVert^2}{2\ell^2}\Big),
        \qquad \beta_m \sim N(0, 1),

    with ``M = n_centers`` centres :math:`c_m` drawn like the inputs,
    :math:`x, c_m \sim N(0, I_d)`. So :math:`f^*` belongs to the reproducing
    kernel Hilbert space of the RBF kernel with ``gamma = 1 / (2 ell^2)``
    (:func:`sklearn.metrics.pairwise.rbf_kernel`): the well-specified setting
    of the paper's kernel-regression analysis. The labels are
    :math:`y = f^*(x) + \varepsilon`, :math:`\varepsilon \sim N(0,
    \text{noise}^2)`.

    Parameters
    ----------
    n_samples : int, default=400
        Number of points (draw training and test points together).
    n_features : int, default=5
        Input dimension ``d``.
    n_centers : int, default=20
        Number of bumps ``M``.
    length_scale : float, default=1.0
        Width :math:`\ell` of the bumps.
    noise : float, default=0.5
        Standard deviation of the Gaussian label noise.
    return_y_true : bool, default=False
        Also return the noiseless target ``y_true``.
    random_state : int, RandomState instance or None, default=None
        Seeds the target, the inputs and the noise.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The inputs.
    y : ndarray of shape (n_samples,)
        The noisy labels, ``y_true`` plus noise.
    y_true : ndarray of shape (n_samples,)
        The noiseless target :math:`f^*(X)`. Only returned if
        ``return_y_true`` is True.

    Examples
    --------
    >>> from sksam.datasets import make_kernel_regression
    >>> X, y = make_kernel_regression(n_samples=4, n_features=2, random_state=0)
    >>> X.shape, y.shape
    ((4, 2), (4,))
    >>> X, y, y_true = make_kernel_regression(n_samples=4, return_y_true=True, random_state=0)
    >>> y_true.shape
    (4,)
    """
    _check_arguments(
        noise, return_y_true, n_samples=n_samples, n_features=n_features, n_centers=n_centers
    )
    if not (isinstance(length_scale, numbers.Real) and length_scale > 0):
        raise ValueError(f"length_scale must be a positive number; got {length_scale!r}.")
    rng = check_random_state(random_state)
    centers = rng.standard_normal((n_centers, n_features))
    beta = rng.standard_normal(n_centers)
    X = rng.standard_normal((n_samples, n_features))
    sq_dist = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    y_true = np.exp(-sq_dist / (2.0 * length_scale**2)) @ beta
    y = y_true + noise * rng.standard_normal(n_samples)
    return (X, y, y_true) if return_y_true else (X, y)
