"""Past covariates and calendar features of the iTransformer-based forecasters, and the cutoff
a fitted forecaster forecasts from.

Covariates (sktime's ``X``, darts' past covariates) are series observed alongside ``y`` that are
not forecast: ``fit(y, X=X)`` with one row of ``X`` per row of ``y``, and ``predict(X=...)``
with ``X`` over the lookback window ending at the cutoff. In the iTransformer every variate's
window is one token, so a covariate is one more token the attention reads; the head forecasts
only the target tokens (``ITransformer(n_targets=...)``) and the loss sees only the targets.
``calendar=("hour", "weekday", "month")`` adds known calendar features (a sine and a cosine
of each cycle) computed from the time index, so they need no input at ``predict``.

This module owns the reading of ``X`` (:func:`read_covariates`), the calendar features
(:func:`calendar_features`), the window the model reads at a cutoff
(:func:`covariate_window`), and :class:`CutoffMixin`: ``update(y_new, X_new=None)``, which
moves the cutoff without refitting, with the hook ``_observe_realised`` a subclass may use to
learn from the values it had forecast (adaptive conformal intervals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..data import check_series, future_index

__all__ = ["CALENDAR_FEATURES", "check_calendar", "calendar_features", "read_covariates",
           "series_covariates", "fit_covariates", "share_layout", "covariate_window",
           "CutoffMixin"]

#: calendar cycles ``calendar=`` may name, with the period of each
CALENDAR_FEATURES = {"hour": 24, "weekday": 7, "month": 12}


def check_calendar(calendar) -> tuple[str, ...]:
    """``calendar`` (None, one name or a sequence of names) as a tuple of known names."""
    if calendar is None:
        return ()
    names = (calendar,) if isinstance(calendar, str) else tuple(calendar)
    unknown = [n for n in names if n not in CALENDAR_FEATURES]
    if unknown or not names:
        raise ValueError(f"calendar must be None or names from {sorted(CALENDAR_FEATURES)}, "
                         f"got {calendar!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"calendar names a feature twice: {calendar!r}")
    return names


def calendar_features(index, names: tuple[str, ...], what: str = "y") -> np.ndarray:
    """Sine and cosine of each named cycle at the timestamps ``index`` (n, 2 len(names))."""
    if not names:
        return np.empty((0 if index is None else len(index), 0))
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(
            f"calendar features {list(names)} are computed from timestamps: {what} needs a "
            f"DatetimeIndex (or a PeriodIndex), got {type(index).__name__}"
        )
    phases = {"hour": index.hour + index.minute / 60.0, "weekday": index.day_of_week,
              "month": index.month - 1}
    cols = []
    for name in names:
        angle = 2.0 * np.pi * np.asarray(phases[name], dtype=np.float64) / \
            CALENDAR_FEATURES[name]
        cols += [np.sin(angle), np.cos(angle)]
    return np.column_stack(cols)


def read_covariates(X, name: str, *, rows: int, index, columns=None):
    """Validate covariates ``X`` against the ``rows`` rows of ``y`` it goes with.

    ``X`` (DataFrame, Series or array) holds at least ``rows`` rows; its last ``rows`` rows
    are used. With timestamps on both sides they must be the same. ``columns`` (after fit)
    are the covariate names seen in fit. Returns ``(values, names)``.
    """
    series = check_series(X, name=name, min_rows=rows,
                          what_for=f"one row per row of y it goes with ({rows})")
    values = series.values[-rows:]
    x_index = None if series.index is None else series.index[-rows:]
    if isinstance(x_index, pd.PeriodIndex):
        x_index = x_index.to_timestamp()
    if isinstance(x_index, pd.DatetimeIndex) and isinstance(index, pd.DatetimeIndex) and \
            not x_index.equals(pd.DatetimeIndex(index[-rows:])):
        raise ValueError(
            f"{name}'s last {rows} timestamps ({x_index[0]} .. {x_index[-1]}) are not those of "
            f"the y rows it goes with ({index[-rows]} .. {index[-1]}): X must cover the same "
            "rows, ending at the cutoff"
        )
    if columns is not None:
        if values.shape[1] != len(columns):
            raise ValueError(f"{name} has {values.shape[1]} columns; the model was fitted "
                             f"with {len(columns)} covariates {list(columns)[:5]}")
        if isinstance(X, pd.DataFrame) and list(series.columns) != list(columns):
            missing = [c for c in columns if c not in series.columns]
            if missing:
                raise ValueError(f"{name} lacks the covariates {missing[:5]} seen in fit")
            order = [series.columns.index(c) for c in columns]
            values = values[:, order]
    return values, list(series.columns)


def series_covariates(model, series, X, name: str = "X") -> np.ndarray | None:
    """The covariate columns (X, then calendar) of every row of the validated ``series``."""
    n_x = len(getattr(model, "covariate_columns_", []))
    names = getattr(model, "calendar_", ())
    if not n_x and not names:
        if X is not None:
            raise ValueError(f"{type(model).__name__} was fitted without covariates; got {name}")
        return None
    parts = []
    if n_x:
        if X is None:
            raise ValueError(f"{type(model).__name__} was fitted with covariates "
                             f"{model.covariate_columns_[:5]}: give {name} for these rows")
        values, _ = read_covariates(X, name, rows=len(series.values), index=series.index,
                                    columns=model.covariate_columns_)
        parts.append(values)
    if names:
        parts.append(calendar_features(series.index, names, what=name))
    return np.hstack(parts)


def fit_covariates(model, series, X, val_series, X_val):
    """Record the covariate layout of a fit (``covariate_columns_``, ``calendar_``,
    ``n_covariates_``, ``covariate_context_``) and return the covariate columns of the training
    and validation rows (None, None without covariates)."""
    names = check_calendar(getattr(model, "calendar", None))
    model.calendar_ = names
    model.covariate_columns_ = []
    model.n_covariates_ = 0
    model.covariate_context_ = None
    if X is None and X_val is not None:
        raise ValueError("X_val was given without X: give the covariates of y as X too")
    if X is None and not names:
        return None, None
    model._check_covariates_supported()
    if X is not None:
        if len(check_series(X, name="X").values) != len(series.values):
            raise ValueError(f"X must have one row per row of y ({len(series.values)}), got "
                             f"{len(check_series(X, name='X').values)}")
        _, model.covariate_columns_ = read_covariates(X, "X", rows=len(series.values),
                                                      index=series.index)
        if val_series is not None and X_val is None:
            raise ValueError("y_val needs its covariates: give X_val with one row per row of "
                             "y_val")
    train = series_covariates(model, series, X)
    val = None if val_series is None else series_covariates(model, val_series, X_val, "X_val")
    model.n_covariates_ = train.shape[1]
    if X is not None:
        model.covariate_context_ = train[-model._context_length():, :len(model.covariate_columns_)]
    return train, val


def share_layout(source, target) -> None:
    """``target`` (a foundation fitted on arrays) takes ``source``'s columns, index, end of
    series and covariate layout, so it forecasts from the same cutoff with the same labels."""
    for name in ("columns_", "feature_names_in_", "input_format_", "period_freq_", "context_",
                 "last_index_", "n_rows_", "y_mean_", "y_scale_", "covariate_columns_",
                 "calendar_", "covariate_context_"):
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))
    target.context_ = target.context_[-target.lookback:]


def covariate_window(model, X, *, index, what: str) -> np.ndarray | None:
    """The covariate columns (X, then calendar) of the ``lookback`` rows ending at a cutoff.

    ``X`` None uses the stored ``covariate_context_`` (the covariates of the fitted series or
    of the last ``update``); ``index`` holds the window's timestamps (None: integer rows).
    Returns None for a model without covariates.
    """
    n_x = len(getattr(model, "covariate_columns_", []))
    names = getattr(model, "calendar_", ())
    if not n_x and not names:
        if X is not None:
            raise ValueError(f"{type(model).__name__} was fitted without covariates; {what} "
                             "got X (fit with X=... to use covariates)")
        return None
    ctx = model._context_length()
    parts = []
    if n_x:
        if X is None:
            raise ValueError(
                f"{type(model).__name__} was fitted with covariates "
                f"{model.covariate_columns_[:5]}: {what} needs X over the {ctx} rows of the "
                "lookback window ending at the cutoff"
            )
        values, _ = read_covariates(X, "X", rows=ctx, index=index,
                                    columns=model.covariate_columns_)
        parts.append(values)
    if names:
        parts.append(calendar_features(None if index is None else index[-ctx:], names))
    return np.hstack(parts)


class CutoffMixin:
    """``update(y_new, X_new=None)``: move a fitted forecaster's cutoff without refitting."""

    def _observe_realised(self, previous_context: np.ndarray, new_values: np.ndarray) -> None:
        """Hook called by :meth:`update` before the cutoff moves: ``previous_context`` is the
        window (lookback, C) the last forecast was made from, ``new_values`` (n, C) the values
        that came true. The default does nothing; a subclass may adapt to them (e.g. adaptive
        conformal intervals)."""

    def update(self, y_new, X_new=None):
        """Append the newly observed rows ``y_new`` (and their covariates ``X_new``) to the
        end of the fitted series: ``predict()`` then forecasts from the new cutoff. The model
        is not refitted (one with ``conformal="adaptive"`` learns from the forecasts these
        values realise, through ``_observe_realised``).

        Parameters
        ----------
        y_new : DataFrame, Series, ndarray or long frame
            Rows that follow the current cutoff (same columns as in fit; with a DatetimeIndex
            the first row must be the step after the cutoff).
        X_new : same layouts, optional
            The covariates of those rows (needed when the model was fitted with ``X``).

        Returns
        -------
        self
        """
        check_is_fitted(self, "context_")
        series, _ = self._read(y_new, "y_new", min_rows=1, fitted=True)
        index = self.last_index_
        if isinstance(index, pd.DatetimeIndex):
            if not isinstance(series.index, pd.DatetimeIndex):
                raise TypeError("y_new needs a DatetimeIndex like the fitted series")
            expected = future_index(index, self.n_rows_, 1)[0]
            if series.index[0] != expected:
                raise ValueError(f"y_new must continue the series: its first timestamp is "
                                 f"{series.index[0]}, the next one after the cutoff "
                                 f"{index[-1]} is {expected}")
            new_index = index.append(series.index)
        elif index is None:
            new_index = None
        else:  # integer positions: y_new's own, or the next ones for an array
            n_new = len(series.values)
            steps = series.index if series.index is not None else pd.RangeIndex(
                int(index[-1]) + 1, int(index[-1]) + 1 + n_new)
            new_index = pd.Index(np.concatenate([np.asarray(index), np.asarray(steps)]))
        n_x = len(getattr(self, "covariate_columns_", []))
        if n_x:
            if X_new is None:
                raise ValueError("this model was fitted with covariates: update needs X_new "
                                 "for the rows of y_new")
            x_values, _ = read_covariates(X_new, "X_new", rows=len(series.values),
                                          index=series.index, columns=self.covariate_columns_)
        elif X_new is not None:
            raise ValueError("this model was fitted without covariates; update got X_new")
        self._observe_realised(self.context_.copy(), series.values.copy())
        ctx = self._context_length()
        self.context_ = np.vstack([self.context_, series.values])[-ctx:]
        if n_x:
            self.covariate_context_ = np.vstack([self.covariate_context_, x_values])[-ctx:]
        keep = max(3, ctx)
        self.last_index_ = None if new_index is None else new_index[-keep:]
        self.n_rows_ += len(series.values)
        return self
