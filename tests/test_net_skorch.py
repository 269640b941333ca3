"""Pins on the skorch internals that sksam._skorch overrides or mirrors.

Each test fails loudly, naming the method, when skorch changes something we
copied or overrode: then re-read skorch's new version, update ours, and the
fingerprint in ``sksam._skorch.COPIED``.
"""

import inspect

import numpy as np
import pytest
import skorch
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from torch import nn

from sksam import _skorch
from sksam._skorch import TensorBatchLoader
from sksam.modules import MLP
from sksam.net import SAMNetClassifier
from sksam.optim import SAM


@pytest.mark.parametrize("qualname", sorted(_skorch.OVERRIDES))
def test_overridden_skorch_methods_exist_with_our_signature(qualname):
    theirs = _skorch.skorch_method(qualname)
    cls, name = qualname.split(".")
    if name == "__init__":  # ours adds m and precision, passing the rest on
        assert list(inspect.signature(theirs).parameters)[:2] == ["self", "module"]
        return
    owner = {"History": _skorch.FastHistory, "AccelerateMixin": _skorch.AcceleratedSAMMixin}.get(
        cls, _skorch.SAMNetMixin
    )
    ours = vars(owner).get(name) or getattr(_skorch.SAMNetMixin, name)
    assert inspect.signature(ours) == inspect.signature(theirs), (
        f"skorch {skorch.__version__} changed the signature of {qualname}: "
        f"{inspect.signature(theirs)} (ours: {inspect.signature(ours)})"
    )


@pytest.mark.parametrize("qualname", sorted(_skorch.COPIED))
def test_copied_skorch_methods_are_unchanged(qualname):
    found = _skorch.source_fingerprint(_skorch.skorch_method(qualname))
    row = {**_skorch.OVERRIDES, **_skorch.MIRRORED}[qualname]
    if row.purpose == "speed" and found != _skorch.COPIED[qualname]:
        # a release of skorch must not fail here: the nets fall back to skorch's loop
        # (tests/test_net_failures.py pins the fallback); re-read the method to regain speed
        assert qualname in _skorch.changed_pins("speed")
        pytest.skip(f"skorch {skorch.__version__} changed {qualname}: fast loop off")
    assert found == _skorch.COPIED[qualname], (
        f"skorch {skorch.__version__} changed {qualname}, which sksam._skorch re-implements "
        "or mirrors: re-read it, update our version, then COPIED."
    )


def test_every_override_is_listed_in_the_module_docstring():
    for qualname in _skorch.OVERRIDES:
        assert f"``{qualname}``" in _skorch.__doc__, qualname
    # the mixin is the correctness part and the speed part
    mixins = (_skorch.SAMNetMixin, _skorch.FastLoopMixin, _skorch.SAMStepMixin)
    overridden = {
        f"NeuralNet.{name}"
        for mixin in mixins
        for name, value in vars(mixin).items()
        if callable(value) and hasattr(skorch.NeuralNet, name)
    }
    assert overridden == {q for q in _skorch.OVERRIDES if q.startswith("NeuralNet.")}
    # and the speed overrides are only in the speed mixin
    for q, o in _skorch.OVERRIDES.items():
        name = q.split(".")[1]
        if q.startswith("NeuralNet.") and o.purpose == "speed":
            assert name in vars(_skorch.FastLoopMixin), q
            assert name not in vars(_skorch.SAMStepMixin), q
        if q.startswith("NeuralNet.") and o.purpose == "correctness":
            assert name in vars(_skorch.SAMStepMixin), q


def test_the_correctness_mixin_alone_gives_the_same_fit():
    # the speed overrides change no number: a net without them is the same
    class Plain(_skorch.SAMStepMixin, NeuralNetClassifier):
        pass

    X, y = load_digits(return_X_y=True)
    X, y = torch.as_tensor(X[:200] / 16, dtype=torch.float32), torch.as_tensor(y[:200])
    params = dict(
        module=MLP,
        module__n_features=64,
        module__n_outputs=10,
        module__hidden_layer_sizes=(8,),
        criterion=nn.CrossEntropyLoss,
        optimizer=SAM,
        optimizer__base_optimizer=torch.optim.SGD,
        optimizer__rho=0.1,
        lr=0.1,
        max_epochs=2,
        train_split=None,
        iterator_train=TensorBatchLoader,
        iterator_train__shuffle=True,
        verbose=0,
    )
    nets = []
    for cls in (Plain, _skorch.SkorchSAMClassifier):
        torch.manual_seed(0)
        nets.append(cls(**params).fit(X, y))
    for p, q in zip(nets[0].module_.parameters(), nets[1].module_.parameters(), strict=True):
        assert torch.equal(p, q)
    assert nets[0].history[:, "train_loss"] == nets[1].history[:, "train_loss"]


def test_fingerprint_ignores_docstrings_but_not_code():
    def f(x):
        """One."""
        return x + 1

    def g(x):
        """Two, longer."""
        # a comment
        return x + 1

    def h(x):
        return x + 2

    assert _skorch.source_fingerprint(f) == _skorch.source_fingerprint(g)
    assert _skorch.source_fingerprint(f) != _skorch.source_fingerprint(h)


class _Recorder(Callback):
    """Records every hook call skorch makes, in order."""

    def initialize(self):
        self.calls_ = []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.calls_.append("on_epoch_begin")

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        self.calls_.append(("on_batch_begin", training, len(batch[0])))

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        self.calls_.append(("on_batch_end", training, sorted(kwargs)))

    def on_grad_computed(self, net, named_parameters, batch=None, training=None, **kwargs):
        self.calls_.append("on_grad_computed")

    def on_epoch_end(self, net, **kwargs):
        self.calls_.append("on_epoch_end")


@pytest.mark.parametrize("solver", ["sam", "gd"])
def test_our_net_equals_skorchs_own_with_sam(solver):
    # skorch's own NeuralNetClassifier, given sksam's SAM optimizer, is the
    # reference for every override: same weights, same history records
    # (per batch and per epoch, validation included), same hooks in the same
    # order, except on_grad_computed, which skorch calls at every closure
    # call (twice per SAM step) and we once per step.
    from skorch.dataset import ValidSplit

    X, y = load_digits(return_X_y=True)
    X, y = torch.as_tensor(X[:200] / 16, dtype=torch.float32), torch.as_tensor(y[:200])
    params = dict(
        module=MLP,
        module__n_features=64,
        module__n_outputs=10,
        module__hidden_layer_sizes=(8,),
        module__dropout=0.2,
        criterion=nn.CrossEntropyLoss,
        optimizer=SAM,
        optimizer__base_optimizer=torch.optim.SGD,
        optimizer__rho=0.1,
        optimizer__solver=solver,
        optimizer__momentum=0.9,
        lr=0.1,
        max_epochs=2,
        batch_size=32,
        train_split=ValidSplit(4),
        iterator_train=TensorBatchLoader,
        iterator_train__shuffle=True,
        iterator_valid=TensorBatchLoader,
        verbose=0,
    )
    nets = []
    for cls in (NeuralNetClassifier, _skorch.SkorchSAMClassifier):
        torch.manual_seed(0)
        kwargs = dict(params, callbacks=[("rec", _Recorder())])  # skorch does not copy them
        if cls is NeuralNetClassifier:  # skorch does not pass the module to SAM
            kwargs["optimizer__replay_rng"] = True
        nets.append(cls(**kwargs).fit(X, y))
    theirs, ours = nets
    for p, q in zip(theirs.module_.parameters(), ours.module_.parameters(), strict=True):
        assert torch.equal(p, q)
    for a, b in zip(theirs.history, ours.history, strict=True):
        assert set(a) == set(b)
        assert a["batches"] == b["batches"]
        for key in ("train_batch_count", "valid_batch_count"):
            assert a[key] == b[key]
        for key in ("train_loss", "valid_loss", "valid_acc"):
            assert a[key] == b[key]
    calls = [dict(net.callbacks_)["rec"].calls_ for net in nets]
    grads = [c.count("on_grad_computed") for c in calls]
    n_steps = 2 * int(np.ceil(150 / 32))
    assert grads == [n_steps * (2 if solver == "sam" else 1), n_steps]
    assert [c for c in calls[0] if c != "on_grad_computed"] == [
        c for c in calls[1] if c != "on_grad_computed"
    ]


def test_estimator_builds_our_nets():
    X, y = load_digits(return_X_y=True)
    clf = SAMNetClassifier(max_epochs=1, sharpness=None, random_state=0).fit(X[:100] / 16, y[:100])
    if _skorch.changed_pins("speed"):  # a newer skorch: its own loop (warned)
        assert type(clf.net_) is _skorch.PlainSkorchSAMClassifier
        return
    assert type(clf.net_) is _skorch.SkorchSAMClassifier
    assert type(clf.net_.history) is _skorch.FastHistory


# -- skorch habits found by running skorch's own suite against our nets
#    (tests/skorch_suite.py) ------------------------------------------------------


def _suite_net(**params):
    X, y = load_digits(return_X_y=True)
    X, y = torch.as_tensor(X[:100] / 16, dtype=torch.float32), torch.as_tensor(y[:100])
    defaults = dict(
        module=MLP,
        module__n_features=64,
        module__n_outputs=10,
        module__hidden_layer_sizes=(8,),
        criterion=nn.CrossEntropyLoss,
        optimizer=SAM,
        optimizer__base_optimizer=torch.optim.SGD,
        optimizer__rho=0.05,
        lr=0.1,
        max_epochs=1,
        train_split=None,
        verbose=0,
    )
    return {**defaults, **params}, X, y


def test_a_history_given_by_the_user_is_kept():
    from skorch.history import History

    class MyHistory(History):
        pass

    params, X, y = _suite_net(history=MyHistory())
    net = _skorch.SkorchSAMClassifier(**params).fit(X, y)
    assert type(net.history) is MyHistory and len(net.history) == 1


def test_a_net_whose_module_has_another_name_initializes():
    class MyNet(_skorch.SkorchSAMClassifier):
        def initialize_module(self):
            self.mymodule_ = self.initialized_instance(self.module, self.get_params_for("module"))
            return self

    params, X, y = _suite_net()
    for key in ("module__n_features", "module__n_outputs", "module__hidden_layer_sizes"):
        del params[key]
    MyNet(
        **{**params, "module": MLP(64, 10, hidden_layer_sizes=(8,))}
    ).initialize().check_is_fitted()


def test_a_subclass_overriding_get_loss_or_infer_is_used_by_the_training_step():
    calls = []

    class MyNet(_skorch.SkorchSAMClassifier):
        def get_loss(self, y_pred, y_true, *args, **kwargs):
            calls.append("get_loss")
            return super().get_loss(y_pred, y_true, *args, **kwargs)

        def infer(self, x, **fit_params):
            calls.append("infer")
            return super().infer(x, **fit_params)

    params, X, y = _suite_net(batch_size=50, iterator_train=TensorBatchLoader)
    MyNet(**params).fit(X, y)
    assert calls.count("get_loss") == calls.count("infer") == 2 * 2  # 2 batches, 2 passes


def test_one_fit_and_partial_fit_in_the_base():
    from sksam.net import SAMNetRegressor, _BaseSAMNet

    assert "fit" in vars(_BaseSAMNet) and "partial_fit" in vars(_BaseSAMNet)
    assert "fit" not in vars(SAMNetClassifier) and "fit" not in vars(SAMNetRegressor)
    assert "partial_fit" not in vars(SAMNetRegressor)  # the classifier's adds `classes`


def test_the_step_plan_is_made_once_per_fit(monkeypatch):
    made = []
    original = _skorch.StepPlan.__init__

    def counting(self, net):
        made.append(net)
        original(self, net)

    monkeypatch.setattr(_skorch.StepPlan, "__init__", counting)
    X, y = load_digits(return_X_y=True)
    clf = SAMNetClassifier(max_epochs=3, sharpness=None, random_state=0, precision="bfloat16")
    clf.fit(X[:320] / 16, y[:320])
    assert len(made) == 1  # not once per batch (30 batches)
    assert "_plan_" not in vars(clf.net_)  # and not kept after the fit


@pytest.mark.parametrize("old, new", sorted(_skorch.MOVED.items()))
def test_classes_pickled_under_their_earlier_names_unpickle(old, new):
    # an estimator pickled by an earlier sksam names its net and history so
    import pickle

    assert pickle.loads(f"csksam._skorch\n{old}\n.".encode()) is getattr(_skorch, new)
    assert pickle.loads(b"csksam._skorch\nTensorBatchLoader\n.") is TensorBatchLoader
