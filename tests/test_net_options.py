"""The deep-net estimators' m-sharpness and mixed-precision options, on one device."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from sksam import SAMNetClassifier, SAMNetRegressor
from sksam.modules import MLP

from _reference import net_weights


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:200] / 16).astype(np.float32), y[:200]


def _small(**params):
    defaults = dict(max_epochs=3, lr=0.1, random_state=0, sharpness=None)
    return SAMNetClassifier(**{**defaults, **params})


def _grad(module, X, y):
    loss = nn.functional.cross_entropy(module(X), y)
    return torch.autograd.grad(loss, list(module.parameters()))


def test_m_chunks_each_take_their_own_ascent(digits):
    # w1 = w0 - lr * mean_i grad L_i(w0 + rho g_i / ||g_i||), chunks i of the batch
    X, y = digits
    rho, lr, m = 0.5, 0.3, 4
    torch.manual_seed(0)
    module = MLP(64, 10, hidden_layer_sizes=(16,))
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    descent = None
    for Xc, yc in zip(Xt.tensor_split(m), yt.tensor_split(m)):
        g = _grad(module, Xc, yc)
        norm = torch.linalg.vector_norm(torch.cat([gi.reshape(-1) for gi in g]))
        shifted = copy.deepcopy(module)
        with torch.no_grad():
            for p, gi in zip(shifted.parameters(), g):
                p.add_(rho * gi / norm)
        gc = _grad(shifted, Xc, yc)
        descent = gc if descent is None else [a + b for a, b in zip(descent, gc)]
    expected = torch.cat(
        [(p - lr * d / m).detach().reshape(-1) for p, d in zip(module.parameters(), descent)]
    )
    full_batch = dict(max_epochs=1, batch_size=None, iterator_train__shuffle=False)
    clf = _small(module=module, rho=rho, lr=lr, m=m, **full_batch).fit(X, y)
    torch.testing.assert_close(net_weights(clf), expected, rtol=1e-5, atol=1e-6)
    plain = _small(module=module, rho=rho, lr=lr, **full_batch).fit(X, y)
    assert not torch.allclose(net_weights(plain), expected, atol=1e-5)  # m matters


def test_m_one_is_plain_sam_and_history_is_complete(digits):
    X, y = digits
    assert torch.equal(net_weights(_small(m=1).fit(X, y)), net_weights(_small().fit(X, y)))
    clf = _small(m=3, batch_size=32).fit(X, y)
    batches = clf.net_.history[-1]["batches"]
    assert [b["train_batch_size"] for b in batches] == [32] * 6 + [8]
    assert np.all(np.isfinite(clf.loss_curve_)) and clf.score(X, y) > 0.5
    SAMNetRegressor(m=2, max_epochs=2, sharpness=None, random_state=0).fit(X, y.astype(float))


@pytest.mark.parametrize("precision, atol", [("bfloat16", 0.1), ("float16", 0.02)])
def test_mixed_precision_is_close_to_float32(digits, precision, atol):
    X, y = digits
    reference = _small(module__hidden_layer_sizes=(16,)).fit(X, y)
    clf = _small(module__hidden_layer_sizes=(16,), precision=precision).fit(X, y)
    assert not torch.equal(net_weights(clf), net_weights(reference))  # autocast was on
    torch.testing.assert_close(net_weights(clf), net_weights(reference), rtol=0, atol=atol)
    np.testing.assert_allclose(clf.loss_curve_, reference.loss_curve_, rtol=0.05)


def test_float16_scales_the_loss_and_keeps_the_scaler(digits):
    X, y = digits
    clf = _small(precision="float16", max_epochs=1).fit(X, y)
    scaler = clf.net_.grad_scaler_
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.get_scale() > 1
    # continued training keeps the scaler (its scale is part of the state)
    clf.partial_fit(X, y)
    assert clf.net_.grad_scaler_ is scaler


def test_bad_option_values_are_named(digits):
    X, y = digits
    with pytest.raises(ValueError, match="'m' parameter"):
        _small(m=0).fit(X, y)
    with pytest.raises(ValueError, match="'precision' parameter"):
        _small(precision="float8").fit(X, y)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize(
    "precision, atol", [("float32", 1e-3), ("bfloat16", 0.1), ("float16", 0.02)]
)
def test_cuda_precisions_are_close_to_cpu_float32(digits, precision, atol):
    X, y = digits
    cpu = _small(module__hidden_layer_sizes=(16,)).fit(X, y)
    gpu = _small(module__hidden_layer_sizes=(16,), device="cuda", precision=precision).fit(X, y)
    torch.testing.assert_close(net_weights(gpu).cpu(), net_weights(cpu), rtol=0, atol=atol)


@needs_cuda
def test_cuda_m_sharpness_matches_cpu(digits):
    X, y = digits
    cpu = _small(m=4).fit(X, y)
    gpu = _small(m=4, device="cuda").fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-3)
    reg = SAMNetRegressor(device="cuda", m=2, precision="float16", max_epochs=2, random_state=0)
    assert reg.fit(X, y.astype(float)).predict(X).shape == (len(X),)
