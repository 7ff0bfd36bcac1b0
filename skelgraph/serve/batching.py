"""Batching the frames of many streams into one model step per stream worker."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

import numpy as np

from skelgraph.serve.service import Recognition, StreamSession

__all__ = ["FrameBatcher"]


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
