"""Recognition of an uploaded skeleton file or video: ``POST /v1/recognize``."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from skelgraph.serve.inputs import InputError
from skelgraph.serve.state import Service, run_in

__all__ = ["router"]

router = APIRouter()


class UploadTooLarge(Exception):
    """The request body grew past the upload limit while it was read."""


@router.post("/v1/recognize")
async def recognize(request: Request, service: Service, keypoints: bool = False) -> Response:
    """Predictions for an uploaded skeleton file or video (multipart field ``file``)."""
    try:
        data, filename = await _read_upload(request, service.limits.max_upload_bytes)
    except InputError as e:
        return _error(e.status, e.reason)
    if service.uploads >= service.limits.max_pending_uploads:
        return _error(
            503,
            f"busy: {service.uploads} uploads are being processed, try again later",
            headers={"Retry-After": "5"},
        )
    recognize_upload = partial(service.recognition.recognize_upload, keypoints=keypoints)
    with service.upload_slot():
        try:
            result = await run_in(service.upload_worker, recognize_upload, data, filename)
        except InputError as e:
            return _error(e.status, e.reason)
    return JSONResponse(result)


async def _read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The content and file name of the request's multipart field ``file``, read up to ``limit``
    bytes.

    Raises:
        InputError: 413 for a body above ``limit`` bytes, 415 for a body that is not
            ``multipart/form-data``, 400 for a malformed body or one without the file.
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
        raise InputError(f"upload: expected at most {limit} bytes, got more", status=413) from None
    except Exception as e:  # the multipart parser's errors for malformed bodies
        raise InputError(f"upload: malformed multipart body ({e})", status=400) from e
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InputError(
                f"upload: expected a file in form field 'file', got fields {sorted(form.keys())}",
                status=400,
            )
        return await upload.read(), upload.filename or ""
    finally:
        await form.close()


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)
