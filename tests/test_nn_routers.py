"""Routers: Sparsegen against a brute-force projection, the LD-MoLE sparsity bound, the
load-balancing loss on hand-computed cases, top-k and the lambda MLP."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mola_ts.nn import (
    LambdaMLP,
    LDMoLERouter,
    TaskRouter,
    TopKRouter,
    load_balance_loss,
    sparsegen,
    sparsegen_support,
    sparsity_lower_bound,
)

torch.set_num_threads(1)


def brute_force_sparsegen(u: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_p ||p - u||^2 - lam ||p||^2 on the simplex, by trying every support.

    On a support S the minimiser of the (strictly convex, lam < 1) objective with sum p = 1 is
    p_S = (u_S - mu) / (1 - lam), mu fixed by the sum; keep the feasible one of least objective.
    """
    u = u.double()
    best, best_value = None, math.inf
    n = u.numel()
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            idx = list(support)
            mu = (u[idx].sum() - (1 - lam)) / size
            p = torch.zeros(n, dtype=torch.float64)
            p[idx] = (u[idx] - mu) / (1 - lam)
            if bool((p < -1e-12).any()):
                continue
            value = float(((p - u) ** 2).sum() - lam * (p ** 2).sum())
            if value < best_value - 1e-12:
                best, best_value = p, value
    return best


def test_sparsegen_matches_brute_force_projection():
    g = torch.Generator().manual_seed(0)
    for trial in range(150):
        n = 2 + trial % 5
        u = torch.randn(n, generator=g, dtype=torch.float64) * (0.2 + trial % 4)
        lam = float(torch.empty(1).uniform_(-3.0, 0.98, generator=g))
        p = sparsegen(u[None], lam)[0]
        torch.testing.assert_close(p, brute_force_sparsegen(u, lam), rtol=1e-9, atol=1e-9)


def test_sparsegen_properties_on_random_inputs():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(2000, 8, generator=g, dtype=torch.float64) * 2
    lam = torch.empty(2000, dtype=torch.float64).uniform_(-4.0, 0.99, generator=g)
    p = sparsegen(u, lam)
    k, _ = sparsegen_support(u, lam)
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(-1), torch.ones(2000, dtype=torch.float64))
    nnz = (p > 0).sum(-1)
    assert bool((nnz >= 1).all())
    assert torch.equal(k, nnz)  # k(u) is the number of active experts
    assert len(set(nnz.tolist())) > 3  # the number of active experts really varies
    # the support is the top-k(u) logits
    order = u.argsort(-1, descending=True)
    ranks = order.argsort(-1)
    assert torch.equal((p > 0), ranks < k[:, None])


def test_sparsegen_lambda_near_one_keeps_one_expert():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(500, 6, generator=g)
    top2 = u.topk(2, -1).values
    u = u[(top2[:, 0] - top2[:, 1]) > 0.02]  # the logits of a token are distinct
    p = sparsegen(u, 0.99)
    assert torch.equal((p > 0).sum(-1), torch.ones(len(u), dtype=torch.long))
    assert torch.equal(p.argmax(-1), u.argmax(-1))
    # very negative lambda: every expert active
    assert bool((sparsegen(u, -1e4) > 0).all())


def test_sparsegen_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    u = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 2).requires_grad_()
    lam = torch.empty(6, dtype=torch.float64).uniform_(-2.0, 0.5, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(sparsegen, (u, lam))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sparsity_bound_is_exact(k):
    g = torch.Generator().manual_seed(4)
    u = torch.randn(3000, 6, generator=g, dtype=torch.float64)
    lam = torch.empty(3000, dtype=torch.float64).uniform_(-3.0, 0.99, generator=g)
    lower = sparsity_lower_bound(u, k)
    at_most_k = (sparsegen(u, lam) > 0).sum(-1) <= k
    assert torch.equal(at_most_k, lam >= lower)
    assert 0 < int(at_most_k.sum()) < 3000  # both sides are exercised
    # right at the bound, on either side
    inside = lower < 0.98
    lo = lower[inside]
    assert bool(((sparsegen(u[inside], lo + 1e-7) > 0).sum(-1) <= k).all())
    assert bool(((sparsegen(u[inside], lo - 1e-7) > 0).sum(-1) == k + 1).all())


def test_sparsity_bound_hand_case_and_large_k():
    u = torch.tensor([[3.0, 1.0, 0.5, -1.0]])
    # k = 2: U_2 = 4, u_(3) = 0.5 -> 1 - (4 - 1) = -2
    torch.testing.assert_close(sparsity_lower_bound(u, 2), torch.tensor([-2.0]))
    assert sparsity_lower_bound(u, 4).item() == -math.inf
    with pytest.raises(ValueError, match="k must be"):
        sparsity_lower_bound(u, 0)


def test_load_balance_loss_hand_computed():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    dispatch = torch.tensor([[True, False], [True, False]])
    # f = (1, 0), P = (0.65, 0.35): 2 * 0.65
    torch.testing.assert_close(load_balance_loss(probs, dispatch), torch.tensor(1.3))
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    dispatch = torch.tensor([[True, True, False], [False, True, True]])
    # per assignment: f = (1, 2, 1) / 4; P = (0.3, 0.45, 0.25) -> 3 * (0.3 + 0.9 + 0.25) / 4
    torch.testing.assert_close(load_balance_loss(probs, dispatch, "assignment"),
                               torch.tensor(3 * 1.45 / 4))
    # per token: f = (1, 2, 1) / 2 -> 3 * 1.45 / 2
    torch.testing.assert_close(load_balance_loss(probs, dispatch, "token"),
                               torch.tensor(3 * 1.45 / 2))
    uniform = torch.full((4, 4), 0.25)
    torch.testing.assert_close(load_balance_loss(uniform, torch.eye(4, dtype=torch.bool)),
                               torch.tensor(1.0))
    with pytest.raises(ValueError, match="per must be"):
        load_balance_loss(probs, dispatch, "expert")


def test_balance_gradient_flows_only_through_probabilities():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]], requires_grad=True)
    dispatch = torch.tensor([[True, False], [True, False]])
    (g,) = torch.autograd.grad(load_balance_loss(probs, dispatch), [probs])
    # d/dP (E * sum f_i mean P_i) = E * f_i / n
    torch.testing.assert_close(g, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_topk_router_hand_case_and_balance():
    router = TopKRouter(2, 3, top_k=2)
    with torch.no_grad():
        router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    rows = torch.tensor([[2.0, 1.0], [0.0, -1.0]])
    out = router(rows)
    probs = torch.softmax(rows @ router.weight.t(), -1)
    expected = torch.zeros(2, 3)
    expected[0, :2] = probs[0, :2] / probs[0, :2].sum()
    expected[1, [0, 2]] = probs[1, [0, 2]] / probs[1, [0, 2]].sum()
    torch.testing.assert_close(out.gates, expected)
    f = torch.tensor([2.0, 1.0, 1.0]) / 4
    torch.testing.assert_close(out.losses["balance"], 3 * (f * probs.mean(0)).sum())
    # masking an expert (GuiLoMo) removes it from the top-k
    masked = router(rows, logit_bias=torch.tensor([0.0, 0.0, -1e4]))
    assert float(masked.gates[:, 2].detach().abs().max()) == 0.0


def test_task_router_is_softmax_of_task_logits():
    router = TaskRouter(4, 3, torch.Generator().manual_seed(0))
    ids = torch.tensor([2, 2, 0])
    out = router(None, ids)
    torch.testing.assert_close(out.gates, torch.softmax(router.task_logits[ids], -1))
    assert out.losses == {}


def test_ldmole_router_losses_and_lambda_init():
    torch.manual_seed(0)
    mlp = LambdaMLP(5, hidden=16)
    assert float(mlp.b2.detach()) == -2.5
    router = LDMoLERouter(5, 6, mlp, sparsity_k=2)
    rows = torch.randn(40, 5)
    out = router(rows)
    lam = mlp(rows).detach()
    assert bool((lam < 0.99).all())
    # at init MLP(x) is near -2.5: lambda near logsigmoid(-2.5) + 0.99, dense routing
    assert abs(float(lam.mean()) - (math.log(1 / (1 + math.exp(2.5))) + 0.99)) < 0.5
    u = rows @ router.weight.t()
    torch.testing.assert_close(out.gates, sparsegen(u, lam))
    lower = sparsity_lower_bound(u, 2)
    torch.testing.assert_close(out.losses["sparsity"], torch.relu(lower - lam).mean())
    p = out.gates
    f = (p > 0).float().mean(0)
    torch.testing.assert_close(out.losses["balance"], 6 * (f * p.mean(0)).sum())
    torch.testing.assert_close(out.extras["lambda"], lam)
    # the sparsity loss trains lambda upwards (towards fewer experts)
    (g,) = torch.autograd.grad(out.losses["sparsity"], [mlp.b2])
    assert float(g) < 0
    with pytest.raises(ValueError, match="input width"):
        LDMoLERouter(4, 3, mlp)


def test_router_losses_are_tensors_of_the_forward():
    """The losses are computed in forward: plain tensors that still train after more forwards."""
    torch.manual_seed(0)
    router = TopKRouter(5, 4, top_k=2)
    first = router(torch.randn(12, 5))
    second = router(torch.randn(12, 5))  # a later forward does not touch the first's losses
    assert type(first.losses) is dict and set(first.losses) == {"balance"}
    assert isinstance(first.losses["balance"], torch.Tensor)
    assert first.losses["balance"].grad_fn is not None
    (g1,) = torch.autograd.grad(first.losses["balance"], [router.weight])
    (g2,) = torch.autograd.grad(second.losses["balance"], [router.weight])
    assert not torch.equal(g1, g2)
    assert TaskRouter(3, 2)(None, torch.tensor([0, 1])).losses == {}
