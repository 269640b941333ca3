"""SAMNetClassifier(accelerator=...) on 2 CPU processes (gloo, loopback) vs one process.

The processes run ``tests/accelerate_worker.py`` (the environment variables
``accelerate launch`` would set are set there); they are bounded in time and
always stopped. Semantics checked, as documented on ``accelerator``:

* global ascent (the default): both passes all-reduced, so 2 processes with
  batches of ``B`` take the SAM steps of one process with batches of ``2B``;
* ``optimizer__ascent='local'``: each process perturbs along its own batch,
  which is one process with batches of ``2B`` split into ``m=2`` chunks.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from sksam import SAMNetClassifier  # noqa: E402

import accelerate_worker as worker  # noqa: E402
from _ranks import run_ranks  # noqa: E402

WORLD, TIMEOUT = 2, 120


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("accelerate") / "rank")
    return run_ranks(worker.__file__, WORLD, prefix, timeout=TIMEOUT)


def _reference(**params):
    torch.set_num_threads(1)
    X, y = worker.data()
    clf = SAMNetClassifier(batch_size=WORLD * worker.BATCH, **worker.params(**params)).fit(X, y)
    return [p.detach() for p in clf.net_.module_.parameters()]


@pytest.mark.parametrize("scenario", sorted(worker.SCENARIOS))
def test_weights_are_identical_on_every_rank(ranks, scenario):
    first = ranks[0][scenario]["weights"]
    for other in ranks[1:]:
        for p, q in zip(first, other[scenario]["weights"], strict=True):
            assert torch.equal(p, q)


def test_global_ascent_is_one_process_with_the_global_batch(ranks):
    reference = _reference()
    for p, q in zip(ranks[0]["global"]["weights"], reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_local_ascent_is_m_sharpness_with_one_chunk_per_process(ranks):
    reference = _reference(m=WORLD)
    for p, q in zip(ranks[0]["local"]["weights"], reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # and the two semantics differ (the test can tell them apart)
    assert not all(
        torch.allclose(p, q, atol=1e-4)
        for p, q in zip(ranks[0]["local"]["weights"], _reference(), strict=True)
    )


def test_accelerator_refuses_precision_and_warm_start():
    from accelerate import Accelerator

    X, y = worker.data()
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="set the precision on the Accelerator"):
        SAMNetClassifier(accelerator=accelerator, precision="bfloat16").fit(X, y)
    clf = SAMNetClassifier(
        accelerator=accelerator, max_epochs=1, sharpness=None, random_state=0
    ).fit(X, y)
    assert clf.score(X, y) > 0.1  # one process: an ordinary fit
    with pytest.raises(ValueError, match="warm_start=True and partial_fit are not supported"):
        clf.partial_fit(X, y)


def test_every_rank_predicts_every_row(ranks):
    # skorch shards the rows of predict_proba over the processes and gathers them
    X, y = worker.data()
    torch.set_num_threads(1)
    reference = SAMNetClassifier(batch_size=WORLD * worker.BATCH, **worker.params()).fit(X, y)
    for rank in ranks:
        proba = rank["global"]["proba"]
        assert proba.shape == (len(X), 10)
        np.testing.assert_allclose(proba, reference.predict_proba(X), rtol=0, atol=1e-5)
