"""
=========================================================
The SAM optimizer in a hand-written PyTorch training loop
=========================================================

The point of this figure: **with 20% of the training labels flipped, SGD
drives its training loss lowest and ends sharpest and least accurate on clean
test labels; SAM and adaptive SAM (ASAM) fit less of the noise, stay flatter
and predict better**, in a plain PyTorch loop where the optimizer is the only
change.

:class:`sksam.optim.SAM` wraps any PyTorch optimizer. Its ``step(closure)``
runs the closure first, at the current weights, perturbs them, runs it again
and then lets the base optimizer step from the *unperturbed* weights, so it
fits ordinary closure-based loops (and skorch). Given the model, it keeps
BatchNorm's running statistics to one update per step, and dropout draws the
same masks in both passes. :func:`sksam.sharpness.top_hessian_eigenvalue`
measures how sharp each solution is.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from sksam.optim import SAM
from sksam.sharpness import top_hessian_eigenvalue

torch.set_num_threads(1)
QUICK = os.environ.get("SKSAM_QUICK") == "1"  # a smoke test in the test suite

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0
)
rng = np.random.default_rng(0)
flipped = rng.random(len(y_train)) < 0.2
y_train = np.where(flipped, rng.integers(0, 10, len(y_train)), y_train)
scaler = StandardScaler().fit(X_train)
X_train, X_test = (
    torch.tensor(scaler.transform(a), dtype=torch.float32)
    for a in (X_train, X_test)
)
y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)


def make_model():
    return nn.Sequential(
        nn.Linear(64, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


# %%
# The training loop
# -----------------
# The only SAM-specific line is the optimizer's construction; the closure is
# the usual "zero the gradients, forward, backward, return the loss". The
# loss that ``step`` returns is the one at the unperturbed weights; we
# average it over each epoch (a single batch's loss zig-zags too much to
# compare optimizers).
def evaluate(model):
    """Clean test accuracy and sharpness of the full training loss."""
    model.eval()
    with torch.no_grad():
        accuracy = (model(X_test).argmax(dim=1) == y_test).float().mean()
    sharpness = top_hessian_eigenvalue(
        lambda: nn.functional.cross_entropy(model(X_train), y_train),
        list(model.parameters()),
        random_state=0,
    )
    model.train()
    return accuracy.item(), sharpness


def train(solver, rho, epochs, seed=0):
    torch.manual_seed(seed)
    model = make_model()
    optimizer = SAM(
        model.parameters(),
        torch.optim.SGD,
        rho=rho,
        solver=solver,
        model=model,
        lr=0.05,
        momentum=0.9,
    )
    loss_fn = nn.CrossEntropyLoss()
    record = {"loss": [], "accuracy": [], "sharpness": []}
    model.train()
    for _ in range(epochs):
        epoch_loss = []
        for batch in torch.randperm(len(X_train)).split(64):

            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(X_train[batch]), y_train[batch])
                loss.backward()
                return loss

            epoch_loss.append(optimizer.step(closure).item())
        record["loss"].append(np.mean(epoch_loss))
        accuracy, sharpness = evaluate(model)
        record["accuracy"].append(accuracy)
        record["sharpness"].append(sharpness)
    return record


epochs = 3 if QUICK else 40
runs = {
    "SGD": train("sam", 0.0, epochs),  # rho=0 is SGD, bit for bit
    "SAM (rho=0.5)": train("sam", 0.5, epochs),
    "ASAM (rho=2)": train("asam", 2.0, epochs),
}
for name, record in runs.items():
    print(
        f"{name:>14}: clean test accuracy {record['accuracy'][-1]:.3f}, "
        f"top Hessian eigenvalue {record['sharpness'][-1]:.2f}"
    )

# %%
# Loss, accuracy and sharpness per epoch
# --------------------------------------
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
panels = [
    ("loss", "training loss (epoch mean)", "log"),
    ("accuracy", "clean test accuracy", "linear"),
    ("sharpness", "top Hessian eigenvalue", "log"),
]
for ax, (key, title, scale) in zip(axes, panels):
    for name, record in runs.items():
        ax.plot(range(1, epochs + 1), record[key], label=name)
    ax.set(title=title, xlabel="epoch", yscale=scale)
axes[1].legend()
plt.show()

# %%
# SGD's epoch-mean loss keeps falling because it memorizes the flipped
# labels; that memorization shows up as a sharper minimum and a lower clean
# accuracy. SAM and ASAM pay with a higher training loss and get both a
# flatter solution and better predictions (one seed here; the label-noise
# example repeats the comparison over seeds through scikit-learn's API). Set
# the flipped fraction to 0 to see the clean-label case.
