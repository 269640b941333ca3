"""Run a worker script as several local processes (gloo on the loopback interface).

Shared by the multi-process tests (``test_ddp.py``, ``test_accelerate.py``):
each worker is called as ``script rank world port prefix`` and saves its
results to ``{prefix}{rank}.pt``. The processes are bounded in time and
always stopped.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env(root):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
    if loopback:  # gloo's own connections on the loopback interface too
        env["GLOO_SOCKET_IFNAME"] = loopback[0]
    return env


def _launch(script, world, prefix, timeout):
    """Run ``world`` worker processes; their return codes and output."""
    env = _loopback_env(Path(script).parents[1])
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(world), port, prefix],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], outputs


def run_ranks(script, world, prefix, *, timeout):
    """The saved results of every rank, from one launch of ``world`` processes.

    A launch whose free port was taken in the meantime is retried once; any
    other failure of a worker fails the calling test with its output.
    """
    codes, outputs = _launch(script, world, prefix, timeout)
    if any(codes) and any("address already in use" in out.lower() for out in outputs):
        codes, outputs = _launch(script, world, prefix, timeout)
    for code, out in zip(codes, outputs):
        assert code == 0, out[-3000:]
    return [torch.load(f"{prefix}{rank}.pt", weights_only=False) for rank in range(world)]
