"""The nets' trust cases: a fit succeeds or changes nothing, randomness the estimator
owns, skorch habits (optimizers, callbacks, modules) that work or fail clearly."""

import pickle
import threading
import warnings

import numpy as np
import pytest
import torch
from joblib import parallel_config
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping
from torch import nn

import sksam.net
from sksam import SAMNetClassifier, SAMNetRegressor
from sksam.modules import MLP
from sksam.net import TensorBatchLoader

from _reference import net_weights, torch_seed


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _small(**params):
    defaults = dict(max_epochs=3, lr=0.1, random_state=0, sharpness=None)
    return SAMNetClassifier(**{**defaults, **params})


def _state(est):
    """The estimator's attributes, with the network's weights by value."""
    state = {k: v for k, v in vars(est).items() if k != "net_"}
    if hasattr(est, "net_"):
        state["net_"] = est.net_
        state["weights"] = net_weights(est).clone()
        state["n_epochs"] = len(est.net_.history)
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other, err_msg=key)
        else:
            assert value is other or value == other, key


class _Interrupt(nn.Module):
    """The default MLP, with Ctrl-C pressed during its ``after``-th training forward pass."""

    draws_random_numbers = False

    def __init__(self, n_features, n_outputs, after=5):
        super().__init__()
        self.mlp = MLP(n_features, n_outputs, hidden_layer_sizes=(16,))
        self.after = after
        self.calls = 0

    def forward(self, X):
        if self.training:
            self.calls += 1
            if self.calls == self.after:
                raise KeyboardInterrupt
        return self.mlp(X)


class _NaNInEval(nn.Module):
    """Finite in training mode, NaN in eval mode (as a blown-up running statistic gives)."""

    def __init__(self, n_features, n_outputs):
        super().__init__()
        self.layer = nn.Linear(n_features, n_outputs)

    def forward(self, X):
        out = self.layer(X)
        return out if self.training else out * float("nan")


# -- a fit succeeds or changes nothing ---------------------------------------------


@pytest.mark.parametrize("make", [_small, lambda **p: SAMNetRegressor(random_state=0, **p)])
def test_a_failed_first_fit_leaves_the_estimator_unfitted(digits, make):
    X, y = digits
    est = make(lr=1e30, max_epochs=2)
    before = dict(vars(est))
    with pytest.raises(ValueError, match="Training diverged"):
        est.fit(X * 1e5, y)
    assert vars(est) == before  # no n_features_in_, classes_, net_...
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_a_failed_refit_keeps_the_previous_model(digits):
    X, y = digits
    clf = _small(sharpness="trace").fit(X, y)
    proba = clf.predict_proba(X)
    before = _state(clf.set_params(lr=1e30))
    with pytest.raises(ValueError, match="Training diverged"):
        clf.fit(X[:, :10] * 1e5, y)  # other data, other width
    _assert_same_state(before, _state(clf))
    clf.set_params(lr=0.1)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_a_failed_continued_fit_rolls_back_weights_optimizer_history_and_rng(digits, how):
    X, y = digits
    clf = _small(optimizer__momentum=0.9, warm_start=True).fit(X, y)
    before, proba = _state(clf), clf.predict_proba(X)
    momentum = [s["momentum_buffer"].clone() for s in clf.net_.optimizer_.state.values()]
    rng = clf.net_.rng.get_state()[0].clone()
    with pytest.raises(ValueError, match="Training diverged"):
        if how == "warm_start":
            clf.fit(X * 1e12, y)
        else:
            clf.partial_fit(X * 1e12, y)
    _assert_same_state(before, _state(clf))
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    for saved, now in zip(momentum, clf.net_.optimizer_.state.values(), strict=True):
        assert torch.equal(saved, now["momentum_buffer"])
    assert torch.equal(clf.net_.rng.get_state()[0], rng)
    # and training continues exactly as if the failed call never happened
    clf.fit(X, y)
    reference = _small(optimizer__momentum=0.9, max_epochs=6).fit(X, y)
    assert torch.equal(net_weights(clf), net_weights(reference))


def test_non_finite_eval_outputs_are_an_error_not_a_fitted_nan_model(digits):
    # the training loss is finite; predict (eval mode) would return NaN
    X, y = digits
    clf = _small(sharpness="top_eigenvalue").fit(X, y)
    before = _state(clf.set_params(module=_NaNInEval))
    with pytest.raises(ValueError, match="outputs in eval mode .* are not finite"):
        clf.fit(X, y)
    _assert_same_state(before, _state(clf))  # sharpness_ is the old model's, with it
    fresh = _small(module=_NaNInEval, sharpness="top_eigenvalue")
    with pytest.raises(ValueError, match="outputs in eval mode"):
        fresh.fit(X, y)
    assert not hasattr(fresh, "sharpness_") and not hasattr(fresh, "net_")


def test_ctrl_c_in_the_epoch_loop_keeps_the_model_with_a_warning(digits):
    X, y = digits
    with pytest.warns(UserWarning, match="interrupted by user; the current weights are kept"):
        clf = _small(module=_Interrupt, max_epochs=5).fit(X, y)
    check_is_fitted(clf)
    # SAM's 5th forward pass is the first pass of the 3rd batch: 2 batches done
    assert clf.n_iter_ == 1
    assert [len(b) for b in clf.net_.history[-1]["batches"]] == [2, 2, 0]
    assert np.isfinite(clf.loss_curve_).all()
    assert clf.predict(X).shape == (300,)


def test_ctrl_c_before_the_first_batch_keeps_the_untrained_model(digits):
    class StopAtStart(Callback):
        def on_epoch_begin(self, net, **kwargs):
            raise KeyboardInterrupt  # a callback ends training: skorch's convention

    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not an interruption: no warning
        clf = _small(callbacks=[StopAtStart()]).fit(X, y)
    assert clf.n_iter_ == 1 and np.isnan(clf.loss_curve_[0])


def test_early_stopping_is_not_an_interruption(digits):
    X, y = digits
    stop = EarlyStopping(monitor="train_loss", patience=2, threshold=0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = _small(max_epochs=20, callbacks=[stop]).fit(X, y)
    assert clf.n_iter_ == 3


@pytest.mark.parametrize("fitted", [False, True])
def test_ctrl_c_during_the_sharpness_is_re_raised_and_changes_nothing(digits, monkeypatch, fitted):
    X, y = digits
    clf = _small(sharpness="trace")
    if fitted:
        clf.fit(X, y)
    before = _state(clf)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sksam.net, "measure_sharpness", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X[:200], y[:200])
    _assert_same_state(before, _state(clf))
    if not fitted:
        with pytest.raises(NotFittedError):
            check_is_fitted(clf)


# -- randomness owned by the estimator ----------------------------------------------


def test_fit_neither_reads_nor_moves_the_global_generator(digits):
    # Reseeding the global generator between fits changes nothing, and a
    # draw from it after fit is the draw that was next before fit.
    X, y = digits
    params = dict(module__dropout=0.3, max_epochs=2)
    torch.manual_seed(1)
    a = _small(**params).fit(X, y)
    expected = torch.rand(3)
    torch.manual_seed(1)
    b = _small(**params).fit(X, y)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(2)
    c = _small(**params).fit(X, y)
    assert torch.equal(net_weights(a), net_weights(b)) and torch.equal(
        net_weights(a), net_weights(c)
    )


def test_the_batch_order_comes_from_the_estimators_generator(digits):
    X, y = digits
    clf = _small(max_epochs=1)
    clf.fit(X, y)
    assert isinstance(clf.net_.iterator_train__generator, torch.Generator)
    assert clf.net_.iterator_train__generator is clf.net_.rng.generator


def test_clones_fitted_in_threads_equal_sequential_fits(digits):
    X, y = digits
    estimators = [
        _small(module__dropout=0.3, max_epochs=6, random_state=seed, sharpness="trace")
        for seed in (0, 1)
    ]
    sequential = [clone(e).fit(X, y) for e in estimators]
    barrier = threading.Barrier(len(estimators))
    errors = []

    def fit(est):
        try:
            barrier.wait()
            est.fit(X, y)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(e,)) for e in estimators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for seq, par in zip(sequential, estimators, strict=True):
        assert torch.equal(net_weights(seq), net_weights(par))
        np.testing.assert_array_equal(seq.predict_proba(X), par.predict_proba(X))
        assert seq.sharpness_ == par.sharpness_


def test_grid_search_in_threads_equals_the_sequential_search(digits):
    X, y = digits
    grid = {"rho": [0.0, 0.05, 0.5]}
    base = _small(module__dropout=0.2, max_epochs=4)
    one = GridSearchCV(base, grid, cv=3).fit(X, y)
    with parallel_config(backend="threading"):
        two = GridSearchCV(base, grid, cv=3, n_jobs=2).fit(X, y)
    assert one.best_params_ == two.best_params_
    np.testing.assert_array_equal(
        one.cv_results_["mean_test_score"], two.cv_results_["mean_test_score"]
    )
    for k in range(3):
        key = f"split{k}_test_score"
        np.testing.assert_array_equal(one.cv_results_[key], two.cv_results_[key])


# -- skorch habits ---------------------------------------------------------------


def test_lbfgs_trains_plain_gd_as_skorch_does(digits):
    X, y = digits
    params = dict(lr=0.5, batch_size=None, max_epochs=3, module__hidden_layer_sizes=(16,))
    clf = _small(solver="gd", optimizer=torch.optim.LBFGS, **params).fit(X, y)
    assert type(clf.net_.optimizer_) is torch.optim.LBFGS
    net = NeuralNetClassifier(
        MLP,
        module__n_features=64,
        module__n_outputs=10,
        module__hidden_layer_sizes=(16,),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.LBFGS,
        lr=0.5,
        max_epochs=3,
        batch_size=-1,
        train_split=None,
        iterator_train=TensorBatchLoader,
        iterator_train__shuffle=True,
        iterator_valid=TensorBatchLoader,
        verbose=0,
    )
    torch.manual_seed(torch_seed(0))
    net.fit(torch.as_tensor(X), torch.as_tensor(y))
    assert torch.equal(
        net_weights(clf), torch.cat([p.reshape(-1) for p in net.module_.parameters()])
    )
    assert clf.score(X, y) > 0.5
    # rho=0 is plain GD as well
    same = _small(optimizer=torch.optim.LBFGS, rho=0.0, **params).fit(X, y)
    assert torch.equal(net_weights(same), net_weights(clf))


def test_lbfgs_under_a_perturbed_solver_is_refused_at_fit_start(digits):
    X, y = digits
    clf = _small(optimizer=torch.optim.LBFGS)
    with pytest.raises(ValueError, match=r"optimizer=LBFGS needs a closure .* solver='sam'"):
        clf.fit(X, y)
    assert not hasattr(clf, "n_features_in_")
    for option in (dict(m=2), dict(precision="bfloat16")):
        with pytest.raises(ValueError, match="supports neither m > 1 nor precision"):
            _small(optimizer=torch.optim.LBFGS, solver="gd", **option).fit(X, y)


class _Locked(Callback):
    """A callback holding a live handle, as a logger does."""

    def __init__(self):
        self.lock = threading.Lock()
        self.batches = 0

    def on_batch_end(self, net, **kwargs):
        with self.lock:
            self.batches += 1


def test_callbacks_holding_live_handles_are_used_as_they_are(digits):
    X, y = digits
    callback = _Locked()
    clf = _small(callbacks=[callback], max_epochs=2).fit(X, y)
    assert callback.batches == 2 * 10  # the user's object itself, as in skorch
    assert dict(clf.net_.callbacks_)["_Locked"] is callback


def test_tensorboard_callback(digits, tmp_path):
    pytest.importorskip("tensorboard")
    from skorch.callbacks import TensorBoard
    from torch.utils.tensorboard import SummaryWriter

    X, y = digits
    writer = SummaryWriter(log_dir=str(tmp_path))
    clf = _small(callbacks=[TensorBoard(writer)], max_epochs=2).fit(X, y)
    writer.close()
    assert clf.n_iter_ == 2
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


class _Counter(Callback):
    def __init__(self):
        self.batches = 0
        self.unpicklable = lambda: None  # a local lambda: pickling fails

    def on_batch_end(self, net, **kwargs):
        self.batches += 1


def test_a_callback_removed_from_callbacks_is_no_longer_called_and_the_net_pickles(digits):
    X, y = digits
    counter = _Counter()
    clf = _small(max_epochs=1, warm_start=True).fit(X, y)
    clf.net_.callbacks_.append(("counter", counter))
    clf.fit(X, y)
    assert counter.batches == 10
    clf.net_.callbacks_[:] = [(n, cb) for n, cb in clf.net_.callbacks_ if n != "counter"]
    restored = pickle.loads(pickle.dumps(clf))  # nothing still holds the callback
    clf.fit(X, y)
    assert counter.batches == 10  # not called any more
    restored.fit(X, y)
    assert torch.equal(net_weights(restored), net_weights(clf))


def test_a_callback_added_to_callbacks_is_called(digits):
    X, y = digits
    clf = _small(max_epochs=1, warm_start=True).fit(X, y)
    counter = _Counter()
    clf.net_.callbacks_.append(("counter", counter))
    clf.fit(X, y)
    assert counter.batches == 10


def test_a_module_ending_in_softmax_warns(digits):
    X, y = digits

    class Probabilities(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))

        def forward(self, X):
            return self.layers(X)

    with pytest.warns(UserWarning, match="outputs already sum to one .*nn.Softmax"):
        _small(module=Probabilities, max_epochs=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(max_epochs=1).fit(X, y)  # logits: silent


def test_a_module_factory_that_returns_no_module_is_a_clear_error(digits):
    X, y = digits
    with pytest.raises(ValueError, match="module must be a torch.nn.Module .* gave a int"):
        _small(module=lambda **kwargs: 42).fit(X, y)


@pytest.mark.parametrize("sizes", [(0,), (16, 0), (-3,), (2.5,), "big"])
def test_a_hidden_size_that_is_not_positive_is_a_clear_error(digits, sizes):
    X, y = digits
    with pytest.raises(ValueError, match="module__hidden_layer_sizes.*positive integers"):
        _small(module__hidden_layer_sizes=sizes).fit(X, y)


def test_a_module_of_another_input_width_is_a_clear_error(digits):
    X, y = digits
    with pytest.raises(ValueError, match="X, which has 64 features .*input layer take 64"):
        _small(module=nn.Linear(10, 10)).fit(X, y)


# -- skorch's names on the estimators ----------------------------------------------


@pytest.mark.parametrize("make", [_small, lambda **p: SAMNetRegressor(random_state=0, **p)])
def test_skorch_names_are_read_only_views_onto_net(digits, make, tmp_path):
    X, y = digits
    est = make(max_epochs=2)
    names = ("history_", "history", "module_", "optimizer_", "criterion_")
    for name in names:  # nothing ending in '_' before fit (scikit-learn's rule)
        assert not hasattr(est, name)
        with pytest.raises(NotFittedError, match=f"{name} is the fitted skorch net's"):
            getattr(est, name)
    with pytest.raises(NotFittedError):
        est.save_params(f_params=str(tmp_path / "w.pt"))
    est.fit(X, y)
    assert est.history_ is est.net_.history and est.history is est.net_.history
    assert est.history_[:, "train_loss"] == est.net_.history[:, "train_loss"]
    assert est.module_ is est.net_.module_ and est.optimizer_ is est.net_.optimizer_
    assert est.criterion_ is est.net_.criterion_
    for name in names:
        with pytest.raises(AttributeError):
            setattr(est, name, None)
    assert not {"history_", "module_", "optimizer_", "criterion_"} & set(vars(est))
    before = est.predict(X)
    est.save_params(f_params=str(tmp_path / "w.pt"))
    other = clone(est).fit(X[:100], y[:100])
    other.load_params(f_params=str(tmp_path / "w.pt"))
    np.testing.assert_array_equal(other.predict(X), before)


# -- where SAM and GD coincide, verbose says so ----------------------------------------


def test_verbose_says_when_sam_stopped_where_gd_stops(digits, capsys):
    # The case: digits at the default settings end with a training
    # loss of a third of ln 10, where SAM and GD predict alike.
    X, y = digits
    SAMNetClassifier(random_state=0, sharpness=None, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "stopped far from a minimum, where solver='sam' and solver='gd'" in out
    assert "optimizer__momentum=0.9" in out
    # near a minimum (momentum, more epochs): no such line
    SAMNetClassifier(
        random_state=0, sharpness=None, verbose=1, max_epochs=40, optimizer__momentum=0.9
    ).fit(X, y)
    assert "far from a minimum" not in capsys.readouterr().out
    # GD, or verbose=0: nothing to say
    SAMNetClassifier(random_state=0, sharpness=None, verbose=1, solver="gd").fit(X, y)
    assert "far from a minimum" not in capsys.readouterr().out
    SAMNetClassifier(random_state=0, sharpness=None).fit(X, y)
    assert capsys.readouterr().out == ""


def test_sam_and_gd_differ_where_sam_can_act():
    # digits with 30% of the training labels replaced at random, momentum: the
    # SAM and GD fits end in different places, and SAM predicts better
    X, y = load_digits(return_X_y=True)
    X, X_test, y, y_test = X[:1200] / 16, X[1200:] / 16, y[:1200], y[1200:]
    rng = np.random.RandomState(0)
    noisy = rng.rand(len(y)) < 0.3
    y = np.where(noisy, rng.randint(0, 10, len(y)), y)
    params = dict(random_state=0, sharpness=None, optimizer__momentum=0.9, rho=0.2)
    sam = SAMNetClassifier(**params).fit(X, y)
    gd = SAMNetClassifier(solver="gd", **params).fit(X, y)
    assert np.mean(sam.predict(X_test) != gd.predict(X_test)) > 0.02
    assert sam.score(X_test, y_test) > gd.score(X_test, y_test) + 0.02  # 0.901 vs 0.856


def test_a_net_pickled_before_it_owned_its_random_state_continues(digits):
    # nets pickled by earlier versions have no rng: continued training gets one
    X, y = digits
    clf = _small(warm_start=True, module__dropout=0.2).fit(X, y)
    del clf.net_.rng, clf.net_.iterator_train__generator
    clf = pickle.loads(pickle.dumps(clf))
    before = torch.get_rng_state()
    clf.fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)
    assert clf.net_.iterator_train__generator is clf.net_.rng.generator
