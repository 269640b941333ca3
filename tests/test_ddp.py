"""SAM under DistributedDataParallel: 2 CPU processes (gloo, loopback) vs one process.

The processes run ``tests/ddp_worker.py``; they are bounded in time and
always stopped. Each compares with a single-process reference built from the
same rows.
"""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sksam.optim import GSAM, SAM, WSAM, BayesianSAM, EveryK, FriendlySAM, LookSAM

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker as worker  # noqa: E402
from _ranks import run_ranks  # noqa: E402

WORLD, TIMEOUT = 2, 90


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The results of every rank, from one launch of WORLD processes."""
    prefix = str(tmp_path_factory.mktemp("ddp") / "rank")
    return run_ranks(worker.__file__, WORLD, prefix, timeout=TIMEOUT)


def _chunks():
    x, y = worker.data()
    return x.chunk(WORLD), y.chunk(WORLD)


def _single_process(run, schedule=None, rule=None):
    model = worker.mlp()
    opt = SAM(
        model.parameters(),
        torch.optim.SGD,
        rho=worker.RHO,
        lr=worker.LR,
        momentum=worker.MOMENTUM,
        model=model,
        schedule=schedule,
        rule=rule,
    )
    for _ in range(worker.STEPS):
        run(model, opt)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _global_reference(schedule=None, rule=None):
    # DDP averages the ranks' gradients: the gradient of the mean of the
    # ranks' losses, each with its own BatchNorm batch statistics.
    xs, ys = _chunks()

    def run(model, opt):
        def closure():
            loss = sum(nn.functional.mse_loss(model(x), y) for x, y in zip(xs, ys)) / WORLD
            loss.backward()
            return loss

        opt.step(closure)

    return _single_process(run, schedule, rule)


def _chunked_reference(n_chunks, schedule=None, rule=None):
    x, y = worker.data()
    xs, ys = x.chunk(n_chunks), y.chunk(n_chunks)

    def run(model, opt):
        def closure(i):
            loss = nn.functional.mse_loss(model(xs[i]), ys[i])
            loss.backward()
            return loss

        opt.step_chunks(closure, n_chunks)

    return _single_process(run, schedule, rule)


@pytest.mark.parametrize(
    "scenario",
    ["global", "local", "chunks", "scaler", "every_k_local", "looksam_global", "weighted_local"]
    + ["gsam_global", "gsam_local", "wsam_global", "wsam_local", "fsam_global", "bsam_global"],
)
def test_weights_are_identical_on_every_rank(ranks, scenario):
    assert torch.equal(ranks[0][scenario]["weights"], ranks[1][scenario]["weights"])


def test_plain_ddp_takes_the_global_ascent(ranks):
    expected = _global_reference()
    torch.testing.assert_close(ranks[0]["global"]["weights"], expected, rtol=1e-12, atol=1e-13)
    # and it is not the per-worker step
    assert not torch.allclose(ranks[0]["global"]["weights"], _chunked_reference(WORLD))


def test_local_ascent_is_step_chunks_with_one_chunk_per_worker(ranks):
    expected = _chunked_reference(WORLD)
    torch.testing.assert_close(ranks[0]["local"]["weights"], expected, rtol=1e-12, atol=1e-13)


def test_step_chunks_under_ddp_chunks_every_workers_batch(ranks):
    expected = _chunked_reference(2 * WORLD)
    torch.testing.assert_close(ranks[0]["chunks"]["weights"], expected, rtol=1e-12, atol=1e-13)


def test_all_reduces_per_step(ranks):
    # one gradient bucket: two all-reduces per global step, one per local
    # step; step_chunks runs every pass under no_sync and all-reduces itself
    steps = worker.STEPS
    assert [ranks[r]["global"]["allreduces"] for r in range(WORLD)] == [2 * steps] * WORLD
    assert [ranks[r]["local"]["allreduces"] for r in range(WORLD)] == [steps] * WORLD
    assert [ranks[r]["chunks"]["allreduces"] for r in range(WORLD)] == [0] * WORLD


def test_batchnorm_statistics_are_updated_once_per_step(ranks):
    for rank in ranks:
        assert rank["global"]["num_batches_tracked"] == worker.STEPS
        assert rank["local"]["num_batches_tracked"] == worker.STEPS
        assert rank["chunks"]["num_batches_tracked"] == 2 * worker.STEPS  # once per chunk


def test_overflow_on_one_rank_skips_the_step_on_every_rank(ranks):
    initial = torch.cat([p.detach().reshape(-1) for p in worker.mlp(torch.float32).parameters()])
    for rank in ranks:
        assert torch.equal(rank["scaler"]["first_weights"], initial)
        assert rank["scaler"]["scales"] == [512.0, 512.0, 512.0]
        assert not torch.equal(rank["scaler"]["weights"], initial)


def test_every_k_with_the_local_ascent_switches_every_rank_together(ranks):
    # SAM steps are per-worker ascents, the plain step in between is synced.
    expected = _chunked_reference(WORLD, EveryK(2))
    got = ranks[0]["every_k_local"]
    torch.testing.assert_close(got["weights"], expected, rtol=1e-12, atol=1e-13)
    assert [r["every_k_local"]["allreduces"] for r in ranks] == [worker.STEPS] * WORLD


def test_looksam_with_the_global_ascent_is_the_one_process_looksam(ranks):
    expected = _global_reference(LookSAM(2))
    got = ranks[0]["looksam_global"]
    torch.testing.assert_close(got["weights"], expected, rtol=1e-12, atol=1e-13)
    # two all-reduces on the SAM steps (0 and 2), one on the LookSAM step
    assert [r["looksam_global"]["allreduces"] for r in ranks] == [5] * WORLD


FAMILY = {
    "gsam": GSAM(0.5),
    "wsam": WSAM(0.8),
    "fsam": FriendlySAM(1.0, 0.9),
    # every rank draws bSAM's noise from the same seeded generator
    "bsam": BayesianSAM(worker.N, seed=1),
}


@pytest.mark.parametrize("name", ["gsam", "wsam", "fsam", "bsam"])
def test_a_family_rule_with_the_global_ascent_is_the_one_process_rule(ranks, name):
    expected = _global_reference(rule=FAMILY[name])
    got = ranks[0][f"{name}_global"]
    torch.testing.assert_close(got["weights"], expected, rtol=1e-12, atol=1e-13)
    assert not torch.allclose(got["weights"], _global_reference())  # the rule did act
    assert [r[f"{name}_global"]["allreduces"] for r in ranks] == [2 * worker.STEPS] * WORLD


@pytest.mark.parametrize("name", ["gsam", "wsam"])
def test_a_mixing_rule_with_the_local_ascent_is_step_chunks_one_chunk_per_worker(ranks, name):
    # each worker mixes its own g and g_s; one all-reduce of the mix per step
    expected = _chunked_reference(WORLD, rule=FAMILY[name])
    got = ranks[0][f"{name}_local"]
    torch.testing.assert_close(got["weights"], expected, rtol=1e-12, atol=1e-13)
    assert [r[f"{name}_local"]["allreduces"] for r in ranks] == [0] * WORLD  # no DDP hook
    assert got["num_batches_tracked"] == worker.STEPS


def test_a_descent_rule_with_the_local_ascent_is_its_one_process_chunked_step(ranks):
    # each rank combines its own g with the all-reduced g_s; the combination is
    # all-reduced again, so the ranks agree: a * mean(g_s) + (1 - a) * mean(g)
    expected = _chunked_reference(WORLD, rule=worker.Weighted())
    got = ranks[0]["weighted_local"]
    torch.testing.assert_close(got["weights"], expected, rtol=1e-12, atol=1e-13)
