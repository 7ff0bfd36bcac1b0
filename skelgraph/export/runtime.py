r"""The onnxruntime backend: a model exported to ONNX once and run by an
:class:`onnxruntime.InferenceSession` behind the interface the online recogniser and the service
use (a frame plan's ``init_state`` / ``step`` / ``step_streams``, or the clip scores of a window).

The export takes seconds, so the ONNX model is kept in a cache folder (by default
``~/.cache/skelgraph/onnx``) under a key made of the weights, the configuration, the library
versions and skelgraph's own code: a later run with the same model loads it at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import skelgraph
from skelgraph.export.formats import graph_metadata, onnx_model, require
from skelgraph.export.graphs import export_graph
from skelgraph.models.base import SkeletonModel
from skelgraph.models.checkpoint import library_versions
from skelgraph.utils import PathLike, atomic_write, user_cache_dir

__all__ = [
    "BACKENDS",
    "OnnxRuntimeClip",
    "OnnxRuntimePlan",
    "OnnxStreamState",
    "inference_session",
    "onnx_file",
    "onnxruntime_backend",
]

#: What runs a model: torch (the model and its frame plan) or onnxruntime (its ONNX export).
BACKENDS = ("torch", "onnxruntime")
#: The default cache folder of the exported models.
DEFAULT_CACHE = "default"


def inference_session(model: bytes | PathLike) -> Any:
    """An :class:`onnxruntime.InferenceSession` of an ONNX model (its bytes or file) on the CPU,
    set up as a service runs many small steps: one intra-op and one inter-op thread (more only
    add synchronisation on a frame's small tensors), sequential execution, every graph
    optimisation, warnings off.

    Raises:
        ImportError: without onnxruntime, naming the extra to install.
    """
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_file(
    model: SkeletonModel,
    *,
    frame_step: bool = False,
    reduce: str | None = None,
    cache_dir: PathLike = DEFAULT_CACHE,
) -> Path:
    """The ONNX file of ``model``'s frame step (``frame_step``) or clip scores at ``reduce``
    (see :func:`~skelgraph.export.export_model`) in ``cache_dir`` (``"default"``:
    ``~/.cache/skelgraph/onnx``), exported there (atomically) when it is not there yet."""
    graph = export_graph(model, frame_step=frame_step, reduce=reduce)
    folder = user_cache_dir() / "onnx" if cache_dir == DEFAULT_CACHE else Path(cache_dir)
    path = folder / f"{_cache_key(model, graph.kind, reduce)}.onnx"
    if not path.is_file():
        data = onnx_model(graph, graph_metadata(graph)).SerializeToString()
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(data)
    return path


def onnxruntime_backend(
    model: SkeletonModel, *, streaming: bool = True, cache_dir: PathLike | None = DEFAULT_CACHE
) -> OnnxRuntimePlan | OnnxRuntimeClip:
    """``model`` on onnxruntime: with ``streaming``, an :class:`OnnxRuntimePlan` of its frame
    step in place of its frame plan; otherwise an :class:`OnnxRuntimeClip` of its scores at the
    last step, for the window an online recogniser recomputes (see
    :class:`~skelgraph.online.OnlineRecognizer`). Exported once into ``cache_dir``
    (:func:`onnx_file`), or without a cache for :obj:`None`.

    Raises:
        ImportError: without onnxruntime, onnx or onnxscript, naming the extra to install.
        ValueError: with ``streaming``, for a model that does not stream through a frame plan
            with fixed-size rings.
    """
    require("onnxruntime")
    reduce = None if streaming else "last"
    if cache_dir is None:
        graph = export_graph(model, frame_step=streaming, reduce=reduce)
        source: bytes | Path = onnx_model(graph, graph_metadata(graph)).SerializeToString()
    else:
        source = onnx_file(model, frame_step=streaming, reduce=reduce, cache_dir=cache_dir)
    session = inference_session(source)
    return OnnxRuntimePlan(model, session) if streaming else OnnxRuntimeClip(model, session)


@dataclass
class OnnxStreamState:
    r"""What :class:`OnnxRuntimePlan` carries from one frame of :math:`B` streams to the next.

    Attributes:
        batch_size (int): streams :math:`B`.
        caches (list[numpy.ndarray]): the rings of the frame step's inputs ``key_<i>``,
            ``value_<i>``, each :math:`(B, V, H, W, D)`.
        previous (numpy.ndarray, optional): the last frame :math:`(B, V, C)`, :obj:`None` before
            the first.
        frames (int): frames processed so far.
    """

    batch_size: int
    caches: list[np.ndarray] = field(repr=False)
    previous: np.ndarray | None = field(default=None, repr=False)
    frames: int = 0


class OnnxRuntimePlan:
    r"""A streaming model's frame step (:class:`~skelgraph.export.graphs.FrameStepGraph`) run
    by onnxruntime, with a frame plan's interface (:func:`~skelgraph.streaming.build_plan`):
    :meth:`init_state`, :meth:`step` and :meth:`step_streams` give the model's outputs (to float
    rounding) with :class:`OnnxStreamState` states; :meth:`step_streams` runs all streams, each
    at its own frame, in one call of the session.

    Args:
        model (SkeletonModel): the model the frame step was exported from.
        session (onnxruntime.InferenceSession): the session of its frame step.

    Attributes:
        model (SkeletonModel): the model (what :class:`~skelgraph.online.OnlineRecognizer`
            checks a plan against).
        session (onnxruntime.InferenceSession): the session.
    """

    def __init__(self, model: SkeletonModel, session: Any) -> None:
        self.model = model
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.cache_shapes = [tuple(i.shape[1:]) for i in session.get_inputs()[3:]]
        self.frame_shape = (model.layout.num_joints, int(model.in_channels))

    def init_state(self, batch_size: int = 1) -> OnnxStreamState:
        """The state before the first frame of ``batch_size`` streams: empty rings."""
        if batch_size < 1:
            raise ValueError(
                f"OnnxRuntimePlan.init_state: batch_size: expected >= 1, got {batch_size}"
            )
        caches = [np.zeros((batch_size, *shape), np.float32) for shape in self.cache_shapes]
        return OnnxStreamState(batch_size, caches)

    def step(self, x_t: Tensor, state: OnnxStreamState) -> tuple[Tensor, Tensor, OnnxStreamState]:
        r"""Advances the streams of ``state`` by one frame ``x_t`` :math:`(B, V, C)`.

        Returns:
            (Tensor, Tensor, OnnxStreamState): logits :math:`(B, K)`, forecast
            :math:`(B, N, V, C - 1)` (on the device of ``x_t``) and the state, updated in place.
        """
        frame = self._frames("OnnxRuntimePlan.step", x_t, state.batch_size)
        previous = frame if state.previous is None else state.previous
        position = np.full(state.batch_size, state.frames, np.int64)
        logits, forecast, caches = self._run(frame, previous, position, state.caches)
        state.caches, state.previous, state.frames = caches, frame, state.frames + 1
        return _tensor(logits, x_t), _tensor(forecast, x_t), state

    def step_streams(
        self, x_t: Tensor, states: Sequence[OnnxStreamState]
    ) -> tuple[Tensor, Tensor, list[OnnxStreamState]]:
        r"""Advances :math:`B` independent streams by one frame each, every stream at its own
        frame: ``states[b]`` is stream :math:`b`'s one-stream state (:meth:`init_state` ``(1)``),
        updated in place. Equal to :meth:`step` on each stream alone (to float rounding).

        Returns:
            (Tensor, Tensor, list[OnnxStreamState]): logits :math:`(B, K)`, forecasts
            :math:`(B, N, V, C - 1)` and the states.
        """
        frame = self._frames("OnnxRuntimePlan.step_streams", x_t, len(states))
        sizes = [state.batch_size for state in states]
        if any(size != 1 for size in sizes):
            raise ValueError(
                f"OnnxRuntimePlan.step_streams: states: expected one-stream states "
                f"(init_state(1)), got batch sizes {sizes}"
            )
        previous = np.concatenate(
            [frame[b : b + 1] if s.previous is None else s.previous for b, s in enumerate(states)]
        )
        position = np.array([state.frames for state in states], np.int64)
        caches = [np.concatenate(rings) for rings in zip(*(s.caches for s in states), strict=True)]
        logits, forecast, caches = self._run(frame, previous, position, caches)
        for b, state in enumerate(states):
            state.caches = [ring[b : b + 1] for ring in caches]
            state.previous = frame[b : b + 1]
            state.frames += 1
        return _tensor(logits, x_t), _tensor(forecast, x_t), list(states)

    def _frames(self, name: str, x_t: Tensor, batch_size: int) -> np.ndarray:
        """``x_t`` as a float32 array, after checking its shape :math:`(B, V, C)`."""
        shape = (batch_size, *self.frame_shape)
        if tuple(x_t.shape) != shape:
            raise ValueError(
                f"{name}: x_t: expected shape {list(shape)} (one frame per stream), "
                f"got {list(x_t.shape)}"
            )
        return np.ascontiguousarray(x_t.detach().cpu().numpy(), dtype=np.float32)

    def _run(
        self, frame: np.ndarray, previous: np.ndarray, position: np.ndarray, caches: list
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        inputs = (frame, previous, position, *caches)
        logits, forecast, *rings = self.session.run(
            None, dict(zip(self.input_names, inputs, strict=True))
        )
        return logits, forecast, rings


class OnnxRuntimeClip:
    r"""A model's clip scores (:class:`~skelgraph.export.graphs.ClipGraph`) run by onnxruntime:
    called on joints :math:`(B, V, T, C)` (every frame real), the scores :math:`(B, K)`.

    Args:
        model (SkeletonModel): the model the graph was exported from.
        session (onnxruntime.InferenceSession): the session of its clip graph.
    """

    def __init__(self, model: SkeletonModel, session: Any) -> None:
        self.model = model
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, joints: Tensor) -> Tensor:
        x = np.ascontiguousarray(joints.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: x})
        return _tensor(logits, joints)


def _tensor(array: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(array).to(like.device)


def _cache_key(model: SkeletonModel, kind: str, reduce: str | None) -> str:
    """A digest of everything the exported graph depends on: its kind and reduction, the
    model's class, configuration and weights, the library versions and skelgraph's code."""
    digest = hashlib.sha256()
    described = {
        "kind": kind,
        "reduce": reduce,
        "model": type(model).__qualname__,
        "config": model.config,
        "versions": library_versions(),
        "onnx": [require(name).__version__ for name in ("onnx", "onnxscript")],
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    for source in sorted(Path(skelgraph.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:32]
