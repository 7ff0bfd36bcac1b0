r"""Online action recognition: one frame of keypoints in, class probabilities and a forecast out.

:class:`OnlineRecognizer` wraps a trained model and its checkpoint ``meta``. Every
:meth:`~OnlineRecognizer.update` takes the keypoints of one frame ``(V_in, C)`` (confidence last,
in any layout that maps to the model's) and

1. maps them to the model's layout (:func:`~skelgraph.layouts.map_keypoints`);
2. preprocesses them causally (:class:`~skelgraph.preprocess.CausalPreprocessor` with the
   checkpoint's ``meta["preprocess"]`` settings, made causal): the frame equals frame :math:`t`
   of the offline causal preprocessing of the stream so far;
3. runs the model on it: a :class:`~skelgraph.models.base.StreamingModel` (InfoGCN++, or an
   ensemble of them) advances its caches by one frame through its frame plan
   (:func:`~skelgraph.streaming.build_plan`, made with the recogniser), so the logits equal the
   offline model's per-step logits on the same clip; any other model is run on the last
   ``meta["window"]`` preprocessed frames each time (the generic fallback). With
   ``backend="onnxruntime"`` the frame step (or, in the fallback, the clip scores) is exported to
   ONNX once and run by onnxruntime instead
   (:func:`~skelgraph.export.runtime.onnxruntime_backend`), to the same outputs;
4. returns a :class:`Prediction`: the softmax of the logits, the label (optionally smoothed over
   time) and the model's forecast of the next :math:`N` poses, de-normalised back to the input
   coordinates (pixels for video) and mapped back to the input layout.

Input joints the model's layout lacks (e.g. the eyes and ears of ``coco17`` for a ``penn13``
model) get no forecast of their own: their forecast is that of the nearest joint the model does
forecast (fewest bones apart in the input layout, the lower index on ties; the nose for the eyes
and ears), so the forecast skeleton stays complete and finite (a joint with no forecast joint
connected to it at all would get NaN). :attr:`OnlineRecognizer.forecast_joints` marks the joints
forecast directly.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from skelgraph.clip import MAX_COORDINATE, check_coordinates
from skelgraph.explain.plots import top_edges
from skelgraph.layouts import Layout, check_mappable, get_layout, keypoint_mapping, map_keypoints
from skelgraph.layouts.graph import hop_distance
from skelgraph.models.base import SkeletonModel, StreamingModel, step_streams
from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint
from skelgraph.preprocess import CausalPreprocessor, PreprocessConfig
from skelgraph.streaming import build_plan

if TYPE_CHECKING:
    from skelgraph.export.runtime import OnnxRuntimeClip

__all__ = ["OnlineRecognizer", "Prediction"]


@dataclass
class Prediction:
    """The recogniser's output for one frame.

    Attributes:
        frame (int): 0-based index of the frame since the start or the last reset.
        probabilities (numpy.ndarray): :obj:`(K,)` float32 softmax of the model's logits for this
            frame (never smoothed).
        label (str): the most probable class, after smoothing when it is enabled.
        score (float): the probability of :attr:`label` (the smoothed one when smoothing).
        forecast (numpy.ndarray, optional): :obj:`(N, V_in, C - 1)` the joints of the next
            :math:`N` frames in the input layout and input coordinates, or :obj:`None` when the
            model does not forecast.
        classes (Sequence[str]): the class names in :attr:`probabilities` order.
    """

    frame: int
    probabilities: np.ndarray
    label: str
    score: float
    forecast: np.ndarray | None
    classes: Sequence[str] = field(default=(), repr=False)

    def to_dict(self, classes: bool = False) -> dict[str, Any]:
        """A JSON-able dict: ``frame``, ``label``, ``score``, ``probabilities`` (list),
        ``forecast`` (nested lists or :obj:`None`) and, with ``classes=True``, ``classes``
        (the class names in ``probabilities`` order)."""
        out: dict[str, Any] = {
            "frame": int(self.frame),
            "label": self.label,
            "score": float(self.score),
            "probabilities": self.probabilities.tolist(),
            "forecast": None if self.forecast is None else self.forecast.tolist(),
        }
        if classes:
            out["classes"] = list(self.classes)
        return out


class OnlineRecognizer:
    r"""Frame-by-frame action recognition with a trained model (see the module description).

    Args:
        model (SkeletonModel): the trained model (put in eval mode and moved to ``device``).
        meta (Mapping): its checkpoint ``meta``: ``classes``, ``in_channels``, ``window`` and
            ``preprocess`` are used (the latter made causal).
        input_layout (str or Layout, optional): the layout of the keypoints given to
            :meth:`update`, mappable to the model's (:func:`~skelgraph.layouts.check_mappable`).
            (default: the model's layout)
        smoothing (float, optional): factor :math:`\alpha \in [0, 1)` of the exponential moving
            average :math:`\bar{p}_t = \alpha \bar{p}_{t-1} + (1 - \alpha) p_t` of the
            probabilities that chooses the displayed label and score; 0 disables it.
            (default: :obj:`0.0`)
        device (str or torch.device, optional): where the model runs. (default: ``"cpu"``)
        streaming (bool, optional): run the model frame by frame with its caches (:obj:`True`,
            needs a :class:`~skelgraph.models.base.StreamingModel`) or recompute the last
            ``window`` frames every time (:obj:`False`, e.g. to compare the two).
            (default: :obj:`None`: the caches when the model has them)
        plan (StreamingModel or OnnxRuntimeClip, optional): what runs the model: when
            streaming its frame plan, :func:`~skelgraph.streaming.build_plan` of ``model`` on
            ``device`` or its :class:`~skelgraph.export.runtime.OnnxRuntimePlan`: recognisers
            that share one are advanced together by :meth:`update_many`; when not, an
            :class:`~skelgraph.export.runtime.OnnxRuntimeClip` of it, or :obj:`None` for the
            model itself. (default: :obj:`None`: made from ``model`` for ``backend``)
        backend (str, optional): ``"torch"`` or ``"onnxruntime"``
            (:func:`~skelgraph.export.runtime.onnxruntime_backend`: exported once, on the CPU,
            needs ``skelgraph[onnx]``), what makes the ``plan`` when none is given.
            (default: ``"torch"``)

    A frame is a few hundred operations on small tensors: they run fastest with one intra-op
    thread (``torch.set_num_threads(1)`` or ``OMP_NUM_THREADS=1`` in the serving process; more
    threads only add synchronisation, which costs whole scheduler slices on busy cores).

    Attributes:
        classes (list[str]): the class names.
        layout (Layout): the model's layout.
        input_layout (Layout): the layout :meth:`update` receives.
        window (int): frames the generic fallback recomputes (``meta["window"]``).
        streaming (bool): whether the model runs frame by frame with its caches.
        plan (StreamingModel or OnnxRuntimeClip or None): what steps the model's frames when
            streaming (else what computes the window's scores, :obj:`None` for the model
            itself), made from the model's weights as they were then: after the weights change
            or the model moves, assign ``build_plan(recognizer.model)``.
        forecast_joints (numpy.ndarray): :obj:`(V_in,)` bool, the input joints the model
            forecasts itself (the others copy their nearest such joint).
        preprocessor (CausalPreprocessor): the causal preprocessing of the stream.
    """

    def __init__(
        self,
        model: SkeletonModel,
        meta: Mapping[str, Any],
        *,
        input_layout: str | Layout | None = None,
        smoothing: float = 0.0,
        device: str | torch.device = "cpu",
        streaming: bool | None = None,
        plan: StreamingModel | OnnxRuntimeClip | None = None,
        backend: str = "torch",
    ) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(
                f"OnlineRecognizer: smoothing: expected a value in [0, 1), got {smoothing}"
            )
        missing = [k for k in ("classes", "in_channels", "window") if k not in meta]
        if missing:
            raise ValueError(f"OnlineRecognizer: meta lacks {missing}")
        num_classes = getattr(model, "num_classes", len(meta["classes"]))
        if num_classes != len(meta["classes"]):
            raise ValueError(
                f"OnlineRecognizer: meta['classes']: expected {num_classes} names for the "
                f"model's classes, got {len(meta['classes'])}"
            )
        if int(meta["window"]) < 1:
            raise ValueError(
                f"OnlineRecognizer: meta['window']: expected >= 1 frames, got {meta['window']}"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = dict(meta)
        self.classes = [str(c) for c in meta["classes"]]
        self.layout = model.layout
        self.input_layout = self.layout if input_layout is None else get_layout(input_layout)
        self.in_channels = int(meta["in_channels"])
        self.window = int(meta["window"])
        self.smoothing = float(smoothing)
        can_stream = isinstance(model, StreamingModel)
        if streaming and not can_stream:
            raise ValueError(
                f"OnlineRecognizer: streaming: {type(model).__name__} has no init_state/step; "
                f"pass streaming=None or False"
            )
        self.streaming = can_stream if streaming is None else bool(streaming)
        if plan is not None and plan is not model and getattr(plan, "model", None) is not model:
            raise ValueError("OnlineRecognizer: plan: expected a plan of the model (build_plan)")
        if not self.streaming and isinstance(plan, StreamingModel):
            plan = None  # a frame plan, unused without streaming
        if backend != "torch":  # (the export machinery is imported only when used)
            from skelgraph.export.runtime import BACKENDS, onnxruntime_backend

            if backend not in BACKENDS:
                raise ValueError(
                    f"OnlineRecognizer: backend: expected one of {BACKENDS}, got {backend!r}"
                )
            if plan is None:
                plan = onnxruntime_backend(self.model, streaming=self.streaming)
        elif plan is None and self.streaming:
            plan = build_plan(self.model)
        self.plan = plan
        config = PreprocessConfig(**meta.get("preprocess", {}))
        self.preprocessor = CausalPreprocessor(self.layout, replace(config, causal=True))
        self._same_layout = self.input_layout.joints == self.layout.joints
        if not self._same_layout:
            try:
                check_mappable(self.input_layout, self.layout, target="the model's layout")
            except ValueError as e:
                raise ValueError(f"OnlineRecognizer: input_layout: {e}") from None
        self._forecast_map, self.forecast_joints = _forecast_mapping(self.layout, self.input_layout)
        self._forecast_identity = bool(
            np.array_equal(self._forecast_map, np.eye(self.layout.num_joints))
        )
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike[str],
        *,
        input_layout: str | Layout | None = None,
        smoothing: float = 0.0,
        device: str | torch.device = "cpu",
        backend: str = "torch",
    ) -> OnlineRecognizer:
        """A recogniser for a checkpoint file or a pretrained model name.

        Args:
            source (str or os.PathLike): a checkpoint written by
                :func:`~skelgraph.models.checkpoint.save_checkpoint`, or a name of
                :func:`skelgraph.models.pretrained.available_pretrained`.
            input_layout, smoothing, device, backend: as for the constructor.

        Raises:
            FileNotFoundError: when ``source`` is neither a file nor a pretrained name.
        """
        model, meta = load_checkpoint(resolve_checkpoint(source), map_location=device)
        return cls(
            model,
            meta,
            input_layout=input_layout,
            smoothing=smoothing,
            device=device,
            backend=backend,
        )

    def reset(self) -> None:
        """Starts a new stream: forgets every frame, cache and the smoothed probabilities."""
        self.preprocessor.reset()
        self._frames: deque[Tensor] = deque(maxlen=self.window)
        self._recent: list[Tensor] = []  # the last two frames, for attention_edges
        self._state = None
        if self.streaming:
            with torch.inference_mode():
                self._state = self.plan.init_state(1)
        self._smoothed: np.ndarray | None = None
        self._frame = 0

    def update(self, keypoints: np.ndarray) -> Prediction:
        """Recognises the next frame.

        Args:
            keypoints (numpy.ndarray): :obj:`(V_in, C)` the frame's joints in the input layout,
                coordinates then the confidence (``NaN`` coordinates with confidence 0 for joints
                not detected).

        Returns:
            Prediction: the probabilities, label and forecast for this frame.
        """
        kp = self._checked(keypoints)
        x_t = self._preprocessed(kp)
        with torch.inference_mode():
            logits, forecast = self._run(x_t)
        return self._prediction(logits, forecast)

    @staticmethod
    def update_many(
        recognizers: Sequence[OnlineRecognizer], keypoints: Sequence[np.ndarray]
    ) -> list[Prediction]:
        r""":meth:`update` of every recogniser on its own next frame, e.g. for the streams of a
        service. Streaming recognisers that share a plan are advanced together in one batched
        step (the plan's ``step_streams`` when it has one, see
        :meth:`~skelgraph.streaming.FramePlan.step_streams`), which costs little more than one
        stream; the predictions equal :meth:`update`'s one recogniser at a time.

        Args:
            recognizers (sequence of OnlineRecognizer): distinct recognisers.
            keypoints (sequence of numpy.ndarray): each one's frame :obj:`(V_in, C)`.

        Raises:
            ValueError: when a frame has the wrong shape (before any recogniser changes) or a
                recogniser appears twice.
        """
        if len(recognizers) != len(keypoints):
            raise ValueError(
                f"OnlineRecognizer.update_many: expected one frame per recogniser, got "
                f"{len(keypoints)} frames for {len(recognizers)} recognisers"
            )
        if len({id(r) for r in recognizers}) != len(recognizers):
            raise ValueError("OnlineRecognizer.update_many: a recogniser appears twice")
        frames = [r._checked(kp) for r, kp in zip(recognizers, keypoints, strict=True)]
        inputs = [r._preprocessed(kp) for r, kp in zip(recognizers, frames, strict=True)]
        outputs: list[Any] = [None] * len(recognizers)
        groups: dict[int, list[int]] = {}
        with torch.inference_mode():
            for i, r in enumerate(recognizers):
                if r.streaming:
                    r._remember(inputs[i])
                    groups.setdefault(id(r.plan), []).append(i)
                else:
                    outputs[i] = r._run(inputs[i])
            for members in groups.values():
                group = [recognizers[i] for i in members]
                logits, forecast, states = step_streams(
                    group[0].plan,
                    torch.stack([inputs[i] for i in members]),
                    [r._state for r in group],
                )
                for j, (i, r) in enumerate(zip(members, group, strict=True)):
                    r._state = states[j]
                    outputs[i] = (logits[j], None if forecast is None else forecast[j])
        return [r._prediction(*out) for r, out in zip(recognizers, outputs, strict=True)]

    def run(self, keypoints: np.ndarray) -> list[Prediction]:
        """:meth:`update` for every frame of ``keypoints`` :obj:`(T, V_in, C)`, in order."""
        kp = np.asarray(keypoints, dtype=np.float32)
        expected = (self.input_layout.num_joints, self.in_channels)
        if kp.ndim != 3 or kp.shape[1:] != expected:
            raise ValueError(
                f"OnlineRecognizer.run: keypoints: expected shape (T, {expected[0]}, "
                f"{expected[1]}) for layout {self.input_layout.name!r}, got {kp.shape}"
            )
        return [self.update(frame) for frame in kp]

    def attention_edges(self, top_k: int) -> list[list[float]]:
        r"""The ``top_k`` strongest edges of the graph the model applied to the last frame, as
        ``[x_j, y_j, x_i, y_i, weight]`` in input coordinates (message ``j → i``; self-loops
        and the weaker direction of a pair left out).

        The graph is the mean over heads (and ensemble members) of the first spatial layers'
        effective adjacency (``"encoder.0.spatial"`` of InfoGCN++, which depends on the last
        two frames only, so it is recomputed from them exactly and cheaply, apart from the
        frame plan), or for other models the mean of every layer's graph at the last frame of
        the window. Costs nothing unless called; empty for a model without graphs (PoseC3D).
        """
        frames = list(self._frames) if not self.streaming else self._recent
        if not frames:
            return []
        with torch.inference_mode():
            try:
                maps = self.model.attention(torch.stack(frames, dim=1).unsqueeze(0))
            except NotImplementedError:  # the model reports no attention
                return []
        first = [g for name, g in maps.graphs.items() if name.endswith("encoder.0.spatial")]
        graphs = first or list(maps.graphs.values())
        graph = torch.stack([g[0, -1].mean(dim=0) for g in graphs]).mean(dim=0).float().numpy()
        coords = frames[-1][:, :2].float().cpu().numpy().astype(np.float64)
        coords = coords * self.preprocessor.scale + self.preprocessor.origin[:2]
        return [
            [*np.round(coords[j], 2).tolist(), *np.round(coords[i], 2).tolist(), round(w, 4)]
            for j, i, w in top_edges(graph, top_k)
        ]

    def _run(self, x_t: Tensor) -> tuple[Tensor, Tensor | None]:
        """The model on the new preprocessed frame ``(V, C)``: logits ``(K,)`` and the forecast
        ``(N, V, C - 1)`` (normalised, model layout) or :obj:`None`."""
        if self.streaming:
            self._remember(x_t)
            logits, forecast, self._state = self.plan.step(x_t.unsqueeze(0), self._state)
            return logits[0], None if forecast is None else forecast[0]
        self._frames.append(x_t)
        window = torch.stack(tuple(self._frames), dim=1).unsqueeze(0)
        if self.plan is not None:  # the scores at the last step, without a forecast
            return self.plan(window)[0], None
        out = self.model(window)
        forecast = None if out.forecast is None else out.forecast[0, -1]
        return out.logits[0, -1], forecast

    def _remember(self, x_t: Tensor) -> None:
        """Keeps the streamed frame ``(V, C)`` with the one before it, for
        :meth:`attention_edges`."""
        self._recent = [*self._recent[-1:], x_t]

    def _checked(self, keypoints: np.ndarray) -> np.ndarray:
        """The frame as float32 :obj:`(V_in, C)`; raises :class:`ValueError` naming the
        expected shape, or the joint whose coordinates are beyond
        :data:`~skelgraph.clip.MAX_COORDINATE` (they would make every output NaN)."""
        kp = np.asarray(keypoints, dtype=np.float32)
        expected = (self.input_layout.num_joints, self.in_channels)
        if kp.shape != expected:
            raise ValueError(
                f"OnlineRecognizer.update: keypoints: expected shape {expected} (joints of "
                f"layout {self.input_layout.name!r}, then coordinates and confidence), "
                f"got {kp.shape}"
            )
        extreme = check_coordinates(kp)
        if extreme is not None:
            (v,) = extreme
            raise ValueError(
                f"OnlineRecognizer.update: keypoints[{v}] ({self.input_layout.joints[v]}): "
                f"expected coordinates within ±{MAX_COORDINATE:g}, got {kp[v, :-1].tolist()}"
            )
        return kp

    def _preprocessed(self, kp: np.ndarray) -> Tensor:
        """The checked frame in the model's layout, preprocessed: :obj:`(V, C)` on the device
        (advances the preprocessing)."""
        if not self._same_layout:
            kp = map_keypoints(kp[None], self.input_layout, self.layout)[0]
        return torch.from_numpy(self.preprocessor.update(kp)).to(self.device)

    def _prediction(self, logits: Tensor, forecast: Tensor | None) -> Prediction:
        """The prediction of the model's logits :obj:`(K,)` and forecast :obj:`(N, V, C - 1)`
        (normalised, model layout) for the current frame; advances the frame count."""
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if forecast is not None:
            forecast = forecast.float().cpu().numpy()
        shown = probabilities
        if self.smoothing > 0.0:
            if self._smoothed is not None:
                shown = self.smoothing * self._smoothed + (1.0 - self.smoothing) * probabilities
            self._smoothed = shown
        best = int(np.argmax(shown))
        if forecast is not None:
            # back to input coordinates, then to the input layout: (N, V, D) -> (N, V_in, D)
            origin, scale = self.preprocessor.origin, self.preprocessor.scale
            coords = forecast.astype(np.float64) * scale + origin
            if not self._forecast_identity:
                coords = np.einsum("uv,nvd->nud", self._forecast_map, coords)
            forecast = coords.astype(np.float32)
        prediction = Prediction(
            frame=self._frame,
            probabilities=probabilities,
            label=self.classes[best],
            score=float(shown[best]),
            forecast=forecast,
            classes=self.classes,
        )
        self._frame += 1
        return prediction

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, "
            f"layout={self.layout.name!r}, input_layout={self.input_layout.name!r}, "
            f"classes={len(self.classes)}, streaming={self.streaming}, "
            f"smoothing={self.smoothing})"
        )


def _forecast_mapping(model: Layout, target: Layout) -> tuple[np.ndarray, np.ndarray]:
    """``M (V_in, V)`` taking model-layout joints to the input layout (means of synonyms and
    derivations as :func:`~skelgraph.layouts.map_keypoints`; a joint without a source copies the
    nearest joint with one), and the ``(V_in,)`` mask of joints with a source."""
    M = np.zeros((target.num_joints, model.num_joints))
    for u, sources in enumerate(keypoint_mapping(model, target)):
        for v, weight in sources.items():
            M[u, v] = weight
    mapped = M.any(axis=1)
    if mapped.any() and not mapped.all():
        hops = hop_distance(target).numpy().astype(np.float64)
        hops[hops < 0] = np.inf
        hops[:, ~mapped] = np.inf
        for u in np.flatnonzero(~mapped):
            nearest = int(np.argmin(hops[u]))  # the lowest index among the nearest
            if np.isfinite(hops[u, nearest]):
                M[u] = M[nearest]
            else:
                M[u] = np.nan  # no mapped joint in this joint's part of the skeleton
    return M, mapped
