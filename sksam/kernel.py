"""Kernel regression trained by gradient descent or SAM: :class:`SAMKernelRegressor`."""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import PAIRWISE_KERNEL_FUNCTIONS, pairwise_kernels
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ._base import (
    COMMON_CONSTRAINTS,
    StoppingRule,
    check_device,
    diagnose_loss_curve,
    numeric_target,
    print_progress,
    record_history,
    validation_split,
    warn_diverged,
    warn_not_converged,
)
from ._kernel_features import (
    KernelSpec,
    LinearMap,
    Moments,
    NystroemMap,
    block_rows,
    check_memory,
    dask_moments,
    is_dask,
    make_ops,
    stream_moments,
)
from ._kernel_path import (
    Diverged,
    dual_dynamics,
    fit_krylov_path,
    primal_dynamics,
    replay,
    run_steps,
    top_eigenvalue,
)
from .sharpness import quadratic_sharpness


class SAMKernelRegressor(RegressorMixin, BaseEstimator):
    r"""Kernel regression trained by gradient descent (GD) or SAM, from zero.

    The model :math:`f(x) = \langle \theta, \phi(x) \rangle` in the kernel's
    feature space is trained on the (weighted) mean squared loss
    :math:`L(\theta) = \frac{1}{2n} \sum_i w_i \|f(x_i) - y_i\|^2`,
    :math:`n = \sum_i w_i`, by ``max_iter`` full-batch steps from
    :math:`\theta = 0`; the number of steps (early stopping) is the
    regularization. With :math:`g = \nabla L(\theta)`, one step is

    - ``'gd'``: :math:`\theta \leftarrow \theta - lr\, g`;
    - ``'sam'``: :math:`\theta \leftarrow \theta - lr\, \nabla L(\theta + e)`,
      :math:`e = \rho\, g / \|g\|` (Foret et al.), the norm being the RKHS
      norm (all outputs jointly);
    - ``'usam'``: the same with :math:`e = \rho\, g` (unnormalized SAM).

    Three parametrizations of :math:`\theta` give the same path where they
    overlap:

    - exact (default): :math:`f = \sum_i \alpha_i k(x_i, \cdot)` over all the
      training rows; needs the ``n x n`` kernel matrix;
    - Nystroem (``n_components=M`` or ``centers=``): :math:`f` restricted to
      the span of :math:`k(c_j, \cdot)` for ``M`` centres, with the
      orthonormal features :math:`\phi(x) = L^{-1} k(C, x)`,
      :math:`K_{CC} = L L^\top` (pivoted Cholesky); memory
      :math:`O(M^2)` whatever ``n``, and ``X`` may be a dask array;
    - primal linear (``kernel='linear'`` with fewer features than samples):
      :math:`\phi(x) = x`, ``coef_`` exposed.

    The whole path is computed in a small Krylov basis, in :math:`O(m)` per
    step, so the curve of every step (:meth:`staged_predict`) comes with the
    fit. The user guide explains the method, the choice of
    ``learning_rate='auto'`` and the accuracy of the path.

    Parameters
    ----------
    solver : {'sam', 'gd', 'usam'}, default='sam'
        The update rule. ``rho=0`` makes ``'sam'`` and ``'usam'`` take exactly
        GD's steps.
    rho : float, default=0.05
        Radius of the SAM perturbation, in the RKHS norm. Also the radius of
        ``sharpness='rho'`` (for every solver).
    kernel : str or callable, default='rbf'
        As in :class:`sklearn.kernel_ridge.KernelRidge`: a name from
        ``sklearn.metrics.pairwise.PAIRWISE_KERNEL_FUNCTIONS``,
        ``'precomputed'`` (``X`` is then the kernel matrix, square at fit
        time, ``(n_test, n_train)`` at predict time), or a callable of two
        rows returning a float. It must give a symmetric positive
        semi-definite matrix for gradient descent to converge.
    gamma : float, default=None
        Parameter of the RBF, laplacian, polynomial, exponential chi2 and
        sigmoid kernels (see ``sklearn.metrics.pairwise``); ``None`` means
        each kernel's default (``1 / n_features`` for most).
    degree : float, default=3
        Degree of the polynomial kernel.
    coef0 : float, default=1
        Zero coefficient of the polynomial and sigmoid kernels.
    kernel_params : dict, default=None
        Keyword arguments of a callable kernel.
    learning_rate : float or 'auto', default='auto'
        Step size ``lr`` on :math:`\theta`. With :math:`s_{max}` the top
        eigenvalue of the Hessian of :math:`L`, ``'auto'`` is
        ``1 / s_max`` (``'gd'``, ``'sam'``) or ``1 / (s_max (1 + rho s_max))``
        (``'usam'``): GD and USAM then decrease the loss monotonically and
        SAM stays within ``rho`` of GD along every eigenvector. A float must
        be below twice that bound, else the iteration diverges and ``fit``
        raises a ``ValueError``.
    max_iter : int, default=1000
        Number of steps.
    tol : float or None, default=None
        ``None``: run exactly ``max_iter`` steps. A float: stop as
        :class:`sklearn.neural_network.MLPRegressor` does, once the training
        loss (or, with ``early_stopping``, the validation :math:`R^2`) has not
        improved by at least ``tol`` for ``n_iter_no_change`` consecutive steps
        (plus one); a :class:`~sklearn.exceptions.ConvergenceWarning` is raised
        if that does not happen within ``max_iter`` steps.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, train on the
        rest, and return the iterate with the best validation :math:`R^2`
        (along the whole run when ``tol=None``). Both parts need at least 2
        samples, else ``fit`` raises a ``ValueError``.
    validation_fraction : float, default=0.1
        Held-out fraction for ``early_stopping``.
    n_iter_no_change : int, default=10
        Steps without improvement before stopping (with a float ``tol``).
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        Measure stored in ``sharpness_`` (see :mod:`sksam.sharpness`), of the
        training loss at the fitted weights. The Hessian is constant
        (:math:`K/n` in the exact path, :math:`A = \Phi^\top W \Phi / n` in
        the others), so ``'top_eigenvalue'`` and ``'trace'`` are exact and do
        not depend on the solver; ``'rho'``,
        :math:`\max_{\|e\| \le \rho} L(\theta + e) - L(\theta)`, is computed
        exactly too (a trust-region problem). ``None`` skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split of ``early_stopping`` and the choice of the
        Nystroem centres; the fit is otherwise deterministic.
    verbose : int, default=0
        Print the loss of every step and the size of the Krylov basis.
    n_components : int, default=None
        Number ``M`` of Nystroem centres, drawn without replacement from the
        training rows. ``None``: the exact path (or the primal one for a
        linear kernel).
    centers : array-like of shape (M, n_features), default=None
        The Nystroem centres themselves (instead of drawing them).
    device : str or torch.device, default=None
        Run the kernel blocks and the sums :math:`A, b` of the Nystroem or
        primal path in torch on this device (``'cpu'``, ``'cuda'``);
        ``None``: numpy.
    dtype : {'float64', 'float32'}, default=None
        Precision of the torch blocks (sums are accumulated in float64);
        ``'float32'`` agrees with float64 to about ``1e-5`` relative on the
        predictions. ``None`` is float64.

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_train,) or (n_train, n_outputs)
        The fitted :math:`\alpha` (exact path only).
    coef_ : ndarray of shape (n_features,) or (n_outputs, n_features)
        The fitted weights (primal linear path only).
    X_fit_ : {ndarray, sparse matrix} of shape (n_train, n_features)
        Training data (the kernel matrix if ``kernel='precomputed'``), without
        the validation part of ``early_stopping`` (exact path only).
    centers_ : ndarray of shape (`n_components_`, n_features)
        The Nystroem centres kept (their column indices if
        ``kernel='precomputed'``).
    n_components_ : int
        Dimension of the Nystroem or primal feature space. Centres that the
        others represent to working precision are dropped, so this can be
        less than ``M``.
    n_iter_ : int
        Number of iterations run (over all ``warm_start`` calls).
    loss_curve_ : list of float
        Mean training loss at each iteration, evaluated at the weights the
        iteration started from (with mini-batches, the mean of the batch
        losses over the epoch).
    best_loss_ : float
        ``min(loss_curve_)``.
    validation_scores_ : list of float or None
        :math:`R^2` (accuracy for classifiers) on the validation split at each
        iteration when ``early_stopping`` is True, else None.
    best_validation_score_ : float or None
        ``max(validation_scores_)``: the score of the weights kept when
        ``early_stopping`` is True, else None.
    learning_rate_ : float
        The step size used (resolved from ``'auto'``).
    sharpness_ : float or None
        The ``sharpness`` measure of the fitted model.
    krylov_size_ : int
        Number of columns of the Krylov basis the path was computed in.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    SAMKernelRegressorCV : Chooses the solver, ``rho`` and the number of steps
        by cross-validation, from one path per fold.
    sklearn.kernel_ridge.KernelRidge : Regularization by a ridge penalty
        instead of by early stopping.

    Notes
    -----
    The SAM and GD paths differ: along the iterations SAM has a lower bias
    and a slightly higher variance, so with a well-chosen number of steps its
    prediction error is at most GD's (Behdin & Mazumder, 2023).

    The fitted model keeps the Ritz vectors (``n_train x m`` in the exact
    path, ``M x m`` with Nystroem, ``m`` about ``2 sqrt(max_iter)``) for
    :meth:`staged_predict`. The exact path raises a ``ValueError`` before
    allocating a kernel matrix that would not fit in memory;
    :meth:`predict` works in blocks of rows.

    References
    ----------
    .. [1] K. Behdin and R. Mazumder, "On Statistical Properties of
       Sharpness-Aware Minimization: Provable Guarantees", arXiv:2302.11836.
    .. [2] P. Foret, A. Kleiner, H. Mobahi and B. Neyshabur,
       "Sharpness-Aware Minimization for Efficiently Improving
       Generalization", ICLR 2021.
    .. [3] M. Andriushchenko and N. Flammarion, "Towards Understanding
       Sharpness-Aware Minimization", ICML 2022.
    .. [4] A. Rudi, L. Carratino and L. Rosasco, "FALKON: An Optimal Large
       Scale Kernel Method", NeurIPS 2017 (Nystroem centres at scale).

    Examples
    --------
    >>> import numpy as np
    >>> from sksam import SAMKernelRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-3, 3, size=(100, 1))
    >>> y = np.sin(X).ravel() + 0.1 * rng.randn(100)
    >>> model = SAMKernelRegressor(solver="sam", rho=0.05, max_iter=200).fit(X, y)
    >>> model.n_iter_
    200
    >>> curve = [np.mean((p - y) ** 2) for p in model.staged_predict(X)]
    >>> big = SAMKernelRegressor(n_components=50, random_state=0, max_iter=200).fit(X, y)
    >>> big.n_components_ <= 50  # centres the others already span are dropped
    True
    """

    _parameter_constraints: dict = {
        **COMMON_CONSTRAINTS,
        # the kernel path has no ASAM: its per-weight scaling has no meaning in the RKHS
        "solver": [StrOptions({"gd", "sam", "usam"})],
        "kernel": [
            StrOptions(set(PAIRWISE_KERNEL_FUNCTIONS) | {"precomputed"}),
            callable,
        ],
        "gamma": [Interval(Real, 0, None, closed="left"), None],
        "degree": [Interval(Real, 0, None, closed="left")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "kernel_params": [dict, None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "centers": ["array-like", None],
        "device": "no_validation",  # checked in fit, with the machine's devices
        "dtype": "no_validation",
    }

    def __init__(
        self,
        solver="sam",
        rho=0.05,
        *,
        kernel="rbf",
        gamma=None,
        degree=3,
        coef0=1,
        kernel_params=None,
        learning_rate="auto",
        max_iter=1000,
        tol=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        sharpness="top_eigenvalue",
        random_state=None,
        verbose=0,
        n_components=None,
        centers=None,
        device=None,
        dtype=None,
    ):
        self.solver = solver
        self.rho = rho
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.sharpness = sharpness
        self.random_state = random_state
        self.verbose = verbose
        self.n_components = n_components
        self.centers = centers
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.pairwise = self.kernel == "precomputed"
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ kernel

    def _get_kernel(self, X, Y=None):
        if callable(self.kernel):
            params = self.kernel_params or {}
        else:
            params = {"gamma": self.gamma, "degree": self.degree, "coef0": self.coef0}
            # gamma=None: each kernel's own default (chi2's is 1, not None)
            params = {key: value for key, value in params.items() if value is not None}
        K = pairwise_kernels(X, Y, metric=self.kernel, filter_params=True, **params)
        K = K.toarray() if sparse.issparse(K) else np.asarray(K, dtype=np.float64)
        if not np.isfinite(K).all():
            raise ValueError(f"The kernel {self.kernel!r} returned NaN or infinite values.")
        return K

    def _train_kernel(self, X):
        """Kernel matrix of the training data, checked to be symmetric."""
        K = self._get_kernel(X)
        if self.kernel == "precomputed" or callable(self.kernel):
            # the named kernels are symmetric by construction; these may not be
            scale = max(np.abs(K).max(), np.finfo(float).tiny)
            if not np.allclose(K, K.T, rtol=0, atol=1e-10 * scale):
                raise ValueError(
                    "The kernel matrix is not symmetric; gradient descent on kernel "
                    "regression needs a symmetric positive semi-definite kernel."
                )
            K = (K + K.T) / 2
        return K

    def _split(self, n):
        """Training and validation indices for ``early_stopping``."""
        if not self.early_stopping:
            return np.arange(n), None
        return validation_split(n, self.validation_fraction, check_random_state(self.random_state))

    def _mode(self, n_features, n_train):
        """'nystroem', 'linear' (primal) or 'exact' (dual, n x n kernel)."""
        if self.n_components is not None or self.centers is not None:
            if self.kernel == "precomputed" and self.centers is not None:
                raise ValueError(
                    "With kernel='precomputed' the centres are training samples drawn "
                    "by n_components; centers cannot be given."
                )
            return "nystroem"
        if self.kernel == "linear" and n_features < n_train:
            return "linear"
        return "exact"

    def _ops(self, mode):
        dtype = _check_dtype(self.dtype)
        if (mode == "exact" or self.kernel == "precomputed") and (
            self.device is not None or dtype == "float32"
        ):
            raise ValueError(
                f"device={self.device!r} and dtype={self.dtype!r} apply to the feature-space "
                "path; set n_components (Nystroem) or use kernel='linear' with fewer "
                "features than samples."
            )
        return make_ops(None if self.device is None else check_device(self.device), dtype)

    # --------------------------------------------------------------- fitting

    def _resolve_learning_rate(self, s_max):
        """The step size: 'auto', or the user's after the stability check.

        ``s_max`` is the top eigenvalue of the Hessian of the training loss;
        the derivations are in the user guide.
        """
        rho = self.rho if self.solver == "usam" else 0.0
        curvature = s_max * (1.0 + rho * s_max)  # the largest filter eigenvalue
        if curvature <= 0:  # K == 0 (or negative definite): nothing to learn
            return 1.0 if self.learning_rate == "auto" else self.learning_rate
        if self.learning_rate == "auto":
            return 1.0 / curvature
        if self.learning_rate * curvature >= 2.0:
            raise ValueError(
                f"learning_rate={self.learning_rate!r} makes solver {self.solver!r} "
                f"diverge: the iteration is stable only for learning_rate < "
                f"{2.0 / curvature:.6g} (2 / s_max{' / (1 + rho s_max)' if rho else ''}, "
                f"s_max = {s_max:.6g}, the top eigenvalue of the Hessian of the training "
                "loss). Use learning_rate='auto'."
            )
        return float(self.learning_rate)

    def _check_kernel_scale(self, lam_max, X):
        """Refuse a kernel too small for float64 (it underflowed, or soon will)."""
        if lam_max >= _SMALLEST_KERNEL_SCALE:
            return
        x_scale = None
        if self.kernel != "precomputed" and not callable(self.kernel) and not is_dask(X):
            values = X.data if sparse.issparse(X) else X
            x_scale = float(np.abs(values).max(initial=0.0))
        if lam_max <= 0 and not x_scale:
            return  # a zero kernel on zero data: nothing to learn
        scale = "" if x_scale is None else f" on features of magnitude up to {x_scale:.3g}"
        raise ValueError(
            f"The kernel {self.kernel!r}{scale} is too small for float64: the largest "
            f"eigenvalue of its matrix is {lam_max:.3g} (below "
            f"{_SMALLEST_KERNEL_SCALE:.0e}), so its values underflow. Standardize X "
            "(e.g. sklearn.preprocessing.StandardScaler) or rescale the kernel."
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Run ``max_iter`` steps of the solver from ``f = 0``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Training data, or the kernel matrix (n_samples, n_samples) if
            ``kernel='precomputed'``. A dask array is read chunk by chunk
            (``n_components`` or the primal linear path only).
        y : array-like or dask array of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the mean loss
            :math:`\\sum_i w_i \\|f(x_i) - y_i\\|^2 / (2 \\sum_i w_i)`; integer
            weights are equivalent to repeated rows.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        with _transaction(self):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        if is_dask(X) or is_dask(y):
            X, y = _check_dask(self, X, y)
        else:
            X, y = validate_data(
                self,
                X,
                y,
                accept_sparse=("csr", "csc"),
                multi_output=True,
                y_numeric=True,
                dtype=np.float64,
            )
        n = X.shape[0]
        Y = y.reshape(n, -1)
        if not is_dask(Y):  # numeric strings are converted, other strings named
            Y = numeric_target(Y, type(self).__name__)
        # the path runs on y / 2^k (exact in floating point), so that no square
        # of y overflows or underflows; coefficients and losses are scaled back
        self._y_scale = _power_of_two_scale(Y, self.rho if self.solver == "sam" else 0.0)
        Y = Y / self._y_scale
        sw = _check_sample_weight(sample_weight, np.empty((n, 0)), ensure_non_negative=True)
        for name in ("dual_coef_", "coef_", "X_fit_", "centers_", "n_components_"):
            if hasattr(self, name):  # from an earlier fit in another parametrization
                delattr(self, name)
        train, val = self._split(n)
        if not sw[train].sum() > 0 or (val is not None and not sw[val].sum() > 0):
            raise ValueError("The sample weights of the training (or validation) part sum to 0.")
        self._fit_mode = mode = self._mode(X.shape[1], len(train))
        ops = self._ops(mode)
        if mode == "exact":
            if is_dask(X):
                raise ValueError(
                    "A dask array needs the feature-space path: set n_components "
                    "(or use kernel='linear' with fewer features than samples)."
                )
            self._fit_exact(X, Y, sw, train, val)
        else:
            self._fit_features(X, Y, sw, train, val, mode, ops)
        self._coef = self._coef * self._y_scale
        self._check_finite()
        self._warn_if_diverged()
        if self.verbose:
            scores = self.validation_scores_ or [None] * len(self.loss_curve_)
            for iteration, (loss, score) in enumerate(zip(self.loss_curve_, scores), start=1):
                print_progress(iteration, loss, score)
        coef = self._basis @ self._coef
        if mode == "linear":
            self.coef_ = coef.T[0] if y.ndim == 1 else coef.T
        elif mode == "exact":
            self.dual_coef_ = coef.ravel() if y.ndim == 1 else coef
        self._one_output = y.ndim == 1
        return self

    def _check_finite(self):
        """Refuse a fit whose losses, weights or sharpness are not finite."""
        if not np.all(np.isfinite(self.loss_curve_)):
            raise ValueError(
                f"The training loss overflows float64: y has values of magnitude about "
                f"{self._y_scale:.3g} in magnitude, whose squares exceed the largest "
                "float. Standardize y (e.g. sklearn.compose.TransformedTargetRegressor "
                "with a StandardScaler) or divide it by a constant."
            )
        if not (np.all(np.isfinite(self._basis)) and np.all(np.isfinite(self._coef))):
            raise ValueError(
                "The fitted coefficients are not finite; standardize X and y "
                "(StandardScaler) or lower rho."
            )
        if self.sharpness_ is not None and not np.isfinite(self.sharpness_):
            raise ValueError(
                f"The sharpness ({self.sharpness!r}) of the fitted model is not finite "
                f"({self.sharpness_}); standardize X and y or lower rho."
            )

    def _warn_if_diverged(self):
        """Warn when the training loss rose: SAM's radius was too large for the kernel.

        ``learning_rate='auto'`` keeps GD and USAM monotone, but ``rho`` is a
        radius in the RKHS norm: a kernel with large values (a polynomial of
        high degree) or one that is not positive semi-definite (Nystroem
        features hide it) lets SAM's loss end far above its start.
        """
        cause = diagnose_loss_curve(self.loss_curve_)
        if cause is not None:
            warn_diverged(
                type(self).__name__,
                cause,
                f"Lower rho (now {self.rho:g}; it is a radius in the kernel's RKHS "
                "norm, so a kernel with large values needs a smaller one) or check "
                "that the kernel is positive semi-definite.",
            )

    # exact path: the n x n kernel matrix

    def _fit_exact(self, X, Y, sw, train, val):
        n_train, n_val = len(train), 0 if val is None else len(val)
        # K, one temporary of pairwise_kernels, the weighted copy, the validation rows
        check_memory(
            8 * n_train * (3 * n_train + n_val),
            f"The exact kernel path on {n_train} samples (an {n_train} x {n_train} matrix)",
            "Set n_components (e.g. n_components=2000) to fit a Nystroem model in a "
            "streaming pass, whose memory does not grow with n_samples.",
        )
        if self.kernel == "precomputed":
            if X.shape[0] != X.shape[1]:
                raise ValueError(
                    "With kernel='precomputed', X must be the square kernel matrix of "
                    f"the training data at fit time, got shape {X.shape}."
                )
            K = self._train_kernel(X[train][:, train])
            K_val = None if val is None else self._get_kernel(X[val][:, train], X[train])
        else:
            K = self._train_kernel(X[train])
            K_val = None if val is None else self._get_kernel(X[val], X[train])
        # with a precomputed kernel and a validation split, predict keeps only
        # the columns of the training part
        self._precomputed_columns = (
            train if self.kernel == "precomputed" and val is not None else None
        )
        self.X_fit_ = X[train]
        # weights: gamma = W^{-1/2} alpha follows the unweighted rule on
        # W^{1/2} K W^{1/2} and W^{1/2} y, with n the sum of the weights
        s = np.sqrt(sw[train])
        K = s[:, None] * K * s[None, :]
        n = float(sw[train].sum())
        lam_max = top_eigenvalue(K)
        self._check_kernel_scale(lam_max, X)
        self._lambda_max = lam_max
        lr = self._resolve_learning_rate(lam_max / n)
        # validation predictions K_val alpha = (K_val W^{1/2}) V a
        projector = _RowProjector(None if K_val is None else K_val * s[None, :])

        def make_score(path):
            if K_val is None:
                return None
            P = projector(path)
            return lambda a: _r2(P @ a, Y[val], sw[val])

        self._fit_krylov(
            K,
            s[:, None] * Y[train],
            scale=abs(lam_max),
            lr=lr,
            make_dynamics=lambda path: dual_dynamics(path.theta, path.z, n),
            make_score=make_score,
        )
        self._basis = s[:, None] * self._path.V  # alpha = W^{1/2} V a
        self.sharpness_ = self._exact_sharpness(K, n)

    # feature-space path: A and b in one streaming pass

    def _fit_features(self, X, Y, sw, train, val, mode, ops):
        n = X.shape[0]
        if mode == "linear":
            width = X.shape[1]
        elif self.centers is not None:
            width = len(self.centers)
        else:
            width = min(self.n_components, len(train))
        weights = [np.where(_mask(n, train), sw, 0.0)]
        if val is not None:
            weights.append(np.where(_mask(n, val), sw, 0.0))
        # K_CC and its eigenvectors, A (train, validation) and their products, two blocks
        check_memory(
            8 * ((3 + 2 * len(weights)) * width**2 + 2 * block_rows(width + X.shape[1]) * width),
            f"The feature-space path with {width} features",
            "Use a smaller n_components.",
        )
        if mode == "nystroem" and self.kernel == "precomputed":
            # the centres are columns of the precomputed kernel
            idx = self._center_indices(train)
            feature_map = NystroemMap(_PrecomputedSpec(), idx.astype(np.float64), X[idx][:, idx])
            self.centers_ = idx[feature_map.kept]
        elif mode == "nystroem":
            feature_map = NystroemMap(self._kernel_spec(), self._centers(X, train))
            self.centers_ = feature_map.centers
        else:
            feature_map = LinearMap(X.shape[1])
        width = feature_map.n_features_out
        moments = dask_moments if is_dask(X) else stream_moments
        stats = [Moments(*m) for m in moments(X, Y, weights, feature_map, ops)]
        train_stats = stats[0]
        self._feature_map = feature_map
        self._fit_ops = ops
        self.n_components_ = width
        lam_max = top_eigenvalue(train_stats.A)
        self._check_kernel_scale(lam_max, X)
        self._lambda_max = lam_max
        lr = self._resolve_learning_rate(lam_max)

        def make_score(path):
            if val is None:
                return None
            return _QuadraticR2(stats[1], path.V)

        self._fit_krylov(
            train_stats.A,
            train_stats.b,
            scale=abs(lam_max),
            lr=lr,
            make_dynamics=lambda path: primal_dynamics(path.theta, path.z, train_stats.yy),
            make_score=make_score,
        )
        self._basis = self._path.V
        if mode == "nystroem":  # coefficients of the kernel at the centres
            self._basis = feature_map.center_coefficients(self._path.V)
        self.sharpness_ = self._feature_sharpness(train_stats)

    def _centers(self, X, train):
        if self.centers is not None:
            centers = np.asarray(self.centers, dtype=np.float64)
            if centers.ndim != 2 or centers.shape[1] != X.shape[1]:
                raise ValueError(
                    f"centers must have shape (n_centers, {X.shape[1]}), got {centers.shape}."
                )
            if self.n_components is not None and self.n_components != centers.shape[0]:
                raise ValueError(
                    f"n_components={self.n_components} but {centers.shape[0]} centers were given."
                )
            return centers
        idx = self._center_indices(train)
        centers = X[idx]
        if sparse.issparse(centers):
            centers = centers.toarray()
        return np.asarray(centers, dtype=np.float64)

    def _center_indices(self, train):
        m = self.n_components
        if m > len(train):
            warnings.warn(
                f"n_components={m} is larger than the {len(train)} training samples; "
                f"using all {len(train)} of them as centres.",
                UserWarning,
                stacklevel=3,
            )
            m = len(train)
        rng = check_random_state(self.random_state)
        return np.sort(rng.choice(train, size=m, replace=False))

    def _kernel_spec(self):
        name = self.kernel if isinstance(self.kernel, str) else None
        return KernelSpec(self._get_kernel, name, self.gamma, self.degree, self.coef0)

    def _fit_krylov(self, matrix, start, *, scale, lr, make_dynamics, make_score):
        """The path, shared by the dual and primal parametrizations."""
        self.learning_rate_ = lr

        def solve(path):
            dynamics = make_dynamics(path)
            score = make_score(path)
            # the stopping rule and the validation scores need a look at every step
            # the loss of y / s is the loss of y over s^2; SAM's radius scales with y
            tol = self.tol
            if tol is not None and score is None:
                tol = tol / np.float64(self._y_scale) ** 2
            monitor = _Monitor(tol, self.n_iter_no_change, score)
            watch = self.tol is not None or score is not None
            a, scales, losses = run_steps(
                dynamics,
                lr=lr,
                solver=self.solver,
                rho=self.rho / self._y_scale if self.solver == "sam" else self.rho,
                max_iter=self.max_iter,
                monitor=monitor if watch else None,
            )
            monitor.losses = losses
            return monitor.returned(a), (monitor, scales, dynamics)

        try:
            path, a, (monitor, scales, dynamics), diagnostics = fit_krylov_path(
                matrix, start, scale=scale, solve=solve
            )
        except Diverged as exc:
            raise ValueError(
                f"The iteration diverged at step {exc.step} (the training loss is not "
                f"finite) with learning_rate={lr:.6g}: the kernel matrix is probably not "
                "positive semi-definite, or the learning rate is too large."
            ) from None
        self._path, self._dynamics = path, dynamics
        self._store_path(
            a, monitor, scales, diagnostics, dynamics.loss(np.zeros_like(dynamics.z), -dynamics.z)
        )

    def _store_path(self, a, monitor, scales, diagnostics, initial_loss):
        self._coef = a
        self._scales = np.asarray(scales[: monitor.returned_step()], dtype=np.float64)
        # loss_curve_[t]: the loss at the weights step t + 1 starts from
        with np.errstate(over="ignore"):  # an overflow is reported by _check_finite
            squared = np.float64(self._y_scale) ** 2
        record_history(
            self,
            loss_curve=[squared * loss for loss in [initial_loss] + monitor.losses[:-1]],
            n_iter=len(monitor.losses),
            validation_scores=monitor.validation_scores,
            best_validation_score=monitor.rule.best_score,
        )
        self.krylov_size_ = diagnostics["size"]
        if self.verbose:
            print(
                f"Krylov basis: {diagnostics['size']} columns, exact={diagnostics['exact']}, "
                f"last relative change {diagnostics['change']:.2e}"
            )
        if not (diagnostics["converged"] or diagnostics["stagnated"]):
            warnings.warn(
                f"The Krylov basis reached {diagnostics['size']} columns before the fitted "
                f"coefficients stopped changing (last relative change "
                f"{diagnostics['change']:.2e}); the fit is approximate.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.tol is not None and not monitor.rule.stopped:
            what = "the validation score" if self.early_stopping else "the training loss"
            warn_not_converged(type(self).__name__, self.max_iter, f"{what} (tol={self.tol})")

    def _exact_sharpness(self, K, n):
        """Exact sharpness of the training loss at the fitted weights."""
        if self.sharpness is None:
            return None
        theta, z, k = self._path.theta, self._path.z, self._coef.shape[1]
        if self.sharpness == "trace":
            # tr(H) = tr(K) / n per output; the Krylov basis holds only some eigenvalues
            return float(k * np.trace(K) / n)
        # Hessian eigenvalues theta / n, and lambda_max(K) / n whose eigenvector may
        # lie outside the basis (it then carries no gradient).
        eigenvalues = np.append(theta, self._lambda_max) / n
        residual = (theta[:, None] * self._coef - z) * self._y_scale
        # g = Phi^T r / n has the coordinate sqrt(lambda_i) (u_i^T r) / n along u_i
        gradient = np.sqrt(np.clip(theta, 0, None))[:, None] * residual / n
        gradient = np.vstack([gradient, np.zeros((1, k))])
        return quadratic_sharpness(eigenvalues, gradient, measure=self.sharpness, rho=self.rho)

    def _feature_sharpness(self, stats):
        """Exact sharpness: the Hessian is ``A`` itself."""
        if self.sharpness is None:
            return None
        k = self._coef.shape[1]
        if self.sharpness == "top_eigenvalue":
            return float(self._lambda_max)
        if self.sharpness == "trace":
            return float(k * np.trace(stats.A))
        lam, U = np.linalg.eigh(stats.A)
        gradient = (stats.A @ (self._path.V @ self._coef) - stats.b) * self._y_scale
        return quadratic_sharpness(lam, U.T @ gradient, measure="rho", rho=self.rho)

    # ------------------------------------------------------------ prediction

    def _check_predict_input(self, X):
        check_is_fitted(self)
        if is_dask(X):
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has shape {X.shape}, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features."
                )
            return X
        return validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64, reset=False)

    def _features(self, X):
        """The prediction's left factor for a block of rows (numpy float64)."""
        if self._fit_mode == "exact":
            if self.kernel == "precomputed":
                columns = self._precomputed_columns
                return self._get_kernel(X if columns is None else X[:, columns], self.X_fit_)
            return self._get_kernel(X, self.X_fit_)
        if self._fit_mode == "linear":
            return X.toarray() if sparse.issparse(X) else X
        spec, ops = self._feature_map.spec, self._fit_ops
        centers, _ = self._feature_map._on(ops)
        return ops.to_numpy(ops.kernel(spec, ops.asarray(X), centers))

    def _apply(self, X, right):
        """``features(X) @ right``, streamed over row blocks (dask: per chunk)."""
        if is_dask(X):
            X = X.rechunk({1: X.shape[1]})
            return X.map_blocks(
                self._apply, right, chunks=(X.chunks[0], (right.shape[1],)), dtype=np.float64
            )
        rows = block_rows(self._basis.shape[0])
        parts = [
            self._features(X[start : start + rows]) @ right for start in range(0, X.shape[0], rows)
        ]
        return np.vstack(parts) if parts else np.empty((0, right.shape[1]))

    def predict(self, X):
        """Predict with the fitted model.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Samples, or their kernel against the training samples,
            (n_samples, n_train), if ``kernel='precomputed'``.

        Returns
        -------
        y_pred : ndarray (dask array for dask input) of shape (n_samples,) or (n_samples, n_outputs)
            Predictions, computed in blocks of rows.
        """
        X = self._check_predict_input(X)
        pred = self._apply(X, self._basis @ self._coef)
        return pred[:, 0] if self._one_output else pred

    def staged_predict(self, X):
        """Yield the prediction after each step of the returned model.

        One fit thus gives the whole error-versus-iterations curve; the last
        stage is :meth:`predict`'s answer: after ``n_iter_`` steps, or, with
        ``early_stopping``, after the step of ``best_validation_score_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples (kernel against the training samples if
            ``kernel='precomputed'``).

        Yields
        ------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Prediction after each step.
        """
        X = self._check_predict_input(X)
        projected = np.asarray(self._apply(X, self._basis))
        for a in replay(self._dynamics, lr=self.learning_rate_, scales=self._scales):
            pred = projected @ (a * self._y_scale)
            yield pred[:, 0] if self._one_output else pred


#: Largest kernel eigenvalue below which float64 loses the kernel: its products
#: (K^2 in the Krylov basis, the loss) reach the subnormal range.
_SMALLEST_KERNEL_SCALE = 1e-150


class _transaction:
    """Restore the estimator's attributes if the block raises (or is interrupted).

    A fit builds its state on the estimator step by step; if it fails (or a
    ``KeyboardInterrupt`` arrives) the estimator is put back exactly as it was
    before the call, so it is never half fitted: an earlier fit stays intact.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def __enter__(self):
        self.saved = dict(self.estimator.__dict__)

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.estimator.__dict__.clear()
            self.estimator.__dict__.update(self.saved)
        return False


def _power_of_two_scale(Y, rho):
    """``2^k`` near ``max(max |Y|, rho)`` (1 if both are 0): dividing by it is exact.

    SAM's radius ``rho`` is in the units of the weights: a SAM path on a tiny
    ``y`` moves by ``rho``, so the scale is the larger of the two.
    """
    top = np.abs(Y).max(initial=0.0) if not is_dask(Y) else float(abs(Y).max().compute())
    top = max(float(top), float(rho))
    if not (np.isfinite(top) and top > 0):
        return 1.0
    return float(2.0 ** np.round(np.log2(top)))


class _PrecomputedSpec:
    """Kernel against the centres = columns of a precomputed kernel matrix."""

    name = None

    def numpy_kernel(self, X, C):
        return np.asarray(X[:, C.astype(np.intp)], dtype=np.float64)


def _mask(n, index):
    mask = np.zeros(n, dtype=bool)
    mask[index] = True
    return mask


def _check_dtype(dtype):
    name = None if dtype is None else str(dtype).rsplit(".", 1)[-1].split("'")[0]
    if name not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be None, 'float64' or 'float32', got {dtype!r}.")
    return name


def _check_dask(estimator, X, y):
    """Shape checks of dask inputs (their values are read chunk by chunk)."""
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D dask array X, got {X.ndim}D.")
    unknown = [name for name, a in (("X", X), ("y", y)) if any(np.isnan(c) for c in a.shape)]
    if unknown:
        calls = " and ".join(f"{name}.compute_chunk_sizes()" for name in unknown)
        raise ValueError(
            f"The dask array {' and '.join(unknown)} has unknown chunk sizes (X.shape="
            f"{X.shape}, y.shape={y.shape}), as after boolean indexing; call {calls} "
            "before fit."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} feature(s) "
            f"(shape={X.shape}) while a minimum of 1 is required by "
            f"{type(estimator).__name__}."
        )
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {y.shape}."
        )
    estimator.n_features_in_ = X.shape[1]
    return X, y


class _QuadraticR2:
    """Validation R^2 of ``theta = V a`` from the validation moments.

    ``||Phi_val theta - y||_W^2 / n_val = a^T (V^T A_val V) a - 2 a^T V^T b_val
    + y_sq``, per output.
    """

    def __init__(self, stats, V):
        self.G = V.T @ stats.A @ V
        self.h = V.T @ stats.b
        self.y_sq = stats.y_sq
        self.ss_tot = stats.y_sq - stats.y_mean**2

    def __call__(self, a):
        ss_res = np.einsum("ik,ij,jk->k", a, self.G, a) - 2 * np.sum(a * self.h, 0) + self.y_sq
        return _r2_from_sums(np.maximum(ss_res, 0.0), self.ss_tot)


class _RowProjector:
    """``K_val @ Q[:, :m]``, extended column by column as the basis grows."""

    def __init__(self, K_val):
        self.K_val = K_val
        self.product = None if K_val is None else np.zeros((K_val.shape[0], 0))

    def __call__(self, path):
        m = path.Qm.shape[1]
        done = self.product.shape[1]
        if m > done:
            self.product = np.hstack([self.product, self.K_val @ path.Qm[:, done:]])
        return self.product[:, :m] @ path.S


class _Monitor:
    """The shared stopping rule, fed every step, keeping the best validated iterate."""

    def __init__(self, tol, n_iter_no_change, score):
        self.rule = StoppingRule(tol, n_iter_no_change, on_validation=score is not None)
        self.score = score  # score(a): validation R^2, or None
        self.losses = None  # filled in by the caller, from run_steps
        self.validation_scores = None if score is None else []
        self.best_a = None

    def __call__(self, step, a, loss):
        score = None
        if self.score is not None:
            score = self.score(a)
            self.validation_scores.append(score)
        stop = self.rule.update(loss, score)
        if self.rule.is_best:
            self.best_a = a
        return stop

    def returned(self, a):
        """The coefficients to keep: the best validated ones, or the last."""
        return a if self.score is None else self.best_a

    def returned_step(self):
        return len(self.losses) if self.score is None else self.rule.best_iteration


def _r2(pred, y, sample_weight=None):
    """R^2 averaged over outputs, as ``sklearn.metrics.r2_score``.

    Written out because early stopping scores every step: ``r2_score``'s input
    validation costs about 170 us a call against 13 us here, which over 1000
    steps is more than a whole small fit. Tested against ``r2_score``.
    """
    w = np.ones(len(y)) if sample_weight is None else sample_weight
    w = w[:, None] / w.sum()
    ss_res = np.sum(w * (y - pred) ** 2, axis=0)
    ss_tot = np.sum(w * (y - np.sum(w * y, axis=0)) ** 2, axis=0)
    return _r2_from_sums(ss_res, ss_tot)


def _r2_from_sums(ss_res, ss_tot):
    safe = ss_tot > 0
    scores = np.where(safe, 1 - ss_res / np.where(safe, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
    return float(scores.mean())
