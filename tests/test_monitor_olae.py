import numpy as np
import pytest
import torch

from mola_ts.monitor.olae import (
    OLAE,
    ExactOLAE,
    code_orthogonality,
    olae_loss,
    weight_orthogonality,
)
from mola_ts.training import TrainConfig, train


def _windows(n=240, w=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n + w, 2))
    x = np.column_stack([base[:, 0], base[:, 0] + 0.1 * rng.normal(size=n + w), base[:, 1],
                         base[:, 1] - base[:, 0]])[:, :c]
    view = np.lib.stride_tricks.sliding_window_view(x, w, axis=0).transpose(0, 2, 1)[:n]
    return torch.tensor(np.ascontiguousarray(view), dtype=torch.float32)


@pytest.mark.parametrize("target, measure", [
    ("codes", lambda m, x: code_orthogonality(m.encode(x))),
    ("weights", lambda m, x: weight_orthogonality(m.to_code.weight)),
])
def test_orthogonality_penalty_decreases_in_training(target, measure):
    x = _windows()
    torch.manual_seed(0)
    model = OLAE(4, 12, 3, 6)
    with torch.no_grad():
        before = float(measure(model, x))
    train(model, (x,), lambda m, b: olae_loss(m, b[0], 1.0, target)[0],
          TrainConfig(epochs=15, batch_size=60, lr=1e-2, patience=None, random_state=0))
    with torch.no_grad():
        after = float(measure(model, x))
    assert after < 0.5 * before


def test_code_orthogonality_is_zero_for_uncorrelated_codes_and_large_for_copies():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(code_orthogonality(z)) == pytest.approx(0.0, abs=1e-5)
    copies = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert float(code_orthogonality(copies)) == pytest.approx(2.0, rel=1e-3)  # off-diagonals 1


def test_exact_numpy_forward_matches_torch_and_is_batch_invariant():
    torch.manual_seed(1)
    model = OLAE(4, 9, 3, 6).double()
    x = _windows().double()
    exact = ExactOLAE.from_module(model)
    with torch.no_grad():
        recon, z = model(x)
    codes = exact.encode(x.numpy())
    np.testing.assert_allclose(codes, z.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(exact.decode(codes), recon.numpy(), rtol=1e-10, atol=1e-12)
    one_by_one = np.concatenate([exact.encode(x.numpy()[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(one_by_one, codes)  # bit for bit


def test_olae_loss_rejects_unknown_target():
    model = OLAE(4, 5, 2, 6)
    with pytest.raises(ValueError, match="ortho_target"):
        olae_loss(model, _windows(n=8), 1.0, "latent")
