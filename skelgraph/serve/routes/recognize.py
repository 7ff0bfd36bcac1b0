"""Recognition of an uploaded skeleton file or video: ``POST /v1/recognize``.

The busy check comes before the body is read, so that refused uploads cost nothing; the body is
then received on the event loop (only appending its chunks) and everything else, from the
multipart parsing to the JSON answer, is done in the upload process
(:class:`~skelgraph.serve.uploads.UploadProcess`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from skelgraph.serve.inputs import InputError
from skelgraph.serve.state import Service

__all__ = ["router"]

router = APIRouter()

#: the request body, for the API description (the route reads it itself)
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


@router.post("/v1/recognize", openapi_extra={"requestBody": _UPLOAD_BODY})
async def recognize(request: Request, service: Service, keypoints: bool = False) -> Response:
    """Predictions for an uploaded skeleton file or video (multipart field ``file``)."""
    chunks = None
    try:
        service.model()  # 503 while it loads
        if service.uploads >= service.limits.max_pending_uploads:
            raise InputError(
                f"busy: {service.uploads} uploads are being processed, try again later", 503
            )
        with service.upload_slot():
            chunks = await _read_body(request, service.limits.max_upload_bytes)
            content_type = request.headers["content-type"]
            status, answer = await service.upload_worker.answer(chunks, content_type, keypoints)
    except InputError as e:
        headers = {"Retry-After": "5"} if e.status == 503 else {}
        if chunks is None:
            # refused before its body was read: closing the connection stops the client from
            # sending it (the server would otherwise receive and drop every byte)
            headers["Connection"] = "close"
        return _error(e.status, e.reason, headers)
    headers = {"Retry-After": "5"} if status == 503 else None
    return Response(answer, status, headers, media_type="application/json")


async def _read_body(request: Request, limit: int) -> list[bytes]:
    """The chunks of the request's ``multipart/form-data`` body, read up to ``limit`` bytes.

    Raises:
        InputError: 413 for a body above ``limit`` bytes (refused before it is read when its
            ``Content-Length`` says so), 415 for a body that is not ``multipart/form-data``,
            400 when the client leaves before the end of the body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(f"upload: expected at most {limit} bytes, got {declared}", status=413)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError(
            "upload: expected multipart/form-data with the file in field 'file' (e.g. curl "
            f"-F file=@clip.npz), got content type {request.headers.get('content-type')!r}",
            status=415,
        )
    chunks, received = [], 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise InputError(f"upload: expected at most {limit} bytes, got more", status=413)
            chunks.append(chunk)
    except ClientDisconnect:
        raise InputError("upload: the client left before sending the whole body", 400) from None
    return chunks


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)
