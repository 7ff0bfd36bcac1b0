"""The state of one running service, shared by its routes: the model, the limits, the worker
threads and the counters of open streams and uploads.

:func:`create_app <skelgraph.serve.create_app>` stores it as ``app.state.service``; a route takes it
as a parameter annotated :data:`Service` (a FastAPI dependency). Every route runs on the event
loop, so the counters need no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from starlette.requests import HTTPConnection

from skelgraph.serve.batching import FrameBatcher
from skelgraph.serve.service import Recognition

__all__ = ["Limits", "Service", "ServiceState", "run_in", "service_state"]

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What the service accepts (see :func:`~skelgraph.serve.create_app` for each)."""

    max_upload_bytes: int
    max_sessions: int
    max_message_bytes: int
    max_frames: int
    max_errors: int
    idle_timeout: float
    max_pending_uploads: int

    def to_dict(self) -> dict[str, Any]:
        """The limits by name, in the order above."""
        return asdict(self)


@dataclass
class ServiceState:
    """The model, limits, workers and load of one service.

    Attributes:
        recognition (Recognition): The served model.
        limits (Limits): What the service accepts.
        pose_worker (Executor): The thread estimating the poses of streamed JPEG frames.
        upload_worker (Executor): The thread recognising uploads.
        lanes (list[FrameBatcher]): One per stream worker thread, each batching the frames of
            its share of the streams.
        sessions (int): Streams open now.
        uploads (int): Uploads being processed or waiting now.
        opened (int): Streams opened since the start (each stream's number).
    """

    recognition: Recognition
    limits: Limits
    pose_worker: Executor
    upload_worker: Executor
    lanes: list[FrameBatcher]
    sessions: int = 0
    uploads: int = 0
    opened: int = 0

    @classmethod
    def start(cls, recognition: Recognition, limits: Limits, stream_workers: int) -> ServiceState:
        """The state of a new service with its worker threads: one for pose estimation, one for
        uploads and ``stream_workers`` stepping the streams' model."""
        lanes = [
            FrameBatcher(
                recognition, ThreadPoolExecutor(1, thread_name_prefix=f"skelgraph-stream-{i}")
            )
            for i in range(stream_workers)
        ]
        return cls(
            recognition,
            limits,
            pose_worker=ThreadPoolExecutor(1, thread_name_prefix="skelgraph-pose"),
            upload_worker=ThreadPoolExecutor(1, thread_name_prefix="skelgraph-upload"),
            lanes=lanes,
        )

    def shutdown(self) -> None:
        """Stops the worker threads, dropping the work still waiting."""
        for executor in (self.pose_worker, self.upload_worker, *(x.executor for x in self.lanes)):
            executor.shutdown(wait=False, cancel_futures=True)

    def pose_state(self) -> dict[str, Any]:
        """``{"model", "available", "reason"}`` of the pose model (``reason`` why it is not)."""
        reason = self.recognition.pose.unavailable()
        return {"model": self.recognition.pose.model, "available": reason is None, "reason": reason}

    @contextmanager
    def stream_slot(self) -> Iterator[tuple[int, FrameBatcher]]:
        """Counts a stream as open for the ``with`` block; yields its number and the least busy
        stream worker's batcher, which serves it."""
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
