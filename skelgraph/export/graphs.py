r"""The two graphs a trained model is exported as: its clip scores, and its one-frame step as a
pure function of tensors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.models.base import SkeletonModel, StreamingModel
from skelgraph.streaming import build_plan

__all__ = ["ClipGraph", "FrameStepGraph", "export_graph"]


class ClipGraph(nn.Module):
    r"""A model's clip-level scores as a module of one tensor, for export:
    :meth:`~skelgraph.models.base.SkeletonModel.clip_logits` with ``reduce`` (every frame
    real, no mask). Per-step models compute the rollout and the head at the steps the reduction
    reads only (the last step for ``"last"``); their per-step logits and forecasts come from
    :class:`FrameStepGraph`, which gives them frame by frame at a fraction of the cost.

    Batch and time are dynamic. The ONNX graph takes any length; a :mod:`torch.export` program
    keeps the guards torch adds where a layer treats one frame apart (ST-GCN's strided
    convolutions and batch norm need 3 frames or more).

    Args:
        model (SkeletonModel): the model, in evaluation mode.
        reduce (str, optional): ``"last"`` or ``"mean"`` (default: the model's).

    Shapes:
        - **input:** ``joints`` :math:`(B, V, T, C)`, confidence last
        - **output:** ``logits`` :math:`(B, K)`
    """

    input_names = ("joints",)
    output_names = ("logits",)
    kind = "clip"

    def __init__(self, model: SkeletonModel, reduce: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.reduce = reduce

    def forward(self, joints: Tensor) -> Tensor:
        return self.model.clip_logits(joints, None, self.reduce)

    def example_inputs(self) -> tuple[Tensor, ...]:
        """Joints of 2 clips of 8 frames (random: the graph does not depend on the values)."""
        V, C = self.model.layout.num_joints, int(self.model.in_channels)
        return (torch.randn(2, V, 8, C, device=_device(self.model)),)

    def dynamic_shapes(self) -> tuple[dict[int, str], ...]:
        """The dynamic axes by name: batch and time."""
        return ({0: "batch", 2: "time"},)

    def signature(self) -> dict[str, dict[str, list[int | str]]]:
        """Every input's and output's shape, ``"batch"`` and ``"time"`` for the dynamic axes."""
        V, C = self.model.layout.num_joints, int(self.model.in_channels)
        with torch.no_grad():
            K = self(*self.example_inputs()).size(1)
        return {
            "inputs": {"joints": ["batch", V, "time", C]},
            "outputs": {"logits": ["batch", K]},
        }


class FrameStepGraph(nn.Module):
    r"""A streaming model's one-frame step as a pure function of tensors, for export: the
    ``functional_step`` of its frame plan (:func:`~skelgraph.streaming.build_plan`, see
    :meth:`FramePlan.functional_step <skelgraph.streaming.FramePlan.functional_step>`): the
    key/value rings of every temporal layer go in and come out, so a runtime steps a stream by
    feeding the outputs back. InfoGCN++ with an rk4 solver and an attention window, and
    ensembles of such models (every member's rings, once per view, in member order).

    Args:
        model (StreamingModel): the model, in evaluation mode.

    Shapes:
        - **input:** ``frame`` :math:`(B, V, C)`; ``previous`` :math:`(B, V, C)`, the frame
          before (at a stream's first frame the frame itself); ``position`` :math:`(B,)` (int64),
          the frames each stream had before; ``key_<i>``, ``value_<i>`` :math:`(B, V, H, W, D)`
          for every ring :math:`i` (zeros at the start)
        - **output:** ``logits`` :math:`(B, K)`, ``forecast`` :math:`(B, N, V, C - 1)` and the
          rings with the new frame, ``next_key_<i>``, ``next_value_<i>``

    Raises:
        ValueError: when the model does not stream through a frame plan with fixed-size rings.
    """

    kind = "frame_step"

    def __init__(self, model: SkeletonModel) -> None:
        super().__init__()
        if not isinstance(model, StreamingModel):
            raise ValueError(
                f"frame step: {type(model).__name__} does not stream (no init_state/step); "
                "export it without --frame-step"
            )
        plan = build_plan(model)
        if not callable(getattr(plan, "functional_step", None)):
            raise ValueError(
                f"frame step: {type(model).__name__} streams without a frame plan (InfoGCN2 needs "
                f"an rk4 ode_solver, got {getattr(model, 'ode_solver', None)!r}); export it "
                "without --frame-step"
            )
        self.initial = plan.functional_caches(1)  # checks the windows
        self.plan = plan  # not a module: its constants are detached copies of the weights
        self.num_joints = model.layout.num_joints
        self.in_channels = int(model.in_channels)
        self.device = _device(model)
        n = len(self.initial) // 2
        self.input_names = (
            "frame",
            "previous",
            "position",
            *(f"{kind}_{i}" for i in range(n) for kind in ("key", "value")),
        )
        self.output_names = (
            "logits",
            "forecast",
            *(f"next_{kind}_{i}" for i in range(n) for kind in ("key", "value")),
        )

    def forward(
        self, frame: Tensor, previous: Tensor, position: Tensor, *caches: Tensor
    ) -> tuple[Tensor, ...]:
        logits, forecast, rings = self.plan.functional_step(frame, previous, position, caches)
        return (logits, forecast, *rings)

    def caches(self, batch_size: int = 1) -> list[Tensor]:
        """The rings before the first frame of ``batch_size`` streams (zeros)."""
        return [ring.new_zeros((batch_size, *ring.shape[1:])) for ring in self.initial]

    def example_inputs(self) -> tuple[Tensor, ...]:
        """Frames of 2 streams at positions 0 and 5 with empty rings."""
        frame = torch.randn(2, self.num_joints, self.in_channels, device=self.device)
        position = torch.tensor([0, 5], device=self.device)
        return (frame, frame.clone(), position, *self.caches(2))

    def dynamic_shapes(self) -> tuple[Any, ...]:
        """The dynamic axes by name: batch; the rings are one argument (``*caches``)."""
        batch = {0: "batch"}
        return (batch, batch, batch, tuple(batch for _ in self.initial))

    def signature(self) -> dict[str, dict[str, list[int | str]]]:
        """Every input's and output's shape, ``"batch"`` for the dynamic axis."""
        V, C = self.num_joints, self.in_channels
        frame = torch.zeros(1, V, C, device=self.device)
        position = torch.zeros(1, dtype=torch.long, device=self.device)
        with torch.no_grad():
            logits, forecast, _ = self.plan.functional_step(frame, frame, position, self.initial)
        rings = [["batch", *ring.shape[1:]] for ring in self.initial]
        return {
            "inputs": {
                "frame": ["batch", V, C],
                "previous": ["batch", V, C],
                "position": ["batch"],
                **dict(zip(self.input_names[3:], rings, strict=True)),
            },
            "outputs": {
                "logits": ["batch", logits.size(1)],
                "forecast": ["batch", *forecast.shape[1:]],
                **dict(zip(self.output_names[2:], rings, strict=True)),
            },
        }


def export_graph(
    model: SkeletonModel, *, frame_step: bool = False, reduce: str | None = None
) -> ClipGraph | FrameStepGraph:
    """The graph of ``model`` (put in evaluation mode) to export: its :class:`FrameStepGraph`
    with ``frame_step``, else its :class:`ClipGraph` with ``reduce``."""
    model.eval()
    return (FrameStepGraph(model) if frame_step else ClipGraph(model, reduce)).eval()


def _device(model: SkeletonModel) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device
