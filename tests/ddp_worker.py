"""One rank of the 2-process DDP checks in test_ddp.py (run as a script, not collected).

Usage: python ddp_worker.py RANK WORLD PORT OUT_PREFIX. Every rank trains the
same small network on its own rows of one global batch, once per scenario,
and saves what the test compares to ``OUT_PREFIX<RANK>.pt``.
"""

import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sksam._update_rules import SAMRule
from sksam.optim import GSAM, SAM, WSAM, BayesianSAM, EveryK, FriendlySAM, LookSAM

RHO, LR, MOMENTUM, STEPS, N = 0.2, 0.3, 0.9, 3, 16


def data(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, generator=gen, dtype=dtype)
    return x, torch.randn(N, 1, generator=gen, dtype=dtype)


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 1)]
    return nn.Sequential(*layers).to(dtype)


def wrapped(model, counter):
    ddp = DistributedDataParallel(model)

    def counting_allreduce(state, bucket):
        counter.append(1)
        tensor = bucket.buffer().div_(dist.get_world_size())
        work = dist.all_reduce(tensor, async_op=True)
        return work.get_future().then(lambda fut: fut.value()[0])

    ddp.register_comm_hook(None, counting_allreduce)
    return ddp


def summary(model, counter, opt=None, scales=None):
    return {
        "weights": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        "allreduces": len(counter),
        "num_batches_tracked": model[1].num_batches_tracked.item(),
        "scales": scales,
    }


class Weighted(SAMRule):
    """A descent rule that reads the first gradient: ``a * g_s + (1 - a) * g``."""

    needs_first_gradient = True

    def __init__(self, a=0.6):
        self.a = a

    def descent(self, params, first_grads):
        for p, g in zip(params, first_grads):
            p.grad.mul_(self.a).add_(g, alpha=1 - self.a)


def run_step(ascent, x, y, schedule=None, rule=None):
    model, counter = mlp(), []
    ddp = wrapped(model, counter)
    opt = SAM(
        ddp.parameters(),
        torch.optim.SGD,
        rho=RHO,
        lr=LR,
        momentum=MOMENTUM,
        model=ddp,
        ascent=ascent,
        schedule=schedule,
        rule=rule,
    )

    def closure():
        loss = nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        return loss

    for _ in range(STEPS):
        opt.step(closure)
    return summary(model, counter)


def run_chunks(x, y, n_chunks=2):
    model, counter = mlp(), []
    ddp = wrapped(model, counter)
    opt = SAM(ddp.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, model=ddp)
    xs, ys = x.chunk(n_chunks), y.chunk(n_chunks)

    def closure(i):
        loss = nn.functional.mse_loss(ddp(xs[i]), ys[i])
        loss.backward()
        return loss

    for _ in range(STEPS):
        opt.step_chunks(closure, n_chunks)
    return summary(model, counter)


def run_scaler_overflow(x, y, rank):
    # float32 and a GradScaler; rank 1 overflows in the first pass of step 0:
    # both ranks must skip that step, and take the next ones.
    model, counter = mlp(torch.float32), []
    ddp = wrapped(model, counter)
    opt = SAM(ddp.parameters(), torch.optim.SGD, rho=RHO, lr=LR, model=ddp, ascent="local")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = x.float(), y.float()
    scales, weights = [], []
    for step in range(STEPS):
        calls = []

        def closure():
            calls.append(1)
            loss = nn.functional.mse_loss(ddp(x), y)
            scaler.scale(loss).backward()
            if step == 0 and rank == 1 and len(calls) == 1:
                with torch.no_grad():
                    model[0].weight.grad[0, 0] = float("inf")
            return loss

        opt.step(closure, grad_scaler=scaler)
        scaler.update()
        scales.append(scaler.get_scale())
        weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    out = summary(model, counter, scales=scales)
    out["first_weights"] = weights[0]
    return out


def main():
    rank, world, port, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        x, y = data()
        rows = slice(rank * N // world, (rank + 1) * N // world)
        xl, yl = x[rows], y[rows]
        results = {
            "global": run_step("global", xl, yl),
            "local": run_step("local", xl, yl),
            "chunks": run_chunks(xl, yl),
            "scaler": run_scaler_overflow(xl, yl, rank),
            # the cheap variants: the whole step switches on every rank at once
            "every_k_local": run_step("local", xl, yl, schedule=EveryK(2)),
            "looksam_global": run_step("global", xl, yl, schedule=LookSAM(2)),
            # the family: rules inside the same pass
            "gsam_global": run_step("global", xl, yl, rule=GSAM(0.5)),
            "gsam_local": run_step("local", xl, yl, rule=GSAM(0.5)),
            "wsam_global": run_step("global", xl, yl, rule=WSAM(0.8)),
            "wsam_local": run_step("local", xl, yl, rule=WSAM(0.8)),
            "fsam_global": run_step("global", xl, yl, rule=FriendlySAM(1.0, 0.9)),
            "bsam_global": run_step("global", xl, yl, rule=BayesianSAM(N, seed=1)),
            # a rule that reads each rank's own first gradient: the ranks agree again
            "weighted_local": run_step("local", xl, yl, rule=Weighted()),
        }
        torch.save(results, f"{prefix}{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
