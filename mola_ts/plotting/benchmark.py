"""Benchmark charts: grouped bars from the ``results.csv`` of the benchmark commands."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ._axes import MAX_PANELS

__all__ = ["benchmark_chart", "BENCHMARK_LAYOUTS"]

#: How :func:`benchmark_chart` draws the ``results.csv`` of each benchmark command, recognised
#: by its columns: the metric, the x groups, the bar colours (hue), the panels and rows dropped.
BENCHMARK_LAYOUTS: dict[str, dict[str, Any]] = {
    # mola-ts bench forecast: MSE per horizon and model, one panel per dataset
    "forecast": {"columns": {"dataset", "horizon", "model", "mse"}, "metric": "mse",
                 "x": "horizon", "hue": "model", "panel": "dataset",
                 "drop": {"model": ["mola-foundation"]}},
    # mola-ts demo tep: fault detection rate per fault and model
    "tep": {"columns": {"fault", "model", "fdr"}, "metric": "fdr", "x": "fault",
            "hue": "model", "panel": None, "drop": {"fault": [0]}},
    # mola-ts bench lora: forward+backward time per router and implementation
    "lora": {"columns": {"impl", "router", "tokens", "fwd_bwd_ms"}, "metric": "fwd_bwd_ms",
             "x": "router", "hue": "impl", "panel": "tokens", "drop": {}},
    # mola-ts bench kernels (GPU): forward+backward time per size and method
    "kernels": {"columns": {"plan", "d", "tokens", "method", "fwd_bwd_ms"},
                "metric": "fwd_bwd_ms", "x": "tokens", "hue": "method", "panel": ["plan", "d"],
                "drop": {}},
    # mola-ts bench uncertainty: CRPS per method (and dataset when present)
    "uncertainty": {"columns": {"method", "crps"}, "metric": "crps", "x": "dataset",
                    "hue": "method", "panel": None, "drop": {}},
}


def _layout_for(frame: pd.DataFrame) -> dict[str, Any]:
    for layout in BENCHMARK_LAYOUTS.values():
        if layout["columns"] <= set(frame.columns):
            return layout
    return {}


def benchmark_chart(results: pd.DataFrame | str | os.PathLike, metric: str | None = None, *,
                    x: str | None = None, hue: str | None = None,
                    panel: str | Sequence[str] | None = None, logy: bool = False,
                    title: str | None = None, figsize: tuple[float, float] | None = None
                    ) -> Figure:
    """Grouped bar chart of a benchmark's results (one bar per row).

    The ``results.csv`` of ``mola-ts bench forecast``, ``mola-ts demo tep``, ``mola-ts bench
    lora``, ``mola-ts bench kernels`` (GPU timings) and ``mola-ts bench uncertainty`` are
    recognised by their columns (:data:`BENCHMARK_LAYOUTS`), so ``benchmark_chart(path)`` is
    enough; any argument given overrides the recognised layout.

    Parameters
    ----------
    results : DataFrame or path of a CSV file
        One row per measurement.
    metric : str, optional
        Column drawn as bar heights.
    x : str, optional
        Column whose values form the groups along the x axis (None: one group).
    hue : str, optional
        Column whose values get one bar colour each (None: one colour).
    panel : str or sequence of str, optional
        Column(s) splitting the rows into panels (None: one panel).
    logy : bool
        Logarithmic y axis (timings spanning decades).
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default from the number of groups and panels.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        When two rows share the same panel, x and hue values (add the column that tells them
        apart as ``panel``, or filter the rows first), or a named column is absent.
    """
    frame = pd.read_csv(results) if isinstance(results, (str, os.PathLike)) else results
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"results must be a DataFrame or a CSV path, got "
                        f"{type(results).__name__}")
    layout = _layout_for(frame)
    explicit = metric is not None
    metric = metric if explicit else layout.get("metric")
    if metric is None:
        raise ValueError("the results' columns match no known benchmark layout "
                         f"({sorted(BENCHMARK_LAYOUTS)}); give metric=, x= and hue=")
    if not explicit or layout.get("metric") == metric:
        x = x if x is not None else layout.get("x")
        hue = hue if hue is not None else layout.get("hue")
        panel = panel if panel is not None else layout.get("panel")
        for column, dropped in layout.get("drop", {}).items():
            if column in frame.columns:
                frame = frame[~frame[column].isin(dropped)]
    if x is not None and x not in frame.columns:
        x = None if layout.get("x") == x else x  # an optional layout column (uncertainty)
    panels = [] if panel is None else ([panel] if isinstance(panel, str) else list(panel))
    for column in [metric, x, hue, *panels]:
        if column is not None and column not in frame.columns:
            raise ValueError(f"results has no column {column!r}; it has {list(frame.columns)}")
    frame = frame[np.isfinite(pd.to_numeric(frame[metric], errors="coerce"))]
    if frame.empty:
        raise ValueError(f"results has no finite {metric!r} values to draw")
    keys = [c for c in [*panels, x, hue] if c is not None]
    if keys and frame.duplicated(keys).any():
        raise ValueError(f"several rows share the same {keys}; add the column that tells them "
                         "apart as panel=, or filter the rows first")
    hues = list(dict.fromkeys(frame[hue])) if hue is not None else [None]
    colours = colormaps["tab10" if len(hues) <= 10 else "tab20"]
    groups = list(frame.groupby(panels, sort=False)) if panels else [((), frame)]
    n = len(groups)
    if n > MAX_PANELS:
        raise ValueError(f"{n} panels: filter the rows or choose another panel column")
    n_x = max((sub[x].nunique() if x is not None else 1) for _, sub in groups)
    width_each = min(max(0.25 * n_x * len(hues) + 1.5, 4.0), 14.0)
    n_cols = max(1, min(n, 3, int(16.0 // width_each)))  # at most about 16 inches wide
    n_rows = -(-n // n_cols)
    fig = Figure(figsize=figsize or (width_each * n_cols + 1.5, 2.8 * n_rows + 0.4),
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (key, sub) in zip(axes, groups, strict=False):
        xs = list(dict.fromkeys(sub[x])) if x is not None else [None]
        if x is not None and all(isinstance(v, (int, float, np.number)) for v in xs):
            xs = sorted(xs)
        width = 0.8 / len(hues)
        for j, h in enumerate(hues):
            rows = sub if h is None else sub[sub[hue] == h]
            heights = []
            for value in xs:
                match = rows if value is None else rows[rows[x] == value]
                heights.append(float(match[metric].iloc[0]) if len(match) else np.nan)
            positions = np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width
            ax.bar(positions, heights, width * 0.95, color=colours(j % colours.N),
                   label=None if h is None else str(h))
        ticks = ["" if v is None else str(v) for v in xs]
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(ticks, fontsize=7,
                           rotation=30 if sum(map(len, ticks)) > 60 else 0)
        if x is not None:
            ax.set_xlabel(x, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        if panels:
            parts = key if isinstance(key, tuple) else (key,)
            ax.set_title(", ".join(f"{c} = {v}" for c, v in zip(panels, parts, strict=True)),
                         fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    if hue is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title=hue,
                   title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def reliability_chart(results: pd.DataFrame, levels: Sequence[str]) -> Figure:
    """Nominal against observed coverage, one panel per dataset and a line per method.

    ``results`` holds ``coverageP`` columns for every P in ``levels`` (e.g. "50", "90") and
    the columns dataset, method and (optionally) diversity, as ``mola-ts bench uncertainty``
    writes them; the diagonal is perfect calibration.
    """
    names = list(dict.fromkeys(results["dataset"]))
    fig = Figure(figsize=(4.6 * len(names), 4.2))
    nominal = np.array([float(p) / 100 for p in levels])
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        part = results[results["dataset"] == name]
        ax.plot([0.4, 1.0], [0.4, 1.0], color="grey", lw=1, ls="--", label="nominal")
        for _, row in part.iterrows():
            label = row["method"] if "diversity" not in row else \
                f"{row['method']} ({row['diversity']})"
            chosen = row.get("conformal_chosen")
            if row["method"].endswith("+auto") and isinstance(chosen, str):
                # drawn over the row it equals: dashed and hollow so that one stays visible
                label += f" = {chosen}"
                style = {"ls": "--", "marker": "s", "mfc": "none", "ms": 9}
            else:
                style = {"marker": "o"}
            ax.plot(nominal, [row[f"coverage{p}"] for p in levels], lw=1.2, label=label,
                    **style)
        ax.set_title(name)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("observed coverage (test)")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
