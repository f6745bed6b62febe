"""Helpers shared by the test files (also offered as fixtures by ``conftest.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the smallest transformer backbone the forecaster tests train (seconds per fit)
SMALL_BACKBONE = {"d_model": 8, "d_ff": 8, "n_heads": 2, "n_layers": 1}

_PATTERNS = {
    "a": lambda t: np.sin(t / 3.0),
    "b": lambda t: np.cos(t / 5.0),
    "c": lambda t: 0.01 * t,
}


def toy_frame(n: int = 160, columns: str = "abc", seed: int = 0, freq: str = "h"
              ) -> pd.DataFrame:
    """A small multivariate series: ``a`` a fast sine, ``b`` a slower cosine, ``c`` a trend,
    each with Gaussian noise of 0.1 drawn in column order; hourly from 2024-01-01."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    data = {c: _PATTERNS[c](t) + 0.1 * rng.normal(size=n) for c in columns}
    return pd.DataFrame(data, index=pd.date_range("2024-01-01", periods=n, freq=freq))
