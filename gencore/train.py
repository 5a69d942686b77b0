"""The book's single training loop: :func:`fit`.

Every chapter trains through :func:`fit`. A chapter writes a *step function* that takes
one minibatch, updates its parameters (one optimiser or several, as a GAN needs) and
returns a dict of scalar losses; :func:`fit` does the rest:

- a step budget (``steps``), so tests and the CPU build stay fast and a GPU runs longer;
- minibatches drawn by indexing tensors that already live on the device (no DataLoader);
- a ``tqdm.auto`` progress bar;
- a :class:`History` of every logged loss;
- callbacks, which may stop training early;
- a guard that stops with the step number and the loss name when a loss is NaN or inf;
- several processes under ``torchrun`` (DistributedDataParallel, see :mod:`gencore.distributed`):
  every global minibatch is split across the ranks, and the logged losses are their mean.

:func:`make_step` builds the step function for the common one-loss, one-optimiser case.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch
from tqdm.auto import tqdm

Batch = Union[torch.Tensor, tuple[torch.Tensor, ...], None]
StepFn = Callable[[Batch], Mapping[str, Any]]
Callback = Callable[[int, "History"], Union[bool, None]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss and the step."""


@dataclass
class History:
    """Logged losses of a :func:`fit` run.

    ``steps[i]`` is the (1-based) step at which ``losses[name][i]`` was recorded.
    """

    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.losses:
            raise KeyError(f"no loss named {name!r}; logged: {', '.join(self.losses) or 'none'}")
        return np.asarray(self.losses[name])

    def __contains__(self, name: str) -> bool:
        return name in self.losses

    def __len__(self) -> int:
        return len(self.steps)

    def keys(self) -> list[str]:
        return list(self.losses)

    def last(self, name: str, n: int = 1) -> float:
        """Mean of the last ``n`` logged values of ``name``."""
        values = self[name]
        if len(values) == 0:
            raise ValueError(f"loss {name!r} has no logged values yet")
        return float(values[-n:].mean())

    def append(self, step: int, logs: Mapping[str, float]) -> None:
        self.steps.append(step)
        for k, v in logs.items():
            self.losses.setdefault(k, []).append(float(v))


def every(n: int, fn: Callback) -> Callback:
    """Wrap a callback so that it runs only at steps divisible by ``n``."""
    if n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")

    def wrapped(step: int, history: History):
        return fn(step, history) if step % n == 0 else None

    return wrapped


def _as_tuple(data: Batch) -> tuple[torch.Tensor, ...] | None:
    if data is None:
        return None
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("data must be a tensor, a tuple of tensors, or None")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"all data tensors must have the same first dimension; got {[len(t) for t in tensors]}")
    if len({t.device for t in tensors}) != 1:
        raise ValueError("all data tensors must be on the same device")
    return tensors


def fit(
    step: StepFn,
    data: Batch = None,
    *,
    steps: int,
    batch_size: int = 128,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    log_every: int = 1,
    progress: bool = True,
    desc: str = "training",
    distributed: bool | None = None,
) -> History:
    """Run ``step`` on ``steps`` minibatches and return the :class:`History`.

    Parameters
    ----------
    step : callable
        ``step(batch) -> {"loss_name": scalar, ...}``. It does its own ``backward`` and
        optimiser updates (see :func:`make_step`); returned tensors are read after it returns,
        so return values computed before an in-place update (not parameters). ``batch`` is a tensor (or tuple of tensors,
        matching ``data``) of ``batch_size`` rows, or ``None`` when ``data`` is ``None``.
    data : tensor, tuple of tensors, or None
        The whole training set, already on the device training should use. Rows are drawn
        without replacement within an epoch, by indexing; a new permutation starts each epoch.
    steps : int
        Step budget (> 0).
    batch_size : int
        Rows per minibatch; capped at the dataset size.
    seed : int
        Seed of the minibatch order (model initialisation is the caller's business).
    callbacks : sequence of callables
        ``cb(step, history)`` is called after each logging point; returning ``True`` stops.
    log_every : int
        Record losses every ``log_every`` steps. Losses stay on the device in between, so a
        GPU is not synchronised every step; the NaN/inf guard still reports the exact step.
    progress : bool
        Show a ``tqdm.auto`` progress bar (on rank 0 only when distributed).
    distributed : bool, optional
        Shard each minibatch across the processes of a ``torch.distributed`` process group
        (``None``: whenever one of more than one process is initialised, e.g. under ``torchrun``).
        ``batch_size`` is then the *global* batch: every rank draws the same permutation (same
        ``seed``) and takes rows ``rank::world_size`` of each global batch, so with models wrapped
        by :func:`gencore.distributed.wrap` an update equals the single-process update on the
        global batch. Logged losses are averaged over the ranks; callbacks' stop decision is
        rank 0's.

    Raises
    ------
    NonFiniteLossError
        When a returned loss is NaN or infinite: ``"loss 'd_loss' is nan at step 37"``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every <= 0:
        raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
    from gencore import distributed as _dist

    if distributed is None:
        distributed = _dist.is_distributed()
    elif distributed and not _dist.is_distributed():
        raise RuntimeError("distributed=True needs an initialised process group of more than one process "
                           "(run under torchrun and call gencore.distributed.setup() first)")
    rank, world = (_dist.rank(), _dist.world_size()) if distributed else (0, 1)
    tensors = _as_tuple(data)
    history = History()
    if tensors is not None:
        n, dev = len(tensors[0]), tensors[0].device
        if n == 0:
            raise ValueError("data is empty")
        batch_size = min(batch_size, n)
        if batch_size % world:
            raise ValueError(f"batch_size (the global batch, {batch_size}) must be divisible by the "
                             f"number of processes ({world})")
        gen = torch.Generator(device=dev).manual_seed(seed)
        perm, pos = torch.randperm(n, device=dev, generator=gen), 0

    pending: list[tuple[int, Mapping[str, Any]]] = []
    bar = tqdm(total=steps, desc=desc, disable=not progress or rank != 0, leave=True)
    try:
        for t in range(1, steps + 1):
            if tensors is None:
                batch = None
            else:
                if pos + batch_size > n:
                    perm, pos = torch.randperm(n, device=dev, generator=gen), 0
                idx = perm[pos:pos + batch_size]
                pos += batch_size
                if world > 1:  # this rank's shard of the global batch
                    idx = idx[rank::world]
                batch = tensors[0][idx] if len(tensors) == 1 else tuple(x[idx] for x in tensors)
            logs = step(batch)
            if not isinstance(logs, Mapping) or not logs:
                raise TypeError("step must return a non-empty dict of scalar losses")
            pending.append((t, {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in logs.items()}))
            if t % log_every == 0 or t == steps:
                stop = _flush(pending, history, callbacks, distributed)
                pending.clear()
                bar.update(t - bar.n)
                bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in history.losses.items()}, refresh=False)
                if stop:
                    break
    finally:
        bar.close()
    return history


def _flush(pending, history: History, callbacks: Sequence[Callback], distributed: bool = False) -> bool:
    """Move pending losses to the CPU in one transfer, check them, log them, run callbacks.

    Distributed, the losses are first averaged over the ranks (one all-reduce), so every rank
    logs, checks and stops identically."""
    names = list(pending[0][1])
    rows = []
    for t, logs in pending:
        if list(logs) != names:
            raise ValueError(f"step returned losses {list(logs)} at step {t}, expected {names}")
        rows.append([torch.as_tensor(v, dtype=torch.float64).reshape(()) if not isinstance(v, torch.Tensor)
                     else v.reshape(()).double() for v in logs.values()])
    values = torch.stack([torch.stack([v.cpu() for v in r]) for r in rows])
    if distributed:
        from gencore.distributed import all_reduce_mean
        values = all_reduce_mean(values)
    values = values.numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        what = "nan" if math.isnan(values[i, j]) else "infinite"
        raise NonFiniteLossError(f"loss {names[j]!r} is {what} at step {pending[i][0]}")
    stop = False
    for (t, _), row in zip(pending, values):
        history.append(t, dict(zip(names, row)))
    t_last = pending[-1][0]
    for cb in callbacks:
        if cb(t_last, history) is True:
            stop = True
    if distributed:  # rank 0 decides, so that no rank waits for the others forever
        from gencore.distributed import broadcast_flag
        stop = broadcast_flag(stop)
    return stop


def make_step(loss_fn: Callable[[Batch], Any], optimizer: torch.optim.Optimizer,
              *, clip_grad_norm: float | None = None) -> StepFn:
    """Step function for one loss and one optimiser.

    ``loss_fn(batch)`` returns a scalar tensor, or a dict of scalars whose ``"loss"`` entry
    is minimised (the other entries are logged).
    """

    def step(batch: Batch) -> dict[str, Any]:
        out = loss_fn(batch)
        logs = dict(out) if isinstance(out, Mapping) else {"loss": out}
        if "loss" not in logs:
            raise KeyError("loss_fn returned a dict without a 'loss' entry")
        optimizer.zero_grad(set_to_none=True)
        logs["loss"].backward()
        # snapshot before the update: logged values are those of the forward pass
        logs = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in logs.items()}
        if clip_grad_norm is not None:
            params = [p for grp in optimizer.param_groups for p in grp["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        return logs

    return step


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` (tensors, state dicts, numbers) atomically: a temporary file, then rename.

    A crash never leaves a half-written checkpoint at ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``."""
    return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
