"""Temporal layers: causal self-attention along time (with streaming) and a temporal convolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    r"""Key/value cache of :class:`CausalTemporalAttention` for frame-by-frame inference.

    The buffers are allocated once and doubled in size when full, so appending a frame costs
    amortised :math:`O(1)` copies; frames ``0 … length - 1`` are valid.

    Attributes:
        key (Tensor): key buffer of shape :math:`(N, H, L_{max}, D)`.
        value (Tensor): value buffer of shape :math:`(N, H, L_{max}, D)`.
        length (int): number of frames stored so far.
    """

    key: Tensor
    value: Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        """Number of frames the buffers hold before they are doubled."""
        return self.key.size(2)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Stores one frame (``key``, ``value`` of shape :math:`(N, H, 1, D)`) and returns views of
        all cached keys and values, each of shape :math:`(N, H, \\text{length}, D)`."""
        if self.length == self.capacity:
            self.key = _grown(self.key, self.length)
            self.value = _grown(self.value, self.length)
        t = self.length
        self.key[:, :, t : t + 1] = key
        self.value[:, :, t : t + 1] = value
        self.length = t + 1
        return self.key[:, :, : t + 1], self.value[:, :, : t + 1]


def _grown(buffer: Tensor, length: int) -> Tensor:
    """A buffer of twice the capacity (dim 2) holding the first ``length`` frames of ``buffer``."""
    shape = list(buffer.shape)
    shape[2] *= 2
    grown = buffer.new_empty(shape)
    grown[:, :, :length] = buffer[:, :, :length]
    return grown


class CausalTemporalAttention(nn.Module):
    r"""Pre-norm transformer block with causal multi-head self-attention along the time axis of
    every node (joint) of a batched graph, as in the InfoGCN++ encoder.

    For node :math:`n`, frame :math:`t` and head :math:`h` with head width :math:`D = C / H`:

    .. math::
        \mathbf{q}_t, \mathbf{k}_t, \mathbf{v}_t = \mathrm{LN}_1(\mathbf{x}_t)
        \mathbf{W}_{qkv}

        \mathbf{a}_t^{(h)} = \sum_{s \in \mathcal{S}(t)} \operatorname{softmax}_{s \in
        \mathcal{S}(t)} \left( \frac{\mathbf{q}_t^{(h)\top} \mathbf{k}_s^{(h)}}{\sqrt{D}}
        \right) \mathbf{v}_s^{(h)}, \qquad \mathcal{S}(t) = \{ s \le t : m_s \}

        \mathbf{x}'_t = \mathbf{x}_t + \big\Vert_{h=1}^{H} \mathbf{a}_t^{(h)} \,
        \mathbf{W}_o, \qquad
        \mathbf{y}_t = \mathbf{x}'_t + \mathrm{MLP}(\mathrm{LN}_2(\mathbf{x}'_t))

    where :math:`m_s` is the frame mask (all frames when no mask is given) and the MLP is
    :math:`\mathrm{Linear} \to \mathrm{GELU} \to \mathrm{Linear}`. A query at a padded frame whose
    window holds no real frame attends to itself only, so it never yields NaN. The layer has no
    positional encoding of its own.

    :meth:`step` gives, one frame at a time, exactly the output the full pass gives at that frame,
    at :math:`O(t)` cost per frame, using a :class:`KVCache` from :meth:`init_cache`.

    Args:
        channels (int): size :math:`C` of each frame's features.
        heads (int, optional): number of attention heads :math:`H`; must divide ``channels``.
            (default: :obj:`4`)
        mlp_ratio (float, optional): hidden width of the MLP relative to ``channels``.
            (default: :obj:`4.0`)
        dropout (float, optional): dropout on the attention weights, the attention output and
            the MLP. (default: :obj:`0.0`)
        bias (bool, optional): whether the projections and the MLP learn an additive bias.
            (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(N, T, C)` with :math:`N = B \cdot V`,
          optional frame mask :math:`(N, T)` (bool, :obj:`True` = real frame)
        - **output:** node features :math:`(N, T, C)`
    """

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if heads < 1 or channels % heads != 0:
            raise ValueError(
                f"CausalTemporalAttention: channels ({channels}) must be a multiple of "
                f"heads ({heads})"
            )
        hidden = int(channels * mlp_ratio)
        if hidden < 1:
            raise ValueError(
                f"CausalTemporalAttention: mlp_ratio {mlp_ratio} gives an empty MLP for "
                f"{channels} channels"
            )
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout

        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)
        self.proj_dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, channels, bias=bias),
            nn.Dropout(dropout),
        )

    def reset_parameters(self) -> None:
        """Re-initialises the projections, the MLP and the layer norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()

    def project_qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Splits the normalised features ``h`` of shape :math:`(N, T, C)` into queries, keys
        and values, each of shape :math:`(N, H, T, D)`."""
        n, t, _ = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, self.head_channels).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Runs the full causal pass over all frames.

        Args:
            x (Tensor): node features of shape :math:`(N, T, C)`.
            mask (Tensor, optional): bool frame mask of shape :math:`(N, T)`, :obj:`True` for
                real frames; padded frames are never attended by real frames.
        """
        self._check_input(x, mask)
        q, k, v = self.project_qkv(self.norm1(x))
        attn_mask = None if mask is None else _causal_frame_mask(mask)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
        )
        return self._update(x, out)

    def init_cache(self, num_nodes: int, max_len: int | None = None) -> KVCache:
        """An empty key/value cache for :meth:`step` over ``num_nodes`` nodes.

        Args:
            num_nodes (int): number of nodes :math:`N` streamed together.
            max_len (int, optional): frames to preallocate; the cache doubles when it is
                exceeded. (default: :obj:`64`)
        """
        capacity = 64 if max_len is None else max_len
        if num_nodes < 1 or capacity < 1:
            raise ValueError(
                f"CausalTemporalAttention.init_cache: num_nodes and max_len must be positive, "
                f"got {num_nodes} and {capacity}"
            )
        weight = self.qkv.weight
        shape = (num_nodes, self.heads, capacity, self.head_channels)
        return KVCache(
            key=weight.new_empty(shape),
            value=weight.new_empty(shape),
        )

    def step(self, x_t: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """Processes one new frame, giving the output the full pass gives at that frame.

        The frame's key and value are appended to ``cache`` (in place; the cache is returned for
        convenience). Meant for inference: gradients do not flow through the cache.

        Args:
            x_t (Tensor): the new frame's node features of shape :math:`(N, C)`.
            cache (KVCache): the cache of the earlier frames, from :meth:`init_cache`.

        Returns:
            (Tensor, KVCache): the output of shape :math:`(N, C)` and the updated cache.
        """
        num_nodes = cache.key.size(0)
        if x_t.dim() != 2 or x_t.shape != (num_nodes, self.channels):
            raise ValueError(
                f"CausalTemporalAttention.step: x_t: expected shape ({num_nodes}, "
                f"{self.channels}), got {tuple(x_t.shape)}"
            )
        x = x_t.unsqueeze(1)
        q, k, v = self.project_qkv(self.norm1(x))
        keys, values = cache.append(k, v)
        out = F.scaled_dot_product_attention(
            q, keys, values, dropout_p=self.dropout if self.training else 0.0
        )
        return self._update(x, out).squeeze(1), cache

    def _update(self, x: Tensor, attended: Tensor) -> Tensor:
        """Residual attention output, then the feed-forward block; ``attended``: (N, H, T, D)."""
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = x + self.proj_dropout(self.proj(attended))
        return x + self.mlp(self.norm2(x))

    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        if x.dim() != 3 or x.size(-1) != self.channels:
            raise ValueError(
                f"CausalTemporalAttention: x: expected shape (N, T, {self.channels}), "
                f"got {tuple(x.shape)}"
            )
        if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape[:2]):
            raise ValueError(
                f"CausalTemporalAttention: mask: expected a bool tensor of shape "
                f"{tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
            f"mlp_ratio={self.mlp_ratio}, dropout={self.dropout})"
        )


def _causal_frame_mask(mask: Tensor) -> Tensor:
    """Bool attention mask :math:`(N, 1, T, T)`: query t may attend key s when s <= t and s is a
    real frame, and always itself (so a query with no real frame in its past is well defined)."""
    t = mask.size(1)
    eye = torch.eye(t, dtype=torch.bool, device=mask.device)
    causal = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril_()
    return (mask[:, None, None, :] | eye) & causal


class TemporalConv(nn.Module):
    r"""Temporal convolution unit of ST-GCN-style blocks: a :math:`(k \times 1)` convolution along
    time, batch normalisation and dropout, on dense skeleton tensors.

    .. math::
        \mathbf{X}'_{:, t} = \mathrm{Dropout}\Big(\mathrm{BN}\Big(\sum_{i=0}^{k-1}
        \mathbf{W}_i \, \mathbf{X}_{:, s t + i - p}\Big)\Big)

    with stride :math:`s`. Centred (``causal=False``): :math:`p = (k - 1) / 2` frames of zero
    padding on both sides, so output frame :math:`t` is centred on input frame :math:`s t`.
    Causal: :math:`p = k - 1` frames on the past side only, so output frame :math:`t` ends at
    input frame :math:`s t` and never depends on later frames. Either way there are
    :math:`\lceil T / s \rceil` output frames, aligned with a stride-:math:`s` residual.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int, optional): temporal extent :math:`k` (odd unless ``causal``).
            (default: :obj:`9`)
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
        dropout (float, optional): dropout probability. (default: :obj:`0.0`)
        causal (bool, optional): pad the past only. (default: :obj:`False`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)`
        - **output:** :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 9,
        *,
        stride: int = 1,
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(
                f"TemporalConv: kernel_size and stride must be positive, got {kernel_size} "
                f"and {stride}"
            )
        if not causal and kernel_size % 2 == 0:
            raise ValueError(
                f"TemporalConv: kernel_size must be odd for centred padding, got {kernel_size}"
            )
        self.kernel_size = kernel_size
        self.stride = stride
        self.causal = causal
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, 1),
            stride=(stride, 1),
            padding=(0 if causal else (kernel_size - 1) // 2, 0),
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Re-initialises the convolution and the batch norm."""
        self.conv.reset_parameters()
        self.bn.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Applies the unit to ``x`` of shape :math:`(B, C_{in}, T, V)`."""
        if self.causal:
            x = F.pad(x, (0, 0, self.kernel_size - 1, 0))
        return self.dropout(self.bn(self.conv(x)))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.conv.in_channels}, {self.conv.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, causal={self.causal})"
        )
