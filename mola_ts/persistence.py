"""Saving and loading fitted estimators without pickle.

A saved estimator is one file written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never runs code from the file. The file holds a
dict with

- ``magic``: :data:`MAGIC`, so foreign files are recognised;
- ``format_version``: the layout version (:data:`FORMAT_VERSION`); newer files are refused;
- ``class``: the estimator's class name (checked on load);
- ``params_json``: ``get_params(deep=False)`` as JSON text (tuples come back as lists);
- ``state``: the fitted state: tensors, numbers, strings, lists and dicts of them; numpy arrays
  and pandas indexes are stored as tensors with a small tag and come back as what they were.

Estimators opt in with :class:`SaveLoadMixin`. By default the state is every public fitted
attribute (name ending with ``_``); an estimator holding objects that cannot be stored this way
(a torch module, say) overrides ``_state_to_save`` / ``_restore_state``, and one whose parameters
are not all JSON (an estimator given as a parameter) overrides ``_params_to_save``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "EstimatorFileError",
    "save_estimator",
    "load_estimator",
    "SaveLoadMixin",
]

MAGIC = "mola_ts.estimator"
FORMAT_VERSION = 1

_ND = "__ndarray__"
_STR_ND = "__str_ndarray__"
_TUPLE = "__tuple__"
_DTI = "__datetimeindex__"
_IDX = "__index__"


class EstimatorFileError(ValueError):
    """A file is not a readable saved estimator (foreign, truncated, other class or version)."""


def _encode(value: Any, where: str) -> Any:
    """Turn ``value`` into what ``torch.load(weights_only=True)`` can read back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DatetimeIndex):
        freq = value.freqstr if value.freq is not None else None
        tz = str(value.tz) if value.tz is not None else None
        return {_DTI: torch.from_numpy(value.as_unit("ns").asi8.copy()), "freq": freq, "tz": tz,
                "unit": value.unit,
                "name": _encode(value.name, where)}
    if isinstance(value, pd.Index):
        return {_IDX: _encode(value.to_numpy(), where), "name": _encode(value.name, where)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return {_ND: torch.from_numpy(np.ascontiguousarray(value).copy())}
        if value.dtype.kind in "OUS" and all(isinstance(v, str) for v in value.ravel()):
            return {_STR_ND: value.tolist()}
        raise TypeError(f"cannot save {where}: a numpy array of dtype {value.dtype}")
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot save {where}: dict key {key!r} is not a string")
            out[key] = _encode(item, f"{where}[{key!r}]")
        return out
    raise TypeError(f"cannot save {where} of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if _ND in value:
            return value[_ND].numpy()
        if _STR_ND in value:
            return np.asarray(value[_STR_ND], dtype=object)
        if _TUPLE in value:
            return tuple(_decode(v) for v in value[_TUPLE])
        if _DTI in value:
            index = pd.DatetimeIndex(value[_DTI].numpy().astype("datetime64[ns]"),
                                     name=value["name"])
            if value["tz"] is not None:
                index = index.tz_localize("UTC").tz_convert(value["tz"])
            if value["freq"] is not None:
                index = pd.DatetimeIndex(index, freq=value["freq"])
            return index.as_unit(value.get("unit", "ns"))
        if _IDX in value:
            return pd.Index(_decode(value[_IDX]), name=value["name"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _params_json(params: dict) -> str:
    for name, value in params.items():
        try:
            json.dumps(_encode_json(value))
        except TypeError:
            raise TypeError(
                f"parameter {name!r} of type {type(value).__name__} cannot be saved as JSON; "
                "only numbers, strings, booleans, None and lists/dicts of them can"
            ) from None
    return json.dumps({k: _encode_json(v) for k, v in params.items()})


def _encode_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(type(value).__name__)


def _fitted_attributes(estimator) -> dict[str, Any]:
    return {k: v for k, v in vars(estimator).items()
            if k.endswith("_") and not k.startswith("_")}


def save_estimator(estimator, path: str | os.PathLike, state: dict[str, Any] | None = None, *,
                   params: dict | None = None) -> Path:
    """Write ``estimator`` to ``path``: its params as JSON and its fitted ``state``.

    ``state`` defaults to the estimator's public fitted attributes; ``params`` to
    ``get_params(deep=False)``. Raises TypeError naming what cannot be stored. Under a
    torch.distributed launch only rank 0 writes (every rank holds the same fitted model); the
    path is returned on every rank.
    """
    from .training import is_main_process
    params = estimator.get_params(deep=False) if params is None else params
    state = _fitted_attributes(estimator) if state is None else state
    payload = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "params_json": _params_json(params),
        "state": _encode(dict(state), "state"),
    }
    path = Path(path)
    if is_main_process():
        torch.save(payload, path)
    return path


def load_estimator(path: str | os.PathLike, expected_class: str | None = None
                   ) -> tuple[dict, dict[str, Any]]:
    """Read a file written by :func:`save_estimator`: ``(params, state)``.

    Raises :class:`EstimatorFileError` for a file that is unreadable, not a saved estimator,
    of a newer format version, or of another class than ``expected_class``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved estimator at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe (pickled objects) files
        raise EstimatorFileError(
            f"{path} is not a readable mola_ts estimator file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(payload, dict) or payload.get("magic") != MAGIC:
        raise EstimatorFileError(
            f"{path} lacks the mola_ts magic marker {MAGIC!r}: not a saved estimator"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EstimatorFileError(
            f"{path} was written with format version {version}; this mola_ts reads up to "
            f"{FORMAT_VERSION}: upgrade mola_ts"
        )
    if expected_class is not None and payload.get("class") != expected_class:
        raise EstimatorFileError(
            f"{path} holds a {payload.get('class')!r}, not a {expected_class!r}"
        )
    return json.loads(payload["params_json"]), _decode(payload["state"])


class SaveLoadMixin:
    """``save(path)`` / ``Estimator.load(path)`` through :func:`save_estimator` (no pickle)."""

    def _params_to_save(self) -> dict:
        return self.get_params(deep=False)

    def _state_to_save(self) -> dict[str, Any]:
        return _fitted_attributes(self)

    def _restore_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted estimator to ``path`` (one file; params JSON, format version)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return save_estimator(self, path, self._state_to_save(), params=self._params_to_save())

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Load an estimator saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        params, state = load_estimator(path, cls.__name__)
        estimator = cls(**params)
        estimator._restore_state(state)
        return estimator
