import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mola_ts.data import to_long  # noqa: E402
from mola_ts.nn import LoRAMoEConfig, collect_aux, find_targets, inject, mola_plan  # noqa: E402
from mola_ts.nn.transformer import TransformerEncoder  # noqa: E402
from mola_ts.plotting import (  # noqa: E402
    benchmark_chart,
    contribution_chart,
    control_chart,
    forecast_chart,
    monitor_chart,
    reliability_chart,
    routing_heatmap,
)


def assert_png(fig, path):
    """The figure saves to a readable, non-blank PNG image."""
    assert isinstance(fig, Figure)
    fig.savefig(path)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # not one flat colour


def _stats(n=50):
    index = pd.date_range("2024-01-01", periods=n, freq="3min")
    t2 = np.r_[np.ones(30), np.full(n - 30, 30.0)]
    return pd.DataFrame({"T2": t2, "T2_limit": 10.0, "W": t2 * 2, "W_limit": 25.0,
                         "alarm": (t2 > 10).astype(int)}, index=index)


def test_control_chart_draws_one_panel_per_level_with_limit_and_onset(tmp_path):
    fig = control_chart(_stats(), onset=30, title="demo")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    top = fig.axes[0]
    labels = [line.get_label() for line in top.lines]
    assert labels[:2] == ["T2", "limit"] and "fault onset" in labels
    np.testing.assert_allclose(top.lines[1].get_ydata(), 10.0)
    assert "alarm" in [line.get_label() for line in fig.axes[-1].lines]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "statistic" and legend[-1] == "alarm"
    assert_png(fig, tmp_path / "chart.png")
    assert len(control_chart(_stats(), [("W", "W_limit")], logy=False).axes) == 1


def test_control_chart_errors():
    with pytest.raises(ValueError, match="no column"):
        control_chart(_stats(), [("SPE", "SPE_limit")])
    with pytest.raises(ValueError, match="onset"):
        control_chart(_stats(), onset=99)
    with pytest.raises(TypeError):
        control_chart(np.zeros((3, 2)))


def test_contribution_chart_sorts_and_limits_bars(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 3.0], "b": [10.0, 10.0], "c": [0.0, np.nan]})
    fig = contribution_chart(frame, top=2)
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [10.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a"]
    assert_png(fig, tmp_path / "contributions.png")
    with pytest.raises(ValueError, match="no finite"):
        contribution_chart(pd.Series([np.nan], index=["a"]))


# ------------------------------------------------------------------------------ forecast


def _series(n=200, columns=("a", "b")):
    index = pd.date_range("2024-01-01", periods=n, freq="h")
    t = np.arange(n)
    return pd.DataFrame({c: np.sin(t / (5.0 + i)) + i for i, c in enumerate(columns)},
                        index=index)


def _sktime_intervals(forecast, coverages=(0.8, 0.95), half_width=(0.2, 0.5)):
    columns = pd.MultiIndex.from_tuples([(c, cov, side) for c in forecast.columns
                                         for cov in coverages for side in ("lower", "upper")])
    frame = pd.DataFrame(index=forecast.index, columns=columns, dtype=float)
    for c in forecast.columns:
        for cov, half in zip(coverages, half_width, strict=True):
            frame[(c, cov, "lower")] = forecast[c] - half
            frame[(c, cov, "upper")] = forecast[c] + half
    return frame


def _fill_bounds(collection):
    """(lower, upper) y values of a fill_between polygon."""
    ys = collection.get_paths()[0].vertices[:, 1]
    return ys.min(), ys.max()


def test_forecast_chart_draws_history_truth_forecast_and_sktime_intervals(tmp_path):
    y = _series()
    history, future = y.iloc[:150], y.iloc[150:174]
    forecast = future * 0.9
    fig = forecast_chart(history, forecast, truth=future,
                         intervals=_sktime_intervals(forecast), history_length=48, title="t")
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    lines = {line.get_label(): line for line in ax.lines}
    assert {"history", "actual", "forecast"} <= set(lines)
    assert len(lines["history"].get_xdata()) == 48  # only the last rows of history
    np.testing.assert_allclose(lines["forecast"].get_ydata(), forecast["b"].to_numpy())
    fills = ax.collections
    assert [f.get_label() for f in fills] == ["95% interval", "80% interval"]  # widest first
    low, high = _fill_bounds(fills[0])
    assert low == pytest.approx((forecast["b"] - 0.5).min())
    assert high == pytest.approx((forecast["b"] + 0.5).max())
    assert fills[0].get_alpha() < fills[1].get_alpha()  # the wider interval is lighter
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["history", "actual"] and "forecast" in legend
    assert_png(fig, tmp_path / "forecast.png")


def test_forecast_chart_arrays_get_future_timestamps_and_interval_mapping():
    history = _series(100)
    forecast = np.ones((12, 2))
    fig = forecast_chart(history, forecast, intervals={0.9: (forecast - 1, forecast + 1)},
                         columns="b")
    assert len(fig.axes) == 1
    line = next(ln for ln in fig.axes[0].lines if ln.get_label() == "forecast")
    first = pd.Timestamp(matplotlib.dates.num2date(line.get_xdata(orig=False)[0])).tz_localize(
        None)
    assert first == history.index[-1] + pd.Timedelta(hours=1)
    assert fig.axes[0].get_ylabel() == "b"
    # plain arrays throughout: positions continue after the history
    fig = forecast_chart(np.arange(30.0), np.arange(30.0, 40.0), truth=np.arange(30.0, 40.0))
    line = next(ln for ln in fig.axes[0].lines if ln.get_label() == "forecast")
    assert list(line.get_xdata()) == list(range(30, 40))
    # one drawn variable: interval arrays of that variable alone
    fig = forecast_chart(history, forecast, columns=[0], intervals={0.5: (np.zeros(12),
                                                                         np.ones(12) * 2)})
    assert _fill_bounds(fig.axes[0].collections[0]) == (0.0, 2.0)


def test_forecast_chart_accepts_long_frames():
    y = _series(80)
    fig = forecast_chart(to_long(y.iloc[:60]), to_long(y.iloc[60:]), truth=to_long(y.iloc[60:]))
    assert [ax.get_ylabel() for ax in fig.axes] == ["a", "b"]


def test_forecast_chart_errors():
    y = _series(60)
    forecast = y.iloc[40:]
    with pytest.raises(ValueError, match="no column 'zz'"):
        forecast_chart(y, forecast, columns=["zz"])
    with pytest.raises(ValueError, match="lower bound exceeds"):
        forecast_chart(y, forecast, intervals={0.9: (forecast + 1, forecast - 1)})
    with pytest.raises(ValueError, match="three column levels"):
        forecast_chart(y, forecast, intervals=forecast)
    with pytest.raises(ValueError, match="at most 12"):
        forecast_chart(np.zeros((10, 13)), np.zeros((3, 13)))
    with pytest.raises(ValueError, match="history has no column"):
        forecast_chart(y[["a"]], forecast)
    with pytest.raises(ValueError, match="history_length"):
        forecast_chart(y, forecast, history_length=0)
    with pytest.raises(TypeError, match="history must be"):
        forecast_chart("y", forecast)


# ------------------------------------------------------------------------------ monitoring


def _monitor_stats(n=80, blocks=("unit_a", "unit_b")):
    rng = np.random.default_rng(0)
    columns = {}
    for b in blocks:
        for level in ("T2", "W", "SPE", "index"):
            values = rng.uniform(0.5, 1.5, n)
            values[40:] *= 20
            columns[f"{b}.{level}"] = values
            columns[f"{b}.{level}_limit"] = np.full(n, 5.0)
        columns[f"{b}.weight"] = np.ones(n)
    columns["PFI"] = np.r_[np.full(40, 0.001), np.full(n - 40, 0.9)]
    columns["PFI_limit"] = np.full(n, 0.01)
    columns["alarm"] = (columns["PFI"] > 0.01).astype(int)
    return pd.DataFrame(columns, index=pd.date_range("2024-01-01", periods=n, freq="3min"))


def test_monitor_chart_draws_every_level_of_every_block_and_the_global_index(tmp_path):
    stats = _monitor_stats()
    fig = monitor_chart(stats, onset=40, title="levels")
    assert len(fig.axes) == 2 * 3 + 1  # blocks x (T2, W, index) + PFI
    assert [ax.get_title() for ax in fig.axes[:3]] == ["Hotelling T²", "quantile CUSUM W",
                                                       "block index $P_b$"]
    assert [fig.axes[i].get_ylabel() for i in (0, 3, 6)] == ["unit_a", "unit_b", "PFI"]
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.lines]
        assert "limit" in labels and "fault onset" in labels
    bottom = {line.get_label(): line for line in fig.axes[-1].lines}
    np.testing.assert_allclose(bottom["limit"].get_ydata(), 0.01)
    assert len(bottom["alarm"].get_xdata()) == 40
    assert_png(fig, tmp_path / "monitor.png")
    fig = monitor_chart(stats, levels="SPE", blocks=["unit_b"], global_column=None)
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "unit_b"


def test_monitor_chart_errors():
    stats = _monitor_stats()
    with pytest.raises(ValueError, match="no '<block>.<level>' columns"):
        monitor_chart(stats, levels=["Q"])
    with pytest.raises(ValueError, match="no column"):
        monitor_chart(stats.drop(columns="unit_b.W_limit"))
    with pytest.raises(ValueError, match="onset"):
        monitor_chart(stats, onset=500)


def _overlapping_labels(fig):
    """Pairs of drawn texts (tick labels inside the view, axis labels, titles) that overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = []
    for k, ax in enumerate(fig.axes):
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            pad = 1e-9 * (high - low)
            for locs, labels in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                                 (axis.get_minorticklocs(), axis.get_minorticklabels())):
                texts += [(k, t) for loc, t in zip(locs, labels, strict=False)
                          if low - pad <= loc <= high + pad]
            texts.append((k, axis.label))
        texts.append((k, ax.title))
    boxes = [(k, t.get_text(), t.get_window_extent(renderer)) for k, t in texts
             if t.get_visible() and t.get_text()]
    return [(a[:2], b[:2]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[2].overlaps(b[2])]


def test_monitor_chart_tick_labels_do_not_overlap(tmp_path):
    stats = _monitor_stats(n=960)
    rng = np.random.default_rng(1)
    for b in ("unit_a", "unit_b"):  # a statistic within a fifth of a decade: no crowded labels
        stats[f"{b}.W"] = rng.uniform(1.1, 1.3, len(stats))
        stats[f"{b}.W_limit"] = 1.2
        stats[f"{b}.index"] = np.r_[rng.uniform(1e-9, 1e-2, 160), rng.uniform(0.5, 1, 800)]
    for kwargs in ({}, {"levels": ["T2", "W", "SPE", "index"], "global_column": None},
                   {"time_axis": "hours"}, {"time_axis": "samples", "figsize": (7, 5)}):
        fig = monitor_chart(stats, onset=160, **kwargs)
        assert _overlapping_labels(fig) == [], kwargs
    # the visual check: tmp_path/monitor_ticks.png (look at it when changing the layout)
    assert_png(fig, tmp_path / "monitor_ticks.png")


def test_control_chart_draws_inf_and_huge_values_at_the_top_of_the_axis(tmp_path):
    stats = _stats()
    stats["T2"] = np.r_[np.ones(30), np.full(20, np.inf)]  # an overflowing statistic
    stats["W"] = np.r_[np.full(30, 3.0), np.full(20, 1e300)]
    for logy in (True, False):
        fig = control_chart(stats, onset=30, logy=logy)
        for ax, value_col in zip(fig.axes, ("T2", "W"), strict=True):
            lines = {line.get_label(): line for line in ax.lines}
            drawn = np.asarray(lines[value_col].get_ydata(), dtype=float)
            assert np.isfinite(drawn).all() and len(drawn) == 50  # every point, none blank
            assert np.isfinite(ax.get_ylim()).all()
            top = drawn[30:]
            assert (top == top[0]).all() and top[0] > drawn[:30].max()
            assert top[0] >= ax.get_ylim()[0] and top[0] <= ax.get_ylim()[1]
            marked = [line for label, line in lines.items() if label.startswith("off scale")]
            assert len(marked) == 1 and len(marked[0].get_xdata()) == 20
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any(t.startswith("off scale") for t in legend) and legend[-1] == "alarm"
        assert_png(fig, tmp_path / f"inf_{logy}.png")
    finite = control_chart(_stats())  # nothing off scale: no marker, no legend entry
    assert not any(t.get_text().startswith("off scale") for t in finite.legends[0].get_texts())


def test_monitor_chart_draws_an_infinite_global_index():
    stats = _monitor_stats()
    stats.loc[stats.index[45:], "PFI"] = np.inf
    stats.loc[stats.index[50:], "unit_a.T2"] = np.inf
    fig = monitor_chart(stats, onset=40)
    for ax in (fig.axes[0], fig.axes[-1]):
        drawn = np.asarray(ax.lines[0].get_ydata(), dtype=float)
        assert np.isfinite(drawn).all() and np.isfinite(ax.get_ylim()).all()


def test_charts_offer_an_x_axis_in_samples_or_hours():
    stats = _stats(n=200)  # every 3 minutes, like the TEP loader's invented calendar
    fig = control_chart(stats, onset=160, time_axis="hours")
    ax = fig.axes[-1]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(200) * 0.05)
    onset_line = next(line for line in fig.axes[0].lines if line.get_label() == "fault onset")
    np.testing.assert_allclose(onset_line.get_xdata(), 8.0)  # sample 160 = 8 h
    assert ax.get_xlabel() == "hours from the start"
    fig = control_chart(stats, onset=160, time_axis="samples")
    np.testing.assert_allclose(fig.axes[-1].lines[0].get_xdata(), np.arange(200))
    assert fig.axes[-1].get_xlabel() == "sample"
    assert control_chart(stats).axes[-1].get_xlabel() == ""  # "index": dates as before
    elapsed = stats.set_axis(pd.to_timedelta(np.arange(200) * 3, unit="min"))
    np.testing.assert_allclose(
        control_chart(elapsed, time_axis="hours").axes[0].lines[0].get_xdata()[-1], 9.95)
    grid = monitor_chart(_monitor_stats(), onset=40, time_axis="hours")
    np.testing.assert_allclose(grid.axes[0].lines[0].get_xdata()[:3], [0.0, 0.05, 0.1])
    assert grid.axes[-1].get_xlabel() == "hours from the start"
    grid = monitor_chart(_monitor_stats(), time_axis="samples", global_column=None)
    assert [ax.get_xlabel() for ax in grid.axes[-3:]] == ["sample"] * 3
    with pytest.raises(ValueError, match="time_axis must be one of"):
        control_chart(stats, time_axis="minutes")
    with pytest.raises(ValueError, match="time_axis='hours' needs a DatetimeIndex"):
        monitor_chart(_monitor_stats().reset_index(drop=True), time_axis="hours")


def test_contribution_chart_shows_descriptions_and_tep_has_them_all(tmp_path):
    from mola_ts.data import TEP_COLUMNS, TEP_DESCRIPTIONS

    assert list(TEP_DESCRIPTIONS) == TEP_COLUMNS and len(TEP_DESCRIPTIONS) == 52
    assert all(isinstance(v, str) and v for v in TEP_DESCRIPTIONS.values())
    assert TEP_DESCRIPTIONS["XMEAS(7)"] == "Reactor pressure"
    assert TEP_DESCRIPTIONS["XMEAS(1)"] == "A feed (stream 1)"
    shares = pd.Series({"XMEAS(9)": 3.0, "custom": 2.0, "XMV(10)": 1.0})
    fig = contribution_chart(shares, descriptions=TEP_DESCRIPTIONS)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["XMEAS(9): Reactor temperature", "custom",
                      "XMV(10): Reactor cooling water flow"]
    assert_png(fig, tmp_path / "described.png")
    with pytest.raises(TypeError, match="descriptions must be a mapping"):
        contribution_chart(shares, descriptions=["a", "b"])


# ------------------------------------------------------------------------------ routing


def _injected_encoder(config_or_plan, targets=r"layers\.\d+\.ffn\.fc[12]"):
    torch.manual_seed(0)
    encoder = TransformerEncoder(n_layers=4, d_model=16, n_heads=2, d_ff=16, dropout=0.0)
    inject(encoder, targets if not hasattr(config_or_plan, "layers") else None, config_or_plan,
           random_state=0)
    with torch.no_grad():
        encoder(torch.randn(3, 5, 16))
    return encoder


def test_routing_heatmap_of_layer_loads_pads_smaller_layers(tmp_path):
    names = find_targets(TransformerEncoder(4, 16, 2, 16), r"layers\.\d+\.ffn\.fc[12]")
    plan = mola_plan(names, "2468", rank=2, config=LoRAMoEConfig.preset("mola"))
    report = collect_aux(_injected_encoder(plan))
    fig = routing_heatmap(report, title="loads")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (8, 8)
    first = report.layers["layers.0.ffn.fc1"]["load"].numpy()
    np.testing.assert_allclose(image[0, :2], first)
    assert image.mask[0, 2:].all() and not image.mask[-1].any()  # 2 experts, then 8
    np.testing.assert_allclose(image.sum(axis=1), 2.0, rtol=1e-6)  # top-2: two experts a token
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "layers.0.ffn.fc1"
    assert fig.axes[1].get_ylabel() == "share of tokens routed to the expert"
    assert_png(fig, tmp_path / "routing.png")


def test_routing_heatmap_active_experts_per_token():
    encoder = _injected_encoder(LoRAMoEConfig.preset("ldmole", n_experts=4, rank=2))
    report = collect_aux(encoder)
    fig = routing_heatmap(report.layers, statistic="active", max_tokens=10)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (8, 10)
    np.testing.assert_array_equal(image[3], report.layers["layers.1.ffn.fc2"]["active"][:10])
    assert fig.axes[0].get_xlabel() == "token"


def test_routing_heatmap_of_matrices(tmp_path):
    gates = {f"layer {i}": torch.softmax(torch.randn(3, 4), dim=-1) for i in range(4)}
    fig = routing_heatmap(gates, xlabel="expert", ylabel="segment", label="segment gate")
    assert len(fig.axes) == 5  # four heatmaps and one shared colour bar
    assert [ax.get_title() for ax in fig.axes[:4]] == list(gates)
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), gates["layer 2"].numpy())
    assert len(fig.axes[0].texts) == 12  # small matrices are annotated
    assert_png(fig, tmp_path / "gates.png")
    frame = pd.DataFrame([[0.5, 0.5]], index=pd.Index(["seg 0"], name="segment"),
                         columns=pd.Index(["e0", "e1"], name="expert"))
    fig = routing_heatmap(frame)
    assert fig.axes[0].get_xlabel() == "expert" and fig.axes[0].get_ylabel() == "segment"


def test_routing_heatmap_errors():
    with pytest.raises(ValueError, match="statistic"):
        routing_heatmap(np.ones((2, 2)), statistic="usage")
    with pytest.raises(ValueError, match="2-D"):
        routing_heatmap(np.ones(3))
    with pytest.raises(ValueError, match="no statistic 'active'"):
        routing_heatmap({"layer": {"load": torch.ones(2)}}, statistic="active")
    with pytest.raises(TypeError):
        routing_heatmap("routing")


# ------------------------------------------------------------------------------ benchmarks


def _forecast_results():
    rows = [{"dataset": "ETTh1", "horizon": 48, "model": "mola-foundation", "mse": 9.0}]
    for dataset in ("ETTh1", "ILI"):
        for h in (24, 48):
            for i, model in enumerate(("mola", "direct", "naive")):
                rows.append({"dataset": dataset, "horizon": h, "model": model,
                             "mse": 0.1 * (i + 1) + h / 1000, "mae": 0.5})
    return pd.DataFrame(rows)


def test_benchmark_chart_recognises_the_forecast_results(tmp_path):
    results = _forecast_results()
    path = tmp_path / "results.csv"
    results.to_csv(path, index=False)
    fig = benchmark_chart(path, title="forecast")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["dataset = ETTh1", "dataset = ILI"]
    heights = sorted(p.get_height() for p in axes[0].patches)
    expected = results[(results.dataset == "ETTh1") & (results.model != "mola-foundation")]
    np.testing.assert_allclose(heights, sorted(expected.mse))  # the foundation row is dropped
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["24", "48"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["mola", "direct", "naive"]
    assert_png(fig, tmp_path / "forecast_bench.png")


def test_benchmark_chart_tep_lora_and_explicit_layouts(tmp_path):
    tep = pd.DataFrame({"fault": [0, 1, 1, 2, 2], "model": ["MOLA", "MOLA", "PCA", "MOLA", "PCA"],
                        "fdr": [np.nan, 0.99, 0.98, 0.97, 0.5], "far": 0.01,
                        "delay_samples": 3.0})
    fig = benchmark_chart(tep)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2"]
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [0.5, 0.97, 0.98, 0.99]
    lora = pd.DataFrame({"impl": ["reference", "naive_loop"] * 2, "tokens": 64, "d_in": 8,
                         "d_out": 8, "experts": 4, "rank": 2,
                         "router": ["topk", "topk", "ldmole", "ldmole"],
                         "fwd_bwd_ms": [1.0, 10.0, 2.0, 20.0], "peak_mb": 1.0})
    fig = benchmark_chart(lora, logy=True)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_title() == "tokens = 64"
    fig = benchmark_chart(lora, "peak_mb", x="router", hue="impl")
    assert fig.axes[0].get_ylabel() == "peak_mb"
    assert_png(fig, tmp_path / "lora_bench.png")


def test_benchmark_chart_kernel_and_uncertainty_layouts():
    kernels = pd.DataFrame([{"plan": plan, "tokens": n, "d": 1024, "dtype": "bf16",
                             "method": method, "fwd_bwd_ms": ms, "peak_mib": 1.0}
                            for plan in ("8x8", "mixed") for n in (8192, 16384)
                            for method, ms in (("fused", 1.0), ("reference", 3.0))])
    fig = benchmark_chart(kernels)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["plan = 8x8, d = 1024", "plan = mixed, d = 1024"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["8192", "16384"]
    uncertainty = pd.DataFrame({"method": ["MAP", "ensemble", "laplace", "mixture"],
                                "nll": 1.0, "crps": [0.5, 0.4, 0.45, 0.35]})
    fig = benchmark_chart(uncertainty)  # no dataset column: one group, a bar per method
    assert sorted(p.get_height() for p in fig.axes[0].patches) == [0.35, 0.4, 0.45, 0.5]
    assert fig.axes[0].get_ylabel() == "crps"


def test_benchmark_chart_errors():
    results = _forecast_results()
    with pytest.raises(ValueError, match="several rows share"):  # two datasets, no panel
        benchmark_chart(results.drop(columns="dataset"), "mse", x="horizon", hue="model")
    with pytest.raises(ValueError, match="no known benchmark layout"):
        benchmark_chart(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValueError, match="no column 'speed'"):
        benchmark_chart(results, "speed")
    with pytest.raises(TypeError):
        benchmark_chart(42)


# ------------------------------------------------------------------------------ package layout


def test_plotting_is_a_package_of_figure_families_reexported_at_the_top():
    import mola_ts.plotting as plotting
    from mola_ts.plotting import benchmark, forecast, monitor, nn

    assert plotting.forecast_chart is forecast.forecast_chart
    assert plotting.control_chart is monitor.control_chart
    assert plotting.monitor_chart is monitor.monitor_chart
    assert plotting.contribution_chart is monitor.contribution_chart
    assert plotting.routing_heatmap is nn.routing_heatmap
    assert plotting.benchmark_chart is benchmark.benchmark_chart


def test_nn_does_not_import_plotting():
    import subprocess
    import sys

    code = ("import sys, mola_ts.nn, mola_ts.nn.transformer; "
            "print(sorted(m for m in sys.modules if m.startswith('mola_ts.plotting')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_reliability_chart_keeps_the_default_row_visible_over_the_row_it_equals(tmp_path):
    rows = [{"dataset": "ILI", "diversity": "adapters", "method": m, "coverage50": c50,
             "coverage90": c90, "conformal_chosen": chosen}
            for m, c50, c90, chosen in (("mixture", 0.76, 0.94, np.nan),
                                        ("mixture+adaptive", 0.50, 0.87, "adaptive"),
                                        ("mixture+auto", 0.50, 0.87, "adaptive"))]
    fig = reliability_chart(pd.DataFrame(rows), ["50", "90"])
    assert_png(fig, tmp_path / "reliability.png")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    auto = lines["mixture+auto (adapters) = adaptive"]
    assert auto.get_linestyle() == "--" and auto.get_markerfacecolor() == "none"
    assert lines["mixture (adapters)"].get_linestyle() == "-"
    np.testing.assert_allclose(auto.get_ydata(), [0.50, 0.87])
