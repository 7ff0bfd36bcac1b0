r"""Input features of a skeleton computed inside a model: joints, bones, motion and the k-th mode.

Every feature is causal (frame :math:`t` uses frames :math:`\le t` only), so a model that computes
its features with :class:`InputFeatures` stays an online model. For joints
:math:`x_{t,v} \in \mathbb{R}^{C-1}` (coordinates; the confidence :math:`c_{t,v}` is the last
channel) and the *parent* :math:`p(v)` of a joint, the neighbour one hop closer to the body centre
(the centre joints' parent is the centre itself, the mean of ``layout.center``):

====================== ==========================================================================
name                   value
====================== ==========================================================================
``joint``              :math:`x_{t,v}`
``bone``               :math:`x_{t,v} - x_{t,p(v)}`
``relative2``          :math:`x_{t,v} - x_{t,p^k(v)}` for :math:`k = 2, 3, \dots` (InfoGCN's k-th
                       mode: the position relative to the :math:`k`-th ancestor; ``bone`` is
                       :math:`k = 1`)
``velocity``           :math:`x_{t,v} - x_{t-1,v}` (zero at the first frame)
``bone_velocity``      the velocity of the bone vector
``relative2_velocity`` the velocity of ``relative<k>`` (the motion of the k-th mode)
``centre``             :math:`x_{t,v} - \bar{x}_{t}`, relative to the frame's own centre
``distance``           :math:`(\lVert x_{t,v} - x_{t,u} \rVert)_{u \ne v}`, the distances to the
                       other :math:`V - 1` joints of the frame (DD-Net's joint collection
                       distances): unchanged when the body moves or turns, so it carries the
                       pose without the viewpoint
====================== ==========================================================================

The output stacks the chosen features and appends the confidence once: :math:`C - 1` channels
per coordinate feature and :math:`V - 1` for ``distance``, so
:math:`C_{out} = F (C - 1) + 1` without ``distance``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from skelgraph.layouts import Layout, get_layout
from skelgraph.layouts.graph import parents

__all__ = ["FEATURES", "InputFeatures", "check_features", "difference"]

#: Feature names accepted by :class:`InputFeatures` (``relative<k>`` for any k >= 2).
FEATURES = (
    "joint",
    "bone",
    "relative<k>",
    "velocity",
    "bone_velocity",
    "relative<k>_velocity",
    "centre",
    "distance",
)

_RELATIVE = re.compile(r"relative(\d+)(_velocity)?$")


class InputFeatures(nn.Module):
    r"""Causal input features of joints (see the module description).

    Args:
        layout (str or Layout): the joint layout.
        in_channels (int): :math:`C`, coordinates then the confidence.
        features (sequence of str): names from :data:`FEATURES`, in output order.
            (default: ``("joint",)``)

    Shapes:
        - **input:** :math:`(B, V, T, C)`
        - **output:** :math:`(B, V, T, C_{out})` (see the module description)
    """

    def __init__(
        self, layout: Layout | str, in_channels: int, features: Sequence[str] = ("joint",)
    ) -> None:
        super().__init__()
        layout = get_layout(layout)
        features = check_features(features)
        if in_channels < 2:
            raise ValueError(f"InputFeatures: in_channels: expected >= 2, got {in_channels}")
        self.features = features
        self.in_channels = in_channels
        parent = parents(layout)
        V = layout.num_joints
        widths = [V - 1 if name == "distance" else in_channels - 1 for name in features]
        self.out_channels = sum(widths) + 1
        if "distance" in features:
            # the other joints of every joint, row after row: [V (V - 1)]
            others = ~torch.eye(V, dtype=torch.bool)
            self.register_buffer("distance_index", others.nonzero()[:, 1], persistent=False)
        # Each ancestor map as a [V + 1, V] selection over the joints and their centre (row V).
        centre = torch.zeros(V)
        centre[list(layout.center)] = 1.0 / len(layout.center)
        self._ancestor: dict[int, Tensor] = {}
        for name in features:
            k = _order(name)
            if k is None:
                if name in ("bone", "bone_velocity"):
                    k = 1
                elif name != "centre":
                    continue
                else:
                    k = 0
            if k not in self._ancestor:
                self.register_buffer(f"relative_{k}", _relative_matrix(parent, centre, k))
                self._ancestor[k] = getattr(self, f"relative_{k}")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"InputFeatures: x: expected shape [B, V, T, {self.in_channels}], "
                f"got {list(x.shape)}"
            )
        coords, confidence = x[..., :-1], x[..., -1:]
        parts = []
        for name in self.features:
            if name == "joint":
                parts.append(coords)
            elif name == "velocity":
                parts.append(_velocity(coords))
            elif name == "bone_velocity":
                parts.append(_velocity(self._relative(coords, 1)))
            elif name == "centre":
                parts.append(self._relative(coords, 0))
            elif name == "distance":
                parts.append(self._distances(coords))
            elif name.endswith("_velocity"):
                parts.append(_velocity(self._relative(coords, _order(name) or 1)))
            else:
                parts.append(self._relative(coords, _order(name) or 1))
        return torch.cat([*parts, confidence], dim=-1)

    @property
    def history(self) -> int:
        """Earlier frames the features of a frame depend on: 1 with a velocity, else 0."""
        return int(any(name.endswith("velocity") for name in self.features))

    def step(self, x_t: Tensor, previous: Tensor | None = None) -> Tensor:
        r"""The features of one frame, equal to :meth:`forward`'s at that frame of the clip.

        Args:
            x_t (Tensor): the frame's joints :math:`(B, V, C)`.
            previous (Tensor, optional): the joints of the frame before, :math:`(B, V, C)`;
                :obj:`None` at the first frame of a clip (velocities are zero there).

        Returns:
            Tensor: :math:`(B, V, C_{out})`.
        """
        if x_t.dim() != 3 or x_t.size(-1) != self.in_channels:
            raise ValueError(
                f"InputFeatures.step: x_t: expected shape [B, V, {self.in_channels}], "
                f"got {list(x_t.shape)}"
            )
        if not self.history:
            return self.forward(x_t.unsqueeze(2)).squeeze(2)
        previous = x_t if previous is None else previous
        return self.forward(torch.stack([previous, x_t], dim=2))[:, :, -1]

    def _relative(self, coords: Tensor, k: int) -> Tensor:
        """:math:`x_v - x_{p^k(v)}` as one product with the ``[V, V]`` matrix ``I - P^k``."""
        return torch.einsum("uv,bvtc->butc", self._ancestor[k].to(coords.dtype), coords)

    def _distances(self, coords: Tensor) -> Tensor:
        r""":math:`\lVert x_v - x_u \rVert` for the :math:`V - 1` joints :math:`u \ne v`,
        :math:`(B, V, T, C') \to (B, V, T, V - 1)`."""
        B, V, T, _ = coords.shape
        others = coords.index_select(1, self.distance_index).view(B, V, V - 1, T, -1)
        squared = (coords.unsqueeze(2) - others).square().sum(dim=-1)  # [B, V, V - 1, T]
        # clamped: the gradient of the root is infinite where two joints coincide (explanations
        # differentiate the inputs)
        return squared.clamp_min(1e-12).sqrt().transpose(2, 3)

    def extra_repr(self) -> str:
        return f"features={list(self.features)}, in_channels={self.in_channels}"


def check_features(features: Sequence[str]) -> tuple[str, ...]:
    """``features`` as a tuple, after checking that it names at least one feature of
    :data:`FEATURES` (``relative<k>`` with :math:`k \\ge 2`), none twice.

    Raises:
        ValueError: naming the offending names and the valid ones.
    """
    features = tuple(features)
    if not features:
        raise ValueError("InputFeatures: features: expected at least one feature, got none")
    if len(set(features)) != len(features):
        raise ValueError(f"InputFeatures: features: repeated names in {list(features)}")
    for name in features:
        if _order(name) is None and (name not in FEATURES or "<k>" in name):
            raise ValueError(
                f"InputFeatures: features: expected names from {list(FEATURES)}, got {name!r}"
            )
    return features


def _order(name: str) -> int | None:
    match = _RELATIVE.match(name)
    if match is None:
        return None
    k = int(match.group(1))
    if k < 2:
        raise ValueError(f"InputFeatures: {name!r}: expected relative<k> with k >= 2")
    return k


def _relative_matrix(parent: list[int], centre: Tensor, k: int) -> Tensor:
    """``M [V, V]`` with ``(M x)_v = x_v - x_{p^k(v)}``; ``k = 0`` gives ``x_v - centre``."""
    V = len(parent)
    M = torch.eye(V)
    for v in range(V):
        if k == 0:
            M[v] -= centre
            continue
        u = v
        for _ in range(k):
            if u < 0:
                break
            u = parent[u]
        M[v] -= centre if u < 0 else torch.eye(V)[u]
    return M


def difference(coords: Tensor, order: int) -> Tensor:
    r"""The backward difference of order :math:`k` along time (dim 2):
    :math:`\Delta^0 x_t = x_t` and :math:`\Delta^k x_t = \Delta^{k-1} x_t - \Delta^{k-1} x_{t-1}`
    (positions, velocities, accelerations for :math:`k = 0, 1, 2`), zero at the first :math:`k`
    frames, where the clip holds no :math:`k`-th difference. Causal: frame :math:`t` uses frames
    :math:`t - k \dots t`. :math:`k = 1` is the ``velocity`` feature.

    Args:
        coords (Tensor): :math:`(B, V, T, C)`.
        order (int): :math:`k \ge 0`.

    Returns:
        Tensor: :math:`(B, V, T, C)`.
    """
    if order < 0:
        raise ValueError(f"difference: order: expected an integer >= 0, got {order}")
    out = coords
    for _ in range(order):
        out = _velocity(out)
    if order >= 2:  # _velocity zeroes the first frame only; the k-th difference needs k + 1
        frames = torch.arange(coords.size(2), device=coords.device)
        out = out * (frames >= order).to(out.dtype).view(1, 1, -1, 1)
    return out


def _velocity(coords: Tensor) -> Tensor:
    """:math:`x_t - x_{t-1}` along the time axis (dim 2), zero at the first frame."""
    # the frame before each (the first its own) gathered by index: no view of T - 1 frames,
    # whose layout would make torch.export assume T != 2
    before = (torch.arange(coords.size(2), device=coords.device) - 1).clamp_(min=0)
    return coords - coords.index_select(2, before)
