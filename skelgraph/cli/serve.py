"""``skelgraph serve``: the HTTP/WebSocket recognition service and its web page.

::

    skelgraph serve [--checkpoint penn-action-fast | FILE.pt] [--host 127.0.0.1] [--port 8000]
        [--pose-model yolo11n-pose.pt] [--input-layout coco17] [--device cpu]
        [--max-sessions 16] [--max-upload-mb 64] [--max-message-kb 2048] [--allow-origin URL]
        [--backend torch|onnxruntime]

Open ``http://HOST:PORT/`` for the page, ``/docs`` for the API. The server listens at once and
loads the model in the background (``/health`` says ``"warming"`` until it is ready); it exits
with status 1 when the model cannot be loaded. Needs the optional extra
``pip install "skelgraph[serve]"``; camera frames and videos also need ``skelgraph[pose]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

INSTALL_HINT = 'pip install "skelgraph[serve]"'
#: :data:`skelgraph.export.BACKENDS`, spelled out: the parser is built without importing torch
BACKENDS = ("torch", "onnxruntime")
#: seconds a thread holds the GIL before another waiting one gets it (Python's default: 0.005)
SWITCH_INTERVAL = 0.0005


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve recognition over HTTP/WebSocket with a web page (camera, video, skeletons)",
        description="Serve a model over HTTP and WebSocket: GET /health, GET /v1/models, POST "
        "/v1/recognize (skeleton file or video), WebSocket /v1/stream (keypoints or JPEG frames "
        "per message), and a web page at /. The server listens at once; /health says 'warming' "
        "until the model is loaded. Web pages of other origins are refused (--allow-origin), and "
        "so are requests to host names other than this machine's loopback names when bound to "
        f"a loopback address (against DNS rebinding). Needs {INSTALL_HINT}.",
    )
    parser.add_argument(
        "--checkpoint",
        default="penn-action-fast",
        help="checkpoint file or pretrained model name (default: penn-action-fast, the "
        "single-stream model, a quarter of the cost per frame of the penn-action ensemble)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--pose-model",
        help="YOLO pose model for camera frames and videos, e.g. yolo11n-pose.pt (needs "
        "skelgraph[pose]; default: none, keypoints and skeleton files only)",
    )
    parser.add_argument("--pose-device", help="pose model device, e.g. cpu, 0 (default: auto)")
    parser.add_argument("--pose-imgsz", type=int, help="pose inference image size")
    parser.add_argument(
        "--input-layout",
        default="coco17",
        help="layout of streamed keypoints unless a stream names one (default: coco17)",
    )
    parser.add_argument("--device", default="cpu", help="model device (default: cpu)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what runs the model: torch (its frame plan) or onnxruntime (its frame step "
        'exported to ONNX once, cached; needs pip install "skelgraph[onnx]") (default: torch)',
    )
    parser.add_argument(
        "--smoothing", type=float, default=0.0, help="probability smoothing (default: 0)"
    )
    parser.add_argument(
        "--max-sessions", type=int, default=16, help="WebSocket streams at once (default: 16)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=64.0, help="largest upload in MiB (default: 64)"
    )
    parser.add_argument(
        "--max-message-kb",
        type=float,
        default=2048.0,
        help="largest binary (JPEG) WebSocket message in KiB (default: 2048)",
    )
    parser.add_argument(
        "--max-text-kb",
        type=float,
        default=64.0,
        help="largest text (keypoints) WebSocket message in KiB (default: 64)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=3600,
        help="most frames of an uploaded clip or video (default: 3600)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=1920 * 1080,
        help="most pixels (width x height) of a JPEG frame or video frame (default: 1920x1080)",
    )
    parser.add_argument(
        "--max-pending-uploads",
        type=int,
        default=2,
        help="uploads received or processed at once; more get 503 before their body is read "
        "(default: 2)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of this origin (e.g. https://example.org) use the service; "
        "repeatable, '*' for any (default: only the pages the service serves itself); its host "
        "name is accepted too",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="close streams silent for this many seconds (default: 300)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's; 1 suits many small per-frame steps)",
    )
    parser.add_argument(
        "--stream-workers",
        type=int,
        default=1,
        help="threads stepping the streams' model, each batching its share of the streams "
        "(default: 1)",
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="serve as soon as the model is loaded instead of first running it for 1 to "
        "--max-sessions streams (the first busy seconds are then slower)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from skelgraph.serve import create_app
        from skelgraph.serve.origin import LOOPBACK_HOSTS
    except ImportError as e:
        print(f"skelgraph serve: error: {e} ({INSTALL_HINT})", file=sys.stderr)
        return 1
    # The event loop and the stream workers share the GIL; the model releases it while it
    # computes, and a worker taking it back waits until the holder switches. Python's default
    # switch interval (5 ms) would add up to that to many small steps of every frame.
    sys.setswitchinterval(SWITCH_INTERVAL)
    max_message_bytes = int(args.max_message_kb * 1024)
    try:
        app = create_app(
            args.checkpoint,
            pose_model=args.pose_model,
            pose_device=args.pose_device,
            pose_imgsz=args.pose_imgsz,
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_sessions=args.max_sessions,
            max_message_bytes=max_message_bytes,
            max_text_bytes=int(args.max_text_kb * 1024),
            input_layout=args.input_layout,
            device=args.device,
            smoothing=args.smoothing,
            max_frames=args.max_frames,
            max_pixels=args.max_pixels,
            idle_timeout=args.idle_timeout,
            max_pending_uploads=args.max_pending_uploads,
            stream_workers=args.stream_workers,
            allowed_origins=args.allow_origin,
            # a server reachable only from this machine answers only to its loopback names: a
            # page whose domain is made to resolve to 127.0.0.1 cannot reach it
            allowed_hosts=LOOPBACK_HOSTS if _is_loopback(args.host) else None,
            warm_up=args.warm_up,
            threads=args.threads,
            load_on_startup=False,
            backend=args.backend,
        )
    except (OSError, ValueError) as e:
        print(f"skelgraph serve: error: {e}", file=sys.stderr)
        return 1
    service = app.state.service

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            service.start()  # loading (torch alone takes seconds) begins once it listens

    # messages up to twice the limit reach the app, which closes with the reason; larger ones
    # are refused by the server itself (close code 1009). Per-message compression stays off:
    # keypoint messages are small, and deflating each costs more CPU than the bytes it saves.
    server = Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            ws_max_size=2 * max(max_message_bytes, int(args.max_text_kb * 1024)),
            ws_per_message_deflate=False,
        )
    )

    def stop(error: BaseException) -> None:
        server.should_exit = True

    service.on_failure = stop
    server.run()
    if service.error is not None:
        print(f"skelgraph serve: error: {service.error}", file=sys.stderr)
        return 1
    return 0


def _is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
