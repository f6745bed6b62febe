import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mola_ts.plotting import contribution_chart, control_chart


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
    fig.savefig(tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000
    assert len(control_chart(_stats(), [("W", "W_limit")], logy=False).axes) == 1


def test_control_chart_errors():
    with pytest.raises(ValueError, match="no column"):
        control_chart(_stats(), [("SPE", "SPE_limit")])
    with pytest.raises(ValueError, match="onset"):
        control_chart(_stats(), onset=99)
    with pytest.raises(TypeError):
        control_chart(np.zeros((3, 2)))


def test_contribution_chart_sorts_and_limits_bars():
    frame = pd.DataFrame({"a": [1.0, 3.0], "b": [10.0, 10.0], "c": [0.0, np.nan]})
    fig = contribution_chart(frame, top=2)
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [10.0, 2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a"]
    with pytest.raises(ValueError, match="no finite"):
        contribution_chart(pd.Series([np.nan], index=["a"]))
