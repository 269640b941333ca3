"""The shared base: validation split, stopping rule, diagnosis, warnings, history, devices."""

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from sksam._base import (
    COMMON_CONSTRAINTS,
    HISTORY_ATTRIBUTES_DOC,
    HOOKS,
    MIN_VALIDATION_SAMPLES,
    EstimatorHooks,
    FitHistory,
    FitTransaction,
    Snapshot,
    StoppingRule,
    all_finite,
    check_device,
    check_finite,
    diagnose_loss_curve,
    print_progress,
    validation_split,
    warn_diverged,
    warn_not_converged,
)
from sksam.exceptions import DivergenceWarning
from sksam.sharpness import (
    DEFAULT_OPTIONS,
    MEASURES,
    hessian_trace,
    measure_sharpness,
    rho_sharpness,
    top_hessian_eigenvalue,
)

# --------------------------------------------------------------------------
# validation split
# --------------------------------------------------------------------------


def test_validation_split_sizes_sorted_disjoint_and_seeded():
    train, val = validation_split(50, 0.1, 0)
    assert len(val) == 5 and len(train) == 45
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(50))
    again = validation_split(50, 0.1, 0)
    assert np.array_equal(again[1], val)


def test_validation_split_ceil_like_train_test_split():
    # ceil(0.1 * 15) = 2 validation rows, the same count train_test_split takes
    _, val = validation_split(15, 0.1, 0)
    assert len(val) == 2


@pytest.mark.parametrize("n_samples, fraction", [(10, 0.1), (3, 0.5), (20, 0.95)])
def test_validation_split_too_small_raises(n_samples, fraction):
    with pytest.raises(ValueError, match=rf"validation_fraction={fraction}.*n_samples={n_samples}"):
        validation_split(n_samples, fraction, 0)


def test_validation_split_minimum_is_two():
    assert MIN_VALIDATION_SAMPLES == 2
    train, val = validation_split(20, 0.1, 0)  # exactly 2 and 18
    assert len(val) == 2


def test_validation_split_stratified():
    labels = np.repeat([0, 1], [30, 10])
    _, val = validation_split(40, 0.25, 0, stratify=labels)
    assert np.bincount(labels[val]).tolist() == [8, 2]


# --------------------------------------------------------------------------
# stopping rule: scikit-learn's MLPRegressor is the reference
# --------------------------------------------------------------------------


class _ScriptedMLP(MLPRegressor):
    """MLPRegressor whose validation score is read from a script."""

    def _score(self, X, y, sample_weight=None):
        return self.next_score


def _mlp_rule(values, tol, patience, on_validation):
    """Stop decisions of MLPRegressor's own ``_update_no_improvement_count``."""
    mlp = _ScriptedMLP(tol=tol, n_iter_no_change=patience)
    mlp.loss_curve_, mlp.validation_scores_ = [], []
    mlp.best_loss_, mlp.best_validation_score_ = np.inf, -np.inf
    mlp._no_improvement_count = 0
    mlp.coefs_, mlp.intercepts_ = [], []
    stops = []
    for value in values:
        mlp.loss_curve_.append(value)
        mlp.next_score = value
        mlp._update_no_improvement_count(on_validation, None, None, None)
        # MLP's fit loop stops when the count exceeds n_iter_no_change
        stops.append(mlp._no_improvement_count > patience)
    return stops


@pytest.mark.parametrize("on_validation", [False, True])
def test_stopping_rule_matches_mlp(on_validation):
    rng = np.random.RandomState(0)
    values = (
        np.cumsum(rng.standard_normal(60) * 0.01)
        + (1 if on_validation else -1) * np.log(np.arange(1, 61)) * 0.01
    )
    if not on_validation:
        values = 1.0 + values
    rule = StoppingRule(1e-3, 3, on_validation=on_validation)
    ours = [rule.update(v, v if on_validation else None) or rule.stopped for v in values.tolist()]
    assert ours == _mlp_rule(values.tolist(), 1e-3, 3, on_validation)


def test_stopping_rule_best_iteration_and_is_best_on_loss():
    rule = StoppingRule(0.0, 1, on_validation=False)
    flags = []
    for loss in [3.0, 2.0, 2.5, 1.0, 1.5]:
        rule.update(loss)
        flags.append(rule.is_best)
    assert flags == [True, True, False, True, False]
    assert rule.best_iteration == 4 and rule.best_loss == 1.0 and rule.best_score is None


def test_stopping_rule_best_on_validation_score():
    rule = StoppingRule(1e-4, 10, on_validation=True)
    for loss, score in [(3.0, 0.1), (2.0, 0.5), (1.0, 0.4)]:
        rule.update(loss, score)
    assert rule.best_score == 0.5 and rule.best_iteration == 2
    assert rule.best_loss == 1.0 and not rule.is_best


def test_stopping_rule_stops_after_patience():
    rule = StoppingRule(0.1, 2, on_validation=False)
    stops = [rule.update(1.0) for _ in range(5)]
    # first update improves on inf; then 3 non-improving updates exceed patience 2
    assert stops == [False, False, False, True, True] and rule.stopped


def test_stopping_rule_tol_none_never_stops_but_tracks_best():
    rule = StoppingRule(None, 1, on_validation=True)
    stops = [rule.update(1.0, s) for s in [0.3, 0.2, 0.2, 0.2, 0.9, 0.1]]
    assert not any(stops) and not rule.stopped
    assert rule.best_score == 0.9 and rule.best_iteration == 5


def test_stopping_rule_validation_needs_score():
    with pytest.raises(ValueError, match="needs a score"):
        StoppingRule(1e-4, 2, on_validation=True).update(1.0)


# --------------------------------------------------------------------------
# diagnosis of the loss curve
# --------------------------------------------------------------------------


def _gd_curve(solver, lr_times_sharpness, n_iter=300, seed=0):
    """Loss curve of full-batch GD / SAM on a least-squares problem.

    The step is ``lr_times_sharpness / lambda_max``: GD is stable below 2.
    """
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((50, 5))
    y = X @ rng.standard_normal(5) + 0.3 * rng.standard_normal(50)
    lr = lr_times_sharpness / np.linalg.eigvalsh(X.T @ X / len(y)).max()
    w, losses = np.zeros(5), []
    for _ in range(n_iter):
        r = X @ w - y
        losses.append(0.5 * np.mean(r**2))
        g = X.T @ r / len(y)
        if solver == "sam":
            e = 0.2 * g / (np.linalg.norm(g) + 1e-12)
            g = X.T @ (X @ (w + e) - y) / len(y)
        w = w - lr * g
    return losses


def _two_layer_sam_curve():
    from sksam import SAMTwoLayerRegressor
    from sksam.datasets import make_teacher_student

    X, y = make_teacher_student(n_samples=100, n_features=5, random_state=0)
    reg = SAMTwoLayerRegressor(rho=0.3, learning_rate=0.2, max_iter=300, tol=None, sharpness=None)
    return reg.set_params(random_state=0).fit(X, y).loss_curve_


@pytest.mark.parametrize("solver", ["gd", "sam"])
@pytest.mark.parametrize("lr", [0.01, 1.0, 1.5])
def test_diagnose_healthy_curves_is_none(solver, lr):
    assert diagnose_loss_curve(_gd_curve(solver, lr)) is None


def test_diagnose_healthy_two_layer_sam_with_oscillation_is_none():
    assert diagnose_loss_curve(_two_layer_sam_curve()) is None


def test_diagnose_flat_curve_is_none():
    # a warm start at a minimum: no decrease, no rise
    assert diagnose_loss_curve([0.5] * 30) is None
    # SAM started at a minimum rises a little
    assert diagnose_loss_curve([0.5] + [0.55] * 30) is None
    assert diagnose_loss_curve([]) is None
    assert diagnose_loss_curve([0.0, 1e-9, 1e-3]) is None


def test_diagnose_non_finite():
    assert "non-finite at iteration 3" in diagnose_loss_curve([1.0, 2.0, np.nan, 1.0])
    assert "non-finite" in diagnose_loss_curve([1.0, np.inf])


def test_diagnose_divergent_gd():
    cause = diagnose_loss_curve(_gd_curve("gd", 2.5, n_iter=60))
    assert cause is not None and "jumped" in cause


def test_diagnose_jump_then_recovery():
    # the loss of a network whose units died: up by 4 orders, back to a plateau
    cause = diagnose_loss_curve([1.0, 0.9, 2e4, 3.0, 0.95])
    assert re.search(r"jumped from 1 to 2e\+04 \(iteration 3\)", cause)


def test_diagnose_rise_and_no_decrease():
    assert "rose from 1 to 20" in diagnose_loss_curve([1.0, 5.0, 20.0])
    cause = diagnose_loss_curve([1.0] + [1.0 + 0.05 * i for i in range(1, 12)])
    assert "never decreased in 12 iterations" in cause


def test_diagnose_initial_loss():
    assert diagnose_loss_curve([5.0, 4.0], initial_loss=0.1) is not None
    assert diagnose_loss_curve([5.0, 4.0]) is None


# --------------------------------------------------------------------------
# warnings point at the caller
# --------------------------------------------------------------------------


def test_divergence_warning_is_a_convergence_warning():
    assert issubclass(DivergenceWarning, ConvergenceWarning)


def test_warn_diverged_message_and_stacklevel():
    with pytest.warns(
        DivergenceWarning, match=r"^Est: training diverged: why\. Lower it\.$"
    ) as rec:
        warn_diverged("Est", "why", "Lower it.")
    assert rec[0].filename == __file__


def test_warn_not_converged_message_and_stacklevel():
    with pytest.warns(ConvergenceWarning, match=r"Est: maximum iterations \(7\) reached") as rec:
        warn_not_converged("Est", 7)
    assert rec[0].filename == __file__
    assert not issubclass(rec[0].category, DivergenceWarning)


# --------------------------------------------------------------------------
# history, progress, constraints
# --------------------------------------------------------------------------


class _Est:
    pass


def _record(est, *, loss_curve, n_iter, validation_scores=None, best_validation_score=None):
    history = FitHistory(loss_curve, validation_scores, n_iter)
    history.best_validation_score = best_validation_score
    vars(est).update(history.attributes())


def test_record_history_types():
    est = _Est()
    _record(est, loss_curve=np.array([3.0, 1.0, 2.0]), n_iter=np.int64(3))
    assert est.loss_curve_ == [3.0, 1.0, 2.0] and type(est.loss_curve_[0]) is float
    assert est.best_loss_ == 1.0 and type(est.best_loss_) is float
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert est.n_iter_ == 3 and type(est.n_iter_) is int


def test_record_history_validation():
    est = _Est()
    _record(est, loss_curve=[1.0], n_iter=1, validation_scores=[np.float32(0.5), 0.7])
    assert est.validation_scores_ == pytest.approx([0.5, 0.7])
    assert est.best_validation_score_ == 0.7
    _record(est, loss_curve=[1.0], n_iter=1, validation_scores=[0.5], best_validation_score=0.4)
    assert est.best_validation_score_ == 0.4


def test_history_attributes_documented_once():
    # every estimator that records history carries the one text verbatim;
    # the kernel and net estimators join this list when they adopt the base
    from sksam import SAMKernelRegressor, SAMTwoLayerRegressor

    for estimator in [SAMTwoLayerRegressor, SAMKernelRegressor]:
        assert HISTORY_ATTRIBUTES_DOC in estimator.__doc__, estimator.__name__


def test_print_progress(capsys):
    print_progress(3, 0.5)
    print_progress(4, 0.25, 0.75)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Iteration 3, loss = 0.50000000",
        "Iteration 4, loss = 0.25000000, validation score = 0.750000",
    ]


def test_common_constraints_keys():
    assert set(COMMON_CONSTRAINTS) == {
        "solver",
        "rho",
        "max_iter",
        "tol",
        "early_stopping",
        "validation_fraction",
        "n_iter_no_change",
        "sharpness",
        "random_state",
        "verbose",
    }


# --------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------


def test_check_device_cpu():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")


def test_check_device_unknown():
    with pytest.raises(ValueError, match=r"device='gpu0' is not a torch device.*available: 'cpu'"):
        check_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_device_unavailable_cuda():
    with pytest.raises(ValueError, match=r"device='cuda' is not available.*available: 'cpu'"):
        check_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_check_device_cuda_index_out_of_range():
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"device='cuda:{n}' is not available"):
        check_device(f"cuda:{n}")


# --------------------------------------------------------------------------
# the sharpness entry point
# --------------------------------------------------------------------------


def _quadratic_loss(A):
    w = torch.zeros(A.shape[0], dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * w @ A @ w + w.sum()), [w]


def test_default_options_cover_every_measure():
    assert set(DEFAULT_OPTIONS) == set(MEASURES)


@pytest.mark.parametrize(
    "measure, function",
    [
        ("top_eigenvalue", top_hessian_eigenvalue),
        ("trace", hessian_trace),
        (
            "rho",
            lambda f, p, random_state, **o: rho_sharpness(
                f, p, 0.1, random_state=random_state, **o
            ),
        ),
    ],
)
def test_measure_sharpness_uses_the_table(measure, function):
    A = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
    A[0, 1] = A[1, 0] = 0.5
    loss_fn, params = _quadratic_loss(A)
    ours = measure_sharpness(measure, loss_fn, params, rho=0.1, random_state=0)
    theirs = function(loss_fn, params, random_state=0, **DEFAULT_OPTIONS[measure])
    assert isinstance(ours, float) and ours == pytest.approx(float(theirs), rel=1e-12)


def test_measure_sharpness_exact_on_quadratic():
    A = torch.diag(torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64))
    loss_fn, params = _quadratic_loss(A)
    assert measure_sharpness("top_eigenvalue", loss_fn, params, rho=0.1, random_state=0) == (
        pytest.approx(4.0, rel=1e-6)
    )
    # a diagonal Hessian: Hutchinson is exact with any probe count
    assert measure_sharpness("trace", loss_fn, params, rho=0.1, random_state=0) == pytest.approx(
        7.0
    )


def test_measure_sharpness_none_and_unknown():
    loss_fn, params = _quadratic_loss(torch.eye(2, dtype=torch.float64))
    assert measure_sharpness(None, loss_fn, params, rho=0.1, random_state=0) is None
    with pytest.raises(ValueError, match="Unknown sharpness measure 'max'"):
        measure_sharpness("max", loss_fn, params, rho=0.1, random_state=0)


def test_measure_sharpness_restores_module_mode():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
    module.train()
    X = torch.randn(8, 3)
    params = list(module.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = measure_sharpness(
            "trace",
            lambda: module(X).square().mean(),
            params,
            rho=0.1,
            random_state=0,
            module=module,
        )
    assert module.training and module[1].training
    # eval mode: dropout off, so the value is deterministic
    again = measure_sharpness(
        "trace", lambda: module(X).square().mean(), params, rho=0.1, random_state=0, module=module
    )
    assert value == again


# --------------------------------------------------------------------------
# the spine: one transaction, one history record, one finiteness check
# --------------------------------------------------------------------------


class _Restorable(Snapshot):
    def __init__(self, state):
        self.state, self.saved = state, list(state)

    def restore(self):
        self.state[:] = self.saved


def _fitted(n_features=2):
    est = _Est()
    est.alpha, est.coef_, est.n_features_in_, est._scratch = 1.0, [1.0], n_features, "s"
    return est


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_transaction_puts_a_fitted_estimator_back_exactly(error):
    est = _fitted()
    weights = [1.0, 2.0]  # what continued training mutates in place
    before = dict(vars(est))
    with pytest.raises(error):
        with FitTransaction(est, _Restorable(weights)) as fit:
            est.n_features_in_ = 5  # validate_data writes on the estimator
            est.extra_ = "half"
            weights[0] = np.nan
            fit.commit({"coef_": [9.0]})
            raise error("mid-fit")
    assert vars(est) == before and vars(est)["coef_"] is before["coef_"]
    assert weights == [1.0, 2.0]


def test_transaction_leaves_an_unfitted_estimator_unfitted():
    est = _Est()
    est.alpha = 1.0
    with pytest.raises(RuntimeError):
        with FitTransaction(est):
            est.n_features_in_ = 3
            raise RuntimeError
    assert vars(est) == {"alpha": 1.0}


def test_transaction_commit_assigns_at_once_and_drops_stale_fitted_attributes():
    est = _fitted()
    est.dual_coef_ = "earlier parametrization"
    with FitTransaction(est) as fit:
        est.n_features_in_ = 4  # kept: validate_data's, set in this fit
        fit.commit({"coef_": [2.0], "_model": "m"})
        assert est.coef_ == [1.0]  # nothing assigned before the block ends
    assert vars(est) == {
        "alpha": 1.0,
        "coef_": [2.0],
        "n_features_in_": 4,
        "_scratch": "s",
        "_model": "m",
    }


def test_transaction_without_commit_keeps_what_the_body_set():
    est = _fitted()
    with FitTransaction(est):
        est.best_score_ = 0.5
    assert est.best_score_ == 0.5 and est.coef_ == [1.0]


def test_transaction_restores_the_attributes_even_if_the_snapshot_fails():
    class Broken(Snapshot):
        def restore(self):
            raise OSError("cannot restore")

    est = _fitted()
    before = dict(vars(est))
    with pytest.raises(OSError):
        with FitTransaction(est, Broken()):
            est.coef_ = None
            raise ValueError
    assert vars(est) == before


def test_fit_history_attributes_types_and_best():
    history = FitHistory(np.array([3.0, 1.0]), None, np.int64(2))
    history.append(np.float32(2.0))
    attributes = history.attributes()
    assert attributes == {
        "loss_curve_": [3.0, 1.0, 2.0],
        "best_loss_": 1.0,
        "validation_scores_": None,
        "best_validation_score_": None,
        "n_iter_": 3,
    }
    assert type(attributes["loss_curve_"][0]) is float and type(attributes["n_iter_"]) is int
    scored = FitHistory(validation_scores=[])
    scored.append(1.0, np.float32(0.5))
    scored.append(0.5, 0.7)
    assert scored.attributes()["best_validation_score_"] == 0.7
    scored.best_validation_score = 0.6  # the weights kept, when not the max
    assert scored.attributes()["best_validation_score_"] == 0.6


def test_fit_history_continues_an_earlier_fit():
    est = _Est()
    vars(est).update(FitHistory([2.0, 1.0], [0.1, 0.2], 2).attributes())
    history = FitHistory.continued(est, early_stopping=True)
    assert (history.n_iter, history.first_iteration) == (2, 2)
    history.append(0.5, 0.3)
    assert history.attributes()["validation_scores_"] == pytest.approx([0.1, 0.2, 0.3])
    assert est.validation_scores_ == pytest.approx([0.1, 0.2])  # not aliased
    assert FitHistory.continued(est, early_stopping=False).validation_scores is None


@pytest.mark.parametrize(
    "values, finite",
    [
        (1.0, True),
        (None, True),
        (np.array([1.0, np.inf]), False),
        ([np.ones(2), torch.ones(3)], True),
        ([np.ones(2), (torch.tensor([0.0, float("nan")]),)], False),
        (torch.tensor([1.0], requires_grad=True), True),
        ([1.0, None, float("-inf")], False),
    ],
)
def test_check_finite_numbers_arrays_tensors(values, finite):
    assert all_finite(values) is finite
    if finite:
        check_finite(values, "unused")
    else:
        with pytest.raises(ValueError, match="^lower rho$"):
            check_finite(values, "lower rho")


# --------------------------------------------------------------------------
# contracts: every concrete estimator implements its base's abstract hooks
# --------------------------------------------------------------------------

#: Names the vocabulary retired, with the name of the same idea in HOOKS.
RETIRED_HOOK_NAMES = {
    "_null_loss": "_baseline_loss",
    "_remedy_suffix": "_scale_hint",
    "_remedy": "_scale_hint",
    "_encode_target": "_encode_targets",
    "_targets": "_encode_targets",
    "_score_outputs": "_validation_score",
    "_criterion": "_loss",
}

#: Meta-estimators over a family: their own ABC, not the family's hooks.
_META_ESTIMATORS = {"SAMKernelRegressorCV", "SAMKernelClassifierCV"}


def _estimator_names():
    import sksam

    return [name for name in sksam.__all__ if name.startswith("SAM") and name != "SAM"]


@pytest.mark.parametrize("name", _estimator_names())
def test_every_estimator_implements_its_base_hooks(name):
    import sksam

    cls = getattr(sksam, name)
    contracts = [base for base in cls.__mro__[1:] if getattr(base, "__abstractmethods__", None)]
    assert contracts, f"{name}: no ABC base declares the hooks it implements"
    if name not in _META_ESTIMATORS:
        assert issubclass(cls, EstimatorHooks), name
    assert not inspect.isabstract(cls), sorted(cls.__abstractmethods__)
    for base in contracts:
        for hook in base.__abstractmethods__:
            member = inspect.getattr_static(cls, hook)
            assert not getattr(member, "__isabstractmethod__", False), (name, hook)
    retired = sorted(n for n in RETIRED_HOOK_NAMES if hasattr(cls, n))
    assert not retired, f"{name} still uses {retired}; the vocabulary says {RETIRED_HOOK_NAMES}"


def test_a_subclass_missing_a_hook_cannot_be_built():
    from sksam.kernel import _BaseSAMKernel

    class Incomplete(_BaseSAMKernel):
        _y_checks = {}
        _scale_hint = "standardize X"

        def _encode_targets(self, X, y, sw):
            return None

    with pytest.raises(TypeError, match="_validation_score"):
        Incomplete()


def test_the_vocabulary_is_documented_and_used():
    import sksam

    text = (Path(__file__).parents[1] / "docs" / "architecture.rst").read_text()
    classes = [getattr(sksam, name) for name in _estimator_names()]
    for hook in HOOKS:
        assert f"``{hook}``" in text, hook
        assert any(hasattr(cls, hook) for cls in classes), f"{hook} is in HOOKS but unused"
    for hook in EstimatorHooks.__abstractmethods__:
        assert hook in HOOKS
