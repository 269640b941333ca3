"""Why a two-layer fit failed or barely learned, and what to change.

Pure functions of the facts of a finished (or failed) fit: they return the
messages, and the estimator (:mod:`sksam.two_layer`) only emits them. Which
parameter a message names comes from one counterfactual, gradient descent
from the same start (:func:`gradient_descent`): when it is healthy where the
SAM fit was not, ``rho`` is to blame, otherwise ``learning_rate`` (or the
stopping rule). The counterfactual costs a fit, so it is run only after a
fit has failed, and only when a message needs it.

Nothing here reads or writes an estimator.
"""

import math
from dataclasses import dataclass

import numpy as np

from . import _two_layer_model as model
from ._base import SAM_SHARE_COINCIDE, StoppingRule, diagnose_loss_curve
from ._family import family_for
from ._update_rules import is_perturbed, schedule_for

#: A fit whose training loss ends above ``1 - PLATEAU_DROP`` times a constant
#: predictor's stopped on the plateau around the initialization (a network
#: started near the zero function leaves it slowly, and a validation accuracy
#: can sit still for tens of iterations there).
PLATEAU_DROP = 0.10

#: Gradient descent from the same start "learns" (so that a stuck SAM fit is
#: blamed on ``rho``) when its loss ends below this fraction of a constant
#: predictor's: far from the plateau level, so that a SAM fit that is merely
#: a little slower than gradient descent is not called stuck at a saddle.
GD_LEARNS = 0.75

#: The ``rho`` advice of a fit that diverged where gradient descent did not.
RHO_RANGE = "on standardized data useful values are about 0.01 to 0.5"


@dataclass(frozen=True)
class GradientDescentRun:
    """What the counterfactual gradient-descent fit ended with.

    Attributes
    ----------
    curve : list of float
        The loss before each step (it ends at the first non-finite one).
    finite : bool
        Whether every loss and the final weights are finite.
    degenerate : str or None
        What is wrong with its training outputs (the estimator's rule), or None.
    """

    curve: list
    finite: bool
    degenerate: object

    def healthy(self):
        """Finite, no divergence in the curve, and a healthy prediction."""
        return self.finite and diagnose_loss_curve(self.curve) is None and not self.degenerate

    def ends_below(self, level):
        """Finite, its last loss at most ``level``, and a healthy prediction."""
        return self.finite and self.curve[-1] <= level and not self.degenerate


def gradient_descent(initial, data, params, step, degenerate, n_iter, rule=False):
    """The counterfactual: gradient descent from ``initial`` on ``data``.

    Parameters
    ----------
    initial : list of 4 tensors
        The start of the fit being diagnosed (``W, b, a, c``; not changed).
    data : sksam._two_layer_model.TrainingData
        Its training rows.
    params : dict
        The estimator's parameters: ``activation``, ``batch_size`` (the batch
        order is seeded with 0), ``train_output_layer``, and with ``rule``,
        ``tol`` and ``n_iter_no_change``.
    step : sksam._two_layer_model.Step
        Gradient descent's update (``solver='gd'``) with the fit's step size.
    degenerate : callable
        ``degenerate(outputs, Y)``, the estimator's rule: what is wrong with
        the training outputs of the final weights, or None.
    n_iter : int
        The most iterations to run.
    rule : bool, default=False
        Stop earlier, as the fit's stopping rule on the training loss would.

    Returns
    -------
    run : GradientDescentRun
    """
    state = model.FlatParams(initial, train_output_layer=params["train_output_layer"])
    batches = model.BatchOrder(data.n_samples, params["batch_size"], seed=lambda: 0)
    stop = StoppingRule(params["tol"], params["n_iter_no_change"], on_validation=False)
    curve = []
    for _ in range(n_iter):
        curve.append(step.epoch(state, data, batches))
        if not math.isfinite(curve[-1]) or (rule and stop.update(curve[-1])):
            break
    finite = bool(curve) and math.isfinite(curve[-1]) and bool(state.flat.isfinite().all())
    judged = None
    if finite:
        outputs = model.forward(state.params, data.X, params["activation"])
        judged = degenerate(outputs.double().cpu().numpy(), data.Y_numpy)
    return GradientDescentRun(curve, finite, judged)


@dataclass(frozen=True)
class FitFacts:
    """What a diagnosis reads of a fit and of the estimator's parameters.

    Attributes
    ----------
    name : str
        The estimator's class name.
    params : dict
        The estimator's parameters (``get_params``).
    scale_hint : str
        How to rescale the data (``'standardize X'``, or ``'... and y'``).
    baseline_loss : float
        The training loss of the best constant prediction.
    loss_curve : list of float
        The whole loss curve (warm starts included).
    first_iteration : int
        Where this call's iterations start in ``loss_curve``.
    final_loss : float
        The training loss after the last step.
    rule_stop : tuple or None
        ``(best iteration, on validation)`` when the stopping rule ended the fit.
    constant : str or None
        "The network predicts a constant" with its dead units, when it does.
    degenerate : str or None
        What is wrong with the training outputs otherwise (a single class).
    """

    name: str
    params: dict
    scale_hint: str
    baseline_loss: float
    loss_curve: list
    first_iteration: int
    final_loss: float
    rule_stop: object = None
    constant: object = None
    degenerate: object = None


def standardize_advice(scale_hint):
    """The scaling half of a remedy, as the start of a sentence ending in 'or ...'."""
    if scale_hint.endswith("y"):
        return (
            "Standardize y (e.g. TransformedTargetRegressor(regressor, "
            "transformer=StandardScaler())) and X (StandardScaler), or "
        )
    return "Standardize X (StandardScaler), or "


def perturbed(params):
    """Whether ``solver`` and ``rho`` take SAM steps (some steps, for the cheap variants)."""
    return is_perturbed(family_for(schedule_for(params["solver"])[0])[0], params["rho"])


def non_finite_message(facts_params, scale_hint, *, iteration, weights, gd):
    """The ``ValueError`` text for a loss or weights that became non-finite.

    ``gd(n_iter)`` runs the counterfactual for ``n_iter`` iterations and
    returns a :class:`GradientDescentRun`; it is called only for a perturbed fit.
    """
    p = facts_params
    start = f"The {'weights' if weights else 'training loss'} became non-finite at iteration "
    start += str(iteration)
    if perturbed(p) and gd(iteration).healthy():
        return (
            f"{start} with solver={p['solver']!r} and rho={p['rho']}, while the same "
            f"fit with rho=0 (gradient descent) stays finite: rho={p['rho']} is too "
            f"large for this data (lower it; {RHO_RANGE}). No weights were stored."
        )
    return (
        f"{start}: learning_rate={p['learning_rate']} is too large for this data "
        f"(lower it, or {scale_hint}). No weights were stored."
    )


def non_finite_outputs_message(learning_rate, scale_hint):
    """The ``ValueError`` text for fitted outputs that are not finite."""
    return (
        "The fitted network's outputs on the training data are not finite: "
        f"the fit diverged (lower learning_rate={learning_rate}, or "
        f"{scale_hint}). No weights were stored."
    )


def diagnose(facts, gd):
    """Every warning a fitted network deserves, as ``(category, message)`` pairs.

    Parameters
    ----------
    facts : FitFacts
        The finished fit.
    gd : callable
        ``gd(n_iter, rule)`` runs the counterfactual (``rule``: whether the
        fit's stopping rule applies) and returns a :class:`GradientDescentRun`.

    Returns
    -------
    messages : list of (str, str)
        ``'diverged'`` (a :class:`~sksam.exceptions.DivergenceWarning`) when the
        loss grew by orders of magnitude or the network predicts a constant;
        otherwise ``'stuck'`` (a ``ConvergenceWarning``) when the stopping
        rule ended the fit on the plateau around the initialization, or the
        network ended degenerate. Empty for a healthy fit.
    """
    # the whole curve, warm starts included: its start is the loss at the
    # initialization, which a healthy fit leaves below; the curve holds the
    # loss before each step, so the loss after the last step ends it
    causes = [diagnose_loss_curve([*facts.loss_curve, facts.final_loss]), facts.constant]
    causes = [cause for cause in causes if cause is not None]
    if causes:
        return [("diverged", _diverged_message(facts, "; ".join(causes), gd))]
    if facts.rule_stop is not None and _on_plateau(facts):
        return [("stuck", _plateau_message(facts, *facts.rule_stop, gd))]
    if facts.degenerate is not None:
        return [("stuck", _degenerate_message(facts, gd))]
    return []


def _diverged_message(facts, cause, gd):
    p = facts.params
    n_iter = len(facts.loss_curve) - facts.first_iteration  # this call's iterations
    remedy = standardize_advice(facts.scale_hint)
    remedy += f"lower learning_rate (now {p['learning_rate']})."
    if perturbed(p) and gd(n_iter, rule=False).healthy():
        remedy = (
            f"The same fit with rho=0 (gradient descent) is healthy: rho={p['rho']} is "
            f"too large for this data; lower it ({RHO_RANGE})."
        )
    return f"{facts.name}: training diverged: {cause}. {remedy}"


def _on_plateau(facts):
    """Whether the fit ended above ``1 - PLATEAU_DROP`` times the baseline loss.

    A fit ending there explains less than ``PLATEAU_DROP`` of what the best
    constant leaves unexplained (a zero baseline has no plateau). Measured
    against the constant rather than the loss at the start, so that a
    network that learned only its output intercept (the regressor at the
    zero-function saddle) counts as stuck, and a warm start that continues a
    good fit does not.
    """
    baseline = facts.baseline_loss
    return baseline > 0 and facts.loss_curve[-1] > (1 - PLATEAU_DROP) * baseline


def _plateau_message(facts, best_iteration, on_validation, gd):
    curve = facts.loss_curve[facts.first_iteration :]
    start, last, baseline = curve[0], curve[-1], facts.baseline_loss
    n_iter = len(facts.loss_curve)
    remedy = _stuck_remedy(facts, gd, on_validation=on_validation)
    if on_validation:
        return (
            f"{facts.name}: early stopping ended training at iteration {n_iter} "
            f"while the training loss was {last:.4g} (from {start:.4g}; a constant "
            f"predictor's is {baseline:.4g}): the validation score sat on the plateau "
            "around the initialization, and the weights of iteration "
            f"{facts.first_iteration + best_iteration} are kept. {remedy}"
        )
    return (
        f"{facts.name}: the stopping rule ended training at iteration {n_iter} on "
        f"the plateau around the initialization: the training loss went from "
        f"{start:.4g} to only {last:.4g}, where a constant predictor's is "
        f"{baseline:.4g}. {remedy}"
    )


def _degenerate_message(facts, gd):
    p = facts.params
    if _on_plateau(facts):
        remedy = _stuck_remedy(facts, gd)
    else:
        remedy = (
            f"{standardize_advice(facts.scale_hint)}change learning_rate (now "
            f"{p['learning_rate']}), or rho (now {p['rho']})."
        )
    return f"{facts.name}: {facts.degenerate}. {remedy}"


def _stuck_remedy(facts, gd, on_validation=False):
    """Why a fit barely learned, and what to change: ``rho`` or ``learning_rate``.

    The counterfactual is gradient descent from the same start under the
    same stopping rule: if it gets below ``GD_LEARNS`` times a constant's
    loss with a healthy prediction, SAM's perturbation held the network at
    the zero function, a saddle where the gradient vanishes; otherwise the
    steps were too small to leave the plateau before the rule stopped them.
    """
    p = facts.params
    if perturbed(p) and gd(p["max_iter"], rule=True).ends_below(GD_LEARNS * facts.baseline_loss):
        return (
            f"The same fit with rho=0 (gradient descent) leaves it: rho={p['rho']} is "
            f"too large for this initialization (init_scale={p['init_scale']}), so "
            "SAM's perturbation holds the network at the zero function, a saddle. "
            "Lower rho, or raise init_scale."
        )
    if on_validation:
        return (
            "Raise n_iter_no_change (e.g. 100), or set tol=None to run max_iter "
            "iterations and keep the weights with the best validation score."
        )
    if p["tol"] is None:
        return (
            f"learning_rate={p['learning_rate']} is too small to leave the plateau in "
            f"max_iter={p['max_iter']} iterations: raise learning_rate or max_iter."
        )
    return (
        f"learning_rate={p['learning_rate']} is too small to leave the plateau before "
        f"the stopping rule (tol={p['tol']}, n_iter_no_change={p['n_iter_no_change']}) "
        "ends the fit: raise learning_rate, raise n_iter_no_change, or set tol=None "
        "and a larger max_iter."
    )


def stopping_line(name, n_iter, stopped, params, share):
    """The verbose line that ends a fit: why it stopped, and how much SAM acted.

    ``share`` is :meth:`sksam._two_layer_model.FlatParams.sam_share`.
    """
    why = "by the stopping rule (tol)" if stopped and params["tol"] is not None else "at max_iter"
    line = f"{name}: stopped after {n_iter} iterations {why}."
    if not perturbed(params) or share is None:
        return line
    line += f" SAM's perturbation accounts for {share:.1%} of the weights' movement in this fit"
    if share < SAM_SHARE_COINCIDE:
        return line + (
            ": it stopped in the regime where SAM and gradient descent give nearly "
            "the same network. SAM's effect grows with longer training (tol=None and "
            "a larger max_iter) or a larger rho."
        )
    return line + "."


def constant_cause(hidden):
    """ "The network predicts a constant" with its dead units.

    ``hidden`` holds the hidden units' activations on the training rows.
    """
    dead = int(np.sum(np.ptp(hidden, axis=0) == 0))
    return (
        f"the fitted network predicts a constant ({dead} of {hidden.shape[1]} "
        "hidden units are constant on the training data)"
    )
