"""MoLAForecaster's ``layers`` configuration: every option of mola_ts.nn reachable from the
forecaster, only the adapters train, the GuiLoMo plan is applied, clear errors, persistence."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from mola_ts.forecast import MoLAForecaster
from mola_ts.forecast.layers import LAYER_DEFAULTS, check_layers
from mola_ts.nn import lora_layers
from mola_ts.persistence import save_estimator

TWO_BLOCKS = {"d_model": 8, "d_ff": 8, "n_heads": 2, "n_layers": 2}

OPTIONS = {
    "default": None,
    "topk": {"router": "topk", "top_k": 2},
    "ldmole": {"router": "ldmole"},
    "mola2468": {"plan": "mola2468"},
    "mola8642": {"plan": "mola8642"},
    "hilo": {"plan": {"experts": [2, 4], "ranks": [1, 2]}},
    "guilomo": {"plan": "guilomo", "search_steps": 2},
    "mosld": {"shared_A": True, "dropconnect": 0.1},
    "topk_mosld_mola": {"router": "topk", "plan": "mola2468", "shared_A": True},
}


@pytest.fixture(scope="module")
def series():
    t = np.arange(260)
    rng = np.random.default_rng(0)
    return np.stack([np.sin(t / 4.0), np.cos(t / 7.0)], axis=1) + 0.05 * rng.normal(size=(260, 2))


@pytest.fixture(scope="module")
def foundation(series):
    return MoLAForecaster(lookback=12, horizon=8, segment_length=4, backbone_params=TWO_BLOCKS,
                          n_experts=4, rank=2, epochs=1, foundation_epochs=1
                          ).fit(series).foundation_


def _model(foundation, layers, **kwargs):
    return MoLAForecaster(lookback=12, horizon=8, segment_length=4, foundation=foundation,
                          n_experts=4, rank=2, epochs=1, batch_size=16, layers=layers, **kwargs)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_trains_only_its_adapters(series, foundation, option):
    layers = copy.deepcopy(OPTIONS[option])
    model = _model(foundation, layers).fit(series)
    assert layers == OPTIONS[option]  # the user's dict is not modified
    forecast = np.asarray(model.predict())
    assert forecast.shape == (8, 2) and np.isfinite(forecast).all()
    frozen = dict(foundation.model_.named_parameters())
    adapted = lora_layers(model.model_.network)
    assert adapted
    moved = 0
    for name, param in model.model_.network.named_parameters():
        base_name = name.replace(".base.", ".")
        if base_name in frozen and ".lora_" not in name:
            torch.testing.assert_close(param, frozen[base_name])  # the foundation never moves
    for layer in adapted.values():
        moved += int(layer.lora_B.detach().abs().sum() > 0)  # B starts at zero
    assert moved == len(adapted)
    assert model.layers_ == check_layers(OPTIONS[option], params={"n_experts": 4, "rank": 2})


def test_layer_options_reach_the_layers(series, foundation):
    mosld = _model(foundation, OPTIONS["mosld"]).fit(series)
    assert all(layer.config.shared_A and layer.config.dropconnect == 0.1
               for layer in lora_layers(mosld.model_.network).values())
    topk = _model(foundation, {"router": "topk", "top_k": 3}).fit(series)
    assert {(layer.config.router, layer.config.top_k)
            for layer in lora_layers(topk.model_.network).values()} == {("topk", 3)}
    plan = _model(foundation, {"plan": "mola8642"}).fit(series)
    experts = [layer.n_experts for layer in lora_layers(plan.model_.network).values()]
    assert experts == [8, 8, 4, 4]  # two blocks: depth groups 0 and 2 of 8-6-4-2
    hilo = _model(foundation, OPTIONS["hilo"]).fit(series)
    assert [layer.ranks[0] for layer in lora_layers(hilo.model_.network).values()] == [1, 1,
                                                                                      2, 2]


def test_the_guilomo_plan_is_searched_and_applied(series, foundation):
    model = _model(foundation, OPTIONS["guilomo"]).fit(series)
    plan = model.layer_plan_["layers"]
    built = lora_layers(model.model_.network)
    assert list(plan) == list(built)
    for name, layer in built.items():
        assert layer.n_experts == plan[name]["n_experts"]
        assert list(layer.ranks) == plan[name]["ranks"]
        assert not layer.config.gsv
        assert 2 <= layer.n_experts <= 4 and max(layer.ranks) <= 2
    assert model.search_seconds_ > 0 and model.adapt_seconds_ >= model.search_seconds_
    again = _model(foundation, OPTIONS["guilomo"]).fit(series)
    assert again.layer_plan_ == model.layer_plan_  # the search is seeded


def test_layers_survive_get_params_clone_and_save_load(series, foundation, tmp_path):
    layers = {"plan": "guilomo", "search_steps": 2, "router": "topk"}
    model = _model(foundation, layers).fit(series)
    assert clone(model).get_params()["layers"] == layers
    path = model.save(tmp_path / "m.mola")
    loaded = MoLAForecaster.load(path)
    assert loaded.get_params()["layers"] == layers
    assert loaded.layer_plan_ == model.layer_plan_
    np.testing.assert_allclose(np.asarray(loaded.predict()), np.asarray(model.predict()),
                               rtol=1e-5, atol=1e-6)


def test_files_saved_before_the_layers_parameter_still_load(series, foundation, tmp_path):
    model = _model(foundation, None).fit(series)
    params = model._params_to_save()
    del params["layers"]  # what older versions wrote
    state = model._state_to_save()
    for key in ("layers_", "layer_plan_", "search_seconds_"):
        state.pop(key)
    path = save_estimator(model, tmp_path / "old.mola", state, params=params)
    loaded = MoLAForecaster.load(path)
    assert loaded.layers is None
    np.testing.assert_allclose(np.asarray(loaded.predict()), np.asarray(model.predict()),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers, kwargs, error, fragment", [
    ({"routr": "topk"}, {}, ValueError, "unknown layers keys ['routr']"),
    ({"router": "softmax"}, {}, ValueError, "router must be one of"),
    ({"plan": "mola1234"}, {}, ValueError, "layers['plan'] must be one of"),
    ({"plan": {"experts": [2, 4]}}, {}, ValueError, "'experts' and 'ranks'"),
    ({"plan": {"experts": [2, 4], "ranks": [1]}}, {}, ValueError, "as many ranks"),
    ({"plan": {"experts": [0], "ranks": [1]}}, {}, ValueError, "experts"),
    ({"dropconnect": 0.1}, {}, ValueError, "needs layers['shared_A']=True"),
    ({"dropconnect": 1.5, "shared_A": True}, {}, ValueError, "in [0, 1)"),
    ({"shared_A": "yes"}, {}, TypeError, "must be a bool"),
    ({"top_k": 3}, {}, ValueError, "read by the top-k router only"),
    ({"router": "topk", "top_k": 9}, {}, ValueError, "exceeds n_experts"),
    ({"search_steps": 5}, {}, ValueError, "plan='guilomo' only"),
    ({"n_experts": 3}, {"n_experts": 5}, ValueError, "n_experts is given twice"),
    ({"router": "topk"}, {"router": "ldmole"}, ValueError, "router is given twice"),
    ({"plan": "mola2468"}, {"adapter": "lora"}, ValueError, "need adapter='mola'"),
    ([("router", "topk")], {}, TypeError, "layers must be a dict"),
])
def test_invalid_layer_configurations_are_named(series, layers, kwargs, error, fragment):
    params = {"n_experts": 4, "rank": 2, **kwargs}
    model = MoLAForecaster(lookback=12, horizon=8, segment_length=4, backbone_params=TWO_BLOCKS,
                           epochs=1, foundation_epochs=1, layers=layers, **params)
    with pytest.raises(error) as info:
        model.fit(series)
    assert fragment in str(info.value)
    assert not hasattr(model, "foundation_")  # refused before any training


def test_defaults_are_the_papers():
    assert check_layers(None) == LAYER_DEFAULTS
    assert LAYER_DEFAULTS["router"] == "segment" and LAYER_DEFAULTS["plan"] == "uniform"
    assert (LAYER_DEFAULTS["n_experts"], LAYER_DEFAULTS["rank"]) == (6, 8)
    assert check_layers({"n_experts": 6}, params={"n_experts": 6})["n_experts"] == 6


def test_segments_per_step_trains_drawn_segments(series, foundation, monkeypatch):
    from mola_ts.forecast import adapters

    seen = []
    original = adapters.SegmentAdapter.forward

    def spy(self, x, segments=None):
        seen.append(None if segments is None else len(segments))
        return original(self, x, segments)

    monkeypatch.setattr(adapters.SegmentAdapter, "forward", spy)
    model = MoLAForecaster(lookback=12, horizon=16, segment_length=4, foundation=None,
                           backbone_params=TWO_BLOCKS, n_experts=2, rank=2, epochs=1,
                           foundation_epochs=1, batch_size=16, segments_per_step=2)
    model.fit(series)
    assert 2 in seen and max(n for n in seen if n is not None) == 2  # training: 2 of K = 4
    assert None in seen  # validation: every segment
    again = clone(model).fit(series)
    np.testing.assert_array_equal(np.asarray(again.predict()), np.asarray(model.predict()))
    with pytest.raises(ValueError, match="segments_per_step"):
        clone(model).set_params(segments_per_step=0).fit(series)


def test_validation_stride_reads_every_nth_validation_window(series, foundation, monkeypatch):
    from mola_ts.forecast import mola as mola_module

    sizes = []
    original = mola_module.evaluate

    def spy(module, data, *args, **kwargs):
        sizes.append(len(data))
        return original(module, data, *args, **kwargs)

    monkeypatch.setattr(mola_module, "evaluate", spy)
    _model(foundation, None).fit(series)
    _model(foundation, None, validation_stride=3).fit(series)
    assert len(sizes) == 2 and sizes[1] == -(-sizes[0] // 3)
    with pytest.raises(ValueError, match="validation_stride"):
        _model(foundation, None, validation_stride=0).fit(series)


def test_foundation_dropout_false_keeps_the_frozen_network_at_inference(series, foundation,
                                                                        monkeypatch):
    """With foundation_dropout=False, train() reaches the adapters only: every dropout of the
    frozen network stays off while the adapters train; the default trains like a plain loop."""
    from mola_ts.forecast import adapters

    modes = []
    original = adapters.SegmentAdapter.forward

    def spy(self, x, segments=None):
        if self.training:
            own = {id(m) for layer in lora_layers(self.network).values()
                   for m in layer.modules()}
            frozen = [m.training for m in self.network.modules()
                      if isinstance(m, torch.nn.Dropout) and id(m) not in own]
            modes.append((self.foundation_dropout, any(frozen)))
        return original(self, x, segments)

    monkeypatch.setattr(adapters.SegmentAdapter, "forward", spy)
    sizes = {**TWO_BLOCKS, "dropout": 0.3}
    base = MoLAForecaster(lookback=12, horizon=8, segment_length=4, backbone_params=sizes,
                          n_experts=2, rank=2, epochs=1, foundation_epochs=1).fit(series)
    off = _model(base.foundation_, {"dropout": 0.2}, foundation_dropout=False).fit(series)
    assert {m for m in modes if m[0] is False} == {(False, False)}
    modes.clear()
    _model(base.foundation_, None).fit(series)
    assert {m for m in modes if m[0] is True} == {(True, True)}
    # the adapters still train, and their own dropout follows train()
    lora = lora_layers(off.model_.network)
    off.model_.train()
    assert not off.model_.network.training and all(layer.training for layer in lora.values())
    assert np.isfinite(np.asarray(off.predict())).all()
    with pytest.raises(ValueError, match="foundation_dropout"):
        _model(foundation, None, foundation_dropout="no").fit(series)
