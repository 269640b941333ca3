"""Write the intersphinx inventories of ``docs/_inventories``, offline.

The documentation build must not touch the network, so the inventories that
intersphinx reads are kept in the repository. The full ``objects.inv`` files
of numpy, scipy, scikit-learn, PyTorch, skorch and matplotlib are published
only on their web sites, which the build machines cannot reach; this script
writes, instead, small inventories (Sphinx's version-2 format) with exactly
the names these docs link to, each mapped to its page on the project's
public site. To link a new name, add it to ``NAMES`` and run::

    python docs/_inventories/make_inventories.py

With network access, the projects' own inventories (``<url>objects.inv``,
URLs in ``docs/conf.py``) can replace these files as they are.
"""

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (display name, version, {(name, domain:role): uri relative to the site})
# a uri ending in "$" stands for the name itself (Sphinx's convention).
_SK = "modules/generated/{}.html#$"
_TORCH = "generated/{}.html#$"
NAMES = {
    "sklearn": (
        "scikit-learn",
        "1.9",
        {
            (name, "py:class" if name.split(".")[-1][0].isupper() else "py:function"): (
                _SK.format(name)
            )
            for name in [
                "sklearn.base.BaseEstimator",
                "sklearn.base.clone",
                "sklearn.compose.TransformedTargetRegressor",
                "sklearn.exceptions.ConvergenceWarning",
                "sklearn.exceptions.NotFittedError",
                "sklearn.kernel_ridge.KernelRidge",
                "sklearn.kernel_approximation.Nystroem",
                "sklearn.linear_model.RidgeCV",
                "sklearn.linear_model.Ridge",
                "sklearn.linear_model.SGDRegressor",
                "sklearn.metrics.pairwise.rbf_kernel",
                "sklearn.metrics.pairwise_kernels",
                "sklearn.model_selection.GridSearchCV",
                "sklearn.model_selection.train_test_split",
                "sklearn.neural_network.MLPClassifier",
                "sklearn.neural_network.MLPRegressor",
                "sklearn.pipeline.Pipeline",
                "sklearn.pipeline.make_pipeline",
                "sklearn.preprocessing.StandardScaler",
                "sklearn.utils.check_random_state",
            ]
        },
    ),
    "numpy": (
        "NumPy",
        "2.4",
        {
            ("numpy.ndarray", "py:class"): "reference/generated/numpy.ndarray.html#$",
            ("numpy.random.RandomState", "py:class"): ("reference/random/legacy.html#$"),
            ("numpy.random.Generator", "py:class"): "reference/random/generator.html#$",
        },
    ),
    "scipy": (
        "SciPy",
        "1.16",
        {
            ("scipy.linalg.eigh", "py:function"): "reference/generated/scipy.linalg.eigh.html#$",
            ("scipy.sparse.linalg.eigsh", "py:function"): (
                "reference/generated/scipy.sparse.linalg.eigsh.html#$"
            ),
            ("scipy.sparse.linalg.LinearOperator", "py:class"): (
                "reference/generated/scipy.sparse.linalg.LinearOperator.html#$"
            ),
        },
    ),
    "torch": (
        "PyTorch",
        "2.13",
        {
            ("torch.Tensor", "py:class"): "tensors.html#$",
            ("torch.device", "py:class"): "tensor_attributes.html#$",
            ("torch.Generator", "py:class"): "generated/torch.Generator.html#$",
            ("torch.nn.Module", "py:class"): _TORCH.format("torch.nn.Module"),
            ("torch.nn.BatchNorm1d", "py:class"): _TORCH.format("torch.nn.BatchNorm1d"),
            ("torch.nn.Dropout", "py:class"): _TORCH.format("torch.nn.Dropout"),
            ("torch.nn.CrossEntropyLoss", "py:class"): _TORCH.format("torch.nn.CrossEntropyLoss"),
            ("torch.nn.Linear", "py:class"): _TORCH.format("torch.nn.Linear"),
            ("torch.optim.Optimizer", "py:class"): "optim.html#$",
            ("torch.optim.Optimizer.step", "py:method"): (
                "generated/torch.optim.Optimizer.step.html#$"
            ),
            ("torch.optim.Optimizer.state_dict", "py:method"): (
                "generated/torch.optim.Optimizer.state_dict.html#$"
            ),
            ("torch.optim.SGD", "py:class"): _TORCH.format("torch.optim.SGD"),
            ("torch.optim.Adam", "py:class"): _TORCH.format("torch.optim.Adam"),
            ("torch.autograd.grad", "py:function"): _TORCH.format("torch.autograd.grad"),
            ("torch.set_num_threads", "py:function"): _TORCH.format("torch.set_num_threads"),
            ("torch.manual_seed", "py:function"): _TORCH.format("torch.manual_seed"),
            ("torch.randperm", "py:function"): _TORCH.format("torch.randperm"),
            ("torch.tensor", "py:function"): _TORCH.format("torch.tensor"),
            ("torch.no_grad", "py:class"): _TORCH.format("torch.no_grad"),
            ("torch.amp.GradScaler", "py:class"): "amp.html#$",
            ("torch.nn.parallel.DistributedDataParallel", "py:class"): _TORCH.format(
                "torch.nn.parallel.DistributedDataParallel"
            ),
        },
    ),
    "skorch": (
        "skorch",
        "1.4",
        {
            ("skorch.net.NeuralNet", "py:class"): "net.html#$",
            ("skorch.net.NeuralNet.train_step", "py:method"): "net.html#$",
            ("skorch.NeuralNet", "py:class"): "net.html#skorch.net.NeuralNet",
            ("skorch.classifier.NeuralNetClassifier", "py:class"): "classifier.html#$",
            ("skorch.NeuralNetClassifier", "py:class"): (
                "classifier.html#skorch.classifier.NeuralNetClassifier"
            ),
            ("skorch.callbacks.Callback", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.EarlyStopping", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.LRScheduler", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.Checkpoint", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.GradientNormClipping", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.ProgressBar", "py:class"): "callbacks.html#$",
            ("skorch.callbacks.EpochScoring", "py:class"): "callbacks.html#$",
            ("skorch.dataset.ValidSplit", "py:class"): "dataset.html#$",
            ("skorch.history.History", "py:class"): "history.html#$",
            ("skorch.hf.AccelerateMixin", "py:class"): "hf.html#$",
        },
    ),
    "matplotlib": (
        "Matplotlib",
        "3.10",
        {
            ("matplotlib.axes.Axes", "py:class"): "api/_as_gen/matplotlib.axes.Axes.html#$",
            ("matplotlib.figure.Figure", "py:class"): "api/figure_api.html#$",
            ("matplotlib.lines.Line2D", "py:class"): "api/_as_gen/matplotlib.lines.Line2D.html#$",
            ("matplotlib.pyplot", "py:module"): "api/pyplot_summary.html#module-$",
        },
    ),
    "python": (
        "Python",
        "3.14",
        {
            ("ValueError", "py:exception"): "library/exceptions.html#$",
            ("TypeError", "py:exception"): "library/exceptions.html#$",
            ("ImportError", "py:exception"): "library/exceptions.html#$",
            ("RuntimeError", "py:exception"): "library/exceptions.html#$",
            ("KeyboardInterrupt", "py:exception"): "library/exceptions.html#$",
            ("UserWarning", "py:exception"): "library/exceptions.html#$",
            ("pickle", "py:module"): "library/pickle.html#module-$",
            ("float", "py:class"): "library/functions.html#$",
            ("int", "py:class"): "library/functions.html#$",
            ("str", "py:class"): "library/stdtypes.html#$",
            ("bool", "py:class"): "library/functions.html#$",
            ("list", "py:class"): "library/stdtypes.html#$",
            ("tuple", "py:class"): "library/stdtypes.html#$",
            ("dict", "py:class"): "library/stdtypes.html#$",
            ("callable", "py:function"): "library/functions.html#$",
        },
    ),
}


def write_inventory(path, project, version, entries):
    """One ``objects.inv`` in Sphinx's version-2 format (zlib-compressed body)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(f"{name} {role} 1 {uri} -\n" for (name, role), uri in sorted(entries.items()))
    path.write_bytes(header.encode() + zlib.compress(lines.encode()))


def main():
    for key, (project, version, entries) in NAMES.items():
        write_inventory(HERE / f"{key}.inv", project, version, entries)
        print(f"{key}.inv: {len(entries)} names")


if __name__ == "__main__":
    main()
