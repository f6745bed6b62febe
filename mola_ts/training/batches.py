"""Batches and evaluation: how the loop reads a data set.

Owns the data contract of :func:`~mola_ts.training.train`: a ``torch.utils.data.Dataset`` (a
``get_batch(indices)`` method, when present, fetches a whole batch in one gather) or a tuple of
tensors with the same first dimension. :func:`iterate_batches` yields batches as tuples of
tensors on the device; :func:`evaluate` averages metrics over a data set in eval mode;
:func:`metric_sums` is the weighted sum behind it, shared with the distributed validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["Batch", "LossFn", "MetricsFn", "n_items", "iterate_batches", "metric_sums",
           "evaluate"]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
MetricsFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]


def n_items(data) -> int:
    """Number of items of a data set or of a tuple of tensors."""
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
    """Yield batches (tuples of tensors, moved to ``device``) of a dataset or tensor tuple.

    Parameters
    ----------
    data : Dataset or tuple of tensors
        The items.
    batch_size : int
        Items per batch (>= 1); the last batch may be smaller unless ``drop_last``.
    shuffle : bool
        Visit the items in a random order drawn from ``generator``.
    generator : torch.Generator, optional
        The shuffling generator (see :func:`~mola_ts.training.seed_everything`).
    drop_last : bool
        Drop the last, incomplete batch (kept when it is the only one).
    indices : tensor of int, optional
        Visit these items, in this order, instead (``shuffle`` is then ignored).
    device : torch.device, optional
        Where the batches go.

    Examples
    --------
    >>> import torch
    >>> from mola_ts.training import iterate_batches
    >>> data = (torch.arange(5.0), torch.arange(5.0) * 2)
    >>> [len(x) for x, y in iterate_batches(data, 2)]
    [2, 2, 1]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices is None:
        n = n_items(data)
        indices = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n = len(indices)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        batch = _fetch(data, indices[start : start + batch_size])
        if device is not None:
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        yield batch


@torch.no_grad()
def metric_sums(model: nn.Module, data, metrics_fn: MetricsFn, batch_size: int,
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

    Always local to this process, also under ``torchrun`` (:func:`~mola_ts.training.train`
    all-reduces its own validation).

    Parameters
    ----------
    model : nn.Module
        Put in eval mode while scoring, then back in its previous mode.
    data : Dataset or tuple of tensors
        The items to score.
    metrics_fn : callable(model, batch) -> dict of str -> tensor
        Scalar metrics (averaged) or vector metrics (averaged element-wise) of one batch.
    batch_size : int
        Items per batch.
    device : torch.device, optional
        Where the batches go (the model must already be there).

    Returns
    -------
    dict of str -> float (or tensor for vector metrics)
    """
    totals, count = metric_sums(model, data, metrics_fn, batch_size, device)
    if count == 0:
        raise ValueError("the evaluation data is empty")
    return {k: v / count for k, v in totals.items()}
