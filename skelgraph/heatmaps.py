r"""Pseudo-heatmap volumes of skeletons (PoseC3D, `Duan et al., 2022
<https://arxiv.org/abs/2104.13586>`_): every joint (or every bone) of every sampled frame drawn as
a Gaussian on a small image, stacked over time into a volume :math:`(K, F, H, W)` that a 3D CNN
reads like a video.

The steps of :class:`PoseHeatmaps`, for the keypoints of one clip of :math:`M` persons
:math:`(M, T, V, C)` (coordinates :math:`x, y` first, the confidence :math:`c` last):

1. **Validity.** A joint counts where its confidence is positive, its :math:`x, y` are finite and
   its frame is real (the frame mask); every other joint contributes nothing anywhere.
2. **Person-centred crop** (:func:`person_box`). The box around every valid joint of every person
   over all the real frames of the clip, grown by ``padding`` on each side and then along its
   shorter side to the output's aspect :math:`W / H`, so that the body keeps its proportions;
   in training an optional random crop of it (:func:`random_crop`, PoseC3D's
   ``RandomResizedCrop``). The box is mapped onto the :math:`H \times W` image: pixel
   :math:`(i, j)` is centred at :math:`(j + \tfrac12, i + \tfrac12)` in image units
   (:func:`to_pixels`). Translating or scaling the skeleton therefore changes nothing.
3. **Uniform sampling** of :math:`F` frames (:func:`uniform_sample`, PoseC3D's
   ``UniformSampleFrames``): the :math:`n` real frames are split into :math:`F` equal segments and
   one frame is taken from each, at a uniformly random place in training and at the middle in
   evaluation.
4. **Rendering** (:func:`keypoint_heatmaps`, :func:`limb_heatmaps`) with the Gaussian of width
   :math:`\sigma` (in output pixels), one channel per joint and/or one per bone of the layout:

   .. math::
       J_{v}(p) = c_{v} \exp\Big(-\frac{\lVert p - x_{v} \rVert^2}{2 \sigma^2}\Big), \qquad
       L_{(a, b)}(p) = \min(c_a, c_b)
       \exp\Big(-\frac{d(p, [x_a, x_b])^2}{2 \sigma^2}\Big)

   with :math:`d(p, [x_a, x_b])` the distance from pixel centre :math:`p` to the segment between
   the two joints (to :math:`x_a` when they coincide). The persons of a clip are combined per
   channel by their maximum (PoseC3D's choice) or their sum. Unlike PoseC3D's reference code, the
   Gaussians are not truncated at :math:`3 \sigma` (the values there are below :math:`0.012\,c`).

A horizontal flip of a volume (:func:`flip_heatmaps`) reverses the image columns and swaps the
left/right channels (joints by :meth:`Layout.flip_permutation
<skelgraph.layouts.Layout.flip_permutation>`, bones by :meth:`Layout.bone_flip_permutation
<skelgraph.layouts.Layout.bone_flip_permutation>`), so that the flipped volume of a clip is the
volume of its mirror image (:math:`x \mapsto a - x` for any :math:`a`, the joints relabelled) in
evaluation.

Everything is vectorised torch over the batch, persons, frames, channels and pixels (no Python
loop), runs on the device of its input and is differentiable with respect to the coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, get_layout

__all__ = [
    "CROP_RATIOS",
    "HEATMAP_INPUTS",
    "PERSON_REDUCTIONS",
    "PoseHeatmaps",
    "flip_heatmaps",
    "heatmap_channels",
    "keypoint_heatmaps",
    "limb_heatmaps",
    "person_box",
    "random_crop",
    "to_pixels",
    "uniform_sample",
]

#: What a volume holds: one channel per joint, per bone, or both (joints first).
HEATMAP_INPUTS = ("keypoint", "limb", "both")
#: How the persons of a clip are combined in a channel.
PERSON_REDUCTIONS = ("max", "sum")
#: PoseC3D's aspect-ratio range of the random crop, :math:`w / h` relative to the box.
CROP_RATIOS = (3.0 / 4.0, 4.0 / 3.0)
#: The smallest exponent of a limb Gaussian: values below :math:`e^{-50}` of the peak are raised
#: to it (far into its underflow, ``exp`` is several times slower).
_EXPONENT_FLOOR = -50.0


def heatmap_channels(layout: Layout | str, input: str) -> int:
    """The number of channels :math:`K` of a volume: the joints, the bones or both."""
    layout = get_layout(layout)
    _check_input_mode(input)
    return {
        "keypoint": layout.num_joints,
        "limb": layout.num_bones,
        "both": layout.num_joints + layout.num_bones,
    }[input]


def uniform_sample(
    mask: Tensor,
    frames: int,
    *,
    random: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Indices of :math:`F` frames spread uniformly over the real frames of every sample.

    The :math:`n` real frames (in order) are split into :math:`F` segments
    :math:`[i n / F, (i + 1) n / F)`; segment :math:`i` gives real frame
    :math:`\lfloor (i + u_i)\, n / F \rfloor` with :math:`u_i \sim U[0, 1)` drawn independently per
    sample and segment when ``random``, else :math:`u_i = \tfrac12` (the middle). With
    :math:`n < F` every real frame is repeated in order (about :math:`F / n` times each). A sample
    without a real frame uses all its frames.

    Args:
        mask (Tensor): real frames :math:`(B, T)`, bool.
        frames (int): :math:`F`.
        random (bool): random places in the segments (training). (default: :obj:`False`)
        generator (torch.Generator, optional): source of the random places.

    Returns:
        Tensor: frame indices :math:`(B, F)`, int64, increasing along each row.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(
            f"uniform_sample: mask: expected a bool tensor of shape [B, T], got {mask.dtype} "
            f"{list(mask.shape)}"
        )
    frames = _positive_int("uniform_sample: frames", frames)
    real = mask | ~mask.any(dim=1, keepdim=True)
    count = real.sum(dim=1, keepdim=True)  # [B, 1]
    # the indices of the real frames first, each row in frame order
    order = torch.argsort((~real).to(torch.uint8), dim=1, stable=True)
    if random:
        device = generator.device if generator is not None else mask.device
        offset = torch.rand(mask.size(0), frames, generator=generator, device=device)
        offset = offset.to(mask.device, torch.float64)
    else:
        offset = torch.full((mask.size(0), frames), 0.5, dtype=torch.float64, device=mask.device)
    segment = torch.arange(frames, device=mask.device, dtype=torch.float64)
    position = ((segment + offset) * count / frames).floor().long()
    position = torch.minimum(position, count - 1)
    return order.gather(1, position)


def person_box(
    points: Tensor, valid: Tensor, *, padding: float = 0.25, aspect: float = 1.0
) -> Tensor:
    r"""The box around the valid points of every sample, grown by ``padding`` and to an aspect.

    With the extent :math:`[x_0, x_1] \times [y_0, y_1]` of the valid points, the box is centred at
    their middle with half-sizes :math:`h_x = (1 + \text{padding})(x_1 - x_0) / 2` and :math:`h_y`
    alike, then the shorter one grown to :math:`h_x / h_y = \text{aspect}`. A sample whose valid
    points all coincide gets :math:`h_y = 1`, :math:`h_x = \text{aspect}` (input units) around them;
    one without a valid point the same box around the origin.

    Args:
        points (Tensor): :math:`(B, N, 2)` coordinates :math:`x, y`.
        valid (Tensor): :math:`(B, N)` bool, the points to enclose.
        padding (float): relative growth of each half-size, :math:`\geq 0`. (default: :obj:`0.25`)
        aspect (float): width over height of the box, :math:`W / H` of the image.
            (default: :obj:`1.0`)

    Returns:
        Tensor: :math:`(B, 4)` boxes :math:`(c_x, c_y, h_x, h_y)` (centre and half-sizes).
    """
    if points.dim() != 3 or points.size(-1) != 2 or valid.shape != points.shape[:2]:
        raise ValueError(
            f"person_box: expected points [B, N, 2] and valid [B, N], got {list(points.shape)} "
            f"and {list(valid.shape)}"
        )
    inf = torch.tensor(math.inf, dtype=points.dtype, device=points.device)
    inside = valid.unsqueeze(-1)
    low = torch.where(inside, points, inf).amin(dim=1)  # [B, 2]
    high = torch.where(inside, points, -inf).amax(dim=1)
    found = valid.any(dim=1, keepdim=True)
    centre = torch.where(found, (low + high) / 2, torch.zeros_like(low))
    half = torch.where(found, (high - low) / 2, torch.zeros_like(low)) * (1.0 + padding)
    half_x = torch.maximum(half[:, 0], aspect * half[:, 1])
    half_y = torch.maximum(half[:, 1], half_x / aspect)
    empty = half_y <= 0
    half_x = torch.where(empty, torch.full_like(half_x, aspect), half_x)
    half_y = torch.where(empty, torch.ones_like(half_y), half_y)
    return torch.stack([centre[:, 0], centre[:, 1], half_x, half_y], dim=1)


def random_crop(
    boxes: Tensor,
    area: Sequence[float] = (0.56, 1.0),
    *,
    ratio: Sequence[float] = CROP_RATIOS,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""A random part of every box (PoseC3D's ``RandomResizedCrop``, applied to the box).

    Per box, an area fraction :math:`a \sim U(\text{area})` and an aspect change :math:`r` with
    :math:`\log r \sim U(\log \text{ratio})` give the half-sizes :math:`h_x \sqrt{a r}` and
    :math:`h_y \sqrt{a / r}`, each at most the box's own; the part lies uniformly inside the box.
    Resizing the part to the image stretches it by up to :math:`\sqrt{4/3}` along one axis.

    Args:
        boxes (Tensor): :math:`(B, 4)` boxes :math:`(c_x, c_y, h_x, h_y)` (:func:`person_box`).
        area (sequence of float): the range of the kept area fraction, within :math:`(0, 1]`.
            (default: :obj:`(0.56, 1.0)`)
        ratio (sequence of float): the range of :math:`r`. (default: :obj:`(3/4, 4/3)`)
        generator (torch.Generator, optional): source of the random numbers.

    Returns:
        Tensor: :math:`(B, 4)` boxes.
    """
    low, high = _check_area("random_crop: area", area)
    device = generator.device if generator is not None else boxes.device
    draws = torch.rand(boxes.size(0), 4, generator=generator, device=device).to(boxes)
    fraction = low + (high - low) * draws[:, 0]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    stretch = torch.exp(log_low + (log_high - log_low) * draws[:, 1])
    half = boxes[:, 2:] * torch.stack(
        [torch.sqrt(fraction * stretch), torch.sqrt(fraction / stretch)], dim=1
    ).clamp(max=1.0)
    centre = boxes[:, :2] + (2 * draws[:, 2:] - 1) * (boxes[:, 2:] - half)
    return torch.cat([centre, half], dim=1)


def to_pixels(points: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    r"""Coordinates in image units: the box :math:`(c_x, c_y, h_x, h_y)` of each sample becomes
    :math:`[0, W] \times [0, H]`, :math:`u = (x - c_x + h_x)\, W / (2 h_x)` and :math:`v` alike.

    Args:
        points (Tensor): :math:`(B, *, 2)` coordinates.
        boxes (Tensor): :math:`(B, 4)` boxes.
        size (tuple of int): :math:`(H, W)`.

    Returns:
        Tensor: :math:`(B, *, 2)`; pixel :math:`(i, j)` is centred at :math:`(j + 1/2, i + 1/2)`.
    """
    shape = (boxes.size(0),) + (1,) * (points.dim() - 2) + (2,)
    centre, half = boxes[:, :2].reshape(shape), boxes[:, 2:].reshape(shape)
    scale = torch.tensor([size[1], size[0]], dtype=points.dtype, device=points.device)
    return (points - centre + half) / (2 * half) * scale


def keypoint_heatmaps(
    points: Tensor,
    confidence: Tensor,
    size: tuple[int, int],
    sigma: float = 0.6,
    *,
    persons: str = "max",
) -> Tensor:
    r"""One Gaussian per joint: :math:`J_{v}(p) = c_{v} \exp(-\lVert p - x_{v} \rVert^2 /
    2 \sigma^2)`, the persons combined by ``persons``.

    The Gaussian is separable, so every channel is an outer product of a row and a column
    profile: the sum over persons is one batched matrix product.

    Args:
        points (Tensor): :math:`(B, M, F, V, 2)` joints in image units (:func:`to_pixels`).
        confidence (Tensor): :math:`(B, M, F, V)`; joints with confidence :math:`\le 0` or
            non-finite coordinates contribute nothing.
        size (tuple of int): :math:`(H, W)`.
        sigma (float): :math:`\sigma` in pixels. (default: :obj:`0.6`)
        persons (str): ``"max"`` or ``"sum"`` over the :math:`M` persons. (default: ``"max"``)

    Returns:
        Tensor: :math:`(B, V, F, H, W)`.
    """
    points, confidence = _clean("keypoint_heatmaps", points, confidence, sigma, persons)
    # [B, M, V, F, *] profiles of the rows and the columns
    rows = _profile(points[..., 1], size[0], sigma) * confidence.unsqueeze(-1)
    columns = _profile(points[..., 0], size[1], sigma)
    rows, columns = rows.transpose(2, 3).contiguous(), columns.transpose(2, 3).contiguous()
    if persons == "sum" or points.size(1) == 1:
        return torch.einsum("bmvfh,bmvfw->bvfhw", rows, columns)
    return _combine_persons(rows.unsqueeze(-1) * columns.unsqueeze(-2), persons)


def limb_heatmaps(
    points: Tensor,
    confidence: Tensor,
    bones: Tensor | Sequence[Sequence[int]],
    size: tuple[int, int],
    sigma: float = 0.6,
    *,
    persons: str = "max",
) -> Tensor:
    r"""One Gaussian ridge per bone :math:`(a, b)`: :math:`L(p) = \min(c_a, c_b)
    \exp(-d(p, [x_a, x_b])^2 / 2 \sigma^2)`, the persons combined by ``persons``.

    With :math:`\delta = x_b - x_a`, the nearest point of the segment to :math:`p` is
    :math:`x_a + t \delta` with :math:`t = \mathrm{clip}((p - x_a) \cdot \delta /
    \lVert \delta \rVert^2, 0, 1)` (:math:`t = 0` when the joints coincide).

    Args:
        points (Tensor): :math:`(B, M, F, V, 2)` joints in image units (:func:`to_pixels`).
        confidence (Tensor): :math:`(B, M, F, V)`; a bone with a joint of confidence
            :math:`\le 0` or non-finite coordinates contributes nothing.
        bones (Tensor or sequence): :math:`(L, 2)` joint index pairs.
        size (tuple of int): :math:`(H, W)`.
        sigma (float): :math:`\sigma` in pixels. (default: :obj:`0.6`)
        persons (str): ``"max"`` or ``"sum"`` over the :math:`M` persons. (default: ``"max"``)

    Returns:
        Tensor: :math:`(B, L, F, H, W)`.
    """
    points, confidence = _clean("limb_heatmaps", points, confidence, sigma, persons)
    bones = torch.as_tensor(bones, dtype=torch.long, device=points.device).reshape(-1, 2)
    if bones.numel() and not 0 <= int(bones.min()) <= int(bones.max()) < points.size(-2):
        raise ValueError(
            f"limb_heatmaps: bones: expected joint indices in [0, {points.size(-2)}), got "
            f"{bones.tolist()}"
        )
    # every [B, M, F, L] quantity as [B, M, L, F], so that the maps come out channel first
    start = points[..., bones[:, 0], :].transpose(2, 3).contiguous()  # [B, M, L, F, 2]
    end = points[..., bones[:, 1], :].transpose(2, 3).contiguous()
    weight = torch.minimum(confidence[..., bones[:, 0]], confidence[..., bones[:, 1]])
    weight = weight.transpose(2, 3).contiguous()[..., None, None]  # [B, M, L, F, 1, 1]
    # in units of sigma * sqrt(2), so that the value is exp(-squared distance)
    unit = 1.0 / (sigma * math.sqrt(2.0))
    delta = (end - start) * unit
    dx, dy = delta[..., 0, None, None], delta[..., 1, None, None]  # [B, M, L, F, 1, 1]
    inverse = 1.0 / delta.square().sum(dim=-1).clamp_min(torch.finfo(delta.dtype).tiny)
    px = ((_centres(size[1], points) - start[..., 0, None]) * unit).unsqueeze(-2)  # [..., 1, W]
    py = ((_centres(size[0], points) - start[..., 1, None]) * unit).unsqueeze(-1)  # [..., H, 1]
    # at most three full-size [B, M, L, F, H, W] tensors live at once
    t = (px * (dx * inverse[..., None, None]) + py * (dy * inverse[..., None, None])).clamp_(0, 1)
    off_x = torch.addcmul(px, t, dx, value=-1.0)
    off_y = torch.addcmul(py, t, dy, value=-1.0)
    del t
    exponent = off_x.square_().addcmul_(off_y, off_y).neg_().clamp_(min=_EXPONENT_FLOOR)
    del off_y
    return _combine_persons(exponent.exp() * weight, persons)


def flip_heatmaps(volume: Tensor, layout: Layout | str, input: str = "keypoint") -> Tensor:
    r"""The horizontal flip of volumes: the image columns reversed and the left/right channels
    swapped (joints by :meth:`~skelgraph.layouts.Layout.flip_permutation`, bones by
    :meth:`~skelgraph.layouts.Layout.bone_flip_permutation`), so that it equals the volume of the
    mirrored skeleton.

    Args:
        volume (Tensor): :math:`(*, K, F, H, W)` with :math:`K` = :func:`heatmap_channels`.
        layout (Layout or str): the layout the volume was drawn with.
        input (str): one of :data:`HEATMAP_INPUTS`. (default: ``"keypoint"``)

    Returns:
        Tensor: :math:`(*, K, F, H, W)`.
    """
    layout = get_layout(layout)
    channels = heatmap_channels(layout, input)
    if volume.dim() < 4 or volume.size(-4) != channels:
        raise ValueError(
            f"flip_heatmaps: volume: expected shape [*, {channels}, F, H, W] ({input} channels "
            f"of layout {layout.name!r}), got {list(volume.shape)}"
        )
    index = torch.as_tensor(_channel_flip(layout, input), device=volume.device)
    return volume.index_select(volume.dim() - 4, index).flip(-1)


class PoseHeatmaps(nn.Module):
    r"""Keypoints to pseudo-heatmap volumes (see the module description): validity, the
    person-centred crop, uniform frame sampling and the Gaussians, for one clip or a batch.

    The module has no parameters; it moves with ``.to(device)`` and renders on the device of its
    input. Randomness (frame places, the random crop) only happens with ``train=True``.

    Args:
        layout (Layout or str): the joint layout (bones and mirror pairs).
        input (str): ``"keypoint"`` (a channel per joint), ``"limb"`` (per bone) or ``"both"``
            (joints, then bones). (default: ``"keypoint"``)
        sigma (float): the Gaussian's :math:`\sigma` in output pixels. (default: :obj:`0.6`)
        resolution (int or sequence of int): :math:`H = W`, or :math:`(H, W)`.
            (default: :obj:`56`)
        frames (int, optional): :math:`F` frames sampled uniformly; :obj:`None` draws every input
            frame. (default: :obj:`48`)
        padding (float): relative margin of the person box. (default: :obj:`0.25`)
        crop_area (sequence of float, optional): the area range of the random crop in training;
            :obj:`None`: no crop. (default: :obj:`None`)
        persons (str): ``"max"`` or ``"sum"`` over the persons of a clip. (default: ``"max"``)

    Shapes:
        - **input:** keypoints :math:`(T, V, C)` (one person), :math:`(M, T, V, C)` (one clip of
          :math:`M` persons) or :math:`(B, M, T, V, C)` (a batch), as a tensor, an array or a
          :class:`~skelgraph.clip.SkeletonClip`; :math:`C \ge 3` (:math:`x, y`, any further
          coordinate, the confidence last); optional real-frame mask :math:`(T,)` or
          :math:`(B, T)`
        - **output:** :math:`(K, F, H, W)` for one clip, :math:`(B, K, F, H, W)` for a batch
    """

    def __init__(
        self,
        layout: Layout | str,
        input: str = "keypoint",
        *,
        sigma: float = 0.6,
        resolution: int | Sequence[int] = 56,
        frames: int | None = 48,
        padding: float = 0.25,
        crop_area: Sequence[float] | None = None,
        persons: str = "max",
    ) -> None:
        super().__init__()
        self.layout = get_layout(layout)
        _check_input_mode(input)
        self.input = input
        self.out_channels = heatmap_channels(self.layout, input)
        if input != "keypoint" and not self.layout.bones:
            raise ValueError(
                f"PoseHeatmaps: input: {input!r} needs bones, layout {self.layout.name!r} has none"
            )
        self.sigma = _check_sigma("PoseHeatmaps: sigma", sigma)
        self.size = _resolution(resolution)
        self.frames = None if frames is None else _positive_int("PoseHeatmaps: frames", frames)
        if not padding >= 0:
            raise ValueError(f"PoseHeatmaps: padding: expected a value >= 0, got {padding}")
        self.padding = float(padding)
        self.crop_area = (
            None if crop_area is None else _check_area("PoseHeatmaps: crop_area", crop_area)
        )
        _check_persons("PoseHeatmaps", persons)
        self.persons = persons
        self.register_buffer(
            "bones",
            torch.tensor(self.layout.bones, dtype=torch.long).reshape(-1, 2),
            persistent=False,
        )

    def forward(
        self,
        keypoints: Tensor | np.ndarray | SkeletonClip,
        mask: Tensor | np.ndarray | None = None,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The volumes of ``keypoints`` (shapes in the class description); ``train`` draws random
        frame places and the random crop from ``generator`` (default: torch's global one)."""
        kp, mask, batched = self._batch(keypoints, mask)
        B, M, _, V, _ = kp.shape
        xy = kp[..., :2]
        confidence = kp[..., -1]
        valid = (confidence > 0) & torch.isfinite(xy).all(dim=-1) & mask[:, None, :, None]
        confidence = torch.where(valid, confidence, torch.zeros_like(confidence))
        xy = torch.where(valid.unsqueeze(-1), xy, torch.zeros_like(xy))
        H, W = self.size
        boxes = person_box(
            xy.reshape(B, -1, 2), valid.reshape(B, -1), padding=self.padding, aspect=W / H
        )
        if train and self.crop_area is not None:
            boxes = random_crop(boxes, self.crop_area, generator=generator)
        if self.frames is not None:
            index = uniform_sample(mask, self.frames, random=train, generator=generator)
            index = index[:, None, :, None]
            xy = xy.gather(2, index.unsqueeze(-1).expand(B, M, self.frames, V, 2))
            confidence = confidence.gather(2, index.expand(B, M, self.frames, V))
        points = to_pixels(xy, boxes, self.size)
        parts = []
        if self.input in ("keypoint", "both"):
            parts.append(
                keypoint_heatmaps(points, confidence, self.size, self.sigma, persons=self.persons)
            )
        if self.input in ("limb", "both"):
            parts.append(
                limb_heatmaps(
                    points, confidence, self.bones, self.size, self.sigma, persons=self.persons
                )
            )
        volume = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return volume if batched else volume[0]

    def flip(self, volume: Tensor) -> Tensor:
        """:func:`flip_heatmaps` of this module's volumes."""
        return flip_heatmaps(volume, self.layout, self.input)

    def _batch(
        self, keypoints: Tensor | np.ndarray | SkeletonClip, mask: Tensor | np.ndarray | None
    ) -> tuple[Tensor, Tensor, bool]:
        """Keypoints as a float tensor :math:`(B, M, T, V, C)`, the mask :math:`(B, T)` and
        whether the input was a batch."""
        if isinstance(keypoints, SkeletonClip):
            if keypoints.layout.joints != self.layout.joints:
                raise ValueError(
                    f"PoseHeatmaps: keypoints: expected a clip of layout {self.layout.name!r}, "
                    f"got layout {keypoints.layout.name!r}"
                )
            keypoints = keypoints.keypoints
        kp = torch.as_tensor(keypoints, device=self.bones.device)
        if not kp.is_floating_point():
            kp = kp.float()
        V = self.layout.num_joints
        if not 3 <= kp.dim() <= 5 or kp.size(-2) != V or kp.size(-1) < 3:
            raise ValueError(
                f"PoseHeatmaps: keypoints: expected shape [T, {V}, C], [M, T, {V}, C] or "
                f"[B, M, T, {V}, C] (layout {self.layout.name!r}, C >= 3 with the confidence "
                f"last), got {list(kp.shape)}"
            )
        batched = kp.dim() == 5
        kp = kp.reshape((1,) * (5 - kp.dim()) + tuple(kp.shape))
        B, _, T = kp.shape[:3]
        if mask is None:
            return kp, torch.ones(B, T, dtype=torch.bool, device=kp.device), batched
        mask = torch.as_tensor(mask, device=kp.device)
        expected = (B, T) if batched else (T,)
        if mask.dtype != torch.bool or tuple(mask.shape) != expected:
            raise ValueError(
                f"PoseHeatmaps: mask: expected a bool tensor of shape {list(expected)}, "
                f"got {mask.dtype} {list(mask.shape)}"
            )
        return kp, mask.reshape(B, T), batched

    def extra_repr(self) -> str:
        return (
            f"layout={self.layout.name}, input={self.input}, sigma={self.sigma}, "
            f"resolution={list(self.size)}, frames={self.frames}, padding={self.padding}, "
            f"crop_area={self.crop_area}, persons={self.persons}"
        )


def _combine_persons(maps: Tensor, persons: str) -> Tensor:
    """:math:`(B, M, K, F, H, W)` maps to :math:`(B, K, F, H, W)`: their maximum or sum over the
    persons."""
    if maps.size(1) == 1:
        return maps[:, 0]
    return maps.sum(dim=1) if persons == "sum" else maps.amax(dim=1)


def _profile(coordinate: Tensor, length: int, sigma: float) -> Tensor:
    r""":math:`\exp(-(k + \tfrac12 - u)^2 / 2 \sigma^2)` for every pixel :math:`k` of a row or
    column: :math:`(*,)` coordinates to :math:`(*, \text{length})`."""
    distance = _centres(length, coordinate) - coordinate.unsqueeze(-1)
    return torch.exp(-distance.square() / (2 * sigma**2))


def _centres(length: int, like: Tensor) -> Tensor:
    r"""The pixel centres :math:`k + 1/2`, :math:`(\text{length},)`, in ``like``'s dtype."""
    return torch.arange(length, dtype=like.dtype, device=like.device) + 0.5


def _clean(
    name: str, points: Tensor, confidence: Tensor, sigma: float, persons: str
) -> tuple[Tensor, Tensor]:
    """Checks the shapes and options; zeroes the confidence of missing joints and their
    coordinates (so that a missing joint never gives NaN)."""
    if points.dim() != 5 or points.size(-1) != 2 or confidence.shape != points.shape[:-1]:
        raise ValueError(
            f"{name}: expected points [B, M, F, V, 2] and confidence [B, M, F, V], got "
            f"{list(points.shape)} and {list(confidence.shape)}"
        )
    _check_sigma(f"{name}: sigma", sigma)
    _check_persons(name, persons)
    valid = (confidence > 0) & torch.isfinite(points).all(dim=-1)
    confidence = torch.where(valid, confidence, torch.zeros_like(confidence))
    points = torch.where(valid.unsqueeze(-1), points, torch.zeros_like(points))
    return points, confidence


def _channel_flip(layout: Layout, input: str) -> np.ndarray:
    """The channel order of a flipped volume."""
    if input == "keypoint":
        return layout.flip_permutation()
    if input == "limb":
        return layout.bone_flip_permutation()
    return np.concatenate(
        [layout.flip_permutation(), layout.num_joints + layout.bone_flip_permutation()]
    )


def _check_input_mode(input: str) -> None:
    if input not in HEATMAP_INPUTS:
        raise ValueError(f"input: expected one of {list(HEATMAP_INPUTS)}, got {input!r}")


def _check_persons(name: str, persons: str) -> None:
    if persons not in PERSON_REDUCTIONS:
        raise ValueError(
            f"{name}: persons: expected one of {list(PERSON_REDUCTIONS)}, got {persons!r}"
        )


def _check_sigma(name: str, sigma: float) -> float:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name}: expected a positive number of pixels, got {sigma!r}")
    return float(sigma)


def _check_area(name: str, area: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(a) for a in area)
    if len(values) != 2 or not 0.0 < values[0] <= values[1] <= 1.0:
        raise ValueError(
            f"{name}: expected [low, high] with 0 < low <= high <= 1, got {list(area)}"
        )
    return values


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from one side or two."""
    sides = [resolution] if isinstance(resolution, (int, np.integer)) else list(resolution)
    if len(sides) not in (1, 2):
        raise ValueError(f"resolution: expected H or [H, W], got {resolution!r}")
    checked = [_positive_int("resolution", side) for side in sides]
    return (checked[0], checked[-1])
