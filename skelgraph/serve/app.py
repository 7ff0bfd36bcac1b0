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
  - anything malformed → ``{"type": "error", "error": reason}``, the connection stays open.

  The server closes with ``1013`` when all sessions are in use, ``1009`` for a message above
  ``max_message_bytes``, ``1003`` for JPEG frames when it has no pose model, ``1008`` after
  ``max_errors`` malformed messages in a row, and ``1000`` after ``idle_timeout`` seconds without a
  message; an ``{"type": "error"}`` message with the reason comes first.

Model work runs in worker threads (``stream_workers`` for streams, one for pose estimation, one
for uploads), so the event loop stays free for every other connection. Each stream worker serves
its share of the streams and batches their frames (:class:`FrameBatcher`): the frames waiting
when it is free go through the model in one batched step.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

try:
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.datastructures import UploadFile
    from starlette.websockets import WebSocketDisconnect, WebSocketState
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f'skelgraph.serve needs FastAPI ({e.name} is missing): pip install "skelgraph[serve]"'
    ) from e

import skelgraph
from skelgraph.layouts import get_layout, list_layouts
from skelgraph.serve.inputs import InputError, parse_keypoints, resolve_layout_name
from skelgraph.serve.pose import PoseService, PoseUnavailable
from skelgraph.serve.service import Recognition, StreamSession, load_model

__all__ = ["STATIC_DIR", "FrameBatcher", "create_app"]

#: the web page's files
STATIC_DIR = Path(__file__).with_name("static")

#: WebSocket close codes
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER = (
    1000,
    1003,
    1008,
    1009,
    1013,
)

T = TypeVar("T")


class UploadTooLarge(Exception):
    """The request body grew past the upload limit while it was read."""


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
            frames of its share of the streams (:class:`FrameBatcher`); the model releases the
            GIL while it computes, so more can use more cores, but one batches best.
            (default: :obj:`1`)

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
    limits = {
        "max_upload_bytes": int(max_upload_bytes),
        "max_sessions": int(max_sessions),
        "max_message_bytes": int(max_message_bytes),
        "max_frames": int(max_frames),
        "max_errors": int(max_errors),
        "idle_timeout": float(idle_timeout),
        "max_pending_uploads": int(max_pending_uploads),
    }
    workers = {
        "pose": ThreadPoolExecutor(1, thread_name_prefix="skelgraph-pose"),
        "upload": ThreadPoolExecutor(1, thread_name_prefix="skelgraph-upload"),
    }
    lanes = []
    for i in range(stream_workers):
        workers[f"stream-{i}"] = ThreadPoolExecutor(1, thread_name_prefix=f"skelgraph-stream-{i}")
        lanes.append(FrameBatcher(recognition, workers[f"stream-{i}"]))
    state = {"sessions": 0, "uploads": 0, "next_session": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for executor in workers.values():
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="skelgraph",
        version=skelgraph.__version__,
        summary="Skeleton-based action recognition and motion forecasting",
        lifespan=lifespan,
    )
    app.state.recognition = recognition
    app.state.limits = limits
    app.state.counters = state

    def run(pool: str, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(workers[pool], partial(fn, *args))

    def pose_state() -> dict[str, Any]:
        reason = recognition.pose.unavailable()
        return {"model": recognition.pose.model, "available": reason is None, "reason": reason}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: the model, the sessions in use and the pose model's state."""
        return {
            "status": "ok",
            "version": skelgraph.__version__,
            "model": recognition.name,
            "sessions": state["sessions"],
            "max_sessions": limits["max_sessions"],
            "uploads": state["uploads"],
            "pose": pose_state(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The served model, the pose model, the limits and the joints and bones of every
        registered layout (for drawing)."""
        return {
            "models": [recognition.describe()],
            "pose": pose_state(),
            "limits": limits,
            "layouts": {
                name: {"joints": list(layout.joints), "bones": [list(b) for b in layout.bones]}
                for name in list_layouts()
                for layout in (get_layout(name),)
            },
        }

    @app.post("/v1/recognize")
    async def recognize(request: Request, keypoints: bool = False) -> Response:
        """Predictions for an uploaded skeleton file or video (multipart field ``file``)."""
        limit = limits["max_upload_bytes"]
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"upload: expected at most {limit} bytes, got {declared}")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(
                415,
                "upload: expected multipart/form-data with the file in field 'file' (e.g. curl "
                f"-F file=@clip.npz), got content type {request.headers.get('content-type')!r}",
            )
        received = 0

        async def receive() -> dict[str, Any]:
            nonlocal received
            message = await request.receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise UploadTooLarge
            return message

        try:
            form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
        except UploadTooLarge:
            return _error(413, f"upload: expected at most {limit} bytes, got more")
        except Exception as e:  # the multipart parser's errors for malformed bodies
            return _error(400, f"upload: malformed multipart body ({e})")
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _error(
                    400,
                    "upload: expected a file in form field 'file', got fields "
                    f"{sorted(form.keys())}",
                )
            data = await upload.read()
            filename = upload.filename or ""
        finally:
            await form.close()
        if state["uploads"] >= limits["max_pending_uploads"]:
            return _error(
                503,
                f"busy: {state['uploads']} uploads are being processed, try again later",
                headers={"Retry-After": "5"},
            )
        state["uploads"] += 1
        try:
            result = await run(
                "upload", partial(recognition.recognize_upload, keypoints=keypoints), data, filename
            )
        except InputError as e:
            return _error(e.status, e.reason)
        finally:
            state["uploads"] -= 1
        return JSONResponse(result)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket, layout: str | None = None) -> None:
        """One recogniser per connection (see the module description for the protocol)."""
        await websocket.accept()
        if state["sessions"] >= limits["max_sessions"]:
            await _close(
                websocket,
                CLOSE_TRY_LATER,
                f"too many sessions: all {limits['max_sessions']} are in use, try again later",
            )
            return
        try:
            start_layout = None if layout is None else resolve_layout_name(layout, "query layout")
        except InputError as e:
            await _close(websocket, CLOSE_POLICY, e.reason)
            return
        state["sessions"] += 1
        state["next_session"] += 1
        lane = min(lanes, key=lambda batcher: batcher.streams)  # the least busy worker
        lane.streams += 1
        try:
            session = recognition.stream(start_layout)
            await _send(
                websocket,
                {
                    "type": "hello",
                    "session": state["next_session"],
                    "model": recognition.name,
                    "classes": recognition.classes,
                    "layout": session.layout.name,
                    "pose": pose_state()["available"],
                    "limits": {k: limits[k] for k in ("max_message_bytes", "idle_timeout")},
                },
            )
            await _serve_stream(websocket, session, lane)
        except WebSocketDisconnect:
            pass
        finally:
            state["sessions"] -= 1
            lane.streams -= 1

    async def _serve_stream(
        websocket: WebSocket, session: StreamSession, lane: FrameBatcher
    ) -> None:
        """A reader takes the stream's messages and queues a reply for each, in order, without
        waiting for the replies before it (a stream that sends faster than it is answered has
        its next frame in every batch); this coroutine sends the replies in that order."""
        replies: asyncio.Queue[asyncio.Future[Any] | tuple[int, str] | None] = asyncio.Queue()
        reader = asyncio.create_task(_read_messages(websocket, session, lane, replies))
        try:
            await _send_replies(websocket, replies)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_messages(
        websocket: WebSocket,
        session: StreamSession,
        lane: FrameBatcher,
        replies: asyncio.Queue[asyncio.Future[Any] | tuple[int, str] | None],
    ) -> None:
        """Queues a reply future per message, a ``(close code, reason)`` to end the stream, or
        :obj:`None` when the client left."""
        last: asyncio.Future[Any] | None = None  # the newest frame's reply
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), limits["idle_timeout"])
            except (asyncio.TimeoutError, TimeoutError):
                idle = f"idle: no message for {limits['idle_timeout']:g} s"
                replies.put_nowait((CLOSE_NORMAL, idle))
                return
            if message["type"] == "websocket.disconnect":
                replies.put_nowait(None)
                return
            text, data = message.get("text"), message.get("bytes")
            size = len(data) if data is not None else _utf8_size(text or "")
            if size > limits["max_message_bytes"]:
                too_big = f"message too big: {size} bytes, limit {limits['max_message_bytes']}"
                replies.put_nowait((CLOSE_TOO_BIG, too_big))
                return
            try:
                if data is not None:
                    reply = await _frame(session, lane, data)
                else:
                    reply = await _text(session, lane, text or "", last)
            except PoseUnavailable as e:
                replies.put_nowait((CLOSE_UNSUPPORTED, e.reason))
                return
            except ValueError as e:  # malformed: an error reply, in its place
                reply = asyncio.get_running_loop().create_future()
                reply.set_result(e)
            if reply is not None and not reply.done():
                last = reply
            replies.put_nowait(reply)

    async def _send_replies(
        websocket: WebSocket,
        replies: asyncio.Queue[asyncio.Future[Any] | tuple[int, str] | None],
    ) -> None:
        """Sends the queued replies in order (a :class:`ValueError` as an error message) until
        the client leaves or the stream is closed."""
        errors = 0
        while True:
            item = await replies.get()
            if item is None:
                return
            if isinstance(item, tuple):
                await _close(websocket, *item)
                return
            reply = await item
            if isinstance(reply, ValueError):  # InputError and the recogniser's shape errors
                errors += 1
                if errors >= limits["max_errors"]:
                    last_error = f"{errors} malformed messages in a row; last: {reply}"
                    await _close(websocket, CLOSE_POLICY, last_error)
                    return
                reply = {"type": "error", "error": str(reply)}
            else:
                errors = 0
            await _send(websocket, reply)

    async def _text(
        session: StreamSession, lane: FrameBatcher, text: str, last: asyncio.Future[Any] | None
    ) -> asyncio.Future[Any]:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"message: expected a JSON object, got invalid JSON ({e})") from e
        if not isinstance(obj, dict):
            raise InputError(f"message: expected a JSON object, got {type(obj).__name__}")
        layout = resolve_layout_name(obj["layout"]) if "layout" in obj else None
        if obj.get("reset") is True:
            if last is not None:  # the frames before the reset are answered first
                await asyncio.wait([last])
            done = asyncio.get_running_loop().create_future()
            done.set_result(session.reset(layout))
            return done
        if "keypoints" not in obj:
            raise InputError(
                f"message: expected 'keypoints' or 'reset': true, got keys {sorted(obj)}"
            )
        if layout is not None:
            session.use_layout(layout)
        keypoints = parse_keypoints(obj["keypoints"], session.layout, recognition.channels)
        return lane.submit(session, keypoints)

    async def _frame(
        session: StreamSession, lane: FrameBatcher, data: bytes
    ) -> asyncio.Future[Any]:
        reason = recognition.pose.unavailable()
        if reason is not None:
            raise PoseUnavailable(reason, status=415)
        session.use_layout(get_layout("coco17"))
        keypoints = await run("pose", session.detect, data)
        return lane.submit(session, keypoints)

    return app


class FrameBatcher:
    """Runs the streams' frames in batches on one worker thread, each batch one batched model
    step (:meth:`Recognition.replies`).

    A batch takes the oldest waiting frame of every stream that has one; the frames that arrive
    while it runs wait for the next. One stream costs what it costs alone; many streams share
    the fixed cost of a step, so under load the cost per frame falls instead of frames queueing
    behind each other.

    Args:
        recognition (Recognition): The service's model.
        executor (concurrent.futures.Executor): Where batches run (one at a time).
    """

    def __init__(self, recognition: Recognition, executor: Executor) -> None:
        self.recognition = recognition
        self.executor = executor
        self.waiting: list[tuple[StreamSession, np.ndarray, asyncio.Future[Any]]] = []
        self.worker: asyncio.Task[None] | None = None
        self.streams = 0  # streams assigned to this worker

    def submit(self, session: StreamSession, keypoints: np.ndarray) -> asyncio.Future[Any]:
        """Queues the session's next frame of keypoints :obj:`(V_in, C)`.

        Returns:
            asyncio.Future: Its reply, or the :class:`ValueError` of a frame the recogniser
            refuses (its shape).
        """
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((session, keypoints, future))
        session.frames += 1
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._run())
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            batch, later, seen = [], [], set()
            for item in self.waiting:  # a stream's frames stay in order, one per batch
                (later if id(item[0]) in seen else batch).append(item)
                seen.add(id(item[0]))
            self.waiting = later
            frames = [(session, keypoints) for session, keypoints, _ in batch]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.recognition.replies, frames
                )
            except Exception as e:  # handed to every waiting stream
                results = [e] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if not future.done():  # its stream may have gone
                    future.set_result(result)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


async def _send(websocket: WebSocket, message: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Sends the reason as an error message, then closes with :obj:`code` (reason cut to the
    123 bytes a close frame allows)."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await _send(websocket, {"type": "error", "error": reason, "close": code})
        await websocket.close(code, reason.encode()[:123].decode("utf-8", "ignore"))
    except (WebSocketDisconnect, RuntimeError):
        pass
