"""
===========================================================
Several devices: DDP and Accelerate recipes (not run here)
===========================================================

The point of this page: **the same SAM step runs on several GPUs with two
changes to a single-device loop (wrap the model, pass the wrapped module as
``model=``) or with one argument to** :class:`~sksam.SAMNetClassifier`
**(``accelerator=``)**. The code is shown, not run, when the documentation is
built (it needs several processes, and GPUs to be worth it); save it as a
file and launch it as its first lines say. ``docs/distributed.rst`` explains
the choices (global or local ascent, mixed precision, gradient clipping).
"""

# %%
# A hand-written loop with ``DistributedDataParallel``
# ----------------------------------------------------
# Launch with ``torchrun --nproc_per_node=4 run_several_devices.py ddp``:
# each process trains on its shard of the digits, the gradients are averaged
# over the processes at every backward pass. With the default
# ``ascent='global'`` every step is the SAM step of the global batch, the
# one a single process would take on it, so a ``rho`` tuned on one GPU keeps
# its meaning on four; ``ascent='local'`` perturbs each worker along its own
# batch's gradient (m-sharpness) and all-reduces once per step instead of
# twice.
import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from sksam.optim import SAM


def digits_dataset():
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    return TensorDataset(X, torch.tensor(y))


def train_ddp(epochs=20, rho=0.1):
    torch.distributed.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo"
    )
    rank = torch.distributed.get_rank()
    device = (
        torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    torch.manual_seed(0)  # the same initial weights on every process
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = DistributedDataParallel(
        model.to(device),
        device_ids=[device] if device.type == "cuda" else None,
    )
    optimizer = SAM(
        ddp.parameters(),
        torch.optim.SGD,
        rho=rho,
        model=ddp,  # the wrapped module: SAM controls its gradient sync
        ascent="global",  # or "local"
        lr=0.05,
        momentum=0.9,
    )
    dataset = digits_dataset()
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # a new shuffle every epoch
        losses = []
        for x, y in loader:
            x, y = x.to(device), y.to(device)

            def closure():
                optimizer.zero_grad()
                loss = loss_fn(ddp(x), y)
                loss.backward()
                return loss

            losses.append(optimizer.step(closure).item())
        if rank == 0:
            print(
                f"epoch {epoch + 1}: mean loss on rank 0 {np.mean(losses):.4f}"
            )
    torch.distributed.destroy_process_group()


# %%
# The scikit-learn estimator with Hugging Face Accelerate
# -------------------------------------------------------
# Launch with ``accelerate launch run_several_devices.py accelerate`` (after
# ``accelerate config``). :class:`~sksam.SAMNetClassifier` hands its module,
# optimizer and data loaders to the accelerator and replaces skorch's
# training step with SAM's; bfloat16 needs no loss scaling, ``fp16`` gets a
# ``GradScaler`` that SAM's step uses.
def train_accelerate():
    from accelerate import Accelerator
    from sklearn.model_selection import train_test_split

    from sksam import SAMNetClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        (X / 16.0).astype(np.float32), y, random_state=0
    )
    accelerator = Accelerator(mixed_precision="bf16")  # or "fp16", "no"
    clf = SAMNetClassifier(
        accelerator=accelerator,
        rho=0.1,
        lr=0.05,
        batch_size=64,  # per process
        max_epochs=20,
        optimizer__momentum=0.9,
        random_state=0,
    ).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    if accelerator.is_main_process:
        print(f"test accuracy {accuracy:.3f}, sharpness {clf.sharpness_:.3f}")


# %%
# The entry point
# ---------------
if __name__ == "__main__":
    {"ddp": train_ddp, "accelerate": train_accelerate}[sys.argv[1]]()
