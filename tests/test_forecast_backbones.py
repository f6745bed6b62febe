"""Backbones: shapes, instance normalisation, inverted tokens, DLinear decomposition."""

import pytest
import torch

from mola_ts.forecast import (
    BACKBONES,
    DLinearNet,
    EncoderBackbone,
    ITransformer,
    PatchTransformer,
    make_backbone,
)
from mola_ts.nn import LoRAMoEConfig, inject


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_maps_windows_to_steps(name):
    torch.manual_seed(0)
    sizes = {} if name == "dlinear" else {"d_model": 16, "d_ff": 16, "n_heads": 2}
    net = make_backbone(name, 32, 6, **sizes).eval()
    out = net(torch.randn(4, 32, 3))
    assert out.shape == (4, 6, 3)
    out.sum().backward()


@pytest.mark.parametrize("name", ["itransformer", "patch"])
def test_instance_norm_makes_forecasts_shift_and_scale_equivariant(name):
    torch.manual_seed(0)
    net = make_backbone(name, 32, 6, d_model=16, d_ff=16, n_heads=2).eval()
    x = torch.randn(3, 32, 2)
    scale = torch.tensor([2.0, 0.5])
    shift = torch.tensor([10.0, -3.0])
    with torch.no_grad():
        torch.testing.assert_close(net(x * scale + shift), net(x) * scale + shift, rtol=1e-4,
                                   atol=1e-4)


def test_itransformer_tokens_are_variates_and_permute_with_them():
    torch.manual_seed(0)
    net = ITransformer(24, 5, d_model=16, d_ff=16, n_heads=2, dropout=0.0).eval()
    x = torch.randn(2, 24, 4)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        torch.testing.assert_close(net(x[..., perm]), net(x)[..., perm], rtol=1e-5, atol=1e-5)


def test_patch_transformer_patch_count_and_channel_independence():
    torch.manual_seed(0)
    net = PatchTransformer(96, 8, patch_len=16, stride=8, d_model=16, d_ff=16, n_heads=2,
                           dropout=0.0).eval()
    assert net.n_patches == 12  # (96 + 8 - 16) / 8 + 1, as in PatchTST
    x = torch.randn(2, 96, 3)
    x2 = x.clone()
    x2[..., 1] += torch.randn(2, 96)
    with torch.no_grad():
        a, b = net(x), net(x2)
    torch.testing.assert_close(a[..., [0, 2]], b[..., [0, 2]])
    assert not torch.allclose(a[..., 1], b[..., 1])


def test_dlinear_starts_as_the_window_average_of_trend_plus_remainder():
    net = DLinearNet(20, 4, kernel_size=5)
    x = torch.randn(3, 20, 2)
    expected = x.mean(dim=1, keepdim=True).expand(3, 4, 2)
    with torch.no_grad():
        out = net(x) - (net.seasonal.bias + net.trend.bias)[None, :, None]
    # (remainder + trend) averaged = window average, since both maps start at 1 / L
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_dlinear_trend_is_a_replicate_padded_moving_average():
    net = DLinearNet(9, 2, kernel_size=3)
    with torch.no_grad():
        net.seasonal.weight.zero_()
        net.seasonal.bias.zero_()
        net.trend.bias.zero_()
        net.trend.weight.zero_()
        net.trend.weight[0, 0] = 1.0  # read the first trend value
        net.trend.weight[1, 4] = 1.0  # and the middle one
    x = torch.arange(9.0).reshape(1, 9, 1) ** 2
    out = net(x)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([(0 + 0 + 1) / 3, (9 + 16 + 25) / 3]))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_default_adapter_targets_exist_and_are_linear(name):
    sizes = {} if name == "dlinear" else {"d_model": 16, "d_ff": 16, "n_heads": 2}
    net = make_backbone(name, 32, 6, **sizes)
    targets = type(net).ADAPTER_TARGETS
    pattern = targets[0] if len(targets) == 1 else list(targets)
    report = inject(net, pattern, LoRAMoEConfig(n_experts=2, rank=2))
    assert len(report.layers) == (2 if name == "dlinear" else 4)


def test_unknown_backbone_and_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="backbone must be one of"):
        make_backbone("lstm", 32, 6)
    with pytest.raises(TypeError, match="backbone_params do not fit"):
        make_backbone("dlinear", 32, 6, d_model=16)
    with pytest.raises(ValueError, match="kernel_size"):
        DLinearNet(32, 6, kernel_size=4)


@pytest.mark.parametrize("name", ["itransformer", "patch"])
@pytest.mark.parametrize("instance_norm", [True, False])
def test_transformer_backbones_run_the_shared_prefix_then_suffix(name, instance_norm):
    torch.manual_seed(0)
    net = make_backbone(name, 32, 6, d_model=16, d_ff=16, n_heads=2,
                        instance_norm=instance_norm).eval()
    assert isinstance(net, EncoderBackbone)
    modules = dict(net.named_modules())
    assert all(p in modules for p in net.PREFIX_MODULES)
    x = torch.randn(3, 32, 2)
    with torch.no_grad():
        tokens, mean, std = net.forward_prefix(x)
        assert (mean is None) == (not instance_norm)
        torch.testing.assert_close(net.forward_suffix(tokens, mean, std), net(x), rtol=0, atol=0)
        # the prefix is normalisation, tokens and the first attention block, nothing else
        normed = x if not instance_norm else (x - x.mean(1, keepdim=True)) / torch.sqrt(
            x.var(1, keepdim=True, unbiased=False) + 1e-5)
        expected = net.encoder.layers[0].attention_block(net.tokens(normed))
        torch.testing.assert_close(tokens, expected)
