"""The service's routes, one :class:`~fastapi.APIRouter` per concern, in the order
:func:`~skelgraph.serve.create_app` includes them.

* :mod:`~skelgraph.serve.routes.pages` — the web page.
* :mod:`~skelgraph.serve.routes.info` — ``/health`` and ``/v1/models``.
* :mod:`~skelgraph.serve.routes.recognize` — ``POST /v1/recognize`` (uploads).
* :mod:`~skelgraph.serve.routes.websocket` — ``WebSocket /v1/stream``.
"""
