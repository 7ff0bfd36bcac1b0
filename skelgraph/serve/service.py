r"""What the web service does, without the web framework: the shared model, one recogniser per
stream, uploaded clips and videos to predictions.

The model is loaded once (:func:`load_model`) and its frame plan built once
(:func:`~skelgraph.streaming.build_plan`, or with the onnxruntime backend its frame step exported
to ONNX, :func:`~skelgraph.export.runtime.onnxruntime_backend`); every stream gets its own
:class:`~skelgraph.online.OnlineRecognizer` sharing them (:meth:`Recognition.stream`), so streams
never see each other's state and are batched together. Replies are plain JSON-able dicts.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skelgraph.export.runtime import BACKENDS, onnxruntime_backend
from skelgraph.layouts import Layout, get_layout
from skelgraph.models.base import StreamingModel, step_streams
from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint
from skelgraph.online import OnlineRecognizer, Prediction
from skelgraph.pose.tracking import PersonFollower
from skelgraph.serve.inputs import (
    SKELETON_SUFFIXES,
    InputError,
    load_skeleton_upload,
    upload_suffix,
)
from skelgraph.serve.pose import PoseService
from skelgraph.streaming import build_plan

__all__ = ["Recognition", "StreamSession", "load_model"]


def load_model(checkpoint: str | os.PathLike[str], device: str = "cpu") -> tuple[nn.Module, dict]:
    """A model and its checkpoint meta from a checkpoint file or a pretrained model's name.

    Raises:
        FileNotFoundError: When :obj:`checkpoint` is neither a file nor a pretrained name.
    """
    return load_checkpoint(resolve_checkpoint(checkpoint), map_location=device)


class Recognition:
    r"""The model shared by every stream and upload of one service.

    Args:
        model (torch.nn.Module): A skelgraph model in eval mode.
        meta (Mapping): Its checkpoint meta (classes, layout, window, preprocess, ...).
        name (str): The name the model is served under.
        pose (PoseService): The pose model for frames and videos.
        input_layout (str or Layout, optional): Layout of streamed keypoints unless a stream
            names another. (default: :obj:`"coco17"`)
        device (str, optional): Inference device. (default: :obj:`"cpu"`)
        smoothing (float, optional): Probability smoothing of the recognisers.
            (default: :obj:`0.0`)
        max_frames (int, optional): Most frames of an uploaded clip or video.
            (default: :obj:`3600`)
        backend (str, optional): What runs the model: ``"torch"`` or ``"onnxruntime"`` (see
            :class:`~skelgraph.online.OnlineRecognizer`). (default: :obj:`"torch"`)

    Attributes:
        streaming (bool): Whether the model runs frame by frame with its caches.
        plan (StreamingModel or OnnxRuntimeClip or None): What runs the model for every
            recogniser (:class:`~skelgraph.online.OnlineRecognizer`'s ``plan``): its frame plan
            (or onnxruntime frame step) when it streams; otherwise :obj:`None`, or its
            onnxruntime clip scores.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: Mapping[str, Any],
        name: str,
        pose: PoseService,
        *,
        input_layout: str | Layout = "coco17",
        device: str = "cpu",
        smoothing: float = 0.0,
        max_frames: int = 3600,
        backend: str = "torch",
    ) -> None:
        self.model = model
        self.meta = dict(meta)
        self.name = name
        self.pose = pose
        self.input_layout = get_layout(input_layout)
        self.device = device
        self.smoothing = float(smoothing)
        self.max_frames = int(max_frames)
        self.classes = [str(c) for c in meta["classes"]]
        self.layout = Layout.from_dict(meta["layout"])
        self.channels = int(meta["in_channels"])
        self.backend = backend
        self.streaming = isinstance(model, StreamingModel)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "onnxruntime":
            self.plan = onnxruntime_backend(model, streaming=self.streaming)
        else:
            self.plan = build_plan(model) if self.streaming else None

    def recognizer(self, input_layout: str | Layout | None = None) -> OnlineRecognizer:
        """A fresh :class:`~skelgraph.online.OnlineRecognizer` on the shared model and plan."""
        return OnlineRecognizer(
            self.model,
            self.meta,
            input_layout=self.input_layout if input_layout is None else input_layout,
            smoothing=self.smoothing,
            device=self.device,
            plan=self.plan,
            backend=self.backend,
        )

    def warm_up(self, streams: int) -> float:
        """Runs the model once for every number of streams from 1 to ``streams`` (all of them,
        then all but one), so that the first busy moments of a service cost what later ones do
        (a batched step of InfoGCN++ prepares itself once per number of streams, see
        :meth:`~skelgraph.streaming.FramePlan.step_streams`). Models that do not stream need
        none.

        Returns:
            float: The seconds it took.
        """
        start = time.perf_counter()
        if self.streaming:
            frame = torch.zeros(self.layout.num_joints, self.channels, device=self.device)
            with torch.inference_mode():
                for count in range(1, streams + 1):
                    states = [self.plan.init_state(1) for _ in range(count)]
                    states = step_streams(self.plan, frame.expand(count, -1, -1), states)[2]
                    if count > 1:  # all but one of them, as when one stream is late
                        step_streams(self.plan, frame.expand(count - 1, -1, -1), states[1:])
        return time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        """The served model: name, architecture, classes, layouts, window, channels, forecast."""
        args = self.meta.get("model_args", {})
        return {
            "name": self.name,
            "model": self.meta.get("model"),
            "classes": self.classes,
            "layout": self.layout.name,
            "joints": list(self.layout.joints),
            "input_layout": self.input_layout.name,
            "in_channels": self.channels,
            "window": self.meta.get("window"),
            "num_future": args.get("num_future") if self.meta.get("model") == "infogcn2" else None,
        }

    def stream(self, input_layout: Layout | None = None) -> StreamSession:
        """A new stream with its own recogniser."""
        return StreamSession(self, input_layout or self.input_layout)

    def replies(
        self, frames: Sequence[tuple[StreamSession, np.ndarray]]
    ) -> list[dict[str, Any] | ValueError]:
        r"""The replies to one frame of keypoints :obj:`(V_in, C)` for each of several streams
        (distinct sessions), computed together
        (:meth:`~skelgraph.online.OnlineRecognizer.update_many`: one batched model step for
        all of them). A frame the recogniser refuses (wrong shape) gets its
        :class:`ValueError` in its place, and the other frames their replies."""
        start = time.perf_counter()
        sessions = [session for session, _ in frames]
        keypoints = [kp for _, kp in frames]
        try:
            predictions: list[Prediction | ValueError] = list(
                OnlineRecognizer.update_many([s.recognizer for s in sessions], keypoints)
            )
        except ValueError:  # refused before any recogniser changed: find the culprits
            predictions = []
            for session, kp in frames:
                try:
                    predictions.append(session.recognizer.update(kp))
                except ValueError as e:
                    predictions.append(e)
        elapsed = time.perf_counter() - start
        return [
            p if isinstance(p, ValueError) else session.reply(p, kp, elapsed)
            for session, kp, p in zip(sessions, keypoints, predictions, strict=True)
        ]

    def recognize_upload(
        self, data: bytes, filename: str, *, keypoints: bool = False
    ) -> dict[str, Any]:
        r"""Predictions for an uploaded skeleton file or video.

        Args:
            data (bytes): The file's content.
            filename (str): The client's file name (its suffix picks the reader).
            keypoints (bool, optional): Include the clip's keypoints :obj:`(T, V, C)` in its
                own layout (for replaying it). (default: :obj:`False`)

        Returns:
            dict: ``source``, ``kind`` (``"skeleton"`` or ``"video"``), ``layout``, ``fps``,
            ``num_frames``, ``classes``, the clip's ``label``, ``score`` and ``probabilities``
            (``{class: p}``; the last frame's, or the mean over frames when the checkpoint's
            ``meta["inference"]["reduce"]`` is ``"mean"``), ``frames`` (per frame: ``frame``,
            ``label``, ``score``, ``probabilities`` in class order), ``elapsed_ms``, and
            ``keypoints`` when asked for.

        Raises:
            InputError: For files that cannot be read (4xx, see :mod:`skelgraph.serve.inputs`),
                videos without a pose model (415/503), clips with the wrong channel count (422).
        """
        start = time.perf_counter()
        suffix = upload_suffix(filename)
        if suffix in SKELETON_SUFFIXES:
            clip = load_skeleton_upload(
                data, filename, default_layout=self.input_layout, max_frames=self.max_frames
            )
            kp, layout, fps, kind = clip.keypoints, clip.layout, clip.fps, "skeleton"
        else:
            kp, fps = self._video(data, suffix)
            layout, kind = get_layout("coco17"), "video"
        if kp.shape[-1] != self.channels:
            raise InputError(
                f"file {filename!r}: expected {self.channels} channels per joint for model "
                f"{self.name!r}, got {kp.shape[-1]}"
            )
        kp = np.where(np.isfinite(kp), kp, 0.0).astype(np.float32)
        predictions = self.recognizer(layout).run(kp)
        probs = np.stack([p.probabilities for p in predictions])
        if not np.isfinite(probs).all():  # JSON has no NaN, and a NaN answer answers nothing
            raise InputError(f"file {filename!r}: the model's output is not finite for this clip")
        reduce = self.meta.get("inference", {}).get("reduce", "last")
        clip_probs = probs.mean(axis=0) if reduce == "mean" else probs[-1]
        best = int(clip_probs.argmax())
        out: dict[str, Any] = {
            "source": filename,
            "kind": kind,
            "layout": layout.name,
            "fps": fps,
            "num_frames": int(kp.shape[0]),
            "classes": self.classes,
            "label": self.classes[best],
            "score": float(clip_probs[best]),
            "probabilities": _by_class(self.classes, clip_probs),
            "reduce": "mean" if reduce == "mean" else "last",
            "frames": [
                {
                    "frame": p.frame,
                    "label": p.label,
                    "score": round(float(p.score), 6),
                    "probabilities": np.round(p.probabilities, 6).tolist(),
                }
                for p in predictions
            ],
        }
        if keypoints:
            out["keypoints"] = np.round(kp, 3).tolist()
            out["bones"] = [list(b) for b in layout.bones]
        out["elapsed_ms"] = round(1e3 * (time.perf_counter() - start), 1)
        return out

    def _video(self, data: bytes, suffix: str) -> tuple[np.ndarray, float | None]:
        """Pose keypoints of an uploaded video (written to a temporary file for OpenCV)."""
        self.pose.estimator()  # refuse before writing anything when poses are unavailable
        with tempfile.TemporaryDirectory(prefix="skelgraph-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            return self.pose.video(path, self.max_frames)


class StreamSession:
    r"""One WebSocket stream: its recogniser, input layout and followed person.

    Its recogniser runs in the service's stream worker (:meth:`Recognition.replies`, frames
    of many streams together), its person detection in the pose worker; :attr:`frames` counts
    the frames received since the start or the last reset.

    Args:
        recognition (Recognition): The service's shared model.
        input_layout (Layout): Layout of the keypoints the stream sends.
    """

    def __init__(self, recognition: Recognition, input_layout: Layout) -> None:
        self.recognition = recognition
        self.recognizer = recognition.recognizer(input_layout)
        self.follower: PersonFollower | None = None
        self.frames = 0
        self.attention = 0  # edges of the live attention overlay per reply (0: none)

    @property
    def layout(self) -> Layout:
        """Layout of the keypoints this stream receives."""
        return self.recognizer.input_layout

    def use_layout(self, layout: Layout) -> None:
        """Switches the stream to keypoints of :obj:`layout` before its first frame.

        Raises:
            InputError: 400 when frames of another layout were already received.
        """
        if layout == self.layout:
            return
        if self.frames:
            raise InputError(
                f"layout: this stream receives {self.layout.name!r} keypoints ({self.frames} "
                f'frames so far), got {layout.name!r}; send {{"reset": true, "layout": '
                f'"{layout.name}"}} to switch',
                status=400,
            )
        self.recognizer = self.recognition.recognizer(layout)

    def reset(self, layout: Layout | None = None) -> dict[str, Any]:
        """Forgets the stream's frames (and switches its layout when given)."""
        if layout is not None and layout != self.layout:
            self.recognizer = self.recognition.recognizer(layout)
        else:
            self.recognizer.reset()
        self.follower = None
        self.frames = 0
        return {"type": "reset", "layout": self.layout.name}

    def reply(
        self, prediction: Prediction, keypoints: np.ndarray, elapsed: float
    ) -> dict[str, Any] | ValueError:
        """The reply message of a frame's prediction (``elapsed``: seconds it took); a
        :class:`ValueError` instead, and the stream reset, when the prediction is not finite
        (its state would stay NaN)."""
        if not np.isfinite(prediction.probabilities).all():
            self.reset()
            return InputError(
                f"frame {prediction.frame}: the model's output is not finite for these "
                "keypoints; the stream was reset"
            )
        return {
            "type": "prediction",
            "frame": prediction.frame,
            "label": prediction.label,
            "score": round(float(prediction.score), 6),
            "probabilities": _by_class(self.recognizer.classes, prediction.probabilities),
            "forecast": None if prediction.forecast is None else _rows(prediction.forecast),
            "keypoints": np.round(keypoints, 2).tolist(),
            "layout": self.layout.name,
            "person": bool((keypoints[:, -1] > 0).any()),
            "elapsed_ms": round(1e3 * elapsed, 2),
        } | (
            {"attention": self.recognizer.attention_edges(self.attention)} if self.attention else {}
        )

    def detect(self, data: bytes) -> np.ndarray:
        """The followed person's ``coco17`` keypoints :obj:`(17, 3)` in one JPEG frame."""
        pose = self.recognition.pose
        image = pose.decode(data)
        if self.follower is None:
            self.follower = pose.follower()
        return pose.detect(image, self.follower)


def _by_class(classes: list[str], probabilities: np.ndarray) -> dict[str, float]:
    return {c: round(float(p), 6) for c, p in zip(classes, probabilities, strict=True)}


def _rows(values: np.ndarray) -> list:
    """An array as nested lists rounded to 0.01, ``None`` for non-finite values (JSON has no
    NaN)."""
    rounded = np.round(values.astype(np.float64), 2)
    if np.isfinite(rounded).all():
        return rounded.tolist()
    return np.where(np.isfinite(rounded), rounded, None).tolist()
