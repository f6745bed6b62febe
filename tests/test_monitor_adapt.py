"""The residual monitor on the shared LoRA-MoE layers and its adaptation to a new mode."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mola_ts.monitor import ResidualMonitor
from mola_ts.monitor.lora_predictor import LoRAMoEPredictor
from mola_ts.monitor.predictor import lag_matrix
from mola_ts.nn import LoRAMoE, TaskRouter, lora_layers


def _process(n: int, a: float, scale: float, offset: float, seed: int) -> np.ndarray:
    """A VAR(1) with a mode-specific gain, spread and level (4 coupled variables)."""
    rng = np.random.default_rng(seed)
    coupling = np.array([[a, 0.1, 0, 0], [0, a, 0.1, 0], [0, 0, a, 0.1], [0.1, 0, 0, a]])
    x = np.zeros((n, 4))
    for t in range(1, n):
        x[t] = x[t - 1] @ coupling.T + rng.normal(size=4)
    return x * scale + offset


pytestmark = pytest.mark.filterwarnings("ignore::mola_ts.monitor.LimitSupportWarning")


@pytest.fixture(scope="module")
def source():
    return ResidualMonitor(predictor="lora-moe", hidden_size=4).fit(_process(800, 0.8, 1, 0, 0))


def _new_mode(n: int, seed: int) -> np.ndarray:
    return _process(n, 0.5, 3.0, 10.0, seed)


def test_predictor_is_built_of_the_shared_lora_moe_layers(source):
    net = source.predictor_.network_
    layers = lora_layers(net)
    assert sorted(layers) == ["hidden", "linear", "out"]
    assert all(isinstance(layer, LoRAMoE) and isinstance(layer.router, TaskRouter)
               for layer in layers.values())
    lagged = lag_matrix((_new_mode(50, 1) - source.mean_) / source.scale_, 1)
    # numpy scoring of the merged weights equals the routed LoRA-MoE forward
    np.testing.assert_allclose(source.predictor_.predict_lagged(lagged),
                               source.predictor_.predict_torch(lagged), atol=1e-12)


def test_adapt_trains_only_the_new_modes_adapter(source):
    monitor = copy.deepcopy(source)
    net = monitor.predictor_.network_
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lagged = lag_matrix(np.random.default_rng(2).normal(size=(30, 4)), 1)
    source_pred = monitor.predictor_.predict_torch(lagged, task=0)
    monitor.adapt(_new_mode(160, 1), mode="grade B")
    after = net.state_dict()
    trunk = [k for k in before if ".base." in k]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)  # frozen trunk
    assert all(not p.requires_grad for p in monitor.predictor_.trunk_parameters())
    rank, slot = monitor.predictor_.rank, monitor.modes_.index("grade B")
    rows = slice(slot * rank, (slot + 1) * rank)
    for name in lora_layers(net):
        a0, a1 = before[f"{name}.lora_A"], after[f"{name}.lora_A"]
        b0, b1 = before[f"{name}.lora_B"], after[f"{name}.lora_B"]
        keep = torch.ones(a0.shape[0], dtype=torch.bool)
        keep[rows] = False
        assert torch.equal(a0[keep], a1[keep]) and torch.equal(b0[:, keep], b1[:, keep])
        assert torch.equal(before[f"{name}.router.task_logits"],
                           after[f"{name}.router.task_logits"])
    assert any(after[f"{n}.lora_B"][:, rows].abs().sum() > 0 for n in lora_layers(net))
    # the source mode's predictions are those of the trunk, unchanged
    np.testing.assert_array_equal(monitor.predictor_.predict_torch(lagged, task=0), source_pred)
    assert monitor.mode_ == "grade B" and monitor.modes_ == ["source", "grade B"]
    assert monitor.predictor_.adapter_size() == sum(
        rank * (la.in_features + la.out_features) for la in lora_layers(net).values())


@pytest.mark.parametrize(("limit", "scale"), [("source", "source"), ("parametric", "new")])
def test_adapted_monitor_stops_the_flood_of_false_alarms(source, limit, scale):
    test = _new_mode(3000, 7)
    assert source.predict(test).mean() > 0.5  # the source monitor floods in the new mode
    adapted = copy.deepcopy(source).adapt(_new_mode(160, 3), mode=2, limit=limit, scale=scale)
    assert adapted.predict(test).mean() < 0.05
    faulty = test.copy()
    faulty[1500:, 1] += 30.0  # ten new-mode residual standard deviations
    assert adapted.predict(faulty)[1500:1510].any()
    assert adapted.calibration_["adapted"]["limit"] == limit
    assert adapted.calibration_["adapted"]["scale"] == scale
    if scale == "source":
        np.testing.assert_array_equal(adapted.scale_, source.scale_)


def test_adapt_leaves_its_input_alone_and_streams_equal_batches(source):
    x = _new_mode(160, 4)
    kept = x.copy()
    adapted = copy.deepcopy(source).adapt(x)
    np.testing.assert_array_equal(x, kept)
    assert adapted.mode_ == "mode1"
    test = _new_mode(60, 5)
    stream = adapted.stream()
    rows = [stream.update(row[None, :])["score"].to_numpy()[0] for row in test]
    np.testing.assert_array_equal(np.array(rows), adapted.score_samples(test))


def test_adapted_monitor_saves_and_loads(source, tmp_path):
    adapted = copy.deepcopy(source).adapt(_new_mode(160, 6), mode=3, limit="parametric")
    path = adapted.save(tmp_path / "adapted.pt")
    loaded = ResidualMonitor.load(path)
    test = _new_mode(200, 8)
    np.testing.assert_array_equal(loaded.score_samples(test), adapted.score_samples(test))
    assert loaded.modes_ == ["source", 3] and loaded.mode_ == 3


def test_adapt_drops_the_laplace_mixture_of_the_source_mode(source, tmp_path):
    assert len(source.laplace_["members"]) == 1  # n_ensemble None: 1 for a neural predictor
    test = _new_mode(200, 9)
    assert source.predict_fault_probability(test).attrs["method"] == "laplace"
    adapted = copy.deepcopy(source).adapt(_new_mode(160, 6), mode=3)
    assert adapted.laplace_ is None
    out = adapted.predict_fault_probability(test)  # the tail model of the adapted statistic
    assert out.attrs["method"] == "tail" and "p_value" in out.columns
    with pytest.raises(ValueError, match="no Laplace posterior"):
        adapted.predict_fault_probability(test, method="laplace")
    loaded = ResidualMonitor.load(adapted.save(tmp_path / "adapted.pt"))
    assert loaded.laplace_ is None
    np.testing.assert_array_equal(loaded.predict_proba(test), adapted.predict_proba(test))


def test_adapt_refuses_bad_requests(source):
    x = _new_mode(160, 9)
    with pytest.raises(ValueError, match="predictor='lora-moe'"):
        ResidualMonitor().fit(_process(300, 0.8, 1, 0, 0)).adapt(x)
    with pytest.raises(ValueError, match="limit must be one of"):
        copy.deepcopy(source).adapt(x, limit="empirical")
    with pytest.raises(ValueError, match="scale must be one of"):
        copy.deepcopy(source).adapt(x, scale="robust")
    with pytest.raises(ValueError, match="columns"):
        copy.deepcopy(source).adapt(x[:, :3])
    with pytest.raises(ValueError, match="at least"):
        copy.deepcopy(source).adapt(x[:3])
    with pytest.raises(ValueError, match="source mode"):
        copy.deepcopy(source).adapt(x, mode="source")
    with pytest.raises(ValueError, match="task must lie"):
        LoRAMoEPredictor(hidden=2, n_modes=2).fit([x]).adapt([x], 2)


def test_bench_adapt_plans_disjoint_stretches_and_seeds():
    import argparse

    import pandas as pd

    from mola_ts.bench.adapt import _SLICES, _plan, _split

    args = argparse.Namespace(modes=[2, 3], hours=[2.0, 8.0, 24.0], train_runs=4,
                              disturbances=["idv_01", "idv_04"], quick=False)
    plan = _plan(args)
    seeds = [job["seed"] for job in plan["train"]] + [
        job["seed"] for k in (2, 3) for jobs in plan[k].values() for job in jobs]
    assert len(seeds) == len(set(seeds))  # every run its own seed
    assert all(job["mode"] == k for k in (2, 3) for jobs in plan[k].values() for job in jobs)
    long = pd.DataFrame({"x": np.arange(20 * 168)})
    parts = _split(long, 1.0)
    rows = sorted((int(p[0]["x"].iloc[0]), int(p[0]["x"].iloc[-1])) for p in parts.values())
    assert all(a[1] < b[0] for a, b in zip(rows, rows[1:], strict=False))  # no overlap
    assert {role: len(p[0]) for role, p in parts.items()} == {
        role: 20 * (b - a) for role, (a, b) in _SLICES.items()}
    assert parts["adapt"][0].index[0] < parts["normal"][0].index[0]  # tests come later
