"""The web service: HTTP and WebSocket recognition plus a web page (``skelgraph serve``).

Needs the optional extra ``pip install "skelgraph[serve]"`` (FastAPI, uvicorn); JPEG frames and
videos also need ``skelgraph[pose]``. :func:`create_app` builds the app (see
:mod:`skelgraph.serve.app` for the endpoints and the streaming protocol).
"""

from skelgraph.serve.app import create_app

__all__ = ["create_app"]
