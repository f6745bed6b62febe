"""A new user's first hour with the forecasters (issue 16): visible progress, no silent
degenerate MoLA forecasts, picklable fitted models, period indexes, the long layout's error,
random_state kinds, one scale for the losses, a foundation with the user's labels."""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest

from mola_ts.forecast import (
    ClassicalForecaster,
    DegenerateSegmentsWarning,
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)

TINY = {"d_model": 8, "d_ff": 8, "n_heads": 2, "n_layers": 1}


def _mola(**kw) -> MoLAForecaster:
    base = dict(segment_length=4, backbone_params=TINY, n_experts=2, rank=2, epochs=1,
                foundation_epochs=1)
    base.update(kw)
    return MoLAForecaster(24, 8, **base)


# -- progress -------------------------------------------------------------------------------
def test_progress_shows_stage_lines_and_a_bar_on_a_non_terminal_stream(monkeypatch, capsys,
                                                                       toy_frame):
    monkeypatch.delenv("MOLA_TS_NO_PROGRESS", raising=False)
    y = toy_frame(160, "ab")
    _mola(verbose=1, epochs=2).fit(y)
    err = capsys.readouterr().err
    assert "[mola-ts] foundation" in err
    assert "[mola-ts] adaptation: member 1/1, 2 segments" in err
    assert "epoch" in err  # the tqdm bar of the epochs (text: stderr is not a terminal here)


def test_progress_is_silent_without_verbose_or_with_the_switch(monkeypatch, capsys, toy_frame):
    y = toy_frame(160, "ab")
    monkeypatch.delenv("MOLA_TS_NO_PROGRESS", raising=False)
    DirectForecaster(24, 4, backbone_params=TINY, epochs=1).fit(y)
    monkeypatch.setenv("MOLA_TS_NO_PROGRESS", "1")
    DirectForecaster(24, 4, backbone_params=TINY, epochs=1, verbose=1).fit(y)
    assert capsys.readouterr().err == ""


# -- degenerate segments ---------------------------------------------------------------------
def _short_gdp_like(n: int = 120) -> pd.DataFrame:
    """A realgdp-like quarterly series: a strong trend with small noise, few rows."""
    rng = np.random.default_rng(3)
    t = np.arange(n)
    level = 2700.0 + 45.0 * t + 40.0 * np.cumsum(rng.normal(size=n)) / np.sqrt(n)
    return pd.DataFrame({"realgdp": level},
                        index=pd.period_range("1959Q1", periods=n, freq="Q"))


def test_segments_that_never_improve_warn_and_roll_the_foundation_out():
    y = _short_gdp_like()
    # lr so small that adaptation cannot beat the foundation on any segment: every segment
    # stops at epoch 0 and the adapter is the foundation repeated along the horizon; a
    # foundation that learned the trend rolls out better than that on the validation rows
    model = MoLAForecaster(16, 8, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                           epochs=3, patience=1, lr=1e-12, foundation_epochs=20,
                           foundation_lr=1e-2)
    with pytest.warns(DegenerateSegmentsWarning, match="every segment"):
        model.fit(y)
    assert model.rollout_segments_ == [0, 1]
    assert model.rollout_val_loss_[1] < model.segment_val_loss_[1]
    forecast = model.predict().to_numpy()[:, 0]
    fnd = model.foundation_
    first = fnd.predict().to_numpy()[:, 0]
    np.testing.assert_allclose(forecast[:4], first, rtol=1e-6)
    # segment 2 is the foundation fed its own first segment, not segment 1 repeated
    window = np.concatenate([y.to_numpy()[-16:], first[:, None]])[-16:]
    second = fnd.predict(y_context=pd.DataFrame(window, columns=["realgdp"])).to_numpy()[:, 0]
    np.testing.assert_allclose(forecast[4:], second, rtol=1e-6)
    assert not np.allclose(forecast[4:], forecast[:4])


def test_the_predictive_distribution_is_centred_on_the_roll_out():
    y = _short_gdp_like()
    model = MoLAForecaster(16, 8, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                           epochs=3, patience=1, lr=1e-12, foundation_epochs=20,
                           foundation_lr=1e-2, uncertainty="laplace")
    with pytest.warns(DegenerateSegmentsWarning):
        model.fit(y)
    assert model.rollout_segments_ == [0, 1] and model._own_heads()
    forecast = model.predict().to_numpy()[:, 0]
    first = model.foundation_.predict().to_numpy()[:, 0]
    window = np.concatenate([y.to_numpy()[-16:], first[:, None]])[-16:]
    second = model.foundation_.predict(
        y_context=pd.DataFrame(window, columns=["realgdp"])).to_numpy()[:, 0]
    np.testing.assert_allclose(forecast, np.concatenate([first, second]), rtol=1e-6)
    dist = model.predict_distribution()
    np.testing.assert_allclose(np.asarray(dist.mean)[:, 0], forecast, rtol=1e-9)
    bands = model.predict_interval(0.9).to_numpy()
    assert (bands[:, 0] < forecast).all() and (forecast < bands[:, 1]).all()


def test_a_roll_out_worse_on_validation_keeps_the_adapters(monkeypatch):
    import mola_ts.forecast.segments as segments

    real = segments.recursive_rollout
    # a roll-out far off the data: its validation loss loses to the adapters on every segment
    monkeypatch.setattr(segments, "recursive_rollout",
                        lambda step, windows, k: real(step, windows, k) + 1e4)
    y = _short_gdp_like()
    model = MoLAForecaster(16, 8, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                           epochs=3, patience=1, lr=1e-12, foundation_epochs=2)
    with pytest.warns(DegenerateSegmentsWarning, match=r"their adapters forecast \[0, 1\]"):
        model.fit(y)
    assert model.rollout_segments_ == []
    assert (model.rollout_val_loss_ > model.segment_val_loss_).all()
    forecast = model.predict().to_numpy()[:, 0]
    first = model.foundation_.predict().to_numpy()[:, 0]
    # the unadapted adapters: the foundation's first segment for both segments
    np.testing.assert_allclose(forecast[:4], first, rtol=1e-5)
    np.testing.assert_allclose(forecast[4:], first, rtol=1e-5)


def test_some_segments_unimproved_is_a_stage_line_not_a_warning(monkeypatch, capsys):
    import mola_ts.forecast.mola as mola_module

    monkeypatch.setattr(mola_module, "never_improved", lambda best, start: [1])
    monkeypatch.delenv("MOLA_TS_NO_PROGRESS", raising=False)
    model = MoLAForecaster(16, 8, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                           epochs=2, patience=1, foundation_epochs=2, verbose=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSegmentsWarning)
        model.fit(_short_gdp_like())
    assert model.unimproved_segments_ == [1]
    err = capsys.readouterr().err
    assert "never improved segments [1] of 2" in err and "On a short series" not in err
    assert model.rollout_segments_ in ([], [1])  # whichever validated better


def test_a_normal_fit_rolls_nothing_out(toy_frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSegmentsWarning)
        model = _mola(epochs=2, lr=1e-2).fit(toy_frame(200, "ab"))
    assert model.rollout_segments_ == []


# -- pickling of every fitted forecaster -----------------------------------------------------
def _forecasters():
    return {
        "direct": DirectForecaster(24, 8, backbone_params=TINY, epochs=1),
        "patch": DirectForecaster(24, 8, backbone="patch",
                                  backbone_params={**TINY, "patch_len": 8, "stride": 8},
                                  epochs=1),
        "dlinear": DLinearForecaster(24, 8, kernel_size=5, epochs=1),
        "direct-ensemble-laplace": DirectForecaster(24, 8, backbone_params=TINY, epochs=1,
                                                    n_ensemble=2, uncertainty="laplace"),
        "direct-conformal": DirectForecaster(24, 8, backbone_params=TINY, epochs=1,
                                             uncertainty="noise", conformal="adaptive",
                                             validation_fraction=0.4),
        "mola-laplace": _mola(uncertainty="laplace"),
        "snaive": SeasonalNaiveForecaster(8, season_length=24),
        "ets": ClassicalForecaster(8, lookback=48, season_length=1),
    }


@pytest.mark.parametrize("kind", list(_forecasters()))
def test_every_fitted_forecaster_round_trips_through_pickle_and_joblib(kind, toy_frame,
                                                                       tmp_path):
    y = toy_frame(200, "ab")
    model = _forecasters()[kind].fit(y)
    expected = model.predict()
    for back in (pickle.loads(pickle.dumps(model)),
                 joblib.load(joblib.dump(model, tmp_path / "m.joblib")[0])):
        pd.testing.assert_frame_equal(back.predict(), expected)
        pd.testing.assert_frame_equal(back.predict(y_context=y.iloc[:150]),
                                      model.predict(y_context=y.iloc[:150]))
        if "laplace" in kind or "conformal" in kind:
            pd.testing.assert_frame_equal(back.predict_interval(0.8), model.predict_interval(0.8))
    if kind == "direct-conformal":  # the calibrated intervals survive, and keep adapting
        assert model.conformal_ is not None
        back = pickle.loads(pickle.dumps(model))
        back.update(y.iloc[:8].set_axis(pd.date_range(y.index[-1], periods=9, freq="h")[1:]))
        assert back.predict().shape == (8, 2)


# -- inputs ----------------------------------------------------------------------------------
def test_a_period_index_is_read_as_timestamps_and_forecasts_come_back_as_periods():
    y = _short_gdp_like(80)
    model = SeasonalNaiveForecaster(4).fit(y)
    forecast = model.predict()
    assert isinstance(forecast.index, pd.PeriodIndex)
    assert list(forecast.index.astype(str)) == ["1979Q1", "1979Q2", "1979Q3", "1979Q4"]
    assert model.season_length_ == 4  # quarterly
    direct = DirectForecaster(16, 4, backbone_params=TINY, epochs=1).fit(y)
    pd.testing.assert_index_equal(direct.predict().index, forecast.index)
    assert isinstance(y.index, pd.PeriodIndex)  # the user's frame is untouched


def test_a_long_frame_with_other_column_names_gets_an_error_naming_the_layout(toy_frame):
    wide = toy_frame(60, "ab")
    long = wide.reset_index(names="date").melt(id_vars="date", var_name="series",
                                               value_name="value")
    with pytest.raises(TypeError, match="unique_id, ds, y") as info:
        SeasonalNaiveForecaster(4, season_length=24).fit(long)
    assert "'date'" in str(info.value) and "'series'" in str(info.value)
    renamed = long.rename(columns={"series": "unique_id", "date": "ds", "value": "y"})
    SeasonalNaiveForecaster(4, season_length=24).fit(renamed)  # the long layout is read
    with pytest.raises(TypeError, match="drop those"):
        SeasonalNaiveForecaster(4, season_length=24).fit(renamed.assign(note="x"))


@pytest.mark.parametrize("make", [lambda: np.random.RandomState(0),
                                  lambda: np.random.default_rng(0), lambda: 7, lambda: None])
def test_random_state_takes_an_int_a_randomstate_or_a_generator(make, toy_frame, tmp_path):
    y = toy_frame(120, "a")
    model = DirectForecaster(24, 4, backbone_params=TINY, epochs=1, random_state=make()).fit(y)
    assert isinstance(model.seed_, int)
    again = DirectForecaster(24, 4, backbone_params=TINY, epochs=1,
                             random_state=model.seed_).fit(y)
    pd.testing.assert_frame_equal(again.predict(), model.predict())  # the seed is the fit
    loaded = DirectForecaster.load(model.save(tmp_path / "m.pt"))
    assert loaded.seed_ == model.seed_
    assert isinstance(loaded.random_state, (int, type(None)))


def test_mola_draws_one_seed_for_both_stages(toy_frame):
    y = toy_frame(160, "ab")
    a = _mola(random_state=np.random.RandomState(5)).fit(y)
    b = _mola(random_state=a.seed_).fit(y)
    assert a.foundation_.seed_ == a.seed_
    pd.testing.assert_frame_equal(a.predict(), b.predict())


# -- what the fitted attributes mean ---------------------------------------------------------
def test_mola_history_holds_both_losses_as_means_over_segments(toy_frame):
    y = toy_frame(200, "ab")
    model = MoLAForecaster(24, 16, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                           epochs=2, foundation_epochs=1, lr=1e-2).fit(y)
    first = model.history_[0]
    # a sum over 4 segments would be about 4x the mean validation loss of the same epoch
    assert 0.25 < first["train_loss"] / first["val_loss"] < 2.5
    assert {"train_loss", "val_loss", "epoch"} <= set(first)


def test_the_foundation_keeps_the_users_columns_and_forecasts_from_the_end_of_y(toy_frame):
    y = toy_frame(160, "ab")
    model = _mola().fit(y)
    fnd = model.foundation_
    assert fnd.columns_ == ["a", "b"]
    first = fnd.predict()
    assert list(first.columns) == ["a", "b"]
    pd.testing.assert_index_equal(first.index, model.predict().index[:4])
    pd.testing.assert_frame_equal(first, fnd.predict(y_context=y))
