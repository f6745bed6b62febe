"""The forecaster API shared by MoLA and the baselines: formats, timestamps, errors, params."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from support import SMALL_BACKBONE, toy_frame

from mola_ts.data import to_long
from mola_ts.forecast import (
    ClassicalForecaster,
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)

SMALL = SMALL_BACKBONE
_frame = toy_frame  # n=160, columns a, b, c


def _mola(**kw):
    args = dict(lookback=24, horizon=8, segment_length=4, backbone_params=SMALL, n_experts=2,
                rank=2, epochs=1, foundation_epochs=1, batch_size=64, random_state=0)
    args.update(kw)
    return MoLAForecaster(**args)


def _models():
    return [
        _mola(),
        DirectForecaster(24, 8, backbone_params=SMALL, epochs=1, batch_size=64),
        DLinearForecaster(24, 8, epochs=1, batch_size=64),
        SeasonalNaiveForecaster(8),
        ClassicalForecaster(8, lookback=24, season_length=1),
    ]


@pytest.fixture(scope="module")
def fitted():
    y = _frame()
    return y, [model.fit(y) for model in _models()]


def test_predict_shape_columns_and_future_timestamps(fitted):
    y, models = fitted
    expected = pd.date_range(y.index[-1] + pd.Timedelta(hours=1), periods=8, freq="h")
    for model in models:
        out = model.predict()
        assert isinstance(out, pd.DataFrame), type(model).__name__
        assert out.shape == (8, 3)
        assert list(out.columns) == ["a", "b", "c"]
        pd.testing.assert_index_equal(out.index, expected, check_names=False)
        assert np.isfinite(out.to_numpy()).all()


def test_predict_from_a_new_context_starts_after_it(fitted):
    y, models = fitted
    context = y.iloc[:100]
    for model in models:
        out = model.predict(y_context=context)
        assert out.index[0] == y.index[100]
        assert not np.allclose(out.to_numpy(), model.predict().to_numpy())


def test_predict_on_arrays_gives_integer_positions():
    y = _frame().to_numpy()
    model = DLinearForecaster(24, 8, epochs=1).fit(y)
    out = model.predict()
    assert list(out.index) == list(range(160, 168))
    assert list(out.columns) == ["x0", "x1", "x2"]


def test_long_format_in_and_out():
    y = _frame()
    long = to_long(y)
    wide_model = DLinearForecaster(24, 8, epochs=1).fit(y)
    long_model = DLinearForecaster(24, 8, epochs=1).fit(long)
    out = long_model.predict()
    assert list(out.columns) == ["unique_id", "ds", "y"]
    assert len(out) == 8 * 3
    back = out.pivot(index="ds", columns="unique_id", values="y")[["a", "b", "c"]]
    np.testing.assert_allclose(back.to_numpy(), wide_model.predict().to_numpy(), rtol=1e-6)


def test_fit_does_not_modify_the_input():
    y = _frame()
    copy = y.copy()
    DLinearForecaster(24, 8, epochs=1).fit(y)
    pd.testing.assert_frame_equal(y, copy)


def test_series_shorter_than_lookback_plus_horizon_is_rejected():
    y = _frame(n=30)
    for model in _models():
        if isinstance(model, SeasonalNaiveForecaster):
            continue  # reads one season only
        with pytest.raises(ValueError, match=r"30 rows; at least 32 are needed \(context 24"):
            model.fit(y)
    with pytest.raises(ValueError, match=r"20 rows; at least 24"):
        SeasonalNaiveForecaster(8).fit(_frame(n=20))


def test_nans_are_rejected_with_their_count():
    y = _frame()
    y.iloc[5, 1] = np.nan
    y.iloc[7, 1] = np.nan
    for model in _models():
        with pytest.raises(ValueError, match="2 NaN"):
            model.fit(y)


def test_predict_with_other_columns_than_fit_is_rejected(fitted):
    y, models = fitted
    for model in models:
        with pytest.raises(ValueError, match="2 columns but the estimator was fitted on 3"):
            model.predict(y_context=y[["a", "b"]])
        renamed = y.rename(columns={"c": "z"})
        with pytest.raises(ValueError, match="differ"):
            model.predict(y_context=renamed)


def test_context_shorter_than_lookback_is_rejected(fitted):
    y, models = fitted
    with pytest.raises(ValueError, match="10 rows; at least 24"):
        models[0].predict(y_context=y.iloc[:10])


def test_unfitted_models_raise_not_fitted():
    from sklearn.exceptions import NotFittedError

    for model in _models():
        with pytest.raises(NotFittedError):
            model.predict()


def test_horizon_not_a_multiple_of_segment_length_is_rejected():
    with pytest.raises(ValueError, match="horizon must be a multiple of segment_length"):
        _mola(horizon=10, segment_length=4).fit(_frame())


def test_bad_parameters_are_named():
    y = _frame()
    with pytest.raises(ValueError, match="adapter"):
        _mola(adapter="dora").fit(y)
    with pytest.raises(ValueError, match="router"):
        _mola(router="bogus").fit(y)
    with pytest.raises(ValueError, match="backbone must be one of"):
        DirectForecaster(24, 8, backbone="lstm", epochs=1).fit(y)
    with pytest.raises(ValueError, match="horizon == 0, must be >= 1"):
        DirectForecaster(24, 0).fit(y)
    with pytest.raises(TypeError, match="y must be"):
        DirectForecaster(24, 8).fit("not a series")


@pytest.mark.parametrize("make, error, match", [
    (lambda: DirectForecaster(2.5, 8), TypeError, "lookback must be an instance of int"),
    (lambda: DirectForecaster(24, 8, epochs=True), TypeError,
     "epochs must be an integer, got bool"),
    (lambda: DirectForecaster(24, 8, lr=float("nan")), ValueError, "lr must be a number, got NaN"),
    (lambda: DirectForecaster(24, 8, lr=0), ValueError, "lr == 0, must be > 0"),
    (lambda: DirectForecaster(24, 8, validation_fraction=1.0), ValueError,
     "validation_fraction == 1.0, must be < 1"),
    (lambda: DirectForecaster(24, 8, n_ensemble=np.int64(0)), ValueError,
     "n_ensemble == 0, must be >= 1"),
    (lambda: _mola(rank=0), ValueError, "rank == 0, must be >= 1"),
    (lambda: _mola(n_experts=2.0), TypeError, "n_experts must be an instance of int"),
    (lambda: _mola(segment_length=True), TypeError, "segment_length must be an integer"),
    (lambda: SeasonalNaiveForecaster(8, season_length=0), ValueError,
     "season_length == 0, must be >= 1"),
    (lambda: ClassicalForecaster(8, lookback=12.0), TypeError,
     "lookback must be an instance of int"),
])
def test_numeric_parameters_are_checked_in_one_style(make, error, match):
    with pytest.raises(error, match=match):
        make().fit(_frame())


def test_get_params_set_params_and_clone_round_trip():
    model = _mola(n_experts=3, adapter="lora")
    params = model.get_params()
    assert params["n_experts"] == 3 and params["adapter"] == "lora"
    assert params["segment_length"] == 4 and params["foundation"] is None
    twin = clone(model)
    assert twin is not model and twin.get_params() == params
    twin.set_params(rank=4)
    assert twin.rank == 4 and model.rank == 2
    assert clone(DLinearForecaster(kernel_size=13)).kernel_size == 13
    assert not hasattr(twin, "model_")


def test_clone_of_a_fitted_model_is_unfitted(fitted):
    _, models = fitted
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        clone(models[0]).predict()


def test_score_is_negative_mse_of_rolling_windows(fitted):
    y, models = fitted
    naive = models[3]
    test = y.iloc[-60:]
    # seasonal naive with m = 24 (hourly): forecast i repeats the last 24 rows of its context
    values = test.to_numpy()
    errs = []
    for start in range(0, 60 - 24 - 8 + 1):
        ctx = values[start:start + 24]
        errs.append(((ctx[:8] - values[start + 24:start + 32]) / naive.y_scale_) ** 2)
    assert naive.season_length_ == 24
    # on the standardised scale: each variable divided by its std in the fitted series
    np.testing.assert_allclose(naive.y_scale_, y.to_numpy().std(axis=0))
    assert naive.score(test) == pytest.approx(-np.mean(errs))


def test_score_is_on_the_standardised_scale_so_units_do_not_matter(toy_frame):
    from mola_ts.forecast import SeasonalNaiveForecaster

    y = toy_frame(120, "ab")
    big = y.assign(b=y["b"] * 1e4 + 5.0)  # the same series in other units
    model = SeasonalNaiveForecaster(horizon=6, season_length=12)
    assert model.fit(y).score(y) == pytest.approx(model.fit(big).score(big))
