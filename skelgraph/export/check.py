r"""An exported graph against the eager model: the same inputs through both, the largest
differences of their outputs."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from skelgraph.clip import SkeletonClip
from skelgraph.data.bundled import example_clips, example_datasets
from skelgraph.export.formats import file_format, read_metadata
from skelgraph.export.runtime import inference_session
from skelgraph.layouts import MappingWarning, check_mappable, map_keypoints
from skelgraph.models.base import SkeletonModel
from skelgraph.preprocess import PreprocessConfig, preprocess, resample
from skelgraph.utils import PathLike

__all__ = ["ExportCheck", "check_export", "example_inputs"]

#: Largest absolute difference from the eager model accepted in float32.
TOLERANCE = 1e-4


@dataclass
class ExportCheck:
    """The outputs of an exported graph compared with the eager model's.

    Attributes:
        kind (str): ``"clip"`` or ``"frame_step"``.
        runtime (str): what ran the file: ``"onnxruntime"`` or ``"torch.export"``.
        inputs (str): what the inputs were.
        differences (dict[str, float]): the largest absolute difference of every output.
        tolerance (float): the largest difference accepted.
    """

    kind: str
    runtime: str
    inputs: str
    differences: dict[str, float]
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        """Whether every difference is within :attr:`tolerance`."""
        return all(d <= self.tolerance for d in self.differences.values())


def check_export(
    path: PathLike,
    model: SkeletonModel,
    *,
    meta: Mapping[str, Any] | None = None,
    frames: int = 200,
    tolerance: float = TOLERANCE,
) -> ExportCheck:
    r"""Runs the graph exported to ``path`` (ONNX in onnxruntime, an exported program with
    :func:`torch.export.load`) and the eager ``model`` on the same inputs
    (:func:`example_inputs`) and measures the largest differences of their outputs.

    A clip graph takes the example clips resampled to the checkpoint's window and to twice that
    (``logits`` against :meth:`~skelgraph.models.base.SkeletonModel.clip_logits` at the
    graph's reduction); a frame step steps two streams through ``frames`` frames, its rings fed
    back (``logits`` and ``forecast`` against the model's own ``step``, beyond the attention
    window when ``frames`` exceeds it).

    Args:
        path (str or os.PathLike): the exported file.
        model (SkeletonModel): the model it was exported from.
        meta (Mapping, optional): the checkpoint's meta (preprocessing, window) for the inputs.
        frames (int, optional): frames streamed through a frame step. (default: :obj:`200`)
        tolerance (float, optional): the largest difference accepted. (default: :obj:`1e-4`)
    """
    metadata = read_metadata(path)
    model.eval()
    run, runtime = _runner(path)
    clips, inputs = example_inputs(model, meta)
    if metadata["kind"] == "clip":
        window = int((meta or {}).get("window", 32))
        differences = _clip_differences(run, model, clips, (window, 2 * window), metadata)
        inputs = f"{len(clips)} {inputs}, resampled to {window} and {2 * window} frames"
    else:
        differences = _stream_differences(run, model, clips, frames, metadata)
        inputs = f"2 streams of {frames} frames from {len(clips)} {inputs}"
    return ExportCheck(metadata["kind"], runtime, inputs, differences, tolerance)


def example_inputs(
    model: SkeletonModel, meta: Mapping[str, Any] | None = None, *, seed: int = 0
) -> tuple[list[np.ndarray], str]:
    """Clips :obj:`(T, V, C)` for checking ``model``, preprocessed as the checkpoint ``meta``
    says (the defaults without one), and what they are: the shipped example clips of the first
    dataset whose layout maps to the model's (:func:`~skelgraph.data.example_clips`), else
    synthetic joints (random walks, deterministic for ``seed``)."""
    layout, channels = model.layout, int(model.in_channels)
    config = PreprocessConfig(**(meta or {}).get("preprocess", {}))
    for dataset in example_datasets():
        clips = [SkeletonClip.load(path) for path in example_clips(dataset)]
        source = clips[0].layout
        if clips[0].num_channels != channels:
            continue
        try:
            check_mappable(source, layout)
        except ValueError:
            continue
        with warnings.catch_warnings():  # the joints a mapping lacks: said in the description
            warnings.simplefilter("ignore", MappingWarning)
            mapped = [map_keypoints(clip.keypoints, source, layout) for clip in clips]
        mapping = "" if source == layout else f" mapped to {layout.name}"
        described = f"example clips of {dataset} ({source.name} joints{mapping})"
        return [preprocess(kp, layout, config) for kp in mapped], described
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(4):
        kp = np.empty((120, layout.num_joints, channels), np.float32)
        kp[..., :-1] = rng.normal(0.0, 1.0, (1, layout.num_joints, channels - 1))
        kp[..., :-1] += rng.normal(0.0, 0.05, kp[..., :-1].shape).cumsum(axis=0)
        kp[..., -1] = rng.uniform(0.3, 1.0, kp.shape[:2])
        clips.append(preprocess(kp, layout, config))
    return clips, f"synthetic clips (no example clips map to layout {layout.name!r})"


def _runner(path: PathLike) -> tuple[Callable[[Sequence[Tensor]], list[Tensor]], str]:
    """A function of the graph's flat inputs to its outputs, and the runtime's name."""
    if file_format(path) == "onnx":
        session = inference_session(path)
        names = [i.name for i in session.get_inputs()]

        def run_session(inputs: Sequence[Tensor]) -> list[Tensor]:
            feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
            return [torch.from_numpy(out) for out in session.run(None, feeds)]

        return run_session, "onnxruntime"
    module = torch.export.load(path).module()

    def run_module(inputs: Sequence[Tensor]) -> list[Tensor]:
        with torch.no_grad():
            out = module(*inputs)
        return [out] if isinstance(out, Tensor) else list(out)

    return run_module, "torch.export"


def _clip_differences(
    run: Callable[[Sequence[Tensor]], list[Tensor]],
    model: SkeletonModel,
    clips: Sequence[np.ndarray],
    lengths: Sequence[int],
    metadata: Mapping[str, Any],
) -> dict[str, float]:
    """The largest difference of the clip scores, every clip resampled to every length."""
    largest = 0.0
    for length in lengths:
        x = torch.from_numpy(np.stack([resample(kp, length) for kp in clips]))
        x = x.transpose(1, 2).contiguous()  # (N, V, T, C)
        with torch.no_grad():
            expected = model.clip_logits(x, None, metadata["reduce"])
        (logits,) = run([x])
        largest = max(largest, _largest(logits, expected))
    return {"logits": largest}


def _stream_differences(
    run: Callable[[Sequence[Tensor]], list[Tensor]],
    model: SkeletonModel,
    clips: Sequence[np.ndarray],
    frames: int,
    metadata: Mapping[str, Any],
) -> dict[str, float]:
    """The largest differences of the logits and forecasts of two streams stepped together (the
    clips one after the other, and in reverse order)."""
    streams = torch.from_numpy(
        np.stack([_stream(clips, frames), _stream(clips[::-1], frames)])
    )  # (2, T, V, C)
    shapes = list(metadata["inputs"].values())[3:]
    caches = [torch.zeros(2, *shape[1:]) for shape in shapes]
    state = model.init_state(2)
    largest = {"logits": 0.0, "forecast": 0.0}
    for t in range(frames):
        x_t = streams[:, t]
        with torch.no_grad():
            expected = model.step(x_t, state)[:2]
        previous = streams[:, max(t - 1, 0)]
        logits, forecast, *caches = run([x_t, previous, torch.full((2,), t), *caches])
        for name, got, want in zip(largest, (logits, forecast), expected, strict=True):
            largest[name] = max(largest[name], _largest(got, want))
    return largest


def _stream(clips: Sequence[np.ndarray], frames: int) -> np.ndarray:
    """The clips one after the other (again from the first when they end) for ``frames``."""
    joined = np.concatenate(list(clips))
    repeats = -(-frames // len(joined))
    return np.concatenate([joined] * repeats)[:frames]


def _largest(got: Tensor, expected: Tensor) -> float:
    return float((got.float() - expected.float()).abs().max())
