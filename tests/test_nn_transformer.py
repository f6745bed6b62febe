import pytest
import torch
from torch import nn

from mola_ts.nn.transformer import (
    EncoderLayer,
    FeedForward,
    MultiHeadSelfAttention,
    TransformerEncoder,
)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadSelfAttention(d_model=16, n_heads=4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                            ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 5, 16)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


def test_post_norm_layer_matches_torch_encoder_layer():
    torch.manual_seed(1)
    ours = EncoderLayer(16, 4, 24, dropout=0.0, activation="gelu", norm_first=False).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=False).eval()
    with torch.no_grad():
        a = ours.attn
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight,
                                                      a.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias,
                                                    a.v_proj.bias]))
        ref.self_attn.out_proj.weight.copy_(a.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(a.out_proj.bias)
        ref.linear1.weight.copy_(ours.ffn.fc1.weight)
        ref.linear1.bias.copy_(ours.ffn.fc1.bias)
        ref.linear2.weight.copy_(ours.ffn.fc2.weight)
        ref.linear2.bias.copy_(ours.ffn.fc2.bias)
    x = torch.randn(2, 6, 16)
    # The fast path of nn.TransformerEncoderLayer is avoided by requiring grad.
    torch.testing.assert_close(ours(x), ref(x.requires_grad_()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_accepts_extra_leading_dims(norm_first):
    torch.manual_seed(0)
    enc = TransformerEncoder(2, 8, 2, 16, dropout=0.0, norm_first=norm_first).eval()
    x = torch.randn(2, 3, 5, 8)
    flat = enc(x.reshape(6, 5, 8)).reshape(2, 3, 5, 8)
    torch.testing.assert_close(enc(x), flat)


def test_every_projection_is_a_plain_named_linear():
    enc = TransformerEncoder(2, 8, 2, 16)
    linears = {n for n, m in enc.named_modules() if type(m) is nn.Linear}
    for i in range(2):
        for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "ffn.fc1",
                     "ffn.fc2"):
            assert f"layers.{i}.{name}" in linears
    assert len(linears) == 12


def test_pre_and_post_norm_differ_and_dropout_is_off_in_eval():
    torch.manual_seed(0)
    post = EncoderLayer(8, 2, 16, dropout=0.5, norm_first=False)
    pre = EncoderLayer(8, 2, 16, dropout=0.5, norm_first=True)
    pre.load_state_dict(post.state_dict())
    x = torch.randn(4, 3, 8)
    post.eval()
    pre.eval()
    assert not torch.allclose(post(x), pre(x))
    torch.testing.assert_close(post(x), post(x))
    post.train()
    torch.manual_seed(1)
    a = post(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, post(x))


def test_attention_mask_blocks_future_tokens():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    out = attn(x, causal)
    x2 = x.clone()
    x2[:, 3] += 10.0
    out2 = attn(x2, causal)
    torch.testing.assert_close(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3], out2[:, 3])


def test_bad_sizes_and_activation_are_rejected():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MultiHeadSelfAttention(10, 3)
    with pytest.raises(ValueError, match="activation"):
        FeedForward(8, 16, activation="swish")
    with pytest.raises(ValueError, match="n_layers"):
        TransformerEncoder(0, 8, 2, 16)
