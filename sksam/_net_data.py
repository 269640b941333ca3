"""The nets' data: where it lives, how it is batched, and the class labels (private).

Functions of their arguments only: the device a net trains on, arrays as
tensors there, mini-batches sliced from whole tensors
(:class:`TensorBatchLoader`), the validation of ``classes`` and the encoding
of labels as class indices, and the rows the sharpness is measured on.
"""

import math

import numpy as np
import torch
from sklearn.utils.multiclass import unique_labels
from skorch.dataset import Dataset, get_len
from torch.utils.data import DataLoader, Subset

# -- devices ---------------------------------------------------------------------


def resolved_device(device):
    """``device`` as a ``torch.device``, with the current index for a bare ``'cuda'``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def net_device(net):
    """Where ``net`` holds its module: its ``device``, or its accelerator's."""
    if net.device is None:
        return torch.device(net.accelerator.device)
    return torch.device(net.device)


def is_cpu(device):
    """Whether ``device`` names the CPU (an invalid name counts as one: ``fit`` says why)."""
    try:
        return torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        return True  # fit will say what is wrong with it


def to_tensor(X, device):
    """``X`` as a float32 tensor on ``device``."""
    # torch warns on read-only arrays (memory maps); copy those.
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])
    return torch.as_tensor(X, device=device)


# -- class labels ----------------------------------------------------------------


def validate_classes(classes):
    """``classes`` of ``partial_fit`` as scikit-learn takes them: sorted unique labels.

    A 1-D array of finite, discrete labels (duplicates are dropped, as
    scikit-learn's ``partial_fit`` does); anything else is a ``ValueError``
    naming ``classes``.
    """
    array = np.asarray(classes)
    if array.ndim != 1:
        raise ValueError(
            f"classes must be a 1-D array of class labels; got an array of shape {array.shape}."
        )
    try:
        return np.asarray(unique_labels(array))
    except ValueError as exc:
        raise ValueError(
            f"classes must hold finite, discrete class labels; got {array.tolist()!r:.200}: {exc}"
        ) from exc


def check_n_classes(classes, where):
    """At least two classes, or a ``ValueError`` that says ``where`` they were counted."""
    if len(classes) < 2:
        raise ValueError(
            f"SAMNetClassifier needs at least 2 classes {where}; "
            f"got {len(classes)} class(es): {np.asarray(classes).tolist()!r}."
        )


def encode(y, classes, method):
    """``y`` as int64 indices into ``classes``; labels outside ``classes`` are an error."""
    unseen = np.setdiff1d(np.unique(y), classes)
    if len(unseen):
        raise ValueError(
            f"`y` has classes not in `self.classes_` ({method} keeps the classes): "
            f"`self.classes_` has {classes}, `y` has unseen {unseen}."
        )
    return class_indices(np.searchsorted(classes, y))


def class_indices(y_encoded):
    """Class indices as the int64 array ``CrossEntropyLoss`` expects."""
    return np.asarray(y_encoded, dtype=np.int64)


def subsample(X, y, seed, max_samples):
    """At most ``max_samples`` rows (``sharpness_max_samples``), drawn with the fit's seed."""
    rng = np.random.RandomState(seed)
    n = len(X)
    if max_samples is not None and n > max_samples:
        index = torch.as_tensor(rng.choice(n, max_samples, replace=False), device=X.device)
        X, y = X[index], y[index]
    return X, y, rng


# -- batches ---------------------------------------------------------------------

#: Batches whose rows :class:`TensorBatchLoader` gathers in one go.
CHUNK_BATCHES = 32


class TensorBatchLoader:
    """Mini-batches sliced from whole tensors: a ``DataLoader`` without collation.

    skorch's default ``DataLoader`` fetches and collates one sample at a
    time, which dominates an epoch on small data. When the dataset holds
    tensors (as the estimators arrange, on the training device) this loader
    indexes whole batches at once (when shuffling, it gathers the rows of 32
    batches at a time and slices the batches from them); the order of the
    samples is drawn from ``generator``, like ``DataLoader``'s.
    Any other dataset, or any extra ``DataLoader`` option (``num_workers``,
    ``collate_fn``...), falls back to a ``DataLoader``.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Usually a skorch ``Dataset`` of tensors, or a ``Subset`` of one.
    batch_size : int, default=128
        Samples per batch; the last batch may be smaller.
    shuffle : bool, default=False
        Draw a new order of the samples at every pass.
    generator : torch.Generator or None, default=None
        The CPU generator the order is drawn from (also handed to the
        ``DataLoader`` fallback); ``None`` draws from torch's global one.
    drop_single_row : bool, default=False
        Skip a last batch of one row (when there are more rows): batch
        normalization cannot normalize a single row in training mode. The
        estimators set it for a module with batch normalization.
    **loader_kwargs
        Options that only a ``DataLoader`` understands.
    """

    def __init__(
        self,
        dataset,
        batch_size=128,
        shuffle=False,
        generator=None,
        drop_single_row=False,
        **loader_kwargs,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_single_row = drop_single_row
        self.loader_kwargs = loader_kwargs

    def __len__(self):
        n = len(self.dataset)
        return math.ceil(n / self.batch_size) - int(self._drops_last(n))

    def _drops_last(self, n):
        """Whether the last of the batches of ``n`` rows is a single row to skip."""
        return self.drop_single_row and n > 1 and self.batch_size > 1 and n % self.batch_size == 1

    def __iter__(self):
        if not self._drops_last(len(self.dataset)):
            yield from self._batches()
            return
        for batch in self._batches():
            if batch_rows(batch) > 1:  # only the last batch can be a single row
                yield batch

    def _batches(self):
        X, y = dataset_tensors(self.dataset)
        if X is None or self.loader_kwargs:
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                shuffle=self.shuffle,
                generator=self.generator,
                **self.loader_kwargs,
            )
            yield from loader
            return
        n = len(X)
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                stop = start + self.batch_size
                yield X[start:stop], (None if y is None else y[start:stop])
            return
        order = torch.randperm(n, generator=self.generator).to(X.device)
        # Gather the rows of CHUNK_BATCHES batches at a time and slice the
        # batches from them: the same batches as X[order[start:stop]], for
        # one gather per chunk instead of two per batch (a few per cent of a
        # small epoch), and at most that many batches of memory.
        chunk = self.batch_size * CHUNK_BATCHES
        for first in range(0, n, chunk):
            index = order[first : first + chunk]
            X_chunk = X.index_select(0, index)
            y_chunk = None if y is None else y.index_select(0, index)
            for start in range(0, len(index), self.batch_size):
                stop = start + self.batch_size
                yield X_chunk[start:stop], (None if y_chunk is None else y_chunk[start:stop])


def dataset_tensors(dataset):
    """``(X, y)`` tensors behind a skorch ``Dataset`` or a ``Subset`` of one."""
    if isinstance(dataset, Subset):
        X, y = dataset_tensors(dataset.dataset)
        if X is None:
            return None, None
        index = torch.as_tensor(np.asarray(dataset.indices), device=X.device)
        return X[index], (None if y is None else y[index])
    if isinstance(dataset, Dataset) and torch.is_tensor(dataset.X):
        if dataset.y is None or torch.is_tensor(dataset.y):
            return dataset.X, dataset.y
    return None, None


def batch_rows(batch):
    """Number of samples in ``batch``, as skorch's ``run_single_epoch`` counts them."""
    X = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(X) if type(X) is torch.Tensor else get_len(X)
