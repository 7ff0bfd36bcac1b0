"""The interface of every registered model: :class:`SkeletonModel` and :class:`ModelOutput`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from skelgraph.layouts import Layout, get_layout, list_layouts

__all__ = [
    "REDUCTIONS",
    "AttentionMaps",
    "Forecaster",
    "ModelOutput",
    "SkeletonModel",
    "StreamingModel",
    "check_horizon",
    "check_input",
    "frame_graph",
    "last_real_step",
    "resolve_layout",
    "step_each",
    "step_streams",
]

#: The ways :meth:`ModelOutput.video_logits` turns per-step logits into clip scores.
REDUCTIONS = ("last", "mean")


@dataclass
class ModelOutput:
    r"""What a :class:`SkeletonModel` returns for a batch ``x`` of shape :math:`(B, V, T, C)`.

    Attributes:
        logits (Tensor): class scores :math:`(B, T', K)`; :math:`T' = T` per-step logits for the
            online models (step :math:`t` depends on frames :math:`\le t` only),
            :math:`T' = 1` for clip-level models.
        forecast (Tensor, optional): predicted future joint coordinates
            :math:`(B, T, N, V, C_{out})`: entry ``[b, t, n - 1]`` is frame :math:`t + n`
            predicted from frames :math:`\le t`; :math:`C_{out} = C - 1` (no confidence).
        latents (Tensor, optional): per-frame latents :math:`Z` of shape :math:`(B, V, T, D)`
            (:math:`(B, V, S, D)` when ``steps`` are given).
        latent_pred (Tensor, optional): rolled-out latents :math:`\hat{Z}`,
            :math:`(B, T, N, V, D)`, aligned like ``forecast``.
        mask (Tensor, optional): the frame mask :math:`(B, T)` the model was given.
        extras (dict): further model-specific tensors (e.g. the scores of each stream).
        reduce (str): the model's default for :meth:`video_logits`, ``"last"`` or ``"mean"``.
        steps (Tensor, optional): when a per-step model computed some steps only (e.g.
            ``forward(x, mask, steps="last")`` of :class:`~skelgraph.models.InfoGCN2`), their
            frame indices :math:`(B, S)` in increasing order; ``logits``, ``forecast``,
            ``latent_pred`` and ``latents`` then hold those :math:`S` steps and
            :meth:`video_logits` reduces over them. A clip-level model that forecasts from a few
            frames only (e.g. :class:`~skelgraph.models.SymGNN`) names them here too:
            ``forecast`` is then :math:`(B, S, N, V, C_{out})`, entry ``[b, k, n - 1]``
            predicting frame ``steps[b, k] + n``, while ``logits`` stay the clip scores
            :math:`(B, 1, K)`. :obj:`None` when every step was computed.
    """

    logits: Tensor
    forecast: Tensor | None = None
    latents: Tensor | None = None
    latent_pred: Tensor | None = None
    mask: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    reduce: str = "last"
    steps: Tensor | None = None

    def video_logits(self, reduce: str | None = None, mask: Tensor | None = None) -> Tensor:
        r"""Clip-level scores :math:`(B, K)` from the per-step logits.

        Args:
            reduce (str, optional): ``"last"``: the logits of the last real frame of every
                sample; ``"mean"``: the mean of the per-step logits over the real frames.
                (default: :attr:`reduce`)
            mask (Tensor, optional): frame mask :math:`(B, T)`; defaults to :attr:`mask`. Padded
                frames never contribute; a sample without a real frame falls back to all frames.
        """
        reduce = self.reduce if reduce is None else reduce
        if reduce not in REDUCTIONS:
            raise ValueError(f"video_logits: reduce: expected one of {REDUCTIONS}, got {reduce!r}")
        logits = self.logits
        if logits.size(1) == 1:
            return logits[:, 0]
        if self.steps is not None:
            return logits[:, -1] if reduce == "last" else logits.mean(dim=1)
        mask = self.mask if mask is None else mask
        if mask is None:
            return logits[:, -1] if reduce == "last" else logits.mean(dim=1)
        if mask.shape != logits.shape[:2]:
            raise ValueError(
                f"video_logits: mask: expected shape {list(logits.shape[:2])}, "
                f"got {list(mask.shape)}"
            )
        if reduce == "last":
            last = last_real_step(mask)
            return logits[torch.arange(logits.size(0), device=logits.device), last]
        mask = mask | ~mask.any(dim=1, keepdim=True)
        weight = mask.unsqueeze(-1).to(logits.dtype)
        return (logits * weight).sum(dim=1) / weight.sum(dim=1)


def last_real_step(mask: Tensor) -> Tensor:
    """The index of every sample's last real frame :math:`(B,)` from a frame mask
    :math:`(B, T)`; the last frame for a sample without a real one."""
    mask = mask | ~mask.any(dim=1, keepdim=True)
    frames = torch.arange(1, mask.size(1) + 1, device=mask.device)
    return (mask * frames).argmax(dim=1)


@dataclass
class AttentionMaps:
    r"""The graphs and attention a model used on a batch ``x`` :math:`(B, V, T, C)`, named per
    layer (the module's name in the model, e.g. ``"encoder.0.spatial"``), from
    :meth:`SkeletonModel.attention`. A matrix ``[..., i, j]`` weighs the message from joint
    :math:`j` to joint :math:`i`; the head (or partition) is the dimension before the two joint
    dimensions.

    Attributes:
        output (ModelOutput): the model's output on the batch, equal to :meth:`forward`'s.
        graphs (dict[str, Tensor]): every spatial layer's effective adjacency
            :math:`(B, T_l, H, V, V)`: InfoGCN++'s :math:`\hat{A} \odot \mathrm{softmax}(QK^\top)`
            per frame, 2s-AGCN's :math:`A_k + B_k + C_k(X)`, ST-GCN's :math:`A_k \odot M_k`.
            :math:`T_l = 1` where the graph is the same for every frame, else the layer's frames.
        attention (dict[str, Tensor]): the self-attention before the product with the topology,
            :math:`\mathrm{softmax}(QK^\top)` :math:`(B, T, H, V, V)` (rows sum to 1), for the
            layers that have one (SA-GC).
        temporal (dict[str, Tensor]): temporal attention per joint :math:`(B, V, H, T, T)`
            indexed ``[b, v, h, t, s]`` (query frame :math:`t`, key frame :math:`s`).
        topology (dict[str, Tensor]): the learned (input-independent) graphs :math:`(H, V, V)`.
    """

    output: ModelOutput
    graphs: dict[str, Tensor] = field(default_factory=dict)
    attention: dict[str, Tensor] = field(default_factory=dict)
    temporal: dict[str, Tensor] = field(default_factory=dict)
    topology: dict[str, Tensor] = field(default_factory=dict)

    def merge(self, other: AttentionMaps, prefix: str = "") -> None:
        """Adds the maps of ``other`` (not its output), every layer name prefixed by
        ``prefix``."""
        for kind in ("graphs", "attention", "temporal", "topology"):
            mine = getattr(self, kind)
            mine.update((prefix + name, value) for name, value in getattr(other, kind).items())


def frame_graph(graph: Tensor, batch_size: int) -> Tensor:
    r"""A spatial layer's graph as :attr:`AttentionMaps.graphs` holds it,
    :math:`(B, T_l, H, V, V)`: from one graph for all inputs :math:`(H, V, V)`, one per sample
    :math:`(B, H, V, V)`, or one per sample and frame :math:`(B, H, T, V, V)`."""
    if graph.dim() == 3:
        return graph.expand(batch_size, 1, *graph.shape)
    if graph.dim() == 4:
        return graph.unsqueeze(1)
    return graph.transpose(1, 2)


class SkeletonModel(nn.Module):
    r"""Base class of the models in the registry.

    Subclasses implement :meth:`forward` and :meth:`loss`. The arguments a subclass's
    ``__init__`` is called with are recorded in :attr:`config` once it returns (see
    :meth:`_make_config`), so that ``create(name, **model.config)`` rebuilds the model.

    Shapes:
        - **input:** joints :math:`(B, V, T, C)` (the dense view of a PyG batch, confidence last),
          optional frame mask :math:`(B, T)` (bool, :obj:`True` = real frame)
        - **output:** :class:`ModelOutput`
    """

    config: dict[str, Any]
    layout: Layout

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_config(cls.__init__)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The training objective: a dict with the total under ``"loss"`` and each term."""
        raise NotImplementedError

    def clip_logits(
        self, x: Tensor, mask: Tensor | None = None, reduce: str | None = None
    ) -> Tensor:
        """Clip-level scores :math:`(B, K)` for joints ``x`` :math:`(B, V, T, C)` and an optional
        frame mask :math:`(B, T)`: :meth:`ModelOutput.video_logits` of :meth:`forward`'s output
        with ``reduce`` (default: the model's). Per-step models override it to compute only the
        steps the reduction reads (the last one for ``"last"``), with the same numbers."""
        return self(x, mask).video_logits(reduce, mask)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """The output of :meth:`forward` on ``x`` :math:`(B, V, T, C)` and the graphs and
        attention the model used for it (see :class:`AttentionMaps`). :meth:`forward` never
        pays for them."""
        raise NotImplementedError(f"{type(self).__name__} does not report its attention")

    def _make_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """:attr:`config` from the arguments of ``__init__`` (by name, defaults filled in), as
        plain Python values: sequences as lists, NumPy scalars as numbers, the ``layout`` by name
        when it is the registered layout of that name, else as :meth:`Layout.to_dict`.

        Called when ``__init__`` has returned; a model whose arguments are completed while it is
        built overrides it.
        """
        config = {name: _plain(value) for name, value in arguments.items()}
        if "layout" in arguments:
            layout = resolve_layout(arguments["layout"])
            known = layout.name in list_layouts() and get_layout(layout.name) == layout
            config["layout"] = layout.name if known else layout.to_dict()
        return config


def _recording_config(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that records its arguments in ``self.config`` with
    :meth:`SkeletonModel._make_config` when it returns; the outermost ``__init__`` of a
    subclass chain records last and so wins."""
    signature = inspect.signature(init)
    parameters = list(signature.parameters.values())[1:]  # after self
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        raise TypeError(
            f"{init.__qualname__}: expected named arguments only (*args cannot be recorded "
            f"for create(name, **config))"
        )

    @functools.wraps(init)
    def recording(self: SkeletonModel, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        for p in parameters:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(bound.arguments[p.name])
            else:
                arguments[p.name] = bound.arguments[p.name]
        self.config = self._make_config(arguments)

    return recording


def _plain(value: Any) -> Any:
    """``value`` with its lists, tuples and arrays as lists, its mappings as dicts and its NumPy
    scalars as Python numbers, recursively; other values as they are."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@runtime_checkable
class StreamingModel(Protocol):
    r"""A model that also runs one frame at a time (e.g. :class:`~skelgraph.models.InfoGCN2`).

    Stepping through a clip from :meth:`init_state` gives, frame by frame, the per-step logits
    (and forecasts) that :meth:`~SkeletonModel.forward` gives for the whole clip. The state is
    opaque to callers: each model defines its own (caches, previous frame, member states, ...).
    ``isinstance(model, StreamingModel)`` tells whether a model has both methods.
    """

    def init_state(self, batch_size: int = 1) -> Any:
        """The state before the first frame of ``batch_size`` streams."""
        ...

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Tensor | None, Any]:
        r"""One frame ``x_t`` :math:`(B, V, C)` → logits :math:`(B, K)`, forecast
        :math:`(B, N, V, C - 1)` or :obj:`None`, and the next state."""
        ...


@runtime_checkable
class Forecaster(Protocol):
    r"""A model (or rule) that predicts the motion after the observed frames, for any horizon
    (e.g. :class:`~skelgraph.models.InfoGCN2`, :class:`~skelgraph.models.ZeroVelocity`).

    ``isinstance(model, Forecaster)`` tells whether it has :meth:`forecast_future`.
    Implementations may take further keyword-only options after ``horizon``.
    """

    def forecast_future(self, x: Tensor, mask: Tensor | None, horizon: int) -> Tensor:
        r"""The next ``horizon`` frames after the last real frame of every sample.

        Args:
            x (Tensor): the observed joints :math:`(B, V, T, C)`, confidence last, in the
                coordinates the model is given (the preprocessed clip: centred on the pelvis and
                divided by the torso length, :func:`skelgraph.preprocess.preprocess`).
            mask (Tensor, optional): bool frame mask :math:`(B, T)`; sample :math:`b` was
                observed up to its last real frame :math:`t_b` (:func:`last_real_step`), the
                last frame for :obj:`None`.
            horizon (int): frames :math:`H \ge 1` to predict.

        Returns:
            Tensor: :math:`(B, H, V, C - 1)`, entry ``[b, h - 1]`` frame :math:`t_b + h`
            (coordinates only, in the coordinates of ``x``).
        """
        ...


def check_horizon(name: str, horizon: int) -> int:
    """``horizon`` as an int after checking that it is an integer at least 1.

    Raises:
        ValueError: naming ``name`` (e.g. ``"InfoGCN2.forecast_future"``) and the value.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"{name}: horizon: expected an integer >= 1, got {horizon!r}")
    return int(horizon)


def step_streams(
    model: StreamingModel, x_t: Tensor, states: Sequence[Any]
) -> tuple[Tensor, Tensor | None, list[Any]]:
    r"""Advances :math:`B` independent streams of ``model`` by one frame each, every stream at
    its own frame: ``states[b]`` is stream :math:`b`'s state from ``model.init_state(1)``.

    Uses the model's own ``step_streams`` when it has one (one batched computation, e.g.
    :meth:`~skelgraph.streaming.FramePlan.step_streams` of a model's frame plan), else
    :meth:`StreamingModel.step` stream by stream.

    Args:
        model (StreamingModel): the model, or its frame plan
            (:func:`skelgraph.streaming.build_plan`).
        x_t (Tensor): the streams' new frames :math:`(B, V, C)`.
        states (sequence): :math:`B` one-stream states.

    Returns:
        (Tensor, Tensor or None, list): logits :math:`(B, K)`, forecasts
        :math:`(B, N, V, C - 1)` or :obj:`None`, and the streams' next states.
    """
    batched = getattr(model, "step_streams", None)
    if callable(batched):
        return batched(x_t, states)
    if x_t.size(0) != len(states):
        raise ValueError(
            f"step_streams: x_t: expected one frame per state ({len(states)}), got {x_t.size(0)}"
        )
    return step_each(model, x_t, states)


def step_each(
    model: StreamingModel, x_t: Tensor, states: Sequence[Any]
) -> tuple[Tensor, Tensor | None, list[Any]]:
    """:func:`step_streams` one stream after the other, with :meth:`StreamingModel.step`."""
    outputs = [model.step(x_t[b : b + 1], state) for b, state in enumerate(states)]
    logits = torch.cat([logits for logits, _, _ in outputs])
    forecasts = [forecast for _, forecast, _ in outputs]
    forecast = None if forecasts[0] is None else torch.cat(forecasts)
    return logits, forecast, [state for _, _, state in outputs]


def resolve_layout(layout: str | Layout | Mapping[str, Any]) -> Layout:
    """A :class:`Layout` from a registered name, a layout, or :meth:`Layout.to_dict` output."""
    if isinstance(layout, Mapping):
        return Layout.from_dict(layout)
    return get_layout(layout)


def check_input(
    name: str, x: Tensor, mask: Tensor | None, num_joints: int, in_channels: int
) -> None:
    """Raises :class:`ValueError` naming the model, the argument, the expected and actual shape."""
    if x.dim() != 4 or x.size(1) != num_joints or x.size(3) != in_channels:
        raise ValueError(
            f"{name}: x: expected shape [B, {num_joints}, T, {in_channels}], got {list(x.shape)}"
        )
    if mask is not None and (mask.dtype != torch.bool or mask.shape != (x.size(0), x.size(2))):
        raise ValueError(
            f"{name}: mask: expected a bool tensor of shape [{x.size(0)}, {x.size(2)}], "
            f"got {mask.dtype} {list(mask.shape)}"
        )
