"""One rank of the Accelerate test (tests/test_accelerate.py): fit, save the weights.

Run as ``python accelerate_worker.py RANK WORLD PORT PREFIX``; the environment
variables Accelerate reads (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) are
set here, so no launcher is needed.
"""

import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits

#: Rows, per-process batch size and epochs of every scenario.
N_SAMPLES, BATCH, EPOCHS = 256, 16, 2

#: name -> estimator parameters; each is fitted on every rank.
SCENARIOS = {
    "global": {},
    "local": {"optimizer__ascent": "local"},
}


def data():
    X, y = load_digits(return_X_y=True)
    return (X[:N_SAMPLES] / 16).astype(np.float32), y[:N_SAMPLES]


def params(**extra):
    """The estimator parameters every scenario and reference share."""
    return dict(
        rho=0.1,
        lr=0.1,
        max_epochs=EPOCHS,
        random_state=0,
        sharpness=None,
        module__hidden_layer_sizes=(16,),
        optimizer__momentum=0.9,
        iterator_train__shuffle=False,
        **extra,
    )


def main(rank, world, port, prefix):
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from sksam import SAMNetClassifier

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world, accelerator.state
    X, y = data()
    results = {}
    for name, extra in SCENARIOS.items():
        clf = SAMNetClassifier(accelerator=accelerator, batch_size=BATCH, **params(**extra))
        clf.fit(X, y)
        weights = [p.detach().clone() for p in clf.net_.module_.parameters()]
        results[name] = {"weights": weights, "loss_curve": clf.loss_curve_}
    torch.save(results, f"{prefix}{rank}.pt")
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
