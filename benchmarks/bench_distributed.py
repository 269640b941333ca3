"""SAM with several workers, m-sharpness and float16 loss scaling.

Three measurements on the digits data (an MLP 64-256-256-10 with
BatchNorm, SGD with momentum 0.9, rho=0.05), each printing its numbers and
the check that makes them comparable:

1. **DDP, 2 processes vs 1** (CPU, gloo on 127.0.0.1, one torch thread per
   process): the same global batch per step, split in two. Throughput in
   rows per second of one process stepping on the whole batch, of two
   processes with ``ascent='global'`` and with ``ascent='local'``; the
   weights after the run equal the single-process references
   (``step`` on the mean of the halves' losses, ``step_chunks`` with one
   chunk per worker) up to float32 rounding.
2. **m-sharpness overhead on one device**: time per step of
   ``SAM.step_chunks(closure, m)`` against ``SAM.step`` on the same batch
   (the same floating-point operations, in ``2 m`` smaller passes).
3. **float16 with a GradScaler vs float32**: the relative distance between
   the weights of ``step(closure, grad_scaler=...)`` under float16
   autocast and of float32 SAM after the same steps, and their losses.
   Time per step only on a GPU (``--device cuda``): float16 kernels on a CPU
   are emulated and say nothing about speed.

Usage::

    python benchmarks/bench_distributed.py [--steps 30] [--batch 512] [--device cuda]
    python benchmarks/bench_distributed.py --quick   # smoke run, seconds
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import torch
from sklearn.datasets import load_digits
from torch import nn

import sksam
from sksam.optim import SAM

RHO, LR, MOMENTUM = 0.05, 0.05, 0.9


def data(batch, dtype=torch.float32, device="cpu"):
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    rows = torch.arange(batch) % len(X)
    x = torch.as_tensor(X, dtype=dtype)[rows].to(device)
    return x, torch.as_tensor(y)[rows].to(device)


def mlp(width, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    ).to(device, dtype)


def sam(model, opt_model=None, **kwargs):
    return SAM(
        model.parameters(),
        torch.optim.SGD,
        rho=RHO,
        lr=LR,
        momentum=MOMENTUM,
        model=opt_model if opt_model is not None else model,
        **kwargs,
    )


def flat(model):
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(step, steps, device="cpu"):
    """Median seconds per call of ``step`` over ``steps`` calls, after 2 warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


# -- 1. DDP ---------------------------------------------------------------------


def worker(rank, world, port, out, args):
    from torch.nn.parallel import DistributedDataParallel

    dist = torch.distributed
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    try:
        x, y = data(args.batch)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        result = {}
        for ascent in ("global", "local"):
            model = mlp(args.width)
            ddp = DistributedDataParallel(model)
            opt = sam(ddp, ddp, ascent=ascent)

            def closure(ddp=ddp):
                loss = loss_fn(ddp, x, y)
                loss.backward()
                return loss

            seconds = timed(lambda opt=opt, closure=closure: opt.step(closure), args.steps)
            result[ascent] = (seconds, flat(model))
        torch.save(result, out)
    finally:
        dist.destroy_process_group()


def launch(args, world=2):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, f"rank{r}.pt") for r in range(world)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # the workers import the sksam this process imported
        root = os.path.dirname(os.path.dirname(os.path.abspath(sksam.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
        loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
        if loopback:
            env["GLOO_SOCKET_IFNAME"] = loopback[0]
        common = [
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--width",
            str(args.width),
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(r), str(world), str(port), outs[r]]
                + common,
                env=env,
            )
            for r in range(world)
        ]
        try:
            for p in procs:
                p.wait(timeout=args.timeout)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if any(p.returncode for p in procs):
            raise RuntimeError("a DDP worker failed")
        return [torch.load(out, weights_only=False) for out in outs]


def reference(args, world, chunked):
    """One process: the whole batch per step; the global or the per-half ascent."""
    x, y = data(args.batch)
    xs, ys = x.chunk(world), y.chunk(world)
    model = mlp(args.width)
    opt = sam(model)

    def mean_of_halves():  # what DDP's averaged gradient is (BN per half)
        loss = sum(loss_fn(model, xc, yc) for xc, yc in zip(xs, ys)) / world
        loss.backward()
        return loss

    def chunk(i):
        loss = loss_fn(model, xs[i], ys[i])
        loss.backward()
        return loss

    if chunked:
        seconds = timed(lambda: opt.step_chunks(chunk, world), args.steps)
    else:
        seconds = timed(lambda: opt.step(mean_of_halves), args.steps)
    return seconds, flat(model)


def bench_ddp(args):
    world = 2
    ranks = launch(args, world)
    print(f"\n1. DDP on CPU, {world} processes vs 1, batch {args.batch}, {args.steps} timed steps")
    for ascent, chunked in (("global", False), ("local", True)):
        one_s, one_w = reference(args, world, chunked)
        two_s, two_w = ranks[0][ascent]
        same = torch.equal(two_w, ranks[1][ascent][1])
        err = (two_w - one_w).abs().max().item()
        print(
            f"  ascent={ascent:6s}  1 process {args.batch / one_s:9.0f} rows/s   "
            f"2 processes {args.batch / two_s:9.0f} rows/s   speed-up {one_s / two_s:4.2f}x   "
            f"ranks equal: {same}   max |w - w_1proc| {err:.1e}"
        )


# -- 2. m-sharpness ----------------------------------------------------------------


def bench_chunks(args):
    x, y = data(args.batch, device=args.device)
    print(f"\n2. m-sharpness on one device ({args.device}), batch {args.batch}")

    def run(m):
        model = mlp(args.width, device=args.device)
        opt = sam(model)
        xs, ys = x.chunk(m), y.chunk(m)

        def chunk(i):
            loss = loss_fn(model, xs[i], ys[i])
            loss.backward()
            return loss

        def closure():
            loss = loss_fn(model, x, y)
            loss.backward()
            return loss

        step = (lambda: opt.step(closure)) if m == 1 else (lambda: opt.step_chunks(chunk, m))
        return timed(step, args.steps, args.device)

    plain = run(1)
    print(f"  SAM.step (m = batch)          {1e3 * plain:8.2f} ms/step")
    for m in args.chunks:
        seconds = run(m)
        print(
            f"  step_chunks, {m:3d} chunks of {args.batch // m:4d} {1e3 * seconds:8.2f} ms/step"
            f"   overhead {seconds / plain:4.2f}x"
        )


# -- 3. float16 + GradScaler ----------------------------------------------------------


def bench_fp16(args):
    device = args.device
    x, y = data(args.batch, device=device)
    print(f"\n3. float16 autocast + GradScaler vs float32 ({device}), {args.steps} steps")
    runs = {}
    for name, dtype in (
        ("float32", None),
        ("float16+scaler", torch.float16),
        ("bfloat16", torch.bfloat16),
    ):
        model = mlp(args.width, device=device)
        opt = sam(model)
        scaler = torch.amp.GradScaler(device.split(":")[0]) if dtype is torch.float16 else None

        def closure(model=model, dtype=dtype, scaler=scaler):
            with torch.autocast(
                device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                loss = loss_fn(model, x, y)
            (loss if scaler is None else scaler.scale(loss)).backward()
            return loss

        def step(opt=opt, closure=closure, scaler=scaler):
            opt.step(closure, grad_scaler=scaler)
            if scaler is not None:
                scaler.update()

        torch.manual_seed(0)
        seconds = timed(step, args.steps, device)
        with torch.no_grad():
            final = loss_fn(model, x, y).item()
        runs[name] = (seconds, flat(model), final)
    base_s, base_w, base_loss = runs["float32"]
    start = flat(mlp(args.width))
    for name, (seconds, w, final) in runs.items():
        rel = (w - base_w).norm().item() / (base_w - start).norm().item()
        timing = (
            f"   {1e3 * seconds:8.2f} ms/step ({base_s / seconds:4.2f}x float32)"
            if device.startswith("cuda")
            else ""
        )
        print(
            f"  {name:15s} loss {final:.4f} (float32 {base_loss:.4f})   "
            f"|w - w32| / |w32 - w0| {rel:.1e}{timing}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--worker", nargs=4, metavar=("RANK", "WORLD", "PORT", "OUT"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch, args.width, args.chunks, args.timeout = 3, 64, 32, [2, 4], 120
    torch.set_num_threads(1)
    if args.worker:
        rank, world, port, out = args.worker
        worker(int(rank), int(world), port, out, args)
        return
    if not args.skip_ddp:
        bench_ddp(args)
    bench_chunks(args)
    bench_fp16(args)


if __name__ == "__main__":
    main()
