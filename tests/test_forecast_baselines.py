"""Seasonal naive and the statsmodels ETS forecaster."""

import numpy as np
import pandas as pd
import pytest

from mola_ts.forecast import ClassicalForecaster, SeasonalNaiveForecaster
from mola_ts.forecast.baselines import infer_season_length


@pytest.mark.parametrize(("freq", "season"), [("h", 24), ("15min", 96), ("D", 7), ("7D", 52),
                                              ("W-SUN", 52), ("MS", 12), ("2h", 12)])
def test_season_length_follows_the_frequency(freq, season):
    assert infer_season_length(pd.date_range("2020-01-05", periods=10, freq=freq)) == season


def test_season_length_is_one_without_timestamps():
    assert infer_season_length(pd.RangeIndex(10)) == 1
    assert infer_season_length(None) == 1


def test_seasonal_naive_repeats_the_last_season():
    values = np.arange(30.0)
    model = SeasonalNaiveForecaster(horizon=7, season_length=5).fit(values)
    np.testing.assert_array_equal(model.predict()["x0"].to_numpy(),
                                  [25, 26, 27, 28, 29, 25, 26])
    hourly = pd.DataFrame({"v": np.arange(48.0)},
                          index=pd.date_range("2024-01-01", periods=48, freq="h"))
    model = SeasonalNaiveForecaster(horizon=3).fit(hourly)
    assert model.season_length_ == 24
    np.testing.assert_array_equal(model.predict()["v"].to_numpy(), [24, 25, 26])


def test_ets_extrapolates_a_level_and_a_season():
    t = np.arange(240)
    season = np.sin(2 * np.pi * t / 12)
    y = pd.DataFrame({"s": 5.0 + season + 0.01 * np.random.default_rng(0).normal(size=240)},
                     index=pd.date_range("2000-01-01", periods=240, freq="MS"))
    model = ClassicalForecaster(horizon=12, lookback=48, trend=False).fit(y)
    assert model.season_length_ == 12
    forecast = model.predict()["s"].to_numpy()
    expected = 5.0 + np.sin(2 * np.pi * np.arange(240, 252) / 12)
    np.testing.assert_allclose(forecast, expected, atol=0.1)
    # a lookback shorter than two seasons drops the seasonal part
    assert ClassicalForecaster(horizon=12, lookback=20).fit(y).season_length_ == 1


def test_ets_follows_a_trend():
    y = 2.0 * np.arange(100.0) + 3.0
    model = ClassicalForecaster(horizon=5, lookback=30, season_length=1,
                                damped_trend=False).fit(y)
    np.testing.assert_allclose(model.predict()["x0"].to_numpy(), 2.0 * np.arange(100, 105) + 3,
                               rtol=1e-3)


def test_baselines_save_and_load(tmp_path):
    y = np.sin(np.arange(120) / 3.0)[:, None] + np.arange(120)[:, None] * 0.01
    for model in (SeasonalNaiveForecaster(6, season_length=10),
                  ClassicalForecaster(6, lookback=40, season_length=1)):
        model.fit(y)
        back = type(model).load(model.save(tmp_path / "m.pt"))
        pd.testing.assert_frame_equal(back.predict(), model.predict())


def test_bad_lookback_is_rejected():
    with pytest.raises(ValueError, match="lookback == 5, must be >= 10"):
        ClassicalForecaster(horizon=4, lookback=5).fit(np.arange(50.0))


def test_season_is_inferred_from_a_long_frame_too():
    from mola_ts.data import to_long

    wide = pd.DataFrame({"a": np.arange(60.0), "b": np.arange(60.0) * 2},
                        index=pd.date_range("2024-01-01", periods=60, freq="h"))
    model = SeasonalNaiveForecaster(horizon=4).fit(to_long(wide))
    assert model.season_length_ == 24
    out = model.predict()
    assert list(out.columns) == ["unique_id", "ds", "y"] and len(out) == 8
