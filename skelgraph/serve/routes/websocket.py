"""The live stream: ``WebSocket /v1/stream``, one recogniser per connection (the protocol is
:class:`~skelgraph.serve.stream.StreamConnection`'s)."""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from skelgraph.serve.inputs import InputError, resolve_layout_name
from skelgraph.serve.state import Service
from skelgraph.serve.stream import CLOSE_POLICY, CLOSE_TRY_LATER, StreamConnection, close_stream

__all__ = ["router"]

router = APIRouter()


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket, service: Service, layout: str | None = None) -> None:
    """One recogniser per connection (see the module description for the protocol)."""
    await websocket.accept()
    try:
        service.model()
    except InputError as e:  # still loading, or failed to load
        await close_stream(websocket, CLOSE_TRY_LATER, e.reason)
        return
    limit = service.limits.max_sessions
    if service.sessions >= limit:
        reason = f"too many sessions: all {limit} are in use, try again later"
        await close_stream(websocket, CLOSE_TRY_LATER, reason)
        return
    try:
        start_layout = None if layout is None else resolve_layout_name(layout, "query layout")
    except InputError as e:
        await close_stream(websocket, CLOSE_POLICY, e.reason)
        return
    with service.stream_slot() as (number, lane), suppress(WebSocketDisconnect):
        await StreamConnection(websocket, service, lane, start_layout).run(number)
