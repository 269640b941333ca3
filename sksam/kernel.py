"""Kernel regression trained by gradient descent or SAM: :class:`SAMKernelRegressor`."""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import PAIRWISE_KERNEL_FUNCTIONS, pairwise_kernels
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._kernel_path import Diverged, fit_krylov_path, replay, run_steps, top_eigenvalue
from .sharpness import MEASURES, quadratic_sharpness


class SAMKernelRegressor(RegressorMixin, BaseEstimator):
    r"""Kernel regression trained by gradient descent (GD) or SAM, from zero.

    The model is :math:`f(x) = \sum_i \alpha_i k(x_i, x)`, trained on the mean
    squared loss :math:`L = \frac{1}{2n} \sum_i \|f(x_i) - y_i\|^2` (summed over
    the outputs) by ``max_iter`` full-batch steps from :math:`f = 0`; the number
    of steps (early stopping) is the regularization. Every solver is the rule
    of :mod:`sksam._update_rules` applied to the weights :math:`\theta` in the
    kernel's feature space, written through :math:`\alpha` (``r = K alpha - y``):

    - ``'gd'``: :math:`\alpha \leftarrow \alpha - \frac{lr}{n}(K\alpha - y)`;
    - ``'sam'``: the gradient at the perturbed point :math:`\theta + e`,
      :math:`e = \rho g / \|g\|`, where the norm is the RKHS norm
      :math:`\|g\|^2 = \sum_{outputs} r^\top K r / n^2` (all outputs jointly),
      so :math:`\alpha \leftarrow \alpha - \frac{lr}{n}(I + \frac{c}{n} K) r`
      with :math:`c = \rho / \|g\|`;
    - ``'usam'``: the same with :math:`c = \rho` (unnormalized SAM), a linear
      spectral filter.

    With :math:`K = U \Lambda U^\top` and :math:`z = U^\top y`, GD and USAM
    after :math:`T` steps have the coefficient
    :math:`(1 - (1 - lr\, s_i)^T) z_i / \lambda_i` along eigenvector
    :math:`i`, :math:`s_i = \lambda_i / n` (GD) or
    :math:`(\lambda_i / n)(1 + \rho \lambda_i / n)` (USAM).

    The path is computed in a Krylov basis of :math:`K` started at
    :math:`y` (see :mod:`sksam._kernel_path`): every iterate is a polynomial in
    :math:`K` applied to :math:`y`, so each step costs :math:`O(m)` for a basis
    of :math:`m \ll n` columns, and the basis grows until the fitted
    coefficients stop changing (exact once the basis spans an invariant
    subspace, which small problems reach). A fit costs the kernel matrix plus
    a few dozen products :math:`K v`, far less than a factorization.

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
        ``1 / n_features``.
    degree : float, default=3
        Degree of the polynomial kernel.
    coef0 : float, default=1
        Zero coefficient of the polynomial and sigmoid kernels.
    kernel_params : dict, default=None
        Keyword arguments of a callable kernel.
    learning_rate : float or 'auto', default='auto'
        Step size ``lr`` on the feature-space weights (so ``alpha`` moves by
        ``lr / n`` times the residual). ``'auto'`` is a step that is provably
        stable for the chosen solver. With :math:`s_{max} = \lambda_{max}(K)/n`
        the top eigenvalue of the Hessian :math:`H` of :math:`L`:

        - ``'gd'``: ``1 / s_max``. The error along eigenvector :math:`i`
          shrinks by :math:`1 - lr\, s_i \in [0, 1)` per step, so the loss
          decreases monotonically, without oscillation.
        - ``'usam'``: ``1 / (s_max (1 + rho s_max))``: the same argument with
          the USAM filter :math:`s_i (1 + \rho s_i)`, increasing in
          :math:`s_i`.
        - ``'sam'``: ``1 / s_max``. A SAM step is the GD step plus
          :math:`-lr\, H e_t` with :math:`\|e_t\| = \rho`, so the difference
          :math:`d_t` between the SAM and GD iterates obeys
          :math:`d_{t+1} = (I - lr H) d_t - lr H e_t`; along eigenvector
          :math:`i`, :math:`|d_{t+1,i}| \le (1 - lr s_i)|d_{t,i}| + lr s_i \rho`,
          so by induction every coordinate of :math:`d_t` stays below
          :math:`\rho`: SAM never leaves a :math:`\rho`-box around the
          (monotone) GD path.

        A float must be ``< 2 / s_max`` (``'gd'``, ``'sam'``) or
        ``< 2 / (s_max (1 + rho s_max))`` (``'usam'``); above, the iteration
        diverges and ``fit`` raises a ``ValueError``.
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
        (along the whole run when ``tol=None``).
    validation_fraction : float, default=0.1
        Held-out fraction for ``early_stopping``.
    n_iter_no_change : int, default=10
        Steps without improvement before stopping (with a float ``tol``).
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        Measure stored in ``sharpness_`` (see :mod:`sksam.sharpness`), of
        the training loss at the fitted weights. For kernel regression the
        Hessian is the constant :math:`H = \Phi^\top \Phi / n`, whose nonzero
        eigenvalues are :math:`\lambda_i(K) / n`, so ``'top_eigenvalue'``
        (:math:`\lambda_{max}(K)/n`) and ``'trace'``
        (:math:`n_{outputs}\, \mathrm{tr}(K)/n`) are exact and **do not
        depend on the solver**; ``'rho'``,
        :math:`\max_{\|e\| \le \rho} L(\theta + e) - L(\theta)`, does, through
        the gradient at the fitted weights, and is computed exactly (a
        trust-region problem) in the Krylov basis extended by the top
        eigenvector. ``None`` skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split of ``early_stopping``; the fit is otherwise
        deterministic.
    verbose : int, default=0
        Print the loss of every step and the size of the Krylov basis.

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_train,) or (n_train, n_outputs)
        The fitted :math:`\alpha`.
    X_fit_ : {ndarray, sparse matrix} of shape (n_train, n_features)
        Training data (the kernel matrix if ``kernel='precomputed'``), without
        the validation part of ``early_stopping``.
    n_iter_ : int
        Number of steps of the returned model (with ``early_stopping``, the
        best step, which may be before the last one run).
    loss_curve_ : list of float
        Training loss :math:`L` after each step run.
    best_loss_ : float or None
        Smallest training loss seen (``None`` with ``early_stopping``).
    validation_scores_ : list of float or None
        Validation :math:`R^2` after each step run (``early_stopping`` only).
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
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
    sklearn.kernel_ridge.KernelRidge : Regularization by a ridge penalty
        instead of by early stopping.

    Notes
    -----
    The SAM and GD paths differ: along the iterations SAM has a lower bias
    and a slightly higher variance, so with a well-chosen number of steps its
    prediction error is at most GD's (Behdin & Mazumder, 2023).

    Accuracy. GD and USAM are linear filters and are computed to rounding.
    SAM's path is the exact-arithmetic one: along the top eigenvector SAM
    first shrinks the residual far below ``eps |y|`` and later regrows it
    ("bouncing" across the valley); a plain loop on :math:`\alpha` floors
    that component at rounding level and regrows noise, so two such loops
    can disagree in the fitted values (by 7% at ``n=5000`` with
    ``learning_rate='auto'``), while this estimator agrees with the path in
    the full eigenbasis to about ``1e-13`` (see :mod:`sksam._kernel_path`).

    The fitted model keeps the Ritz vectors (``n_train x m``, ``m`` about
    ``2 sqrt(max_iter)``) for :meth:`staged_predict`.

    References
    ----------
    .. [1] K. Behdin and R. Mazumder, "On Statistical Properties of
       Sharpness-Aware Minimization: Provable Guarantees", arXiv:2302.11836.
    .. [2] P. Foret, A. Kleiner, H. Mobahi and B. Neyshabur,
       "Sharpness-Aware Minimization for Efficiently Improving
       Generalization", ICLR 2021.
    .. [3] M. Andriushchenko and N. Flammarion, "Towards Understanding
       Sharpness-Aware Minimization", ICML 2022.

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
    """

    _parameter_constraints: dict = {
        "solver": [StrOptions({"gd", "sam", "usam"})],
        "rho": [Interval(Real, 0, None, closed="left")],
        "kernel": [
            StrOptions(set(PAIRWISE_KERNEL_FUNCTIONS) | {"precomputed"}),
            callable,
        ],
        "gamma": [Interval(Real, 0, None, closed="left"), None],
        "degree": [Interval(Real, 0, None, closed="left")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "kernel_params": [dict, None],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "sharpness": [StrOptions(set(MEASURES)), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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

    def _split(self, X, y):
        """Training and validation parts (indices) for ``early_stopping``."""
        n = X.shape[0]
        if not self.early_stopping:
            return np.arange(n), None
        rng = check_random_state(self.random_state)
        train, val = train_test_split(
            np.arange(n), test_size=self.validation_fraction, random_state=rng
        )
        return np.sort(train), np.sort(val)

    # --------------------------------------------------------------- fitting

    def _resolve_learning_rate(self, s_max):
        """The step size: 'auto', or the user's after the stability check.

        ``s_max`` is the top Hessian eigenvalue ``lambda_max(K) / n``; the
        derivations are in the class docstring (``learning_rate``).
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
                f"s_max = lambda_max(K) / n_samples = {s_max:.6g}). "
                "Use learning_rate='auto'."
            )
        return float(self.learning_rate)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Run ``max_iter`` steps of the solver from ``f = 0``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data, or the kernel matrix (n_samples, n_samples) if
            ``kernel='precomputed'``.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=("csr", "csc"),
            multi_output=True,
            y_numeric=True,
            dtype=np.float64,
        )
        Y = y.reshape(y.shape[0], -1)
        if self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise ValueError(
                "With kernel='precomputed', X must be the square kernel matrix of "
                f"the training data at fit time, got shape {X.shape}."
            )
        train, val = self._split(X, y)
        # with a precomputed kernel and a validation split, predict keeps only
        # the columns of the training part
        self._precomputed_columns = (
            train if self.kernel == "precomputed" and val is not None else None
        )
        if self.kernel == "precomputed":
            K = self._train_kernel(X[train][:, train])
            K_val = None if val is None else self._get_kernel(X[val][:, train], X[train])
        else:
            K = self._train_kernel(X[train])
            K_val = None if val is None else self._get_kernel(X[val], X[train])
        Y_val = None if val is None else Y[val]
        self.X_fit_ = X[train]
        self._fit_path(K, Y[train], K_val, Y_val)
        if self.verbose:
            for step, loss in enumerate(self.loss_curve_, start=1):
                print(f"Step {step}, loss = {loss:.8f}")
        self.dual_coef_ = self._path_V @ self._coef
        if y.ndim == 1:
            self.dual_coef_ = self.dual_coef_.ravel()
        self.sharpness_ = self._measure_sharpness(K)
        return self

    def _fit_path(self, K, Y, K_val, Y_val):
        n = K.shape[0]
        lam_max = top_eigenvalue(K)
        self._lambda_max = lam_max
        self.learning_rate_ = lr = self._resolve_learning_rate(lam_max / n)
        projector = _RowProjector(K_val)

        def solve(path):
            # the stopping rule and the validation scores need a look at every step
            monitor = _Monitor(
                tol=self.tol,
                n_iter_no_change=self.n_iter_no_change,
                validation=None if K_val is None else (projector(path), Y_val),
            )
            watch = self.tol is not None or K_val is not None
            a, scales, losses = run_steps(
                path.theta,
                path.z,
                n=n,
                lr=lr,
                solver=self.solver,
                rho=self.rho,
                max_iter=self.max_iter,
                monitor=monitor if watch else None,
            )
            monitor.loss_curve = losses
            return monitor.returned(a), (monitor, scales)

        try:
            path, a, (monitor, scales), diagnostics = fit_krylov_path(
                K, Y, scale=abs(lam_max), solve=solve
            )
        except Diverged as exc:
            raise ValueError(
                f"The iteration diverged at step {exc.step} (the training loss is not "
                f"finite) with learning_rate={lr:.6g}: the kernel matrix is probably not "
                "positive semi-definite, or the learning rate is too large."
            ) from None
        self._store_path(path, a, monitor, scales, diagnostics)

    def _store_path(self, path, a, monitor, scales, diagnostics):
        self._path_V = path.V
        self._theta, self._z, self._coef = path.theta, path.z, a
        self.n_iter_ = monitor.returned_step()
        self._scales = np.asarray(scales[: self.n_iter_], dtype=np.float64)
        self.loss_curve_ = monitor.loss_curve
        self.best_loss_ = None if self.early_stopping else min(monitor.loss_curve)
        self.validation_scores_ = monitor.validation_scores
        self.best_validation_score_ = (
            max(monitor.validation_scores) if self.early_stopping else None
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
                stacklevel=2,
            )
        if self.tol is not None and not monitor.stopped:
            warnings.warn(
                f"Maximum iterations ({self.max_iter}) reached and the "
                f"{'validation score' if self.early_stopping else 'training loss'} "
                f"still improves by more than tol={self.tol}.",
                ConvergenceWarning,
                stacklevel=2,
            )

    def _measure_sharpness(self, K):
        """Exact sharpness of the training loss at the fitted weights."""
        if self.sharpness is None:
            return None
        n, k = K.shape[0], self._coef.shape[1]
        if self.sharpness == "trace":
            # tr(H) = tr(K) / n per output; the Krylov basis holds only some eigenvalues
            return float(k * np.trace(K) / n)
        # Hessian eigenvalues theta / n, and lambda_max(K) / n whose eigenvector may
        # lie outside the basis (it then carries no gradient).
        eigenvalues = np.append(self._theta, self._lambda_max) / n
        residual = self._theta[:, None] * self._coef - self._z
        # g = Phi^T r / n has the coordinate sqrt(lambda_i) (u_i^T r) / n along u_i
        gradient = np.sqrt(np.clip(self._theta, 0, None))[:, None] * residual / n
        gradient = np.vstack([gradient, np.zeros((1, k))])
        return quadratic_sharpness(eigenvalues, gradient, measure=self.sharpness, rho=self.rho)

    # ------------------------------------------------------------ prediction

    def _test_kernel(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64, reset=False)
        if self.kernel == "precomputed":
            columns = self._precomputed_columns
            K = self._get_kernel(X if columns is None else X[:, columns], self.X_fit_)
        else:
            K = self._get_kernel(X, self.X_fit_)
        return K

    def predict(self, X):
        """Predict with the fitted model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Samples, or their kernel against the training samples,
            (n_samples, n_train), if ``kernel='precomputed'``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions.
        """
        return self._test_kernel(X) @ self.dual_coef_

    def staged_predict(self, X):
        """Yield the prediction after each step ``1, ..., n_iter_``.

        One fit thus gives the whole error-versus-iterations curve; the last
        stage is :meth:`predict`'s answer.

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
        projected = self._test_kernel(X) @ self._path_V
        one_output = self.dual_coef_.ndim == 1
        for a in replay(
            self._theta,
            self._z,
            n=self._path_V.shape[0],
            lr=self.learning_rate_,
            scales=self._scales,
        ):
            pred = projected @ a
            yield pred.ravel() if one_output else pred


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
    """MLPRegressor's stopping rule and the validation scores, step by step."""

    def __init__(self, *, tol, n_iter_no_change, validation):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.validation = validation
        self.loss_curve = None  # filled in by the caller, from run_steps
        self.validation_scores = None if validation is None else []
        self.best_loss, self.best_score = np.inf, -np.inf
        self.best_a, self.best_step = None, 0
        self.no_improvement = 0
        self.stopped = False

    def __call__(self, step, a, loss):
        if self.validation is None:
            improved = self.tol is None or loss <= self.best_loss - self.tol
            self.best_loss = min(self.best_loss, loss)
        else:
            score = _r2(self.validation[0] @ a, self.validation[1])
            self.validation_scores.append(score)
            improved = self.tol is None or score >= self.best_score + self.tol
            if score > self.best_score:
                self.best_score, self.best_a, self.best_step = score, a, step
        self.no_improvement = 0 if improved else self.no_improvement + 1
        self.stopped = self.no_improvement > self.n_iter_no_change
        return self.stopped

    def returned(self, a):
        """The coefficients to keep: the best validated ones, or the last."""
        return a if self.validation is None else self.best_a

    def returned_step(self):
        return len(self.loss_curve) if self.validation is None else self.best_step


def _r2(pred, y):
    """R^2 averaged over outputs, as ``sklearn.metrics.r2_score``.

    Written out because early stopping scores every step: ``r2_score``'s input
    validation costs about 170 us a call against 13 us here, which over 1000
    steps is more than a whole small fit. Tested against ``r2_score``.
    """
    ss_res = np.sum((y - pred) ** 2, axis=0)
    ss_tot = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    safe = ss_tot > 0
    scores = np.where(safe, 1 - ss_res / np.where(safe, ss_tot, 1), np.where(ss_res == 0, 1.0, 0.0))
    return float(scores.mean())
