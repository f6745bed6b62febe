"""Scale-out: torchrun launches, rank helpers and the DDP side of one training run.

Owns everything that knows of ``torch.distributed``:

- the rank helpers :func:`get_rank`, :func:`get_world_size`, :func:`is_distributed`,
  :func:`is_main_process` (valid before, during and after training) and :func:`unwrap_model`;
- :func:`start_replicas`, which decides whether a :func:`~mola_ts.training.train` call runs
  distributed, and :class:`Replicas`, the per-call state of a distributed run: its process group,
  the DDP wrapper, the sharding of the training data and the collectives the loop needs.

The module keeps no state of its own: each ``train`` call connects to the launch's store,
creates its process group (when none exists) and destroys it at the end; the one trace a call
leaves is the count of groups created, kept in the launch's store (it keys the next group).
See ``docs/scale_out.md``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .batches import MetricsFn, evaluate, metric_sums, n_items
from .seeding import resolve_device

__all__ = ["get_rank", "get_world_size", "is_distributed", "is_main_process", "unwrap_model",
           "Replicas", "start_replicas"]

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _launch_env() -> dict[str, str] | None:
    """torchrun's variables when ``RANK`` and ``WORLD_SIZE`` are set, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return {name: os.environ[name] for name in (*_LAUNCH_VARS, "LOCAL_RANK")
            if os.environ.get(name)}


def get_world_size() -> int:
    """Number of training processes: the process group's size, torchrun's ``WORLD_SIZE``, or 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if "RANK" in os.environ else 1


def get_rank() -> int:
    """Rank of this process: the process group's rank, torchrun's ``RANK``, or 0.

    Valid before, during and after :func:`~mola_ts.training.train` (which may have destroyed
    its process group).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else 0


def is_distributed() -> bool:
    """True when this process is one of several training processes (``get_world_size() > 1``)."""
    return get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one process that writes files and logs.

    Estimators' ``save`` methods and benchmark scripts guard their file writes with it.
    """
    return get_rank() == 0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel wrapper (``model`` itself otherwise).

    Under torchrun a ``loss_fn`` receives the wrapper: it runs the forward as ``model(...)``
    and reaches the module's other attributes as ``unwrap_model(model).name``.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def _fresh_store(launch: dict[str, str]) -> dist.Store:
    """A key space of its own in the launch's store for the next process group of this process.

    torch names every default group alike, so a group created after an earlier one was destroyed
    (foundation, then adaptation) could read the earlier group's stale rendezvous keys and
    connect to dead ports. Each group gets a new prefix: the number of groups this rank has
    created, counted in the launch's store itself (equal on every rank because all ranks make
    the same calls).
    """
    store, _, _ = next(dist.rendezvous("env://"))
    created = store.add(f"mola_ts/train/groups/rank{launch['RANK']}", 1)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"mola_ts/train/{restart}/{created}", store)


def _pick_device(device: str | torch.device | None, rank: int,
                 local_rank: str | None) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA (one process per GPU), or the CPU."""
    asked = resolve_device(device)
    if asked.type == "cuda":
        # one process per GPU: torchrun's LOCAL_RANK picks it, whatever index was asked for
        index = int(local_rank) if local_rank is not None else rank % torch.cuda.device_count()
        chosen = torch.device("cuda", index)
        torch.cuda.set_device(chosen)
        return chosen
    if asked.type == "cpu":
        return asked
    raise ValueError(f"distributed training runs on 'cpu' or 'cuda', got device={asked}")


class Replicas:
    """The distributed side of one :func:`~mola_ts.training.train` call.

    Holds the process group (created when none exists), the DDP wrapper and a count of the
    forward passes that went through it. Every method is a collective or deterministic, so
    all ranks must call them in the same order; the training loop does.

    Parameters
    ----------
    device : str, torch.device or None
        The device asked for (CUDA becomes ``cuda:LOCAL_RANK``).
    launch : dict of str -> str or None
        torchrun's variables, to create a process group; None to use the existing one.
    """

    def __init__(self, device: str | torch.device | None, launch: dict[str, str] | None):
        self.created_group = False
        rank = int(launch["RANK"]) if launch else dist.get_rank()
        local_rank = launch.get("LOCAL_RANK") if launch else os.environ.get("LOCAL_RANK")
        self.device = _pick_device(device, rank, local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    store=_fresh_store(launch), rank=rank,
                                    world_size=int(launch["WORLD_SIZE"]))
            self.created_group = True
        elif self.device.type == "cpu" and "gloo" not in str(dist.get_backend()).lower():
            raise ValueError(
                f"the existing process group uses the {dist.get_backend()} backend, which cannot "
                "communicate CPU tensors; train on device='cuda' or initialise gloo"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.wrapper: DistributedDataParallel | None = None
        self.forward_calls = 0
        self._hook: Any = None

    # --- setup ---------------------------------------------------------------------------
    def common_seed(self, seed: int) -> int:
        """Rank 0's seed, so that ``random_state=None`` still shuffles alike on every rank."""
        value = torch.tensor([seed], dtype=torch.int64, device=self.device)
        dist.broadcast(value, src=0)
        return int(value.item())

    def local_batch_size(self, batch_size: int) -> int:
        """Per-rank batch of a global ``batch_size`` (rounded up when it does not divide)."""
        local = math.ceil(batch_size / self.world_size)
        if local * self.world_size != batch_size and self.rank == 0:
            warnings.warn(
                f"batch_size={batch_size} is not a multiple of the world size {self.world_size}; "
                f"each rank uses {local}, a global batch of {local * self.world_size}",
                stacklevel=4,
            )
        return local

    def wrap(self, module: nn.Module) -> DistributedDataParallel:
        """Wrap ``module`` in DDP (rank 0's weights and buffers are broadcast on construction).

        ``find_unused_parameters=True`` lets a step leave trainable parameters without gradient
        (top-k routing, per-task experts); frozen parameters are never synchronised. Set
        ``MOLA_TS_DDP_FIND_UNUSED=0`` to save the graph traversal when every trainable parameter
        gets a gradient in every step. A forward pre-hook counts the passes through the wrapper
        (see :meth:`step_sums`).
        """
        find_unused = os.environ.get("MOLA_TS_DDP_FIND_UNUSED", "1") != "0"
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.wrapper = DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=find_unused)
        self.forward_calls = 0
        self._hook = self.wrapper.register_forward_pre_hook(self._count_forward)
        return self.wrapper

    def _count_forward(self, wrapper: nn.Module, args: tuple) -> None:
        self.forward_calls += 1

    # --- every epoch ---------------------------------------------------------------------
    def shard(self, n: int, epoch: int, *, shuffle: bool, seed: int,
              drop_last: bool) -> torch.Tensor:
        """This rank's indices among ``n`` training items for ``epoch`` (DistributedSampler,
        reshuffled per epoch).

        Without ``drop_last`` the sampler repeats a few items so that every rank gets the same
        number of batches (DDP needs every rank to take every step).
        """
        sampler = DistributedSampler(range(n), num_replicas=self.world_size,
                                     rank=self.rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def step_sums(self, loss: torch.Tensor, size: int, forwards_before: int
                  ) -> tuple[float, int, bool]:
        """All-reduce one step's (loss x batch, batch, forward-through-wrapper) over the ranks.

        ``forwards_before`` is :attr:`forward_calls` before the step's ``loss_fn``. Returns the
        global loss sum, the global batch and whether DDP's forward ran on every rank; a
        non-finite loss anywhere makes the sum non-finite everywhere, so all ranks stop
        together.
        """
        used = float(self.forward_calls > forwards_before)
        sums = torch.stack([loss.detach().double().reshape(()) * size,
                            torch.tensor(float(size), dtype=torch.float64, device=loss.device),
                            torch.tensor(used, dtype=torch.float64, device=loss.device)])
        dist.all_reduce(sums)
        loss_sum, count, n_used = sums.tolist()
        if 0 < n_used < self.world_size:
            raise RuntimeError(
                "loss_fn ran the model's forward through the DDP wrapper on some ranks only; "
                "call model(...) in every step on every rank"
            )
        return loss_sum, int(count), n_used == self.world_size

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Average gradients by hand for a step whose forward bypassed the DDP wrapper.

        A parameter keeps ``grad=None`` only when no rank produced a gradient for it, like DDP.
        """
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float64,
                                device=self.device)
        dist.all_reduce(has_grad)
        with torch.no_grad():
            for p, flag in zip(params, has_grad.tolist(), strict=True):
                if flag == 0:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad.div_(self.world_size)

    def evaluate(self, module: nn.Module, data, metrics_fn: MetricsFn, batch_size: int
                 ) -> dict[str, Any]:
        """Validation over every rank's strided shard, weighted sums all-reduced.

        Each rank scores items ``rank, rank + W, ...`` once (no padding), so the metrics equal a
        single-process evaluation up to float summation order and are the same on all ranks.
        """
        n = n_items(data)
        if n < self.world_size:  # some ranks would have nothing: every rank scores everything
            return evaluate(module, data, metrics_fn, batch_size=batch_size, device=self.device)
        indices = torch.arange(self.rank, n, self.world_size)
        totals, count = metric_sums(module, data, metrics_fn, batch_size, self.device, indices)
        keys = sorted(totals)
        parts = [torch.as_tensor(totals[k], dtype=torch.float64).reshape(-1) for k in keys]
        flat = torch.cat([torch.tensor([float(count)], dtype=torch.float64), *parts])
        flat = flat.to(self.device)
        dist.all_reduce(flat)
        flat = flat.cpu()
        count = int(flat[0].item())
        metrics: dict[str, Any] = {}
        offset = 1
        for key, part in zip(keys, parts, strict=True):
            chunk = flat[offset : offset + part.numel()]
            offset += part.numel()
            if isinstance(totals[key], float):
                metrics[key] = float(chunk.item()) / count
            else:
                metrics[key] = chunk.reshape(totals[key].shape) / count
        return metrics

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (early-stopping and callback decisions)."""
        value = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    # --- the end ---------------------------------------------------------------------------
    def sync_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (restored best weights, and
        buffers such as BatchNorm statistics that last saw each rank's own batch)."""
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_contiguous():
                    dist.broadcast(tensor.data, src=0)
                else:
                    buffer = tensor.data.contiguous()
                    dist.broadcast(buffer, src=0)
                    tensor.data.copy_(buffer)

    def close(self) -> None:
        """Disarm the DDP wrapper and destroy the process group if this call created it.

        DDP's reducer hooks the parameters' gradient accumulators for as long as it lives, and an
        exception's traceback can keep the wrapper alive; dropping the reducer (and the logger
        that holds it) removes the hooks, so later backward passes on the module stay local.
        """
        if self.wrapper is not None:
            self._hook.remove()
            for name in ("logger", "reducer"):
                self.wrapper.__dict__.pop(name, None)
            self.wrapper = None
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()


def start_replicas(device: str | torch.device | None, distributed: bool | None
                   ) -> Replicas | None:
    """A :class:`Replicas` when this call should train distributed, else None.

    Parameters
    ----------
    device : str, torch.device or None
        The device asked for.
    distributed : bool or None
        As :attr:`~mola_ts.training.TrainConfig.distributed`.

    Raises
    ------
    ValueError
        When ``distributed=True`` finds neither a launch nor a process group, or a launch lacks
        the variables its processes need to find each other.
    """
    if distributed is False:
        return None
    if not dist.is_available():
        if distributed:
            raise ValueError("distributed=True but this torch build has no torch.distributed")
        return None
    if dist.is_initialized():
        if distributed or dist.get_world_size() > 1:
            return Replicas(device, None)
        return None
    launch = _launch_env()
    if launch is None:
        if distributed:
            raise ValueError(
                "distributed=True but this process was not launched by torchrun (RANK, "
                "WORLD_SIZE, MASTER_ADDR and MASTER_PORT are not set) and no process group exists"
            )
        return None
    if not distributed and int(launch["WORLD_SIZE"]) <= 1:
        return None
    missing = [name for name in _LAUNCH_VARS if name not in launch]
    if missing:  # the processes could not find each other
        raise ValueError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not; launch with torchrun "
            "(or set the torch.distributed env:// variables yourself)"
        )
    return Replicas(device, launch)
