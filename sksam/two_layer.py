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

import copy
import functools
import numbers
import types
import warnings
from abc import abstractmethod

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

from . import _two_layer_diagnosis as diagnosis
from . import _two_layer_model as _model
from ._base import (
    COMMON_CONSTRAINTS,
    N_THREADS_CONSTRAINT,
    REGRESSOR_CONSTRAINTS,
    EstimatorHooks,
    FitHistory,
    FitTransaction,
    StoppingRule,
    all_finite,
    check_device,
    check_finite,
    diagnose_loss_curve,
    numeric_target,
    resolve_n_threads,
    sample_weights,
    torch_threads,
    user_stacklevel,
    validation_split,
    warn_interrupted,
    warn_not_converged,
    winners,
)
from ._family import FAMILY_OPTIONS, FAMILY_SOLVERS, RhoSchedule, family_constraints, family_for
from ._two_layer_docs import attributes_doc, fit_doc, parameters_doc, predict_doc
from ._update_rules import SCHEDULED_SOLVERS, SOLVERS, schedule_for
from .exceptions import DivergenceWarning
from .sharpness import measure_sharpness

__all__ = ["SAMTwoLayerClassifier", "SAMTwoLayerRegressor"]

#: The SAM family's solvers the two-layer step takes (as rules of its SAM step).
TWO_LAYER_FAMILY = ("gsam", "wsam", "fsam")

#: The warning class of each category of :func:`sksam._two_layer_diagnosis.diagnose`.
WARNINGS = {"diverged": DivergenceWarning, "stuck": ConvergenceWarning}


def _with_defaults(init, **defaults):
    """A copy of ``init`` with other defaults for some keyword-only arguments.

    scikit-learn reads an estimator's parameters and defaults off the
    signature of its ``__init__``: a subclass that changes only defaults
    takes its base's ``__init__`` this way rather than spelling out every
    argument again.
    """
    code, name, closure = init.__code__, init.__name__, init.__closure__
    copied = types.FunctionType(code, init.__globals__, name, init.__defaults__, closure)
    copied.__kwdefaults__ = {**init.__kwdefaults__, **defaults}
    return copied


class _BaseTwoLayer(BaseEstimator, EstimatorHooks):
    """The fit shared by the two-layer regressor and classifier.

    The hooks a subclass implements are its abstract methods (names and
    meanings of the shared ones in :data:`sksam._base.HOOKS`); a subclass may
    also override ``_stratify``, ``_logits_fn`` and ``_degenerate``.
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_hidden": [Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_model.ACTIVATIONS))],
        "train_output_layer": ["boolean"],
        "init_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "device": [str],
        "n_threads": N_THREADS_CONSTRAINT,
        "warm_start": ["boolean"],
        # the cheap variants of SAM (sksam._update_rules) on top of the common solvers
        # and the SAM family; 'sam_on' is accepted to be refused with its reason
        "solver": [
            StrOptions(set(SOLVERS) | set(SCHEDULED_SOLVERS) | set(TWO_LAYER_FAMILY) | {"sam_on"})
        ],
        "sam_every": [Interval(numbers.Integral, 1, None, closed="left")],
        "rst_p": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "aesam_c": [numbers.Real, tuple],
        **family_constraints(),
        "rho_schedule": [RhoSchedule, None],
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
        rst_p=None,
        aesam_c=0.0,
        gsam_alpha=0.4,
        wsam_gamma=0.9,
        fsam_sigma=1.0,
        fsam_lmbda=0.9,
        rho_schedule=None,
    ):
        self.solver = solver
        self.sam_every = sam_every
        self.rst_p = rst_p
        self.aesam_c = aesam_c
        self.gsam_alpha = gsam_alpha
        self.wsam_gamma = wsam_gamma
        self.fsam_sigma = fsam_sigma
        self.fsam_lmbda = fsam_lmbda
        self.rho_schedule = rho_schedule
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

    # ---------------------------------------------------------------- hooks

    @property
    @abstractmethod
    def _loss(self):
        """The loss of the outputs, a name of :data:`sksam._two_layer_model.LOSSES`."""

    @property
    @abstractmethod
    def _y_checks(self):
        """``validate_data``'s keywords for ``y`` (a class attribute)."""

    @abstractmethod
    def _encode_targets(self, y, warm):
        """``y`` as the float matrix the loss reads, and the target's fitted attributes."""

    @abstractmethod
    def _validation_score(self, outputs, y, sample_weight, target):
        """The score early stopping maximizes, of raw network outputs on validation rows."""

    def _outputs_loss(self, outputs, Y, sample_weight):
        """The training loss of raw network outputs (numpy)."""
        return _model.numpy_loss(self._loss, outputs, Y, sample_weight)

    def _baseline_loss(self, Y, sample_weight):
        """The training loss of the best constant prediction."""
        return _model.constant_loss(self._loss, Y, sample_weight)

    @abstractmethod
    def _frozen_intercept(self, Y, sample_weight):
        """The output intercept ``c`` when ``train_output_layer=False``."""

    # ------------------------------------------------------------------ fit

    def _fit(self, X, y, sample_weight):
        """The subclasses' ``fit``: the state is built aside, stored on success.

        Nothing of the previous fit is changed in place, so no snapshot is needed.
        """
        warm = self.warm_start and self.__sklearn_is_fitted__()
        with FitTransaction(self) as transaction:
            transaction.commit(self._fit_state(X, y, sample_weight, warm))
        return self

    def __sklearn_is_fitted__(self):
        """Whether a fit has succeeded (the weights are stored)."""
        return "coefs_" in vars(self)

    def _fit_state(self, X, y, sample_weight, warm):
        """Train, and return every fitted attribute in a dict (``self`` untouched)."""
        if warm:
            self._check_same_architecture()
        X, y = validate_data(
            self, X, y, reset=not warm, dtype=(np.float64, np.float32), **self._y_checks
        )
        Y, fitted = self._encode_targets(y, warm)  # n_features_in_ is kept by the transaction
        if sample_weight is not None:
            sample_weight = sample_weights(sample_weight, len(X))
        device = check_device(self.device)
        rng = check_random_state(self.random_state)
        train, val = self._split(y, rng)
        work = len(train) * self.n_hidden * (X.shape[1] + Y.shape[1])
        with torch_threads(resolve_n_threads(self.n_threads, work)):
            weights = None if sample_weight is None else sample_weight[train]
            data = _model.TrainingData(X[train], Y[train], weights, device)
            validation = None
            if val is not None:
                validation = self._validation_part(X, y, sample_weight, val, dict(fitted))
            initial = self._initial_params(data, rng, warm, device)
            history = FitHistory(validation_scores=[] if self.early_stopping else None)
            if warm:
                history = FitHistory.continued(self, early_stopping=self.early_stopping)
            try:
                params, resume, rule_stop = self._train(
                    initial, data, validation, rng, history, warm
                )
            except _model.NonFinite as exc:
                message = diagnosis.non_finite_message(
                    self.get_params(),
                    self._scale_hint,
                    iteration=exc.iteration,
                    weights=exc.weights,
                    gd=self._gradient_descent(initial, data),
                )
                raise ValueError(message) from None
            W, b, a, c = [p.detach().cpu().double().numpy() for p in params]
            fitted.update(coefs_=[W, a], intercepts_=[b, c])
            fitted.update(history.attributes())
            fitted["_resume_"] = resume
            fitted["sharpness_"] = self._sharpness_or_none(params, data, rng)
            self._check_fitted_model(fitted, history, rule_stop, initial, data)
        return fitted

    def _check_same_architecture(self):
        """Refuse a warm start whose network differs from the fitted one.

        As scikit-learn's MLP refuses a warm start with other classes (it
        keeps training the old network when ``hidden_layer_sizes`` changed).
        """
        fitted = {"n_hidden": self.coefs_[0].shape[1], **self._resume_["architecture"]}
        for name in ("n_hidden", "activation"):  # the parameters that define the network
            if getattr(self, name) != fitted[name]:
                raise ValueError(
                    f"warm_start=True but {name}={getattr(self, name)!r} differs from the "
                    f"previous fit's {name}={fitted[name]!r}: its weights are another "
                    f"network's. Set {name}={fitted[name]!r} back to continue, or fit "
                    "with warm_start=False to start afresh."
                )

    def _split(self, y, rng):
        """Training and validation rows (``val`` is None without early stopping)."""
        if not self.early_stopping:
            return np.arange(len(y)), None
        return validation_split(len(y), self.validation_fraction, rng, **self._stratify(y))

    def _stratify(self, y):
        return {}

    def _validation_part(self, X, y, sample_weight, val, target_state):
        """``(X, y, sample_weight, target)`` of the validation rows."""
        weights = None if sample_weight is None else sample_weight[val]
        if weights is not None and not weights.sum() > 0:
            raise ValueError(
                f"sample_weight is 0 on every row of the validation part ({len(val)} rows "
                f"held out by early_stopping=True, validation_fraction="
                f"{self.validation_fraction}), so the validation score is undefined; give "
                "those rows positive weights, or set early_stopping=False."
            )
        return X[val], y[val], weights, target_state

    def _initial_params(self, data, rng, warm, device):
        """``[W, b, a, c]`` as float32 tensors: fresh (see Notes) or the last fit's."""
        if warm:
            arrays = [self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1]]
        else:
            frozen = None
            if not self.train_output_layer:
                frozen = self._frozen_intercept(data.Y_numpy, data.sample_weight)
            arrays = _model.initial_weights(
                rng, data.n_features, self.n_hidden, data.n_outputs, self.init_scale, frozen
            )
        return [torch.as_tensor(v, dtype=torch.float32, device=device).clone() for v in arrays]

    def _schedule_key(self):
        """What defines the schedule: a warm start with the same key continues it."""
        # a pair aesam_c spans the max_iter epochs: another max_iter is another schedule
        span = self.max_iter if isinstance(self.aesam_c, tuple) else None
        return (self.solver, self.sam_every, self.rst_p, self.aesam_c, span)

    def _schedule(self, rng, n_batches, warm):
        """The perturbation rule and the cheap variant's schedule (or None).

        A warm start with the same schedule parameters continues the last fit's
        schedule; ``'rst'``'s generator is seeded from ``random_state``.
        """
        saved = self._resume_["schedule"] if warm else None
        if saved is not None and saved[0] == self._schedule_key():
            return schedule_for(self.solver)[0], copy.deepcopy(saved[1])
        seed = int(rng.randint(np.iinfo(np.int32).max)) if self.solver == "rst" else 0
        options = {"p": self.rst_p, "c": self.aesam_c, "total_steps": self.max_iter * n_batches}
        try:
            return schedule_for(self.solver, self.sam_every, seed, **options)
        except ValueError as exc:  # AESAM's check of c
            raise ValueError(
                "aesam_c must be a finite number or a pair (c_first, c_last) of finite "
                f"numbers; got aesam_c={self.aesam_c!r} ({exc})"
            ) from None

    def _family_key(self):
        """What defines the family's rule and radius (a warm start with the same key goes on)."""
        options = tuple(self._family_options().items())
        return (self.solver, options, copy.deepcopy(self.rho_schedule))

    def _family(self, warm):
        """The SAM family's rule (or None) and the radius schedule (or None), new objects.

        A warm start with the same key continues the last fit's (Friendly-SAM's
        average, the schedule's step count).
        """
        if self.solver == "sam_on":
            raise ValueError(
                "solver='sam_on' (SAM-ON) perturbs the normalization layers only, and the "
                "two-layer network has none: use solver='sam' here, or SAMNetClassifier / "
                "SAMNetRegressor with module__batch_norm=True."
            )
        saved = self._resume_.get("family") if warm else None
        if saved is not None and saved[0] == self._family_key():
            return copy.deepcopy(saved[1])
        rule = None
        if self.solver in FAMILY_SOLVERS:
            rule = family_for(self.solver, **self._family_options())[1]["rule"]
        return rule, copy.deepcopy(self.rho_schedule)

    def _family_options(self):
        """The family rules' options, as :func:`~sksam._family.family_for` takes them."""
        return {name: getattr(self, name) for name in FAMILY_OPTIONS}

    def _train(self, params, data, validation, rng, history, warm):
        """Train, appending to ``history``: the weights, the resume state, the rule's stop.

        The stop is ``(best iteration, on validation)`` when the stopping rule ended the fit.
        """
        state = _model.FlatParams(params, train_output_layer=self.train_output_layer)
        saved = self._resume_["batch_order"] if warm else None
        batches = _model.BatchOrder(
            data.n_samples,
            self.batch_size,
            seed=lambda: rng.randint(np.iinfo(np.int32).max),
            state=saved,
        )
        rule_name, schedule = self._schedule(rng, batches.n_batches, warm)
        family = self._family(warm)
        step = self._step(rule_name, schedule, *family)
        rule = StoppingRule(self.tol, self.n_iter_no_change, on_validation=validation is not None)
        score = None
        if validation is not None:
            score = functools.partial(self._score_validation_rows, validation=validation)
        params, interrupted = _model.train(
            state,
            data,
            step,
            batches,
            rule=rule,
            max_iter=self.max_iter,
            history=history,
            score=score,
            verbose=self.verbose,
        )
        if interrupted:
            warn_interrupted(type(self).__name__)
        if not rule.stopped and self.tol is not None:
            warn_not_converged(type(self).__name__, self.max_iter)
        rule_stop = None
        if rule.stopped and not interrupted:  # checked with the fitted model
            rule_stop = (rule.best_iteration, validation is not None)
        history.best_validation_score = rule.best_score
        if self.verbose:
            name, params_now = type(self).__name__, self.get_params()
            share = state.sam_share()
            line = diagnosis.stopping_line(name, history.n_iter, rule.stopped, params_now, share)
            print(line, flush=True)
        resume = {
            "architecture": {"activation": self.activation},
            "schedule": None if schedule is None else (self._schedule_key(), schedule),
            "batch_order": batches.state,
            "family": (self._family_key(), family),
        }
        return params, resume, rule_stop

    def _step(self, solver, schedule=None, rule=None, rho_schedule=None):
        """The update applied to whole epochs, with ``solver``'s perturbation."""
        if solver in TWO_LAYER_FAMILY:  # SAM's perturbation, the rule on top
            solver = "sam"
        return _model.Step(
            rule=rule,
            rho_schedule=rho_schedule,
            solver=solver,
            rho=self.rho,
            learning_rate=self.learning_rate,
            activation=self.activation,
            loss=self._loss,
            schedule=schedule,
        )

    # ------------------------------------------------------------ diagnosis

    def _gradient_descent(self, initial, data):
        """``gd(n_iter, rule=False)``: the counterfactual the diagnosis calls (see there)."""
        params, step = self.get_params(), self._step("gd")
        return functools.partial(
            diagnosis.gradient_descent, initial, data, params, step, self._degenerate
        )

    def _check_fitted_model(self, fitted, history, rule_stop, initial, data):
        """Raise on non-finite outputs; warn when training diverged or ended degenerate.

        Cheap checks first: only a fit that fails one enters the diagnosis.
        """
        outputs = _model.numpy_forward(fitted, self.activation, data.X_numpy)
        Y = data.Y_numpy
        final_loss = self._outputs_loss(outputs, Y, data.sample_weight)
        if not all_finite(outputs, final_loss):
            raise ValueError(
                diagnosis.non_finite_outputs_message(self.learning_rate, self._scale_hint)
            )
        baseline_loss = self._baseline_loss(Y, data.sample_weight)
        constant = _model.is_constant(outputs, Y)
        degenerate = self._degenerate(outputs, Y)
        # the whole curve (warm starts included) and the loss after the last step
        diverged = diagnose_loss_curve([*history.loss_curve, final_loss]) is not None
        plateau = (1 - diagnosis.PLATEAU_DROP) * baseline_loss
        stopped_high = rule_stop is not None and history.loss_curve[-1] > plateau
        if not (constant or degenerate or diverged or stopped_high):
            return
        hidden = _model.NUMPY_ACTIVATIONS[self.activation](
            data.X_numpy @ fitted["coefs_"][0] + fitted["intercepts_"][0]
        )
        facts = diagnosis.FitFacts(
            name=type(self).__name__,
            params=self.get_params(),
            scale_hint=self._scale_hint,
            baseline_loss=baseline_loss,
            loss_curve=history.loss_curve,
            first_iteration=history.first_iteration,
            final_loss=final_loss,
            rule_stop=rule_stop,
            constant=diagnosis.constant_cause(hidden) if constant else None,
            degenerate=degenerate,
        )
        for category, message in diagnosis.diagnose(facts, self._gradient_descent(initial, data)):
            warnings.warn(message, WARNINGS[category], stacklevel=user_stacklevel())

    def _degenerate(self, outputs, Y):
        """What is wrong with a healthy-looking fit's training outputs, or None.

        The regressor: a constant prediction (also checked, as a divergence,
        by :meth:`_check_fitted_model`); the classifier adds a single class.
        """
        if _model.is_constant(outputs, Y):
            return "the fitted network predicts a constant"
        return None

    # ------------------------------------------------------------- results

    def _score_validation_rows(self, params, validation):
        """The subclass's score of the network ``params`` on the validation rows."""
        X_val, y_val, weights, target = validation
        with torch.no_grad():
            X_t = torch.as_tensor(X_val.astype(np.float32), device=params[0].device)
            outputs = _model.forward(params, X_t, self.activation).double().cpu().numpy()
        if not np.all(np.isfinite(outputs)):
            return -np.inf
        return self._validation_score(outputs, y_val, weights, target)

    def _sharpness_or_none(self, params, data, rng):
        """``sharpness_``; None if interrupted (with a warning); non-finite raises."""
        try:
            value = self._measure_sharpness(params, data, rng)
        except KeyboardInterrupt:
            warnings.warn(
                f"{type(self).__name__}: the sharpness computation was interrupted by "
                "user; the trained weights are kept and sharpness_ is None.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            return None
        check_finite(
            value,
            f"The sharpness of the fitted weights is {value}: the fit diverged "
            f"(learning_rate={self.learning_rate} or rho={self.rho} is too large for "
            "this data; lower them, or standardize the data). No weights were stored.",
        )
        return value

    def _measure_sharpness(self, params, data, rng):
        """``sharpness_`` of the mean training loss at ``params`` (see Attributes)."""
        if self.sharpness is None:
            return None
        loss_fn, trained, leaves = _model.sharpness_problem(
            params, data, self.activation, self._loss, self.train_output_layer
        )
        return measure_sharpness(
            self.sharpness,
            loss_fn,
            trained,
            rho=self.rho,
            random_state=int(rng.randint(np.iinfo(np.int32).max)),
            logits_fn=self._logits_fn(leaves, data),
        )

    def _logits_fn(self, leaves, data):
        """What the logit-normalized sharpness reads; a regressor has no logits."""
        return None

    # -------------------------------------------------------------- predict

    def _outputs(self, X):
        """The network's outputs on ``X`` (after the fitted checks)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return _model.numpy_forward(vars(self), self.activation, X)


class SAMTwoLayerRegressor(RegressorMixin, _BaseTwoLayer):
    __doc__ = (
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
"""
        + parameters_doc(
            r"""    init_scale : float, default=0.1
        Scale ``s`` of the initialization (see Notes). Small values start
        near the zero function, the regime where SAM's advantage is largest.
""",
            r"""    learning_rate : float, default=0.05
        Step size :math:`\eta`. Plain gradient descent has no adaptive step,
        so the stable range depends on the scale of the data: standardize
        ``X`` (:class:`~sklearn.preprocessing.StandardScaler`) and ``y``
        (:class:`~sklearn.compose.TransformedTargetRegressor`). A fit that
        diverges or ends as a constant predictor says so with a
        :class:`~sksam.exceptions.DivergenceWarning` (or, if the loss becomes
        non-finite, a ``ValueError``).
""",
        )
        + attributes_doc("", "        Number of outputs.\n", "loss")
        + r"""
    See Also
    --------
    sklearn.neural_network.MLPRegressor : The same model trained by SGD or Adam.
    sksam.SAMKernelRegressor : The convex (kernel) counterpart.

    Notes
    -----
    **Initialization.** With ``s = init_scale``:
    :math:`W_{ij} \sim N(0, s^2/d)`, :math:`a_{jk} \sim N(0, s^2/h)`,
    ``b = c = 0``: LeCun's normal initialization shrunk by ``s``, near the
    zero function, as the paper's analysis starts. With
    ``train_output_layer=False``, ``a`` is frozen at random signs
    :math:`\pm 1/\sqrt{h}` (Du et al. 2019) and ``c`` at the mean of ``y``.

    **Defaults and when SAM acts.** The default stopping rule ends a fit on
    standardized data where SAM's network is nearly gradient descent's
    (``verbose`` says so); ``rho`` around 0.1 - 0.2, or ``tol=None``, lets
    SAM act: :ref:`When SAM and GD coincide <sam-gd-coincide>`.

    **Failures.** A fit either succeeds or changes nothing (the estimator
    keeps its previous fit, if any). Non-finite losses, weights or
    sharpness raise a ``ValueError``; a divergence, a constant prediction or
    a stop on the plateau around the initialization warn; each names
    ``rho`` when the same fit with ``rho=0`` is healthy, ``learning_rate``
    (or the stopping rule) otherwise: see the user guide, :ref:`Warm starts,
    and failures that name their cause <two-layer-failures>`.

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
    )

    _loss = "squared_error"
    _parameter_constraints = {**_BaseTwoLayer._parameter_constraints, **REGRESSOR_CONSTRAINTS}
    _scale_hint = "standardize X and y"
    _y_checks = {"multi_output": True, "y_numeric": True}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        return self._fit(X, y, sample_weight)

    fit.__doc__ = fit_doc(
        "(n_samples,) or (n_samples, n_outputs)", "Targets.", "SAMTwoLayerRegressor"
    )

    def _encode_targets(self, y, warm):
        y = numeric_target(y, type(self).__name__)
        Y = y.reshape(len(y), -1)
        if warm and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"warm_start=True but y has {Y.shape[1]} outputs where the previous "
                f"fit had {self.n_outputs_}; fit with warm_start=False."
            )
        return Y, {"n_outputs_": Y.shape[1]}

    def _validation_score(self, outputs, y, sample_weight, target):
        """:math:`R^2` (weighted by the validation rows' ``sample_weight``)."""
        return float(r2_score(y.reshape(outputs.shape), outputs, sample_weight=sample_weight))

    def _frozen_intercept(self, Y, sample_weight):
        return np.average(Y, axis=0, weights=sample_weight)

    def predict(self, X):
        y_pred = self._outputs(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    predict.__doc__ = predict_doc(
        "Predict with the fitted network.",
        "y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)",
        "Predictions; 1-d when there is one output.",
    )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SAMTwoLayerClassifier(ClassifierMixin, _BaseTwoLayer):
    __doc__ = (
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
"""
        + parameters_doc(
            r"""    init_scale : float, default=1.0
        Scale ``s`` of the initialization: :math:`W_{ij} \sim N(0, s^2/d)`,
        :math:`a_{jk} \sim N(0, s^2/h)`, ``b = c = 0`` (LeCun's normal
        initialization at ``s = 1``). Larger than the regressor's default:
        see Notes.
""",
            r"""    learning_rate : float, default=1.0
        Step size :math:`\eta`; standardize ``X``
        (:class:`~sklearn.preprocessing.StandardScaler`) or scale it to
        about unit range. Larger than the regressor's default: see Notes.
""",
        )
        + attributes_doc(
            "    classes_ : ndarray of shape (n_classes,)\n        The class labels, sorted.\n",
            "        Number of outputs: 1 for two classes, ``n_classes`` otherwise.\n",
            "cross-entropy",
        )
        + r"""
    See Also
    --------
    SAMTwoLayerRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : The same model trained by SGD or Adam.

    Notes
    -----
    The fit is shared with :class:`SAMTwoLayerRegressor` (see its Notes);
    only the loss, the target encoding, the validation score and the
    predictions differ. With ``train_output_layer=False`` the output
    weights are frozen at random signs :math:`\pm 1/\sqrt{h}`, and ``c`` at
    the log-odds of the weighted class frequencies.

    **Defaults.** ``init_scale=1.0`` and ``learning_rate=1.0`` (the
    regressor's are 0.1 and 0.05): the cross-entropy is flatter than the
    squared error, and from the regressor's near-zero start a ten-class fit
    stops on the initial plateau. The validation accuracy oscillates at this
    step: with ``early_stopping``, ``n_iter_no_change`` around 50 is safer.

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
    )

    _loss = "log_loss"
    _scale_hint = "standardize X"
    _y_checks = {}

    # the base's parameters with the classifier's own init_scale and learning_rate
    __init__ = _with_defaults(_BaseTwoLayer.__init__, init_scale=1.0, learning_rate=1.0)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        return self._fit(X, y, sample_weight)

    fit.__doc__ = fit_doc(
        "(n_samples,)", "Class labels (any type numpy sorts).", "SAMTwoLayerClassifier"
    )

    def _encode_targets(self, y, warm):
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

    def _validation_score(self, outputs, y, sample_weight, target):
        """Accuracy (weighted by the validation rows' ``sample_weight``)."""
        labels = self._labels(outputs, target["classes_"])
        return float(accuracy_score(y, labels, sample_weight=sample_weight))

    def _degenerate(self, outputs, Y):
        """A single class predicted on training rows of several classes, or None."""
        n_classes = np.unique(winners(Y)).size
        if n_classes < 2 or np.unique(winners(outputs)).size > 1:
            return None
        return f"the fitted network predicts a single class on training data of {n_classes} classes"

    def _frozen_intercept(self, Y, sample_weight):
        p = np.clip(np.average(Y, axis=0, weights=sample_weight), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)) if Y.shape[1] == 1 else np.log(p)

    @staticmethod
    def _labels(outputs, classes):
        return classes[winners(outputs)]

    def predict(self, X):
        return self._labels(self._outputs(X), self.classes_)

    predict.__doc__ = predict_doc(
        "Predict class labels.",
        "y_pred : ndarray of shape (n_samples,)",
        "The class of highest probability.",
    )

    def predict_proba(self, X):
        return np.exp(self.predict_log_proba(X))

    predict_proba.__doc__ = predict_doc(
        "Compute the class probabilities: the sigmoid or softmax of the outputs.",
        "proba : ndarray of shape (n_samples, n_classes)",
        "Probabilities of the classes, in the order of ``classes_``.",
    )

    def predict_log_proba(self, X):
        F = self._outputs(X)
        if F.shape[1] == 1:
            return np.c_[log_expit(-F[:, 0]), log_expit(F[:, 0])]
        return F - logsumexp(F, axis=1, keepdims=True)

    predict_log_proba.__doc__ = predict_doc(
        "Compute the logarithms of the class probabilities, without overflow.",
        "log_proba : ndarray of shape (n_samples, n_classes)",
        "Log-probabilities of the classes, in the order of ``classes_``.",
    )
