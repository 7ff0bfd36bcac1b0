"""What the service serves and how busy it is: ``GET /health`` and ``GET /v1/models``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

import skelgraph
from skelgraph.layouts import get_layout, list_layouts
from skelgraph.serve.state import Service

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
async def health(service: Service) -> dict[str, Any]:
    """Liveness and load: the model, the sessions in use and the pose model's state."""
    return {
        "status": "ok",
        "version": skelgraph.__version__,
        "model": service.recognition.name,
        "sessions": service.sessions,
        "max_sessions": service.limits.max_sessions,
        "uploads": service.uploads,
        "pose": service.pose_state(),
    }


@router.get("/v1/models")
async def models(service: Service) -> dict[str, Any]:
    """The served model, the pose model, the limits and the joints and bones of every
    registered layout (for drawing)."""
    return {
        "models": [service.recognition.describe()],
        "pose": service.pose_state(),
        "limits": service.limits.to_dict(),
        "layouts": {
            name: {"joints": list(layout.joints), "bones": [list(b) for b in layout.bones]}
            for name in list_layouts()
            for layout in (get_layout(name),)
        },
    }
