"""Figures (matplotlib) built from plain arrays and DataFrames, one module per family.

The functions take data, not estimators, so any model family can use them: a forecaster's
predictions and intervals, the monitor's ``statistics(X)`` and ``contributions(X)`` frames, the
routing statistics of :func:`mola_ts.nn.collect_aux`, the ``results.csv`` of a benchmark. Each
returns a :class:`matplotlib.figure.Figure` made without pyplot's global state (safe on a
headless machine); save it with ``fig.savefig(path)``. In Jupyter, after ``%matplotlib inline``
(or any pyplot import), a figure that ends a cell is shown.

- :mod:`mola_ts.plotting.forecast`: :func:`~mola_ts.plotting.forecast.forecast_chart`,
  history, forecast, actual values and prediction intervals, one panel per variable.
- :mod:`mola_ts.plotting.monitor`: :func:`~mola_ts.plotting.monitor.control_chart`, chosen
  statistics against their limits with the fault onset and the alarms;
  :func:`~mola_ts.plotting.monitor.monitor_chart`, every level of a multi-block monitor at
  once (per-block T^2, W, SPE or block index as a grid, the global index below);
  :func:`~mola_ts.plotting.monitor.contribution_chart`, per-variable contributions as sorted
  bars.
- :mod:`mola_ts.plotting.nn`: :func:`~mola_ts.plotting.nn.routing_heatmap`, which experts the
  routers of :mod:`mola_ts.nn` use, per layer and per expert, token or segment
  (:mod:`mola_ts.nn` itself never imports plotting).
- :mod:`mola_ts.plotting.benchmark`: :func:`~mola_ts.plotting.benchmark.benchmark_chart`,
  grouped bars from a benchmark's ``results.csv``;
  :func:`~mola_ts.plotting.benchmark.reliability_chart`, nominal against observed coverage.

Every function is importable from here: ``from mola_ts.plotting import control_chart``.
"""

from .benchmark import BENCHMARK_LAYOUTS, benchmark_chart, reliability_chart
from .forecast import forecast_chart
from .monitor import LEVEL_TITLES, contribution_chart, control_chart, monitor_chart
from .nn import routing_heatmap

__all__ = [
    "forecast_chart",
    "control_chart",
    "monitor_chart",
    "contribution_chart",
    "routing_heatmap",
    "benchmark_chart",
    "reliability_chart",
    "BENCHMARK_LAYOUTS",
    "LEVEL_TITLES",
]
