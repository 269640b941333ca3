"""sksam: Sharpness-Aware Minimization and gradient descent as scikit-learn estimators.

Public names are imported lazily, so that ``import sksam`` stays cheap and the
kernel regressor (numpy only) does not pay for importing torch and skorch.
"""

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY_NAMES = {
    "SAMKernelClassifier": "sksam._kernel_classifier",
    "SAMKernelClassifierCV": "sksam._kernel_cv",
    "SAMKernelRegressor": "sksam.kernel",
    "SAMKernelRegressorCV": "sksam._kernel_cv",
    "SAMTwoLayerClassifier": "sksam.two_layer",
    "SAMTwoLayerRegressor": "sksam.two_layer",
    "SAMNetClassifier": "sksam.net",
    "SAMNetRegressor": "sksam.net",
    "SAM": "sksam.optim",
}

__all__ = sorted(_LAZY_NAMES) + ["__version__"]


def __getattr__(name):
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'sksam' has no attribute {name!r}")


def __dir__():
    return __all__
