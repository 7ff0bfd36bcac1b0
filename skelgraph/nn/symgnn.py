r"""The graph operators of SymGNN (`Li et al., 2021 <https://arxiv.org/abs/1910.02212>`_):
joint-scale and part-scale graph convolutions and their temporal blocks, the joint/part fusion,
the multi-scale GCN of one branch and the GRU motion decoder.

Dense features :math:`(B, C, T, V)` as in :mod:`skelgraph.nn.stgcn`; a graph ``A[i, j]`` weighs the
message from node :math:`j` to node :math:`i`. The actional graphs come from
:class:`~skelgraph.nn.actional.ActionalGraphInference`, one set per clip :math:`(B, L_a, V, V)`,
and are passed to every joint-scale layer.

- **Structural graphs** (§4.1.2): the :math:`L`-order polynomial of the normalised skeleton
  adjacency :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2} (\mathbf{A} + \mathbf{I})
  \mathbf{D}^{-1/2}`, each power :math:`\hat{\mathbf{A}}^l` (joints within :math:`l` hops) with
  its own trainable edge weights :math:`\mathbf{M}_l` (ones at the start):
  :math:`\mathbf{A}_{str,l} = \mathbf{M}_l \odot \hat{\mathbf{A}}^l`, :math:`l = 1 \dots L`.
- **Joint-scale graph convolution** (eqs. 3–5):
  :math:`\mathbf{X}' = \sum_l \mathbf{A}_{str,l} \mathbf{X} \mathbf{W}_l + \lambda \sum_c
  \mathbf{A}^c_{act} \mathbf{X} \mathbf{W}^c_{act} + \mathbf{b}`, structural (SGC) plus
  :math:`\lambda` times actional (AGC).
- **Part-scale graph convolution** (eq. 7): on the body parts of ``Layout.parts``,
  :math:`\mathbf{X}'_p = (\mathbf{M}_p \odot \hat{\mathbf{A}}_p) \mathbf{X}_p \mathbf{W}_p +
  \mathbf{b}` with the normalised part adjacency (self-loops added) and trainable weights
  :math:`\mathbf{M}_p`.
- **Blocks** (eqs. 6, 8): graph convolution, batch norm, ReLU, a temporal convolution (kernel
  :math:`k`, stride :math:`s`, batch norm, dropout), a residual and a ReLU
  (:class:`~skelgraph.nn.stgcn.GraphTemporalBlock`).
- **Bidirectional fusion** (§5.1.2): joint→part pooling averages the joints of every part,
  part→joint matching copies every part's features to its joints (:class:`PartPooling`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.layouts import Layout, get_layout
from skelgraph.layouts.graph import adjacency, normalize_adjacency, part_graph
from skelgraph.nn.stgcn import DenseGraphModule, GraphTemporalBlock, graph_conv, reset_children
from skelgraph.nn.temporal_conv import TemporalConv

__all__ = [
    "JointGraphConv",
    "JointGraphTemporalBlock",
    "MotionDecoder",
    "MultiScaleGCN",
    "PartGraphConv",
    "PartGraphTemporalBlock",
    "PartPooling",
    "structural_polynomial",
]


def structural_polynomial(adjacency: Tensor, order: int) -> Tensor:
    r"""The powers :math:`\hat{\mathbf{A}}, \hat{\mathbf{A}}^2, \dots, \hat{\mathbf{A}}^L` of a
    normalised adjacency :math:`(V, V)`, stacked :math:`(L, V, V)`."""
    if order < 1:
        raise ValueError(f"structural_polynomial: order: expected an integer >= 1, got {order}")
    powers = [adjacency]
    for _ in range(order - 1):
        powers.append(powers[-1] @ adjacency)
    return torch.stack(powers)


class JointGraphConv(DenseGraphModule):
    r"""The joint-scale graph convolution (JGC) of SymGNN: structural plus :math:`\lambda` times
    actional graph convolution (see the module description).

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        layout (Layout or str): the skeleton, for the structural graphs.
        order (int): :math:`L`, the highest power of the structural polynomial. (default: :obj:`3`)
        link_types (int): actional graphs :math:`L_a` per clip. (default: :obj:`1`)
        lambda_act (float): :math:`\lambda`. (default: :obj:`0.5`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)` and actional graphs :math:`(B, L_a, V, V)`
        - **output:** :math:`(B, C_{out}, T, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout | str,
        *,
        order: int = 3,
        link_types: int = 1,
        lambda_act: float = 0.5,
    ) -> None:
        super().__init__()
        layout = get_layout(layout)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_joints = layout.num_joints
        self.layout_name = layout.name
        self.order = order
        self.link_types = link_types
        self.lambda_act = float(lambda_act)
        self.register_buffer("polynomial", structural_polynomial(adjacency(layout), order))
        self.edge_weights = nn.Parameter(torch.ones_like(self.polynomial))
        # one 1x1 convolution to (L + L_a) C_out channels, partition-major: W_1..W_L, then W_act^c
        self.conv = nn.Conv2d(in_channels, (order + link_types) * out_channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def reset_parameters(self) -> None:
        """Re-initialises the weights, zeroes the bias and sets the edge weights to ones."""
        self.conv.reset_parameters()
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.edge_weights)

    def structural_graphs(self) -> Tensor:
        r""":math:`\mathbf{M}_l \odot \hat{\mathbf{A}}^l`, :math:`(L, V, V)`."""
        return self.polynomial * self.edge_weights

    def graph(self, actional: Tensor) -> Tensor:
        r"""The :math:`L + L_a` graphs the layer applies to a clip, :math:`(B, L + L_a, V, V)`:
        the structural ones, then :math:`\lambda` times the actional ones."""
        B = actional.size(0)
        structural = self.structural_graphs().to(actional.dtype)
        return torch.cat([structural.expand(B, -1, -1, -1), self.lambda_act * actional], dim=1)

    def forward_dense(self, x: Tensor, actional: Tensor | None = None) -> Tensor:  # type: ignore[override]
        self._check_dense(x)
        shape = (x.size(0), self.link_types, self.num_joints, self.num_joints)
        if actional is None or actional.shape != shape:
            got = None if actional is None else list(actional.shape)
            raise ValueError(
                f"JointGraphConv: actional: expected the actional graphs of shape {list(shape)} "
                f"(ActionalGraphInference), got {got}"
            )
        out = graph_conv(x, self.conv.weight, self.graph(actional))
        return out + self.bias.view(1, -1, 1, 1)


class PartGraphConv(DenseGraphModule):
    r"""The part-scale graph convolution (PGC) of SymGNN (eq. 7):
    :math:`\mathbf{X}'_p = (\mathbf{M}_p \odot \hat{\mathbf{A}}_p) \mathbf{X}_p \mathbf{W}_p +
    \mathbf{b}`, on the :math:`P` body parts of ``layout.parts``
    (:func:`~skelgraph.layouts.graph.part_graph`).

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        layout (Layout or str): a layout with body parts.

    Shapes:
        - **input:** :math:`(B, C_{in}, T, P)`
        - **output:** :math:`(B, C_{out}, T, P)`
    """

    def __init__(self, in_channels: int, out_channels: int, layout: Layout | str) -> None:
        super().__init__()
        layout = get_layout(layout)
        _, links = part_graph(layout)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_joints = links.size(0)  # the nodes of this graph are the parts
        self.layout_name = layout.name
        normalised = normalize_adjacency(links + torch.eye(links.size(0)), "sym")
        self.register_buffer("adjacency", normalised)
        self.edge_weights = nn.Parameter(torch.ones_like(normalised))
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def reset_parameters(self) -> None:
        """Re-initialises the weight, zeroes the bias and sets the edge weights to ones."""
        self.conv.reset_parameters()
        nn.init.zeros_(self.bias)
        nn.init.ones_(self.edge_weights)

    def graph(self, x: Tensor | None = None) -> Tensor:
        r""":math:`\mathbf{M}_p \odot \hat{\mathbf{A}}_p` as :math:`(1, P, P)`, the same for every
        input."""
        return (self.adjacency * self.edge_weights).unsqueeze(0)

    def forward_dense(self, x: Tensor) -> Tensor:
        self._check_dense(x)
        return graph_conv(x, self.conv.weight, self.graph()) + self.bias.view(1, -1, 1, 1)


class JointGraphTemporalBlock(GraphTemporalBlock):
    r"""The JGTC block (eq. 6): :class:`JointGraphConv`, batch norm and ReLU, then a temporal
    convolution unit (:class:`~skelgraph.nn.temporal_conv.TemporalConv`: kernel :math:`k`,
    stride :math:`s`, batch norm, dropout), the residual and a ReLU.

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        layout (Layout or str): the skeleton.
        order (int): structural polynomial order :math:`L`. (default: :obj:`3`)
        link_types (int): actional graphs :math:`L_a`. (default: :obj:`1`)
        lambda_act (float): :math:`\lambda`. (default: :obj:`0.5`)
        stride (int): temporal stride :math:`s`. (default: :obj:`1`)
        kernel_size (int): temporal kernel :math:`k`. (default: :obj:`9`)
        dropout (float): dropout after the temporal convolution. (default: :obj:`0.0`)
        residual (bool): add the residual. (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)` and actional graphs :math:`(B, L_a, V, V)`
        - **output:** :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout | str,
        *,
        order: int = 3,
        link_types: int = 1,
        lambda_act: float = 0.5,
        stride: int = 1,
        kernel_size: int = 9,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        gcn = JointGraphConv(
            in_channels,
            out_channels,
            layout,
            order=order,
            link_types=link_types,
            lambda_act=lambda_act,
        )
        tcn = TemporalConv(out_channels, out_channels, kernel_size, stride=stride, dropout=dropout)
        super().__init__(gcn, tcn, residual=residual)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward_dense(self, x: Tensor, actional: Tensor | None = None) -> Tensor:  # type: ignore[override]
        h = F.relu(self.bn(self.gcn.forward_dense(x, actional)), inplace=True)
        out = self.tcn(h)
        if self.residual is not None:
            out = out + self.residual(x)
        return F.relu(out, inplace=True)


class PartGraphTemporalBlock(GraphTemporalBlock):
    r"""The PGTC block (eq. 8): :class:`PartGraphConv`, batch norm and ReLU, then the temporal
    unit of :class:`JointGraphTemporalBlock`, the residual and a ReLU.

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        layout (Layout or str): a layout with body parts.
        stride (int): temporal stride :math:`s`. (default: :obj:`1`)
        kernel_size (int): temporal kernel :math:`k`. (default: :obj:`9`)
        dropout (float): dropout after the temporal convolution. (default: :obj:`0.0`)
        residual (bool): add the residual. (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, P)`
        - **output:** :math:`(B, C_{out}, \lceil T / s \rceil, P)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout | str,
        *,
        stride: int = 1,
        kernel_size: int = 9,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        gcn = PartGraphConv(in_channels, out_channels, layout)
        tcn = TemporalConv(out_channels, out_channels, kernel_size, stride=stride, dropout=dropout)
        super().__init__(gcn, tcn, residual=residual)
        self.bn = nn.BatchNorm2d(out_channels)

    def spatial(self, x: Tensor) -> Tensor:
        """:math:`\\mathrm{ReLU}(\\mathrm{BN}(\\mathrm{PGC}(\\mathbf{X})))` on dense features."""
        return F.relu(self.bn(self.gcn.forward_dense(x)), inplace=True)


class PartPooling(nn.Module):
    r"""Joint→part pooling and part→joint matching over ``layout.parts`` (§5.1.2).

    Pooling averages the joints of every part, :math:`\mathbf{x}_p = \frac{1}{|p|} \sum_{v \in p}
    \mathbf{x}_v`; matching copies every part's features to its joints, :math:`\mathbf{x}_v =
    \frac{1}{n_v} \sum_{p \ni v} \mathbf{x}_p` (the mean over the :math:`n_v` parts of a joint
    in several, zero for a joint in none).

    Args:
        layout (Layout or str): a layout with body parts.

    Shapes:
        - :meth:`joint_to_part`: :math:`(B, C, T, V) \to (B, C, T, P)`
        - :meth:`part_to_joint`: :math:`(B, C, T, P) \to (B, C, T, V)`
    """

    def __init__(self, layout: Layout | str) -> None:
        super().__init__()
        assignment, _ = part_graph(layout)  # [V, P], rows normalised over a joint's parts
        member = (assignment > 0).to(assignment.dtype)
        self.register_buffer("pool", member / member.sum(dim=0, keepdim=True), persistent=False)
        self.register_buffer("match", assignment, persistent=False)
        self.num_joints, self.num_parts = assignment.shape

    def joint_to_part(self, x: Tensor) -> Tensor:
        return x @ self.pool.to(x.dtype)

    def part_to_joint(self, x: Tensor) -> Tensor:
        return x @ self.match.t().to(x.dtype)


class MultiScaleGCN(nn.Module):
    r"""One branch of SymGNN's backbone (§5.1.2): a stem JGTC block, then pairs of JGTC and PGTC
    blocks with bidirectional fusion, and the two scales summed.

    .. math::
        \mathbf{H}_0 = \mathrm{JGTC}_0(\mathbf{X}), \quad \mathbf{P}_0 = \mathrm{pool}
        (\mathbf{H}_0), \quad \mathbf{H}_{i+1} = \mathrm{JGTC}_{i+1}(\mathbf{H}'_i), \quad
        \mathbf{P}_{i+1} = \mathrm{PGTC}_{i+1}(\mathbf{P}'_i),

    where after a fusion block :math:`i` the next inputs carry the other scale concatenated,
    :math:`\mathbf{H}'_i = [\mathbf{H}_i \Vert \mathrm{match}(\mathbf{P}_i)]`,
    :math:`\mathbf{P}'_i = [\mathbf{P}_i \Vert \mathrm{pool}(\mathbf{H}_i)]`, and otherwise
    :math:`\mathbf{H}'_i = \mathbf{H}_i`, :math:`\mathbf{P}'_i = \mathbf{P}_i`. The output is
    :math:`\mathbf{H}_n + \mathrm{match}(\mathbf{P}_n)`.

    Args:
        in_channels (int): :math:`C_{in}`.
        channels (sequence of int): widths of the :math:`n` block pairs; the stem has the first.
        strides (sequence of int): temporal strides of the pairs (the stem has stride 1).
        fusion (sequence of int): pairs (0-based) after which the scales are exchanged, each
            before the last pair.
        layout (Layout or str): a layout with body parts.
        order (int): structural polynomial order :math:`L`. (default: :obj:`3`)
        link_types (int): actional graphs :math:`L_a`. (default: :obj:`1`)
        lambda_act (float): :math:`\lambda`. (default: :obj:`0.5`)
        kernel_size (int): temporal kernel. (default: :obj:`9`)
        dropout (float): dropout of the temporal units. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)` and actional graphs :math:`(B, L_a, V, V)`
        - **output:** :math:`(B, C_n, T', V)`, :math:`T'` after the strides
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        fusion: Sequence[int],
        layout: Layout | str,
        *,
        order: int = 3,
        link_types: int = 1,
        lambda_act: float = 0.5,
        kernel_size: int = 9,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channels or len(channels) != len(strides):
            raise ValueError(
                f"MultiScaleGCN: channels and strides: expected two non-empty sequences of the "
                f"same length, got {len(channels)} and {len(strides)}"
            )
        self.fusion = tuple(sorted({int(i) for i in fusion}))
        if any(i < 0 or i >= len(channels) - 1 for i in self.fusion):
            raise ValueError(
                f"MultiScaleGCN: fusion: expected block indices in [0, {len(channels) - 1}) "
                f"(a fusion feeds the next block), got {list(fusion)}"
            )
        self.parts = PartPooling(layout)
        joint = {"order": order, "link_types": link_types, "lambda_act": lambda_act}
        common = {"kernel_size": kernel_size, "dropout": dropout}
        self.stem = JointGraphTemporalBlock(
            in_channels, channels[0], layout, **joint, **common, residual=False
        )
        self.joint_blocks = nn.ModuleList()
        self.part_blocks = nn.ModuleList()
        previous = channels[0]
        for i, (width, stride) in enumerate(zip(channels, strides, strict=True)):
            c_in = 2 * previous if i - 1 in self.fusion else previous
            self.joint_blocks.append(
                JointGraphTemporalBlock(c_in, width, layout, **joint, stride=stride, **common)
            )
            self.part_blocks.append(
                PartGraphTemporalBlock(c_in, width, layout, stride=stride, **common)
            )
            previous = width
        self.out_channels = previous
        self.total_stride = 1
        for s in strides:
            self.total_stride *= s

    def reset_parameters(self) -> None:
        """Re-initialises every block."""
        reset_children(self)

    def forward(self, x: Tensor, actional: Tensor) -> Tensor:
        h = self.stem.forward_dense(x, actional)
        p = self.parts.joint_to_part(h)
        for i, (joint, part) in enumerate(zip(self.joint_blocks, self.part_blocks, strict=True)):
            h, p = joint.forward_dense(h, actional), part.forward_dense(p)
            if i in self.fusion:
                h, p = (
                    torch.cat([h, self.parts.part_to_joint(p)], dim=1),
                    torch.cat([p, self.parts.joint_to_part(h)], dim=1),
                )
        return h + self.parts.part_to_joint(p)


class MotionDecoder(nn.Module):
    r"""SymGNN's motion-prediction head (§5.3, eq. 10): a GRU rolled out frame by frame whose
    state is updated by a joint-scale graph convolution, predicting residual displacements.

    From the initial state :math:`\mathbf{H}^{(0)}` (per joint, from the backbone) and the last
    observed pose :math:`\mathbf{X}_0` with its velocity and acceleration, for
    :math:`n = 1 \dots N`:

    .. math::
        \tilde{\mathbf{H}}^{(n-1)} &= \mathrm{JGC}(\mathbf{H}^{(n-1)}), \\
        \mathbf{H}^{(n)} &= \mathrm{GRU}\big([\mathbf{X}_{n-1} \Vert \Delta \mathbf{X}_{n-1}
            \Vert \Delta^2 \mathbf{X}_{n-1} \Vert \hat{\mathbf{y}}], \tilde{\mathbf{H}}^{(n-1)}
            \big), \\
        \mathbf{X}_n &= \mathbf{X}_{n-1} + \mathrm{MLP}_{out}(\mathbf{H}^{(n)}),

    one GRU cell shared by every joint, :math:`\hat{\mathbf{y}}` the class probabilities (the
    same for every joint), the differences of the predicted frames taken from the predictions.

    Args:
        coord_channels (int): coordinates per joint :math:`C_x`.
        num_classes (int): classes :math:`K` (size of :math:`\hat{\mathbf{y}}`).
        hidden_channels (int): state size :math:`H` (and the output MLP's width).
        layout (Layout or str): the skeleton, for the JGC.
        order (int): structural polynomial order of the JGC. (default: :obj:`3`)
        link_types (int): actional graphs :math:`L_a`. (default: :obj:`1`)
        lambda_act (float): :math:`\lambda` of the JGC. (default: :obj:`0.5`)

    Shapes:
        - **input:** state :math:`(B, V, H)`, pose, velocity, acceleration :math:`(B, V, C_x)`,
          class probabilities :math:`(B, K)`, actional graphs :math:`(B, L_a, V, V)`
        - **output:** the next :math:`N` poses :math:`(B, N, V, C_x)`
    """

    def __init__(
        self,
        coord_channels: int,
        num_classes: int,
        hidden_channels: int,
        layout: Layout | str,
        *,
        order: int = 3,
        link_types: int = 1,
        lambda_act: float = 0.5,
    ) -> None:
        super().__init__()
        self.coord_channels = coord_channels
        self.graph = JointGraphConv(
            hidden_channels,
            hidden_channels,
            layout,
            order=order,
            link_types=link_types,
            lambda_act=lambda_act,
        )
        self.cell = nn.GRUCell(3 * coord_channels + num_classes, hidden_channels)
        self.out = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, coord_channels),
        )

    def reset_parameters(self) -> None:
        """Re-initialises every layer."""
        reset_children(self)

    def forward(
        self,
        state: Tensor,
        pose: Tensor,
        velocity: Tensor,
        acceleration: Tensor,
        label: Tensor,
        actional: Tensor,
        steps: int,
    ) -> Tensor:
        B, V, H = state.shape
        label = label.to(pose.dtype).unsqueeze(1).expand(B, V, -1)
        poses = []
        for _ in range(steps):
            dense = state.transpose(1, 2).unsqueeze(2)  # [B, H, 1, V]
            state = self.graph.forward_dense(dense, actional).squeeze(2).transpose(1, 2)
            inputs = torch.cat([pose, velocity, acceleration, label], dim=-1)
            state = self.cell(
                inputs.reshape(B * V, -1), state.reshape(B * V, H).to(inputs.dtype)
            ).view(B, V, H)
            following = pose + self.out(state)
            step = following - pose
            acceleration, velocity, pose = step - velocity, step, following
            poses.append(pose)
        return torch.stack(poses, dim=1)
