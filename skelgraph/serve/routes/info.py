"""What the service serves and how busy it is: ``GET /health`` and ``GET /v1/models``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

import skelgraph
from skelgraph.layouts import get_layout, list_layouts
from skelgraph.serve.inputs import InputError
from skelgraph.serve.state import Service

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
async def health(service: Service) -> JSONResponse:
    """Liveness and load: ``status`` (``"warming"`` while the model loads, then ``"ok"``; 503
    with ``"failed"`` and the ``error`` when it could not be loaded), the model, the sessions in
    use and the pose model's state."""
    status = service.status()
    body = {
        "status": status,
        "version": skelgraph.__version__,
        "model": service.name,
        "sessions": service.sessions,
        "max_sessions": service.limits.max_sessions,
        "uploads": service.uploads,
        "pose": service.pose_state(),
    }
    if status == "failed":
        body["error"] = str(service.error)
    return JSONResponse(body, status_code=503 if status == "failed" else 200)


@router.get("/v1/models", response_model=None)
async def models(service: Service) -> dict[str, Any] | JSONResponse:
    """The served model, the pose model, the limits and the joints and bones of every
    registered layout (for drawing); 503 until the model is loaded."""
    try:
        recognition = service.model()
    except InputError as e:
        return JSONResponse({"error": e.reason}, status_code=e.status)
    return {
        "models": [recognition.describe()],
        "pose": service.pose_state(),
        "limits": service.limits.to_dict(),
        "layouts": {
            name: {"joints": list(layout.joints), "bones": [list(b) for b in layout.bones]}
            for name in list_layouts()
            for layout in (get_layout(name),)
        },
    }
