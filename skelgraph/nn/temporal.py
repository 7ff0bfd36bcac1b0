"""Causal self-attention along time with a relative position bias (ALiBi) and its key/value cache
for frame-by-frame inference."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalTemporalAttention", "KVCache", "alibi_bias", "alibi_ring_bias", "alibi_slopes"]


def alibi_slopes(heads: int) -> Tensor:
    r"""The fixed per-head slopes :math:`m_h` of ALiBi (`Press et al., 2022
    <https://arxiv.org/abs/2108.12409>`_): for :math:`H` a power of two the geometric sequence
    :math:`m_h = 2^{-8 h / H}`, :math:`h = 1 \dots H`; otherwise the sequence of the next
    lower power of two :math:`P`, followed by every other slope of the sequence of :math:`2P`.

    Returns:
        Tensor: :math:`(H,)` float32, from the steepest (most local head) to the flattest.
    """
    if heads < 1:
        raise ValueError(f"alibi_slopes: heads: expected an integer >= 1, got {heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    power = 1 << (heads.bit_length() - 1)
    slopes = geometric(power) + geometric(2 * power)[0::2][: heads - power]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, distance: Tensor) -> Tensor:
    r"""The ALiBi position bias :math:`-m_h d` of every head for frame distances :math:`d = t - s`
    (query frame :math:`t`, key frame :math:`s`).

    Args:
        slopes (Tensor): :math:`m_h`, :math:`(H,)` (:func:`alibi_slopes`).
        distance (Tensor): distances of any shape :math:`(*)` (integer or float).

    Returns:
        Tensor: :math:`(H, *)`, in the dtype of ``slopes``.
    """
    return -(slopes.view(-1, *(1,) * distance.dim()) * distance.float())


def alibi_ring_bias(slopes: Tensor, window: int) -> Tensor:
    r"""The ALiBi bias of a ring of :math:`W` slots, frame :math:`t` stored in slot
    :math:`t \bmod W`: entry ``[s, h, j]`` is the bias :math:`-m_h ((s - j) \bmod W)` of slot
    :math:`j` for a new frame in slot :math:`s` (slot :math:`j` holds frame
    :math:`t - ((s - j) \bmod W)`).

    Returns:
        Tensor: :math:`(W, H, W)`.
    """
    slots = torch.arange(window, device=slopes.device)
    distance = (slots[:, None] - slots[None, :]).remainder(window)  # [s, j]
    return alibi_bias(slopes, distance).transpose(0, 1)


@dataclass
class KVCache:
    r"""Key/value cache of :class:`CausalTemporalAttention` for frame-by-frame inference.

    Without a window the buffers grow: they are allocated once and doubled in size when full, so
    appending a frame costs amortised :math:`O(1)` copies, and slots ``0 … length - 1`` hold the
    frames in order. With a window :math:`W` the buffers are a ring of :math:`W` slots: frame
    :math:`t` goes to slot :math:`t \bmod W`, overwriting frame :math:`t - W`, so memory and cost
    per frame stay constant however long the stream.

    Attributes:
        key (Tensor): key buffer of shape :math:`(N, H, L_{max}, D)`.
        value (Tensor): value buffer of shape :math:`(N, H, L_{max}, D)`.
        slopes (Tensor): the layer's ALiBi slopes :math:`(H,)`.
        length (int): number of frames appended so far.
        window (int, optional): ring size :math:`W`, or :obj:`None` for a growing buffer.
    """

    key: Tensor
    value: Tensor
    slopes: Tensor
    length: int = 0
    window: int | None = None

    def __post_init__(self) -> None:
        self._bias = self._bias_table()

    @property
    def capacity(self) -> int:
        """Number of frames the buffers hold (before they are doubled, without a window)."""
        return self.key.size(2)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Stores one frame (``key``, ``value`` of shape :math:`(N, H, 1, D)`).

        Returns:
            (Tensor, Tensor, Tensor): the stored keys and values, each of shape
            :math:`(N, H, L, D)` with :math:`L` the frames held (at most :math:`W`), and the
            position bias :math:`-m_h (t - s)` of each held frame :math:`s` for the new frame
            :math:`t`, of shape :math:`(H, L)`, all in slot order.
        """
        slot, held = self.write(key.select(2, 0), value.select(2, 0))
        return self.key[:, :, :held], self.value[:, :, :held], self.bias(slot, held)

    def write(self, key: Tensor, value: Tensor) -> tuple[int, int]:
        """Stores one frame (:math:`(N, H, D)` each) in its slot; returns :meth:`claim`'s slot
        and frames held."""
        slot, held = self.claim()
        self.key.select(2, slot).copy_(key)
        self.value.select(2, slot).copy_(value)
        return slot, held

    def claim(self) -> tuple[int, int]:
        """Counts one more frame without writing it (the caller writes slot ``slot`` of
        :attr:`key` and :attr:`value`); grows the buffers when full, without a window.

        Returns:
            (int, int): the frame's slot and the frames held (slots ``0 … held - 1``).
        """
        t = self.length
        if self.window is None:
            if t == self.capacity:
                self.key = _grown(self.key, t)
                self.value = _grown(self.value, t)
                self._bias = self._bias_table()
            slot, held = t, t + 1
        else:
            slot, held = t % self.window, min(t + 1, self.window)
        self.length = t + 1
        return slot, held

    def bias(self, slot: int, held: int) -> Tensor:
        r"""The position bias :math:`(H, L)` of the ``held`` slots for the new frame in
        ``slot`` (from :meth:`claim`)."""
        if self.window is None:
            return self._bias[:, self.capacity - held :]
        return self._bias[slot, :, :held]

    def _bias_table(self) -> Tensor:
        r"""Without a window :math:`(H, L_{max})`, entry :math:`i` the bias of distance
        :math:`L_{max} - 1 - i` (its last :math:`L` entries: the frames held, in order); with one
        :func:`alibi_ring_bias` :math:`(W, H, W)`."""
        if self.window is None:
            distance = torch.arange(self.capacity - 1, -1, -1, device=self.key.device)
            return alibi_bias(self.slopes, distance)
        return alibi_ring_bias(self.slopes, self.window)


def _at_queries(
    queries: Tensor, x: Tensor, q: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The rows of the query frames :math:`(N, S)`: of the features ``x`` :math:`(N, T, C)`,
    the queries ``q`` :math:`(N, H, T, D)` and the bias :math:`(1 \text{ or } N, H, T, T)`."""
    if queries.dim() != 2 or queries.size(0) != x.size(0):
        raise ValueError(
            f"CausalTemporalAttention: queries: expected frame indices of shape "
            f"[{x.size(0)}, S], got {list(queries.shape)}"
        )
    (N, H, T, D), S = q.shape, queries.size(1)
    rows = queries[:, None, :, None]  # [N, 1, S, 1]
    x = x.gather(1, queries.unsqueeze(-1).expand(N, S, x.size(-1)))
    q = q.gather(2, rows.expand(N, H, S, D))
    bias = bias.expand(N, H, T, T).gather(2, rows.expand(N, H, S, T))
    return x, q, bias


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
        - m_h (t - s) \right) \mathbf{v}_s^{(h)}, \qquad
        \mathcal{S}(t) = \{ s : t - W < s \le t, \ m_s \}

        \mathbf{x}'_t = \mathbf{x}_t + \big\Vert_{h=1}^{H} \mathbf{a}_t^{(h)} \,
        \mathbf{W}_o, \qquad
        \mathbf{y}_t = \mathbf{x}'_t + \mathrm{MLP}(\mathrm{LN}_2(\mathbf{x}'_t))

    where :math:`W` is the attention window (:math:`\infty` without one), :math:`m_s` the frame
    mask (all frames when no mask is given) and the MLP is
    :math:`\mathrm{Linear} \to \mathrm{GELU} \to \mathrm{Linear}`. The only time information is
    the relative position bias :math:`-m_h (t - s)` of ALiBi (:func:`alibi_bias`) with the fixed
    slopes :func:`alibi_slopes`: the layer sees how far back a frame is, never the absolute frame
    index, so its output does not depend on where a clip starts, and a model trained on windows
    of :math:`W` frames runs on a stream of any length. Distances count frame positions, padded
    frames included. A query at a padded frame whose window holds no real frame attends to itself
    only, so it never yields NaN.

    :meth:`step` gives, one frame at a time, exactly the output the full pass gives at that frame,
    using a :class:`KVCache` from :meth:`init_cache`: at :math:`O(t)` cost per frame without a
    window, at constant cost and memory (a ring of :math:`W` frames) with one.

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
        window (int, optional): attention window :math:`W`: frame :math:`t` attends to frames
            :math:`t - W + 1 \dots t`; :obj:`None` attends to all earlier frames.
            (default: :obj:`None`)

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
        window: int | None = None,
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
        if window is not None and window < 1:
            raise ValueError(
                f"CausalTemporalAttention: window: expected an integer >= 1 or None, got {window}"
            )
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.window = window
        # Stored with the weights: a checkpoint of a layer without the relative bias does not fit.
        self.register_buffer("slopes", alibi_slopes(heads))
        self._bias_cache: tuple[int, torch.device, Tensor] | None = None

        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.proj = nn.Linear(channels, channels, bias=bias)
        self.norm2 = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)  # the MLP, with GELU between
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def reset_parameters(self) -> None:
        """Re-initialises the projections, the MLP and the layer norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()

    def project_qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Splits the normalised features ``h`` of shape :math:`(N, T, C)` into queries, keys
        and values, each of shape :math:`(N, H, T, D)`."""
        n, t, _ = h.shape
        qkv = F.linear(h, self.qkv.weight, self.qkv.bias)
        q, k, v = qkv.view(n, t, 3, self.heads, self.head_channels).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def position_bias(self, num_frames: int, mask: Tensor | None = None) -> Tensor:
        r"""The additive attention bias of the full pass: :math:`-m_h (t - s)` where query
        :math:`t` may attend key :math:`s`, :math:`-\infty` elsewhere.

        Args:
            num_frames (int): :math:`T`.
            mask (Tensor, optional): bool frame mask :math:`(N, T)`.

        Returns:
            Tensor: :math:`(1, H, T, T)` without a mask, :math:`(N, H, T, T)` with one (float32).
        """
        device = self.slopes.device
        # torch.export traces every length at once: a cached length would fix it
        exporting = torch.compiler.is_exporting()
        cached = None if exporting else self._bias_cache
        if cached is not None and cached[0] == num_frames and cached[1] == device:
            bias = cached[2]
        else:
            # made as a normal tensor under inference mode too (an inference tensor could not
            # be reused outside it), so every later call of either mode reuses it
            eager_inference = torch.is_inference_mode_enabled() and not (
                exporting or torch.compiler.is_compiling()
            )
            with torch.inference_mode(False) if eager_inference else contextlib.nullcontext():
                frames = torch.arange(num_frames, device=device)
                distance = frames[:, None] - frames[None, :]
                allowed = distance >= 0
                if self.window is not None:
                    allowed &= distance < self.window
                bias = alibi_bias(self.slopes, distance)
                bias = bias.masked_fill(~allowed, float("-inf")).unsqueeze(0)
            if not (exporting or bias.is_inference()):
                self._bias_cache = (num_frames, device, bias)
        if mask is None:
            return bias
        eye = torch.eye(num_frames, dtype=torch.bool, device=mask.device)
        attend = mask[:, None, None, :] | eye  # a query with no real frame attends itself
        return bias.masked_fill(~attend, float("-inf"))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        return_attention: bool = False,
        queries: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Runs the causal pass over all frames, or at the frames ``queries`` asks for.

        Args:
            x (Tensor): node features of shape :math:`(N, T, C)`.
            mask (Tensor, optional): bool frame mask of shape :math:`(N, T)`, :obj:`True` for
                real frames; padded frames are never attended by real frames.
            return_attention (bool, optional): also return the attention weights
                :math:`(N, H, T, T)` indexed ``[n, h, t, s]`` (query frame :math:`t`, key frame
                :math:`s`; rows sum to 1). They are computed explicitly and used for the output
                instead of the fused kernel, which gives the same output to float rounding.
                (default: :obj:`False`)
            queries (Tensor, optional): frame indices :math:`(N, S)`: the output (and the
                attention, :math:`(N, H, S, T)`) at these frames only, equal to the full pass's
                rows there (to float rounding). Every frame still gives its key and value; the
                attention of the other frames, the projection and the MLP are not computed.
                (default: :obj:`None`, every frame)

        Returns:
            Tensor: :math:`(N, T, C)`, or :math:`(N, S, C)` with ``queries``.
        """
        self._check_input(x, mask)
        q, k, v = self.project_qkv(self._norm(self.norm1, x))
        bias = self.position_bias(x.size(1), mask).to(q.dtype)
        if queries is not None:
            x, q, bias = _at_queries(queries, x, q, bias)
        if return_attention:
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(self.head_channels**-0.5)
            weights = torch.softmax(scores.add_(bias), dim=-1)
            out = torch.matmul(self._dropout(weights), v)
            return self._update(x, out), weights
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self._update(x, out)

    def init_cache(self, num_nodes: int, max_len: int | None = None) -> KVCache:
        """An empty key/value cache for :meth:`step` over ``num_nodes`` nodes.

        With a window the cache is a ring of exactly ``window`` frames; without one it starts
        with room for ``max_len`` frames and doubles when that is exceeded.

        Args:
            num_nodes (int): number of nodes :math:`N` streamed together.
            max_len (int, optional): frames to preallocate without a window; ignored with one.
                (default: :obj:`64`)
        """
        capacity = 64 if max_len is None else max_len
        if num_nodes < 1 or capacity < 1:
            raise ValueError(
                f"CausalTemporalAttention.init_cache: num_nodes and max_len must be positive, "
                f"got {num_nodes} and {capacity}"
            )
        if self.window is not None:
            capacity = self.window
        weight = self.qkv.weight
        shape = (num_nodes, self.heads, capacity, self.head_channels)
        return KVCache(
            key=weight.new_zeros(shape),
            value=weight.new_zeros(shape),
            slopes=self.slopes,
            window=self.window,
        )

    def step(self, x_t: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """Processes one new frame, giving the output the full pass gives at that frame.

        The frame's key and value are stored in ``cache`` (in place; the cache is returned for
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
        if cache.window != self.window:
            raise ValueError(
                f"CausalTemporalAttention.step: cache: expected a cache of window "
                f"{self.window}, got {cache.window}"
            )
        x = x_t.unsqueeze(1)
        q, k, v = self.project_qkv(self._norm(self.norm1, x))
        keys, values, bias = cache.append(k, v)
        # One query per node: plain products are cheaper here than a fused attention kernel.
        scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.head_channels**-0.5)
        weights = torch.softmax(scores.add_(bias.unsqueeze(1)), dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout)
        return self._update(x, torch.matmul(weights, values)).squeeze(1), cache

    def _update(self, x: Tensor, attended: Tensor) -> Tensor:
        """Residual attention output, then the feed-forward block; ``attended``: (N, H, T, D).

        The layers are applied as functions: on the small inputs of :meth:`step` module calls
        would cost about as much as the arithmetic."""
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = x + self._dropout(F.linear(attended, self.proj.weight, self.proj.bias))
        h = F.gelu(F.linear(self._norm(self.norm2, x), self.fc1.weight, self.fc1.bias))
        return x + self._dropout(F.linear(self._dropout(h), self.fc2.weight, self.fc2.bias))

    def _dropout(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout) if self.training and self.dropout > 0 else x

    @staticmethod
    def _norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

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
            f"mlp_ratio={self.mlp_ratio}, dropout={self.dropout}, window={self.window})"
        )
