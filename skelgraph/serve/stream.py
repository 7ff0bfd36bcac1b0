"""The protocol of one WebSocket stream (``/v1/stream``; see :mod:`skelgraph.serve.app` for the
messages and the close codes).

A :class:`StreamConnection` reads the stream's messages and queues a reply for each, in order,
without waiting for the replies before it, so that a stream that sends faster than it is answered
has its next frame in every batch of its :class:`~skelgraph.serve.batching.FrameBatcher`; it sends
the replies in the order of the messages.

Whatever a message holds, it gets a reply (an error reply for anything malformed, and for any
failure to process it), and however the reader ends, the sender learns of it, so that the stream
ends and its session slot is freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from skelgraph.layouts import Layout, get_layout
from skelgraph.serve.inputs import InputError, parse_keypoints, parse_message, resolve_layout_name
from skelgraph.serve.pose import PoseUnavailable
from skelgraph.serve.state import ServiceState, run_in

if TYPE_CHECKING:  # it imports torch, which the service loads in the background
    from skelgraph.serve.batching import FrameBatcher

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "CLOSE_UNSUPPORTED",
    "StreamConnection",
    "close_stream",
    "send_message",
]

#: WebSocket close codes
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER = (
    1000,
    1003,
    1008,
    1009,
    1013,
)

#: What the reader queues for the sender: a message's reply to come, ``(close code, reason)`` to
#: end the stream, or :obj:`None` when the client left.
Queued = asyncio.Future[Any] | tuple[int, str] | None

log = logging.getLogger("skelgraph.serve")


class StreamConnection:
    """One accepted WebSocket stream: its hello, then a reply per message, within the service's
    limits (message size, malformed messages in a row, idle time).

    Args:
        websocket (WebSocket): The accepted connection.
        service (ServiceState): The service's model, limits and workers.
        lane (FrameBatcher): The stream worker that runs this stream's frames.
        layout (Layout, optional): Layout of the keypoints the stream sends first; :obj:`None`
            for the service's input layout.
    """

    def __init__(
        self,
        websocket: WebSocket,
        service: ServiceState,
        lane: FrameBatcher,
        layout: Layout | None = None,
    ) -> None:
        self.websocket = websocket
        self.service = service
        self.recognition = service.model()
        self.lane = lane
        self.session = self.recognition.stream(layout)
        self.replies: asyncio.Queue[Queued] = asyncio.Queue()
        self.last: asyncio.Future[Any] | None = None  # the newest frame's reply

    async def run(self, number: int) -> None:
        """Sends the hello (the stream's ``number``, the model, its classes, the stream's layout,
        whether JPEG frames are accepted, the limits), then serves the stream until the client
        leaves or the stream is closed."""
        recognition, limits = self.recognition, self.service.limits
        hello = {
            "type": "hello",
            "session": number,
            "model": recognition.name,
            "classes": recognition.classes,
            "layout": self.session.layout.name,
            "pose": self.service.pose_state()["available"],
            "limits": {
                "max_message_bytes": limits.max_message_bytes,
                "max_text_bytes": limits.max_text_bytes,
                "idle_timeout": limits.idle_timeout,
            },
        }
        await send_message(self.websocket, hello)
        reader = asyncio.create_task(self._read_messages())
        try:
            await self._send_replies()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_messages(self) -> None:
        """Queues a reply per message until the client leaves or the stream must be closed; the
        sender is told whenever the reader ends, however it ends."""
        try:
            while (item := await self._read_message()) is not None:
                self.replies.put_nowait(item)
                if isinstance(item, tuple):
                    return
        finally:
            self.replies.put_nowait(None)

    async def _read_message(self) -> asyncio.Future[Any] | tuple[int, str] | None:
        """The reply to the next message, ``(close code, reason)`` to end the stream, or
        :obj:`None` when the client left."""
        limits = self.service.limits
        try:
            message = await asyncio.wait_for(self.websocket.receive(), limits.idle_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return CLOSE_NORMAL, f"idle: no message for {limits.idle_timeout:g} s"
        if message["type"] == "websocket.disconnect":
            return None
        text, data = message.get("text"), message.get("bytes")
        if data is not None and len(data) > limits.max_message_bytes:
            return CLOSE_TOO_BIG, (
                f"message too big: {len(data)} bytes, limit {limits.max_message_bytes}"
            )
        if text is not None and (size := _utf8_size(text)) > limits.max_text_bytes:
            return CLOSE_TOO_BIG, (
                f"text message too big: {size} bytes, limit {limits.max_text_bytes} (a frame of "
                "keypoints takes a few KB)"
            )
        try:
            reply = await (self._frame(data) if data is not None else self._text(text or ""))
        except PoseUnavailable as e:
            return CLOSE_UNSUPPORTED, e.reason
        except Exception as e:  # answered in its place, and the stream goes on
            reply = asyncio.get_running_loop().create_future()
            reply.set_result(e)
        if not reply.done():
            self.last = reply
        return reply

    async def _send_replies(self) -> None:
        """Sends the queued replies in order (an exception as an error message) until the
        client leaves or the stream is closed."""
        errors = 0  # malformed messages in a row
        while True:
            item = await self.replies.get()
            if item is None:
                return
            if isinstance(item, tuple):
                await close_stream(self.websocket, *item)
                return
            try:
                reply = await item
            except Exception as e:
                reply = e
            if isinstance(reply, Exception):
                errors += 1
                reason = _reason(reply)
                if errors >= self.service.limits.max_errors:
                    last_error = f"{errors} malformed messages in a row; last: {reason}"
                    await close_stream(self.websocket, CLOSE_POLICY, last_error)
                    return
                reply = {"type": "error", "error": reason}
            else:
                errors = 0
            await send_message(self.websocket, reply)

    async def _text(self, text: str) -> asyncio.Future[Any]:
        """The reply to a text message: a frame of keypoints or a reset."""
        obj = parse_message(text)
        layout = resolve_layout_name(obj["layout"]) if "layout" in obj else None
        if obj.get("reset") is True:
            if self.last is not None:  # the frames before the reset are answered first
                await asyncio.wait([self.last])
            done = asyncio.get_running_loop().create_future()
            done.set_result(self.session.reset(layout))
            return done
        if "attention" in obj and "keypoints" not in obj:
            self.session.attention = _attention_edges(obj["attention"])
            done = asyncio.get_running_loop().create_future()
            done.set_result({"type": "attention", "top_k": self.session.attention})
            return done
        if "keypoints" not in obj:
            raise InputError(
                f"message: expected 'keypoints' or 'reset': true, got keys {sorted(obj)}"
            )
        if layout is not None:
            self.session.use_layout(layout)
        channels = self.recognition.channels
        keypoints = parse_keypoints(obj["keypoints"], self.session.layout, channels)
        return self.lane.submit(self.session, keypoints)

    async def _frame(self, data: bytes) -> asyncio.Future[Any]:
        """The reply to a binary message: a JPEG frame, through the pose model."""
        reason = self.recognition.pose.unavailable()
        if reason is not None:
            raise PoseUnavailable(reason, status=415)
        self.session.use_layout(get_layout("coco17"))
        keypoints = await run_in(self.service.pose_worker, self.session.detect, data)
        return self.lane.submit(self.session, keypoints)


def _attention_edges(value: Any) -> int:
    """The ``attention`` of a message: edges of the live overlay per reply, 0 to 50."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 50:
        raise InputError(f"attention: expected an integer in [0, 50] (edges), got {value!r}")
    return value


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _reason(error: Exception) -> str:
    """What an error reply says: the reason of invalid input (a :class:`ValueError`, as the
    recogniser's shape errors), the kind of any other failure (logged with its traceback)."""
    if isinstance(error, ValueError):
        return str(error)
    log.error("a stream message failed", exc_info=error)
    return f"message: could not be processed ({type(error).__name__}); the stream goes on"


async def send_message(websocket: WebSocket, message: dict[str, Any]) -> None:
    """Sends ``message`` as compact JSON text."""
    await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def close_stream(websocket: WebSocket, code: int, reason: str) -> None:
    """Sends the reason as an error message, then closes with :obj:`code` (reason cut to the
    123 bytes a close frame allows)."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await send_message(websocket, {"type": "error", "error": reason, "close": code})
        await websocket.close(code, reason.encode()[:123].decode("utf-8", "ignore"))
    except (WebSocketDisconnect, RuntimeError):
        pass
