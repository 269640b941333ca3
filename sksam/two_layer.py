"""A network with one hidden layer, fitted by gradient descent or SAM.

The estimator lives here; the network, its loss and its hand-written gradient
live in :mod:`sksam._two_layer_model`, and the fit loop's shared pieces
(constraints, stopping rule, history, warnings) in :mod:`sksam._base`.
"""

import math
import numbers

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _two_layer_model as _model
from ._activations import ACTIVATIONS, NUMPY_ACTIVATIONS
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
    warn_interrupted,
    warn_not_converged,
)
from ._schedules import SCHEDULED_SOLVERS, schedule_for
from ._threads import N_THREADS_CONSTRAINT, resolve_n_threads, torch_threads
from ._update_rules import SOLVERS
from .sharpness import measure_sharpness

__all__ = ["SAMTwoLayerRegressor"]


class SAMTwoLayerRegressor(RegressorMixin, BaseEstimator):
    r"""Network with one hidden layer, fitted by gradient descent or SAM.

    The model is

    .. math::

        f(x) = \sum_{j=1}^{h} a_j\, \sigma(w_j^\top x + b_j) + c,

    fitted to the mean squared loss
    :math:`L = \frac{1}{2n}\sum_i \lVert f(x_i) - y_i\rVert^2` (summed over
    outputs for a 2-d ``y``; weighted by ``sample_weight`` if given) by
    full-batch gradient descent, or by Sharpness-Aware Minimization (Foret et
    al. 2021) and its variants: each step is
    :math:`w \leftarrow w - \eta \nabla L(w + e)` with the perturbation
    :math:`e` given under ``solver`` (``e = 0`` for ``'gd'``). This is the
    non-convex setting of Behdin & Mazumder where SAM's prediction error is
    clearly below gradient descent's: GD fits the label noise, SAM does not,
    and SAM's solution is flatter (a smaller ``sharpness_``).

    Computations run in **float32**; the fitted arrays are returned as
    float64 numpy arrays.

    Parameters
    ----------
    solver : {'gd', 'sam', 'usam', 'asam', 'every_k', 'looksam', 'rst', 'aesam'}, default='sam'
        The update rule, with :math:`g = \nabla L(w)`: gradient descent
        (``e = 0``), SAM (``e = rho g/||g||``), unnormalized SAM
        (``e = rho g``) or adaptive SAM (``e = rho T^2 g/||T g||``,
        ``T = |w| + 0.01`` on the weight matrices ``W`` and ``a``, ``T = 1``
        on the intercepts). The cheap variants take SAM's step on some
        steps only and a gradient step on the others: ``'every_k'`` every
        ``sam_every`` steps, ``'looksam'`` the same with LookSAM's reused
        direction in between, ``'rst'`` with probability ``1 / sam_every``,
        ``'aesam'`` when the squared gradient norm is above its moving mean
        (see ``sksam.optim`` and the "SAM on a budget" guide).
    rho : float, default=0.05
        Radius of the perturbation. ``rho=0`` gives gradient descent exactly.
    n_hidden : int, default=100
        Number of hidden units ``h``.
    activation : {'relu', 'tanh', 'logistic', 'quadratic', 'identity'}, default='relu'
        The activation :math:`\sigma`, named as in
        :class:`~sklearn.neural_network.MLPRegressor`; ``'quadratic'`` is
        :math:`z^2`.
    train_output_layer : bool, default=True
        If False, only the hidden layer (``W``, ``b``) is trained; the output
        weights keep their initial values (see Notes).
    init_scale : float, default=0.1
        Scale ``s`` of the initialization (see Notes). Small values start
        near the zero function, the regime where SAM's advantage is largest.
    learning_rate : float, default=0.05
        Step size :math:`\eta`. Plain gradient descent has no adaptive step,
        so the stable range depends on the scale of the data: standardize
        ``X`` (:class:`~sklearn.preprocessing.StandardScaler`) and ``y``
        (:class:`~sklearn.compose.TransformedTargetRegressor`). A fit that
        diverges or ends as a constant predictor says so with a
        :class:`~sksam.exceptions.DivergenceWarning` (or, if the loss becomes
        non-finite, a ``ValueError``).
    batch_size : int or None, default=None
        ``None`` uses the full batch at each step (the paper's setting);
        otherwise mini-batches of this size, reshuffled at each epoch.
    max_iter : int, default=1000
        Maximum number of iterations (epochs; one step each at full batch).
    tol : float or None, default=1e-4
        Tolerance of the stopping rule, as in
        :class:`~sklearn.neural_network.MLPRegressor`: training stops when the
        training loss (or, with ``early_stopping``, the validation score) has
        not improved by at least ``tol`` for more than ``n_iter_no_change``
        consecutive iterations. ``None`` disables the rule: exactly
        ``max_iter`` iterations, no ``ConvergenceWarning``; with
        ``early_stopping`` the weights with the best validation score are
        still the ones kept.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its
        :math:`R^2` stops improving, and keep the weights with the best
        validation score. Both parts must have at least 2 samples.
    validation_fraction : float, default=0.1
        Fraction of the data held out when ``early_stopping`` is True.
    n_iter_no_change : int, default=10
        Iterations without improvement before stopping.
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        The measure stored in ``sharpness_``, computed once at the end of
        ``fit`` by :func:`sksam.sharpness.measure_sharpness`; None skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the mini-batches, the validation split and
        the sharpness computation.
    device : str, default='cpu'
        Torch device to train on, e.g. ``'cuda'``; an unavailable device is a
        ``ValueError``.
    n_threads : int or None, default=None
        Torch threads during ``fit``, restored afterwards. None: one thread
        for small problems and inside joblib workers (e.g.
        ``GridSearchCV(n_jobs=2)``), torch's setting otherwise; -1: one per
        core. See the user guide, "Threads".
    warm_start : bool, default=False
        Start from the weights of the previous fit (and append to its
        ``loss_curve_``) instead of a fresh initialization.
    verbose : bool or int, default=False
        Print the loss at each iteration.
    sam_every : int, default=5
        Steps per SAM step of the cheap variants: the period of
        ``'every_k'`` and ``'looksam'``, ``1 / p`` of ``'rst'``; ignored by
        the other solvers. ``'rst'`` draws from a generator seeded by
        ``random_state`` (0 when it is not an int).

    Attributes
    ----------
    coefs_ : list of 2 ndarrays
        ``coefs_[0]`` is ``W`` of shape (n_features, n_hidden) and
        ``coefs_[1]`` is ``a`` of shape (n_hidden, n_outputs), the layout of
        :class:`~sklearn.neural_network.MLPRegressor`.
    intercepts_ : list of 2 ndarrays
        ``b`` of shape (n_hidden,) and ``c`` of shape (n_outputs,).
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
    sharpness_ : float or None
        The ``sharpness`` measure of the mean training loss at the fitted
        weights, with respect to the trained parameters, on the training data
        actually used (without the validation split). None if
        ``sharpness=None``.
    n_outputs_ : int
        Number of outputs.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.neural_network.MLPRegressor : The same model trained by SGD or Adam.
    sksam.SAMKernelRegressor : The convex (kernel) counterpart.

    Notes
    -----
    **Initialization.** With ``s = init_scale``:
    :math:`W_{ij} \sim N(0, s^2/d)`, :math:`a_{jk} \sim N(0, s^2/h)`,
    ``b = 0``, ``c = 0``: LeCun's normal initialization shrunk by ``s``, so
    that training starts near the zero function, as the paper's analysis
    does. With ``train_output_layer=False`` the output weights are frozen at
    random signs :math:`a_j = \pm 1/\sqrt{h}` (the fixed second layer of the
    theory, e.g. Du et al. 2019) and ``c`` at the (weighted) mean of ``y``.
    The user guide compares initializations.

    **Failures.** A ``ConvergenceWarning`` when ``max_iter`` is reached
    before the stopping rule; a warning (and the current weights kept) on
    ``KeyboardInterrupt``; a ``ValueError`` when the loss or the weights
    become non-finite (the estimator is then left unfitted, or with its
    previous fit under ``warm_start``); and a
    :class:`~sksam.exceptions.DivergenceWarning` naming the cause and the
    remedy when the loss grows by orders of magnitude or the fitted network
    predicts a constant (for example every ReLU unit died after a too-large
    step on unscaled targets).

    References
    ----------
    .. [1] K. Behdin, R. Mazumder, "On Statistical Properties of
       Sharpness-Aware Minimization: Provable Guarantees", arXiv:2302.11836.
    .. [2] P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware
       Minimization for Efficiently Improving Generalization", ICLR 2021.
    .. [3] S. S. Du, X. Zhai, B. Poczos, A. Singh, "Gradient Descent Provably
       Optimizes Over-parameterized Neural Networks", ICLR 2019.

    Examples
    --------
    >>> from sksam import SAMTwoLayerRegressor
    >>> from sksam.datasets import make_teacher_student
    >>> X, y, y_true = make_teacher_student(n_samples=100, random_state=0)
    >>> reg = SAMTwoLayerRegressor(n_hidden=20, rho=0.1, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.coefs_[0].shape, reg.coefs_[1].shape
    ((10, 20), (20, 1))
    >>> bool(reg.sharpness_ > 0)
    True
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_hidden": [Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "train_output_layer": ["boolean"],
        "init_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "device": [str],
        "n_threads": N_THREADS_CONSTRAINT,
        "warm_start": ["boolean"],
        # the cheap variants of SAM (sksam._schedules) on top of the common solvers
        "solver": [StrOptions(set(SOLVERS) | set(SCHEDULED_SOLVERS))],
        "sam_every": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        solver="sam",
        rho=0.05,
        *,
        n_hidden=100,
        activation="relu",
        train_output_layer=True,
        init_scale=0.1,
        learning_rate=0.05,
        batch_size=None,
        max_iter=1000,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        sharpness="top_eigenvalue",
        random_state=None,
        device="cpu",
        n_threads=None,
        warm_start=False,
        verbose=False,
        sam_every=5,
    ):
        self.solver = solver
        self.sam_every = sam_every
        self.rho = rho
        self.n_hidden = n_hidden
        self.activation = activation
        self.train_output_layer = train_output_layer
        self.init_scale = init_scale
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.sharpness = sharpness
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.warm_start = warm_start
        self.verbose = verbose

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples in the mean loss (and in the
            validation score); integer weights act as repeated rows.

        Returns
        -------
        self : SAMTwoLayerRegressor
            The fitted estimator.
        """
        warm = self.warm_start and hasattr(self, "coefs_")
        X, y = validate_data(
            self,
            X,
            y,
            reset=not warm,
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
        )
        y = numeric_target(y, type(self).__name__)
        Y = y.reshape(len(y), -1)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
        if warm and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"warm_start=True but y has {Y.shape[1]} outputs where the previous "
                f"fit had {self.n_outputs_}; fit with warm_start=False."
            )
        device = check_device(self.device)
        if not warm:  # a fit that fails below must not leave an older fit behind
            self._forget_fit()
        rng = check_random_state(self.random_state)
        train, val = self._split(X.shape[0], rng)
        work = len(train) * self.n_hidden * (X.shape[1] + Y.shape[1])
        with torch_threads(resolve_n_threads(self.n_threads, work)):
            self._fit(X, Y, sample_weight, train, val, rng, device, warm)
        return self

    def _fit(self, X, Y, sample_weight, train, val, rng, device, warm):
        """Train on rows ``train``, validate on rows ``val``, store the fit."""
        weights = None if sample_weight is None else sample_weight[train]
        data = _TrainingData(X[train], Y[train], weights, device)
        validation = None
        if val is not None:
            validation = (X[val], Y[val], None if sample_weight is None else sample_weight[val])
        params = self._initial_params(data, rng, warm, device)
        history = self._history(warm)
        params = self._train(params, data, validation, rng, history)
        self._store(params, history, Y.shape[1])
        self.sharpness_ = self._measure_sharpness(params, data, rng)
        self._check_fitted_model(X[train], Y[train], history)

    def _forget_fit(self):
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _split(self, n_samples, rng):
        """Training and validation rows (``val`` is None without early stopping)."""
        if not self.early_stopping:
            return np.arange(n_samples), None
        return validation_split(n_samples, self.validation_fraction, rng)

    def _initial_params(self, data, rng, warm, device):
        """``[W, b, a, c]`` as float32 tensors: fresh (see Notes) or the last fit's."""
        import torch

        if warm:
            arrays = [self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1]]
        else:
            d, h, k, s = data.n_features, self.n_hidden, data.n_outputs, self.init_scale
            W = rng.standard_normal((d, h)) * (s / math.sqrt(d))
            if self.train_output_layer:
                a = rng.standard_normal((h, k)) * (s / math.sqrt(h))
                c = np.zeros(k)
            else:
                a = rng.choice([-1.0, 1.0], size=(h, k)) / math.sqrt(h)
                c = np.average(data.Y_numpy, axis=0, weights=data.sample_weight)
            arrays = [W, np.zeros(h), a, c]
        return [torch.as_tensor(v, dtype=torch.float32, device=device).clone() for v in arrays]

    def _history(self, warm):
        """The loss curve and validation scores to extend: the last fit's, or empty."""
        if warm:
            return _History(
                list(self.loss_curve_),
                list(self.validation_scores_ or []),
                self.n_iter_,
            )
        return _History([], [], 0)

    def _train(self, params, data, validation, rng, history):
        """The training loop with MLPRegressor's stopping rule; the weights to keep."""
        state = _model.FlatParams(params, train_output_layer=self.train_output_layer)
        params = state.params
        step = _Step(self)
        batches = self._batches(data.n_samples, rng)
        rule = StoppingRule(self.tol, self.n_iter_no_change, on_validation=validation is not None)
        best_params = None
        try:
            for _ in range(self.max_iter):
                loss = step.epoch(state, data, batches)
                history.n_iter += 1
                self._check_finite_loss(loss, history.n_iter)
                history.loss_curve.append(loss)
                score = None
                if validation is not None:
                    score = self._validation_score(params, validation, data.X.device)
                    history.validation_scores.append(score)
                if self.verbose:
                    print_progress(history.n_iter, loss, score)
                stop = rule.update(loss, score)
                if validation is not None and rule.is_best:
                    best_params = [p.clone() for p in params]
                if stop:
                    break
        except KeyboardInterrupt:
            warn_interrupted(type(self).__name__)
            rule.stopped = True
        if not all(bool(p.isfinite().all()) for p in params):
            raise ValueError(
                "The weights became non-finite; learning_rate="
                f"{self.learning_rate} is too large for this data (lower it, or "
                "standardize X and y). No weights were stored."
            )
        if not rule.stopped and self.tol is not None:
            warn_not_converged(type(self).__name__, self.max_iter)
        history.best_validation_score = rule.best_score
        return best_params if best_params is not None else params

    def _check_finite_loss(self, loss, iteration):
        if not math.isfinite(loss):
            raise ValueError(
                f"The training loss became non-finite at iteration {iteration}: "
                f"learning_rate={self.learning_rate} is too large for this data (lower it, "
                "or standardize X and y). No weights were stored."
            )

    def _batches(self, n_samples, rng):
        """A function returning one epoch's batches of row indices (None: all rows)."""
        if self.batch_size is None or self.batch_size >= n_samples:
            return lambda: [None]
        import torch

        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        size = self.batch_size

        def epoch():
            order = torch.randperm(n_samples, generator=generator)
            return [order[i : i + size] for i in range(0, n_samples, size)]

        return epoch

    def _validation_score(self, params, validation, device):
        """:math:`R^2` (weighted by the validation rows' ``sample_weight``)."""
        import torch

        X_val, Y_val, weights = validation
        with torch.no_grad():
            X_t = torch.as_tensor(X_val.astype(np.float32), device=device)
            pred = _model.forward(params, X_t, self.activation).double().cpu().numpy()
        if not np.all(np.isfinite(pred)):
            return -np.inf
        return float(r2_score(Y_val, pred, sample_weight=weights))

    def _store(self, params, history, n_outputs):
        W, b, a, c = [p.detach().cpu().double().numpy() for p in params]
        self.coefs_ = [W, a]
        self.intercepts_ = [b, c]
        self.n_outputs_ = n_outputs
        record_history(
            self,
            loss_curve=history.loss_curve,
            n_iter=history.n_iter,
            validation_scores=history.validation_scores if self.early_stopping else None,
            best_validation_score=history.best_validation_score,
        )

    def _measure_sharpness(self, params, data, rng):
        """``sharpness_`` of the mean training loss at ``params`` (see Attributes)."""
        if self.sharpness is None:
            return None
        n_trained = 4 if self.train_output_layer else 2
        leaves = [p.detach().clone().requires_grad_(i < n_trained) for i, p in enumerate(params)]

        def loss_fn():
            return _model.autograd_loss(leaves, data.X, data.Y, self.activation, data.weights)

        return measure_sharpness(
            self.sharpness,
            loss_fn,
            leaves[:n_trained],
            rho=self.rho,
            random_state=int(rng.randint(np.iinfo(np.int32).max)),
        )

    def _check_fitted_model(self, X, Y, history):
        """Warn when training diverged or ended as a constant predictor."""
        # the whole curve, warm starts included: its start is the loss at the
        # initialization, which a healthy fit leaves below
        causes = [diagnose_loss_curve(history.loss_curve)]
        if np.ptp(Y, axis=0).max() > 0:  # a constant target has a constant answer
            pred = self._raw_predict(X)
            spread = np.ptp(pred, axis=0).max()
            if spread <= 1e-6 * (1.0 + np.abs(pred).max()):
                causes.append(f"the fitted network predicts a constant ({self._dead_units(X)})")
        causes = [cause for cause in causes if cause is not None]
        if causes:
            warn_diverged(
                type(self).__name__,
                "; ".join(causes),
                "Standardize y (e.g. TransformedTargetRegressor(regressor, "
                "transformer=StandardScaler())) and X (StandardScaler), or lower "
                f"learning_rate (now {self.learning_rate}).",
            )

    def _dead_units(self, X):
        """How many hidden units are constant on the training data, in words."""
        W, b = self.coefs_[0], self.intercepts_[0]
        A = NUMPY_ACTIVATIONS[self.activation](X @ W + b)
        dead = int(np.sum(np.ptp(A, axis=0) == 0))
        return f"{dead} of {self.n_hidden} hidden units are constant on the training data"

    # -------------------------------------------------------------- predict

    def _raw_predict(self, X):
        W, a = self.coefs_
        b, c = self.intercepts_
        return NUMPY_ACTIVATIONS[self.activation](X @ W + b) @ a + c

    def predict(self, X):
        """Predict with the fitted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions; 1-d when there is one output.
        """
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        y_pred = self._raw_predict(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


_FITTED = (
    "coefs_",
    "intercepts_",
    "n_outputs_",
    "n_iter_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "sharpness_",
)


class _History:
    """What a fit appends to: the loss curve, the validation scores, the count."""

    def __init__(self, loss_curve, validation_scores, n_iter):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.n_iter = n_iter
        self.best_validation_score = None


class _TrainingData:
    """The training rows as float32 tensors on the device, and their row weights."""

    def __init__(self, X, Y, sample_weight, device):
        import torch

        # astype copies, so read-only inputs (memory maps) are never aliased
        self.X = torch.as_tensor(X.astype(np.float32), device=device)
        self.Y = torch.as_tensor(Y.astype(np.float32), device=device)
        self.Y_numpy = Y
        self.sample_weight = sample_weight
        self.weights = None
        if sample_weight is not None:
            total = sample_weight.sum()
            if not total > 0:
                raise ValueError(
                    "sample_weight sums to 0 on the training rows; give some sample a "
                    "positive weight."
                )
            self.weights = torch.as_tensor(
                (sample_weight / total).astype(np.float32)[:, None], device=device
            )
        self.n_samples, self.n_features = X.shape
        self.n_outputs = Y.shape[1]


class _Step:
    """The estimator's update rule and step size, applied to whole epochs."""

    def __init__(self, estimator):
        self.options = {
            "rho": estimator.rho,
            "learning_rate": estimator.learning_rate,
            "activation": estimator.activation,
            "workspace": _model.Workspace(),
        }
        seed = estimator.random_state if isinstance(estimator.random_state, int) else 0
        rule, schedule = schedule_for(estimator.solver, estimator.sam_every, seed)
        self.options.update(solver=rule, schedule=schedule)

    def epoch(self, state, data, batches):
        """One pass over the data; the (weighted) mean of the batch losses, as a float."""
        total = 0.0
        for idx in batches():
            if idx is None:
                return _model.step_(
                    state, data.X, data.Y, weights=data.weights, **self.options
                ).item()
            idx = idx.to(data.X.device)
            weights, share = None, len(idx) / data.n_samples
            if data.weights is not None:  # each batch's weights renormalized to sum to 1
                weights = data.weights[idx]
                share = float(weights.sum())
                weights = weights / share
            loss = _model.step_(state, data.X[idx], data.Y[idx], weights=weights, **self.options)
            total += loss.item() * share
        return total
