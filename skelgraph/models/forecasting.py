r"""Motion-forecasting baselines: rules that extrapolate the observed frames, with the
:class:`~skelgraph.models.base.Forecaster` interface of the trained models.

For observed joints :math:`X` (coordinates :math:`\mathbf{x}_{t,v}`, the last real frame of a
sample :math:`t_0`) and a horizon :math:`H`:

* :class:`ZeroVelocity` repeats the last observed pose,
  :math:`\hat{\mathbf{x}}_{t_0 + h, v} = \mathbf{x}_{t_0, v}`;
* :class:`ConstantVelocity` continues the last observed velocity,
  :math:`\hat{\mathbf{x}}_{t_0 + h, v} = \mathbf{x}_{t_0, v}
  + h \, (\mathbf{x}_{t_0, v} - \mathbf{x}_{t_0 - 1, v})`.

Both are exact on poses that hold still or move at a constant velocity, act on each joint alone
and commute with translating and scaling the coordinates, so they give the same error in torso
lengths however the clip was normalised. A joint the preprocessing filled in (an invalid joint
keeps its last valid position) has zero velocity until it is seen again. They have no weights and
no device: the result is on the device of the input.

::

    from skelgraph.models import ConstantVelocity

    future = ConstantVelocity().forecast_future(x, mask, horizon=10)  # [B, 10, V, C - 1]
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelgraph.models.base import check_horizon, last_real_step

__all__ = ["BASELINES", "ConstantVelocity", "ZeroVelocity", "last_frames"]


def last_frames(x: Tensor, mask: Tensor | None, count: int) -> Tensor:
    r"""The last ``count`` real frames of every sample of joints ``x`` :math:`(B, V, T, C)`,
    oldest first: :math:`(B, \mathrm{count}, V, C)`, entry ``[b, count - 1]`` the last real frame
    :math:`t_b` of ``mask`` :math:`(B, T)` (:func:`~skelgraph.models.base.last_real_step`; the
    last frame without a mask). Before a sample's first frame its first frame repeats.
    """
    if x.dim() != 4:
        raise ValueError(f"last_frames: x: expected shape [B, V, T, C], got {list(x.shape)}")
    B, _, T, _ = x.shape
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"last_frames: mask: expected shape [{B}, {T}], got {list(mask.shape)}")
    last = torch.full((B,), T - 1, device=x.device) if mask is None else last_real_step(mask)
    offsets = torch.arange(1 - count, 1, device=x.device)
    index = (last.unsqueeze(1) + offsets).clamp_min(0)  # [B, count]
    return x.transpose(1, 2)[torch.arange(B, device=x.device).unsqueeze(1), index]


class ZeroVelocity:
    r"""Repeats the last observed pose: :math:`\hat{\mathbf{x}}_{t_0 + h} = \mathbf{x}_{t_0}`
    for :math:`h = 1 \dots H` (see the module description).

    Shapes:
        - **input:** joints :math:`(B, V, T, C)`, confidence last, optional frame mask
          :math:`(B, T)`
        - **output:** :math:`(B, H, V, C - 1)`
    """

    name = "zero-velocity"

    def forecast_future(self, x: Tensor, mask: Tensor | None, horizon: int) -> Tensor:
        """The last real frame's coordinates, ``horizon`` times."""
        horizon = check_horizon("ZeroVelocity.forecast_future", horizon)
        pose = last_frames(x, mask, 1)[..., :-1]  # [B, 1, V, C - 1]
        return pose.expand(-1, horizon, -1, -1).clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConstantVelocity:
    r"""Continues the last observed velocity: :math:`\hat{\mathbf{x}}_{t_0 + h} =
    \mathbf{x}_{t_0} + h (\mathbf{x}_{t_0} - \mathbf{x}_{t_0 - 1})` for :math:`h = 1 \dots H`
    (see the module description); a sample with one real frame holds still.

    Shapes:
        - **input:** joints :math:`(B, V, T, C)`, confidence last, optional frame mask
          :math:`(B, T)`
        - **output:** :math:`(B, H, V, C - 1)`
    """

    name = "constant-velocity"

    def forecast_future(self, x: Tensor, mask: Tensor | None, horizon: int) -> Tensor:
        """The last real frame's coordinates plus ``h`` times its velocity."""
        horizon = check_horizon("ConstantVelocity.forecast_future", horizon)
        previous, last = last_frames(x, mask, 2)[..., :-1].unbind(1)  # [B, V, C - 1] each
        steps = torch.arange(1, horizon + 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return last.unsqueeze(1) + steps * (last - previous).unsqueeze(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The baselines by name.
BASELINES: dict[str, type[ZeroVelocity] | type[ConstantVelocity]] = {
    ZeroVelocity.name: ZeroVelocity,
    ConstantVelocity.name: ConstantVelocity,
}
