"""Saving and loading fitted estimators without pickle.

A saved estimator is one file written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never runs code from the file. The file holds a
dict with

- ``magic``: :data:`MAGIC`, so foreign files are recognised;
- ``format_version``: the layout version (:data:`FORMAT_VERSION`); newer files are refused;
- ``class``: the estimator's class name (checked on load);
- ``payload``: the bytes (a uint8 tensor) of a second ``torch.save`` file holding
  ``params_json`` (``get_params(deep=False)`` as JSON text; tuples come back as lists) and
  ``state`` (the fitted state: tensors, numbers, strings, lists and dicts of them; numpy arrays
  and pandas indexes are stored as tensors with a small tag and come back as what they were);
- ``payload_sha256``: the sha256 of those bytes, checked before they are read, so a file
  corrupted or edited after saving is refused with a clear error. The hash guards against
  accidents (a bad disk, a partial copy, a flipped byte), not against someone who rewrites the
  hash as well: load only files you trust.

Files of format version 1 (``params_json`` and ``state`` directly in the outer dict, no hash)
are still read.

Estimators opt in with :class:`SaveLoadMixin`. By default the state is every public fitted
attribute (name ending with ``_``); an estimator holding objects that cannot be stored this way
(a torch module, say) overrides ``_state_to_save`` / ``_restore_state``, and one whose parameters
are not all JSON (an estimator given as a parameter) overrides ``_params_to_save``.
"""

from __future__ import annotations

import hashlib
import io
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
    "saved_class",
    "SaveLoadMixin",
]

MAGIC = "mola_ts.estimator"
FORMAT_VERSION = 2

_ND = "__ndarray__"
_STR_ND = "__str_ndarray__"
_TUPLE = "__tuple__"
_DTI = "__datetimeindex__"
_IDX = "__index__"


class EstimatorFileError(ValueError):
    """A file is not a readable saved estimator (foreign, truncated, corrupted or modified,
    of another class or of a newer format version)."""


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
    ``get_params(deep=False)``. Raises TypeError naming what cannot be stored. The file is
    written under a temporary name and renamed, so an interrupted save leaves no partial file.
    Under a torch.distributed launch only rank 0 writes (every rank holds the same fitted
    model); the path is returned on every rank.
    """
    from .training import is_main_process
    params = estimator.get_params(deep=False) if params is None else params
    state = _fitted_attributes(estimator) if state is None else state
    buffer = io.BytesIO()
    torch.save({"params_json": _params_json(params), "state": _encode(dict(state), "state")},
               buffer)
    inner = buffer.getvalue()
    payload = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "payload_sha256": hashlib.sha256(inner).hexdigest(),
        "payload": torch.frombuffer(bytearray(inner), dtype=torch.uint8),
    }
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a directory; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {path.parent} does not exist")
    if is_main_process():
        # written beside the target and renamed: an interrupted save never leaves a
        # half-written file under the target's name (nor destroys an older good copy)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _torch_load(source, path: Path, what: str) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, foreign or unsafe (pickled objects) files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise EstimatorFileError(
            f"{path} is not a readable mola_ts estimator file: {what} cannot be read "
            f"({type(exc).__name__}: {first[:200]}); the file is truncated, corrupted or was "
            "not written by Estimator.save"
        ) from None


def load_estimator(path: str | os.PathLike, expected_class: str | None = None
                   ) -> tuple[dict, dict[str, Any]]:
    """Read a file written by :func:`save_estimator`: ``(params, state)``.

    Raises FileNotFoundError (no such path), IsADirectoryError (a folder), and
    :class:`EstimatorFileError` for a file that is unreadable (truncated, foreign, pickled
    objects), corrupted or modified after saving (its payload sha256 differs), of a newer
    format version, or of another class than ``expected_class``.
    """
    path = Path(path)
    outer = _read_outer(path)
    version = outer.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EstimatorFileError(f"{path} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise EstimatorFileError(
            f"{path} was written with format version {version}; this mola_ts reads up to "
            f"{FORMAT_VERSION}: upgrade mola_ts"
        )
    if expected_class is not None and outer.get("class") != expected_class:
        raise EstimatorFileError(
            f"{path} holds a {outer.get('class')!r}, not a {expected_class!r}: load it with "
            f"{outer.get('class')}.load"
        )
    if version == 1:
        body = outer
    else:
        data = outer.get("payload")
        expected = outer.get("payload_sha256")
        if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or \
                not isinstance(expected, str):
            raise EstimatorFileError(f"{path} has no payload or no payload hash: not a "
                                     f"format-{version} estimator file")
        raw = data.numpy().tobytes()
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected:
            raise EstimatorFileError(
                f"{path} is corrupted or was modified after saving: the sha256 of its payload "
                f"is {actual}, the file records {expected}; it was not loaded. Save the model "
                "again or restore the file from a good copy"
            )
        body = _torch_load(io.BytesIO(raw), path, "the payload")
    if not isinstance(body, dict) or not isinstance(body.get("params_json"), str) or \
            "state" not in body:
        raise EstimatorFileError(f"{path} lacks the estimator parameters or state")
    try:
        params = json.loads(body["params_json"])
    except json.JSONDecodeError as exc:
        raise EstimatorFileError(f"{path}: the parameters are not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise EstimatorFileError(f"{path}: the parameters are not a JSON object")
    return params, _decode(body["state"])


def saved_class(path: str | os.PathLike) -> str:
    """The class name recorded in a file written by :func:`save_estimator` (to choose the
    ``load`` to call); the same errors as :func:`load_estimator` for a missing or foreign
    file. The payload is not read: load the file to check it."""
    path = Path(path)
    outer = _read_outer(path)
    if not isinstance(outer.get("class"), str):
        raise EstimatorFileError(f"{path} records no estimator class: not a saved estimator")
    return outer["class"]


def _read_outer(path: Path) -> dict:
    """The outer record of a saved estimator file, checked for its magic marker."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a saved estimator file")
    if not path.is_file():
        raise FileNotFoundError(f"no saved estimator at {path}: the file does not exist")
    outer = _torch_load(path, path, "the file")
    if not isinstance(outer, dict) or outer.get("magic") != MAGIC:
        raise EstimatorFileError(
            f"{path} lacks the mola_ts magic marker {MAGIC!r}: not a saved estimator"
        )
    return outer


class SaveLoadMixin:
    """``save(path)`` / ``Estimator.load(path)`` through :func:`save_estimator` (no pickle)."""

    def _params_to_save(self) -> dict:
        """``get_params(deep=False)``; a RandomState or Generator ``random_state`` is stored
        as the int seed the fit drew from it (``seed_``), which refits the same model."""
        params = self.get_params(deep=False)
        if isinstance(params.get("random_state"), (np.random.RandomState, np.random.Generator)) \
                and hasattr(self, "seed_"):
            params["random_state"] = int(self.seed_)
        return params

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
        try:
            estimator = cls(**params)
        except TypeError as exc:
            raise EstimatorFileError(
                f"{path}: the saved parameters do not fit {cls.__name__} ({exc})") from None
        try:
            estimator._restore_state(state)
        except Exception as exc:  # weights of another shape, missing entries, ...
            raise EstimatorFileError(
                f"{path}: the saved state does not fit {cls.__name__} "
                f"({type(exc).__name__}: {exc})") from exc
        return estimator
