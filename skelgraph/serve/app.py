r"""The HTTP/WebSocket service and its web page (optional extra ``skelgraph[serve]``).

Endpoints:

* ``GET /`` — the web page (camera, video file or skeleton file; live label, probability bars,
  skeleton and forecast overlay); its files under ``/static/``.
* ``GET /health`` — ``{"status": "ok", "model", "sessions", "max_sessions", "pose", ...}``.
* ``GET /v1/models`` — the served model (classes, layouts, window, forecast steps), the pose
  model's state and the limits.
* ``POST /v1/recognize`` — ``multipart/form-data`` with a ``file``: a skeleton clip (``.npz``,
  Penn Action ``.mat``, ``.json``) or a video (needs the pose model); query ``keypoints=true``
  adds the clip's keypoints. Uploads above ``max_upload_bytes`` get 413.
* ``WebSocket /v1/stream`` (query ``layout=`` for the keypoints' layout) — one recogniser per
  connection. The server first sends ``{"type": "hello", ...}``. Then per client message:

  - text ``{"keypoints": [[x, y, c], ...], "layout": optional}`` → ``{"type": "prediction",
    "frame", "label", "score", "probabilities": {class: p}, "forecast": [[[x, y], ...], ...] |
    null, "keypoints", "layout", "person", "elapsed_ms"}``;
  - binary JPEG bytes → the pose model's keypoints, then the same reply (``"person": false``
    when nobody was detected; the frame still counts);
  - ``{"reset": true, "layout": optional}`` → ``{"type": "reset", "layout"}``;
  - ``{"attention": K}`` (0 to 50) → ``{"type": "attention", "top_k": K}``; from then on every
    prediction also carries ``"attention": [[x_j, y_j, x_i, y_i, weight], ...]``, the ``K``
    strongest edges of the graph the model applied to the frame (0 turns it off);
  - anything malformed → ``{"type": "error", "error": reason}``, the connection stays open.

  The server closes with ``1013`` when all sessions are in use, ``1009`` for a message above
  ``max_message_bytes``, ``1003`` for JPEG frames when it has no pose model, ``1008`` after
  ``max_errors`` malformed messages in a row, and ``1000`` after ``idle_timeout`` seconds without a
  message; an ``{"type": "error"}`` message with the reason comes first.

Model work runs in worker threads (``stream_workers`` for streams, one for pose estimation, one
for uploads), so the event loop stays free for every other connection. Each stream worker serves
its share of the streams and batches their frames
(:class:`~skelgraph.serve.batching.FrameBatcher`): the frames waiting when it is free go through
the model in one batched step.

The routes are in :mod:`skelgraph.serve.routes`, one router per concern; a stream's protocol is
:class:`~skelgraph.serve.stream.StreamConnection`; they share the service's
:class:`~skelgraph.serve.state.ServiceState`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

try:
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f'skelgraph.serve needs FastAPI ({e.name} is missing): pip install "skelgraph[serve]"'
    ) from e

import skelgraph
from skelgraph.layouts import get_layout
from skelgraph.serve.pose import PoseService
from skelgraph.serve.routes import info, pages, recognize, websocket
from skelgraph.serve.service import Recognition, load_model
from skelgraph.serve.state import Limits, ServiceState

__all__ = ["create_app"]


def create_app(
    checkpoint: str | os.PathLike[str] = "penn-action-fast",
    *,
    pose_model: str | None = None,
    max_upload_bytes: int = 64 * 2**20,
    max_sessions: int = 16,
    max_message_bytes: int = 2 * 2**20,
    input_layout: str = "coco17",
    device: str = "cpu",
    pose_device: str | None = None,
    pose_imgsz: int | None = None,
    smoothing: float = 0.0,
    max_frames: int = 3600,
    max_errors: int = 50,
    idle_timeout: float = 300.0,
    max_pending_uploads: int = 4,
    stream_workers: int = 1,
) -> FastAPI:
    r"""The FastAPI app serving one model (see the module description for the endpoints).

    Args:
        checkpoint (str or os.PathLike, optional): A checkpoint file or a pretrained model's
            name; loaded once. (default: :obj:`"penn-action-fast"`, the single-stream Penn Action
            model: a quarter of the cost per frame of the ``"penn-action"`` ensemble with mirror
            test-time augmentation)
        pose_model (str, optional): YOLO pose model for JPEG frames and videos, loaded on first
            use (``"yolo11n-pose.pt"``; needs ``skelgraph[pose]``); :obj:`None` accepts
            keypoints and skeleton files only. (default: :obj:`None`)
        max_upload_bytes (int, optional): Largest upload of ``POST /v1/recognize``.
        max_sessions (int, optional): Most WebSocket streams at once.
        max_message_bytes (int, optional): Largest WebSocket message.
        input_layout (str, optional): Layout of streamed keypoints unless a stream names another.
        device (str, optional): Inference device of the model. (default: :obj:`"cpu"`)
        pose_device (str, optional): Inference device of the pose model (ultralytics' names).
        pose_imgsz (int, optional): Inference image size of the pose model.
        smoothing (float, optional): Probability smoothing of the recognisers.
        max_frames (int, optional): Most frames of an uploaded clip or video.
        max_errors (int, optional): Malformed messages in a row before a stream is closed.
        idle_timeout (float, optional): Seconds without a message before a stream is closed.
        max_pending_uploads (int, optional): Uploads processed or waiting at once; more get 503.
        stream_workers (int, optional): Threads stepping the streams' model, each batching the
            frames of its share of the streams (:class:`~skelgraph.serve.batching.FrameBatcher`);
            the model releases the GIL while it computes, so more can use more cores, but one
            batches best. (default: :obj:`1`)

    Raises:
        FileNotFoundError, ValueError: When the checkpoint cannot be found or loaded.
    """
    for name, value in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_sessions", max_sessions),
        ("max_message_bytes", max_message_bytes),
        ("max_frames", max_frames),
        ("max_errors", max_errors),
        ("max_pending_uploads", max_pending_uploads),
        ("stream_workers", stream_workers),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"create_app: {name}: expected an integer >= 1, got {value!r}")
    if not idle_timeout > 0:
        raise ValueError(f"create_app: idle_timeout: expected seconds > 0, got {idle_timeout!r}")
    model, meta = load_model(checkpoint, device)
    name = Path(checkpoint).stem if Path(checkpoint).suffix else str(checkpoint)
    recognition = Recognition(
        model,
        meta,
        name,
        PoseService(pose_model, device=pose_device, imgsz=pose_imgsz),
        input_layout=get_layout(input_layout),
        device=device,
        smoothing=smoothing,
        max_frames=max_frames,
    )
    limits = Limits(
        max_upload_bytes=int(max_upload_bytes),
        max_sessions=int(max_sessions),
        max_message_bytes=int(max_message_bytes),
        max_frames=int(max_frames),
        max_errors=int(max_errors),
        idle_timeout=float(idle_timeout),
        max_pending_uploads=int(max_pending_uploads),
    )
    app = FastAPI(
        title="skelgraph",
        version=skelgraph.__version__,
        summary="Skeleton-based action recognition and motion forecasting",
        lifespan=_lifespan,
    )
    app.state.service = ServiceState.start(recognition, limits, stream_workers)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.include_router(info.router)
    app.include_router(recognize.router)
    app.include_router(websocket.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.service.shutdown()
