"""Input validation shared by every estimator: one place that turns user data into arrays,
and the one check of numeric parameters (:func:`check_number`).

Every check raises ``TypeError`` / ``ValueError`` naming the argument, what was expected and what
was received. The user's object is never modified: the returned array is always a new copy.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils import check_scalar

__all__ = ["ValidatedSeries", "check_series", "check_columns_match", "future_index",
           "check_number"]


def check_number(value, name: str, target_type: type = numbers.Integral, *,
                 min_val: float | None = None, max_val: float | None = None,
                 include_boundaries: str = "both"):
    """A numeric parameter checked by scikit-learn's ``check_scalar``, bools and NaN refused.

    ``check_scalar`` lets a bool pass as an integer and NaN pass any bound; both are refused
    here. The estimators of the toolkit validate their numeric parameters with this function
    (``nn`` calls ``check_scalar`` itself: it imports nothing of the toolkit).

    Parameters
    ----------
    value : object
        The parameter's value.
    name : str
        The parameter's name, used in the error message.
    target_type : type or tuple of types, default numbers.Integral
        Accepted types (``numbers.Real`` for a real number; numpy scalars are accepted).
    min_val, max_val : float, optional
        Bounds; ``include_boundaries`` ("both", "left", "right", "neither") says whether
        they are allowed values.

    Returns
    -------
    int or float
        ``value`` as a Python int (integral ``target_type``) or float.

    Raises
    ------
    TypeError
        ``value`` is a bool or not of ``target_type``.
    ValueError
        ``value`` is NaN or outside the bounds.

    Examples
    --------
    >>> from mola_ts.data import check_number
    >>> check_number(3, "lookback", min_val=1)
    3
    >>> check_number(0, "lookback", min_val=1)
    Traceback (most recent call last):
    ...
    ValueError: lookback == 0, must be >= 1.
    """
    integral = target_type is numbers.Integral
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {'an integer' if integral else 'a number'}, got bool")
    check_scalar(value, name, target_type, min_val=min_val, max_val=max_val,
                 include_boundaries=include_boundaries)
    if integral:
        return int(value)
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    return float(value)


@dataclass
class ValidatedSeries:
    """A validated wide series: float64 values (a copy), its index and column names."""

    values: np.ndarray
    index: pd.Index | None
    columns: list[str]


def _as_frame_like(y, name: str) -> tuple[np.ndarray, pd.Index | None, list[str]]:
    if _is_sparse(y):
        raise TypeError(f"{name} is a sparse {type(y).__name__}; sparse input is not supported "
                        "(time series are dense): pass a dense array or DataFrame")
    if isinstance(y, pd.Series):
        y = y.to_frame(name=y.name if y.name is not None else "y")
    if isinstance(y, pd.DataFrame):
        if y.columns.has_duplicates:
            dup = [str(c) for c in y.columns[y.columns.duplicated()].unique()[:5]]
            raise ValueError(f"{name} has duplicated column names {dup}")
        dtypes = list(y.dtypes)
        bad = [(c, d) for c, d in zip(y.columns, dtypes, strict=True)
               if not pd.api.types.is_numeric_dtype(d) or pd.api.types.is_bool_dtype(d)]
        if bad:
            shown = {str(c): str(d) for c, d in bad[:5]}
            raise TypeError(f"{name}: every column must be numeric; non-numeric columns {shown}")
        complex_ = [str(c) for c, d in zip(y.columns, dtypes, strict=True)
                    if pd.api.types.is_complex_dtype(d)]
        if complex_:
            raise TypeError(f"{name} must hold real numbers; complex columns {complex_[:5]}")
        values = y.to_numpy(dtype=np.float64, copy=True)
        return values, y.index, [str(c) for c in y.columns]
    if isinstance(y, (list, tuple)):
        try:
            y = np.asarray(y)
        except ValueError:
            raise ValueError(f"{name} is a nested list whose rows differ in length; give a "
                             "rectangular array (time, variables)") from None
    if not isinstance(y, np.ndarray):
        raise TypeError(
            f"{name} must be a pandas DataFrame/Series or a numpy array, got {type(y).__name__}"
        )
    if np.iscomplexobj(y):
        raise TypeError(f"{name} must hold real numbers, got complex dtype {y.dtype}")
    if y.dtype.kind not in "iuf":  # bool, object, strings, datetime64, timedelta64, ...
        raise TypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{name} must be 2-D (time, variables), got shape {y.shape}")
    values = np.array(y, dtype=np.float64, copy=True)
    return values, None, [f"x{i}" for i in range(values.shape[1])]


def _where(bad: np.ndarray, index: pd.Index | None, columns: list[str]) -> str:
    """``"columns [..], rows [..]"`` holding the True entries of ``bad`` (five of each at most).

    Rows are index labels when ``index`` is given, else positions.
    """
    cols = [columns[j] for j in np.flatnonzero(bad.any(axis=0))]
    rows = np.flatnonzero(bad.any(axis=1))
    labels = [str(index[i]) for i in rows[:5]] if index is not None else rows[:5].tolist()
    return (f"columns {cols[:5]}{' ...' if len(cols) > 5 else ''}, "
            f"rows {labels}{' ...' if len(rows) > 5 else ''}")


def _is_sparse(y) -> bool:
    """A scipy sparse matrix or array (or a pandas frame of sparse columns)."""
    try:
        from scipy import sparse
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    if sparse.issparse(y):
        return True
    return isinstance(y, pd.DataFrame) and any(
        isinstance(d, pd.SparseDtype) for d in y.dtypes)


def check_series(y, *, name: str = "y", min_rows: int = 1, allow_nan: bool = False,
                 what_for: str = "", allow_inf: bool = False) -> ValidatedSeries:
    """Validate a wide time series (rows = time, columns = variables).

    Checks: type and dtype (real numbers), 2-D shape (1-D is one variable), at least one column,
    at least ``min_rows`` rows, no NaN (unless ``allow_nan``) and no inf (unless ``allow_inf``;
    a caller that allows them handles them itself, as the monitor stream's sensor-dropout
    policy does), and a DatetimeIndex, when given, that is strictly increasing without
    duplicates.
    """
    values, index, columns = _as_frame_like(y, name)
    if values.shape[1] == 0:
        raise ValueError(f"{name} has no columns: 0 feature(s) (shape={values.shape}) while a "
                         "minimum of 1 is required.")
    if len(values) < min_rows:
        suffix = f" ({what_for})" if what_for else ""
        raise ValueError(f"{name} has {len(values)} rows; at least {min_rows} are needed{suffix} "
                         f"(n_samples={len(values)})")
    n_nan = int(np.isnan(values).sum())
    n_inf = int(np.isinf(values).sum())
    if n_inf and not allow_inf:
        raise ValueError(f"{name} holds {n_inf} infinite values "
                         f"({_where(np.isinf(values), index, columns)})")
    if n_nan and not allow_nan:
        where = _where(np.isnan(values), index, columns)
        raise ValueError(f"{name} holds {n_nan} NaN values ({where}); fill or drop them")
    if isinstance(index, pd.DatetimeIndex):
        if index.hasnans:
            rows = np.flatnonzero(index.isna())
            raise ValueError(f"{name}'s DatetimeIndex holds {len(rows)} missing timestamps (NaT) "
                             f"at rows {rows[:5].tolist()}")
        if index.has_duplicates:
            dup = index[index.duplicated()][:3].tolist()
            raise ValueError(f"{name} has duplicated timestamps, e.g. {dup}")
        if not index.is_monotonic_increasing:
            i = int(np.flatnonzero(np.diff(index.asi8) < 0)[0])
            raise ValueError(f"{name}'s DatetimeIndex is not sorted in increasing time order: "
                             f"row {i + 1} ({index[i + 1]}) comes after {index[i]}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name} has duplicated column names")
    return ValidatedSeries(values, index, columns)


def check_columns_match(series: ValidatedSeries, fitted_columns: list[str], *, name: str = "y",
                        by_name: bool = True, owner: str = "the estimator") -> ValidatedSeries:
    """Make ``series`` use the fitted column layout.

    Same names in another order are reordered (documented handling); different names, or a
    different number of columns, raise. Arrays (no names) are matched by count only.
    """
    n_fit = len(fitted_columns)
    if series.values.shape[1] != n_fit:
        detail = ""
        if series.index is not None and by_name:
            missing = [c for c in fitted_columns if c not in series.columns][:5]
            extra = [c for c in series.columns if c not in fitted_columns][:5]
            detail = f" (missing {missing}, unknown {extra})"
        raise ValueError(
            f"{name} has {series.values.shape[1]} columns but the estimator was fitted on "
            f"{n_fit}{detail} ({name} has {series.values.shape[1]} features, but {owner} is "
            f"expecting {n_fit} features as input)"
        )
    if series.index is None or not by_name or series.columns == fitted_columns:
        return series
    if set(series.columns) != set(fitted_columns):
        missing = sorted(set(fitted_columns) - set(series.columns))[:5]
        unknown = sorted(set(series.columns) - set(fitted_columns))[:5]
        raise ValueError(
            f"{name}'s columns differ from those seen in fit: missing {missing}, unknown {unknown}"
        )
    order = [series.columns.index(c) for c in fitted_columns]
    return ValidatedSeries(series.values[:, order], series.index, list(fitted_columns))


def future_index(index: pd.Index | None, n_rows: int, horizon: int,
                 freq: str | pd.DateOffset | None = None) -> pd.Index:
    """The ``horizon`` timestamps after the end of ``index``.

    A DatetimeIndex continues with its frequency (inferred when not set; ``freq`` overrides);
    anything else continues as integer positions ``n_rows .. n_rows + horizon - 1``.
    """
    if isinstance(index, pd.DatetimeIndex):
        step = freq or index.freq
        if step is None and len(index) >= 3:
            with warnings.catch_warnings():
                # pandas 3 warns that infer_freq will return an offset, not a string;
                # to_offset below takes either
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                step = pd.infer_freq(index)
        if step is None:
            raise ValueError(
                "cannot infer the frequency of the DatetimeIndex to build future timestamps; "
                "give the series a regular index (df.asfreq(...))"
            )
        offset = pd.tseries.frequencies.to_offset(step)
        return pd.date_range(index[-1] + offset, periods=horizon, freq=offset, name=index.name)
    if isinstance(index, pd.RangeIndex) or index is None or pd.api.types.is_integer_dtype(index):
        start = int(index[-1]) + 1 if index is not None and len(index) else n_rows
        return pd.RangeIndex(start, start + horizon)
    raise TypeError(f"cannot extend an index of type {type(index).__name__} into the future")
