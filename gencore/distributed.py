"""Training on several processes with PyTorch's own engine: DistributedDataParallel under torchrun.

Nothing here is home-made distributed machinery: :func:`setup` reads the environment that
``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) and calls
:func:`torch.distributed.init_process_group`; :func:`wrap` puts a model in
:class:`torch.nn.parallel.DistributedDataParallel`, which averages gradients across ranks during
``backward``; :func:`gencore.train.fit` shards every global minibatch across the ranks.

Why the result equals one process on the same global batch
----------------------------------------------------------
Let a global batch of ``B`` rows be split into ``W`` shards of ``B / W`` rows, one per rank. For a
loss that is a mean over rows, ``L = (1/W) Σ_r L_r`` with ``L_r`` the mean over shard ``r``, so
``∇L = (1/W) Σ_r ∇L_r``: exactly DDP's averaged gradient. Every rank starts from rank 0's
parameters (DDP broadcasts them) and applies the same averaged gradient, so the ranks stay
identical and follow the single-process trajectory up to floating-point reduction order.
(Batch-dependent layers such as BatchNorm see only their shard; use ``SyncBatchNorm`` to match.)

Usage (one GPU per process; on CPU the ``gloo`` backend)::

    torchrun --nproc_per_node=4 train_dcgan.py

    # train_dcgan.py
    dev = gencore.distributed.setup()            # device of this rank
    G, D = gencore.distributed.wrap(G.to(dev)), gencore.distributed.wrap(D.to(dev))
    history = fit(step, data.to(dev), steps=..., batch_size=512)   # 512 rows per step in total
    gencore.distributed.cleanup()

See the appendix "Performance" of the book.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that prints, plots and saves."""
    return rank() == 0


def setup(backend: str | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes and return this rank's device.

    Parameters
    ----------
    backend : {"nccl", "gloo"}, optional
        ``"nccl"`` when CUDA is available, ``"gloo"`` otherwise (CPU, and the tests).

    Returns
    -------
    torch.device
        ``cuda:LOCAL_RANK`` under NCCL, else ``cpu``. Outside torchrun (no ``RANK``/``WORLD_SIZE``
        in the environment) nothing is initialised and :func:`gencore.device` is returned.
    """
    from gencore.config import device as best_device

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return best_device()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("backend 'nccl' needs CUDA; use backend='gloo' on CPU")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dev


def wrap(model: torch.nn.Module, **ddp_kwargs) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` inside a process group of several processes, else ``model``.

    The model must already be on this rank's device (see :func:`setup`).
    """
    if not is_distributed():
        return model
    dev = next(model.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **ddp_kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (for saving or sampling), or ``model`` itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _comm_device() -> torch.device:
    """Where collectives run: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the ranks (``x`` itself outside a process group), on ``x``'s device."""
    if not is_distributed():
        return x
    y = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return (y / world_size()).to(x.device)


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s value of ``flag`` on every rank (``flag`` itself outside a process group)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([float(flag)], device=_comm_device())
    dist.broadcast(t, src=src)
    return bool(t.item())


def cleanup() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
