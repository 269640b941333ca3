"""Adapter: skorch's own test suite run against sksam's inner skorch nets.

Not collected by the project's tests (the file name does not start with
``test_``). Load it as a pytest plugin while running skorch's installed
tests, from a scratch directory (skorch's tests write files such as
``history.json`` and ``runs/`` where they run)::

    REPO=/path/to/sksam; cd "$(mktemp -d)"
    SK=$(python -c "import skorch, os; print(os.path.dirname(skorch.__file__))")
    PYTHONPATH=$REPO:$REPO/tests python -m pytest -p skorch_suite -p no:cacheprovider -q \\
        $SK/tests/test_net.py $SK/tests/test_classifier.py $SK/tests/test_regressor.py \\
        $SK/tests/callbacks

and once more with ``SUITE_NATIVE=1`` for skorch's own baseline: a test
that fails only without it is a skorch habit our nets break.

The plugin replaces ``skorch.NeuralNetClassifier`` and
``skorch.NeuralNetRegressor`` (what skorch's tests import) by sksam's inner
nets, whose default optimizer is :class:`sksam.optim.SAM` around SGD with
``rho=0`` (numerically skorch's SGD; ``SUITE_RHO`` in the environment sets
another rho), so that each test runs our epoch loop, training step, callback
notification and history. ``KNOWN`` lists the differences that are not
bugs, each marked as an expected failure.
"""

import os
import sys
import types

import pytest
import skorch
import torch

from sksam._skorch import SkorchSAMClassifier, SkorchSAMRegressor
from sksam.optim import SAM

if "flaky" not in sys.modules:  # skorch's tests import it; a no-op stand-in
    try:
        import flaky  # noqa: F401
    except ImportError:
        _flaky = types.ModuleType("flaky")
        _flaky.flaky = lambda *a, **k: a[0] if a and callable(a[0]) else (lambda f: f)
        sys.modules["flaky"] = _flaky

RHO = float(os.environ.get("SUITE_RHO", "0"))


def _sam_defaults(kwargs):
    if "optimizer" not in kwargs:
        kwargs["optimizer"] = SAM
        kwargs.setdefault("optimizer__base_optimizer", torch.optim.SGD)
        kwargs.setdefault("optimizer__rho", RHO)
    return kwargs


# skorch's names, so that skorch's expected messages match
class NeuralNetClassifier(SkorchSAMClassifier):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_sam_defaults(kwargs))


class NeuralNetRegressor(SkorchSAMRegressor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_sam_defaults(kwargs))


if not os.environ.get("SUITE_NATIVE"):  # SUITE_NATIVE=1: skorch's own nets (the baseline)
    skorch.NeuralNetClassifier = NeuralNetClassifier
    skorch.NeuralNetRegressor = NeuralNetRegressor

#: Failures with the plugin that are not bugs of ours: test name -> why.
KNOWN = {
    "test_repr_uninitialized_works": "the repr names the adapter's class",
    "test_repr_initialized_works": "the repr names the adapter's class",
    "test_repr_fitted_works": "the repr names the adapter's class",
    "test_custom_optimizer_performs_updates": (
        "the test builds self.optimizer(params, lr) positionally; SAM's second "
        "argument is the base optimizer"
    ),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = KNOWN.get(item.originalname if hasattr(item, "originalname") else item.name)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
