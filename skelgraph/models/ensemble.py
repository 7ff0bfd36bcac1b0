r"""Ensembles of registered models: averaged class probabilities, optional mirror test-time
augmentation and member weights, one checkpoint for several trained models.

For member models :math:`m = 1..M` with per-step logits :math:`\ell^{(m)}_t` and weights
:math:`w_m > 0` (all 1 unless given) the ensemble's per-step logits are the log of the weighted
average of the member probabilities,

.. math::
    \ell_t = \log \frac{\sum_{m, v} w_m \, \mathrm{softmax}\big(\ell^{(m)}_t(v(X))\big)}
    {\sum_{m, v} w_m},

over the views :math:`v` of the input: the input itself and, with ``mirror=True``, its left/right
mirror image (the :math:`x` coordinate negated — the preprocessing centres every clip on the pelvis
— and the joints permuted with :meth:`Layout.flip_permutation`). InfoGCN's six-stream recipe
weighs its three position streams 1.5 and its three motion streams 1 (its reference code sums the
weighted scores; the weighted mean of the probabilities keeps the fused scores log-probabilities,
which the shared trainer and losses expect). The members must agree on the logits' time length
(per-step models such as ``infogcn2`` with each other, clip-level models such as ``stgcn`` and
``agcn2s`` with each other).

The training loss is the sum of the members' own losses on the input (so an ensemble can also be
trained jointly with the shared trainer); an ensemble of streaming members (``init_state`` /
``step``, e.g. InfoGCN++) streams as well.

Typical use: train several models (e.g. InfoGCN++ on the joint, bone and motion streams), then
fuse their checkpoints into one that ``skelgraph test`` and the online recogniser load like any
other::

    model, meta = Ensemble.from_checkpoints(["joint/best.pt", "bone/best.pt"], mirror=True)
    save_checkpoint("fused.pt", model, meta)  # or: skelgraph ensemble fused.pt joint/best.pt ...

A single checkpoint with mirror test-time augmentation is an ensemble of one member.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.layouts import Layout
from skelgraph.models.base import (
    AttentionMaps,
    Forecaster,
    ModelOutput,
    SkeletonModel,
    StreamingModel,
    check_horizon,
    check_input,
    resolve_layout,
    step_streams,
)
from skelgraph.models.checkpoint import (
    CheckpointMeta,
    load_weights,
    make_meta,
    read_checkpoint,
    save_checkpoint,
)
from skelgraph.models.losses import classification_loss
from skelgraph.models.registry import (
    CREATE_ARGS,
    create,
    model_class,
    register_model,
    registered_name,
)
from skelgraph.utils import PathLike

__all__ = [
    "Ensemble",
    "EnsembleOutput",
    "StreamingEnsemble",
    "check_weights",
    "fuse_checkpoints",
    "fuse_logits",
    "mirrored",
]


#: Checkpoint meta fields that every fused checkpoint must share.
_SHARED_META = ("classes", "layout", "in_channels", "window", "preprocess")
#: Fields of ``meta["inference"]`` that every fused checkpoint must share.
_SHARED_INFERENCE = ("sampling", "stride", "p_interval", "reduce")


def fuse_logits(logits: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    r"""The log of the (weighted) averaged class probabilities of several logits of the same shape
    :math:`(*, K)`: :math:`\log \sum_m w_m \mathrm{softmax}(\ell^{(m)}) / \sum_m w_m`, in
    float32; equal weights without ``weights`` (one positive number per logits)."""
    stacked = torch.stack([entry.float().log_softmax(dim=-1) for entry in logits])
    if weights is None:
        return torch.logsumexp(stacked, dim=0) - math.log(len(logits))
    weights = check_weights(weights, len(logits), "fuse_logits: weights")
    log_w = torch.tensor(weights, dtype=torch.float64).log()
    log_w = (log_w - torch.logsumexp(log_w, dim=0)).to(stacked.device, torch.float32)
    return torch.logsumexp(stacked + log_w.view(-1, *([1] * (stacked.dim() - 1))), dim=0)


def check_weights(weights: Sequence[float], count: int, name: str) -> list[float]:
    """``weights`` as a list of floats after checking that there are ``count`` of them, each
    positive and finite.

    Raises:
        ValueError: naming ``name``, the expected count and what was given.
    """
    values = [float(w) for w in weights]
    if len(values) != count or not all(math.isfinite(w) and w > 0 for w in values):
        raise ValueError(f"{name}: expected {count} positive numbers, got {list(weights)!r}")
    return values


@dataclass
class EnsembleOutput(ModelOutput):
    """A :class:`ModelOutput` whose ``logits`` are the fused log-probabilities :math:`(B, T', K)`
    and ``forecast`` (with its ``steps``) the first member's; ``members`` holds every member's
    own output on the (unmirrored) input, which :meth:`Ensemble.loss` uses."""

    members: list[ModelOutput] = field(default_factory=list)


def _streams(name: str, args: Mapping[str, Any]) -> bool:
    """Whether the registered model ``name`` built with ``args`` has ``init_state`` and ``step``."""
    try:
        cls = model_class(name)
    except ValueError:  # Ensemble.__init__ names the unknown member
        return False
    if issubclass(cls, Ensemble):
        members = args.get("members") or []
        return bool(members) and all(_streams(m["name"], m.get("args", {})) for m in members)
    return callable(getattr(cls, "init_state", None)) and callable(getattr(cls, "step", None))


def _member_spec(i: int, member: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(member, Mapping) or not isinstance(member.get("name"), str):
        raise ValueError(
            f"Ensemble: members[{i}]: expected a mapping with 'name' (a registered model) and "
            f"'args', got {member!r}"
        )
    unknown = sorted(set(member) - {"name", "args"})
    if unknown:
        raise ValueError(f"Ensemble: members[{i}]: expected keys 'name' and 'args', got {unknown}")
    args = member.get("args") or {}
    if not isinstance(args, Mapping):
        raise ValueError(f"Ensemble: members[{i}].args: expected a mapping, got {args!r}")
    return member["name"], dict(args)


def _own_args(model: SkeletonModel) -> dict[str, Any]:
    """``model.config`` without the arguments an ensemble passes to every member itself."""
    return {k: v for k, v in model.config.items() if k not in CREATE_ARGS}


@register_model("ensemble")
class Ensemble(SkeletonModel):
    r"""Several registered models whose class probabilities are averaged (see the module
    description).

    Args:
        num_classes (int): classes :math:`K` (every member's).
        layout (str or Layout or dict): joint layout (every member's).
        in_channels (int): channels :math:`C` per joint, confidence last (every member's).
        members (list of dict): ``{"name": registered model, "args": keyword arguments}`` per
            member; ``args`` may repeat ``num_classes``, ``layout`` and ``in_channels`` only with
            the ensemble's values.
        mirror (bool): also run every member on the left/right mirrored input and average those
            probabilities too (test-time augmentation). (default: :obj:`False`)
        weights (list of float, optional): one positive weight per member for the average of
            the probabilities (a member's mirror view has its weight); recorded in
            :attr:`config` and so in checkpoints. (default: :obj:`None`, equal weights)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`EnsembleOutput` with ``logits`` :math:`(B, T', K)` (log of the
          averaged probabilities) and the first member's ``forecast``

    An ensemble whose members all stream (``init_state`` / ``step``) is built as a
    :class:`StreamingEnsemble`, which adds those two methods.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Ensemble:
        members = kwargs.get("members")
        if cls is Ensemble and isinstance(members, Sequence) and members:
            specs = [m for m in members if isinstance(m, Mapping) and "name" in m]
            if len(specs) == len(members) and all(
                _streams(m["name"], m.get("args") or {}) for m in specs
            ):
                cls = StreamingEnsemble
        return super().__new__(cls)

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        members: Sequence[Mapping[str, Any]],
        mirror: bool = False,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        if isinstance(members, (str, Mapping)) or not members:
            raise ValueError(
                f"Ensemble: members: expected a non-empty list of {{'name', 'args'}}, "
                f"got {members!r}"
            )
        self.weights = (
            None
            if weights is None
            else check_weights(weights, len(members), "Ensemble: weights (one per member)")
        )
        shared = {"num_classes": num_classes, "layout": layout, "in_channels": in_channels}
        modules = []
        for i, member in enumerate(members):
            name, args = _member_spec(i, member)
            for key, value in shared.items():
                if key not in args:
                    continue
                given = resolve_layout(args.pop(key)) if key == "layout" else args.pop(key)
                if given != value:
                    shown = given.name if key == "layout" else given
                    expected = value.name if key == "layout" else value
                    raise ValueError(
                        f"Ensemble: members[{i}].args.{key}: expected {expected!r} "
                        f"(the ensemble's), got {shown!r}"
                    )
            modules.append(create(name, **shared, **args))
        self.layout = layout
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.mirror = bool(mirror)
        self.members = nn.ModuleList(modules)
        sign = torch.ones(in_channels)
        sign[0] = -1.0
        flip = torch.as_tensor(layout.flip_permutation(), dtype=torch.long)
        self.register_buffer("flip_index", flip, persistent=False)
        self.register_buffer("flip_sign", sign, persistent=False)

    def _make_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments as recorded by :class:`SkeletonModel`, with every member's as its model
        recorded them (defaults filled in), ``mirror`` as a bool and ``weights`` as floats."""
        names = [member["name"] for member in arguments["members"]]
        return {
            **super()._make_config(arguments),
            "members": [
                {"name": name, "args": _own_args(module)}
                for name, module in zip(names, self.members, strict=True)
            ],
            "mirror": self.mirror,
            "weights": self.weights,
        }

    @property
    def member_names(self) -> list[str]:
        """The registered model name of every member."""
        return [m["name"] for m in self.config["members"]]

    def flip(self, x: Tensor) -> Tensor:
        r"""The left/right mirror image of joints ``x`` :math:`(B, V, *, C)`: joints permuted by
        :meth:`Layout.flip_permutation`, the first coordinate negated."""
        return x.index_select(1, self.flip_index) * self.flip_sign.to(x.dtype)

    def views(self, x: Tensor) -> list[Tensor]:
        r"""The inputs every member runs on: joints ``x`` :math:`(B, V, *, C)` and, with
        :attr:`mirror`, its mirror image (:meth:`flip`)."""
        return [x, self.flip(x)] if self.mirror else [x]

    def _fuse(self, logits: Sequence[Tensor]) -> Tensor:
        """:func:`fuse_logits` of the (member, view) logits in member-major order, every view
        with its member's weight."""
        if self.weights is None:
            return fuse_logits(logits)
        views = len(logits) // len(self.weights)
        return fuse_logits(logits, [w for w in self.weights for _ in range(views)])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EnsembleOutput:
        """Fused per-step log-probabilities for joints ``x`` :math:`(B, V, T, C)` and an optional
        bool frame mask :math:`(B, T)`."""
        return self._forward(x, mask)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compiles every member's forward in place (:meth:`torch.nn.Module.compile`), which
        the fused forward and :meth:`clip_logits` both call."""
        for member in self.members:
            member.compile(*args, **kwargs)

    def clip_logits(
        self, x: Tensor, mask: Tensor | None = None, reduce: str | None = None
    ) -> Tensor:
        """Fused clip scores :math:`(B, K)`. With ``reduce="last"`` the fused last step is the
        fusion of every member's last step, so each member computes only that
        (:meth:`~skelgraph.models.base.SkeletonModel.clip_logits`); the mean over steps of the
        fused scores needs every step."""
        if reduce is None:  # the first member's default, as forward's output carries it
            reduce = getattr(self.members[0], "reduce", "last")
        if reduce != "last":
            return super().clip_logits(x, mask, reduce)
        check_input("Ensemble", x, mask, self.layout.num_joints, self.in_channels)
        return fuse_logits(
            [
                member.clip_logits(view, mask, reduce)
                for member in self.members
                for view in self.views(x)
            ]
        )

    def forecast_future(
        self, x: Tensor, mask: Tensor | None, horizon: int, **options: Any
    ) -> Tensor:
        r"""The (weighted) mean of the members' forecasts
        (:meth:`Forecaster.forecast_future <skelgraph.models.base.Forecaster.forecast_future>`)
        over the views,

        .. math::
            \hat{X} = \frac{\sum_{m, v} w_m \, v^{-1}\big(\hat{X}^{(m)}(v(X))\big)}
            {\sum_{m, v} w_m}:

        with :attr:`mirror` the forecast from the mirror image is mirrored back (the flip is its
        own inverse) before it is averaged, as the probabilities are averaged over the views.
        ``options`` (e.g. InfoGCN++'s ``rollout``) go to every member.

        Returns:
            Tensor: :math:`(B, H, V, C - 1)`, entry ``[b, h - 1]`` frame :math:`t_b + h` after
            every sample's last real frame :math:`t_b`.

        Raises:
            TypeError: naming the first member that does not forecast.
        """
        name = "Ensemble.forecast_future"
        check_input(name, x, mask, self.layout.num_joints, self.in_channels)
        horizon = check_horizon(name, horizon)
        for i, (member, member_name) in enumerate(
            zip(self.members, self.member_names, strict=True)
        ):
            if not isinstance(member, Forecaster):
                raise TypeError(
                    f"{name}: members[{i}] ({member_name}) has no forecast_future; an ensemble "
                    f"forecasts when every member does"
                )
        weights = self.weights or [1.0] * len(self.members)
        total, weight_sum = None, 0.0
        for member, weight in zip(self.members, weights, strict=True):
            for v, view in enumerate(self.views(x)):
                forecast = member.forecast_future(view, mask, horizon, **options)
                if v == 1:  # back from the mirror image: (B, H, V, C - 1), joints on dim 2
                    sign = self.flip_sign[:-1].to(forecast.dtype)  # the coordinates' signs
                    forecast = forecast.index_select(2, self.flip_index) * sign
                total = weight * forecast if total is None else total + weight * forecast
                weight_sum += weight
        return total / weight_sum

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and every member's maps on the input as given (not its mirror
        image), named ``"members.<i>.<layer>"`` (see
        :meth:`SkeletonModel.attention <skelgraph.models.base.SkeletonModel.attention>`)."""
        members: list[AttentionMaps] = []
        maps = AttentionMaps(self._forward(x, mask, members))
        for i, member_maps in enumerate(members):
            maps.merge(member_maps, f"members.{i}.")
        return maps

    def _forward(
        self, x: Tensor, mask: Tensor | None, members: list[AttentionMaps] | None = None
    ) -> EnsembleOutput:
        """:meth:`forward`; every member's :meth:`attention` on the unmirrored input is
        appended to ``members`` when given."""
        check_input("Ensemble", x, mask, self.layout.num_joints, self.in_channels)
        outputs: list[ModelOutput] = []
        logits: list[Tensor] = []
        names = self.member_names
        for i, member in enumerate(self.members):
            for v, view in enumerate(self.views(x)):
                if v == 0 and members is not None:
                    members.append(member.attention(view, mask))
                    out = members[-1].output
                else:
                    out = member(view, mask)
                if logits and out.logits.size(1) != logits[0].size(1):
                    raise ValueError(
                        f"Ensemble: members must agree on the logits' time length: members[0] "
                        f"({names[0]}) gives logits {list(logits[0].shape)}, members[{i}] "
                        f"({names[i]}) {list(out.logits.shape)}; combine per-step models "
                        f"(e.g. infogcn2) or clip-level models (e.g. stgcn, agcn2s), not both"
                    )
                if v == 0:
                    outputs.append(out)
                logits.append(out.logits)
        first = outputs[0]
        return EnsembleOutput(
            logits=self._fuse(logits),
            forecast=first.forecast,
            mask=mask,
            reduce=first.reduce,
            steps=first.steps,
            members=outputs,
        )

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The sum of the members' losses on the unmirrored input (unweighted: every member
        learns on its own): ``{"loss", "cls", "loss_0", "loss_1", ...}``; ``"cls"`` is the
        (untrained) cross-entropy of the fused scores, for logging."""
        if not isinstance(out, EnsembleOutput) or len(out.members) != len(self.members):
            raise ValueError(
                f"Ensemble.loss: out: expected the EnsembleOutput of this ensemble's forward "
                f"({len(self.members)} members), got {type(out).__name__}"
            )
        terms: dict[str, Tensor] = {}
        total = None
        for i, (member, member_out) in enumerate(zip(self.members, out.members, strict=True)):
            value = member.loss(member_out, x, y, mask)["loss"]
            terms[f"loss_{i}"] = value
            total = value if total is None else total + value
        with torch.no_grad():
            cls = classification_loss(out.logits, y, mask, label_smoothing=0.0)
        return {"loss": total, "cls": cls, **terms}

    # -- construction from trained models -------------------------------------------------------

    @classmethod
    def from_models(
        cls,
        models: Sequence[SkeletonModel],
        *,
        mirror: bool = False,
        weights: Sequence[float] | None = None,
    ) -> Ensemble:
        """An ensemble of copies of trained registered models (same classes, layout, channels),
        with ``weights`` (one per model) when given.

        Raises:
            ValueError: naming the model and the field that differs from the first model's.
        """
        if not models:
            raise ValueError("Ensemble.from_models: models: expected at least one model, got none")
        first = models[0].config
        for i, model in enumerate(models[1:], start=1):
            for key in CREATE_ARGS:
                if model.config[key] != first[key]:
                    raise ValueError(
                        f"Ensemble.from_models: models[{i}].{key}: expected {first[key]!r} "
                        f"(as models[0]), got {model.config[key]!r}"
                    )
        members = [{"name": registered_name(m), "args": _own_args(m)} for m in models]
        ensemble = cls(
            num_classes=first["num_classes"],
            layout=first["layout"],
            in_channels=first["in_channels"],
            members=members,
            mirror=mirror,
            weights=weights,
        )
        for member, model in zip(ensemble.members, models, strict=True):
            member.load_state_dict(model.state_dict())
        device = next(iter(models[0].parameters()), torch.empty(0)).device
        return ensemble.to(device).train(models[0].training)

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[PathLike],
        *,
        mirror: bool = False,
        weights: Sequence[float] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> tuple[Ensemble, dict[str, Any]]:
        """Builds an ensemble from trained checkpoints (:mod:`skelgraph.models.checkpoint`) of the
        same classes, layout, channels, window, preprocessing and inference settings.

        Args:
            paths: Checkpoint files; an ensemble checkpoint becomes one (nested) member.
            mirror: Mirror test-time augmentation.
            weights: One positive weight per checkpoint (default: equal weights).
            map_location: Device of the model.

        Returns:
            ``(model, meta)``: the ensemble in eval mode and its checkpoint meta (the first
            checkpoint's sample settings, ``model="ensemble"``, ``inference["tta"]`` =
            ``"mirror"`` or :obj:`None`, and ``meta["ensemble"]`` = the member checkpoints and
            models), ready for :func:`~skelgraph.models.checkpoint.save_checkpoint`.

        Raises:
            FileNotFoundError: for a missing file.
            ValueError: naming the checkpoint and the meta field that differs from the first
                checkpoint's, or a checkpoint whose weights do not fit its model.
        """
        if isinstance(paths, (str, os.PathLike)) or not paths:
            raise ValueError(
                f"Ensemble.from_checkpoints: paths: expected a non-empty list of checkpoint "
                f"files, got {paths!r}"
            )
        paths = [Path(p) for p in paths]
        states = [read_checkpoint(p, map_location) for p in paths]
        metas = [CheckpointMeta.from_dict(s["meta"]) for s in states]
        first = metas[0]
        for path, meta in zip(paths[1:], metas[1:], strict=True):
            for key in _SHARED_META:
                ours, theirs = getattr(first, key), getattr(meta, key)
                if theirs != ours:
                    raise ValueError(
                        f"checkpoint {path}: meta field {key!r}: expected {ours!r} "
                        f"(as in {paths[0]}), got {theirs!r}"
                    )
            for key in _SHARED_INFERENCE:
                ours, theirs = (first.inference or {}).get(key), (meta.inference or {}).get(key)
                if theirs != ours:
                    raise ValueError(
                        f"checkpoint {path}: meta field 'inference.{key}': expected {ours!r} "
                        f"(as in {paths[0]}), got {theirs!r}"
                    )
        ensemble = cls(
            num_classes=len(first.classes),
            layout=first.layout,
            in_channels=first.in_channels,
            members=[{"name": m.model, "args": m.model_args} for m in metas],
            mirror=mirror,
            weights=weights,
        )
        for member, path, state in zip(ensemble.members, paths, states, strict=True):
            load_weights(member, state["state_dict"], source=f"checkpoint {path}")
        meta = make_meta(
            model="ensemble",
            model_args=ensemble.config,
            classes=first.classes,
            layout=Layout.from_dict(first.layout),
            in_channels=first.in_channels,
            window=first.window,
            preprocess=first.preprocess,
            inference={**(first.inference or {}), "tta": "mirror" if mirror else None},
            ensemble={
                "checkpoints": [str(p) for p in paths],
                "models": [m.model for m in metas],
            },
        )
        return ensemble.to(map_location).eval(), meta


class StreamingEnsemble(Ensemble):
    r"""An :class:`Ensemble` whose members all stream: :meth:`step` feeds one frame to every
    member (and its mirror image) and fuses the per-step probabilities, equal to :meth:`forward`
    on the frames so far."""

    def init_state(self, batch_size: int) -> tuple[Any, ...]:
        """The members' initial states (one per member and view), for :meth:`step`."""
        views = 2 if self.mirror else 1
        return tuple(m.init_state(batch_size) for m in self.members for _ in range(views))

    def step(
        self,
        x_t: Tensor,
        state: Sequence[Any],
        *,
        members: Sequence[StreamingModel] | None = None,
    ) -> tuple[Tensor, Tensor | None, tuple[Any, ...]]:
        r"""One frame ``x_t`` :math:`(B, V, C)` through every member (or what steps for it in
        ``members``, e.g. its frame plan, see :func:`skelgraph.streaming.build_plan`).

        Returns:
            ``(logits, forecast, state)``: the fused log-probabilities :math:`(B, K)`, the first
            member's forecast :math:`(B, N, V, C - 1)` on the unmirrored frame, the new state.
        """
        if x_t.dim() != 3 or x_t.shape[1:] != (self.layout.num_joints, self.in_channels):
            raise ValueError(
                f"Ensemble.step: x_t: expected shape [B, {self.layout.num_joints}, "
                f"{self.in_channels}], got {list(x_t.shape)}"
            )
        views = self.views(x_t)
        if len(state) != len(self.members) * len(views):
            raise ValueError(
                f"Ensemble.step: state: expected {len(self.members) * len(views)} member states "
                f"(from init_state), got {len(state)}"
            )
        logits, new_state = [], []
        forecast = None
        for i, member in enumerate(self.members if members is None else members):
            for v, view in enumerate(views):
                step_logits, step_forecast, member_state = member.step(
                    view, state[i * len(views) + v]
                )
                if i == 0 and v == 0:
                    forecast = step_forecast
                logits.append(step_logits)
                new_state.append(member_state)
        return self._fuse(logits), forecast, tuple(new_state)

    def step_streams(
        self,
        x_t: Tensor,
        states: Sequence[Sequence[Any]],
        *,
        members: Sequence[StreamingModel] | None = None,
    ) -> tuple[Tensor, Tensor | None, list[tuple[Any, ...]]]:
        r"""One frame of each of :math:`B` independent streams (``states[b]`` from
        :meth:`init_state` ``(1)``, every stream at its own frame) through every member (or
        ``members``, as in :meth:`step`): each member advances all streams and their mirror
        images in one :func:`~skelgraph.models.base.step_streams` call. Equal to :meth:`step` on
        each stream alone.

        Returns:
            ``(logits, forecast, states)`` as :meth:`step`, for the :math:`B` streams.
        """
        B, views = len(states), self.views(x_t)
        per_stream = len(self.members) * len(views)
        if x_t.size(0) != B or any(len(state) != per_stream for state in states):
            raise ValueError(
                f"Ensemble.step_streams: expected one frame per state and "
                f"{per_stream} member states per stream (from "
                f"init_state(1)), got {x_t.size(0)} frames and {[len(s) for s in states]}"
            )
        frames = torch.cat(views)  # view by view: [x_1..x_B, mirror(x_1)..mirror(x_B)]
        logits, new_states = [], [list(state) for state in states]
        forecast = None
        for i, member in enumerate(self.members if members is None else members):
            slots = [i * len(views) + v for v in range(len(views))]
            member_logits, member_forecast, member_states = step_streams(
                member, frames, [state[slot] for slot in slots for state in states]
            )
            logits += member_logits.split(B)
            if i == 0 and member_forecast is not None:
                forecast = member_forecast[:B]
            for k, member_state in enumerate(member_states):
                new_states[k % B][slots[k // B]] = member_state
        return self._fuse(logits), forecast, [tuple(state) for state in new_states]


def mirrored(model: SkeletonModel) -> Ensemble:
    """``model`` with mirror test-time augmentation: an ensemble of one member (a copy), or a
    copy of an ensemble with ``mirror=True``."""
    if isinstance(model, Ensemble):
        config = {**model.config, "mirror": True}
        copy = Ensemble(**config)
        copy.load_state_dict(model.state_dict())
        device = next(iter(model.parameters()), torch.empty(0)).device
        return copy.to(device).train(model.training)
    return Ensemble.from_models([model], mirror=True)


def fuse_checkpoints(
    out: PathLike,
    paths: Sequence[PathLike],
    *,
    mirror: bool = False,
    weights: Sequence[float] | None = None,
) -> tuple[Ensemble, dict[str, Any]]:
    """Fuses trained checkpoints into one ensemble checkpoint ``out`` (the trainer's format, so
    ``skelgraph test --checkpoint out`` evaluates it), with ``weights`` (one per checkpoint)
    when given; see :meth:`Ensemble.from_checkpoints`.

    Returns:
        ``(model, meta)`` as written.
    """
    model, meta = Ensemble.from_checkpoints(paths, mirror=mirror, weights=weights)
    save_checkpoint(out, model, meta)
    return model, meta
