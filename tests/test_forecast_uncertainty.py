"""Probabilistic forecasts: sktime layouts, nesting, exact de-normalisation, adapter ensembles."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from support import SMALL_BACKBONE

from mola_ts.forecast import (
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)
from mola_ts.metrics import probabilistic_scores
from mola_ts.uncertainty import GaussianMixture

SMALL = SMALL_BACKBONE


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    data = {"a": np.sin(t / 3.0) + 0.2 * rng.normal(size=n),
            "b": 50.0 + 10.0 * np.cos(t / 5.0) + 2.0 * rng.normal(size=n)}
    return pd.DataFrame(data, index=pd.date_range("2024-01-01", periods=n, freq="h"))


def _mola(**kw):
    args = dict(lookback=24, horizon=8, segment_length=4, backbone_params=SMALL, n_experts=2,
                rank=2, epochs=2, foundation_epochs=1, lr=0.02, batch_size=32,
                validation_fraction=0, random_state=0)
    args.update(kw)
    return MoLAForecaster(**args)


@pytest.fixture(scope="module")
def data():
    return _frame()


@pytest.fixture(scope="module")
def mixture(data):
    """Three adapters on one foundation, each with a last-layer Laplace."""
    return _mola(n_ensemble=3, uncertainty="laplace").fit(data)


@pytest.fixture(scope="module")
def direct(data):
    return DirectForecaster(24, 8, backbone_params=SMALL, epochs=2, batch_size=32,
                            uncertainty="laplace").fit(data)


def test_predict_interval_has_sktime_columns_and_future_timestamps(mixture, data):
    out = mixture.predict_interval(coverage=[0.8, 0.9])
    expected = pd.date_range(data.index[-1] + pd.Timedelta(hours=1), periods=8, freq="h")
    pd.testing.assert_index_equal(out.index, expected, check_names=False)
    assert isinstance(out.columns, pd.MultiIndex) and out.columns.nlevels == 3
    assert list(out.columns) == [(v, c, s) for v in ("a", "b") for c in (0.8, 0.9)
                                 for s in ("lower", "upper")]
    assert out.shape == (8, 8) and np.isfinite(out.to_numpy()).all()
    single = mixture.predict_interval()  # default coverage 0.9
    assert list(single.columns) == [("a", 0.9, "lower"), ("a", 0.9, "upper"),
                                    ("b", 0.9, "lower"), ("b", 0.9, "upper")]
    pd.testing.assert_frame_equal(single, out.loc[:, (slice(None), [0.9], slice(None))])


def test_predict_quantiles_has_sktime_columns_and_follows_the_context(mixture, data):
    q = mixture.predict_quantiles(alpha=[0.1, 0.5, 0.9])
    assert list(q.columns) == [(v, a) for v in ("a", "b") for a in (0.1, 0.5, 0.9)]
    assert q.shape == (8, 6)
    assert list(mixture.predict_quantiles().columns) == [("a", 0.05), ("a", 0.95),
                                                         ("b", 0.05), ("b", 0.95)]
    context = data.iloc[:150]
    later = mixture.predict_quantiles(alpha=0.5, y_context=context)
    assert later.index[0] == data.index[150]
    assert not np.allclose(later.to_numpy(), q.loc[:, (slice(None), 0.5)].to_numpy())


def test_intervals_nest_and_quantiles_increase_with_alpha(mixture, direct):
    for model in (mixture, direct):
        iv = model.predict_interval(coverage=[0.5, 0.8, 0.9, 0.99])
        for v in ("a", "b"):
            for inner, outer in ((0.5, 0.8), (0.8, 0.9), (0.9, 0.99)):
                assert (iv[(v, outer, "lower")] < iv[(v, inner, "lower")]).all()
                assert (iv[(v, inner, "upper")] < iv[(v, outer, "upper")]).all()
        alphas = [0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99]
        q = model.predict_quantiles(alpha=alphas).to_numpy().reshape(8, 2, len(alphas))
        assert (np.diff(q, axis=-1) > 0).all()
        median = model.predict_quantiles(alpha=0.5).to_numpy()
        assert ((iv.xs(0.5, axis=1, level=1).xs("lower", axis=1, level=1).to_numpy() < median)
                & (median < iv.xs(0.5, axis=1, level=1).xs("upper", axis=1,
                                                           level=1).to_numpy())).all()


def test_distribution_is_exactly_the_normalised_laplace_mapped_back(direct, data):
    """Direct computation: the head's input by a hook, the Laplace in the normalised space,
    then the window statistics and the StandardScaler by hand."""
    window = data.to_numpy()[-24:]
    scaled = (window - direct.scaler_.mean_) / direct.scaler_.scale_
    captured = []
    hook = direct.model_.head.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        direct.model_(torch.tensor(scaled[None], dtype=torch.float32))
    hook.remove()
    mean_n, var_n = direct.laplace_[0][0].predict(captured[0], return_var=True)  # (1, C, H)
    m = scaled.astype(np.float32).mean(axis=0)
    s = np.sqrt(scaled.astype(np.float32).var(axis=0) + 1e-5)  # the instance norm's eps
    a, b = s * direct.scaler_.scale_, m * direct.scaler_.scale_ + direct.scaler_.mean_
    expected_mean = mean_n[0].T * a + b
    expected_var = var_n[0].T * a ** 2
    dist = direct.predict_distribution()
    assert dist.batch_shape == (8, 2) and dist.n_components == 1
    np.testing.assert_allclose(dist.mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(dist.var, expected_var, rtol=1e-4)
    # the network's own de-normalised output is the distribution's mean (float32 rounding)
    np.testing.assert_allclose(dist.mean, direct.predict().to_numpy(), rtol=1e-5, atol=1e-5)
    # the noise is one level per step in the normalised space: proportional to a^2 here
    noise = dist.variance_decomposition()["noise"]
    sigma = direct.laplace_[0][0].sigma_noise_
    np.testing.assert_allclose(noise, (sigma[:, None] * a) ** 2, rtol=1e-5)


def test_mixture_mean_is_the_ensemble_forecast(mixture):
    dist = mixture.predict_distribution()
    assert dist.n_components == 3
    np.testing.assert_allclose(dist.mean, mixture.predict().to_numpy(), rtol=1e-5, atol=1e-5)
    split = dist.variance_decomposition()
    assert (split["ensemble"] > 0).all() and (split["laplace"] > 0).all()


def test_ensemble_members_differ_and_share_the_frozen_foundation(mixture):
    frozen = mixture.foundation_.model_.state_dict()
    adapters = []
    for member in mixture.members_:
        state = member.network.state_dict()
        shared = {k.replace(".base.", "."): v for k, v in state.items()
                  if "lora_" not in k and "router" not in k}
        assert shared.keys() == frozen.keys()
        for key, value in frozen.items():
            assert torch.equal(shared[key], value), key
        adapters.append(torch.cat([v.flatten() for k, v in state.items() if "lora_" in k]))
    assert mixture.members_[0] is mixture.model_
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(adapters[i], adapters[j])
    x = torch.tensor(mixture._to_scaled(mixture.context_)[None])
    outs = [member(x) for member in mixture.members_]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_member_zero_is_the_plain_model_and_sub_ensemble_is_a_refit(mixture, data):
    plain = _mola(uncertainty="laplace").fit(data)
    pd.testing.assert_frame_equal(plain.predict(), mixture.sub_ensemble(1).predict())
    # the adapted network itself is member 0 (its own head changes the forecast, not the net)
    x = torch.tensor(plain._to_scaled(plain.context_)[None])
    torch.testing.assert_close(_mola().fit(data).model_(x), mixture.members_[0](x))
    alone = _mola(n_ensemble=2, uncertainty="noise").fit(data)
    sub = mixture.sub_ensemble(2, uncertainty="noise")
    assert sub.get_params() == alone.get_params()
    pd.testing.assert_frame_equal(sub.predict_interval(0.9), alone.predict_interval(0.9))
    assert mixture.n_ensemble == 3 and len(mixture.members_) == 3  # the original is untouched
    with pytest.raises(ValueError, match="n_members"):
        mixture.sub_ensemble(4)


def test_noise_predictive_has_no_laplace_part_and_is_narrower(mixture):
    noise = mixture.sub_ensemble(uncertainty="noise").predict_distribution()
    laplace = mixture.predict_distribution()
    assert np.all(noise.variance_decomposition()["laplace"] == 0)
    np.testing.assert_allclose(noise.mean, laplace.mean)
    assert (laplace.var > noise.var).all()


def test_save_and_load_keep_the_intervals(mixture, direct, tmp_path):
    for model in (mixture, direct):
        path = model.save(tmp_path / f"{type(model).__name__}.pt")
        back = type(model).load(path)
        assert back.get_params()["uncertainty"] == "laplace"
        assert len(back.members_) == len(model.members_)
        pd.testing.assert_frame_equal(back.predict_interval([0.8, 0.9]),
                                      model.predict_interval([0.8, 0.9]))
        pd.testing.assert_frame_equal(back.predict_quantiles([0.1, 0.9]),
                                      model.predict_quantiles([0.1, 0.9]))


def test_without_uncertainty_the_error_names_the_parameter(data):
    model = _mola(epochs=1).fit(data)
    for call in (model.predict_interval, model.predict_quantiles, model.predict_distribution):
        with pytest.raises(ValueError, match="uncertainty='laplace'"):
            call()
    naive = SeasonalNaiveForecaster(8, season_length=1).fit(data)
    with pytest.raises(ValueError, match="no predictive distribution"):
        naive.predict_interval()


def test_bad_uncertainty_settings_raise(data, mixture):
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        _mola(uncertainty="bayes").fit(data)
    with pytest.raises(ValueError, match="n_ensemble"):
        _mola(n_ensemble=0).fit(data)
    with pytest.raises(ValueError, match="uncertainty_data"):
        _mola(uncertainty="laplace", uncertainty_data="test").fit(data)
    with pytest.raises(ValueError, match="validation rows"):
        _mola(uncertainty="laplace", uncertainty_data="validation").fit(data)
    with pytest.raises(ValueError, match="dlinear"):
        _mola(backbone="dlinear", uncertainty="laplace").fit(data)
    with pytest.raises(ValueError, match="coverage"):
        mixture.predict_interval(coverage=1.5)
    with pytest.raises(TypeError, match="alpha"):
        mixture.predict_quantiles(alpha=["0.5"])
    assert "uncertainty" not in DLinearForecaster().get_params()


def test_clone_keeps_the_uncertainty_params(mixture):
    params = clone(mixture).get_params()
    assert params["n_ensemble"] == 3 and params["uncertainty"] == "laplace"
    assert params["uncertainty_data"] == "train"


def test_validation_fitted_noise_and_window_distributions(data):
    train, val = data.iloc[:150], data.iloc[150 - 24:]
    model = DirectForecaster(24, 8, backbone_params=SMALL, epochs=2, batch_size=32,
                             uncertainty="noise", uncertainty_data="validation")
    model.fit(train, y_val=val)
    n_windows = len(val) - 24 - 8 + 1
    assert model.laplace_[0][0].n_rows_ == n_windows * 2  # head rows: windows x variables
    dist = model.predict_windows_distribution(val)
    assert isinstance(dist, GaussianMixture) and dist.batch_shape == (n_windows, 8, 2)
    target = np.stack([val.to_numpy()[i + 24:i + 32] for i in range(dist.batch_shape[0])])
    scores = probabilistic_scores(target, dist)
    # fitted on these very windows, the noise level matches their errors: calibrated-ish
    assert 0.75 < scores["coverage90"] < 0.99


def test_windows_with_a_constant_variable_are_left_out_of_the_noise_fit():
    """A variable stuck at one value for a whole lookback would divide its future by the
    normalisation's floor and swamp the fitted noise; those windows are skipped, with a warning."""
    rng = np.random.default_rng(3)
    n = 400
    t = np.arange(n)
    values = np.stack([np.sin(t / 6) + 0.1 * rng.normal(size=n),
                       np.cos(t / 9) + 0.1 * rng.normal(size=n)], axis=1)
    values[200:260, 1] = values[199, 1]  # a stuck sensor for 60 rows, then live again
    y = pd.DataFrame(values, columns=["a", "b"],
                     index=pd.date_range("2024-01-01", periods=n, freq="h"))
    before = y.copy()
    params = dict(lookback=24, horizon=8, epochs=1, batch_size=32, uncertainty="laplace",
                  backbone_params=SMALL, random_state=0)
    with pytest.warns(UserWarning, match="left out of the Laplace and noise fit"):
        model = DirectForecaster(**params).fit(y)
    pd.testing.assert_frame_equal(y, before)
    # lookbacks of 24 rows inside the stuck rows 200..259 start at 199..236 (the first stuck
    # value repeats row 199): the training windows among them are skipped
    assert 0 < model.uncertainty_skipped_windows_ <= 38
    clean = DirectForecaster(**params).fit(y.iloc[:190])
    assert clean.uncertainty_skipped_windows_ == 0
    noise = np.asarray(model.laplace_[0][0].sigma_noise_)
    # without the skip the last steps' noise is ~9x the clean fit's; with it, within 4x (the
    # refitted head also follows the partly stuck lookbacks kept in the fit: 3.5x measured)
    assert np.all(noise < 4 * np.asarray(clean.laplace_[0][0].sigma_noise_))
    assert model.predict_interval(coverage=0.9).notna().all().all()


def test_a_file_with_the_old_frozen_head_posterior_loads_with_a_warning(mixture):
    state = mixture._state_to_save()
    for member in state["laplace_"]:
        for entry in member:
            # what files written before the members' own heads hold
            entry.pop("head")
            entry["params"].pop("prior_mean")
            entry["fitted"].pop("prior_mean_")
    old = _mola(n_ensemble=3, uncertainty="laplace")
    old.n_features_in_ = mixture.n_features_in_
    with pytest.warns(UserWarning, match="old last-layer Laplace on the frozen foundation head"):
        old._restore_state(state)


def test_conformal_corrects_the_intervals_on_validation_and_adapts_through_update(data, tmp_path):
    train, val = data.iloc[:150], data.iloc[126:]
    raw = _mola(uncertainty="laplace", conformal=None).fit(train, y_val=val)
    split = _mola(uncertainty="laplace", conformal="split").fit(train, y_val=val)
    assert raw.conformal_ is None and split.conformal_.pooling_ == "steps and variables"
    pd.testing.assert_frame_equal(raw.predict(), split.predict())
    assert not np.allclose(raw.predict_interval(0.9), split.predict_interval(0.9))
    np.testing.assert_allclose(raw.predict_distribution().var, split.predict_distribution().var)
    adaptive = _mola(uncertainty="laplace", conformal="adaptive").fit(train, y_val=val)
    before = adaptive.predict_interval(0.9)
    adaptive.update(data.iloc[150:160])
    assert not np.allclose(adaptive.conformal_.alpha_[0.9], 0.1)
    after = adaptive.predict_interval(0.9)
    assert after.index[0] == data.index[160] and not np.allclose(before, after)
    path = adaptive.save(tmp_path / "adaptive.pt")
    pd.testing.assert_frame_equal(MoLAForecaster.load(path).predict_interval(0.9), after)
    with pytest.raises(ValueError, match="continue the series"):
        adaptive.update(data.iloc[170:175])
    # the default chooses split or adaptive on the validation windows alone and keeps why
    auto = _mola(uncertainty="laplace").fit(train, y_val=val)
    errors = auto.conformal_.selection_
    assert auto.conformal == "auto" and set(errors) == {"split", "adaptive"}
    assert auto.conformal_.method == ("adaptive" if errors["adaptive"] < errors["split"]
                                      else "split")
    chosen = _mola(uncertainty="laplace", conformal=auto.conformal_.method).fit(train, y_val=val)
    pd.testing.assert_frame_equal(auto.predict_interval(0.8), chosen.predict_interval(0.8))
    loaded = MoLAForecaster.load(auto.save(tmp_path / "auto.pt"))
    assert loaded.conformal_.selection_ == errors
    with pytest.warns(UserWarning, match="at least 4 are needed"):
        few = _mola(uncertainty="laplace").fit(train, y_val=data.iloc[126:160])  # 3 windows
    assert few.conformal_.method == "split" and not hasattr(few.conformal_, "selection_")
    with pytest.warns(UserWarning, match="no"):
        _mola(uncertainty="laplace").fit(train)  # no validation windows: the raw mixture
    with pytest.raises(ValueError, match="conformal must be one of"):
        _mola(uncertainty="laplace", conformal="cqr").fit(train, y_val=val)


@pytest.mark.parametrize("diversity", ["bootstrap", "foundations"])
def test_diversity_options_make_members_that_differ_and_survive_save_load(data, diversity,
                                                                          tmp_path):
    model = _mola(n_ensemble=2, diversity=diversity, uncertainty="laplace",
                  conformal=None).fit(data)
    plain = _mola(n_ensemble=2, uncertainty="laplace", conformal=None).fit(data)
    x = torch.tensor(model._to_scaled(model.context_)[None])
    # member 0 is trained differently (resampled windows) or member 1 has its own foundation
    if diversity == "foundations":
        assert len(model.foundations_) == 2 and model.foundations_[0] is model.foundation_
        assert not torch.allclose(model.foundations_[1].model_.head.weight,
                                  model.foundation_.model_.head.weight)
    else:
        assert model.foundations_ is None
        assert not torch.allclose(model.members_[0](x), plain.members_[0](x))
    split = model.predict_distribution().variance_decomposition()
    assert all((part > 0).all() for part in split.values())
    path = model.save(tmp_path / f"{diversity}.pt")
    pd.testing.assert_frame_equal(MoLAForecaster.load(path).predict_interval(0.9),
                                  model.predict_interval(0.9))


def test_the_heads_prior_scale_is_chosen_on_the_validation_mse(data):
    model = _mola(uncertainty="laplace", validation_fraction=0.2, conformal=None).fit(data)
    mse = model.head_validation_mse_
    assert len(mse) == 6 and min(mse, key=mse.get) == f"{model.head_prior_scale_:g}"
    with pytest.raises(ValueError, match="diversity must be one of"):
        _mola(diversity="seeds").fit(data)
    with pytest.raises(ValueError, match="foundation=None"):
        _mola(diversity="foundations", foundation=model.foundation_).fit(data)
