"""Saving and loading fitted estimators without pickle.

A saved estimator is one file written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never runs code from the file. It holds:

- ``format`` / ``format_version``: what the file is and which layout version wrote it;
- ``class``: the estimator's class name (checked on load);
- ``params_json``: ``get_params(deep=False)`` as JSON text;
- ``metadata_json``: fitted non-tensor state as JSON text (column names, timestamps, ...);
- ``state``: a flat ``{name: tensor}`` dict (model weights, scaler statistics, ...).

An estimator opts in with :class:`PersistenceMixin`: it implements ``_get_fitted_state()``
returning ``(state, metadata)`` and ``_set_fitted_state(state, metadata)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT", "FORMAT_VERSION", "save_estimator", "load_estimator", "PersistenceMixin"]

FORMAT = "mola_ts.estimator"
FORMAT_VERSION = 1


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and nested containers."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where} of type {type(value).__name__} cannot be saved as JSON; only numbers, strings, "
        "booleans, None and lists/dicts of them can"
    )


def save_estimator(estimator, path: str | os.PathLike, *, state: dict[str, torch.Tensor],
                   metadata: dict | None = None, params: dict | None = None) -> Path:
    """Write ``estimator`` (its params, ``metadata`` and tensor ``state``) to ``path``."""
    params = estimator.get_params(deep=False) if params is None else params
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "params_json": json.dumps(_jsonable(params, "params")),
        "metadata_json": json.dumps(_jsonable(metadata or {}, "metadata")),
        "state": {},
    }
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}")
        payload["state"][name] = tensor.detach().cpu().contiguous()
    path = Path(path)
    torch.save(payload, path)
    return path


def load_estimator(path: str | os.PathLike, expected_class: str
                   ) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_estimator`: ``(params, state, metadata)``.

    Raises ValueError when the file is not a saved estimator, has another format version, or
    holds another class than ``expected_class``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved estimator at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or unsafe files
        raise ValueError(f"{path} is not a mola_ts saved estimator: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a mola_ts saved estimator")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}; this mola_ts reads version {FORMAT_VERSION}"
        )
    if payload.get("class") != expected_class:
        raise ValueError(
            f"{path} holds a {payload.get('class')}, not a {expected_class}; load it with that "
            "class"
        )
    params = json.loads(payload["params_json"])
    metadata = json.loads(payload["metadata_json"])
    return params, dict(payload["state"]), metadata


class PersistenceMixin:
    """``save(path)`` / ``load(path)`` for estimators that describe their fitted state.

    Subclasses implement ``_get_fitted_state() -> (state, metadata)`` and
    ``_set_fitted_state(state, metadata)``, and may override ``_saved_params()`` when a
    parameter cannot be stored as JSON.
    """

    def _saved_params(self) -> dict:
        return self.get_params(deep=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted estimator to ``path`` (a single file; no pickle)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        state, metadata = self._get_fitted_state()
        return save_estimator(self, path, state=state, metadata=metadata,
                              params=self._saved_params())

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Load an estimator saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        params, state, metadata = load_estimator(path, cls.__name__)
        estimator = cls(**params)
        estimator._set_fitted_state(state, metadata)
        return estimator
