r"""What a trained model looked at: joint importance per frame, its faithfulness (the deletion
curve), and the model's graphs reduced for drawing.

Importance :math:`(B, T, V)` for a class :math:`c` (the predicted one by default) comes from one
of :data:`METHODS`:

* ``"integrated_gradients"`` (Captum's :class:`~captum.attr.IntegratedGradients`, from the
  all-zero input, i.e. every joint at the pelvis with confidence 0) and ``"gradient_x_input"``
  (Captum's :class:`~captum.attr.InputXGradient`): the attribution to the clip score of class
  :math:`c` summed over a joint's channels (signed: positive supports :math:`c`);
* ``"attention"``: the SA-GC attention a joint receives, :math:`\sum_i \alpha^m_{t,i,j}`, averaged
  over the layers and heads (models that report it, see
  :meth:`~skelgraph.models.base.SkeletonModel.attention`); it does not depend on :math:`c`.

**Deletion curve.** Joints are ranked by importance summed over the real frames and deleted
(coordinates and confidence set to 0 in every frame, as a joint never detected) in that order;
the curve is the probability of class :math:`c` after deleting :math:`k = 0 \dots V` joints and
its area (the mean over :math:`k`) is lower when the ranking finds the joints the model needs.
A faithful method's area is below that of random rankings.

Captum is an optional dependency (``pip install skelgraph[explain]``), needed by the gradient
methods only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from skelgraph.augment import RandomTemporalCrop
from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, map_keypoints
from skelgraph.models.base import AttentionMaps, SkeletonModel
from skelgraph.preprocess import PreprocessConfig, preprocess

__all__ = [
    "METHODS",
    "clip_input",
    "deletion_area",
    "deletion_curve",
    "frame_graphs",
    "joint_importance",
    "joint_ranking",
    "mean_graph",
    "predicted_class",
    "random_rankings",
]

#: the importance methods of :func:`joint_importance`
METHODS = ("integrated_gradients", "gradient_x_input", "attention")


def clip_input(
    clip: SkeletonClip, layout: Layout, meta: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """A clip as a checkpoint's evaluation sample: mapped to the model's ``layout``,
    preprocessed with ``meta["preprocess"]`` and cropped and resampled to ``meta["window"]``
    frames with ``meta["inference"]["p_interval"]`` (as ``skelgraph test`` samples clips).

    Returns:
        (Tensor, Tensor): joints :math:`(1, V, T, C)` and frame mask :math:`(1, T)`.
    """
    keypoints = clip.keypoints
    if clip.layout != layout:
        keypoints = map_keypoints(keypoints, clip.layout, layout)
    config = PreprocessConfig(**meta.get("preprocess", {}))
    frames = torch.from_numpy(preprocess(keypoints, layout, config)).float()
    data = Data(x=frames.permute(1, 0, 2), frame_mask=torch.ones(1, len(frames), dtype=torch.bool))
    p_interval = meta.get("inference", {}).get("p_interval", (0.95,))
    data = RandomTemporalCrop(p_interval, int(meta["window"]))(data)
    return data.x.unsqueeze(0), data.frame_mask


def class_scores(
    model: SkeletonModel, x: Tensor, mask: Tensor | None, reduce: str | None = None
) -> Tensor:
    """Clip scores :math:`(B, K)` (:meth:`~skelgraph.models.base.ModelOutput.video_logits`)."""
    return model(x, mask).video_logits(reduce)


def predicted_class(
    model: SkeletonModel, x: Tensor, mask: Tensor | None = None, reduce: str | None = None
) -> Tensor:
    """The most probable class of every clip, :math:`(B,)`."""
    with torch.no_grad():
        return class_scores(model, x, mask, reduce).argmax(dim=-1)


def joint_importance(
    model: SkeletonModel,
    x: Tensor,
    mask: Tensor | None = None,
    *,
    target: Tensor | None = None,
    method: str = "integrated_gradients",
    reduce: str | None = None,
    steps: int = 32,
) -> Tensor:
    r"""Importance of every joint in every frame for class ``target`` (see the module
    description).

    Args:
        model (SkeletonModel): in evaluation mode.
        x (Tensor): joints :math:`(B, V, T, C)`.
        mask (Tensor, optional): frame mask :math:`(B, T)`; padded frames get importance 0.
        target (Tensor, optional): class per clip :math:`(B,)`. (default: the predicted one)
        method (str): one of :data:`METHODS`. (default: ``"integrated_gradients"``)
        reduce (str, optional): how per-step logits become clip scores
            (:meth:`~skelgraph.models.base.ModelOutput.video_logits`). (default: the model's)
        steps (int): integration steps of integrated gradients. (default: :obj:`32`)

    Returns:
        Tensor: :math:`(B, T, V)`.
    """
    if method not in METHODS:
        raise ValueError(f"joint_importance: method: expected one of {METHODS}, got {method!r}")
    if method == "attention":
        with torch.no_grad():
            importance = _attention_importance(model.attention(x, mask), x.size(2))
    else:
        if target is None:
            target = predicted_class(model, x, mask, reduce)
        importance = _gradient_importance(model, x, mask, target, method, reduce, steps)
    if mask is not None:
        importance = importance * mask.unsqueeze(-1)
    return importance.detach()


def _gradient_importance(
    model: SkeletonModel,
    x: Tensor,
    mask: Tensor | None,
    target: Tensor,
    method: str,
    reduce: str | None,
    steps: int,
) -> Tensor:
    try:
        from captum.attr import InputXGradient, IntegratedGradients
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"joint_importance: method {method!r} needs Captum: pip install 'skelgraph[explain]'"
        ) from e

    def forward(inputs: Tensor, frame_mask: Tensor | None) -> Tensor:
        return class_scores(model, inputs, frame_mask, reduce)

    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if method == "integrated_gradients":
            attributions = IntegratedGradients(forward).attribute(
                inputs,
                target=target,
                additional_forward_args=(mask,),
                n_steps=steps,
                internal_batch_size=x.size(0) * steps,
            )
        else:
            attributions = InputXGradient(forward).attribute(
                inputs, target=target, additional_forward_args=(mask,)
            )
    return attributions.sum(dim=-1).transpose(1, 2)  # [B, V, T, C] -> [B, T, V]


def _attention_importance(maps: AttentionMaps, frames: int) -> Tensor:
    """Attention received per joint :math:`(B, T, V)`, averaged over the layers and heads."""
    received = [
        attention.sum(dim=-2).mean(dim=2)  # [B, T, H, i, j] -> [B, T, V]
        for attention in maps.attention.values()
        if attention.size(1) == frames
    ]
    if not received:
        raise ValueError(
            "joint_importance: method 'attention': the model reports no per-frame self-attention "
            "(SA-GC); use a gradient method"
        )
    return torch.stack(received).mean(dim=0)


def joint_ranking(importance: Tensor) -> Tensor:
    """Joints from the most to the least important, :math:`(B, V)`, by importance
    :math:`(B, T, V)` summed over the frames."""
    return importance.sum(dim=1).argsort(dim=-1, descending=True)


def random_rankings(
    batch_size: int, num_joints: int, generator: torch.Generator | None = None
) -> Tensor:
    """Random orders of the joints, :math:`(B, V)`."""
    return torch.stack([torch.randperm(num_joints, generator=generator) for _ in range(batch_size)])


def deletion_curve(
    model: SkeletonModel,
    x: Tensor,
    mask: Tensor | None,
    ranking: Tensor,
    target: Tensor,
    *,
    reduce: str | None = None,
) -> Tensor:
    r"""The probability of class ``target`` after deleting the first :math:`k` joints of
    ``ranking`` (coordinates and confidence set to 0 in every frame), for :math:`k = 0 \dots V`.

    Args:
        model (SkeletonModel): in evaluation mode.
        x (Tensor): joints :math:`(B, V, T, C)`.
        mask (Tensor, optional): frame mask :math:`(B, T)`.
        ranking (Tensor): joint orders :math:`(B, V)` (:func:`joint_ranking`,
            :func:`random_rankings`).
        target (Tensor): class per clip :math:`(B,)`.
        reduce (str, optional): as in :func:`joint_importance`.

    Returns:
        Tensor: :math:`(B, V + 1)`.
    """
    B, V = ranking.shape
    # rank[b, v]: position of joint v in sample b's order; joint v is deleted when rank < k
    rank = torch.empty_like(ranking).scatter_(1, ranking, torch.arange(V).expand(B, V))
    keep = rank.unsqueeze(1) >= torch.arange(V + 1).view(1, -1, 1)  # [B, V + 1, V]
    variants = x.unsqueeze(1) * keep[..., None, None].to(x.dtype)  # [B, V + 1, V, T, C]
    variant_mask = None if mask is None else mask.repeat_interleave(V + 1, dim=0)
    with torch.no_grad():
        scores = class_scores(model, variants.flatten(0, 1), variant_mask, reduce)
    probabilities = scores.softmax(dim=-1).view(B, V + 1, -1)
    return probabilities.gather(2, target.view(B, 1, 1).expand(B, V + 1, 1)).squeeze(-1)


def deletion_area(curve: Tensor) -> Tensor:
    """The area under deletion curves :math:`(B, V + 1)` over :math:`k / V \\in [0, 1]`
    (trapezoids), :math:`(B,)`."""
    return torch.trapezoid(curve, dx=1.0 / (curve.size(-1) - 1), dim=-1)


def mean_graph(maps: AttentionMaps, mask: Tensor | None = None) -> Tensor:
    """Every clip's graph :math:`(B, V, V)`: the effective adjacency averaged over the layers,
    heads and real frames (``mask`` :math:`(B, T)`, for the layers with a graph per frame)."""
    graphs = []
    for graph in maps.graphs.values():
        if mask is not None and graph.size(1) == mask.size(1):
            weight = mask.to(graph.dtype).view(*mask.shape, 1, 1, 1)
            frames = (graph * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
        else:
            frames = graph.mean(dim=1)
        graphs.append(frames.mean(dim=1))
    return torch.stack(graphs).mean(dim=0)


def frame_graphs(maps: AttentionMaps, sample: int, frame: int) -> dict[str, Tensor]:
    """Every layer's graph :math:`(H, V, V)` at ``frame`` of clip ``sample`` (layers with one
    graph for all frames give it; layers whose frames are subsampled give the frame
    ``frame · T_l / T``)."""
    frames = max(graph.size(1) for graph in maps.graphs.values())
    return {
        name: graph[sample, frame * graph.size(1) // frames].detach()
        for name, graph in maps.graphs.items()
    }
