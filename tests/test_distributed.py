"""fit() under torchrun: DistributedDataParallel with the data sharded per rank (gloo, CPU).

Launches ``torchrun --nproc_per_node=2`` on a small regression MLP and checks what
:mod:`gencore.distributed` promises: after training, the two ranks hold identical parameters,
and both the parameters and the logged loss match a single-process run on the same global batch
(the mean of the shards' mean losses is the global mean loss, and DDP averages gradients).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import gencore
from gencore import distributed as gdist
from gencore.train import fit, make_step

STEPS, BATCH, SEED = 40, 64, 3


def _problem():
    """Data, a freshly initialised model and its optimiser; identical in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 1.5]))[:, None] + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(SEED)
    model = gencore.nets.mlp([4, 32, 32, 1])
    return x, y, model


def train(model, x, y):
    """The one recipe both sides run: SGD on the MSE, the same global batches; the history and the
    first batch this process saw."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def loss(b):
        seen.append(b[0].clone())
        return torch.nn.functional.mse_loss(model(b[0]), b[1])

    hist = fit(make_step(loss, opt), (x, y), steps=STEPS, batch_size=BATCH, seed=7, progress=False, log_every=5)
    return hist, seen[0]


SCRIPT = textwrap.dedent(f"""
    import sys, torch
    sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
    torch.set_num_threads(1)
    from test_distributed import _problem, train
    from gencore import distributed as gdist

    dev = gdist.setup(backend="gloo")
    x, y, model = _problem()
    if gdist.rank() == 1:  # a different start on rank 1: DDP must broadcast rank 0's parameters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    ddp = gdist.wrap(model)
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
    hist, first_batch = train(ddp, x, y)
    flat = torch.cat([p.detach().reshape(-1) for p in gdist.unwrap(ddp).parameters()])
    torch.save({{"params": flat, "loss": torch.tensor(hist["loss"]), "first_batch": first_batch}},
               sys.argv[1] + f"/rank{{gdist.rank()}}.pt")
    gdist.cleanup()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_match_each_other_and_a_single_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # the ranks stay identical (rank 1 started elsewhere; DDP broadcast rank 0's parameters)
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)
    torch.testing.assert_close(r0["loss"], r1["loss"], rtol=0, atol=0)

    # one process, the same global batches of 64 rows
    x, y, model = _problem()
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with torch.no_grad():
        mse_before = torch.nn.functional.mse_loss(model(x), y)
    hist, first_single = train(model, x, y)
    # each rank saw its own half of the global batch, and the halves make up the single-process batch
    b0, b1 = r0["first_batch"], r1["first_batch"]
    assert b0.shape == b1.shape == (BATCH // 2, 4)
    torch.testing.assert_close(torch.cat([b0, b1]).sort(0).values, first_single.sort(0).values)
    assert not (b0[:, None, :] == b1[None, :, :]).all(-1).any(), "the two shards overlap"
    single = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(r0["params"], single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r0["loss"], torch.tensor(hist["loss"]), rtol=1e-5, atol=1e-7)
    # and training did something the comparison can see: the parameters moved
    assert (single - before).abs().max() > 1e-2
    with torch.no_grad():
        assert torch.nn.functional.mse_loss(model(x), y) < 0.9 * mse_before


def test_fit_refuses_distributed_without_a_process_group():
    with pytest.raises(RuntimeError, match="distributed=True needs an initialised process group"):
        fit(lambda b: {"loss": 0.0}, steps=1, distributed=True, progress=False)


def test_distributed_helpers_are_no_ops_in_one_process():
    assert not gdist.is_distributed() and gdist.rank() == 0 and gdist.world_size() == 1
    m = torch.nn.Linear(2, 2)
    assert gdist.wrap(m) is m and gdist.unwrap(m) is m
    x = torch.tensor([1.0, 2.0])
    assert gdist.all_reduce_mean(x) is x and gdist.broadcast_flag(True) is True
    assert gdist.setup() == gencore.device()  # outside torchrun: nothing is initialised
    with pytest.raises(ValueError, match="backend must be 'nccl' or 'gloo'"):
        os.environ.update(RANK="0", WORLD_SIZE="1")
        try:
            gdist.setup(backend="mpi")
        finally:
            del os.environ["RANK"], os.environ["WORLD_SIZE"]
