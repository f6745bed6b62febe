"""Allocation plans (uniform, MoLA presets, HILO) and the GuiLoMo search: straight-through
masks, the bilevel second-order gradient, discretisation, rebuild and retraining."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mola_ts.nn import (
    AllocationPlan,
    LayerAllocation,
    LoRAMoE,
    LoRAMoEConfig,
    bilevel_gradient,
    collect_aux,
    find_targets,
    gsv_layers,
    guilomo_plan,
    guilomo_search,
    hilo_plan,
    inject,
    layer_groups,
    lora_layers,
    mola_plan,
    rebuild,
    uniform_plan,
)
from mola_ts.nn.layer import _HardPrefixMask
from mola_ts.training import TrainConfig, train

torch.set_num_threads(1)


class Blocks(nn.Module):
    """A toy deep model: ``n`` residual blocks with two linear maps each, and a head."""

    def __init__(self, n: int = 8, d: int = 8, d_out: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"fc1": nn.Linear(d, d), "fc2": nn.Linear(d, d)}) for _ in range(n))
        self.head = nn.Linear(d, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block["fc2"](torch.tanh(block["fc1"](x)))
        return self.head(x)


def test_layer_groups_by_block_depth():
    names = [f"blocks.{i}.{m}" for i in range(8) for m in ("fc1", "fc2")]
    assert layer_groups(names) == [i // 2 for i in range(8) for _ in range(2)]
    assert layer_groups(["a", "b", "c", "d", "e", "f"]) == [0, 0, 1, 2, 2, 3]
    assert layer_groups(["layers.0.q", "layers.1.q"]) == [0, 2]
    with pytest.raises(ValueError, match="empty"):
        layer_groups([])


@pytest.mark.parametrize("preset, expected", [("2468", (2, 4, 6, 8)), ("8642", (8, 6, 4, 2)),
                                              ("8228", (8, 2, 2, 8)), ("5555", (5, 5, 5, 5))])
def test_mola_presets_build_the_layerwise_experts(preset, expected):
    model = Blocks(8)
    names = find_targets(model, r"blocks\.\d+\.fc\d")
    plan = mola_plan(names, preset, rank=4, config=LoRAMoEConfig(router="topk", top_k=2))
    report = inject(model, None, plan, random_state=0)
    experts = [report.layers[f"blocks.{i}.fc1"]["n_experts"] for i in range(8)]
    assert experts == [e for e in expected for _ in range(2)]
    assert all(info["ranks"] == [4] * info["n_experts"] for info in report.layers.values())
    assert plan.total_rank == 4 * 2 * 2 * sum(expected)
    per_expert = 4 * 8 + 8 * 4 + 8  # A rows, B columns, router row
    assert report.trainable == sum(2 * 2 * e * per_expert for e in expected)


def test_hilo_plan_sets_experts_and_ranks_per_group():
    model = Blocks(4)
    names = find_targets(model, ["fc1", "fc2"])
    plan = hilo_plan(names, config=LoRAMoEConfig(router="ldmole"))
    inject(model, None, plan)
    layers = lora_layers(model)
    for i, k in enumerate((2, 4, 6, 8)):
        layer = layers[f"blocks.{i}.fc2"]
        assert layer.n_experts == k and layer.ranks == (k,) * k
        assert layer.lora_A.shape == (k * k, 8)
    y = model(torch.randn(5, 8))
    assert y.shape == (5, 1)
    assert collect_aux(model).layers["blocks.3.fc1"]["load"].shape == (8,)


def test_uniform_plan_and_plan_roundtrip_and_errors():
    names = ["a.0.q", "a.1.q"]
    plan = uniform_plan(names, n_experts=3, rank=2, config=LoRAMoEConfig(top_k=5))
    assert plan.config_for("a.1.q").n_experts == 3
    assert plan.config_for("a.1.q").top_k == 3  # capped at the experts of the layer
    again = AllocationPlan.from_dict(plan.to_dict())
    assert again.layers == plan.layers and again.config == plan.config
    assert '"n_experts": 3' in plan.to_json()
    assert "total rank 12" in str(plan)
    hetero = AllocationPlan(LoRAMoEConfig(), {"x": LayerAllocation(2, (1, 3))})
    assert hetero.config_for("x").rank == (1, 3)
    with pytest.raises(ValueError, match="no layer"):
        plan.config_for("b")
    with pytest.raises(ValueError, match="preset"):
        mola_plan(names, "1234")
    with pytest.raises(ValueError, match="one positive rank"):
        LayerAllocation(2, (1,))
    model = Blocks(2)
    with pytest.raises(ValueError, match="not matched"):
        inject(model, ["fc1"], uniform_plan(find_targets(model, ["fc1", "fc2"])))
    with pytest.raises(ValueError, match="no entry"):
        inject(model, ["fc1", "fc2"], uniform_plan(["blocks.0.fc1"]))


def test_hard_prefix_mask_forward_and_straight_through_backward():
    s = torch.tensor([[0.2, 0.9, 0.5], [0.1, 0.2, 0.7]], requires_grad=True)
    mask = _HardPrefixMask.apply(s, 1.0, 1e-4)
    torch.testing.assert_close(mask.detach(), torch.tensor([[1.0, 1.0, 1e-4], [1.0, 1.0, 1.0]]))
    mask.backward(torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]))
    # the gradient times s, summed over the kept positions, lands on the argmax only
    torch.testing.assert_close(s.grad, torch.tensor([[0.0, 1 * 0.2 + 2 * 0.9, 0.0],
                                                     [0.0, 0.0, 0.1 + 0.2 + 0.7]]))


def test_gsv_layer_masks_experts_and_ranks_and_receives_gradients():
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Linear(6, 4), LoRAMoEConfig(n_experts=4, rank=3, router="softmax",
                                                     gsv=True))
    with torch.no_grad():
        layer.gsv_experts.copy_(torch.tensor([0.0, 5.0, -1.0, -2.0]))  # keep 2 experts
        layer.gsv_ranks.copy_(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [0, 0, 3.0]]))
        layer.lora_B.normal_()
    assert layer.selected_experts() == 2
    assert layer.selected_ranks() == (1, 2, 3, 3)
    A = layer.effective_A(training=False).detach()
    scale = torch.tensor([1, 1e-4, 1e-4, 1, 1, 1e-4, 1, 1, 1, 1, 1, 1]).reshape(-1, 1)
    torch.testing.assert_close(A, layer.lora_A.detach() * scale)
    y = layer(torch.randn(10, 6))
    assert float(layer.last_stats["mean_gate"][2:].abs().max()) == 0.0
    assert float(layer.last_stats["mean_gate"][:2].min()) > 0.0
    y.pow(2).sum().backward()
    ge, gr = layer.gsv_experts.grad, layer.gsv_ranks.grad
    assert float(ge[1].abs()) > 0 and float(ge[[0, 2, 3]].abs().max()) == 0.0
    assert float(gr[1, 1].abs()) > 0 and float(gr[1, [0, 2]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="gsv"):
        layer.merge()
    with pytest.raises(ValueError, match="one rank"):
        LoRAMoEConfig(n_experts=2, rank=(1, 2), gsv=True)


def test_bilevel_gradient_matches_exact_unrolled_gradient():
    g = torch.Generator().manual_seed(0)
    X_t, X_v = torch.randn(20, 4, generator=g, dtype=torch.float64), \
        torch.randn(20, 4, generator=g, dtype=torch.float64)
    y_t, y_v = torch.randn(20, generator=g, dtype=torch.float64), \
        torch.randn(20, generator=g, dtype=torch.float64)
    w = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
    a = nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))

    def loss(X, y, weights):
        return ((X @ (weights * torch.sigmoid(a)) - y) ** 2).mean() + (weights ** 4).sum() * 0.01

    xi = 0.05
    (got,), val = bilevel_gradient(lambda: loss(X_t, y_t, w), lambda: loss(X_v, y_v, w), [w],
                                   [a], xi)
    w_before = w.detach().clone()
    (gw,) = torch.autograd.grad(loss(X_t, y_t, w), [w], create_graph=True)
    unrolled = w - xi * gw
    (exact,) = torch.autograd.grad(loss(X_v, y_v, unrolled), [a])
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(val, float(loss(X_v, y_v, unrolled).detach()))
    assert torch.equal(w.detach(), w_before)  # weights restored
    (first,), _ = bilevel_gradient(lambda: loss(X_t, y_t, w), lambda: loss(X_v, y_v, w), [w],
                                   [a], 0.0)
    (direct,) = torch.autograd.grad(loss(X_v, y_v, w), [a])
    torch.testing.assert_close(first, direct)
    assert not torch.allclose(first, exact)  # the second-order term matters here


def _regression_batches(n_batches: int = 4, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(8, generator=g)
    batches = []
    for _ in range(n_batches):
        x = torch.randn(size, 8, generator=g)
        batches.append((x, (torch.sin(x * 1.5) @ teacher)[:, None]))
    return batches


def _mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y) + collect_aux(model).loss


def test_guilomo_search_changes_gsvs_yields_plan_that_rebuilds_and_trains():
    torch.manual_seed(0)
    model = Blocks(4)
    search_cfg = LoRAMoEConfig(n_experts=4, rank=4, router="softmax", gsv=True, alpha=8.0)
    inject(model, ["fc1", "fc2"], search_cfg, random_state=0)
    before = {n: (m.gsv_experts.detach().clone(), m.gsv_ranks.detach().clone())
              for n, m in gsv_layers(model).items()}
    base_before = model.blocks[0]["fc1"].base.weight.detach().clone()
    batches = _regression_batches()
    result = guilomo_search(model, batches, _mse, n_steps=25, lr=1e-2, gsv_lr=3e-2,
                            random_state=0)
    assert len(result.history) == 25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    moved = max(float((m.gsv_experts.detach() - before[n][0]).abs().max())
                + float((m.gsv_ranks.detach() - before[n][1]).abs().max())
                for n, m in gsv_layers(model).items())
    assert moved > 1e-2  # the selection vectors were learned
    assert result.final != result.initial  # and the discrete selection changed
    assert torch.equal(model.blocks[0]["fc1"].base.weight, base_before)  # base stays frozen
    plan = result.plan
    assert set(plan.layers) == set(gsv_layers(model))
    for name, alloc in plan.layers.items():
        layer = gsv_layers(model)[name]
        assert alloc.n_experts == min(max(2, layer.selected_experts()), 4)
        assert alloc.ranks == layer.selected_ranks()[:alloc.n_experts]
        assert all(1 <= r <= 4 for r in alloc.ranks)
    assert plan.config.router == "topk" and plan.config.top_k == 2 and not plan.config.gsv
    assert result.final == {n: (m.selected_experts(), m.selected_ranks())
                            for n, m in gsv_layers(model).items()}

    report = rebuild(model, plan, random_state=0)
    assert not gsv_layers(model)
    for name, alloc in plan.layers.items():
        assert report.layers[name]["n_experts"] == alloc.n_experts
        assert report.layers[name]["ranks"] == list(alloc.ranks)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    start = float(_mse(model, (x, y)).detach())
    train(model, (x, y), _mse,
          TrainConfig(epochs=15, batch_size=32, lr=1e-2, patience=None, random_state=0))
    assert float(_mse(model, (x, y)).detach()) < 0.8 * start


def test_guilomo_plan_minimum_experts_and_errors():
    model = Blocks(1)
    inject(model, ["fc1"], LoRAMoEConfig(n_experts=3, rank=2, gsv=True))
    layer = model.blocks[0]["fc1"]
    with torch.no_grad():
        layer.gsv_experts.copy_(torch.tensor([1.0, 0.0, 0.0]))
        layer.gsv_ranks.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    plan = guilomo_plan(model)
    assert plan.layers["blocks.0.fc1"] == LayerAllocation(2, (2, 1))
    with pytest.raises(ValueError, match="at least 2"):
        guilomo_search(model, [(torch.randn(2, 8), torch.randn(2, 1))], _mse)
    plain = Blocks(1)
    inject(plain, ["fc1"], LoRAMoEConfig())
    with pytest.raises(ValueError, match="gsv=True"):
        guilomo_plan(plain)
