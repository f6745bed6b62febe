"""The one training loop every torch model of the toolkit uses, and what it stands on.

``train(model, train_data, loss_fn, TrainConfig(...))`` runs seeded mini-batch training with an
optimizer and an optional per-epoch learning-rate schedule, evaluates a validation set after
every epoch, stops early with patience and restores the best weights, and stops with
:class:`NonFiniteLossError` on a NaN/inf loss. Launched by ``torchrun``, the same call trains
with DistributedDataParallel, one process per device (``docs/scale_out.md``).

The rooms:

- :mod:`~mola_ts.training.loop`: :func:`train`, :class:`TrainResult`,
  :class:`NonFiniteLossError`;
- :mod:`~mola_ts.training.config`: :class:`TrainConfig`, the settings of a run;
- :mod:`~mola_ts.training.batches`: :func:`iterate_batches` and :func:`evaluate`, how data
  is read;
- :mod:`~mola_ts.training.stopping`: :class:`EarlyStopping` and the :class:`Stopper` protocol;
- :mod:`~mola_ts.training.progress`: :func:`stage` and the epoch bar (``tqdm.auto``; off with
  ``MOLA_TS_NO_PROGRESS=1``);
- :mod:`~mola_ts.training.seeding`: :func:`seed_everything`, :func:`preserve_global_rng`,
  :func:`resolve_device`;
- :mod:`~mola_ts.training.distributed`: the rank helpers, :func:`unwrap_model` and the DDP
  side of a run.
"""

from .batches import evaluate, iterate_batches
from .config import TrainConfig
from .distributed import get_rank, get_world_size, is_distributed, is_main_process, unwrap_model
from .loop import NonFiniteLossError, TrainResult, train
from .progress import progress_enabled, stage
from .seeding import preserve_global_rng, resolve_device, resolve_seed, seed_everything
from .stopping import EarlyStopping, Stopper

__all__ = [
    "TrainConfig",
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "evaluate",
    "iterate_batches",
    "EarlyStopping",
    "resolve_seed",
    "Stopper",
    "progress_enabled",
    "stage",
    "seed_everything",
    "preserve_global_rng",
    "resolve_device",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "unwrap_model",
]
