"""Networks with one hidden layer, fitted by gradient descent or SAM.

The estimators live here: one base class owns the fit (validation, the
training loop with its stopping rule, the sharpness, the divergence checks,
and the rule that a fit either succeeds or changes nothing), and the
regressor and the classifier supply their loss, their target encoding, their
validation score and their predictions, as scikit-learn's
``BaseMultilayerPerceptron`` does for ``MLPRegressor`` and ``MLPClassifier``.
The network, its losses and its hand-written gradient live in
:mod:`sksam._two_layer_model`; the pieces shared with the other estimators
(constraints, stopping rule, history, warnings) in :mod:`sksam._base`.
"""

import math
import numbers
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from scipy.special import log_expit, logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _two_layer_model as _model
from ._activations import ACTIVATIONS, NUMPY_ACTIVATIONS
from ._base import (
    COMMON_CONSTRAINTS,
    REGRESSOR_CONSTRAINTS,
    StoppingRule,
    _user_stacklevel,
    check_device,
    diagnose_loss_curve,
    numeric_target,
    print_progress,
    record_history,
    sample_weights,
    validation_split,
    warn_diverged,
    warn_interrupted,
    warn_not_converged,
)
from ._schedules import SCHEDULED_SOLVERS, schedule_for
from ._threads import N_THREADS_CONSTRAINT, resolve_n_threads, torch_threads
from ._update_rules import SOLVERS, is_perturbed
from .sharpness import measure_sharpness

__all__ = ["SAMTwoLayerClassifier", "SAMTwoLayerRegressor"]

#: Below this share of the weights' movement due to SAM's perturbation
#: (:meth:`sksam._two_layer_model.FlatParams.sam_share`), a fit stopped where
#: SAM and gradient descent give nearly the same network, and the verbose
#: output says so. On the gallery's teacher-student problem (200 points, 100
#: hidden units), default fits stop at a share of 4-6 % with test errors
#: within 1 % of gradient descent's; rho=0.2 reaches 15-24 % and 4000 steps
#: 20-150 %, where SAM's error is clearly lower.
SAM_SHARE_COINCIDE = 0.10

#: An early-stopped fit whose training loss fell by less than this fraction of
#: its start stopped on the plateau around the initialization (a network
#: started near the zero function leaves it slowly, and a validation accuracy
#: can sit still for tens of iterations there): a ConvergenceWarning says so.
PLATEAU_DROP = 0.10

#: Gradient descent from the same start "learns" (so that a stuck SAM fit is
#: blamed on ``rho``) when its loss ends below this fraction of a constant
#: predictor's: far from the plateau level, so that a SAM fit that is merely
#: a little slower than gradient descent is not called stuck at a saddle.
GD_LEARNS = 0.75


class _BaseTwoLayer(BaseEstimator):
    """The fit shared by the two-layer regressor and classifier.

    Subclasses set ``_loss`` (a name of :data:`sksam._two_layer_model.LOSSES`)
    and implement ``_encode_target`` (``y`` to the float matrix the loss
    reads, and the target's fitted attributes), ``_score_outputs`` (the
    validation score of raw network outputs), ``_frozen_intercept`` and
    ``_remedy``; and their own ``predict``.
    """

    _loss = None
    _scale_hint = None

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

    def _fit(self, X, y, sample_weight):
        """The transactional fit behind the subclasses' ``fit``.

        The fitted state is built aside and stored only when the whole fit,
        sharpness included, succeeds: a fit that raises (or a
        ``KeyboardInterrupt`` outside the training loop) leaves the estimator
        unfitted, or, under ``warm_start``, exactly as it was.
        """
        warm = self.warm_start and self.__sklearn_is_fitted__()
        before = _fitted_state(self)
        try:
            fitted = self._fit_state(X, y, sample_weight, warm)
        except BaseException:
            # validate_data has already written n_features_in_ (and names)
            _replace_fitted_state(self, before if warm else {})
            raise
        _replace_fitted_state(self, fitted)
        return self

    def __sklearn_is_fitted__(self):
        """Whether a fit has succeeded (the weights are stored).

        Returns
        -------
        fitted : bool
        """
        return "coefs_" in vars(self)

    def _fit_state(self, X, y, sample_weight, warm):
        """Train, and return every fitted attribute in a dict (``self`` untouched)."""
        X, y = validate_data(
            self, X, y, reset=not warm, dtype=(np.float64, np.float32), **self._y_checks
        )
        fitted = {
            name: getattr(self, name)
            for name in ("n_features_in_", "feature_names_in_")
            if hasattr(self, name)
        }
        Y, target_state = self._encode_target(y, warm)
        fitted.update(target_state)
        if sample_weight is not None:
            sample_weight = sample_weights(sample_weight, len(X))
        device = check_device(self.device)
        rng = check_random_state(self.random_state)
        train, val = self._split(y, rng)
        work = len(train) * self.n_hidden * (X.shape[1] + Y.shape[1])
        with torch_threads(resolve_n_threads(self.n_threads, work)):
            weights = None if sample_weight is None else sample_weight[train]
            data = _TrainingData(X[train], Y[train], weights, device)
            validation = None
            if val is not None:
                val_weights = None if sample_weight is None else sample_weight[val]
                validation = (X[val], y[val], val_weights, target_state)
            initial = self._initial_params(data, rng, warm, device)
            history = self._history(warm)
            try:
                params = self._train(initial, data, validation, rng, history)
            except _NonFinite as exc:
                raise ValueError(self._non_finite_message(exc, initial, data)) from None
            fitted.update(self._fitted_weights(params))
            fitted.update(self._fitted_history(history))
            fitted["sharpness_"] = self._sharpness_or_none(params, data, rng)
            self._check_fitted_model(fitted, X[train], Y[train], history, initial, data)
        return fitted

    def _split(self, y, rng):
        """Training and validation rows (``val`` is None without early stopping)."""
        if not self.early_stopping:
            return np.arange(len(y)), None
        return validation_split(len(y), self.validation_fraction, rng, **self._stratify(y))

    def _stratify(self, y):
        return {}

    def _initial_params(self, data, rng, warm, device):
        """``[W, b, a, c]`` as float32 tensors: fresh (see Notes) or the last fit's."""
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
                c = self._frozen_intercept(data.Y_numpy, data.sample_weight)
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
        interrupted = False
        try:
            for _ in range(self.max_iter):
                loss = step.epoch(state, data, batches)
                history.n_iter += 1
                if not math.isfinite(loss):
                    raise _NonFinite(history.n_iter)
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
            rule.stopped = interrupted = True
        if not all(bool(p.isfinite().all()) for p in params):
            raise _NonFinite(history.n_iter, weights=True)
        if not rule.stopped and self.tol is not None:
            warn_not_converged(type(self).__name__, self.max_iter)
        if rule.stopped and not interrupted:  # checked with the fitted model
            history.rule_stop = (rule.best_iteration, validation is not None)
        history.best_validation_score = rule.best_score
        if self.verbose:
            print(self._stopping_line(history.n_iter, rule.stopped, state), flush=True)
        return best_params if best_params is not None else params

    def _plateau_level(self, data):
        """The training loss above which a fit has barely learned, or None.

        ``1 - PLATEAU_DROP`` times the loss of the best constant predictor
        (:meth:`_null_loss`): a fit ending above it explains less than
        ``PLATEAU_DROP`` of what a constant leaves unexplained. Measured
        against the constant rather than the loss at the start, so that a
        network that learned only its output intercept (the regressor at the
        zero-function saddle) counts as stuck, and a warm start that
        continues a good fit does not.
        """
        null = self._null_loss(data.Y_numpy, data.sample_weight)
        return (1 - PLATEAU_DROP) * null if null > 0 else None

    def _warn_if_stopped_on_plateau(self, history, best_iteration, on_validation, initial, data):
        """Warn when the stopping rule ended the fit before the network learned anything."""
        level = self._plateau_level(data)
        curve = history.loss_curve[history.first_iteration :]
        if level is None or not curve[-1] > level:
            return
        name, start, last = type(self).__name__, curve[0], curve[-1]
        null = level / (1 - PLATEAU_DROP)
        if on_validation:
            message = (
                f"{name}: early stopping ended training at iteration {history.n_iter} "
                f"while the training loss was {last:.4g} (from {start:.4g}; a constant "
                f"predictor's is {null:.4g}): the validation score sat on the plateau "
                "around the initialization, and the weights of iteration "
                f"{history.first_iteration + best_iteration} are kept. "
                + self._stuck_remedy(initial, data, level, on_validation=True)
            )
        else:
            message = (
                f"{name}: the stopping rule ended training at iteration {history.n_iter} on "
                f"the plateau around the initialization: the training loss went from "
                f"{start:.4g} to only {last:.4g}, where a constant predictor's is "
                f"{null:.4g}. " + self._stuck_remedy(initial, data, level)
            )
        history.warned_plateau = True
        warnings.warn(message, ConvergenceWarning, stacklevel=_user_stacklevel())

    def _stuck_remedy(self, initial, data, level, on_validation=False):
        """Why a fit barely learned, and what to change: ``rho`` or ``learning_rate``.

        The counterfactual is gradient descent from the same start under the
        same stopping rule (a fit's worth of steps, run only after a fit
        failed): if it gets below ``GD_LEARNS`` times a constant's loss with a
        healthy prediction, SAM's
        perturbation held the network at the zero function, a saddle where
        the gradient vanishes; otherwise the steps were too small to leave the
        plateau before the rule stopped them.
        """
        learned = GD_LEARNS * level / (1 - PLATEAU_DROP)
        if self._perturbed() and self._gradient_descent_learns(initial, data, learned):
            return (
                f"The same fit with rho=0 (gradient descent) leaves it: rho={self.rho} is "
                f"too large for this initialization (init_scale={self.init_scale}), so "
                "SAM's perturbation holds the network at the zero function, a saddle. "
                "Lower rho, or raise init_scale."
            )
        if on_validation:
            return (
                "Raise n_iter_no_change (e.g. 100), or set tol=None to run max_iter "
                "iterations and keep the weights with the best validation score."
            )
        if self.tol is None:
            return (
                f"learning_rate={self.learning_rate} is too small to leave the plateau in "
                f"max_iter={self.max_iter} iterations: raise learning_rate or max_iter."
            )
        return (
            f"learning_rate={self.learning_rate} is too small to leave the plateau before "
            f"the stopping rule (tol={self.tol}, n_iter_no_change={self.n_iter_no_change}) "
            "ends the fit: raise learning_rate, raise n_iter_no_change, or set tol=None "
            "and a larger max_iter."
        )

    def _gradient_descent_learns(self, initial, data, level):
        """Whether gradient descent from ``initial``, under the same rule, ends below ``level``."""
        import torch

        state = _model.FlatParams(initial, train_output_layer=self.train_output_layer)
        step = _Step(self, solver="gd")
        batches = self._batches(data.n_samples, np.random.RandomState(0))
        rule = StoppingRule(self.tol, self.n_iter_no_change, on_validation=False)
        loss = math.inf
        for _ in range(self.max_iter):
            loss = step.epoch(state, data, batches)
            if not math.isfinite(loss) or rule.update(loss):
                break
        if not (math.isfinite(loss) and loss <= level):
            return False
        with torch.no_grad():
            outputs = _model.forward(state.params, data.X, self.activation).double().cpu()
        return self._degenerate(outputs.numpy(), data.Y_numpy) is None

    def _perturbed(self):
        """Whether ``solver`` and ``rho`` take SAM steps (on some steps for the cheap variants)."""
        return is_perturbed(schedule_for(self.solver)[0], self.rho)

    def _stopping_line(self, n_iter, stopped, state):
        """The verbose line that ends a fit: why it stopped, and how much SAM acted."""
        why = "by the stopping rule (tol)" if stopped and self.tol is not None else "at max_iter"
        line = f"{type(self).__name__}: stopped after {n_iter} iterations {why}."
        share = state.sam_share()
        if not self._perturbed() or share is None:
            return line
        line += f" SAM's perturbation accounts for {share:.1%} of the weights' movement in this fit"
        if share < SAM_SHARE_COINCIDE:
            line += (
                ": it stopped in the regime where SAM and gradient descent give nearly "
                "the same network. SAM's effect grows with longer training (tol=None and "
                "a larger max_iter) or a larger rho."
            )
        return line + ("" if share < SAM_SHARE_COINCIDE else ".")

    def _non_finite_message(self, exc, initial, data):
        """Why the loss or the weights became non-finite, naming the parameter to change."""
        what = "weights" if exc.weights else "training loss"
        start = f"The {what} became non-finite at iteration {exc.iteration}"
        if self._perturbed() and self._curve_without_rho(initial, data, exc.iteration):
            return (
                f"{start} with solver={self.solver!r} and rho={self.rho}, while the same "
                f"fit with rho=0 (gradient descent) stays finite: rho={self.rho} is too "
                "large for this data (lower it; on standardized data useful values are "
                "about 0.01 to 0.5). No weights were stored."
            )
        return (
            f"{start}: learning_rate={self.learning_rate} is too large for this data "
            f"(lower it, or {self._scale_hint}). No weights were stored."
        )

    def _curve_without_rho(self, initial, data, n_iter):
        """The loss curve of gradient descent from the same start, or [] if it diverges.

        The counterfactual that tells a ``rho`` too large from a
        ``learning_rate`` too large; run only when a fit has failed.
        """
        state = _model.FlatParams(initial, train_output_layer=self.train_output_layer)
        step = _Step(self, solver="gd")
        batches = self._batches(data.n_samples, np.random.RandomState(0))
        curve = []
        for _ in range(n_iter):
            curve.append(step.epoch(state, data, batches))
            if not math.isfinite(curve[-1]):
                return []
        if not bool(state.flat.isfinite().all()) or diagnose_loss_curve(curve) is not None:
            return []
        with torch.no_grad():
            outputs = _model.forward(state.params, data.X, self.activation).double().cpu()
        if self._degenerate(outputs.numpy(), data.Y_numpy) is not None:
            return []
        return curve

    def _batches(self, n_samples, rng):
        """A function returning one epoch's batches of row indices (None: all rows)."""
        if self.batch_size is None or self.batch_size >= n_samples:
            return lambda: [None]
        # a private generator: torch's global one is never read nor reseeded
        generator = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        size = self.batch_size

        def epoch():
            order = torch.randperm(n_samples, generator=generator)
            return [order[i : i + size] for i in range(0, n_samples, size)]

        return epoch

    def _validation_score(self, params, validation, device):
        """The subclass's score of the network ``params`` on the validation rows."""
        X_val, y_val, weights, target = validation
        with torch.no_grad():
            X_t = torch.as_tensor(X_val.astype(np.float32), device=device)
            outputs = _model.forward(params, X_t, self.activation).double().cpu().numpy()
        if not np.all(np.isfinite(outputs)):
            return -np.inf
        return self._score_outputs(outputs, y_val, weights, target)

    def _fitted_weights(self, params):
        W, b, a, c = [p.detach().cpu().double().numpy() for p in params]
        return {"coefs_": [W, a], "intercepts_": [b, c]}

    def _fitted_history(self, history):
        record = SimpleNamespace()
        record_history(
            record,
            loss_curve=history.loss_curve,
            n_iter=history.n_iter,
            validation_scores=history.validation_scores if self.early_stopping else None,
            best_validation_score=history.best_validation_score,
        )
        return vars(record)

    def _sharpness_or_none(self, params, data, rng):
        """``sharpness_``; None if interrupted (with a warning); non-finite raises."""
        try:
            value = self._measure_sharpness(params, data, rng)
        except KeyboardInterrupt:
            _warn(
                f"{type(self).__name__}: the sharpness computation was interrupted by "
                "user; the trained weights are kept and sharpness_ is None."
            )
            return None
        if value is not None and not math.isfinite(value):
            raise ValueError(
                f"The sharpness of the fitted weights is {value}: the fit diverged "
                f"(learning_rate={self.learning_rate} or rho={self.rho} is too large for "
                "this data; lower them, or standardize the data). No weights were stored."
            )
        return value

    def _measure_sharpness(self, params, data, rng):
        """``sharpness_`` of the mean training loss at ``params`` (see Attributes)."""
        if self.sharpness is None:
            return None
        n_trained = 4 if self.train_output_layer else 2
        leaves = [p.detach().clone().requires_grad_(i < n_trained) for i, p in enumerate(params)]

        def loss_fn():
            return _model.autograd_loss(
                leaves, data.X, data.Y, self.activation, data.weights, loss=self._loss
            )

        return measure_sharpness(
            self.sharpness,
            loss_fn,
            leaves[:n_trained],
            rho=self.rho,
            random_state=int(rng.randint(np.iinfo(np.int32).max)),
            logits_fn=self._logits_fn(leaves, data),
        )

    def _logits_fn(self, leaves, data):
        """What the logit-normalized sharpness reads; a regressor has no logits."""
        return None

    def _check_fitted_model(self, fitted, X, Y, history, initial, data):
        """Raise on non-finite outputs; warn when training diverged or ended constant."""
        outputs = _forward(fitted, self.activation, X)
        final_loss = self._outputs_loss(outputs, Y, data.sample_weight)
        if not (np.all(np.isfinite(outputs)) and np.isfinite(final_loss)):
            raise ValueError(
                "The fitted network's outputs on the training data are not finite: "
                f"the fit diverged (lower learning_rate={self.learning_rate}, or "
                f"{self._scale_hint}). No weights were stored."
            )
        # the whole curve, warm starts included: its start is the loss at the
        # initialization, which a healthy fit leaves below; the curve holds the
        # loss before each step, so the loss after the last step ends it
        causes = [diagnose_loss_curve([*history.loss_curve, final_loss])]
        if _is_constant(outputs, Y):
            dead = _dead_units(fitted, self.activation, X)
            causes.append(
                f"the fitted network predicts a constant ({dead} of {self.n_hidden} "
                "hidden units are constant on the training data)"
            )
        causes = [cause for cause in causes if cause is not None]
        n_iter = history.n_iter - history.first_iteration  # this call's iterations
        if not causes:  # a divergence says why on its own; else a stop that learned nothing
            if history.rule_stop is not None:
                self._warn_if_stopped_on_plateau(history, *history.rule_stop, initial, data)
            degenerate = self._degenerate(outputs, Y)
            # a stop on the plateau has said why already
            if degenerate is not None and not history.warned_plateau:
                self._warn_degenerate(degenerate, history, initial, data)
            return
        remedy = self._remedy() + f"lower learning_rate (now {self.learning_rate})."
        if self._perturbed() and self._curve_without_rho(initial, data, n_iter):
            remedy = (
                f"The same fit with rho=0 (gradient descent) is healthy: rho={self.rho} is "
                "too large for this data; lower it (on standardized data useful values "
                "are about 0.01 to 0.5)."
            )
        warn_diverged(type(self).__name__, "; ".join(causes), remedy)

    def _degenerate(self, outputs, Y):
        """What is wrong with a healthy-looking fit's training outputs, or None.

        The regressor: a constant prediction (also checked, as a divergence,
        by :meth:`_check_fitted_model`); the classifier adds a single class.
        """
        return "the fitted network predicts a constant" if _is_constant(outputs, Y) else None

    def _warn_degenerate(self, cause, history, initial, data):
        """ConvergenceWarning for a fit that ended degenerate without diverging."""
        level = self._plateau_level(data)
        curve = history.loss_curve[history.first_iteration :]
        if level is not None and curve[-1] > level:
            remedy = self._stuck_remedy(initial, data, level)
        else:
            remedy = (
                f"{self._remedy()}change learning_rate (now {self.learning_rate}), or "
                f"rho (now {self.rho})."
            )
        warnings.warn(
            f"{type(self).__name__}: {cause}. {remedy}",
            ConvergenceWarning,
            stacklevel=_user_stacklevel(),
        )

    # -------------------------------------------------------------- predict

    def _outputs(self, X):
        """The network's outputs on ``X`` (after the fitted checks)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return _forward(vars(self), self.activation, X)


class SAMTwoLayerRegressor(RegressorMixin, _BaseTwoLayer):
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
        Larger radii act more, but a network started near zero
        (``init_scale``) with few hidden units can stay at the zero function
        when ``rho`` is large against its weights (see Notes).
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
        ``max_iter`` iterations, no ``ConvergenceWarning`` for reaching it; with
        ``early_stopping`` the weights with the best validation score are
        still the ones kept.
        The default stops early, before the network fits much label noise;
        SAM's larger gains over gradient descent live in long schedules
        (``tol=None``, see Notes).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its
        :math:`R^2` stops improving, and keep the weights with the best
        validation score. Both parts must have at least 2 samples.
        From a start near the zero function the validation score can sit
        still for tens of iterations: a fit that early stopping ends while
        the training loss is above 90 % of a constant predictor's warns
        (raise ``n_iter_no_change``, or set ``tol=None`` to run ``max_iter``
        iterations and keep the best weights).
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
        Print the loss at each iteration, and at the end why training
        stopped and how much of the weights' movement SAM's perturbation
        caused (saying so when the fit stopped where SAM and gradient descent
        coincide).
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

    **Defaults and when SAM acts.** The default stopping rule ends a fit on
    standardized data after a few hundred full-batch steps, where SAM's
    network is nearly gradient descent's; ``rho`` around 0.1 - 0.2, or a
    long run (``tol=None``), lets SAM act. With ``verbose`` the last line
    says which regime the fit stopped in. Measurements: the user guide,
    :ref:`When SAM and GD coincide <sam-gd-coincide>`.

    **Transactional fit.** The fitted attributes are built aside and set
    only when ``fit`` succeeds: a fit that raises, or is interrupted after
    training (during the sharpness), leaves the estimator unfitted, or
    under ``warm_start`` exactly as before the call. Randomness comes from
    ``random_state`` only (a private generator for the mini-batches); torch's
    global random state is neither read nor reseeded.

    **Failures.** A ``ConvergenceWarning`` when ``max_iter`` is reached
    before the stopping rule; a warning (and the current weights kept) on
    ``KeyboardInterrupt`` during training, and a warning with
    ``sharpness_ = None`` during the sharpness; a ``ValueError`` when the
    loss, the weights or the sharpness become non-finite, naming ``rho``
    when the same fit with ``rho=0`` stays finite and ``learning_rate``
    otherwise (the estimator is then left unfitted, or with its previous fit
    under ``warm_start``); and a
    :class:`~sksam.exceptions.DivergenceWarning` naming the cause and the
    remedy when the loss grows by orders of magnitude or the fitted network
    predicts a constant (for example every ReLU unit died after a too-large
    step on unscaled targets). A fit that the stopping rule ends while the
    training loss is still above 90 % of the best constant predictor's (on
    the plateau around the initialization) gives a ``ConvergenceWarning``
    naming the likely cause: ``rho`` when gradient descent from the same
    start, under the same rule, ends below 75 % of a constant's loss (SAM
    held the network at the zero function, a saddle), ``learning_rate`` and
    ``tol`` otherwise. A classifier that ends predicting a single class on
    training data of several warns in the same way, with or without the
    stopping rule.

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
    >>> X, y = make_teacher_student(n_samples=100, random_state=0)
    >>> reg = SAMTwoLayerRegressor(n_hidden=20, rho=0.1, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    >>> reg.coefs_[0].shape, reg.coefs_[1].shape
    ((10, 20), (20, 1))
    >>> bool(reg.sharpness_ > 0)
    True
    """

    _loss = "squared_error"
    _parameter_constraints = {**_BaseTwoLayer._parameter_constraints, **REGRESSOR_CONSTRAINTS}
    _scale_hint = "standardize X and y"
    _y_checks = {"multi_output": True, "y_numeric": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to ``X, y``.

        A fit that fails stores nothing: the estimator is left unfitted, or
        under ``warm_start`` exactly as before the call.

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
        return self._fit(X, y, sample_weight)

    def _encode_target(self, y, warm):
        y = numeric_target(y, type(self).__name__)
        Y = y.reshape(len(y), -1)
        if warm and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"warm_start=True but y has {Y.shape[1]} outputs where the previous "
                f"fit had {self.n_outputs_}; fit with warm_start=False."
            )
        return Y, {"n_outputs_": Y.shape[1]}

    def _score_outputs(self, outputs, y, sample_weight, target):
        """:math:`R^2` (weighted by the validation rows' ``sample_weight``)."""
        return float(r2_score(y.reshape(outputs.shape), outputs, sample_weight=sample_weight))

    def _frozen_intercept(self, Y, sample_weight):
        return np.average(Y, axis=0, weights=sample_weight)

    def _outputs_loss(self, outputs, Y, sample_weight):
        """The training loss of ``outputs``: half the (weighted) mean squared error."""
        with np.errstate(over="ignore"):
            per_row = 0.5 * np.sum((outputs - Y) ** 2, axis=1)
        return float(np.average(per_row, weights=sample_weight))

    def _null_loss(self, Y, sample_weight):
        """The loss of the best constant: half the (weighted) variance, summed over outputs."""
        mean = np.average(Y, axis=0, weights=sample_weight)
        return 0.5 * float(np.sum(np.average((Y - mean) ** 2, axis=0, weights=sample_weight)))

    def _remedy(self):
        return (
            "Standardize y (e.g. TransformedTargetRegressor(regressor, "
            "transformer=StandardScaler())) and X (StandardScaler), or "
        )

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
        y_pred = self._outputs(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SAMTwoLayerClassifier(ClassifierMixin, _BaseTwoLayer):
    r"""Network with one hidden layer for classification, fitted by gradient descent or SAM.

    The network of :class:`SAMTwoLayerRegressor`,

    .. math::

        f(x) = \sum_{j=1}^{h} a_j\, \sigma(w_j^\top x + b_j) + c,

    with its outputs read as logits and fitted to the mean cross-entropy
    (weighted by ``sample_weight`` if given): the logistic loss
    :math:`\log(1 + e^{f(x)}) - y f(x)` with one output for two classes, the
    softmax cross-entropy :math:`\log\sum_k e^{f_k(x)} - f_{y}(x)` with one
    output per class otherwise, as
    :class:`~sklearn.neural_network.MLPClassifier` does. Trained by
    full-batch gradient descent or by SAM and its variants exactly as the
    regressor (the same parameters, stopping rule, divergence checks and
    thread policy); with ``early_stopping`` the stopping rule watches the
    validation accuracy.

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
        :class:`~sklearn.neural_network.MLPClassifier`; ``'quadratic'`` is
        :math:`z^2`.
    train_output_layer : bool, default=True
        If False, only the hidden layer (``W``, ``b``) is trained; the output
        weights keep their initial values (random signs
        :math:`\pm 1/\sqrt{h}`, and ``c`` at the log-odds of the weighted class
        frequencies).
    init_scale : float, default=1.0
        Scale ``s`` of the initialization: :math:`W_{ij} \sim N(0, s^2/d)`,
        :math:`a_{jk} \sim N(0, s^2/h)`, ``b = c = 0`` (LeCun's normal
        initialization at ``s = 1``). Larger than the regressor's default:
        see Notes, "Defaults".
    learning_rate : float, default=1.0
        Step size :math:`\eta`; standardize ``X``
        (:class:`~sklearn.preprocessing.StandardScaler`) or scale it to
        about unit range. Larger than the regressor's default: see Notes.
    batch_size : int or None, default=None
        ``None`` uses the full batch at each step; otherwise mini-batches of
        this size, reshuffled at each epoch.
    max_iter : int, default=1000
        Maximum number of iterations (epochs; one step each at full batch).
    tol : float or None, default=1e-4
        Tolerance of the stopping rule: training stops when the training
        loss (or, with ``early_stopping``, the validation accuracy) has not
        improved by at least ``tol`` for more than ``n_iter_no_change``
        consecutive iterations. ``None`` disables the rule: exactly
        ``max_iter`` iterations, no ``ConvergenceWarning`` for reaching it.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified by
        class), stop when its accuracy stops improving, and keep the weights
        with the best validation accuracy. From a start near the zero
        function (a small ``init_scale``) the accuracy can sit still for tens
        of iterations: a fit that early stopping ends while the training loss
        is above 90 % of a constant predictor's warns (raise
        ``n_iter_no_change``, or set ``tol=None`` to run ``max_iter``
        iterations and keep the best weights). At the default step the
        validation accuracy oscillates from step to step, and
        ``n_iter_no_change=10`` can end a fit well before its best: with
        early stopping, ``n_iter_no_change`` around 50 is the safer choice.
    validation_fraction : float, default=0.1
        Fraction of the data held out when ``early_stopping`` is True.
    n_iter_no_change : int, default=10
        Iterations without improvement before stopping.
    sharpness : {'top_eigenvalue', 'trace', 'rho'} or None, default='top_eigenvalue'
        The measure stored in ``sharpness_``, computed once at the end of
        ``fit`` by :func:`sksam.sharpness.measure_sharpness` on the mean
        cross-entropy; None skips it.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization, the mini-batches, the validation split and
        the sharpness computation.
    device : str, default='cpu'
        Torch device to train on, e.g. ``'cuda'``; an unavailable device is a
        ``ValueError``.
    n_threads : int or None, default=None
        Torch threads during ``fit``, restored afterwards, as in
        :class:`SAMTwoLayerRegressor`.
    warm_start : bool, default=False
        Start from the weights of the previous fit (and append to its
        ``loss_curve_``); the classes of ``y`` must be among ``classes_``.
    verbose : bool or int, default=False
        Print the loss at each iteration, and at the end why training
        stopped and how much of the weights' movement SAM's perturbation
        caused.
    sam_every : int, default=5
        Steps per SAM step of the cheap variants: the period of
        ``'every_k'`` and ``'looksam'``, ``1 / p`` of ``'rst'``; ignored by
        the other solvers. ``'rst'`` draws from a generator seeded by
        ``random_state`` (0 when it is not an int).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    coefs_ : list of 2 ndarrays
        ``W`` of shape (n_features, n_hidden) and ``a`` of shape
        (n_hidden, n_outputs).
    intercepts_ : list of 2 ndarrays
        ``b`` of shape (n_hidden,) and ``c`` of shape (n_outputs,).
    n_outputs_ : int
        Number of outputs: 1 for two classes, ``n_classes`` otherwise.
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
        The ``sharpness`` measure of the mean training cross-entropy at the
        fitted weights, with respect to the trained parameters; None if
        ``sharpness=None`` (or if the sharpness computation was interrupted).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    SAMTwoLayerRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : The same model trained by SGD or Adam.

    Notes
    -----
    The fit is shared with :class:`SAMTwoLayerRegressor` (see its Notes for
    the initialization, the transactional fit and the failures); only the
    loss, the target encoding, the validation score and the predictions
    differ.

    **Defaults and when SAM acts.** The classifier has its own
    ``init_scale=1.0`` and ``learning_rate=1.0`` (the regressor's are 0.1
    and 0.05): the cross-entropy is flatter than the squared error, and from
    the regressor's near-zero start a ten-class fit stops on the initial
    plateau. A fit that stops there, or predicts a single class, gives a
    ``ConvergenceWarning`` naming ``rho`` or ``learning_rate`` (see
    :class:`SAMTwoLayerRegressor`, "Failures"). Measurements: the user
    guide, :ref:`When SAM and GD coincide <sam-gd-coincide>`.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sksam import SAMTwoLayerClassifier
    >>> X, y = make_classification(n_samples=100, random_state=0)
    >>> clf = SAMTwoLayerClassifier(n_hidden=20, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> clf.classes_
    array([0, 1])
    """

    _loss = "log_loss"
    _scale_hint = "standardize X"
    _y_checks = {}

    # The regressor's parameters with the classifier's own defaults for
    # init_scale and learning_rate (see Notes, "Defaults"); everything else
    # is shared through _BaseTwoLayer.
    def __init__(
        self,
        solver="sam",
        rho=0.05,
        *,
        n_hidden=100,
        activation="relu",
        train_output_layer=True,
        init_scale=1.0,
        learning_rate=1.0,
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
        super().__init__(
            solver=solver,
            rho=rho,
            n_hidden=n_hidden,
            activation=activation,
            train_output_layer=train_output_layer,
            init_scale=init_scale,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_iter=max_iter,
            tol=tol,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            sharpness=sharpness,
            random_state=random_state,
            device=device,
            n_threads=n_threads,
            warm_start=warm_start,
            verbose=verbose,
            sam_every=sam_every,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to ``X, y``.

        A fit that fails stores nothing: the estimator is left unfitted, or
        under ``warm_start`` exactly as before the call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Class labels (any type numpy sorts).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples in the mean loss (and in the
            validation score); integer weights act as repeated rows.

        Returns
        -------
        self : SAMTwoLayerClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight)

    def _encode_target(self, y, warm):
        check_classification_targets(y)
        classes = np.unique(y)
        if warm:
            unseen = np.setdiff1d(classes, self.classes_)
            if unseen.size:
                raise ValueError(
                    f"warm_start=True but y has classes {unseen.tolist()} that the previous "
                    f"fit did not have (classes_={self.classes_.tolist()}); fit with "
                    "warm_start=False."
                )
            classes = self.classes_
        elif classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                f"got only one class: {classes.tolist()}."
            )
        codes = np.searchsorted(classes, y)
        if classes.size == 2:
            Y = codes[:, None].astype(np.float64)
        else:
            Y = (codes[:, None] == np.arange(classes.size)).astype(np.float64)
        return Y, {"classes_": classes, "n_outputs_": Y.shape[1]}

    def _stratify(self, y):
        return {"stratify": y}

    def _logits_fn(self, leaves, data):
        """The outputs as logits and the class indices, for the logit-normalized sharpness."""
        Y = data.Y
        classes = Y[:, 0].long() if Y.shape[1] == 1 else Y.argmax(dim=1)
        return lambda: (_model.autograd_outputs(leaves, data.X, self.activation), classes)

    def _score_outputs(self, outputs, y, sample_weight, target):
        """Accuracy (weighted by the validation rows' ``sample_weight``)."""
        labels = self._labels(outputs, target["classes_"])
        return float(accuracy_score(y, labels, sample_weight=sample_weight))

    def _outputs_loss(self, outputs, Y, sample_weight):
        """The training loss of ``outputs`` (logits): the (weighted) mean cross-entropy."""
        if Y.shape[1] == 1:  # logistic: softplus(f) - y f
            per_row = -log_expit(-outputs[:, 0]) - Y[:, 0] * outputs[:, 0]
        else:
            per_row = logsumexp(outputs, axis=1) - np.sum(Y * outputs, axis=1)
        return float(np.average(per_row, weights=sample_weight))

    def _null_loss(self, Y, sample_weight):
        """The loss of the best constant: the entropy of the (weighted) class frequencies."""
        p = np.average(Y, axis=0, weights=sample_weight)
        p = np.r_[p, 1 - p] if Y.shape[1] == 1 else p
        p = p[p > 0]
        return float(-np.sum(p * np.log(p)))

    def _degenerate(self, outputs, Y):
        """A single class predicted on training rows of several classes, or None."""
        labels = self._labels(outputs, np.arange(max(Y.shape[1], 2)))
        codes = Y[:, 0].astype(int) if Y.shape[1] == 1 else np.argmax(Y, axis=1)
        n_classes = np.unique(codes).size
        if n_classes < 2 or np.unique(labels).size > 1:
            return None
        return f"the fitted network predicts a single class on training data of {n_classes} classes"

    def _frozen_intercept(self, Y, sample_weight):
        p = np.clip(np.average(Y, axis=0, weights=sample_weight), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)) if Y.shape[1] == 1 else np.log(p)

    def _remedy(self):
        return "Standardize X (StandardScaler), or "

    @staticmethod
    def _labels(outputs, classes):
        if outputs.shape[1] == 1:
            return classes[(outputs[:, 0] > 0).astype(int)]
        return classes[np.argmax(outputs, axis=1)]

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            The class of highest probability.
        """
        return self._labels(self._outputs(X), self.classes_)

    def predict_proba(self, X):
        """Compute the class probabilities: the sigmoid or softmax of the outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of the classes, in the order of ``classes_``.
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Compute the logarithms of the class probabilities, without overflow.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities of the classes, in the order of ``classes_``.
        """
        F = self._outputs(X)
        if F.shape[1] == 1:
            return np.c_[log_expit(-F[:, 0]), log_expit(F[:, 0])]
        return F - logsumexp(F, axis=1, keepdims=True)


def _forward(fitted, activation, X):
    """``sigma(X W + b) a + c`` in numpy, from fitted ``coefs_`` and ``intercepts_``."""
    W, a = fitted["coefs_"]
    b, c = fitted["intercepts_"]
    return NUMPY_ACTIVATIONS[activation](X @ W + b) @ a + c


def _dead_units(fitted, activation, X):
    """How many hidden units are constant on ``X``."""
    W, b = fitted["coefs_"][0], fitted["intercepts_"][0]
    A = NUMPY_ACTIVATIONS[activation](X @ W + b)
    return int(np.sum(np.ptp(A, axis=0) == 0))


def _is_constant(outputs, Y):
    """Whether the network's outputs are constant although the target ``Y`` is not."""
    if not np.ptp(Y, axis=0).max() > 0:  # a constant target has a constant answer
        return False
    return np.ptp(outputs, axis=0).max() <= 1e-6 * (1.0 + np.abs(outputs).max())


def _warn(message):
    warnings.warn(message, UserWarning, stacklevel=_user_stacklevel())


def _fitted_state(estimator):
    """The estimator's fitted attributes (names ending in ``_``), by name."""
    return {
        name: value
        for name, value in vars(estimator).items()
        if name.endswith("_") and not name.startswith("__")
    }


def _replace_fitted_state(estimator, fitted):
    """Drop every fitted attribute of ``estimator``, then set ``fitted``."""
    for name in _fitted_state(estimator):
        delattr(estimator, name)
    for name, value in fitted.items():
        setattr(estimator, name, value)


class _NonFinite(Exception):
    """The loss (or, with ``weights``, the weights) became non-finite at ``iteration``."""

    def __init__(self, iteration, *, weights=False):
        super().__init__(iteration)
        self.iteration = iteration
        self.weights = weights


class _History:
    """What a fit appends to: the loss curve, the validation scores, the count."""

    def __init__(self, loss_curve, validation_scores, n_iter):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.n_iter = n_iter
        self.first_iteration = n_iter  # where this call started (warm starts)
        self.best_validation_score = None
        self.rule_stop = None  # (best iteration, on validation) when the rule stopped
        self.warned_plateau = False


class _TrainingData:
    """The training rows as float32 tensors on the device, and their row weights."""

    def __init__(self, X, Y, sample_weight, device):
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
    """The update rule, step size and loss, applied to whole epochs.

    The one place where an estimator's ``solver`` reaches the update rules:
    :func:`sksam._two_layer_model.step_` takes the perturbation from
    :mod:`sksam._update_rules` by name.
    """

    def __init__(self, estimator, *, solver=None):
        seed = estimator.random_state if isinstance(estimator.random_state, int) else 0
        rule, schedule = schedule_for(
            estimator.solver if solver is None else solver, estimator.sam_every, seed
        )
        self.options = {
            "solver": rule,
            "schedule": schedule,
            "rho": estimator.rho,
            "learning_rate": estimator.learning_rate,
            "activation": estimator.activation,
            "loss": estimator._loss,
            "workspace": _model.Workspace(),
        }

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
