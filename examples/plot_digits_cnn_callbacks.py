"""
=================================================
A digits CNN with skorch callbacks, SGD vs SAM
=================================================

The point of this figure: **on digits with 20% of the training labels
flipped, a small CNN trained by SAM fits less of the noise than SGD's (a
higher training loss, a lower validation loss once both have learned the
clean signal), and skorch's callbacks (a learning-rate schedule, early
stopping that restores the best weights) work on SAM unchanged**. One seed:
the accuracy difference is indicative, not measured.

:class:`~sksam.SAMNetClassifier` takes any PyTorch module and any skorch
callback. Here a two-layer convolutional network reads the 8x8 digit images;
:class:`~skorch.callbacks.LRScheduler` anneals the learning rate,
:class:`~skorch.callbacks.EarlyStopping` watches the validation loss on a
held-out fifth of the (noisy) training set and restores the best weights.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from torch import nn

from sksam import SAMNetClassifier

torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)  # pixels in [0, 1]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0
)
rng = np.random.default_rng(0)
flipped = rng.random(len(y_train)) < 0.2
y_noisy = np.where(flipped, rng.integers(0, 10, len(y_train)), y_train)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear layer on 8x8 images."""

    def __init__(self, channels=16, n_classes=10):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
            nn.Flatten(),
            nn.Linear(8 * channels, n_classes),
        )

    def forward(self, X):
        return self.layers(X)


# %%
# One network per solver, the same callbacks
# ------------------------------------------
max_epochs = 3 if QUICK else 40
histories, accuracy = {}, {}
for solver in ("gd", "sam"):
    clf = SAMNetClassifier(
        DigitsCNN,
        solver=solver,
        rho=0.1,
        lr=0.05,
        max_epochs=max_epochs,
        batch_size=32,
        optimizer__momentum=0.9,
        train_split=ValidSplit(0.2, stratified=True, random_state=0),
        callbacks=[
            (
                "schedule",
                LRScheduler(
                    policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                    T_max=max_epochs,
                ),
            ),
            ("stop", EarlyStopping(patience=8, load_best=True)),
        ],
        sharpness=None,
        random_state=0,
    ).fit(X_train, y_noisy)
    histories[solver] = clf.net_.history
    accuracy[solver] = clf.score(X_test, y_test)
    print(
        f"{solver}: {len(clf.net_.history)} epochs, "
        f"clean test accuracy {accuracy[solver]:.3f}"
    )

# %%
# Training and validation loss per epoch
# --------------------------------------
# skorch records both losses in ``net_.history``; the training loss is taken
# at the unperturbed weights, so SGD's and SAM's compare directly. The
# validation labels are noisy too, so a validation loss that turns up is the
# network memorizing noise. The big markers show the epoch whose weights
# EarlyStopping restored.
fig, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
names = {"gd": "SGD", "sam": "SAM (rho=0.1)"}
for k, (solver, history) in enumerate(histories.items()):
    epochs = history[:, "epoch"]
    valid = np.array(history[:, "valid_loss"])
    label = f"{names[solver]}, test acc. {accuracy[solver]:.3f}"
    ax.plot(epochs, history[:, "train_loss"], ":", color=f"C{k}")
    ax.plot(epochs, valid, "-", color=f"C{k}", label=label)
    best = int(np.argmin(valid))
    marker = "os"[k]  # SGD: circle, SAM: square (they may coincide)
    ax.plot(epochs[best], valid[best], marker, color=f"C{k}", ms=11 - 4 * k)
ax.set(xlabel="epoch", ylabel="cross-entropy (dotted: train, solid: valid)")
ax.legend()
plt.show()
