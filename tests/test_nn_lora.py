"""The LoRA-MoE layer: identity at init, the gated wide LoRA against a naive expert loop,
inject / routing / merge / MoSLD / Conv1d, and input validation."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from mola_ts.nn import (
    LoRAMoE,
    LoRAMoEConfig,
    collect_aux,
    find_targets,
    inject,
    lora_layers,
    merge_adapters,
    remove_adapters,
    routing,
    unmerge_adapters,
)

torch.set_num_threads(1)


def _randomise(layer: LoRAMoE, seed: int = 0) -> None:
    """Give B (zero at init) random values so that the adapter contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)


def naive_delta(layer: LoRAMoE, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Per-expert loop: sum_e s_e g_e B_e A_e x for 2-D tokens x (N, d_in)."""
    cfg = layer.config
    out = torch.zeros(x.shape[0], layer.out_features, dtype=x.dtype)
    A = layer.effective_A(training=False)
    start = 0
    for e, r in enumerate(layer.ranks):
        A_e = A[start:start + r]
        B_e = layer.lora_B[:, start:start + r]
        s = cfg.alpha / (r ** 0.5 if cfg.rslora else r)
        out = out + s * gates[:, e:e + 1] * ((x @ A_e.t()) @ B_e.t())
        start += r
    return out


def naive_gates(layer: LoRAMoE, rows: torch.Tensor) -> torch.Tensor:
    """Per-token loop over the router definitions of the spec."""
    router = layer.router
    out = []
    for row in rows:
        u = router.weight.float() @ row.float()
        if router.kind == "softmax":
            out.append(torch.softmax(u, 0))
        elif router.kind == "topk":
            p = torch.softmax(u, 0)
            keep = sorted(range(len(u)), key=lambda i: -float(p[i].detach()))[:router.top_k]
            g = torch.zeros_like(p)
            total = sum(p[i] for i in keep)
            for i in keep:
                g[i] = p[i] / total
            out.append(g)
        elif router.kind == "ldmole":
            lam = router.lambda_mlp(row[None])[0]
            z = u / (1 - lam)  # sparsemax(u / (1 - lambda)) by the textbook algorithm
            zs, _ = torch.sort(z, descending=True)
            k = 0
            for j in range(len(zs)):
                if 1 + (j + 1) * zs[j] > zs[:j + 1].sum():
                    k = j + 1
            tau = (zs[:k].sum() - 1) / k
            out.append(torch.clamp(z - tau, min=0))
    return torch.stack(out)


@pytest.mark.parametrize("router", ["softmax", "topk", "ldmole"])
@pytest.mark.parametrize("ranks", [3, (1, 2, 3, 2)])
def test_layer_matches_naive_expert_loop_output_and_gradients(router, ranks):
    torch.manual_seed(0)
    cfg = LoRAMoEConfig(n_experts=4, rank=ranks, router=router, top_k=2, alpha=4.0)
    layer = LoRAMoE(nn.Linear(6, 5), cfg, generator=torch.Generator().manual_seed(1))
    _randomise(layer)
    x = torch.randn(2, 7, 6, dtype=torch.float64).float()

    y = layer(x)
    loss = (y ** 2).sum()
    grads = torch.autograd.grad(loss, [layer.lora_A, layer.lora_B, *layer.router.parameters()])

    tokens = x.reshape(-1, 6)
    gates = naive_gates(layer, tokens)
    y_ref = layer.base(x) + naive_delta(layer, tokens, gates).reshape(2, 7, 5)
    loss_ref = (y_ref ** 2).sum()
    grads_ref = torch.autograd.grad(loss_ref,
                                    [layer.lora_A, layer.lora_B, *layer.router.parameters()])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    assert any(float(g.abs().sum()) > 0 for g in grads[2:])  # the router receives gradient


def test_task_router_matches_naive_and_broadcasts_per_sample():
    torch.manual_seed(0)
    cfg = LoRAMoEConfig(n_experts=3, rank=2, router="task", n_tasks=4, init="gaussian",
                        init_std=0.01)
    layer = LoRAMoE(nn.Linear(5, 4), cfg)
    _randomise(layer)
    x = torch.randn(3, 6, 5)
    ids = torch.tensor([2, 0, 3])
    with routing(layer, task_ids=ids):
        y = layer(x)
    gates = torch.softmax(layer.router.task_logits[ids], -1).repeat_interleave(6, 0)
    y_ref = layer.base(x) + naive_delta(layer, x.reshape(-1, 5), gates).reshape(3, 6, 4)
    torch.testing.assert_close(y, y_ref)
    params = [layer.router.task_logits, layer.lora_A, layer.lora_B]
    grads = torch.autograd.grad((y ** 2).sum(), params)
    # naive: per sample, softmax of its task logits, then a loop over the experts
    y_naive = torch.stack([
        layer.base(x[b]) + naive_delta(layer, x[b],
                                       torch.softmax(layer.router.task_logits[int(ids[b])], -1)
                                       .expand(6, -1))
        for b in range(3)])
    grads_ref = torch.autograd.grad((y_naive ** 2).sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    assert float(grads[0][1].abs().sum()) == 0.0  # task 1 absent from the batch
    assert float(grads[0][2].abs().sum()) > 0.0


def test_task_router_logits_initialised_standard_normal():
    cfg = LoRAMoEConfig(n_experts=50, rank=1, router="task", n_tasks=40)
    layer = LoRAMoE(nn.Linear(3, 3), cfg, generator=torch.Generator().manual_seed(0))
    logits = layer.router.task_logits.detach()
    assert abs(float(logits.mean())) < 0.05
    assert abs(float(logits.std()) - 1.0) < 0.05


def test_task_router_requires_task_ids():
    layer = LoRAMoE(nn.Linear(3, 3), LoRAMoEConfig(router="task", n_tasks=2))
    with pytest.raises(ValueError, match="task ids"):
        layer(torch.randn(2, 3))
    bad = torch.tensor([0, 5])
    with routing(layer, task_ids=bad), pytest.raises(ValueError, match=r"\[0, 2\)"):
        layer(torch.randn(2, 3))
    with routing(layer, task_ids=torch.tensor([0, 1, 1])), pytest.raises(ValueError,
                                                                        match="3 entries"):
        layer(torch.randn(2, 3))


@pytest.mark.parametrize("router", ["task", "softmax", "topk", "ldmole"])
@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_fresh_adapter_leaves_base_output_unchanged(router, init):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    x = torch.randn(5, 3, 8)
    expected = net(x)
    inject(net, ["0", "2"], LoRAMoEConfig(n_experts=3, rank=2, router=router, init=init,
                                          n_tasks=2))
    with routing(net, task_ids=torch.tensor([0, 1, 0, 1, 1])):
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_init_options():
    layer = LoRAMoE(nn.Linear(400, 4), LoRAMoEConfig(n_experts=8, rank=8, init="gaussian",
                                                       init_std=0.01))
    assert abs(float(layer.lora_A.detach().std()) - 0.01) < 1e-3
    assert float(layer.lora_B.detach().abs().max()) == 0.0
    layer = LoRAMoE(nn.Linear(400, 4), LoRAMoEConfig(n_experts=8, rank=8))
    bound = 1.0 / 400 ** 0.5  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert float(layer.lora_A.detach().abs().max()) <= bound
    assert float(layer.lora_A.detach().abs().max()) > 0.9 * bound


def test_rslora_and_heterogeneous_scaling():
    cfg = LoRAMoEConfig(n_experts=2, rank=(1, 4), alpha=8.0, rslora=True)
    layer = LoRAMoE(nn.Linear(3, 3), cfg)
    torch.testing.assert_close(layer.expert_scale, torch.tensor([8.0, 4.0]))
    cfg = LoRAMoEConfig(n_experts=2, rank=4, alpha=8.0)
    assert LoRAMoE(nn.Linear(3, 3), cfg)._uniform_scale == 2.0


def test_merge_then_unmerge_restores_weights_and_merged_forward_matches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    inject(net, ["0", "2"], LoRAMoEConfig(n_experts=3, rank=2, router="task", n_tasks=3))
    for layer in lora_layers(net).values():
        _randomise(layer)
    before = {n: p.detach().clone() for n, p in net.state_dict().items()}
    x = torch.randn(4, 6)
    ids = torch.full((4,), 2)
    with routing(net, task_ids=ids):
        expected = net(x)
    merge_adapters(net, task_id=2)
    assert all(layer.merged for layer in lora_layers(net).values())
    assert not torch.equal(net[0].base.weight, before["0.base.weight"])
    with routing(net, task_ids=ids):
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)
        with routing(net, task_ids=torch.tensor([2, 1, 2, 2])), pytest.raises(ValueError,
                                                                             match="merged"):
            net(x)
    unmerge_adapters(net)
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=1e-6)


def test_merge_single_expert_and_refusals():
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Linear(4, 4), LoRAMoEConfig(n_experts=1, rank=2, router="ldmole"))
    _randomise(layer)
    x = torch.randn(3, 4)
    expected = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    layer.unmerge()
    with pytest.raises(ValueError, match="not merged"):
        layer.unmerge()
    dynamic = LoRAMoE(nn.Linear(4, 4), LoRAMoEConfig(n_experts=2, router="topk"))
    with pytest.raises(ValueError, match="static gates"):
        dynamic.merge()
    tasks = LoRAMoE(nn.Linear(4, 4), LoRAMoEConfig(n_experts=2, router="task", n_tasks=3))
    with pytest.raises(ValueError, match="task_id"):
        tasks.merge()


def test_conv1d_1x1_matches_linear():
    torch.manual_seed(0)
    conv = nn.Conv1d(5, 4, kernel_size=1)
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight.copy_(conv.weight[:, :, 0])
        lin.bias.copy_(conv.bias)
    cfg = LoRAMoEConfig(n_experts=3, rank=2, router="topk")
    lc = LoRAMoE(conv, cfg, generator=torch.Generator().manual_seed(0))
    ll = LoRAMoE(lin, cfg, generator=torch.Generator().manual_seed(0))
    _randomise(lc)
    _randomise(ll)
    x = torch.randn(2, 5, 7)  # (batch, channels, length)
    torch.testing.assert_close(lc(x), ll(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(lc(x[0]), ll(x[0].t()).t())
    with pytest.raises(ValueError, match="1x1"):
        LoRAMoE(nn.Conv1d(5, 4, kernel_size=3), cfg)
    with pytest.raises(ValueError, match=r"\(batch, 5, length\)"):
        lc(torch.randn(2, 7, 5))


def test_inject_targets_freezing_and_report():
    torch.manual_seed(0)
    net = nn.ModuleDict({
        "blocks": nn.ModuleList([nn.ModuleDict({"q": nn.Linear(8, 8), "v": nn.Linear(8, 8),
                                                "norm": nn.LayerNorm(8)}) for _ in range(2)]),
        "head": nn.Linear(8, 2),
    })
    assert find_targets(net, ["q"]) == ["blocks.0.q", "blocks.1.q"]
    assert find_targets(net, ["blocks.1.v", "head"]) == ["blocks.1.v", "head"]
    assert find_targets(net, r"blocks\.\d\.(q|v)") == ["blocks.0.q", "blocks.0.v",
                                                       "blocks.1.q", "blocks.1.v"]
    cfg = LoRAMoEConfig(n_experts=2, rank=3, router="softmax")
    report = inject(net, ["q", "v"], cfg, random_state=0)
    assert set(report.layers) == {"blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"}
    per_layer = 2 * 3 * 8 + 8 * 2 * 3 + 2 * 8  # A, B, router
    assert all(info["trainable"] == per_layer for info in report.layers.values())
    assert report.trainable == 4 * per_layer
    assert report.total == sum(p.numel() for p in net.parameters())
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert all(("lora_" in n or "router" in n) for n in trainable)
    assert not net["head"].weight.requires_grad
    assert "trainable" in str(report)
    with pytest.raises(ValueError, match="already LoRA-MoE layers"):
        inject(net, ["blocks.0.q"], cfg)
    with pytest.raises(ValueError, match="matched no module"):
        inject(net, ["nothing"], cfg)
    with pytest.raises(TypeError, match="LayerNorm"):
        inject(net, ["norm"], cfg)
    with pytest.raises(TypeError, match="target_modules"):
        inject(net, 3, cfg)


def test_inject_seed_is_deterministic_and_remove_restores_base():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    base0 = net[0]
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    inject(a, ["0"], LoRAMoEConfig(router="ldmole"), random_state=3)
    inject(b, ["0"], LoRAMoEConfig(router="ldmole"), random_state=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    inject(net, ["0"], LoRAMoEConfig())
    remove_adapters(net)
    assert net[0] is base0 and not lora_layers(net)


def test_ldmole_lambda_mlp_shared_per_width():
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(4, 4))
    inject(net, ["0", "1", "2", "3"], LoRAMoEConfig(router="ldmole", n_experts=3))
    mlps = [layer.router.lambda_mlp for layer in lora_layers(net).values()]
    assert mlps[0] is mlps[1] is mlps[2]  # input width 8
    assert mlps[3] is not mlps[0] and mlps[3].d_in == 4
    x = torch.randn(2, 8)
    (net(x).sum() + collect_aux(net).loss).backward()  # B = 0: only the aux losses reach it
    assert mlps[0].w1.grad is not None and float(mlps[0].w1.grad.abs().sum()) > 0
    # a later injection reuses the existing MLP of the same width
    more = nn.Sequential(net, nn.Linear(4, 8), nn.Linear(8, 2))
    inject(more, ["2"], LoRAMoEConfig(router="ldmole", n_experts=2))
    assert more[2].router.lambda_mlp is mlps[0]


def test_router_input_routes_per_sample():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    inject(net, ["0", "2"], LoRAMoEConfig(n_experts=4, rank=2, router="ldmole", router_dim=3))
    x = torch.randn(2, 5, 6)
    r = torch.randn(2, 3)
    with routing(net, router_input=r):
        net(x)
    stats = collect_aux(net).layers["0"]
    assert stats["active"].shape == (10,)
    active = stats["active"].reshape(2, 5)
    assert bool((active == active[:, :1]).all())  # constant over the tokens of a sample
    wide = torch.randn(2, 4)
    with pytest.raises(ValueError, match="route on 3"), routing(net, router_input=wide):
        pass
    with routing(net, router_input=torch.randn(3, 3)), pytest.raises(ValueError, match="3 rows"):
        net(x)
    with pytest.raises(ValueError, match="3 features, got 6"):
        net(x)  # router_dim=3 but no routing input: the tokens have 6 features


def test_routing_validates_and_restores():
    net = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="no LoRA-MoE"):
        with routing(net, task_ids=torch.tensor([0])):
            pass
    inject(net, ["0"], LoRAMoEConfig(router="task", n_tasks=2))
    with pytest.raises(ValueError, match="integer"), routing(net, task_ids=torch.tensor([0.5])):
        pass
    with pytest.raises(TypeError, match="task_ids"), routing(net, task_ids=[0, 1]):
        pass
    with pytest.raises(ValueError, match=">= 0"), routing(net, task_ids=torch.tensor([-1])):
        pass
    outer, inner = torch.tensor([1]), torch.tensor([0])
    with routing(net, task_ids=outer) as route:
        assert net[0].route is route and route.task_ids is outer and route.task_max == 1
        with routing(net, task_ids=inner):
            assert net[0].route.task_ids is inner
        assert net[0].route.task_ids is outer
    assert net[0].route is None


def test_mosld_shared_A_parameter_count_and_dropconnect():
    d_in, d_out, E, r = 10, 7, 4, 3
    cfg = LoRAMoEConfig(n_experts=E, rank=r, router="topk", shared_A=True, dropconnect=0.1)
    layer = LoRAMoE(nn.Linear(d_in, d_out), cfg)
    assert layer.lora_A.shape == (r, d_in)
    own = layer.lora_A.numel() + layer.lora_B.numel()
    assert own == r * d_in + E * d_out * r
    unshared = LoRAMoE(nn.Linear(d_in, d_out), LoRAMoEConfig(n_experts=E, rank=r))
    assert unshared.lora_A.numel() + unshared.lora_B.numel() - own == (E - 1) * r * d_in
    # eval: every expert uses the same rows of A
    A = layer.effective_A(training=False)
    for e in range(E):
        torch.testing.assert_close(A[e * r:(e + 1) * r], layer.lora_A)
    # training: DropConnect zeroes about p of the entries and rescales the others
    torch.manual_seed(0)
    big = LoRAMoE(nn.Linear(200, 2), LoRAMoEConfig(n_experts=2, rank=50, shared_A=True,
                                                     dropconnect=0.1))
    dropped = big.effective_A(training=True)[:50]
    zero = dropped == 0
    assert 0.08 < float(zero.float().mean()) < 0.12
    torch.testing.assert_close(dropped[~zero], big.lora_A[~zero] / 0.9)
    with pytest.raises(ValueError, match="shared_A"):
        LoRAMoEConfig(dropconnect=0.1)


def test_mosld_shared_A_with_heterogeneous_ranks_uses_leading_rows():
    layer = LoRAMoE(nn.Linear(5, 3), LoRAMoEConfig(n_experts=2, rank=(2, 4), shared_A=True))
    A = layer.effective_A(training=False)
    torch.testing.assert_close(A[:2], layer.lora_A[:2])
    torch.testing.assert_close(A[2:], layer.lora_A)


def test_dropout_only_on_lora_branch():
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Linear(4, 4), LoRAMoEConfig(n_experts=2, rank=2, dropout=0.9))
    x = torch.randn(6, 4)
    layer.train()
    torch.testing.assert_close(layer(x), layer.base(x))  # B is zero: no branch, no dropout
    _randomise(layer)
    layer.eval()
    y1, y2 = layer(x), layer(x)
    torch.testing.assert_close(y1, y2)
    layer.train()
    assert not torch.allclose(layer(x), y1)


def test_input_validation():
    layer = LoRAMoE(nn.Linear(4, 3), LoRAMoEConfig())
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        layer(torch.randn(2, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRAMoE(nn.LayerNorm(3), LoRAMoEConfig())
    with pytest.raises(ValueError, match="rank"):
        LoRAMoEConfig(n_experts=2, rank=(1, 2, 3))
    with pytest.raises(ValueError, match="router"):
        LoRAMoEConfig(router="switch")
    with pytest.raises(ValueError, match="n_experts"):
        LoRAMoEConfig(n_experts=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAMoEConfig(dropout=1.0)
    with pytest.raises(TypeError, match="n_experts"):
        LoRAMoEConfig(n_experts=2.5)
    with pytest.raises(TypeError, match="top_k"):
        LoRAMoEConfig(top_k=True)  # a bool is not a count
    with pytest.raises(ValueError, match="alpha"):
        LoRAMoEConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        LoRAMoEConfig(alpha=0.0)
    with pytest.raises(TypeError, match="rank"):
        LoRAMoEConfig(n_experts=2, rank=(2, "4"))
    cfg = LoRAMoEConfig(n_experts=np.int64(3), rank=[np.int64(2)] * 3)
    assert type(cfg.n_experts) is int and all(type(r) is int for r in cfg.ranks)
    x = torch.randn(2, 4)
    x_copy = x.clone()
    layer(x)
    assert torch.equal(x, x_copy)


def test_config_dict_roundtrip():
    cfg = LoRAMoEConfig(n_experts=3, rank=[1, 2, 3], router="ldmole", router_dim=5)
    assert cfg.rank == (1, 2, 3)
    again = LoRAMoEConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="unknown"):
        LoRAMoEConfig.from_dict({"experts": 2})


def test_router_computed_in_float32_for_half_models():
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Linear(4, 4).to(torch.bfloat16), LoRAMoEConfig(router="ldmole"))
    y = layer(torch.randn(3, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert layer.last_stats["mean_gate"].dtype == torch.float32
    assert layer.router.weight.dtype == torch.float32


def test_collect_aux_weights_losses_and_stats():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    inject(net, ["0"], LoRAMoEConfig(n_experts=4, router="topk", top_k=2, balance_coef=0.5))
    inject(net, ["2"], LoRAMoEConfig(n_experts=4, router="ldmole", balance_coef=0.1,
                                     sparsity_coef=2.0))
    net(torch.randn(9, 6))
    aux = collect_aux(net)
    l0 = net[0].last_losses
    l2 = net[2].last_losses
    expected = 0.5 * l0["balance"] + 0.1 * l2["balance"] + 2.0 * l2["sparsity"]
    torch.testing.assert_close(aux.loss, expected)
    torch.testing.assert_close(aux.losses["balance"], l0["balance"] + l2["balance"])
    assert aux.layers["0"]["mean_active"] == 2.0
    assert aux.layers["0"]["load"].shape == (4,)
    assert aux.loss.requires_grad


def test_conv1d_merge_roundtrip():
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Conv1d(4, 3, 1), LoRAMoEConfig(n_experts=2, rank=2, router="task",
                                                        n_tasks=2))
    _randomise(layer)
    x = torch.randn(2, 4, 5)
    weight = layer.base.weight.detach().clone()
    ids = torch.tensor([1, 1])
    with routing(layer, task_ids=ids):
        expected = layer(x)
        layer.merge(task_id=1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(layer.base.weight, weight, rtol=0, atol=1e-6)


def test_config_presets():
    assert LoRAMoEConfig.preset("mola_forecast", n_tasks=4).router == "task"
    assert LoRAMoEConfig.preset("mola_forecast").init_std == 0.01
    mosld = LoRAMoEConfig.preset("mosld", n_experts=4, rank=2)
    assert mosld.shared_A and mosld.dropconnect == 0.1 and mosld.top_k == 2
    assert LoRAMoEConfig.preset("guilomo_search").gsv
    assert LoRAMoEConfig.preset("ldmole").router == "ldmole"
    assert LoRAMoEConfig.preset("mola").router == "topk"
    with pytest.raises(ValueError, match="method"):
        LoRAMoEConfig.preset("adalora")


def _functions_on_modules(model: nn.Module) -> list[str]:
    """Names of callables stored as plain attributes on the modules (closures, lambdas)."""
    return [f"{name}.{key}" for name, module in model.named_modules()
            for key, value in vars(module).items()
            if callable(value) and not isinstance(value, (nn.Module, torch.Tensor, type))]


@pytest.mark.parametrize("router", ["task", "topk", "ldmole"])
def test_model_pickles_after_a_training_forward(router):
    """Per-forward losses (with their graph) and the route are dropped; the weights round-trip."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    inject(net, ["0", "2"], LoRAMoEConfig(n_experts=3, rank=2, router=router, n_tasks=2),
           random_state=0)
    for layer in lora_layers(net).values():
        _randomise(layer)
    x, ids = torch.randn(4, 6), torch.tensor([0, 1, 1, 0])
    net.train()
    with routing(net, task_ids=ids):
        y = net(x)
        assert not _functions_on_modules(net)
        blob = pickle.dumps(net)  # inside the block: the route is not saved with the model
    (y.sum() + collect_aux(net).loss).backward()
    clone = copy.deepcopy(net)  # the last losses hold a graph: deepcopy must still work
    again = pickle.loads(blob)
    for restored in (again, clone):
        assert restored[0].route is None and restored[0].last_losses == {}
        with routing(restored, task_ids=ids):
            torch.testing.assert_close(restored(x), y.detach(), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(net, buffer)  # torch.save pickles too
    assert buffer.tell() > 0
