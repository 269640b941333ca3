"""The nets' failures that name their cause, and the paths a fit takes.

A divergence caused by ``rho`` names ``rho``; batch normalization and a last
batch of one row; ``partial_fit``'s ``classes`` validated as scikit-learn
does; the docstrings list every sharpness measure; Momentum-SAM takes the
fast training step; a changed skorch pin falls back to skorch's own loop.
"""

import re
import warnings

import numpy as np
import pytest
import skorch
import torch
from sklearn.datasets import load_digits, make_classification
from skorch import NeuralNetClassifier
from torch import nn

from sksam import SAMNetClassifier, SAMNetRegressor, _skorch
from sksam._skorch import TensorBatchLoader
from sksam.exceptions import DivergenceWarning
from sksam.modules import MLP
from sksam.optim import MomentumSAM
from sksam.sharpness import LOGIT_MEASURES, MEASURES

from _reference import net_weights


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(200, 10, random_state=0)
    return X.astype(np.float32), y


def _small(**params):
    defaults = dict(max_epochs=5, random_state=0, sharpness=None)
    return SAMNetClassifier(**{**defaults, **params})


# -- a divergence caused by rho names rho -----------------------------------------


def test_a_finite_blow_up_caused_by_rho_names_rho_not_lr(blobs):
    # the loss jumps to ~1e8 with rho=1e6, while gradient descent with the
    # same lr trains: the message used to say "Lower lr"
    X, y = blobs
    with pytest.warns(DivergenceWarning) as record:
        _small(rho=1e6).fit(X, y)
    message = str(record[0].message)
    assert "The same fit with rho=0 (gradient descent) does not diverge" in message
    assert "rho=1e+06 is too large for solver='sam'" in message
    assert "Lower lr" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(rho=0.0).fit(X, y)  # the counterfactual the message states


def test_a_non_finite_fit_caused_by_rho_names_rho(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match=r"Training diverged: .* rho=1e\+06 is too large") as info:
        _small(solver="usam", rho=1e6).fit(X, y)
    assert "smaller lr" not in str(info.value)


def test_a_divergence_caused_by_lr_still_names_lr(blobs):
    # rho=0.05 with lr=30: gradient descent diverges too, so rho is not blamed
    X, y = blobs
    with pytest.raises(ValueError, match=r"Use a smaller lr \(or rho\)") as info:
        _small(lr=30.0).fit(X, y)
    assert "rho=0 (gradient descent)" not in str(info.value)


def test_continued_training_is_not_judged_by_a_counterfactual(blobs):
    # its optimizer is the first fit's: solver and rho set since do not apply
    X, y = blobs
    clf = _small(warm_start=True).fit(X, y)
    weights = net_weights(clf).clone()
    clf.set_params(solver="usam", rho=1e6)
    with pytest.raises(ValueError, match=r"Use a smaller lr \(or rho\)") as info:
        clf.fit(X * 1e12, y)
    assert "rho=0 (gradient descent)" not in str(info.value)
    assert torch.equal(net_weights(clf), weights)


# -- batch normalization and a last batch of one row --------------------------------


def _batch_sizes(clf):
    return [[b["train_batch_size"] for b in epoch["batches"]] for epoch in clf.net_.history]


@pytest.mark.parametrize("make", [SAMNetClassifier, SAMNetRegressor])
def test_batch_norm_skips_a_last_batch_of_one_row(blobs, make):
    # 33 rows in batches of 32: torch refused the last row ("Expected more
    # than 1 value per channel when training")
    X, y = blobs[0][:33], blobs[1][:33]
    est = make(module__batch_norm=True, batch_size=32, max_epochs=2, random_state=0)
    est.fit(X, y.astype(np.float32) if make is SAMNetRegressor else y)
    assert _batch_sizes(est) == [[32], [32]]
    # without batch normalization every row is trained on, as before
    plain = make(batch_size=32, max_epochs=2, random_state=0, sharpness=None)
    plain.fit(X, y.astype(np.float32) if make is SAMNetRegressor else y)
    assert _batch_sizes(plain) == [[32, 1], [32, 1]]


def test_batch_norm_on_batches_of_one_row_names_batch_size(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match=r"batch normalization.*batch_size=1, m=1"):
        _small(module__batch_norm=True, batch_size=1, max_epochs=1).fit(X[:10], y[:10])


@pytest.mark.parametrize("loader_kwargs", [{}, {"num_workers": 0}])  # ours, DataLoader's
@pytest.mark.parametrize("n, expected", [(33, [32]), (34, [32, 2]), (1, [1]), (64, [32, 32])])
def test_the_loader_drops_only_a_last_batch_of_one_row(n, expected, loader_kwargs):
    from skorch.dataset import Dataset
    from torch.utils.data import Subset

    X, y = torch.arange(2.0 * n + 2).reshape(-1, 2), torch.arange(n + 1)
    subset = Subset(Dataset(X, y), list(range(1, n + 1)))  # as a train_split gives it
    loader = TensorBatchLoader(
        subset,
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        drop_single_row=True,
        **loader_kwargs,
    )
    sizes = [len(batch[0]) for batch in loader]
    assert sizes == expected and len(loader) == len(expected)


# -- partial_fit's classes, as scikit-learn validates them --------------------------


@pytest.mark.parametrize(
    "classes, match",
    [
        ([0.0, 1.0, np.nan], "classes must hold finite, discrete class labels.*NaN"),
        ([0.0, 1.0, np.inf], "classes must hold finite, discrete class labels.*infinity"),
        ([0.5, 1.5], "classes must hold finite, discrete class labels"),
        ([[0, 1], [1, 0]], r"classes must be a 1-D array .* shape \(2, 2\)"),
    ],
)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # the error alone, no stray cast warning
def test_partial_fit_refuses_classes_scikit_learn_refuses(blobs, classes, match):
    X, y = blobs
    clf = _small()
    with pytest.raises(ValueError, match=match):
        clf.partial_fit(X, y, classes=classes)
    assert not hasattr(clf, "classes_")


def test_partial_fit_drops_duplicate_classes_as_scikit_learn_does(blobs):
    X, y = blobs
    clf = _small().partial_fit(X, y, classes=[1, 0, 1])
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_partial_fit_refuses_labels_outside_classes(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match=r"`y` has unseen \[5 6\]"):
        _small().partial_fit(X, y + 5, classes=[0, 1])


# -- every sharpness measure is documented ---------------------------------------------


def _sharpness_entry(doc):
    return re.search(r"    sharpness : (.*?)\n    sharpness_max_samples", doc, re.S).group(1)


@pytest.mark.parametrize(
    "estimator, measures",
    [
        (SAMNetClassifier, set(MEASURES)),
        (SAMNetRegressor, set(MEASURES) - set(LOGIT_MEASURES)),
    ],
)
def test_the_docstring_lists_every_sharpness_measure_the_estimator_takes(estimator, measures):
    type_line = _sharpness_entry(estimator.__doc__).split("\n")[0]
    listed = set(re.findall(r"'(\w+)'", type_line.split("}")[0]))
    assert listed == measures
    X, y = make_classification(40, 4, random_state=0)
    for measure in sorted(measures):  # and each one works
        est = estimator(max_epochs=1, random_state=0, sharpness=measure)
        assert np.isfinite(est.fit(X, y.astype(np.float32)).sharpness_)


# -- Momentum-SAM takes the fast step ---------------------------------------------------


def test_msam_takes_sksams_training_step_not_skorchs(blobs, monkeypatch):
    def stock(*args, **kwargs):
        raise AssertionError("skorch's stock train_step was called")

    monkeypatch.setattr(skorch.NeuralNet, "train_step", stock)
    X, y = blobs
    clf = _small(solver="msam", rho=0.3, optimizer__momentum=0.9, max_epochs=2).fit(X, y)
    assert isinstance(clf.net_.optimizer_, MomentumSAM)


def test_msam_through_our_step_equals_skorchs_own_step():
    # skorch's own NeuralNetClassifier driving MomentumSAM through its stock
    # train_step is the reference: same weights, same history, same hooks
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
        optimizer=MomentumSAM,
        optimizer__rho=0.3,
        optimizer__momentum=0.9,
        lr=0.1,
        max_epochs=3,
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
        nets.append(cls(**params).fit(X, y))
    theirs, ours = nets
    for p, q in zip(theirs.module_.parameters(), ours.module_.parameters(), strict=True):
        assert torch.equal(p, q)
    for a, b in zip(theirs.history, ours.history, strict=True):
        assert a["batches"] == b["batches"]
        for key in ("train_loss", "valid_loss", "valid_acc"):
            assert a[key] == b[key]


# -- a changed skorch pin costs speed, not a release ---------------------------------


def test_a_changed_speed_pin_falls_back_to_skorchs_loop_with_the_same_fit(blobs, monkeypatch):
    X, y = blobs
    fast = _small(optimizer__momentum=0.9).fit(X, y)
    assert type(fast.net_) is _skorch.SkorchSAMClassifier
    monkeypatch.setitem(_skorch.COPIED, "NeuralNet.notify", "0" * 16)
    assert _skorch.changed_pins("speed") == ("NeuralNet.notify",)
    with pytest.warns(UserWarning, match=r"changed NeuralNet.notify.*skorch's own epoch loop"):
        plain = _small(optimizer__momentum=0.9).fit(X, y)
    assert type(plain.net_) is _skorch.PlainSkorchSAMClassifier
    assert type(plain.net_.history) is skorch.history.History
    assert torch.equal(net_weights(plain), net_weights(fast))
    np.testing.assert_array_equal(plain.loss_curve_, fast.loss_curve_)


def test_a_skorch_method_whose_source_cannot_be_read_counts_as_changed(monkeypatch):
    def no_source(func):
        raise OSError("could not get source code")

    monkeypatch.setattr(_skorch, "source_fingerprint", no_source)
    _skorch._changed.cache_clear()
    try:
        assert "NeuralNet.run_single_epoch" in _skorch.changed_pins("speed")
    finally:
        monkeypatch.undo()
        _skorch._changed.cache_clear()
    assert _skorch.changed_pins("speed") == ()
