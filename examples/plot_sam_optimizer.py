"""
=========================================================
The SAM optimizer in a hand-written PyTorch training loop
=========================================================

:class:`sksam.optim.SAM` wraps any PyTorch optimizer. Its ``step(closure)``
runs the closure first, at the current weights, perturbs them, runs it again
and then lets the base optimizer step from the *unperturbed* weights, so it
fits ordinary closure-based loops (and skorch). Given the model, it keeps
BatchNorm's running statistics to one update per step, and dropout draws the
same masks in both passes.

Here a small network with BatchNorm and dropout learns the digits with SGD
and with SAM, and :func:`sksam.sharpness.top_hessian_eigenvalue` measures how
sharp each solution is.
"""

# %%
import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from sksam.optim import SAM
from sksam.sharpness import top_hessian_eigenvalue

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = (
    torch.tensor(scaler.transform(a), dtype=torch.float32) for a in (X_train, X_test)
)
y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)


def make_model():
    return nn.Sequential(
        nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10)
    )


# %%
# The training loop
# -----------------
# The only SAM-specific line is the optimizer's construction; the closure is
# the usual "zero the gradients, forward, backward, return the loss".
def train(rho, epochs=30, seed=0):
    torch.manual_seed(seed)
    model = make_model()
    optimizer = SAM(
        model.parameters(), torch.optim.SGD, rho=rho, model=model, lr=0.05, momentum=0.9
    )
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(X_train)).split(64):

            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(X_train[batch]), y_train[batch])
                loss.backward()
                return loss

            loss = optimizer.step(closure)  # the loss at the unperturbed weights
        losses.append(loss.item())
    return model, losses


results = {}
for name, rho in [("SGD (rho=0)", 0.0), ("SAM (rho=0.5)", 0.5)]:
    model, losses = train(rho)
    model.eval()
    with torch.no_grad():
        accuracy = (model(X_test).argmax(dim=1) == y_test).float().mean().item()
    params = [p for p in model.parameters()]
    sharpness = top_hessian_eigenvalue(
        lambda: nn.functional.cross_entropy(model(X_train), y_train), params, random_state=0
    )
    results[name] = losses
    print(f"{name}: test accuracy {accuracy:.3f}, top Hessian eigenvalue {sharpness:.2f}")

# %%
# Training loss at the unperturbed weights, last batch of each epoch
fig, ax = plt.subplots()
for name, losses in results.items():
    ax.plot(range(1, len(losses) + 1), losses, label=name)
ax.set(xlabel="epoch", ylabel="training loss (last batch)", yscale="log")
ax.legend()
plt.show()
