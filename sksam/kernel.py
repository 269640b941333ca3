"""Kernel regression trained by gradient descent or SAM: :class:`SAMKernelRegressor`.

``fit`` is select -> build -> solve -> finish over the parts of
:mod:`sksam._kernel_models` (data source, parametrization, validation score)
and the path solver of :mod:`sksam._kernel_path`, which returns its result.
"""

import copy
import warnings
from abc import abstractmethod
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import PAIRWISE_KERNEL_FUNCTIONS
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import (
    COMMON_CONSTRAINTS,
    SAM_SHARE_COINCIDE,
    EstimatorHooks,
    FitHistory,
    FitTransaction,
    check_device,
    check_finite,
    diagnose_loss_curve,
    numeric_target,
    print_progress,
    sample_weights,
    validation_split,
    warn_diverged,
    warn_not_converged,
)
from ._kernel_docs import FIT_ATTRIBUTES_DOC, SHARPNESS_MEASURES_DOC
from ._kernel_features import is_dask, make_ops
from ._kernel_models import (
    KERNEL_MEASURES,
    DaskRows,
    ExactDual,
    InMemoryRows,
    KernelFunction,
    LinearPrimal,
    NystroemFeatures,
    R2Score,
    check_dask,
    data_source,
)
from ._kernel_path import (
    Diverged,
    PathSettings,
    StoppingCriterion,
    replay,
    resolve_learning_rate,
    sam_share,
    solve_path,
)

#: ``early_stopping='auto'`` holds out a validation part from this many
#: samples on (as ``HistGradientBoosting*``'s ``'auto'``, which starts at
#: 10 000): below it the validation part is too small to choose the step, and
#: the fit uses every sample. See the user guide's measurements.
EARLY_STOPPING_AUTO_SAMPLES = 200

#: Iterations a verbose fit prints at most (log-spaced, the last included).
VERBOSE_LINES = 30


def verbose_iterations(n_iter, lines=VERBOSE_LINES):
    """Log-spaced iterations ``1 .. n_iter`` (the last included), at most ``lines``."""
    if n_iter <= lines:
        return list(range(1, n_iter + 1))
    spaced = np.unique(np.round(np.geomspace(1, n_iter, lines)).astype(int))
    return [int(t) for t in spaced]


class _BaseSAMKernel(BaseEstimator, EstimatorHooks):
    """The kernel path shared by :class:`SAMKernelRegressor` and the classifier.

    ``__init__`` takes the regressor's parameters. A subclass implements the
    abstract hooks (named as in :data:`sksam._base.HOOKS`); fitting, the
    sharpness and the outputs along the path are the same.
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
        "sharpness": [StrOptions(set(KERNEL_MEASURES)), None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "centers": ["array-like", None],
        "device": "no_validation",  # checked in fit, with the machine's devices
        "dtype": "no_validation",
        "early_stopping": ["boolean", StrOptions({"auto"})],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.pairwise = self.kernel == "precomputed"
        tags.target_tags.multi_output = True
        return tags

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
        max_iter=10000,
        tol=None,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        sharpness="rho",
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

    # ------------------------------------------------------------------ hooks

    @property
    @abstractmethod
    def _y_checks(self):
        """``validate_data``'s keywords for ``y`` (a class attribute)."""

    @abstractmethod
    def _encode_targets(self, X, y, sw):
        """The coded targets of a fit, as :class:`Targets`."""

    @abstractmethod
    def _validation_score(self):
        """The validation score early stopping maximizes (an ``R2Score``-like object)."""

    # ------------------------------------------------------------------ kernel

    def _get_kernel(self, X, Y=None):
        return self._kernel_function()(X, Y)

    def _kernel_function(self):
        return KernelFunction(self.kernel, self.gamma, self.degree, self.coef0, self.kernel_params)

    # --------------------------------------------------------------- fitting

    def _fit(self, X, y, sample_weight, shared=None):
        """``fit``: select -> build -> solve -> finish, assigned at the end.

        ``shared``: a :class:`SharedBuild` of this training set (CV folds).
        """
        with FitTransaction(self) as transaction:
            X, target, sw, source = self._validate(X, y, sample_weight)
            Y = target.Y
            early = self._uses_early_stopping(X.shape[0])
            train, val = self._split(X.shape[0], sw, target.stratify if early else None, early)
            # the path runs on y / 2^k (exact in floating point), so that no square
            # of y overflows or underflows; coefficients and losses are scaled back
            y_scale = _power_of_two_scale(
                source.max_abs(Y), self.rho if self.solver == "sam" else 0.0
            )
            if shared is None:
                model = self._select_model(X, len(train), source)
                problem = model.build(X, Y / y_scale, sw, train, val, self._validation_score())
            else:
                model, problem = shared.build(self, X, Y, sw, train, val, source, y_scale)
            lr = resolve_learning_rate(self.learning_rate, self.solver, self.rho, problem.s_max)
            result = self._solve(problem, lr, y_scale, early=val is not None)
            fitted = self._finish(model, problem, result, lr, y_scale, target)
            fitted["do_early_stopping_"] = early
            self._report(result, fitted)
            # replaces another parametrization's attributes (dual_coef_ by coef_...)
            transaction.commit(fitted)
        return self

    def _validate(self, X, y, sample_weight):
        """Checked ``X``, the coded targets, weights, the data source."""
        if is_dask(X) or is_dask(y):
            X, y = check_dask(X, y, type(self).__name__)
            self.n_features_in_ = X.shape[1]
        else:
            X, y = validate_data(
                self, X, y, accept_sparse=("csr", "csc"), dtype=np.float64, **self._y_checks
            )
        sw = sample_weights(sample_weight, X.shape[0])
        target = self._encode_targets(X, y, sw)
        return X, target, target.sample_weight, data_source(X, target.Y, self._ops(X))

    def _uses_early_stopping(self, n_samples):
        """``early_stopping`` resolved: ``'auto'`` is on from EARLY_STOPPING_AUTO_SAMPLES."""
        if isinstance(self.early_stopping, str):  # 'auto'
            return n_samples >= EARLY_STOPPING_AUTO_SAMPLES
        return bool(self.early_stopping)

    def _split(self, n, sw=None, stratify=None, early=None):
        """Training and validation indices (a validation part when ``early``)."""
        if early is None:
            early = self._uses_early_stopping(n)
        if not early:
            train, val = np.arange(n), None
        else:
            random_state = check_random_state(self.random_state)
            train, val = validation_split(
                n, self.validation_fraction, random_state, stratify=stratify
            )
        if sw is not None and (
            not sw[train].sum() > 0 or (val is not None and not sw[val].sum() > 0)
        ):
            raise ValueError("The sample weights of the training (or validation) part sum to 0.")
        return train, val

    def _uses_features(self, n_features, n_train):
        """Nystroem (``'nystroem'``), primal (``'linear'``) or exact (None)."""
        if self.n_components is not None or self.centers is not None:
            return "nystroem"
        if self.kernel == "linear" and n_features < n_train:
            return "linear"
        return None

    def _ops(self, X):
        """The array back end of the feature-space paths: numpy, or torch on ``device``."""
        dtype = _check_dtype(self.dtype)
        if self.device is None and dtype is None:
            return make_ops(None, None)
        if self.kernel == "precomputed" or not self._uses_features(X.shape[1], X.shape[0]):
            raise ValueError(
                f"device={self.device!r} and dtype={self.dtype!r} apply to the feature-space "
                "path; set n_components (Nystroem) or use kernel='linear' with fewer "
                "features than samples."
            )
        return make_ops(None if self.device is None else check_device(self.device), dtype)

    def _select_model(self, X, n_train, source):
        """The parametrization, chosen once."""
        kernel = self._kernel_function()
        kind = self._uses_features(X.shape[1], n_train)
        if kind == "nystroem":
            if kernel.precomputed and self.centers is not None:
                raise ValueError(
                    "With kernel='precomputed' the centres are training samples drawn "
                    "by n_components; centers cannot be given."
                )
            return NystroemFeatures(
                kernel, source, self.n_components, self.centers, self.random_state
            )
        if kind == "linear":
            return LinearPrimal(kernel, source)
        if isinstance(source, DaskRows):
            raise ValueError(
                "A dask array needs the feature-space path: set n_components "
                "(or use kernel='linear' with fewer features than samples)."
            )
        return ExactDual(kernel)

    def _solve(self, problem, lr, y_scale, *, early):
        """The path of the scaled problem (SAM's radius and the loss tol scale with y)."""
        tol = self.tol
        if tol is not None and not early:  # a loss tol; R^2 does not scale
            tol = tol / np.float64(y_scale) ** 2
        rho = self.rho / y_scale if self.solver == "sam" else self.rho
        settings = PathSettings(self.solver, rho, lr, self.max_iter)
        try:
            return solve_path(problem, settings, StoppingCriterion(tol, self.n_iter_no_change))
        except Diverged as exc:
            raise ValueError(
                f"The iteration diverged at step {exc.step} (the training loss is not "
                f"finite) with learning_rate={lr:.6g}: the kernel matrix is probably not "
                "positive semi-definite, or the learning rate is too large."
            ) from None

    def _finish(self, model, problem, result, lr, y_scale, target):
        """All the fitted state, built aside (assigned only once fit succeeds)."""
        coef = result.coef * y_scale
        with np.errstate(over="ignore"):  # an overflow is refused just below
            losses = np.float64(y_scale) ** 2 * np.asarray(result.losses)
        sharpness = None
        if self.sharpness is not None:
            sharpness = model.sharpness(self.sharpness, self.rho, problem, result, y_scale)
        fitted = model.finish(result, coef, target.ravel_coef)
        self._check_finite(losses, model.basis, coef, sharpness, y_scale)
        history = FitHistory(losses, result.validation_scores, result.n_iter)
        history.best_validation_score = result.best_validation_score
        fitted.update(history.attributes())
        fitted.update(target.fitted)
        fitted.update(
            learning_rate_=lr,
            sharpness_=sharpness,
            krylov_size_=result.diagnostics["size"],
            _model=model,
            _coef=coef,
            _y_scale=y_scale,
            _path=result.path,
            _dynamics=result.dynamics,
            _scales=result.scales,
            _one_output=target.ravel_decision,
        )
        return fitted

    def _check_finite(self, losses, basis, coef, sharpness, y_scale):
        """Refuse a fit whose losses, weights or sharpness are not finite."""
        check_finite(
            losses,
            f"The training loss overflows float64: y has values of magnitude about "
            f"{y_scale:.3g}, whose squares exceed the largest float. Standardize y "
            "(e.g. sklearn.compose.TransformedTargetRegressor with a StandardScaler) "
            "or divide it by a constant.",
        )
        check_finite(
            [basis, coef],
            f"The fitted coefficients are not finite; {self._scale_hint} "
            "(StandardScaler) or lower rho.",
        )
        check_finite(
            sharpness,
            f"The sharpness ({self.sharpness!r}) of the fitted model is not finite "
            f"({sharpness}); {self._scale_hint} or lower rho.",
        )

    def _report(self, result, fitted):
        """Warnings and the verbose lines of a fit."""
        diagnostics = result.diagnostics
        early = fitted["do_early_stopping_"]
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
                stacklevel=4,
            )
        if self.tol is not None and not result.stopped:
            what = "the validation score" if early else "the training loss"
            warn_not_converged(type(self).__name__, self.max_iter, f"{what} (tol={self.tol})")
        cause = diagnose_loss_curve(fitted["loss_curve_"])
        if cause is not None:
            # 'auto' keeps GD and USAM monotone, but rho is a radius in the RKHS norm:
            # a kernel with large values or one that is not positive semi-definite
            # (Nystroem features hide it) lets SAM's loss end far above its start
            warn_diverged(
                type(self).__name__,
                cause,
                f"Lower rho (now {self.rho:g}; it is a radius in the kernel's RKHS "
                "norm, so a kernel with large values needs a smaller one) or check "
                "that the kernel is positive semi-definite.",
            )
        if self.verbose:
            self._print_progress(result, fitted)

    def _print_progress(self, result, fitted):
        """The verbose lines: at most VERBOSE_LINES iterations, then how it ended."""
        losses = fitted["loss_curve_"]
        scores = fitted["validation_scores_"] or [None] * len(losses)
        for iteration in verbose_iterations(len(losses)):
            print_progress(iteration, losses[iteration - 1], scores[iteration - 1])
        print(self._stopping_line(result, fitted), flush=True)

    def _stopping_line(self, result, fitted):
        """Why the fit stopped, the iterate kept, and SAM's share of the movement."""
        n_iter = fitted["n_iter_"]
        why = "by the stopping rule (tol)" if result.stopped else "at max_iter"
        line = f"{type(self).__name__}: stopped after {n_iter} iterations {why}"
        if fitted["validation_scores_"] is not None:
            kept = len(result.scales)
            line += (
                f"; kept iteration {kept}, of the best validation score "
                f"{fitted['best_validation_score_']:.6f}"
            )
        line += "."
        if self.solver != "sam" or self.rho == 0:
            return line
        share = sam_share(result.dynamics, lr=fitted["learning_rate_"], scales=result.scales)
        if share is None:
            return line
        line += f" SAM's perturbation accounts for {share:.1%} of the weights' movement"
        if share < SAM_SHARE_COINCIDE:
            return line + (
                ": SAM and gradient descent give nearly the same model here. SAM's effect "
                "grows with rho (a radius in the RKHS norm, in the units of y: "
                "standardize y to compare) and with the number of steps."
            )
        return line + "."

    # ------------------------------------------------------------ prediction

    def _check_predict_input(self, X):
        """Checked ``X`` and its data source."""
        check_is_fitted(self)
        if is_dask(X):
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has shape {X.shape}, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features."
                )
            return X, DaskRows()
        X = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=np.float64, reset=False)
        return X, InMemoryRows()

    def _decision(self, X):
        """The model's outputs on ``X``, in blocks of rows."""
        X, rows = self._check_predict_input(X)
        pred = rows.apply(self._model.features, X, self._model.basis @ self._coef)
        return pred[:, 0] if self._one_output else pred

    def _staged_decision(self, X):
        """The model's outputs on ``X`` after each step of the returned model."""
        X, rows = self._check_predict_input(X)
        projected = np.asarray(rows.apply(self._model.features, X, self._model.basis))
        for a in replay(self._dynamics, lr=self.learning_rate_, scales=self._scales):
            pred = projected @ (a * self._y_scale)
            yield pred[:, 0] if self._one_output else pred


class SAMKernelRegressor(RegressorMixin, _BaseSAMKernel):
    __doc__ = (
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
    max_iter : int, default=10000
        Number of steps: with early stopping, the most steps, of which the
        validation score keeps the best. Early stopping is the
        regularization, and the path to any number of steps costs nearly the
        same (the data are read once; the Krylov basis grows as
        :math:`\sqrt{\texttt{max\_iter}}`), so the default runs long enough
        for the fit to reach the accuracy of ``Nystroem`` +
        ``Ridge(alpha=1e-3)`` or ``KernelRidge`` with ``learning_rate='auto'``
        on large data. Without early stopping such a long path overfits small
        data, as a small ridge ``alpha`` does (test :math:`R^2` -0.45 on
        diabetes, where ``early_stopping='auto'`` gives 0.15 to 0.23): below
        200 samples, where ``'auto'`` is off, choose the stopping step with
        :meth:`staged_predict` or :class:`SAMKernelRegressorCV`.
    tol : float or None, default=None
        ``None``: run exactly ``max_iter`` steps. A float: stop as
        :class:`sklearn.neural_network.MLPRegressor` does, once the training
        loss (or, with ``early_stopping``, the validation :math:`R^2`) has not
        improved by at least ``tol`` for ``n_iter_no_change`` consecutive steps
        (plus one); a :class:`~sklearn.exceptions.ConvergenceWarning` is raised
        if that does not happen within ``max_iter`` steps.
    early_stopping : 'auto' or bool, default='auto'
        Hold out ``validation_fraction`` of the training data, train on the
        rest, and return the iterate with the best validation :math:`R^2`
        (along the whole run when ``tol=None``). Both parts need at least 2
        samples, else ``fit`` raises a ``ValueError``. ``'auto'`` (as in
        ``HistGradientBoostingRegressor``) is on from 200 samples, where the
        validation part has 20 rows or more: there the full path overfits
        noisy data badly and a held-out part finds the step; below, its few
        rows choose the step worse than running every step (the user guide,
        :doc:`/kernel_scale`, gives the measurements). ``do_early_stopping_``
        says what a fit did.
    validation_fraction : float, default=0.1
        Held-out fraction for ``early_stopping``.
    n_iter_no_change : int, default=10
        Steps without improvement before stopping (with a float ``tol``).
"""
        + SHARPNESS_MEASURES_DOC
        + r"""
        The measure stored in ``sharpness_`` (see :mod:`sksam.sharpness`), of the
        training loss at the fitted weights, computed exactly. ``'rho'`` is
        :math:`\max_{\|e\| \le \rho} L(\theta + e) - L(\theta)` with the
        estimator's ``rho``: it depends on the fitted weights, so it tells the
        solvers' solutions apart. The Hessian of the squared loss does not
        depend on the weights, so ``'top_eigenvalue'``, ``'trace'`` and
        ``'average'`` are the same for every solver and ``rho``. The adaptive
        measures, their coordinates and their cost: the user guide's page on
        sharpness, :doc:`/sharpness`. The logit-normalized measure is refused:
        a squared loss has no logits.
        ``None`` skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split of ``early_stopping`` and the choice of the
        Nystroem centres; the fit is otherwise deterministic.
    verbose : int, default=0
        Print the size of the Krylov basis, the loss (and validation score)
        of at most 30 log-spaced steps, the last included, and a closing line:
        why the fit stopped, the iterate kept, and SAM's share of the weights'
        movement, saying when SAM and gradient descent gave nearly the same
        model (a share below 10%, as the two-layer estimators say).
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
"""
        + FIT_ATTRIBUTES_DOC
        + r"""

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
    )

    _y_checks = {"multi_output": True, "y_numeric": True}
    _scale_hint = "standardize X and y"

    def _encode_targets(self, X, y, sw):
        """Numeric targets as they are, 2D (numeric strings converted, others named)."""
        Y = y.reshape(X.shape[0], -1)
        if not is_dask(Y):
            Y = numeric_target(Y, type(self).__name__)
        one_output = y.ndim == 1
        return Targets(Y, sw, ravel_coef=one_output, ravel_decision=one_output)

    def _validation_score(self):
        return R2Score()

    # --------------------------------------------------------------- fitting

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
        return self._fit(X, y, sample_weight)

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
        return self._decision(X)

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
        yield from self._staged_decision(X)


class SharedBuild:
    """One training set's model and problem, built once for many paths on it.

    The first :meth:`build` builds the model and problem (kernel matrix or
    moments ``A``, ``b``, top eigenvalue); the next ones return the same
    problem, its targets rescaled by the power of two between the two fits'
    scalings of ``y`` (exact), and a copy of the model. The paths share the
    Krylov checkpoints (:class:`~sksam._kernel_path.KrylovCheckpoints`): each
    gives the result of a fit of its own, to rounding.

    The caller passes the same training data to every fit, with estimators
    that differ only in ``solver``, ``rho``, ``learning_rate``, ``max_iter``,
    ``tol``, ``sharpness`` and ``verbose``, without early stopping (a
    validation part's score holds the scaled targets).

    Attributes
    ----------
    n_builds : int
        Models built (1 once any fit ran).
    """

    def __init__(self):
        self._built = None
        self.n_builds = 0

    def build(self, estimator, X, Y, sw, train, val, source, y_scale):
        """The model and problem of ``estimator``'s fit on the shared data."""
        if val is not None:
            raise ValueError("A shared kernel build needs early_stopping=False.")
        if self._built is None:
            model = estimator._select_model(X, len(train), source)
            problem = model.build(X, Y / y_scale, sw, train, val, estimator._validation_score())
            self._built = model, problem.share(), y_scale
            self.n_builds += 1
        model, problem, built_scale = self._built
        return copy.copy(model), problem.rescaled(built_scale / y_scale)


class Targets:
    """The coded targets of a fit and what comes with them.

    ``Y`` (2D) is what the path fits; ``sample_weight`` the weights of the
    loss (a classifier's class weights included); ``ravel_coef`` and
    ``ravel_decision`` whether the coefficients and the outputs drop their
    column axis; ``stratify`` the labels the validation split keeps the
    proportions of; ``fitted`` the attributes the coding adds (``classes_``).
    """

    def __init__(self, Y, sample_weight, *, ravel_coef, ravel_decision, stratify=None, fitted=None):
        self.Y, self.sample_weight = Y, sample_weight
        self.ravel_coef, self.ravel_decision = ravel_coef, ravel_decision
        self.stratify, self.fitted = stratify, fitted or {}


def _power_of_two_scale(top, rho):
    """``2^k`` near ``max(top, rho)`` (1 if both are 0): dividing by it is exact.

    SAM's radius ``rho`` is in the units of the weights: a SAM path on a tiny
    ``y`` moves by ``rho``, so the scale is the larger of the two.
    """
    top = max(float(top), float(rho))
    if not (np.isfinite(top) and top > 0):
        return 1.0
    return float(2.0 ** np.round(np.log2(top)))


def _check_dtype(dtype):
    name = None if dtype is None else str(dtype).rsplit(".", 1)[-1].split("'")[0]
    if name not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be None, 'float64' or 'float32', got {dtype!r}.")
    return name
