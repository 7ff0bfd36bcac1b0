"""The state of one running service, shared by its routes: the limits, the model once it is
loaded, the worker threads, the upload process and the counters of open streams and uploads.

:func:`create_app <skelgraph.serve.create_app>` stores it as ``app.state.service``; a route takes it
as a parameter annotated :data:`Service` (a FastAPI dependency). Every route runs on the event
loop, so the counters need no lock.

The service answers before its model is ready: :meth:`ServiceState.start` loads it in a thread
(torch alone takes seconds to import) while the upload process opens its own copy, ``/health``
says ``"warming"`` meanwhile, and the routes that need the model answer 503 until
:attr:`ServiceState.loaded` is set.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends
from starlette.requests import HTTPConnection

from skelgraph.serve.inputs import InputError
from skelgraph.serve.pose import PoseService
from skelgraph.serve.source import ModelSource
from skelgraph.serve.uploads import UploadProcess

if TYPE_CHECKING:  # they import torch, which the service loads in the background
    from skelgraph.serve.batching import FrameBatcher
    from skelgraph.serve.service import Recognition

__all__ = ["Limits", "Service", "ServiceState", "run_in", "service_state"]

T = TypeVar("T")
log = logging.getLogger("skelgraph.serve")


@dataclass(frozen=True)
class Limits:
    """What the service accepts (see :func:`~skelgraph.serve.create_app` for each)."""

    max_upload_bytes: int
    max_sessions: int
    max_message_bytes: int
    max_text_bytes: int
    max_frames: int
    max_pixels: int
    max_errors: int
    idle_timeout: float
    max_pending_uploads: int

    def to_dict(self) -> dict[str, Any]:
        """The limits by name, in the order above."""
        return asdict(self)


@dataclass
class ServiceState:
    """The limits, model, workers and load of one service.

    Attributes:
        source (ModelSource): The served model, opened by :meth:`start`.
        limits (Limits): What the service accepts.
        warm_up (bool): Whether :meth:`start` runs the model once for every number of streams
            (:meth:`~skelgraph.serve.service.Recognition.warm_up`).
        stream_workers (int): Threads stepping the streams' model.
        loaded (threading.Event): Set when the model is loaded and warmed up, or failed to load.
        error (BaseException or None): Why the model failed to load.
        on_failure (Callable or None): Called with the error, in the loading thread, when the
            model fails to load (e.g. to stop the server).
        recognition (Recognition or None): The served model, once loaded.
        lanes (list[FrameBatcher]): One per stream worker thread, each batching the frames of
            its share of the streams, once the model is loaded.
        pose_worker (Executor): The thread estimating the poses of streamed JPEG frames.
        upload_worker (UploadProcess): The process recognising uploads.
        sessions (int): Streams open now.
        uploads (int): Uploads being received, processed or waiting now.
        opened (int): Streams opened since the start (each stream's number).
    """

    source: ModelSource
    limits: Limits
    warm_up: bool = True
    stream_workers: int = 1
    loaded: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    on_failure: Callable[[BaseException], None] | None = None
    recognition: Recognition | None = None
    lanes: list[FrameBatcher] = field(default_factory=list)
    pose_worker: Executor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="skelgraph-pose")
    )
    upload_worker: UploadProcess = field(init=False)
    sessions: int = 0
    uploads: int = 0
    opened: int = 0

    def __post_init__(self) -> None:
        self.upload_worker = UploadProcess(self.source)

    @property
    def name(self) -> str:
        """The name the model is served under."""
        return self.source.name

    @property
    def pose(self) -> PoseService:
        """The pose model for JPEG frames and videos."""
        return self.source.pose

    def start(self) -> None:
        """Opens the model in a background thread (and warms it up), then makes
        :attr:`stream_workers` threads stepping the streams' model, while the upload process
        opens its own; :attr:`loaded` tells when both are done or one failed."""

        def prepare() -> None:
            try:
                from skelgraph.serve.batching import FrameBatcher

                uploads_ready = self.upload_worker.start()
                recognition = self.source.open()
                if self.warm_up:
                    seconds = recognition.warm_up(self.limits.max_sessions)
                    log.info(
                        "model ready for 1 to %d streams in %.1f s",
                        self.limits.max_sessions,
                        seconds,
                    )
                uploads_ready.result()
                self.lanes = [
                    FrameBatcher(
                        recognition,
                        ThreadPoolExecutor(1, thread_name_prefix=f"skelgraph-stream-{i}"),
                    )
                    for i in range(self.stream_workers)
                ]
                self.recognition = recognition
            except BaseException as e:  # reported by /health and by every route needing it
                log.error("the model could not be loaded: %s", e)
                self.error = e
                if self.on_failure is not None:
                    self.on_failure(e)
            finally:
                self.loaded.set()

        threading.Thread(target=prepare, name="skelgraph-load", daemon=True).start()

    def status(self) -> str:
        """``"warming"`` while the model loads, ``"ok"`` once it serves, ``"failed"``."""
        if not self.loaded.is_set():
            return "warming"
        return "failed" if self.error is not None else "ok"

    def model(self) -> Recognition:
        """The served model.

        Raises:
            InputError: 503 with the reason while it loads or when it failed to load.
        """
        if self.loaded.is_set() and self.recognition is not None:
            return self.recognition
        if self.error is None:
            raise InputError(
                "warming up: the model is being loaded, try again in a few seconds", status=503
            )
        raise InputError(f"unavailable: the model failed to load: {self.error}", status=503)

    def shutdown(self) -> None:
        """Stops the worker threads and the upload process, dropping the work still waiting."""
        for executor in (self.pose_worker, *(x.executor for x in self.lanes)):
            executor.shutdown(wait=False, cancel_futures=True)
        self.upload_worker.shutdown()

    def pose_state(self) -> dict[str, Any]:
        """``{"model", "available", "reason"}`` of the pose model (``reason`` why it is not)."""
        reason = self.pose.unavailable()
        return {"model": self.pose.model, "available": reason is None, "reason": reason}

    @contextmanager
    def stream_slot(self) -> Iterator[tuple[int, FrameBatcher]]:
        """Counts a stream as open for the ``with`` block; yields its number and the least busy
        stream worker's batcher, which serves it (the model must be loaded)."""
        self.sessions += 1
        self.opened += 1
        lane = min(self.lanes, key=lambda batcher: batcher.streams)
        lane.streams += 1
        try:
            yield self.opened, lane
        finally:
            self.sessions -= 1
            lane.streams -= 1

    @contextmanager
    def upload_slot(self) -> Iterator[None]:
        """Counts an upload as pending for the ``with`` block."""
        self.uploads += 1
        try:
            yield
        finally:
            self.uploads -= 1


def run_in(executor: Executor, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """``fn(*args)`` in ``executor``, awaited without blocking the event loop."""
    return asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args))


def service_state(connection: HTTPConnection) -> ServiceState:
    """The state of the service ``connection`` (a request or a WebSocket) reached."""
    return connection.app.state.service


#: A route parameter receiving the service's state.
Service = Annotated[ServiceState, Depends(service_state)]
