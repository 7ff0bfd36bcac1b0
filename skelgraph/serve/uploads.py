"""Uploads recognised in a process of their own, so that they never slow the live streams.

An uploaded file is parsed and run through the model frame by frame: seconds of Python work for a
long clip, and a 60 MB body takes the multipart parser about 75 ms of it. In the service's own
process that work would hold the interpreter lock against the stream worker, whose model step
gives the lock up and takes it back at every operation, each time waiting out the other thread's
turn; a 5 ms step then takes 30 ms. The :class:`UploadProcess` does all of it in a child
process: it opens the same model from the service's :class:`~skelgraph.serve.source.ModelSource`
and gets the CPU only when the service leaves it idle, since a stream's frame is due in 33 ms and
an upload's answer is not. Hostile files are taken apart there too, away from the service's memory.

The service's process receives the body (only appending its chunks on the event loop), writes it
to a private temporary file in a thread (the writes release the lock) and hands the child the
file's path over a pipe. The child answers with a status and the JSON body: plain values, so
nothing the client controls is ever unpickled in the service. A child that dies (killed, out of
memory) is replaced by a new one for the next upload; the upload it was working on gets a 500
with the reason. The child holds only its own end of the pipe, so it ends when the service does,
however the service ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from skelgraph.serve.inputs import InputError
from skelgraph.serve.multipart import file_field

if TYPE_CHECKING:  # it imports torch, which only the child needs here
    from skelgraph.serve.service import Recognition
    from skelgraph.serve.source import ModelSource

__all__ = ["UploadProcess"]

log = logging.getLogger("skelgraph.serve")


class UploadProcess:
    """The child process recognising the service's uploads, one at a time.

    Every call to the child goes through one thread of the service (writing the body, sending
    its path, waiting for the answer), so uploads are answered in the order they were received.

    Args:
        source (ModelSource): The served model, opened again in the child.
    """

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._thread = _upload_thread()
        self._folder: Path | None = None  # the bodies' private folder, made on first use

    def start(self) -> Future[int]:
        """Starts the child (it imports torch and opens the model) unless it runs, without
        waiting for it.

        Returns:
            concurrent.futures.Future: The child's process id once its model is open; raises
            :class:`RuntimeError` when the child could not open it.
        """
        return self._thread.submit(lambda: self._connect()[0])

    async def answer(
        self, chunks: list[bytes], content_type: str, keypoints: bool
    ) -> tuple[int, bytes]:
        """The answer to an upload's ``multipart/form-data`` body, given as its chunks (emptied
        once written out).

        Returns:
            tuple[int, bytes]: The HTTP status and the JSON body: the predictions
            (:meth:`~skelgraph.serve.service.Recognition.recognize_upload`, with the clip's
            keypoints when asked for) or ``{"error": reason}``.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread, self._answer, chunks, content_type, keypoints
        )

    def shutdown(self) -> None:
        """Stops the child, dropping the uploads still waiting, and removes the temporary
        folder; :meth:`start` starts it again (an app served once more)."""
        thread, self._thread = self._thread, _upload_thread()
        thread.shutdown(wait=False, cancel_futures=True)
        self._stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _answer(self, chunks: list[bytes], content_type: str, keypoints: bool) -> tuple[int, bytes]:
        path = self._write(chunks)
        try:
            try:
                _, pipe = self._connect()
            except RuntimeError as e:
                return 503, _error(f"unavailable: {e}")
            try:
                pipe.send((str(path), content_type, keypoints))
                return pipe.recv()
            except (EOFError, OSError):
                code = self._stop()
                log.error("the upload process ended (exit code %s) during an upload", code)
                return 500, _error(
                    f"internal error: the upload process ended (exit code {code}) while it "
                    "processed this file; the service goes on"
                )
        finally:
            path.unlink(missing_ok=True)

    def _connect(self) -> tuple[int, Connection]:
        """The running child's process id and pipe, starting a child when none runs."""
        if self._process is not None and self._process.is_alive():
            assert self._pipe is not None
            return self._process.pid or 0, self._pipe
        self._stop()
        context = get_context("spawn")  # never fork a process that runs threads
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(theirs, self.source),
            name="skelgraph-uploads",
            daemon=True,
        )
        process.start()
        theirs.close()  # the child's end lives in the child only: it sees EOF when we end
        try:
            kind, value = ours.recv()
        except EOFError:
            process.join(5)
            kind, value = "failed", f"it exited with code {process.exitcode}"
        if kind != "ready":
            ours.close()
            process.join(5)
            raise RuntimeError(f"the upload process could not open the model: {value}")
        self._process, self._pipe = process, ours
        return value, ours

    def _stop(self) -> int | None:
        """Ends the child, if any; its exit code."""
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        if pipe is not None:
            pipe.close()  # the child leaves its loop at EOF
        if process is None:
            return None
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        return process.exitcode

    def _write(self, chunks: list[bytes]) -> Path:
        """The body in a new file of the private folder (readable by this user only)."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="skelgraph-uploads-"))
        handle, name = tempfile.mkstemp(suffix=".body", dir=self._folder)
        with open(handle, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
        chunks.clear()
        return Path(name)


def _upload_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="skelgraph-upload")


# ---------------------------------------------------------------------------------------------
# in the child


def _serve(pipe: Connection, source: ModelSource) -> None:
    """The child: opens the model, says so, then answers each upload file sent until the
    service closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the service, which stops us
    _run_when_idle()
    try:
        recognition = source.open()
    except Exception as e:
        pipe.send(("failed", f"{type(e).__name__}: {e}"))
        return
    pipe.send(("ready", os.getpid()))
    while True:
        try:
            path, content_type, keypoints = pipe.recv()
        except EOFError:
            return
        pipe.send(_recognize_file(recognition, path, content_type, keypoints))


def _run_when_idle() -> None:
    """Gives this process the CPU only when the service's threads leave it idle: Linux's
    ``SCHED_IDLE`` policy, elsewhere the lowest priority. A niceness alone still leaves it a
    share of a busy core: with niceness 10, three long clips in a row took the streams' p99 from
    37 to 280 ms on 2 cores, with ``SCHED_IDLE`` to 75 ms."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


def _recognize_file(
    recognition: Recognition, path: str, content_type: str, keypoints: bool
) -> tuple[int, bytes]:
    """The status and JSON body answering the upload body in file ``path``."""
    try:
        data, filename = file_field([Path(path).read_bytes()], content_type)
        result = recognition.recognize_upload(data, filename, keypoints=keypoints)
        return 200, json.dumps(result, allow_nan=False, separators=(",", ":")).encode()
    except InputError as e:
        return e.status, _error(e.reason)
    except Exception as e:  # a fault of the service, never the client's input
        log.exception("an upload failed", exc_info=e)
        return 500, _error(f"internal error ({type(e).__name__}); the request was not processed")


def _error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()
