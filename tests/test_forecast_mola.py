"""MoLA: batched segment routing, identity at start, per-segment stopping, reuse, save/load."""

import numpy as np
import pandas as pd
import pytest
import torch
from support import SMALL_BACKBONE, toy_frame

from mola_ts.forecast import (
    DirectForecaster,
    ITransformer,
    MoLAForecaster,
    SegmentAdapter,
    SegmentEarlyStopping,
)
from mola_ts.nn import LoRAMoEConfig, lora_layers, merge_adapters, unmerge_adapters

SMALL = SMALL_BACKBONE


def _frame(n=200, seed=0):
    return toy_frame(n, columns="ab", seed=seed)


def _adapter(adapter="mola", n_segments=3, seed=0, randomize=True):
    torch.manual_seed(seed)
    foundation = ITransformer(16, 4, d_model=16, d_ff=16, n_heads=2, n_layers=2).eval()
    foundation.requires_grad_(False)  # a fitted foundation is frozen
    n_experts = n_segments if adapter == "lora" else 3
    config = LoRAMoEConfig(n_experts=n_experts, rank=2, alpha=2.0, init="gaussian",
                           init_std=0.01, router="task", n_tasks=n_segments)
    model = SegmentAdapter(foundation, n_segments, config, ITransformer.ADAPTER_TARGETS[0],
                           adapter=adapter, random_state=seed).eval()
    if randomize:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.normal_(0.0, 0.3, generator=g)
                layer.lora_A.normal_(0.0, 0.3, generator=g)
    return foundation, model


@pytest.mark.parametrize("adapter", ["mola", "lora"])
def test_batched_all_segment_forward_equals_each_segment_alone(adapter):
    _, model = _adapter(adapter)
    x = torch.randn(5, 16, 3)
    with torch.no_grad():
        together = model(x)
        assert together.shape == (5, 12, 3)
        for k in range(3):
            alone = model(x, torch.tensor([k]))
            torch.testing.assert_close(together[:, 4 * k:4 * k + 4], alone, rtol=1e-5,
                                       atol=1e-6)
            # and against the independent path: adapter k folded into the weights
            merge_adapters(model.network, task_id=k)
            merged = model.network(x)
            unmerge_adapters(model.network)
            torch.testing.assert_close(alone, merged, rtol=1e-4, atol=1e-5)
        # the shared-prefix path equals routing the plain network on the stacked windows
        from mola_ts.nn import routing

        assert model.shared_prefix
        with routing(model.network, task_ids=torch.arange(3).repeat_interleave(5)):
            plain = model.network(x.repeat(3, 1, 1))
        torch.testing.assert_close(together, plain.reshape(3, 5, 4, 3).transpose(0, 1).reshape(
            5, 12, 3), rtol=1e-5, atol=1e-6)
        # the segments really differ once the adapters are non-zero
        assert not torch.allclose(together[:, :4], together[:, 4:8])


@pytest.mark.parametrize("adapter", ["mola", "lora"])
def test_fresh_adapter_reproduces_the_foundation_exactly(adapter):
    foundation, model = _adapter(adapter, randomize=False)
    x = torch.randn(6, 16, 3)
    with torch.no_grad():
        base = foundation(x)
        out = model(x)
    # B = 0: the adapted network is the foundation; only float rounding of differently
    # batched matmuls may differ
    for k in range(3):
        torch.testing.assert_close(out[:, 4 * k:4 * k + 4], base, rtol=1e-6, atol=1e-6)


def test_fresh_mola_forecaster_reproduces_its_foundation():
    y = _frame()
    foundation = DirectForecaster(24, 4, backbone_params=SMALL, epochs=1,
                                  random_state=0).fit(y)
    mola = MoLAForecaster(24, 12, segment_length=4, foundation=foundation, n_experts=2, rank=2,
                          epochs=1, lr=1e-3, random_state=0)
    mola.fit(y)
    fresh = mola._build_module().eval()  # B = 0: the adaptation has not moved yet
    window = mola._to_scaled(y.to_numpy()[-24:])[None]
    with torch.no_grad():
        out = fresh(torch.from_numpy(window)).numpy()[0]
    expected = foundation.predict().to_numpy()
    got = mola._from_scaled(out)
    for k in range(3):
        np.testing.assert_allclose(got[4 * k:4 * k + 4], expected, rtol=1e-6, atol=1e-6)


def test_only_adapter_parameters_train_and_the_foundation_is_untouched():
    y = _frame()
    foundation = DirectForecaster(24, 4, backbone_params=SMALL, epochs=1).fit(y)
    before = {k: v.clone() for k, v in foundation.model_.state_dict().items()}
    prediction = foundation.predict()
    for horizon in (8, 12):  # one foundation serves every multiple of S
        mola = MoLAForecaster(24, horizon, segment_length=4, foundation=foundation, n_experts=2,
                              rank=2, epochs=2, random_state=0).fit(y)
        assert mola.foundation_ is foundation
        assert mola.foundation_seconds_ == 0.0
        trainable = {n for n, p in mola._build_module().named_parameters() if p.requires_grad}
        assert trainable and all(("lora_" in n or "router" in n) for n in trainable)
        assert not any(p.requires_grad for p in mola.model_.parameters())  # fitted: frozen
        assert mola.n_trainable_parameters_ < mola.n_parameters_
    for key, value in foundation.model_.state_dict().items():
        assert torch.equal(value, before[key]), key
    pd.testing.assert_frame_equal(foundation.predict(), prediction)


def test_foundation_must_match_segment_length_and_lookback():
    y = _frame()
    foundation = DirectForecaster(24, 4, backbone_params=SMALL, epochs=1).fit(y)
    with pytest.raises(ValueError, match="segment_length=6"):
        MoLAForecaster(24, 12, segment_length=6, foundation=foundation, epochs=1).fit(y)
    with pytest.raises(TypeError, match="DirectForecaster"):
        MoLAForecaster(24, 12, segment_length=4, foundation="model", epochs=1).fit(y)


def test_frozen_estimator_foundation_survives_clone():
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    y = _frame()
    foundation = DirectForecaster(24, 4, backbone_params=SMALL, epochs=1).fit(y)
    mola = clone(MoLAForecaster(24, 8, segment_length=4, foundation=FrozenEstimator(foundation),
                                n_experts=2, rank=2, epochs=1))
    mola.fit(y)
    assert mola.foundation_ is foundation


def test_segment_early_stopping_freezes_a_stopped_segment_only():
    _, model = _adapter("mola", randomize=False)
    model.train()
    stopper = SegmentEarlyStopping(model, patience=2, initial_losses=[1.0, 1.0, 1.0])
    layer = next(iter(lora_layers(model).values()))
    # segment 1 never improves; 0 and 2 do
    for epoch, losses in enumerate([[0.9, 1.1, 0.9], [0.8, 1.2, 0.8]]):
        done = stopper.update(epoch, {"segment_loss": torch.tensor(losses)}, model)
    assert not done
    assert stopper.stopped.tolist() == [False, True, False]
    assert model.active_segments().tolist() == [0, 2]
    frozen = layer.router.task_logits[1].detach().clone()
    others = layer.router.task_logits[[0, 2]].detach().clone()
    experts = layer.lora_B.detach().clone()
    # keep training the active segments: the stopped segment's logits must not move, even
    # though Adam's momentum would move them
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 16, 3)
    for _ in range(3):
        loss = model(x, model.active_segments()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(x)  # any forward re-applies the frozen values
    assert torch.equal(layer.router.task_logits[1], frozen)
    assert not torch.allclose(layer.router.task_logits[[0, 2]], others)
    assert not torch.allclose(layer.lora_B, experts)
    # stopping every segment ends training; restore gives back the last improving state
    for epoch in (2, 3):
        done = stopper.update(epoch, {"segment_loss": torch.tensor([5.0, 5.0, 5.0])}, model)
    assert done and stopper.best_epoch == 1
    stopper.restore(model)
    for key, value in stopper.best_state.items():
        assert torch.equal(model.state_dict()[key], value)


def test_training_stops_per_segment_inside_the_training_loop():
    y = _frame(n=300)
    mola = MoLAForecaster(24, 12, segment_length=4, backbone_params=SMALL, n_experts=2, rank=2,
                          foundation_epochs=1, epochs=6, patience=1, lr=0.05, random_state=0)
    mola.fit(y)
    assert len(mola.segment_stop_epochs_) == 3
    assert np.isfinite(mola.segment_val_loss_).all()
    assert len(mola.history_) <= 6
    # every segment is served again after training
    assert mola.model_.active.all() and not mola.model_._frozen


def test_lora_adapter_keeps_segments_independent():
    _, model = _adapter("lora", randomize=False)
    model.train()
    x = torch.randn(4, 16, 3)
    model(x, torch.tensor([0])).pow(2).mean().backward()
    for layer in lora_layers(model).values():
        assert not layer.router.task_logits.requires_grad
        grad_b = layer.lora_B.grad
        assert grad_b[:, :2].abs().sum() > 0  # expert 0 (rank 2) learns
        assert torch.count_nonzero(grad_b[:, 2:]) == 0  # the other segments' experts do not


def test_ldmole_gates_vary_with_the_window_and_the_segment():
    y = _frame()
    mola = MoLAForecaster(24, 8, segment_length=4, backbone_params=SMALL, router="ldmole",
                          n_experts=3, rank=2, epochs=1, foundation_epochs=1, random_state=0)
    mola.fit(y)
    names = {n for n, p in mola._build_module().named_parameters() if p.requires_grad}
    assert "segment_embedding" in names and any("lambda_mlp" in n for n in names)
    # the gates of every adapted layer, read from its router's output for two windows
    gates: dict[str, torch.Tensor] = {}
    hooks = [layer.router.register_forward_hook(
        lambda _m, _i, out, name=name: gates.__setitem__(name, out.gates))
        for name, layer in lora_layers(mola.model_.network).items()]
    values = y.to_numpy()
    windows = np.stack([mola._to_scaled(values[-24:]), mola._to_scaled(values[-60:-36])])
    try:
        with torch.no_grad():
            mola.model_.eval()(torch.from_numpy(windows))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(gates) == len(lora_layers(mola.model_.network)) >= 2
    for name, g in gates.items():
        g = g.reshape(2, 2, 3)  # (segment, window, expert): the windows are stacked per segment
        torch.testing.assert_close(g.sum(-1), torch.ones(2, 2))
        for k in range(2):  # same segment, other window: other gates
            assert float((g[k, 0] - g[k, 1]).abs().max()) > 1e-4, name
        for w in range(2):  # same window, other segment: other gates
            assert float((g[0, w] - g[1, w]).abs().max()) > 1e-4, name
    # and the forecast follows the window it is given
    first = mola.predict(y_context=y.iloc[:-36])
    assert first.shape == (8, 2) and not np.allclose(first.to_numpy(), mola.predict().to_numpy())


@pytest.mark.parametrize("kind", ["mola", "lora", "ldmole"])
def test_fitted_forecaster_pickles_and_joblib_round_trips_after_predict(tmp_path, kind):
    import pickle

    import joblib

    y = _frame()
    extra = {"lora": {"adapter": "lora"}, "ldmole": {"router": "ldmole"}}.get(kind, {})
    mola = MoLAForecaster(24, 8, segment_length=4, backbone_params=SMALL, n_experts=2, rank=2,
                          epochs=1, foundation_epochs=1, random_state=0, **extra).fit(y)
    expected = mola.predict()
    back = pickle.loads(pickle.dumps(mola))
    pd.testing.assert_frame_equal(back.predict(), expected)
    joblib.dump(mola, tmp_path / "mola.joblib")
    again = joblib.load(tmp_path / "mola.joblib")
    pd.testing.assert_frame_equal(again.predict(), expected)
    context = y.iloc[:150]
    pd.testing.assert_frame_equal(again.predict(y_context=context),
                                  mola.predict(y_context=context))


@pytest.mark.parametrize("kind", ["mola", "lora", "ldmole", "patch", "direct"])
def test_save_and_load_give_identical_predictions(tmp_path, kind):
    y = _frame()
    if kind == "direct":
        model = DirectForecaster(24, 8, backbone_params=SMALL, epochs=1)
    else:
        extra = {"lora": {"adapter": "lora"}, "ldmole": {"router": "ldmole"},
                 "patch": {"backbone": "patch",
                           "backbone_params": {"d_model": 8, "d_ff": 8, "n_heads": 2,
                                               "patch_len": 8, "stride": 4}}}.get(kind, {})
        args = dict(backbone_params=SMALL, n_experts=2, rank=2, epochs=1, foundation_epochs=1)
        args.update(extra)
        model = MoLAForecaster(24, 8, segment_length=4, **args)
    model.fit(y)
    path = model.save(tmp_path / "model.pt")
    back = type(model).load(path)
    pd.testing.assert_frame_equal(back.predict(), model.predict())
    context = y.iloc[:120]
    pd.testing.assert_frame_equal(back.predict(y_context=context),
                                  model.predict(y_context=context))
    assert back.get_params()["lookback"] == 24


def test_same_seed_same_forecast():
    y = _frame()
    args = dict(backbone_params=SMALL, n_experts=2, rank=2, epochs=2, foundation_epochs=1,
                random_state=3)
    a = MoLAForecaster(24, 8, segment_length=4, **args).fit(y).predict()
    b = MoLAForecaster(24, 8, segment_length=4, **args).fit(y).predict()
    pd.testing.assert_frame_equal(a, b)


def _seasonal_ar(n, seed, channels=3, period=12):
    """A period-12 waveform per channel plus an AR(1) component: the near steps depend on the
    recent AR state, every step on the seasonal phase (the steps need different features)."""
    rng = np.random.default_rng(seed)
    ar = np.zeros((n, channels))
    noise = rng.normal(scale=0.3, size=(n, channels))
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + noise[i]
    wave = rng.normal(size=(period, channels))
    return ar + wave[np.arange(n) % period]


def test_mola_beats_direct_on_a_seasonal_series_with_step_specific_features():
    y = _seasonal_ar(1000, seed=0)
    train, val, test = y[:600], y[600 - 24:800], y[800 - 24:]
    sizes = {"d_model": 16, "d_ff": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0}
    direct = DirectForecaster(24, 48, backbone_params=sizes, epochs=3, lr=1e-3,
                              random_state=0).fit(train, y_val=val)
    mola = MoLAForecaster(24, 48, segment_length=12, backbone_params=sizes, n_experts=2,
                          rank=2, foundation_epochs=3, foundation_lr=1e-3, epochs=3, lr=1e-3,
                          random_state=0).fit(train, y_val=val)
    direct_mse, mola_mse = -direct.score(test), -mola.score(test)
    assert mola_mse < 0.9 * direct_mse, (mola_mse, direct_mse)
