"""The one training loop every torch model of the toolkit uses.

``train(model, train_data, loss_fn=...)`` runs seeded mini-batch training with an optimizer and
an optional per-epoch learning-rate schedule, evaluates a validation set after every epoch,
stops early with patience and restores the best weights, shows a tqdm bar only when asked and
attached to a terminal, and stops with :class:`NonFiniteLossError` on a NaN/inf loss.

Data: a ``torch.utils.data.Dataset`` (a ``get_batch(indices)`` method, when present, fetches a
whole batch in one gather) or a tuple of tensors with the same first dimension. ``loss_fn(model,
batch)`` receives the batch as a tuple of tensors already on the device and returns a scalar.

Scale-out: launched by ``torchrun`` (its ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... variables),
the same call trains with DistributedDataParallel, one process per device: the process group is
created when needed (gloo on CPU, nccl on CUDA) and destroyed again at the end, the training data
is sharded with :class:`~torch.utils.data.DistributedSampler`, ``batch_size`` stays the *global*
batch, validation metrics are all-reduced, early stopping is decided on rank 0 and broadcast, and
only rank 0 writes checkpoints and shows progress. See ``docs/scale_out.md``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

__all__ = [
    "NonFiniteLossError",
    "seed_everything",
    "preserve_global_rng",
    "resolve_device",
    "EarlyStopping",
    "Stopper",
    "TrainResult",
    "iterate_batches",
    "evaluate",
    "train",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "unwrap_model",
]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
MetricsFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def seed_everything(random_state: int | None) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator for data shuffling.

    ``None`` draws a fresh seed (non-reproducible), like scikit-learn's ``random_state=None``.
    """
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % (2**31))
    if isinstance(random_state, np.random.RandomState):
        random_state = int(random_state.randint(0, 2**31 - 1))
    seed = int(random_state)
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds legacy global users too
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states on exit.

    A seeded fit reseeds the global generators (:func:`seed_everything`); wrapped in this, it
    leaves the caller's random streams as they were, so fitting a model does not change what
    the user's own code draws next.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what we keep
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and \
        torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; otherwise the device asked for."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return device


class Stopper(Protocol):
    """What the loop needs from an early-stopping rule (see :class:`EarlyStopping`)."""

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool: ...

    def restore(self, model: nn.Module) -> None: ...


class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of ``monitor``; keep the best weights.

    An epoch improves when ``metrics[monitor] < best - min_delta``. ``restore`` loads the
    weights of the best epoch back into the model.
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, monitor: str = "loss",
                 restore_best: bool = True):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.monitor = monitor
        self.restore_best = restore_best
        self.best_score = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        score = metrics[self.monitor]
        if score < self.best_score - self.min_delta:
            self.best_score = score
            self.best_epoch = epoch
            self.bad_epochs = 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)


@dataclass
class TrainResult:
    """What happened in :func:`train`: per-epoch history and the early-stopping outcome."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based, like history's "epoch"
    best_score: float | None = None
    stopped_early: bool = False
    epochs_run: int = 0
    seconds: float = 0.0


def _n_items(data) -> int:
    if isinstance(data, (tuple, list)):
        return len(data[0])
    return len(data)


def _fetch(data, indices: torch.Tensor) -> Batch:
    if isinstance(data, (tuple, list)):
        return tuple(t[indices] for t in data)
    if hasattr(data, "get_batch"):
        batch = data.get_batch(indices)
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    items = [data[int(i)] for i in indices]
    if isinstance(items[0], torch.Tensor):
        return (torch.stack(items),)
    return tuple(torch.stack(parts) for parts in zip(*items, strict=True))


def iterate_batches(data, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    indices: torch.Tensor | None = None, device: torch.device | None = None
                    ) -> Iterator[Batch]:
    """Yield batches (tuples of tensors, moved to ``device``) of a dataset or tensor tuple."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices is None:
        n = _n_items(data)
        indices = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n = len(indices)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        batch = _fetch(data, indices[start : start + batch_size])
        if device is not None:
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        yield batch


@torch.no_grad()
def _metric_sums(model: nn.Module, data, metrics_fn: MetricsFn, batch_size: int,
                 device: torch.device | None, indices: torch.Tensor | None = None
                 ) -> tuple[dict[str, Any], int]:
    """Batch-size-weighted sums of ``metrics_fn`` over ``data`` (or its ``indices``) and the count.

    Scalar metrics sum into Python floats, vector metrics into float64 CPU tensors.
    """
    was_training = model.training
    model.eval()
    totals: dict[str, Any] = {}
    count = 0
    try:
        for batch in iterate_batches(data, batch_size, device=device, indices=indices):
            size = len(batch[0])
            for key, value in metrics_fn(model, batch).items():
                value = value.detach()
                if value.ndim == 0:
                    totals[key] = totals.get(key, 0.0) + float(value) * size
                else:  # a vector metric (e.g. one loss per segment) is averaged element-wise
                    prev = totals.get(key, 0.0)
                    totals[key] = prev + value.double().cpu() * size
            count += size
    finally:
        model.train(was_training)
    return totals, count


def evaluate(model: nn.Module, data, metrics_fn: MetricsFn, *, batch_size: int = 256,
             device: torch.device | None = None) -> dict[str, float]:
    """Batch-size-weighted means of ``metrics_fn`` over ``data``, in eval mode.

    Always local to this process, also under ``torchrun`` (:func:`train` all-reduces its own
    validation).
    """
    totals, count = _metric_sums(model, data, metrics_fn, batch_size, device)
    if count == 0:
        raise ValueError("the evaluation data is empty")
    return {k: v / count for k, v in totals.items()}


def _make_optimizer(optimizer, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    name = (optimizer or "adam").lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a callable, got {optimizer!r}")


def _make_scheduler(scheduler, optimizer: torch.optim.Optimizer):
    if scheduler is None:
        return None
    if scheduler == "halve":  # the Time-Series-Library "type1" schedule: lr * 0.5 ** epoch
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    if callable(scheduler):
        return scheduler(optimizer)
    raise ValueError(f"scheduler must be None, 'halve' or a callable, got {scheduler!r}")


def _show_progress(verbose: int) -> bool:
    return bool(verbose) and sys.stderr.isatty() and not os.environ.get("MOLA_TS_NO_PROGRESS")


# --------------------------------------------------------------------------------------------
# Scale-out: torchrun / DistributedDataParallel
# --------------------------------------------------------------------------------------------

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

    Valid before, during and after :func:`train` (which may have destroyed its process group).
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
    """The user's module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


_LAUNCH_STORES: dict[tuple[str, ...], Any] = {}
_GROUPS_CREATED = 0


def _fresh_store(launch: dict[str, str]):
    """A key space of its own in the launch's store for the next process group of the loop.

    torch names every default group alike, so a group created after an earlier one was destroyed
    (foundation, then adaptation) could read the earlier group's stale rendezvous keys and
    connect to dead ports. The connection to the launch's store is made once per process; each
    group gets a new prefix, equal on every rank because all ranks make the same calls.
    """
    global _GROUPS_CREATED
    key = tuple(launch[name] for name in _LAUNCH_VARS)
    if key not in _LAUNCH_STORES:
        store, _, _ = next(dist.rendezvous("env://"))
        _LAUNCH_STORES[key] = store
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"mola_ts/train/{restart}/{_GROUPS_CREATED}"
    _GROUPS_CREATED += 1
    return dist.PrefixStore(prefix, _LAUNCH_STORES[key])


class _LoopDDP(DistributedDataParallel):
    """DistributedDataParallel that counts forward calls and lends the wrapped module's attributes.

    ``loss_fn(model, batch)`` receives this wrapper: ``model(x)`` runs DDP's forward (gradients are
    then all-reduced in backward), and ``model.anything`` falls back to the wrapped module, so a
    loss written for the plain module keeps working. The count tells the loop whether a step's
    forward went through the wrapper (see :meth:`_Replicas.average_gradients`).
    """

    def forward(self, *args, **kwargs):
        self.mola_forward_calls += 1
        return super().forward(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


class _Replicas:
    """The distributed side of one :func:`train` call: group, sharding and the collectives.

    Every method is a collective or deterministic, so all ranks must call them in the same
    order; the training loop does.
    """

    def __init__(self, device: str | torch.device | None, launch: dict[str, str] | None):
        self.created_group = False
        self.rank = int(launch["RANK"]) if launch else dist.get_rank()
        local_rank = launch.get("LOCAL_RANK") if launch else os.environ.get("LOCAL_RANK")
        asked = resolve_device(device)
        if asked.type == "cuda":
            # one process per GPU: torchrun's LOCAL_RANK picks it, whatever index was asked for
            index = int(local_rank) if local_rank is not None else (
                self.rank % torch.cuda.device_count())
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        elif asked.type == "cpu":
            self.device = asked
        else:
            raise ValueError(f"distributed training runs on 'cpu' or 'cuda', got device={asked}")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    store=_fresh_store(launch), rank=self.rank,
                                    world_size=int(launch["WORLD_SIZE"]))
            self.created_group = True
        elif self.device.type == "cpu" and "gloo" not in str(dist.get_backend()).lower():
            raise ValueError(
                f"the existing process group uses the {dist.get_backend()} backend, which cannot "
                "communicate CPU tensors; train on device='cuda' or initialise gloo"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.wrapper: _LoopDDP | None = None

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
                stacklevel=3,
            )
        return local

    def wrap(self, module: nn.Module) -> _LoopDDP:
        """Wrap ``module`` in DDP (rank 0's weights and buffers are broadcast on construction).

        ``find_unused_parameters=True`` lets a step leave trainable parameters without gradient
        (top-k routing, per-task experts); frozen parameters are never synchronised. Set
        ``MOLA_TS_DDP_FIND_UNUSED=0`` to save the graph traversal when every trainable parameter
        gets a gradient in every step.
        """
        find_unused = os.environ.get("MOLA_TS_DDP_FIND_UNUSED", "1") != "0"
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.wrapper = _LoopDDP(module, device_ids=device_ids,
                                find_unused_parameters=find_unused)
        self.wrapper.mola_forward_calls = 0
        return self.wrapper

    # --- every epoch ---------------------------------------------------------------------
    def shard(self, n_items: int, epoch: int, *, shuffle: bool, seed: int,
              drop_last: bool) -> torch.Tensor:
        """This rank's training indices for ``epoch`` (DistributedSampler, reshuffled per epoch).

        Without ``drop_last`` the sampler repeats a few items so that every rank gets the same
        number of batches (DDP needs every rank to take every step).
        """
        sampler = DistributedSampler(range(n_items), num_replicas=self.world_size,
                                     rank=self.rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def step_sums(self, loss: torch.Tensor, size: int, forwards_before: int
                  ) -> tuple[float, int, bool]:
        """All-reduce one step's (loss x batch, batch, forward-through-wrapper) over the ranks.

        Returns the global loss sum, the global batch and whether DDP's forward ran on every
        rank; a non-finite loss anywhere makes the sum non-finite everywhere, so all ranks stop
        together.
        """
        used = float(self.wrapper.mola_forward_calls > forwards_before)
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
        n = _n_items(data)
        if n < self.world_size:  # some ranks would have nothing: every rank scores everything
            return evaluate(module, data, metrics_fn, batch_size=batch_size, device=self.device)
        indices = torch.arange(self.rank, n, self.world_size)
        totals, count = _metric_sums(module, data, metrics_fn, batch_size, self.device, indices)
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
            for name in ("logger", "reducer"):
                self.wrapper.__dict__.pop(name, None)
            self.wrapper = None
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()


def _start_replicas(device: str | torch.device | None, distributed: bool | None
                    ) -> _Replicas | None:
    """A :class:`_Replicas` when this call should train distributed, else None."""
    if distributed is False:
        return None
    if not dist.is_available():
        if distributed:
            raise ValueError("distributed=True but this torch build has no torch.distributed")
        return None
    if dist.is_initialized():
        if distributed or dist.get_world_size() > 1:
            return _Replicas(device, None)
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
    return _Replicas(device, launch)


def train(
    model: nn.Module,
    train_data,
    *,
    loss_fn: LossFn,
    val_data=None,
    val_fn: MetricsFn | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str | Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer] = "adam",
    scheduler: str | Callable | None = None,
    patience: int | None = 3,
    stopper: Stopper | None = None,
    grad_clip: float | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    device: str | torch.device | None = "cpu",
    random_state: int | None = 0,
    verbose: int = 0,
    callbacks: Sequence[Callable[[int, dict[str, float], nn.Module], bool | None]] = (),
    checkpoint_path: str | os.PathLike | None = None,
    eval_batch_size: int = 256,
    distributed: bool | None = None,
) -> TrainResult:
    """Train ``model`` in place and return a :class:`TrainResult`.

    Parameters
    ----------
    loss_fn : callable(model, batch) -> scalar tensor
        The training objective of one batch. Under torchrun it receives the
        DistributedDataParallel wrapper: run the forward as ``model(...)`` so that gradients
        are synchronised (the module's other attributes stay reachable as ``model.name``).
    val_data, val_fn : optional
        Validation set and its metrics ``val_fn(model, batch) -> {"loss": ..., ...}`` (default:
        ``{"loss": loss_fn(model, batch)}``). Early stopping watches ``"loss"``. Always called
        with the plain module.
    batch_size : int
        The global batch: under torchrun each of the W ranks takes ``ceil(batch_size / W)``.
    patience : int or None
        Patience of the default :class:`EarlyStopping` (None: train all epochs, no restore).
    stopper : Stopper, optional
        A custom early-stopping rule (e.g. per-segment stopping); replaces ``patience``.
    scheduler : None, "halve" or callable(optimizer) -> scheduler
        Stepped once per epoch.
    callbacks : sequence of callable(epoch, metrics, model) -> bool | None
        Called after every epoch (on every rank, with the plain module); returning True stops
        training (under torchrun, rank 0's answer counts).
    checkpoint_path : path, optional
        Where to save the best weights (``torch.save`` of the state dict) on every improvement;
        written by rank 0 only.
    eval_batch_size : int
        Validation batch (per rank under torchrun).
    distributed : bool or None
        None: train with DDP when launched by torchrun with ``WORLD_SIZE > 1`` (or inside an
        existing process group of several ranks). False: train in this process alone even
        then. True: require a launch or a group, even of one process.

    Returns
    -------
    TrainResult
        Under torchrun the history holds global means and is the same on every rank, and so
        are the final weights.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    start_time = time.perf_counter()
    replicas = _start_replicas(device, distributed)
    try:
        device = resolve_device(device) if replicas is None else replicas.device
        generator = seed_everything(random_state)
        seed = generator.initial_seed()
        if replicas is not None and random_state is None:
            seed = replicas.common_seed(seed)
            generator = seed_everything(seed)
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        opt = _make_optimizer(optimizer, params, lr, weight_decay)
        sched = _make_scheduler(scheduler, opt)
        if stopper is None and patience is not None and val_data is not None:
            stopper = EarlyStopping(patience=patience)
        if val_fn is None:
            def val_fn(m, b):
                return {"loss": loss_fn(m, b)}
        # loss_fn sees `net` (the DDP wrapper under torchrun); everything else the plain module
        net = model if replicas is None else replicas.wrap(model)
        local_batch = batch_size if replicas is None else replicas.local_batch_size(batch_size)
        if local_batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        main = replicas is None or replicas.rank == 0
        result = _run_epochs(
            model, net, replicas, train_data, loss_fn, val_data, val_fn, opt, sched, stopper,
            params, epochs=epochs, batch_size=local_batch, shuffle=shuffle, drop_last=drop_last,
            generator=generator, seed=seed, device=device, grad_clip=grad_clip,
            callbacks=callbacks, checkpoint_path=checkpoint_path if main else None,
            eval_batch_size=eval_batch_size, show=main and _show_progress(verbose),
        )
        if stopper is not None and val_data is not None:
            stopper.restore(model)
            best = getattr(stopper, "best_epoch", None)
            result.best_epoch = best + 1 if isinstance(best, int) and best >= 0 else None
            result.best_score = getattr(stopper, "best_score", None)
        if replicas is not None:
            replicas.sync_module(model)
    finally:
        if replicas is not None:
            replicas.close()
    result.seconds = time.perf_counter() - start_time
    return result


def _run_epochs(model, net, replicas, train_data, loss_fn, val_data, val_fn, opt, sched, stopper,
                params, *, epochs, batch_size, shuffle, drop_last, generator, seed, device,
                grad_clip, callbacks, checkpoint_path, eval_batch_size, show) -> TrainResult:
    """The epochs of :func:`train`; ``net`` is ``model`` or its DDP wrapper (``replicas``)."""
    result = TrainResult()
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="training", unit="epoch", leave=False)
    try:
        for epoch in range(epochs):
            model.train()
            total, count = 0.0, 0
            indices = None
            if replicas is not None:
                indices = replicas.shard(_n_items(train_data), epoch, shuffle=shuffle, seed=seed,
                                         drop_last=drop_last)
            for step, batch in enumerate(iterate_batches(
                    train_data, batch_size, shuffle=shuffle, generator=generator,
                    drop_last=drop_last, indices=indices, device=device)):
                forwards = net.mola_forward_calls if replicas is not None else 0
                loss = loss_fn(net, batch)
                if replicas is None:
                    loss_sum, size, ddp_synced = None, len(batch[0]), True
                    loss_value = float(loss.detach())
                else:  # global sums, so every rank sees the same (finite or not) loss
                    loss_sum, size, ddp_synced = replicas.step_sums(loss, len(batch[0]), forwards)
                    loss_value = loss_sum / size
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"the training loss became {loss_value} at epoch "
                        f"{epoch + 1}, batch {step + 1}; lower the learning rate or check "
                        "the inputs for extreme values"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if not ddp_synced:
                    replicas.average_gradients(params)
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                if loss_sum is None:
                    total += loss_value * len(batch[0])
                else:
                    total += loss_sum
                count += size
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(count, 1),
                                      "lr": opt.param_groups[0]["lr"]}
            stop = False
            if val_data is not None:
                if replicas is None:
                    metrics = evaluate(model, val_data, val_fn, batch_size=eval_batch_size,
                                       device=device)
                else:
                    metrics = replicas.evaluate(model, val_data, val_fn, eval_batch_size)
                scalar = {k: v for k, v in metrics.items() if isinstance(v, float)}
                if "loss" in scalar and not math.isfinite(scalar["loss"]):
                    raise NonFiniteLossError(
                        f"the validation loss became {scalar['loss']} at epoch {epoch + 1}"
                    )
                record.update({f"val_{k}": v for k, v in scalar.items()})
                if stopper is not None:
                    # every rank updates its stopper (same metrics, same weights), so each holds
                    # the best weights to restore; rank 0's decision is the one that counts
                    before = getattr(stopper, "best_epoch", None)
                    stop = bool(stopper.update(epoch, metrics, model))
                    improved = getattr(stopper, "best_epoch", None) != before
                    if checkpoint_path is not None and improved:
                        torch.save(model.state_dict(), checkpoint_path)
            result.history.append(record)
            result.epochs_run = epoch + 1
            for callback in callbacks:
                stop = bool(callback(epoch, record, model)) or stop
            if replicas is not None:
                stop = replicas.agree(stop)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
                bar.update(1)
            if sched is not None:
                sched.step()
            if stop:
                result.stopped_early = epoch + 1 < epochs
                break
    finally:
        if bar is not None:
            bar.close()
    return result
