r"""The HTTP/WebSocket service and its web page (optional extra ``skelgraph[serve]``).

Endpoints:

* ``GET /`` — the web page (camera, video file or skeleton file; live label, probability bars,
  skeleton and forecast overlay); its files under ``/static/``.
* ``GET /health`` — ``{"status", "model", "sessions", "max_sessions", "pose", ...}``; the status
  is ``"warming"`` while the model loads (the server listens at once), then ``"ok"`` (or
  ``"failed"``, with HTTP 503 and the ``error``). The routes below answer 503 until it is ready.
* ``GET /v1/models`` — the served model (classes, layouts, window, forecast steps), the pose
  model's state and the limits.
* ``POST /v1/recognize`` — ``multipart/form-data`` with a ``file``: a skeleton clip (``.npz``,
  Penn Action ``.mat``, ``.json``) or a video (needs the pose model); query ``keypoints=true``
  adds the clip's keypoints. Uploads above ``max_upload_bytes`` get 413, and 503 when
  ``max_pending_uploads`` are being received or processed (checked before the body is read).
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

  The server closes with ``1013`` when all sessions are in use, ``1009`` for a binary message
  above ``max_message_bytes`` or a text message above ``max_text_bytes``, ``1003`` for JPEG
  frames when it has no pose model, ``1008`` after ``max_errors`` malformed messages in a row,
  and ``1000`` after ``idle_timeout`` seconds without a message; an ``{"type": "error"}``
  message with the reason comes first.

Every request from a web page of another origin, or addressed to a host name that is not
allowed, is refused with 403 before it reaches a route
(:class:`~skelgraph.serve.origin.OriginCheck`). Bad input gets a 4xx with the reason, never a 500.

Model work runs in worker threads (``stream_workers`` for streams, one for pose estimation), so
the event loop stays free for every other connection. Uploads are parsed and recognised in a
process of their own with its own copy of the model
(:class:`~skelgraph.serve.uploads.UploadProcess`), so that they never hold the interpreter lock
the streams need.
Each stream worker serves its share of the streams and batches their frames
(:class:`~skelgraph.serve.batching.FrameBatcher`): the frames waiting when it is free go through
the model in one batched step.

The routes are in :mod:`skelgraph.serve.routes`, one router per concern; a stream's protocol is
:class:`~skelgraph.serve.stream.StreamConnection`; they share the service's
:class:`~skelgraph.serve.state.ServiceState`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f'skelgraph.serve needs FastAPI ({e.name} is missing): pip install "skelgraph[serve]"'
    ) from e

import skelgraph
from skelgraph.layouts import get_layout
from skelgraph.serve.origin import LOOPBACK_HOSTS, OriginCheck
from skelgraph.serve.pose import PoseService
from skelgraph.serve.routes import info, pages, recognize, websocket
from skelgraph.serve.source import ModelSource
from skelgraph.serve.state import Limits, ServiceState

__all__ = ["create_app"]

log = logging.getLogger("skelgraph.serve")


def create_app(
    checkpoint: str | os.PathLike[str] = "penn-action-fast",
    *,
    pose_model: str | None = None,
    max_upload_bytes: int = 64 * 2**20,
    max_sessions: int = 16,
    max_message_bytes: int = 2 * 2**20,
    max_text_bytes: int = 64 * 2**10,
    input_layout: str = "coco17",
    device: str = "cpu",
    pose_device: str | None = None,
    pose_imgsz: int | None = None,
    smoothing: float = 0.0,
    max_frames: int = 3600,
    max_pixels: int = 1920 * 1080,
    max_errors: int = 50,
    idle_timeout: float = 300.0,
    max_pending_uploads: int = 2,
    stream_workers: int = 1,
    allowed_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    warm_up: bool = True,
    threads: int | None = None,
    load_on_startup: bool = True,
    backend: str = "torch",
) -> FastAPI:
    r"""The FastAPI app serving one model (see the module description for the endpoints).

    The app answers at once; the model is loaded (and warmed up) in a background thread when
    the app starts (:meth:`~skelgraph.serve.state.ServiceState.start`).

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
        max_message_bytes (int, optional): Largest binary (JPEG) WebSocket message.
        max_text_bytes (int, optional): Largest text (keypoints) WebSocket message: a frame of
            keypoints takes a few KB, and parsing JSON holds the event loop.
        input_layout (str, optional): Layout of streamed keypoints unless a stream names another.
        device (str, optional): Inference device of the model. (default: :obj:`"cpu"`)
        pose_device (str, optional): Inference device of the pose model (ultralytics' names).
        pose_imgsz (int, optional): Inference image size of the pose model.
        smoothing (float, optional): Probability smoothing of the recognisers.
        max_frames (int, optional): Most frames of an uploaded clip or video.
        max_pixels (int, optional): Most pixels (width × height) of a JPEG frame or a video
            frame.
        max_errors (int, optional): Malformed messages in a row before a stream is closed.
        idle_timeout (float, optional): Seconds without a message before a stream is closed.
        max_pending_uploads (int, optional): Uploads received, processed or waiting at once;
            more get 503.
        stream_workers (int, optional): Threads stepping the streams' model, each batching the
            frames of its share of the streams (:class:`~skelgraph.serve.batching.FrameBatcher`);
            the model releases the GIL while it computes, so more can use more cores, but one
            batches best. (default: :obj:`1`)
        allowed_origins (Sequence[str], optional): Web page origins allowed besides the
            service's own (``"https://example.org"``; ``"*"`` for any). (default: none)
        allowed_hosts (Sequence[str], optional): Host names requests may be addressed to
            (against DNS rebinding); :obj:`None` for any. (default: the loopback names)
        warm_up (bool, optional): Run the model once for every number of streams up to
            ``max_sessions`` before serving, so that the first busy moments cost what later ones
            do. (default: :obj:`True`)
        threads (int, optional): Torch intra-op threads, set when the model is loaded.
        load_on_startup (bool, optional): Start loading the model when the app starts;
            :obj:`False` leaves it to a call of ``app.state.service.start()`` (``skelgraph
            serve`` makes it once the server listens, so that loading does not slow that
            down). (default: :obj:`True`)
        backend (str, optional): What runs the model: ``"torch"`` (its frame plan) or
            ``"onnxruntime"`` (its frame step exported to ONNX once, needs ``skelgraph[onnx]``;
            see :class:`~skelgraph.online.OnlineRecognizer`). (default: :obj:`"torch"`)

    Raises:
        FileNotFoundError: When :obj:`checkpoint` is a path (it has a suffix or a folder) that
            does not exist; other loading errors are reported when the app starts.
        ValueError: For a limit that is not a positive number.
    """
    for name, value in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_sessions", max_sessions),
        ("max_message_bytes", max_message_bytes),
        ("max_text_bytes", max_text_bytes),
        ("max_frames", max_frames),
        ("max_pixels", max_pixels),
        ("max_errors", max_errors),
        ("max_pending_uploads", max_pending_uploads),
        ("stream_workers", stream_workers),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"create_app: {name}: expected an integer >= 1, got {value!r}")
    if not idle_timeout > 0:
        raise ValueError(f"create_app: idle_timeout: expected seconds > 0, got {idle_timeout!r}")
    path = Path(checkpoint)
    if (path.suffix or len(path.parts) > 1) and not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r}: no such file")
    input_layout = get_layout(input_layout).name
    limits = Limits(
        max_upload_bytes=int(max_upload_bytes),
        max_sessions=int(max_sessions),
        max_message_bytes=int(max_message_bytes),
        max_text_bytes=int(max_text_bytes),
        max_frames=int(max_frames),
        max_pixels=int(max_pixels),
        max_errors=int(max_errors),
        idle_timeout=float(idle_timeout),
        max_pending_uploads=int(max_pending_uploads),
    )
    source = ModelSource(
        checkpoint=str(checkpoint),
        name=path.stem if path.suffix else str(checkpoint),
        pose=PoseService(pose_model, device=pose_device, imgsz=pose_imgsz, max_pixels=max_pixels),
        input_layout=input_layout,
        device=device,
        smoothing=float(smoothing),
        max_frames=int(max_frames),
        backend=backend,
        threads=threads,
    )
    service = ServiceState(source, limits, warm_up, stream_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load_on_startup:
            service.start()
        yield
        service.shutdown()

    app = FastAPI(
        title="skelgraph",
        version=skelgraph.__version__,
        summary="Skeleton-based action recognition and motion forecasting",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(OriginCheck, allowed_origins=allowed_origins, allowed_hosts=allowed_hosts)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.include_router(info.router)
    app.include_router(recognize.router)
    app.include_router(websocket.router)
    return app


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """A fault of the service itself (never the client's input): logged with its traceback, and
    answered with its kind instead of a bare 500."""
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    reason = f"internal error ({type(error).__name__}); the request was not processed"
    return JSONResponse({"error": reason}, status_code=500)
