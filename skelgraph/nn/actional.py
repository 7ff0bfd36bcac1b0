r"""The actional-graph inference module (AGIM) of SymGNN (`Li et al., 2021
<https://arxiv.org/abs/1910.02212>`_, §4.1.1): joint-to-joint "actional" links inferred from the
motion of a clip, without its label.

**Encoder** (eq. 1). Every joint's trajectory is embedded, :math:`\mathbf{p}^{(0)}_i =
f(\mathbf{x}_i)`, then features are passed :math:`K` times between joints and all joint pairs
(the possible edges):

.. math::
    \mathbf{q}^{(k)}_{i,j} = f^{(k)}_e\big(\mathbf{p}^{(k)}_i \,\Vert\, \mathbf{p}^{(k)}_j\big),
    \qquad
    \mathbf{p}^{(k+1)}_i = f^{(k)}_v\Big(\frac{1}{V} \sum_{j} \mathbf{q}^{(k)}_{i,j}\Big),

where :math:`f_e, f_v` are two-layer MLPs with batch norm, ReLU and dropout (one pair per
iteration). The paper's :math:`f` reads the flattened trajectory (a fixed number of frames);
here it is a per-frame MLP of the frame's features, averaged over the real frames, so that any
clip length works and padded frames never count.

**Decoder** (eq. 2). Two embeddings of the final joint features per link type :math:`c`,
:math:`\psi^c_{out}` and :math:`\psi^c_{in}`, give the asymmetric links

.. math::
    \mathbf{A}^{c}_{i,j} = \frac{\exp\big(\psi^c_{out}(\mathbf{p}_i)^\top
    \psi^c_{in}(\mathbf{p}_j) / \sqrt{d}\big)}{\sum_{k} \exp\big(\psi^c_{out}(\mathbf{p}_i)^\top
    \psi^c_{in}(\mathbf{p}_k) / \sqrt{d}\big)},

non-negative and row-normalised per link type (``A[..., c, i, j]`` weighs the message from joint
:math:`j` to joint :math:`i`). The paper's softmax has no temperature; the
:math:`1 / \sqrt{d}` of dot-product attention keeps it from saturating at initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ActionalGraphInference", "PointMLP"]


class PointMLP(nn.Module):
    r"""A two-layer MLP on the last dimension with batch norm, ReLU and dropout:
    :math:`\mathrm{ReLU}(\mathrm{BN}(W_2\, \mathrm{Dropout}(\mathrm{ReLU}(\mathrm{BN}(W_1 x)))))`;
    batch norm counts every leading position as a sample.

    Shapes:
        - **input:** :math:`(*, C_{in})`
        - **output:** :math:`(*, C_{out})`
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, out_channels: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_channels, hidden_channels)
        self.bn1 = nn.BatchNorm1d(hidden_channels)
        self.lin2 = nn.Linear(hidden_channels, out_channels)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Re-initialises both layers and norms."""
        for module in (self.lin1, self.bn1, self.lin2, self.bn2):
            module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1]
        h = self.bn1(self.lin1(x.reshape(-1, x.size(-1)))).relu_()
        h = self.bn2(self.lin2(self.dropout(h))).relu_()
        return h.view(*shape, -1)


class ActionalGraphInference(nn.Module):
    r"""Actional graphs :math:`\mathbf{A}^c` of a clip (see the module description).

    Args:
        in_channels (int): features per joint and frame :math:`C_{in}`.
        hidden_channels (int): width of the joint and edge features. (default: :obj:`128`)
        embed_channels (int): size :math:`d` of the two embeddings :math:`\psi_{out},
            \psi_{in}` per link type. (default: :obj:`64`)
        link_types (int): link types :math:`L_a` (one graph each). (default: :obj:`1`)
        iterations (int): joint/edge passes :math:`K \ge 1`. (default: :obj:`2`)
        dropout (float): dropout inside the MLPs. (default: :obj:`0.0`)

    Shapes:
        - **input:** joint features :math:`(B, V, T, C_{in})`, optional frame mask
          :math:`(B, T)` (:obj:`True` = real frame)
        - **output:** :math:`(B, L_a, V, V)`, rows summing to 1
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 128,
        embed_channels: int = 64,
        link_types: int = 1,
        iterations: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("hidden_channels", hidden_channels),
            ("embed_channels", embed_channels),
            ("link_types", link_types),
            ("iterations", iterations),
        ):
            if value < 1:
                raise ValueError(
                    f"ActionalGraphInference: {name}: expected an integer >= 1, got {value}"
                )
        self.link_types = link_types
        self.embed_channels = embed_channels
        h = hidden_channels
        self.frame_mlp = PointMLP(in_channels, h, h, dropout)
        self.edge_mlps = nn.ModuleList(PointMLP(2 * h, h, h, dropout) for _ in range(iterations))
        self.node_mlps = nn.ModuleList(PointMLP(h, h, h, dropout) for _ in range(iterations))
        self.embed_out = nn.Linear(h, link_types * embed_channels)
        self.embed_in = nn.Linear(h, link_types * embed_channels)

    def reset_parameters(self) -> None:
        """Re-initialises every layer."""
        for module in self.children():
            if isinstance(module, nn.ModuleList):
                for mlp in module:
                    mlp.reset_parameters()
            else:
                module.reset_parameters()

    def encode(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The joint features :math:`\\mathbf{p}^{(K)}` :math:`(B, V, C_h)` after the
        :math:`K` joint/edge passes (eq. 1)."""
        if x.dim() != 4:
            raise ValueError(
                f"ActionalGraphInference: x: expected shape [B, V, T, C], got {list(x.shape)}"
            )
        B, V, T, _ = x.shape
        h = self.frame_mlp(x)  # [B, V, T, C_h]
        if mask is None:
            p = h.mean(dim=2)
        else:
            weight = mask.to(h.dtype).view(B, 1, T, 1)
            p = (h * weight).sum(dim=2) / weight.sum(dim=2).clamp_min(1.0)
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps, strict=True):
            pairs = torch.cat(
                [p.unsqueeze(2).expand(B, V, V, -1), p.unsqueeze(1).expand(B, V, V, -1)], dim=-1
            )
            p = node_mlp(edge_mlp(pairs).mean(dim=2))
        return p

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        p = self.encode(x, mask)
        B, V, _ = p.shape
        d = self.embed_channels
        queries = self.embed_out(p).view(B, V, self.link_types, d).transpose(1, 2)
        keys = self.embed_in(p).view(B, V, self.link_types, d).transpose(1, 2)
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(d)  # [B, L_a, V, V]
        return scores.float().softmax(dim=-1).to(p.dtype)
