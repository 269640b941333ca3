"""Loss landscapes: Li et al.'s directions, exact kernel slices, the model left as it was."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from sksam import SAMKernelRegressor, SAMNetClassifier, SAMTwoLayerRegressor
from sksam.datasets import make_teacher_student
from sksam.inspection import LossLandscapeDisplay, SharpnessSpectrumDisplay
from sksam.sharpness import (
    filter_normalized_direction,
    fitted_loss,
    interpolation_losses,
    loss_along,
)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


class _ConvBN(torch.nn.Module):
    """A conv layer, batch normalization and a linear head: every kind of parameter."""

    def __init__(self, n_features=16, n_outputs=3):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, kernel_size=3)
        self.bn = torch.nn.BatchNorm1d(4)
        self.head = torch.nn.Linear(4 * (n_features - 2), n_outputs)

    def forward(self, X):
        h = torch.relu(self.bn(self.conv(X.unsqueeze(1))))
        return self.head(h.flatten(1))


@pytest.fixture(scope="module")
def conv_net():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 16)).astype(np.float32)
    y = rng.integers(0, 3, size=60)
    net = SAMNetClassifier(module=_ConvBN, max_epochs=2, random_state=0, batch_size=20)
    return net.fit(X, y), X, y


def test_filters_have_the_norms_of_the_weights_filters(conv_net):
    net, X, y = conv_net
    loss = fitted_loss(net, X, y)
    direction = filter_normalized_direction(loss, random_state=0)
    named = dict(zip(loss.names, zip(loss.params, direction)))
    for name in ("conv.weight", "head.weight"):  # one filter per output channel / row
        weight, d = named[name]
        dims = tuple(range(1, weight.ndim))
        np.testing.assert_allclose(
            torch.linalg.vector_norm(d, dim=dims),
            torch.linalg.vector_norm(weight.detach(), dim=dims),
            rtol=1e-5,
        )
        # not the weights themselves: a random direction with their filter norms
        assert not torch.allclose(d.abs(), weight.detach().abs())


def test_biases_and_batchnorm_are_not_moved_by_default(conv_net):
    # Li et al. (2018): "ignore_bias_bn" sets their direction to zero
    net, X, y = conv_net
    loss = fitted_loss(net, X, y)
    direction = dict(zip(loss.names, filter_normalized_direction(loss, random_state=0)))
    for name in ("conv.bias", "bn.weight", "bn.bias", "head.bias"):
        assert torch.count_nonzero(direction[name]) == 0


def test_an_included_bias_is_one_filter_never_normalized_element_by_element(conv_net):
    # the bias bug of the loss-landscapes package: a 1-d bias normalized per
    # element gets |d_j| = |w_j|, a direction equal to the weights up to signs
    net, X, y = conv_net
    loss = fitted_loss(net, X, y)
    direction = dict(
        zip(loss.names, filter_normalized_direction(loss, ignore=None, random_state=0))
    )
    weights = dict(zip(loss.names, loss.params))
    for name in ("conv.bias", "bn.weight", "bn.bias", "head.bias"):
        d, w = direction[name], weights[name].detach()
        assert torch.linalg.vector_norm(d).item() == pytest.approx(
            torch.linalg.vector_norm(w).item(), rel=1e-5
        )
        assert not torch.allclose(d.abs(), w.abs())  # the bug's direction
    # the BatchNorm scale is a normalization parameter even though a weight
    assert loss.filter_axis[loss.names.index("bn.weight")] is None


def test_two_layer_filters_are_the_columns_of_W(conv_net):
    X, y = make_teacher_student(n_samples=40, random_state=0)
    model = SAMTwoLayerRegressor(n_hidden=5, random_state=0, max_iter=20, tol=None).fit(X, y)
    loss = fitted_loss(model, X, y)
    W, d = loss.params[0].detach(), filter_normalized_direction(loss, random_state=1)[0]
    # X @ W + b: hidden unit j's incoming weights are the column W[:, j]
    np.testing.assert_allclose(d.norm(dim=0), W.norm(dim=0), rtol=1e-10)


def test_the_grid_is_evaluated_in_batches_as_one_point_at_a_time(conv_net):
    net, X, y = conv_net
    loss = fitted_loss(net, X, y)
    directions = [filter_normalized_direction(loss, random_state=k) for k in (0, 1)]
    points = np.array([[0.0, 0.0], [0.3, -0.2], [-1.0, 0.5], [0.7, 0.7], [0.1, 0.9]])
    batched = loss_along(loss, directions, points, batch_size=2)
    with loss.evaluating():
        one_by_one = []
        for a, b in points:
            moved = [w.detach() + a * d1 + b * d2 for w, d1, d2 in zip(loss.params, *directions)]
            one_by_one.append(loss.loss_of(moved).item())
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)
    vectorized = loss_along(loss, directions, points, batch_size=3, vectorize=True)
    np.testing.assert_allclose(vectorized, one_by_one, rtol=1e-5)
    with loss.evaluating():
        assert batched[0] == pytest.approx(loss.loss_fn().item(), rel=1e-6)


def test_landscape_leaves_weights_and_train_mode_exactly_as_they_were(conv_net):
    net, X, y = conv_net
    module = net.module_
    module.train()
    module.bn.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in module.state_dict().items()}
    flags = [m.training for m in module.modules()]
    LossLandscapeDisplay.from_estimators([net], X, y, dims=2, resolution=3, draw=False)
    LossLandscapeDisplay.from_interpolation(net, net, X, y, resolution=3, draw=False)
    assert [m.training for m in module.modules()] == flags
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.fixture(scope="module")
def kernel_fits():
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:100], (y[:100] - y.mean()) / y.std()
    fits = [SAMKernelRegressor(solver=s, rho=0.5, max_iter=30).fit(X, y) for s in ("gd", "sam")]
    return fits, X, y


def test_kernel_slices_are_the_exact_loss_of_the_moved_function(kernel_fits):
    (model, _), X, y = kernel_fits
    loss = fitted_loss(model, X, y)
    directions = [filter_normalized_direction(loss, random_state=k) for k in (0, 1)]
    points = np.array([[0.0, 0.0], [0.5, -1.0], [2.0, 3.0]])
    closed = loss_along(loss, directions, points)
    K = model._get_kernel(X, model.X_fit_)
    alpha = model.dual_coef_
    for (a, b), value in zip(points, closed):
        moved = alpha + a * directions[0][0].numpy()[:, 0] + b * directions[1][0].numpy()[:, 0]
        assert value == pytest.approx(0.5 * np.mean((K @ moved - y) ** 2), rel=1e-12)


def test_kernel_interpolation_is_the_exact_loss_between_the_two_functions(kernel_fits):
    (gd, sam), X, y = kernel_fits
    alphas = np.array([-0.5, 0.0, 0.25, 1.0, 1.5])
    values = interpolation_losses(fitted_loss(gd, X, y), fitted_loss(sam, X, y), alphas)
    for a, value in zip(alphas, values):
        f = (1 - a) * gd.predict(X) + a * sam.predict(X)
        assert value == pytest.approx(0.5 * np.mean((f - y) ** 2), rel=1e-10)


def test_torch_interpolation_ends_at_each_fit(conv_net):
    net, X, y = conv_net
    other = SAMNetClassifier(
        module=_ConvBN, max_epochs=2, random_state=0, batch_size=20, solver="sam"
    ).fit(X, y)
    values = interpolation_losses(fitted_loss(net, X, y), fitted_loss(other, X, y), [0.0, 1.0])
    ends = [fitted_loss(m, X, y) for m in (net, other)]
    for value, end in zip(values, ends):
        with end.evaluating():
            assert value == pytest.approx(end.loss_fn().item(), rel=1e-5)


def test_interpolation_needs_the_same_architecture(conv_net):
    net, X, y = conv_net
    other = SAMNetClassifier(max_epochs=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="same architecture"):
        interpolation_losses(fitted_loss(net, X, y), fitted_loss(other, X, y), [0.5])


def test_display_overlays_train_and_test_with_labels(kernel_fits):
    fits, X, y = kernel_fits
    display = LossLandscapeDisplay.from_estimators(
        fits, X[:70], y[:70], X_test=X[70:], y_test=y[70:], resolution=5, random_state=3
    )
    assert [line.get_label() for line in display.lines_] == [
        "gd: train",
        "gd: test",
        "sam (rho=0.5): train",
        "sam (rho=0.5): test",
    ]
    np.testing.assert_array_equal(display.coordinates, np.linspace(-1, 1, 5))
    # the same seed gives the same slice
    again = LossLandscapeDisplay.from_estimators(
        fits, X[:70], y[:70], resolution=5, random_state=3, draw=False
    )
    np.testing.assert_array_equal(again.train_losses[1], display.train_losses[1])


def test_plane_has_resolution_squared_points_and_one_panel_per_estimator(kernel_fits):
    fits, X, y = kernel_fits
    display = LossLandscapeDisplay.from_estimators(fits, X, y, dims=2, resolution=4)
    assert display.train_losses[0].shape == (4, 4) and len(display.ax_) == 2


def test_progress_is_shown_when_verbose(conv_net, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # the fallback: a line per batch
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    net, X, y = conv_net
    LossLandscapeDisplay.from_estimators(
        [net], X, y, resolution=4, batch_size=2, verbose=1, draw=False
    )
    assert "loss landscape: batch 2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 1}, "resolution must be an integer >= 2"),
        ({"span": -1.0}, "span must be a positive number"),
        ({"dims": 3}, "dims must be 1 or 2"),
        ({"ignore": "bias"}, "ignore must be 'biasbn' or None"),
        ({"X_test": np.zeros((2, 10))}, "Give both X_test and y_test"),
        ({"labels": ["a", "b", "c"]}, "labels must hold one entry per curve"),
    ],
)
def test_landscape_errors_name_the_parameter(kernel_fits, kwargs, match):
    fits, X, y = kernel_fits
    with pytest.raises(ValueError, match=match):
        LossLandscapeDisplay.from_estimators(fits, X, y, draw=False, **kwargs)


def test_spectrum_display_draws_three_panels_with_error_bars():
    X, y = make_teacher_student(n_samples=50, random_state=0)
    fits = [
        SAMTwoLayerRegressor(n_hidden=4, solver=s, random_state=0, max_iter=30, tol=None).fit(X, y)
        for s in ("gd", "sam")
    ]
    display = SharpnessSpectrumDisplay.from_estimators(
        fits, X, y, k=3, n_iter=20, n_probes=2, n_seeds=2
    )
    assert len(display.axes_) == 3
    assert display.layers == ["hidden", "output"]
    assert display.layer_stderr.shape == (2, 2) and np.all(display.layer_stderr > 0)
    assert [len(t) for t in display.top_eigenvalues] == [3, 3]
    with pytest.raises(ValueError, match="kinds must be a non-empty list"):
        display.plot(kinds=("histogram",))
