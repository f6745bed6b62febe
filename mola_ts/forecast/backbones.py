"""Forecasting backbones: torch modules mapping a lookback window to the next ``out_steps``.

Every backbone takes ``x`` of shape (batch, lookback, n_variates) and returns (batch, out_steps,
n_variates). They are built from plain ``nn.Linear`` layers (attention and feed-forward come from
:mod:`mola_ts.nn.transformer`), so LoRA-MoE adapters can wrap them by module name; each class
lists its default adapter targets in ``ADAPTER_TARGETS``.

- :class:`EncoderBackbone`: what the two transformer backbones share (normalisation, tokens,
  encoder, head, and the prefix/suffix cut a MoLA adapter uses).
- :class:`ITransformer` (Liu et al., ICLR 2024): each variate's whole window is one token.
- :class:`PatchTransformer` (PatchTST-style, channel independent): each variate's window is cut
  into patches, the patches are the tokens.
- :class:`DLinearNet` (Zeng et al., AAAI 2023): moving-average decomposition and two linear maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.transformer import TransformerEncoder

__all__ = [
    "InstanceNorm",
    "EncoderBackbone",
    "ITransformer",
    "PatchTransformer",
    "DLinearNet",
    "BACKBONES",
    "make_backbone",
]


class InstanceNorm:
    """Per-window, per-variate standardisation without learned affine (RevIN without affine).

    ``normalize`` returns the standardised window and remembers its statistics on the returned
    tuple; ``denormalize`` undoes it on a forecast.
    """

    eps = 1e-5

    @staticmethod
    def normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True).detach()
        centered = x - mean
        std = torch.sqrt(centered.var(dim=1, keepdim=True, unbiased=False) + InstanceNorm.eps)
        return centered / std, mean, std

    @staticmethod
    def denormalize(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return y * std + mean


class EncoderBackbone(nn.Module):
    """What the transformer backbones share: normalisation, tokens, encoder, head, and the
    prefix/suffix cut that lets a MoLA adapter run the frozen prefix once per window.

    A subclass builds ``embedding`` (and whatever its tokens need), ``encoder`` (a
    :class:`~mola_ts.nn.transformer.TransformerEncoder` with a final norm) and ``head``, sets
    ``instance_norm``, and implements :meth:`tokens` (normalised window to the encoder's input)
    and :meth:`project` (encoded tokens to the forecast). The forward pass is always::

        normalise -> tokens -> encoder -> project -> de-normalise

    split after the first attention block: ``forward_prefix`` runs the modules of
    ``PREFIX_MODULES``, ``forward_suffix`` the rest.
    """

    #: default LoRA-MoE targets: both feed-forward projections of every encoder block
    ADAPTER_TARGETS = (r"encoder\.layers\.\d+\.ffn\.fc[12]",)
    #: modules run by ``forward_prefix``: when none is adapted, the prefix is shared by segments
    PREFIX_MODULES = ("embedding", "encoder.layers.0.attn", "encoder.layers.0.norm1")

    instance_norm: bool

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input tokens of a (normalised) window ``x`` (B, L, C)."""
        raise NotImplementedError

    def project(self, encoded: torch.Tensor) -> torch.Tensor:
        """The forecast (B, out_steps, C), normalised space, of the encoded tokens."""
        raise NotImplementedError

    def forward_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalisation, tokens and the first attention block (``PREFIX_MODULES``).

        Returns the tokens after that block and the window's mean and std (None without
        instance normalisation), the arguments of :meth:`forward_suffix`.
        """
        mean = std = None
        if self.instance_norm:
            x, mean, std = InstanceNorm.normalize(x)
        return self.encoder.layers[0].attention_block(self.tokens(x)), mean, std

    def forward_suffix(self, tokens: torch.Tensor, mean: torch.Tensor | None,
                       std: torch.Tensor | None) -> torch.Tensor:
        """The rest of the network: from the first feed-forward block to the output."""
        tokens = self.encoder.layers[0].ffn_block(tokens)
        for layer in self.encoder.layers[1:]:
            tokens = layer(tokens)
        out = self.project(self.encoder.norm(tokens))
        if self.instance_norm:  # the outputs are the first variates (targets before covariates)
            k = out.shape[-1]
            out = InstanceNorm.denormalize(out, mean[..., :k], std[..., :k])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_suffix(*self.forward_prefix(x))


class ITransformer(EncoderBackbone):
    """iTransformer: inverted embedding, full attention across variates, per-token linear head.

    Parameters
    ----------
    lookback : int
        Window length L (the width of each variate token before embedding).
    out_steps : int
        Steps forecast by the head (the segment length S of a MoLA foundation, or H).
    d_model, n_heads, n_layers, d_ff : int
        Encoder sizes (reference for ETT: 128, 8, 2, 128).
    dropout : float
        Dropout after the embedding and inside the encoder.
    activation : {"gelu", "relu"}
    norm_first : bool
        Pre-norm encoder blocks; the original model is post-norm (False).
    instance_norm : bool
        Standardise each window per variate and undo it on the output (on in the original).
    n_targets : int, optional
        Forecast only the first ``n_targets`` variates; the others (covariates) are tokens
        the attention reads. None: every variate is forecast.
    """

    def __init__(self, lookback: int, out_steps: int, *, d_model: int = 128, n_heads: int = 8,
                 n_layers: int = 2, d_ff: int = 128, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False, instance_norm: bool = True,
                 n_targets: int | None = None):
        super().__init__()
        self.lookback = lookback
        self.out_steps = out_steps
        self.n_targets = n_targets
        self.instance_norm = instance_norm
        self.embedding = nn.Linear(lookback, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(n_layers, d_model, n_heads, d_ff, dropout, activation,
                                          norm_first, final_norm=True)
        self.head = nn.Linear(d_model, out_steps)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """One token per variate: its whole window, embedded (B, C, d_model)."""
        return self.embedding_dropout(self.embedding(x.transpose(1, 2)))

    def project(self, encoded: torch.Tensor) -> torch.Tensor:
        """The head per target token, as (B, S, C) (C: ``n_targets`` when set)."""
        if self.n_targets is not None:
            encoded = encoded[:, :self.n_targets]
        return self.head(encoded).transpose(1, 2)


class PatchTransformer(EncoderBackbone):
    """Channel-independent patch transformer (PatchTST-style) with a flatten head.

    Each variate's normalised window is padded at the end by ``stride`` (repeating the last
    value), cut into patches of ``patch_len`` every ``stride`` steps, embedded linearly with a
    learned position embedding and encoded; the head maps all patch tokens of a variate to
    ``out_steps``. The sample axis stays first, (B, C, patches, d_model), so per-sample routing
    broadcasts over variates and patches.
    """

    def __init__(self, lookback: int, out_steps: int, *, patch_len: int = 16, stride: int = 8,
                 d_model: int = 128, n_heads: int = 8, n_layers: int = 2, d_ff: int = 256,
                 dropout: float = 0.1, activation: str = "gelu", norm_first: bool = False,
                 instance_norm: bool = True):
        super().__init__()
        if patch_len < 1 or stride < 1 or patch_len > lookback + stride:
            raise ValueError(
                f"patch_len must be in [1, lookback + stride] and stride >= 1; got "
                f"patch_len={patch_len}, stride={stride}, lookback={lookback}"
            )
        self.lookback = lookback
        self.out_steps = out_steps
        self.patch_len = patch_len
        self.stride = stride
        self.instance_norm = instance_norm
        self.n_patches = (lookback + stride - patch_len) // stride + 1
        self.embedding = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.empty(self.n_patches, d_model))
        nn.init.uniform_(self.position, -0.02, 0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(n_layers, d_model, n_heads, d_ff, dropout, activation,
                                          norm_first, final_norm=True)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.n_patches * d_model, out_steps)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patches of every variate's window, embedded with their position (B, C, P, d_model)."""
        series = x.transpose(1, 2)  # (B, C, L)
        series = torch.cat([series, series[..., -1:].expand(*series.shape[:-1], self.stride)],
                           dim=-1)
        patches = series.unfold(-1, self.patch_len, self.stride)  # (B, C, P, patch_len)
        return self.embedding_dropout(self.embedding(patches) + self.position)

    def project(self, encoded: torch.Tensor) -> torch.Tensor:
        """The flatten head over each variate's patch tokens, as (B, S, C)."""
        return self.head(self.head_dropout(encoded.flatten(-2))).transpose(1, 2)


class DLinearNet(nn.Module):
    """DLinear: moving-average trend + remainder, one shared linear map L -> S for each.

    The moving average pads both ends by repeating the edge values (output length L). Both maps
    start as the window average (weights 1 / L), as in the reference implementation.
    """

    ADAPTER_TARGETS = ("seasonal", "trend")

    def __init__(self, lookback: int, out_steps: int, *, kernel_size: int = 25):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.lookback = lookback
        self.out_steps = out_steps
        self.kernel_size = kernel_size
        self.seasonal = nn.Linear(lookback, out_steps)
        self.trend = nn.Linear(lookback, out_steps)
        with torch.no_grad():
            self.seasonal.weight.fill_(1.0 / lookback)
            self.trend.weight.fill_(1.0 / lookback)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series = x.transpose(1, 2)  # (B, C, L)
        half = (self.kernel_size - 1) // 2
        padded = torch.cat([series[..., :1].expand(*series.shape[:-1], half), series,
                            series[..., -1:].expand(*series.shape[:-1], half)], dim=-1)
        trend = F.avg_pool1d(padded.flatten(0, 1).unsqueeze(1), self.kernel_size, stride=1)
        trend = trend.reshape(series.shape)
        out = self.seasonal(series - trend) + self.trend(trend)
        return out.transpose(1, 2)


BACKBONES: dict[str, type[nn.Module]] = {
    "itransformer": ITransformer,
    "patch": PatchTransformer,
    "dlinear": DLinearNet,
}


def make_backbone(name: str, lookback: int, out_steps: int, **sizes) -> nn.Module:
    """Build a registered backbone by name (``"itransformer"``, ``"patch"``, ``"dlinear"``)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    try:
        return BACKBONES[name](lookback, out_steps, **sizes)
    except TypeError as exc:
        raise TypeError(f"backbone_params do not fit backbone {name!r}: {exc}") from None
