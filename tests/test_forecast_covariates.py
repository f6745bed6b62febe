"""Past covariates and calendar features (Direct, MoLA), ``predict(fh=...)`` and ``update``."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from mola_ts.forecast import (
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)

TINY = {"d_model": 8, "d_ff": 8, "n_heads": 2, "n_layers": 1}


def _driven(n: int = 260, seed: int = 0):
    """``y`` follows the exogenous input ``u`` three steps late (hourly)."""
    rng = np.random.default_rng(seed)
    u = np.sin(np.arange(n) / 4.0) + 0.3 * rng.normal(size=n)
    y = 2.0 * np.roll(u, 3) + 0.05 * rng.normal(size=n)
    index = pd.date_range("2024-01-01", periods=n, freq="h")
    return pd.DataFrame({"y": y}, index=index), pd.DataFrame({"u": u}, index=index)


def _direct(**kw):
    return DirectForecaster(24, 8, backbone_params=TINY, epochs=2, **kw)


def _mola(**kw):
    return MoLAForecaster(24, 8, segment_length=4, backbone_params=TINY, n_experts=2, rank=2,
                          epochs=1, foundation_epochs=1, **kw)


@pytest.mark.parametrize("make", [_direct, _mola], ids=["direct", "mola"])
def test_covariates_change_the_forecast_and_are_required_at_predict(make):
    y, X = _driven()
    model = make().fit(y, X=X)
    assert model.covariate_columns_ == ["u"] and model.n_covariates_ == 1
    context, past = y.iloc[:200], X.iloc[:200]
    base = model.predict(y_context=context, X=past)
    other = model.predict(y_context=context, X=past * -1.0)
    assert base.shape == (8, 1) and list(base.columns) == ["y"]
    assert not np.allclose(base.to_numpy(), other.to_numpy())  # the covariate is read
    with pytest.raises(ValueError, match="needs X over the 24 rows"):
        model.predict(y_context=context)
    with pytest.raises(ValueError, match="timestamps"):
        model.predict(y_context=context, X=X.iloc[:190])  # X does not end at the cutoff
    pd.testing.assert_frame_equal(model.predict(), model.predict(y_context=y, X=X))


def test_covariates_are_refused_where_they_cannot_be_used():
    y, X = _driven(120)
    for model, fragment in ((DLinearForecaster(24, 8, kernel_size=5, epochs=1), "dlinear"),
                            (DirectForecaster(24, 8, backbone="patch", epochs=1), "patch"),
                            (SeasonalNaiveForecaster(8, season_length=24), "does not use"),
                            (_direct(uncertainty="laplace"), "uncertainty")):
        with pytest.raises(ValueError, match=fragment):
            model.fit(y, X=X)
    plain = _direct().fit(y)
    with pytest.raises(ValueError, match="without covariates"):
        plain.predict(y_context=y, X=X)
    with pytest.raises(ValueError, match="one row per row of y"):
        _direct().fit(y, X=X.iloc[:-5])
    with pytest.raises(ValueError, match="X_val"):
        _direct().fit(y.iloc[:80], y.iloc[80:], X=X.iloc[:80])


def test_calendar_features_need_no_input_and_change_the_forecast():
    y, _ = _driven(200)
    model = _direct(calendar=("hour", "weekday")).fit(y)
    assert model.n_covariates_ == 4 and model.covariate_columns_ == []
    plain = _direct().fit(y)
    assert not np.allclose(model.predict().to_numpy(), plain.predict().to_numpy())
    pd.testing.assert_frame_equal(model.predict(y_context=y.iloc[:150]),
                                  model.predict(y_context=y.iloc[:150]))
    with pytest.raises(TypeError, match="DatetimeIndex"):
        _direct(calendar="hour").fit(y.to_numpy())
    with pytest.raises(ValueError, match="calendar must be"):
        _direct(calendar="minute").fit(y)


@pytest.mark.parametrize("make", [_direct, _mola], ids=["direct", "mola"])
def test_fh_rows_equal_the_full_forecasts_rows(make):
    y, _ = _driven(200)
    model = make(uncertainty="laplace").fit(y)
    full = model.predict()
    pd.testing.assert_frame_equal(model.predict(fh=[2, 5, 8]), full.iloc[[1, 4, 7]])
    pd.testing.assert_frame_equal(model.predict(fh=3), full.iloc[[2]])
    pd.testing.assert_frame_equal(model.predict_interval(0.8, fh=range(1, 4)),
                                  model.predict_interval(0.8).iloc[:3])
    pd.testing.assert_frame_equal(model.predict_quantiles([0.1, 0.9], fh=[8]),
                                  model.predict_quantiles([0.1, 0.9]).iloc[[7]])
    for bad, error in ((0, ValueError), (9, ValueError), ([1, 1], ValueError),
                       (1.5, TypeError)):
        with pytest.raises(error, match="fh"):
            model.predict(fh=bad)


def test_update_moves_the_cutoff_like_a_fresh_context():
    y, X = _driven()
    model = _direct().fit(y.iloc[:200], X=X.iloc[:200])
    seen = []
    model._observe_realised = lambda context, new: seen.append((context.shape, new.shape))
    model.update(y.iloc[200:210], X_new=X.iloc[200:210])
    assert seen == [((24, 1), (10, 1))]
    pd.testing.assert_frame_equal(
        model.predict(), model.predict(y_context=y.iloc[:210], X=X.iloc[:210]))
    with pytest.raises(ValueError, match="continue the series"):
        model.update(y.iloc[220:225], X_new=X.iloc[220:225])
    with pytest.raises(ValueError, match="X_new"):
        model.update(y.iloc[210:215])


def test_update_of_a_model_without_covariates_and_of_arrays():
    y, _ = _driven(200)
    model = _mola().fit(y.iloc[:150])
    model.update(y.iloc[150:170])
    pd.testing.assert_frame_equal(model.predict(), model.predict(y_context=y.iloc[:170]))
    naive = SeasonalNaiveForecaster(8, season_length=24).fit(y.to_numpy()[:150])
    naive.update(y.to_numpy()[150:160])
    expected = SeasonalNaiveForecaster(8, season_length=24).fit(y.to_numpy()[:160]).predict()
    pd.testing.assert_frame_equal(naive.predict(), expected)


def test_save_load_and_pickle_keep_the_covariate_state(tmp_path):
    y, X = _driven()
    model = _mola(calendar="hour").fit(y.iloc[:200], X=X.iloc[:200])
    model.update(y.iloc[200:204], X_new=X.iloc[200:204])
    expected = model.predict()
    loaded = MoLAForecaster.load(model.save(tmp_path / "m.pt"))
    pd.testing.assert_frame_equal(loaded.predict(), expected)
    assert loaded.covariate_columns_ == ["u"] and tuple(loaded.calendar_) == ("hour",)
    pd.testing.assert_frame_equal(pickle.loads(pickle.dumps(model)).predict(), expected)
