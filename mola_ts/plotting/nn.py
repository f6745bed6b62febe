"""The routing heatmap of the LoRA-MoE layers of :mod:`mola_ts.nn`.

:mod:`mola_ts.nn` does not import this module (it knows nothing of the rest of the toolkit):
draw its routing statistics with ``routing_heatmap(collect_aux(model))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._axes import MAX_PANELS, _to_numpy

__all__ = ["routing_heatmap"]

_STAT_LABELS = {"load": "share of tokens routed to the expert",
                "mean_gate": "mean gate of the expert", "active": "active experts"}


def _layer_matrix(layers: Mapping[str, Mapping[str, Any]], statistic: str, max_tokens: int
                  ) -> tuple[np.ndarray, list[str], list[str], str]:
    """Rows = layers; columns = experts (load, mean_gate) or tokens (active)."""
    rows, names = [], []
    for name, stats in layers.items():
        if statistic not in stats:
            raise ValueError(f"layer {name!r} has no statistic {statistic!r}; it has "
                             f"{sorted(stats)}")
        values = _to_numpy(stats[statistic]).reshape(-1)
        rows.append(values[:max_tokens] if statistic == "active" else values)
        names.append(name)
    width = max(len(r) for r in rows)
    matrix = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        matrix[i, :len(r)] = r
    xlabel = "token" if statistic == "active" else "expert"
    return matrix, names, [str(j) for j in range(width)], xlabel


def _matrix_panel(name: str, data: Any) -> tuple[np.ndarray, list[str], list[str], str, str]:
    if isinstance(data, pd.DataFrame):
        return (data.to_numpy(dtype=float), [str(i) for i in data.index],
                [str(c) for c in data.columns], str(data.columns.name or ""),
                str(data.index.name or ""))
    matrix = _to_numpy(data)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {matrix.shape}")
    return (matrix, [str(i) for i in range(matrix.shape[0])],
            [str(j) for j in range(matrix.shape[1])], "", "")


def routing_heatmap(routing: Any, *, statistic: str = "load", max_tokens: int = 256,
                    label: str | None = None, xlabel: str | None = None,
                    ylabel: str | None = None, annotate: bool | None = None,
                    cmap: str = "viridis", title: str | None = None,
                    figsize: tuple[float, float] | None = None) -> Figure:
    """Heatmap of the routing: which experts are used, per layer and per expert/token/segment.

    Parameters
    ----------
    routing : AuxReport, mapping, DataFrame, ndarray or tensor
        - the report of :func:`mola_ts.nn.collect_aux` (or its ``layers`` mapping, layer name
          -> statistics): one heatmap, a row per layer; the columns are the experts for
          ``statistic="load"`` or ``"mean_gate"`` and the tokens for ``"active"``. Layers with
          fewer experts than others (layer-wise allocation) leave blank cells;
        - a 2-D matrix (array, tensor or DataFrame, whose index and columns label the axes):
          one heatmap, e.g. gates of segments x experts;
        - a mapping name -> 2-D matrix: one heatmap per entry on a shared colour scale, e.g.
          the per-segment gates of every adapted layer.
    statistic : {"load", "mean_gate", "active"}
        For layer statistics: share of tokens with a non-zero gate per expert, mean gate per
        expert, or the number of active experts per token.
    max_tokens : int
        Tokens shown for ``statistic="active"`` (the first ones).
    label : str, optional
        Colour-bar label (default: what the statistic is; "gate" for matrices).
    xlabel, ylabel : str, optional
        Axis labels (defaults from the input).
    annotate : bool, optional
        Write the value in every cell (default: when the heatmap has at most 160 cells).
    cmap : str
        Matplotlib colour map.
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default from the matrix sizes.

    Returns
    -------
    Figure

    Examples
    --------
    >>> import numpy as np
    >>> gates = np.array([[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]])
    >>> fig = routing_heatmap(gates, xlabel="expert", ylabel="segment")
    >>> len(fig.axes)  # the heatmap and its colour bar
    2
    """
    if statistic not in _STAT_LABELS:
        raise ValueError(f"statistic must be one of {sorted(_STAT_LABELS)}, got {statistic!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
            or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    layers = getattr(routing, "layers", None)  # an AuxReport
    if isinstance(layers, Mapping) and hasattr(routing, "loss"):
        routing = layers
    # panels: (title, matrix, row labels, column labels, xlabel, ylabel)
    panels: list[tuple[str, np.ndarray, list[str], list[str], str, str]] = []
    default_label = "gate"
    if isinstance(routing, Mapping):
        if not routing:
            raise ValueError("routing is empty")
        values = list(routing.values())
        if all(isinstance(v, Mapping) for v in values):
            matrix, rows, cols, xl = _layer_matrix(routing, statistic, int(max_tokens))
            panels.append(("", matrix, rows, cols, xl, "layer"))
            default_label = _STAT_LABELS[statistic]
        elif any(isinstance(v, Mapping) for v in values):
            raise TypeError("routing mixes layer statistics and matrices")
        else:
            for name, data in routing.items():
                matrix, rows, cols, xl, yl = _matrix_panel(f"routing[{name!r}]", data)
                panels.append((str(name), matrix, rows, cols, xl, yl))
    elif isinstance(routing, (pd.DataFrame, list, tuple)) or hasattr(routing, "__array__") \
            or hasattr(routing, "detach"):
        matrix, rows, cols, xl, yl = _matrix_panel("routing", routing)
        panels.append(("", matrix, rows, cols, xl, yl))
    else:
        raise TypeError("routing must be an AuxReport, a mapping of layer statistics or of "
                        f"matrices, or a 2-D matrix; got {type(routing).__name__}")
    if len(panels) > MAX_PANELS:
        raise ValueError(f"{len(panels)} heatmaps: pass at most {MAX_PANELS}")
    finite = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
    if finite.size == 0:
        raise ValueError("routing holds no finite values to draw")
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    n = len(panels)
    n_cols = 2 if n == 4 else min(n, 3)
    n_rows_grid = -(-n // n_cols)
    biggest_rows = max(p[1].shape[0] for p in panels)
    biggest_cols = max(p[1].shape[1] for p in panels)
    cell_w = 0.45 if biggest_cols <= 16 else max(6.0 / biggest_cols, 0.03)
    panel_w = min(max(cell_w * biggest_cols + 1.8, 3.2), 12.0)
    panel_h = min(max(0.32 * biggest_rows + 1.0, 1.8), 8.0)
    fig = Figure(figsize=figsize or (panel_w * n_cols + 1.2, panel_h * n_rows_grid + 0.5),
                 layout="constrained")
    axes = fig.subplots(n_rows_grid, n_cols, squeeze=False).ravel()
    palette = colormaps[cmap]
    image = None
    for ax, (name, matrix, rows, cols, xl, yl) in zip(axes, panels, strict=False):
        masked = np.ma.masked_invalid(matrix)
        image = ax.imshow(masked, aspect="auto", cmap=palette, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        if len(cols) <= 32:
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels(cols, fontsize=7)
        else:
            ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(xlabel if xlabel is not None else xl, fontsize=8)
        ax.set_ylabel(ylabel if ylabel is not None else yl, fontsize=8)
        if name:
            ax.set_title(name, fontsize=9)
        show = annotate if annotate is not None else matrix.size <= 160
        if show:
            integral = np.all(np.isnan(matrix) | (matrix == np.round(matrix)))
            for (i, j), value in np.ndenumerate(matrix):
                if not np.isfinite(value):
                    continue
                shade = (value - vmin) / (vmax - vmin)
                ax.text(j, i, f"{value:.0f}" if integral else f"{value:.2f}", ha="center",
                        va="center", fontsize=7, color="white" if shade < 0.6 else "black")
    for ax in axes[n:]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=list(axes[:n]), shrink=0.9)
    if np.all(finite == np.round(finite)):  # counts (active experts): integer ticks
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    bar.set_label(label if label is not None else default_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
