"""Skeleton-level augmentation as PyG transforms (the blog's §2.3 list).

Every transform acts on one sample ``data`` with

* ``data.x`` — ``[V, T, C]`` float, ``C = 3`` (x, y, confidence) or ``C = 4``
  (x, y, z, confidence); the last channel is the confidence, never changed by a geometric transform;
* ``data.frame_mask`` (optional) — ``[1, T]`` bool, ``True`` for real frames; padded frames stay
  zero.

Transforms never modify their input tensors in place (datasets hand out views of a shared cache),
work on all frames at once, compose with :class:`torch_geometric.transforms.Compose`, and draw their
random numbers from ``generator`` (or from a fresh generator seeded with ``seed``; the global torch
generator when both are ``None``, which is what ``DataLoader`` workers re-seed per worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform, Compose

from skelgraph.layouts import Layout, get_layout

__all__ = [
    "GaussianJitter",
    "RandomMirror",
    "RandomRotation",
    "RandomScale",
    "RandomShear",
    "RandomTemporalCrop",
    "RandomTranslation",
    "TemporalResample",
    "default_train_transform",
]


def _check_x(x: Tensor) -> None:
    if x.dim() != 3 or x.size(-1) not in (3, 4):
        raise ValueError(
            f"data.x: expected shape [V, T, C] with C = 3 (2D) or 4 (3D), got {tuple(x.shape)}"
        )


def _frame_mask(data: Data) -> Tensor:
    """``[T]`` bool mask of the real frames of ``data`` (all ``True`` without ``frame_mask``)."""
    num_frames = data.x.size(1)
    mask = getattr(data, "frame_mask", None)
    if mask is None:
        return torch.ones(num_frames, dtype=torch.bool, device=data.x.device)
    mask = mask.reshape(-1)
    if mask.numel() != num_frames:
        raise ValueError(
            f"data.frame_mask: expected {num_frames} entries to match data.x [V, T, C], "
            f"got shape {tuple(data.frame_mask.shape)}"
        )
    return mask.bool()


def _centroid(x: Tensor) -> Tensor:
    """Per-frame centroid ``[T, C-1]`` of the joints with confidence > 0 (all joints if none)."""
    coords = x[..., :-1]
    weight = (x[..., -1:] > 0).to(x.dtype)  # [V, T, 1]
    count = weight.sum(0)  # [T, 1]
    confident_mean = (coords * weight).sum(0) / count.clamp_min(1)
    return torch.where(count > 0, confident_mean, coords.mean(0))


def _with_coords(data: Data, coords: Tensor) -> Data:
    """Return ``data`` with new coordinates ``[V, T, C-1]``, the old confidence and zero padding."""
    mask = _frame_mask(data).view(1, -1, 1).to(coords.dtype)
    data.x = torch.cat([coords * mask, data.x[..., -1:]], dim=-1)
    return data


def _resample_time(x: Tensor, length: int) -> Tensor:
    """Linear resampling of ``x [V, T, C]`` to ``[V, length, C]`` (``align_corners=False``)."""
    if x.size(1) == length:
        return x.clone()
    out = F.interpolate(x.permute(0, 2, 1), size=length, mode="linear", align_corners=False)
    return out.permute(0, 2, 1).contiguous()


def _check_length(length: int) -> int:
    if int(length) < 1:
        raise ValueError(f"length: expected a positive number of frames, got {length}")
    return int(length)


class _RandomTransform(BaseTransform):
    """A transform with its own random source: ``generator`` or a new one seeded with ``seed``."""

    def __init__(self, generator: torch.Generator | None = None, seed: int | None = None) -> None:
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        self.generator = generator if seed is None else torch.Generator().manual_seed(seed)

    def _uniform(self, low: float, high: float, *size: int) -> Tensor:
        return torch.rand(size, generator=self.generator) * (high - low) + low


def _axis_rotation(axis: int, degrees: float) -> Tensor:
    """The ``3 × 3`` right-handed rotation by ``degrees`` about axis ``axis`` (0 = x, 1 = y,
    2 = z), float64."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    rotation = torch.eye(3, dtype=torch.float64)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = cos, -sin, sin, cos
    # right-handed: the positive sense about y turns z towards x, against the (x, z) index order
    return rotation if axis != 1 else rotation.T


def _linear_map(data: Data, matrix: Tensor) -> Data:
    """``data`` with every frame's coordinates mapped by ``matrix`` ``[D, D]`` about the frame's
    centroid of the confident joints."""
    x = data.x
    matrix = matrix.to(dtype=x.dtype, device=x.device)
    center = _centroid(x)
    return _with_coords(data, (x[..., :-1] - center) @ matrix.T + center)


def _spatial_dims(x: Tensor) -> int:
    """The number of coordinates per joint: 2 for ``C = 3``, 3 for ``C = 4``."""
    _check_x(x)
    return x.size(-1) - 1


class RandomRotation(_RandomTransform):
    r"""Rotates every frame of a sample by one random rotation about the per-frame centroid of the
    confident joints.

    ``max_degrees`` is either one angle :math:`a` — a rotation by :math:`U(-a, a)` about the
    default axis: in the image plane for 2D samples, about the vertical (y) axis for 3D samples —
    or three angles :math:`(a_x, a_y, a_z)`: independent angles :math:`U(-a_k, a_k)` about the x,
    y and z axes, composed as :math:`R = R_z R_y R_x`. A 2D sample rotates in the image plane,
    about z, only, so with three angles it needs :math:`a_x = a_y = 0`.

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        max_degrees: float | Sequence[float] = 15.0,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        per_axis = not isinstance(max_degrees, (int, float))
        angles = tuple(float(a) for a in max_degrees) if per_axis else (float(max_degrees),)
        if len(angles) not in (1, 3) or not all(0.0 <= a <= 180.0 for a in angles):
            raise ValueError(
                "max_degrees: expected one angle or three (x, y, z), each in [0, 180], got "
                f"{max_degrees}"
            )
        self.max_degrees: float | tuple[float, float, float] = angles if per_axis else angles[0]

    def check_dims(self, dims: int) -> None:
        """Raises a :class:`ValueError` when the angles need more than ``dims`` coordinates (x or
        y rotations of 2D samples)."""
        if dims == 2 and isinstance(self.max_degrees, tuple) and any(self.max_degrees[:2]):
            raise ValueError(
                f"max_degrees: 2D samples rotate about z only, expected (0, 0, a_z), got "
                f"{self.max_degrees}"
            )

    def forward(self, data: Data) -> Data:
        dims = _spatial_dims(data.x)
        self.check_dims(dims)
        if isinstance(self.max_degrees, tuple):
            angles = [float(self._uniform(-a, a)) for a in self.max_degrees]
            rotation = _axis_rotation(2, angles[2]) @ _axis_rotation(1, angles[1])
            rotation = rotation @ _axis_rotation(0, angles[0])
        else:
            angle = float(self._uniform(-self.max_degrees, self.max_degrees))
            rotation = _axis_rotation(2 if dims == 2 else 1, angle)
        return _linear_map(data, rotation[:dims, :dims])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(max_degrees={self.max_degrees})"


class RandomScale(_RandomTransform):
    r"""Scales every frame by a factor drawn from ``U(scales[0], scales[1])``, about the per-frame
    centroid of the confident joints: one factor for all axes (bone lengths are multiplied by it),
    or with ``per_axis`` one factor per coordinate axis (anisotropic: a body seen wider, taller or
    deeper).

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        scales: tuple[float, float] = (0.9, 1.1),
        per_axis: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        low, high = (float(s) for s in scales)
        if not 0 < low <= high:
            raise ValueError(f"scales: expected 0 < low <= high, got {tuple(scales)}")
        self.scales = (low, high)
        self.per_axis = bool(per_axis)

    def forward(self, data: Data) -> Data:
        dims = _spatial_dims(data.x)
        factors = self._uniform(*self.scales, dims if self.per_axis else 1).double()
        return _linear_map(data, torch.diag(factors.expand(dims)))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(scales={self.scales}, per_axis={self.per_axis})"


class RandomShear(_RandomTransform):
    r"""Shears every frame about the per-frame centroid of the confident joints: coordinates are
    multiplied by :math:`I + S`, whose off-diagonal entries are independent draws from
    :math:`U(-s, s)` with ``s = max_shear`` (2 of them for 2D samples, 6 for 3D).

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        max_shear: float = 0.2,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        if max_shear < 0:
            raise ValueError(f"max_shear: expected >= 0, got {max_shear}")
        self.max_shear = float(max_shear)

    def forward(self, data: Data) -> Data:
        dims = _spatial_dims(data.x)
        shear = self._uniform(-self.max_shear, self.max_shear, dims, dims).double()
        return _linear_map(data, torch.eye(dims, dtype=torch.float64) + shear.fill_diagonal_(0))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(max_shear={self.max_shear})"


class RandomTranslation(_RandomTransform):
    r"""Adds one random offset, uniform in ``[-max_offset, max_offset]`` per coordinate, to every
    joint of every real frame.

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        max_offset: float = 0.1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        if max_offset < 0:
            raise ValueError(f"max_offset: expected >= 0, got {max_offset}")
        self.max_offset = float(max_offset)

    def forward(self, data: Data) -> Data:
        _check_x(data.x)
        coords = data.x[..., :-1]
        offset = self._uniform(-self.max_offset, self.max_offset, coords.size(-1))
        return _with_coords(data, coords + offset.to(coords))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(max_offset={self.max_offset})"


class RandomMirror(_RandomTransform):
    r"""With probability ``p``, reflects x about the per-frame centroid of the confident joints and
    swaps left and right joints (``layout.flip_permutation()``), so that a mirrored left arm is
    again called a left arm. Applying it twice with ``p = 1`` gives the input back.

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        layout: Layout | str,
        p: float = 0.5,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        self.layout = get_layout(layout)
        self.p = float(p)
        self._permutation = torch.as_tensor(self.layout.flip_permutation(), dtype=torch.long)

    def forward(self, data: Data) -> Data:
        _check_x(data.x)
        x = data.x
        if x.size(0) != self.layout.num_joints:
            raise ValueError(
                f"data.x: expected {self.layout.num_joints} joints for layout "
                f"'{self.layout.name}', got {x.size(0)}"
            )
        if float(self._uniform(0.0, 1.0)) >= self.p:
            return data
        center_x = _centroid(x)[:, 0]  # [T]
        reflected = x.clone()
        reflected[..., 0] = 2 * center_x - x[..., 0]
        data.x = reflected[self._permutation.to(x.device)]
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(layout='{self.layout.name}', p={self.p})"


class GaussianJitter(_RandomTransform):
    r"""Adds independent Gaussian noise ``N(0, std²)`` to the coordinates of every joint with
    confidence > 0 in every real frame (missing joints and padding stay as they are).

    Shapes:
        ``data.x [V, T, C]`` → ``[V, T, C]``
    """

    def __init__(
        self,
        std: float = 0.01,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        if std < 0:
            raise ValueError(f"std: expected >= 0, got {std}")
        self.std = float(std)

    def forward(self, data: Data) -> Data:
        _check_x(data.x)
        coords = data.x[..., :-1]
        noise = torch.randn(coords.shape, generator=self.generator).to(coords) * self.std
        confident = (data.x[..., -1:] > 0).to(coords.dtype)
        return _with_coords(data, coords + noise * confident)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(std={self.std})"


class RandomTemporalCrop(_RandomTransform):
    r"""Crops a contiguous part of the real frames and resamples it linearly to ``length`` frames
    (InfoGCN's ``valid_crop_resize``).

    With ``p_interval = (low, high)`` the kept fraction ``p ~ U(low, high)`` of the ``T_valid`` real
    frames (``max(1, floor(p · T_valid))`` frames) starts at a uniformly random frame; with
    ``p_interval = (p,)`` the crop is deterministic and centred, dropping
    ``int((1 - p) · T_valid / 2)`` frames at each end (the evaluation convention, ``(0.95,)``).
    Unlike InfoGCN, the crop is not bounded below by the window length, so short clips are cropped
    as well.

    The output has only real frames: ``frame_mask`` becomes all ``True``.

    Shapes:
        ``data.x [V, T, C]``, ``data.frame_mask [1, T]`` → ``[V, length, C]``, ``[1, length]``
    """

    def __init__(
        self,
        p_interval: Sequence[float] = (0.5, 1.0),
        length: int = 64,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(generator, seed)
        p_interval = tuple(float(p) for p in p_interval)
        if len(p_interval) not in (1, 2) or not all(0 < p <= 1 for p in p_interval):
            raise ValueError(
                f"p_interval: expected (p,) or (low, high) with values in (0, 1], got {p_interval}"
            )
        if len(p_interval) == 2 and p_interval[0] > p_interval[1]:
            raise ValueError(f"p_interval: expected low <= high, got {p_interval}")
        self.p_interval = p_interval
        self.length = _check_length(length)

    def forward(self, data: Data) -> Data:
        _check_x(data.x)
        mask = _frame_mask(data)
        x = data.x if bool(mask.all()) else data.x[:, mask]
        valid = x.size(1)
        if valid == 0:
            raise ValueError("data.frame_mask: no real frame to crop")
        if len(self.p_interval) == 1:
            bias = int((1 - self.p_interval[0]) * valid / 2)
            start, size = bias, valid - 2 * bias
        else:
            p = float(self._uniform(*self.p_interval))
            size = max(1, math.floor(valid * p))
            start = int(torch.randint(valid - size + 1, (), generator=self.generator))
        data.x = _resample_time(x[:, start : start + size], self.length)
        data.frame_mask = torch.ones(1, self.length, dtype=torch.bool, device=x.device)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p_interval={self.p_interval}, length={self.length})"


class TemporalResample(BaseTransform):
    r"""Resamples the real frames linearly in time to ``length`` frames (deterministic).

    Shapes:
        ``data.x [V, T, C]``, ``data.frame_mask [1, T]`` → ``[V, length, C]``, ``[1, length]``
    """

    def __init__(self, length: int = 64) -> None:
        self.length = _check_length(length)

    def forward(self, data: Data) -> Data:
        _check_x(data.x)
        mask = _frame_mask(data)
        if not bool(mask.any()):
            raise ValueError("data.frame_mask: no real frame to resample")
        x = data.x if bool(mask.all()) else data.x[:, mask]
        data.x = _resample_time(x, self.length)
        data.frame_mask = torch.ones(1, self.length, dtype=torch.bool, device=x.device)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(length={self.length})"


def default_train_transform(
    layout: Layout | str,
    length: int | None = None,
    *,
    p_interval: Sequence[float] = (0.5, 1.0),
    max_degrees: float | Sequence[float] | None = 15.0,
    scales: tuple[float, float] | None = (0.9, 1.1),
    scale_per_axis: bool = False,
    max_shear: float | None = None,
    max_offset: float | None = 0.1,
    mirror_p: float | None = 0.5,
    jitter_std: float | None = 0.01,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Compose:
    """The training augmentation of the blog (§2.3; §4.2: ``p_interval_train = (0.5, 1.0)``, random
    rotation on): temporal crop, rotation, scale, shear, translation, mirror and jitter, in that
    order, sharing one random source.

    The temporal crop is included only when ``length`` is given (the datasets crop clips
    themselves); any other step is left out when its parameter is ``None`` (shear is off unless
    ``max_shear`` is given). Magnitudes are in the units of the preprocessed coordinates (torso
    lengths); ``max_degrees`` is one angle or three per axis (:class:`RandomRotation`).
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    steps: list[tuple[object, type[_RandomTransform], tuple]] = [
        (length, RandomTemporalCrop, (p_interval, length)),
        (max_degrees, RandomRotation, (max_degrees,)),
        (scales, RandomScale, (scales, scale_per_axis)),
        (max_shear, RandomShear, (max_shear,)),
        (max_offset, RandomTranslation, (max_offset,)),
        (mirror_p, RandomMirror, (layout, mirror_p)),
        (jitter_std, GaussianJitter, (jitter_std,)),
    ]
    return Compose([cls(*args, generator=generator) for on, cls, args in steps if on is not None])
