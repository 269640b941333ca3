"""SAMNetClassifier: equations first, then skorch plumbing, then scikit-learn's API."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, Checkpoint, EarlyStopping, LRScheduler, ProgressBar
from torch import nn

from sksam.exceptions import DivergenceWarning
from sksam.net import MLP, SAMNetClassifier, TensorBatchLoader
from sksam.optim import SAM

from _reference import net_weights, sam_gradient, torch_seed

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _small(**params):
    defaults = dict(max_epochs=3, lr=0.1, random_state=0, sharpness=None)
    return SAMNetClassifier(**{**defaults, **params})


# -- the update rule, through skorch -----------------------------------------


def test_one_full_batch_epoch_equals_the_sam_equation(digits):
    # w1 = w0 - lr * grad L(w0 + rho g / ||g||), from a known module instance
    X, y = digits
    rho, lr = 0.5, 0.3
    torch.manual_seed(0)
    module = MLP(64, 10, hidden_layer_sizes=(16,))
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    params = list(module.parameters())
    loss0 = nn.functional.cross_entropy(module(Xt), yt)
    g_shifted = sam_gradient(module, lambda m: nn.functional.cross_entropy(m(Xt), yt), rho)
    expected = torch.cat([(p - lr * gi).detach().reshape(-1) for p, gi in zip(params, g_shifted)])

    clf = _small(module=module, rho=rho, lr=lr, max_epochs=1, batch_size=None).fit(X, y)
    torch.testing.assert_close(net_weights(clf), expected, rtol=1e-5, atol=1e-6)
    # skorch logged the loss at the unperturbed weights
    assert clf.loss_curve_[0] == pytest.approx(loss0.item(), rel=1e-6)
    # the user's instance was not trained
    assert torch.equal(next(module.parameters()), params[0])


def test_gd_is_plain_skorch_sgd_bit_for_bit(digits):
    X, y = digits
    clf = _small(
        solver="gd", lr=0.2, optimizer__momentum=0.9, module__hidden_layer_sizes=(16,)
    ).fit(X, y)
    net = NeuralNetClassifier(
        MLP,
        module__n_features=64,
        module__n_outputs=10,
        module__hidden_layer_sizes=(16,),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        optimizer__momentum=0.9,
        lr=0.2,
        max_epochs=3,
        batch_size=32,
        train_split=None,
        iterator_train=TensorBatchLoader,
        iterator_train__shuffle=True,
        iterator_valid=TensorBatchLoader,
        verbose=0,
    )
    torch.manual_seed(torch_seed(0))
    net.fit(torch.as_tensor(X), torch.as_tensor(y))
    plain = torch.cat([p.detach().reshape(-1) for p in net.module_.parameters()])
    assert torch.equal(net_weights(clf), plain)
    # and skorch's history records, batch by batch (our epoch loop is leaner)
    for ours, theirs in zip(clf.net_.history, net.history, strict=True):
        assert ours["train_batch_count"] == theirs["train_batch_count"] == 10
        assert ours["batches"] == theirs["batches"]
        assert ours["train_loss"] == theirs["train_loss"]


@pytest.mark.parametrize("solver", ["sam", "usam", "asam"])
def test_rho_zero_is_gd_bit_for_bit(digits, solver):
    X, y = digits
    module_params = dict(module__batch_norm=True, module__dropout=0.2)
    gd = _small(solver="gd", **module_params).fit(X, y)
    sam = _small(solver=solver, rho=0.0, **module_params).fit(X, y)
    assert torch.equal(net_weights(gd), net_weights(sam))
    for a, b in zip(gd.net_.module_.buffers(), sam.net_.module_.buffers()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(gd.predict_proba(X), sam.predict_proba(X))


def test_sam_differs_from_gd(digits):
    X, y = digits
    assert not torch.equal(
        net_weights(_small(solver="gd").fit(X, y)), net_weights(_small(rho=0.1).fit(X, y))
    )


def test_batchnorm_counts_each_step_once(digits):
    X, y = digits
    clf = _small(rho=0.2, module__batch_norm=True, module__dropout=0.3, batch_size=64).fit(X, y)
    bn = clf.net_.module_.layers[1]
    assert isinstance(bn, nn.BatchNorm1d)
    assert bn.num_batches_tracked.item() == 3 * int(np.ceil(300 / 64))


def test_random_numbers_are_replayed_only_with_dropout(digits):
    # The default MLP declares a forward without random numbers: SAM skips
    # the generator replay unless dropout layers are there (or it is asked).
    X, y = digits
    assert not _small(max_epochs=1).fit(X, y).net_.optimizer_._replays_rng()
    assert _small(max_epochs=1, module__dropout=0.2).fit(X, y).net_.optimizer_._replays_rng()
    assert _small(max_epochs=1, optimizer__replay_rng=True).fit(X, y).net_.optimizer_._replays_rng()


def test_optimizer_is_sam_around_the_base_and_sees_the_module(digits):
    X, y = digits
    clf = _small(
        rho=0.07, solver="asam", optimizer=torch.optim.Adam, lr=1e-3, optimizer__eta=0.1
    ).fit(X, y)
    opt = clf.net_.optimizer_
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.Adam)
    group = opt.param_groups[0]
    assert (group["rho"], group["solver"], group["eta"], group["lr"]) == (0.07, "asam", 0.1, 1e-3)
    assert opt.model is clf.net_.module_
    # skorch's setter reaches rho in the groups
    clf.net_.set_params(optimizer__rho=0.2)
    assert opt.base_optimizer.param_groups[0]["rho"] == 0.2


def _usam_step_expected(module, X, y, rho, lr, clip=None):
    """w - lr * clip(grad L(w + rho g)) on the full batch, with g unclipped."""
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    params = list(module.parameters())
    g = torch.autograd.grad(nn.functional.cross_entropy(module(Xt), yt), params)
    shifted = copy.deepcopy(module)
    with torch.no_grad():
        for p, gi in zip(shifted.parameters(), g):
            p.add_(rho * gi)
    g_shifted = torch.autograd.grad(
        nn.functional.cross_entropy(shifted(Xt), yt), list(shifted.parameters())
    )
    if clip is not None:  # torch.nn.utils.clip_grad_norm_'s rule
        norm = torch.linalg.vector_norm(torch.cat([gi.reshape(-1) for gi in g_shifted]))
        g_shifted = [gi * min(1.0, clip / (norm.item() + 1e-6)) for gi in g_shifted]
    return torch.cat([(p - lr * gi).detach().reshape(-1) for p, gi in zip(params, g_shifted)])


def test_gradient_norm_clipping_clips_the_descent_gradient(digits):
    # on_grad_computed fires once per step, after the second pass, so
    # GradientNormClipping clips grad L(w + e), the gradient the base step
    # uses, and leaves the ascent (here usam, e = rho g) unclipped.
    from skorch.callbacks import GradientNormClipping

    X, y = digits
    rho, lr, clip = 0.5, 0.3, 0.05
    torch.manual_seed(0)
    module = MLP(64, 10, hidden_layer_sizes=(16,))
    expected = _usam_step_expected(module, X, y, rho, lr, clip=clip)
    unclipped = _usam_step_expected(module, X, y, rho, lr)
    clf = _small(
        module=module,
        solver="usam",
        rho=rho,
        lr=lr,
        max_epochs=1,
        batch_size=None,
        callbacks=[GradientNormClipping(gradient_clip_value=clip)],
    ).fit(X, y)
    torch.testing.assert_close(net_weights(clf), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, unclipped, rtol=1e-3, atol=1e-4)  # the clip bit


class _GradRecorder(Callback):
    """Counts on_grad_computed calls and keeps the gradient norm each one saw."""

    def initialize(self):
        self.norms_ = []
        return self

    def on_grad_computed(self, net, named_parameters, batch=None, training=False, **kwargs):
        grads = [p.grad.reshape(-1) for _, p in named_parameters if p.grad is not None]
        self.norms_.append(torch.linalg.vector_norm(torch.cat(grads)).item() if grads else None)


@pytest.mark.parametrize("solver, rho", [("sam", 0.1), ("gd", 0.1), ("sam", 0.0)])
def test_on_grad_computed_once_per_step(digits, solver, rho):
    X, y = digits
    clf = _small(solver=solver, rho=rho, max_epochs=2, callbacks=[("grads", _GradRecorder())]).fit(
        X, y
    )
    norms = dict(clf.net_.callbacks_)["grads"].norms_
    assert len(norms) == 2 * int(np.ceil(300 / 32))  # one per step, not one per pass
    assert all(n is not None and n > 0 for n in norms)


def test_on_grad_computed_fires_when_the_first_pass_leaves_no_gradient(digits):
    # No parameter gets a gradient, so SAM takes no second pass: the hook
    # still fires once per step.
    class Frozen(nn.Module):
        def __init__(self, n_features, n_classes):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))
            self.register_buffer("proj", torch.ones(n_features, n_classes))

        def forward(self, X):
            return X.detach().requires_grad_() @ self.proj

    X, y = digits
    recorder = _GradRecorder()
    clf = _small(module=Frozen, max_epochs=1, callbacks=[("grads", recorder)]).fit(X, y)
    norms = dict(clf.net_.callbacks_)["grads"].norms_
    assert norms == [None] * int(np.ceil(300 / 32))


def test_train_step_records_the_unperturbed_loss_of_every_batch(digits):
    # history's per-batch train_loss is the first pass's loss, at w (before
    # the step), for every mini-batch: replay the batches to check it.
    X, y = digits
    clf = _small(
        max_epochs=1, rho=0.3, lr=0.1, optimizer__momentum=0.9, module__hidden_layer_sizes=(8,)
    ).fit(X, y)
    torch.manual_seed(torch_seed(0))
    module = MLP(64, 10, hidden_layer_sizes=(8,))
    opt = SAM(module.parameters(), torch.optim.SGD, rho=0.3, lr=0.1, momentum=0.9, model=module)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    losses = []
    for xb, yb in TensorBatchLoader(_dataset(Xt, yt), batch_size=32, shuffle=True):

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(xb), yb)
            loss.backward()
            return loss

        losses.append(opt.step(closure).item())
    recorded = [b["train_loss"] for b in clf.net_.history[0]["batches"]]
    np.testing.assert_allclose(recorded, losses, rtol=1e-6)
    replayed = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    torch.testing.assert_close(net_weights(clf), replayed)


def _dataset(X, y):
    from skorch.dataset import Dataset

    return Dataset(X, y)


def test_tensor_batch_loader_gives_the_shuffled_rows_in_batches():
    X = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10)
    torch.manual_seed(0)
    batches = list(TensorBatchLoader(_dataset(X, y), batch_size=4, shuffle=True))
    torch.manual_seed(0)
    order = torch.randperm(10)
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([xb for xb, _ in batches]), X[order])
    assert torch.equal(torch.cat([yb for _, yb in batches]), y[order])
    # more rows than one gather of 32 batches: the batches cross chunks
    X_big, y_big = torch.randn(300, 3), torch.arange(300)
    torch.manual_seed(1)
    big = list(TensorBatchLoader(_dataset(X_big, y_big), batch_size=4, shuffle=True))
    torch.manual_seed(1)
    order = torch.randperm(300)
    assert len(big) == 75 and all(len(xb) == 4 for xb, _ in big)
    for i, (xb, yb) in enumerate(big):
        rows = order[4 * i : 4 * i + 4]
        assert torch.equal(xb, X_big[rows]) and torch.equal(yb, y_big[rows])
    plain = list(TensorBatchLoader(_dataset(X, y), batch_size=4))
    assert torch.equal(torch.cat([xb for xb, _ in plain]), X)
    # a DataLoader option falls back to a DataLoader, same batches
    loader = TensorBatchLoader(_dataset(X, y), batch_size=4, num_workers=0)
    assert torch.equal(torch.cat([xb for xb, _ in loader]), X)


@pytest.mark.parametrize("solver", ["sam", "gd"])
def test_train_step_on_device_tensors_matches_skorchs_conversions(digits, solver):
    # Tensors on the device go straight to the module and the criterion;
    # anything else (here numpy arrays) goes through skorch's infer and
    # get_loss. Both give the same step, bit for bit.
    X, y = digits
    net = _small(solver=solver, max_epochs=1, optimizer__momentum=0.9).fit(X, y).net_
    other = copy.deepcopy(net)
    a = net.train_step((torch.as_tensor(X[:32]), torch.as_tensor(y[:32])))
    b = other.train_step((X[:32], y[:32].astype(np.int64)))
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["y_pred"], b["y_pred"])
    for p, q in zip(net.module_.parameters(), other.module_.parameters()):
        assert torch.equal(p, q)
    # the device cache behind the fast path is no skorch parameter
    assert not any(name.startswith("_device") for name in net.get_params())


# -- sharpness ------------------------------------------------------------------


def test_sharpness_is_the_top_eigenvalue_of_the_exact_hessian():
    X, y = make_classification(
        n_samples=40, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=0
    )
    clf = SAMNetClassifier(
        module__hidden_layer_sizes=(3,),
        module__activation="tanh",
        max_epochs=5,
        random_state=0,
        sharpness_max_samples=None,
    ).fit(X, y)
    module = clf.net_.module_
    names, params = zip(*[(n, p.detach().clone().double()) for n, p in module.named_parameters()])
    Xt, yt = (
        torch.as_tensor(X, dtype=torch.float64),
        torch.as_tensor(np.searchsorted(clf.classes_, y)),
    )
    double = copy.deepcopy(module).double()
    shapes = [p.shape for p in params]

    def loss(flat):
        chunks = torch.split(flat, [int(np.prod(s)) for s in shapes])
        state = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(double, state, (Xt,)), yt)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))
    top = np.linalg.eigvalsh(hessian.numpy())[-1]
    assert clf.sharpness_ == pytest.approx(top, rel=1e-3)


def test_sharpness_on_a_seeded_subsample(digits):
    X, y = digits
    a = _small(sharpness="trace", sharpness_max_samples=100).fit(X, y)
    b = _small(sharpness="trace", sharpness_max_samples=100).fit(X, y)
    c = _small(sharpness="trace", sharpness_max_samples=None).fit(X, y)
    assert a.sharpness_ == b.sharpness_ > 0
    assert a.sharpness_ != c.sharpness_
    assert _small().fit(X, y).sharpness_ is None
    rho = _small(sharpness="rho", rho=0.05).fit(X, y).sharpness_
    assert rho > 0


# -- scikit-learn API --------------------------------------------------------------


# scikit-learn's checks fit the default lr on unscaled data: divergence
# warnings there are expected (the fits still pass the checks).
@pytest.mark.filterwarnings("ignore::sksam.exceptions.DivergenceWarning")
@parametrize_with_checks(
    [SAMNetClassifier()], expected_failed_checks=lambda est: {}, xfail_strict=True
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_string_labels(digits):
    X, y = digits
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = _small(max_epochs=10).fit(X, names[y])
    np.testing.assert_array_equal(clf.classes_, np.sort(names))
    assert set(clf.predict(X)) <= set(names)
    assert clf.score(X, names[y]) > 0.8
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))


def test_same_random_state_same_fit_and_global_rng_untouched(digits):
    X, y = digits
    before = torch.get_rng_state()
    a = _small(module__dropout=0.2).fit(X, y)
    b = _small(module__dropout=0.2).fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(net_weights(a), net_weights(b))


def test_routed_parameters_survive_clone_and_set_params(digits):
    X, y = digits
    clf = _small(
        module__hidden_layer_sizes=(7,), optimizer__momentum=0.5, iterator_train__drop_last=False
    )
    params = clf.get_params()
    assert params["module__hidden_layer_sizes"] == (7,) and params["optimizer__momentum"] == 0.5
    cloned = clone(clf)
    assert cloned.get_params()["module__hidden_layer_sizes"] == (7,)
    cloned.set_params(module__hidden_layer_sizes=(5,), optimizer__momentum=0.9, rho=0.2)
    cloned.fit(X, y)
    assert cloned.net_.module_.layers[0].out_features == 5
    assert cloned.net_.optimizer_.param_groups[0]["momentum"] == 0.9
    assert cloned.net_.optimizer_.param_groups[0]["rho"] == 0.2
    assert "module__hidden_layer_sizes=(7,)" in repr(clf)


def test_user_module_class_gets_the_shapes(digits):
    X, y = digits

    class Net(nn.Module):
        def __init__(self, n_features, n_classes, width=8):
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, n_classes)
            )

        def forward(self, X):
            return self.body(X)

    clf = _small(module=Net, module__width=4).fit(X, y)
    assert (
        clf.net_.module_.body[0].in_features == 64 and clf.net_.module_.body[2].out_features == 10
    )
    assert clf.net_.module_.body[0].out_features == 4


def test_pickle_round_trip_gives_identical_probabilities(digits):
    X, y = digits
    clf = _small(optimizer__momentum=0.9, sharpness="top_eigenvalue").fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))
    assert restored.sharpness_ == clf.sharpness_
    assert restored.net_.optimizer_.model is restored.net_.module_


def test_grid_search_over_rho_and_solver_in_parallel(digits):
    X, y = digits
    grid = {"rho": [0.0, 0.1], "solver": ["gd", "sam"]}
    search = GridSearchCV(_small(max_epochs=2), grid, cv=2, n_jobs=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.solver in ("gd", "sam")
    scores = search.cv_results_["mean_test_score"]
    # rho is ignored by 'gd', and rho=0 is 'gd' bit for bit: three equal scores
    assert scores[0] == scores[1] == scores[2]
    assert search.score(X, y) > 0.5


def test_in_a_pipeline(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), _small()).fit(X, y)
    assert pipe.score(X, y) > 0.8


# -- skorch callbacks --------------------------------------------------------------


def test_early_stopping_on_the_train_loss(digits):
    X, y = digits
    stop = EarlyStopping(monitor="train_loss", patience=2, threshold=0.99)  # a 99% gain each epoch
    clf = _small(max_epochs=20, callbacks=[stop]).fit(X, y)
    assert clf.n_iter_ == 3 == len(clf.loss_curve_)
    # skorch's contract: fit uses the user's callback itself (no copy), and
    # a callback ending training is not an interruption (no warning above)
    assert dict(clf.net_.callbacks_)["EarlyStopping"] is stop
    assert stop.dynamic_threshold_ is not None
    assert dict(clf.net_.callbacks_)["EarlyStopping"].dynamic_threshold_ is not None


def test_lr_scheduler_drives_the_base_optimizer(digits):
    X, y = digits
    sched = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    clf = _small(lr=0.4, callbacks=[sched]).fit(X, y)
    assert clf.net_.optimizer_.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * 0.5**3)


def test_progress_bar(digits, capsys):
    X, y = digits
    clf = _small(max_epochs=1, callbacks=[ProgressBar()]).fit(X, y)
    assert clf.n_iter_ == 1
    assert "/10 [" in capsys.readouterr().err  # ceil(300 / 32) batches per epoch


def test_checkpoint_and_load_params(digits, tmp_path):
    X, y = digits
    checkpoint = Checkpoint(monitor="train_loss_best", dirname=str(tmp_path))
    clf = _small(callbacks=[checkpoint], optimizer__momentum=0.9).fit(X, y)
    assert (tmp_path / "params.pt").exists() and (tmp_path / "optimizer.pt").exists()
    other = _small(max_epochs=1, optimizer__momentum=0.9).fit(X, y)
    other.net_.load_params(checkpoint=checkpoint)
    np.testing.assert_array_equal(other.predict_proba(X), clf.predict_proba(X))
    # the SAM state (momentum buffers and rho) came back linked to the base optimizer
    opt = other.net_.optimizer_
    assert (
        opt.param_groups is opt.base_optimizer.param_groups and opt.param_groups[0]["rho"] == 0.05
    )


def test_validation_split_for_valid_loss(digits):
    from skorch.dataset import ValidSplit

    X, y = digits
    clf = _small(train_split=ValidSplit(5)).fit(X, y)
    assert np.all(np.isfinite(clf.net_.history[:, "valid_loss"]))
    last = clf.net_.history[-1]
    assert sum(b.get("valid_batch_size", 0) for b in last["batches"]) == 60
    assert sum(b.get("train_batch_size", 0) for b in last["batches"]) == 240
    assert last["valid_batch_count"] == 2 and last["train_batch_count"] == 8
    assert clf.net_.history[-1, "valid_acc"] > 0.5


# -- errors ---------------------------------------------------------------------------


def test_unknown_keyword_is_named_at_fit(digits):
    X, y = digits
    with pytest.raises(ValueError, match="Unknown parameter 'hidden' of SAMNetClassifier"):
        _small(hidden=3).fit(X, y)


@pytest.mark.parametrize(
    "name, owner",
    [("optimizer__rho", "rho"), ("optimizer__lr", "lr"), ("optimizer__solver", "solver")],
)
def test_routed_duplicates_of_explicit_parameters_are_refused(digits, name, owner):
    X, y = digits
    with pytest.raises(ValueError, match=f"Set '{owner}' on SAMNetClassifier instead of '{name}'"):
        _small(**{name: 0.1}).fit(X, y)


def test_one_class_is_refused(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="at least 2 classes in the data; got 1 class"):
        _small().fit(X, np.zeros(len(X)))


def test_divergence_is_an_error_not_nan_predictions(digits):
    X, y = digits
    with pytest.raises(ValueError, match="Training diverged"):
        _small(lr=1e30, max_epochs=2).fit(X * 1e5, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(digits):
    X, y = digits
    with pytest.raises(ValueError, match="device=.cuda. is not available on this machine"):
        _small(device="cuda").fit(X, y)


# -- GPU ----------------------------------------------------------------------------------


@needs_cuda
def test_cuda_fit_matches_cpu_and_reloads_on_cpu(digits, monkeypatch):
    X, y = digits
    gpu = _small(device="cuda", optimizer__momentum=0.9, sharpness="top_eigenvalue").fit(X, y)
    assert next(gpu.net_.module_.parameters()).is_cuda
    cpu = _small(optimizer__momentum=0.9, sharpness="top_eigenvalue").fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-3)
    assert gpu.sharpness_ == pytest.approx(cpu.sharpness_, rel=1e-2)
    payload = pickle.dumps(gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    with pytest.warns(UserWarning):
        restored = pickle.loads(payload)
    assert not next(restored.net_.module_.parameters()).is_cuda
    np.testing.assert_allclose(
        restored.predict_proba(X), gpu.predict_proba(X), rtol=1e-5, atol=1e-6
    )


@needs_cuda
def test_cuda_warm_start_resumes_the_gpu_generator(digits):
    # dropout draws from the GPU's generator: 2 + 2 warm epochs match 4 epochs
    X, y = digits
    params = dict(device="cuda", module__dropout=0.2, optimizer__momentum=0.9)
    once = _small(max_epochs=4, **params).fit(X, y)
    twice = _small(max_epochs=2, warm_start=True, **params).fit(X, y).fit(X, y)
    torch.testing.assert_close(net_weights(twice), net_weights(once), rtol=1e-5, atol=1e-6)


def test_verbose_prints_skorchs_table(digits, capsys):
    X, y = digits
    _small(max_epochs=2, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and "dur" in out
    _small(max_epochs=2).fit(X, y)
    assert capsys.readouterr().out == ""


def test_loss_curve_is_skorchs_train_loss_even_without_callbacks(digits):
    X, y = digits
    clf = _small().fit(X, y)
    np.testing.assert_allclose(clf.loss_curve_, clf.net_.history[:, "train_loss"], rtol=1e-12)
    bare = _small(callbacks="disable").fit(X, y)
    np.testing.assert_array_equal(bare.loss_curve_, clf.loss_curve_)


# -- incremental training: warm_start and partial_fit ------------------------------


def _momentum_buffers(clf):
    return [s["momentum_buffer"].clone() for s in clf.net_.optimizer_.base_optimizer.state.values()]


def test_warm_start_continues_weights_momentum_and_history(digits):
    X, y = digits
    clf = _small(max_epochs=2, optimizer__momentum=0.9, warm_start=True, sharpness="rho").fit(X, y)
    net, weights, buffers = clf.net_, net_weights(clf), _momentum_buffers(clf)
    clf.fit(X, y)
    assert clf.net_ is net  # the same module, optimizer and callbacks, trained on
    assert not torch.equal(net_weights(clf), weights)
    assert all(not torch.equal(a, b) for a, b in zip(_momentum_buffers(clf), buffers))
    assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.net_.history) == 4
    assert clf.net_.history[-1, "epoch"] == 4
    # a cold refit starts over: 2 epochs, the first fit's weights again
    cold = clf.set_params(warm_start=False).fit(X, y)
    assert cold.n_iter_ == len(cold.net_.history) == 2
    assert torch.equal(net_weights(cold), weights)


@pytest.mark.parametrize("params", [{}, {"module__dropout": 0.2, "optimizer__momentum": 0.9}])
def test_warm_start_two_plus_two_epochs_is_four_epochs_bit_for_bit(digits, params):
    # the weights, the momentum buffers and torch's generator (batch order,
    # dropout masks) all continue where the first fit left them
    X, y = digits
    once = _small(max_epochs=4, sharpness="rho", **params).fit(X, y)
    twice = _small(max_epochs=2, sharpness="rho", warm_start=True, **params).fit(X, y)
    first_sharpness = twice.sharpness_
    twice.fit(X, y)
    assert torch.equal(net_weights(once), net_weights(twice))
    np.testing.assert_array_equal(once.loss_curve_, twice.loss_curve_)
    assert twice.sharpness_ == once.sharpness_ != first_sharpness  # recomputed at the new weights


def test_warm_start_runs_max_epochs_more_epochs(digits):
    X, y = digits
    clf = _small(max_epochs=2, warm_start=True).fit(X, y)
    clf.set_params(max_epochs=1).fit(X, y)
    assert clf.n_iter_ == 3


def test_warm_start_refuses_other_features_and_unseen_classes(digits):
    X, y = digits
    clf = _small(max_epochs=1, warm_start=True).fit(X[y < 5], y[y < 5])
    with pytest.raises(ValueError, match="X has 63 features, but SAMNetClassifier is expecting 64"):
        clf.fit(X[:, :-1], y)
    unseen = r"`y` has classes not in `self.classes_` \(warm_start.*unseen \[5 6 7 8 9\]"
    with pytest.raises(ValueError, match=unseen):
        clf.fit(X, y)
    clf.fit(X[y < 3], y[y < 3])  # a subset of the classes is fine
    np.testing.assert_array_equal(clf.classes_, np.arange(5))
    assert clf.predict_proba(X).shape == (len(X), 5)


def test_partial_fit_runs_one_epoch_per_call_like_fit(digits):
    # n calls of partial_fit on the same data are fit(max_epochs=n), bit for bit
    X, y = digits
    params = {"module__dropout": 0.2, "optimizer__momentum": 0.9}
    clf = _small(max_epochs=50, **params)  # max_epochs does not apply to partial_fit
    for n_iter in (1, 2, 3):
        clf.partial_fit(X, y, classes=np.arange(10))
        assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.net_.history) == n_iter
    fitted = _small(max_epochs=3, **params).fit(X, y)
    assert torch.equal(net_weights(clf), net_weights(fitted))
    np.testing.assert_array_equal(clf.loss_curve_, fitted.loss_curve_)


def test_same_partial_fit_sequence_same_weights(digits):
    X, y = digits
    before = torch.get_rng_state()

    def run(random_state):
        clf = _small(module__dropout=0.2, random_state=random_state)
        clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
        for start in (100, 200):
            clf.partial_fit(X[start : start + 100], y[start : start + 100])
        return net_weights(clf)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    assert torch.equal(torch.get_rng_state(), before)


def test_partial_fit_with_part_of_the_classes_and_string_labels(digits):
    X, y = digits
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = _small().partial_fit(X[y < 2], names[y[y < 2]], classes=names)
    np.testing.assert_array_equal(clf.classes_, np.sort(names))
    assert clf.predict_proba(X).shape == (len(X), 10)
    clf.partial_fit(X, names[y])
    assert clf.n_iter_ == 2 and set(clf.predict(X)) <= set(names)


def test_partial_fit_after_fit_continues(digits):
    X, y = digits
    clf = _small(max_epochs=2, sharpness="rho").fit(X, y)
    weights, sharpness = net_weights(clf), clf.sharpness_
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 3 and not torch.equal(net_weights(clf), weights)
    assert clf.sharpness_ != sharpness and clf.sharpness_ > 0
    assert clf.set_params(sharpness=None).partial_fit(X, y).sharpness_ is None


def test_partial_fit_errors(digits):
    X, y = digits
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        _small().partial_fit(X, y)
    with pytest.raises(ValueError, match=r"`y` has classes not in `self.classes_`.*unseen \[8 9\]"):
        _small().partial_fit(X, y, classes=np.arange(8))
    with pytest.raises(
        ValueError, match=r"at least 2 classes in `classes`; got 1 class\(es\): \[0\]"
    ):
        _small().partial_fit(X[y == 0], y[y == 0], classes=[0])
    unfitted = _small()
    with pytest.raises(ValueError):
        unfitted.partial_fit(X, y, classes=np.arange(8))
    with pytest.raises(NotFittedError):  # a failed first call leaves it unfitted
        unfitted.predict(X)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        unfitted.partial_fit(X, y)
    clf = _small().partial_fit(X[y < 5], y[y < 5], classes=np.arange(5))
    unseen = r"`y` has classes not in `self.classes_` \(partial_fit.*unseen \[5 6 7 8 9\]"
    with pytest.raises(ValueError, match=unseen):
        clf.partial_fit(X, y)
    with pytest.raises(ValueError, match="X has 63 features, but SAMNetClassifier is expecting 64"):
        clf.partial_fit(X[:, :-1], y % 5)
    with pytest.raises(
        ValueError, match=r"`classes=.*` is not the same as on the last call to fit"
    ):
        clf.partial_fit(X, y, classes=np.arange(10))
    clf.partial_fit(X, y % 5, classes=[4, 3, 2, 1, 0])  # the same classes, in any order
    assert clf.n_iter_ == 2


def test_pickle_after_partial_fit_predicts_and_continues_identically(digits):
    X, y = digits
    clf = _small(module__dropout=0.2, optimizer__momentum=0.9).partial_fit(
        X, y, classes=np.arange(10)
    )
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    assert torch.equal(net_weights(clf), net_weights(restored))


def test_grid_search_ignores_warm_start(digits):
    # GridSearchCV fits clones, which are unfitted: warm_start changes nothing
    X, y = digits
    grid = {"rho": [0.0, 0.1]}
    searches = [
        GridSearchCV(_small(max_epochs=2, warm_start=warm), grid, cv=2) for warm in (False, True)
    ]
    scores = [search.fit(X, y).cv_results_["mean_test_score"] for search in searches]
    np.testing.assert_array_equal(*scores)


# -- silent failures made loud (issue: one spine, no silent failure) ------------------


@pytest.mark.parametrize("lr", [50.0, 1e3])
def test_finite_divergence_warns_with_cause_and_remedy(lr):
    # lr=50 trains to one class (10% accuracy), lr=1e3 to a loss of ~1e22:
    # both stay finite, so only the loss curve tells
    X, y = load_digits(return_X_y=True)
    with pytest.warns(
        Warning,
        match=r"SAMNetClassifier: training diverged: the training loss .*"
        r"Lower lr \(now",
    ):
        clf = SAMNetClassifier(lr=lr, random_state=0, sharpness=None, max_epochs=5).fit(X / 16, y)
    assert clf.score(X / 16, y) < 0.2  # the warning was right


def test_no_better_than_a_constant_after_a_jump_warns(digits):
    # lr=3 on scaled digits: no epoch loss 10x the start, but batch losses
    # jumped and the fit ends at the class-frequency predictor's loss
    X, y = load_digits(return_X_y=True)
    with pytest.warns(DivergenceWarning, match="no better than the best constant prediction"):
        SAMNetClassifier(lr=3, random_state=0, sharpness=None, max_epochs=5).fit(X / 16, y)


@pytest.mark.parametrize("params", [{}, {"lr": 0.003}, {"optimizer__momentum": 0.9, "lr": 0.1}])
def test_healthy_and_slow_fits_are_silent(digits, params):
    import warnings

    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(**params).fit(X, y)


@pytest.mark.parametrize(
    "callback, monitor",
    [
        (EarlyStopping(), "valid_loss"),
        (Checkpoint(), "valid_loss_best"),
        (("stop", EarlyStopping(monitor="valid_acc")), "valid_acc"),
    ],
)
def test_validation_callbacks_without_a_split_are_a_clear_error(digits, callback, monitor):
    X, y = digits
    with pytest.raises(ValueError, match=f"monitors '{monitor}'.*train_split=None.*ValidSplit"):
        _small(callbacks=[callback]).fit(X, y)


def test_validation_callbacks_with_a_split_or_a_train_monitor_work(digits):
    from skorch.dataset import ValidSplit

    X, y = digits
    assert _small(callbacks=[EarlyStopping()], train_split=ValidSplit(5)).fit(X, y).n_iter_ >= 1
    clf = _small(callbacks=[("stop", EarlyStopping())], callbacks__stop__monitor="train_loss")
    assert clf.fit(X, y).n_iter_ >= 1


def test_a_key_error_on_validation_data_names_train_split(digits):
    # a callback that reads valid_loss without declaring a monitor
    class ReadsValidLoss(Callback):
        def on_epoch_end(self, net, **kwargs):
            net.history[-1, "valid_loss"]

    X, y = digits
    with pytest.raises(ValueError, match="'valid_loss', a validation score.*train_split=None"):
        _small(callbacks=[ReadsValidLoss()]).fit(X, y)


def test_set_params_refuses_unknown_names_at_once(digits):
    clf = _small()
    with pytest.raises(ValueError, match="Invalid parameter 'rhoo'"):
        clf.set_params(rhoo=0.1)
    with pytest.raises(ValueError, match="Invalid parameter 'modul'"):
        clf.set_params(modul__hidden_layer_sizes=(3,))
    # routed names still work, through clone and GridSearchCV
    clf.set_params(module__hidden_layer_sizes=(5,), optimizer__momentum=0.5, callbacks__x=None)
    assert clone(clf).get_params()["optimizer__momentum"] == 0.5
    X, y = digits
    search = GridSearchCV(
        _small(max_epochs=1, callbacks=[("stop", EarlyStopping(monitor="train_loss"))]),
        {"optimizer__momentum": [0.0, 0.5], "callbacks__stop__patience": [1, 2]},
        cv=2,
    ).fit(X, y)
    assert search.best_params_["callbacks__stop__patience"] in (1, 2)


def test_callback_swapped_in_by_set_params_gets_its_batch_hooks(digits):
    # the listener cache is built from the callbacks of this fit, including
    # one replaced through callbacks__<name>
    X, y = digits
    clf = _small(max_epochs=1, callbacks=[("grads", ProgressBar())])
    clf.set_params(callbacks__grads=_GradRecorder())
    clf.fit(X, y)
    recorder = dict(clf.net_.callbacks_)["grads"]
    assert isinstance(recorder, _GradRecorder)
    assert len(recorder.norms_) == int(np.ceil(300 / 32))


@pytest.mark.parametrize("device", ["nonsense", "cuda:7", "cuda"])
def test_unavailable_device_is_a_value_error(digits, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    X, y = digits
    with pytest.raises(ValueError, match=f"device='{device}' is not"):
        _small(device=device).fit(X, y)


class _ThreadsSeen(Callback):
    def on_epoch_begin(self, net, **kwargs):
        self.threads_ = torch.get_num_threads()


@pytest.mark.parametrize("n_threads, expected", [(None, 1), (2, 2)])
def test_thread_policy_during_fit_and_restored_after(digits, n_threads, expected):
    X, y = digits
    before = torch.get_num_threads()
    clf = _small(max_epochs=1, n_threads=n_threads, callbacks=[("t", _ThreadsSeen())]).fit(X, y)
    assert dict(clf.net_.callbacks_)["t"].threads_ == expected  # a small problem: one thread
    clf.predict(X)
    assert torch.get_num_threads() == before


def test_a_module_with_the_wrong_output_width_is_a_clear_error(digits):
    # 5 outputs for the 10 digits: skorch trains it and predict fails (or
    # predicts a class index that does not exist)
    class Five(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(64, 5)

        def forward(self, X):
            return self.layer(X)

    X, y = digits
    with pytest.raises(ValueError, match=r"output of shape \(2, 5\).*needs \(2, 10\)"):
        _small(module=Five).fit(X, y)
