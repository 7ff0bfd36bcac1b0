"""The service against hostile and careless clients: every malformed message is answered and
its session freed, uploads are bounded before they cost memory, other sites are refused, and
nothing gets a bare 500 or a NaN."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web service needs skelgraph[serve]")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from helpers import TINY_INFOGCN2, write_infogcn2_checkpoint
from hostile import (
    EXTREME_MESSAGE,
    HOSTILE_MESSAGES,
    NESTED_MESSAGE,
    OVERFLOW_MESSAGE,
    big_video,
    extreme_npz,
    false_npz_header,
    mat_bomb,
)
from serving import health, ready_client, running, serve_process, wait_health
from starlette.websockets import WebSocketDisconnect

from skelgraph.clip import SkeletonClip
from skelgraph.serve import create_app
from skelgraph.serve.inputs import InputError, load_skeleton_upload

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_infogcn2_checkpoint(
        tmp_path_factory.mktemp("hostile") / "tiny.pt",
        CLASSES,
        **TINY_INFOGCN2,
        num_future=2,
    )


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[object]:
    with ready_client(create_app(checkpoint, max_sessions=2, max_upload_bytes=2_000_000)) as c:
        yield c


def frame(seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.uniform(100, 400, (17, 2)), np.full((17, 1), 0.9)], axis=1)
    return json.dumps({"keypoints": rows.round(2).tolist()})


# ---------------------------------------------------------------------------------------------
# one message never kills its stream nor holds a slot


def test_overflowing_and_nested_messages_are_answered_and_free_their_slot(client) -> None:
    """The 600-byte message with a 400-digit integer and deeply nested brackets get an error
    reply each, the stream goes on, and 13 clients sending them in turn (twice the sessions
    and more) leave every slot free: a new client is served, none gets 1013."""
    assert len(OVERFLOW_MESSAGE) == 601
    for _ in range(13):
        with client.websocket_connect("/v1/stream") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_text(OVERFLOW_MESSAGE)
            error = ws.receive_json()
            assert error["type"] == "error"
            assert "at most 32 digits, got a number of 400 digits" in error["error"]
            ws.send_text(NESTED_MESSAGE)
            assert "nested at most 32 levels deep, got 20000" in ws.receive_json()["error"]
            ws.send_text(frame())
            assert ws.receive_json()["type"] == "prediction"
    assert client.get("/health").json()["sessions"] == 0


@pytest.mark.parametrize("message", HOSTILE_MESSAGES)
def test_every_hostile_message_gets_an_error_reply(client, message: str) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        ws.send_text(message)
        reply = ws.receive_json()
        assert reply["type"] == "error" and reply["error"].startswith(("message", "keypoints"))
        ws.send_text(frame(1))
        assert ws.receive_json()["type"] == "prediction"


def test_extreme_coordinates_are_refused_and_never_poison_the_stream(client) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        ws.send_text(EXTREME_MESSAGE)
        reply = ws.receive_json()
        assert "expected coordinates within ±1e+06" in reply["error"], reply
        for seed in range(3):
            ws.send_text(frame(seed))
            reply = ws.receive_json()
            assert reply["type"] == "prediction"
            assert all(np.isfinite(list(reply["probabilities"].values())))


def test_a_stream_process_stops_on_sigterm_after_a_hostile_message(checkpoint: Path) -> None:
    """The stream that got the overflowing message used to hang the server's shutdown."""
    websockets = pytest.importorskip("websockets.sync.client")
    with serve_process("--checkpoint", str(checkpoint), "--max-sessions", "2") as (server, port):
        wait_health(port, "ok", timeout=240)
        with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            assert json.loads(ws.recv())["type"] == "hello"
            ws.send(OVERFLOW_MESSAGE)
            assert json.loads(ws.recv())["type"] == "error"
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    assert server.returncode in (0, -signal.SIGTERM), server.stderr.read()


# ---------------------------------------------------------------------------------------------
# listening at once


def test_health_answers_within_2_s_and_says_warming_until_the_model_is_ready(
    checkpoint: Path,
) -> None:
    websockets = pytest.importorskip("websockets.sync.client")
    started = time.monotonic()
    with serve_process("--checkpoint", str(checkpoint), "--max-sessions", "2") as (_, port):
        first = None
        while first is None and time.monotonic() - started < 10:
            first = health(port)
            time.sleep(0.02)
        answered = time.monotonic() - started
        assert first is not None and answered < 2.0, f"/health first answered after {answered} s"
        assert first["status"] == "warming"
        import httpx

        busy = httpx.post(f"http://127.0.0.1:{port}/v1/recognize", files={"file": ("a.json", b"")})
        assert busy.status_code == 503 and "warming up" in busy.json()["error"]
        with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            assert "warming up" in json.loads(ws.recv())["error"]
        assert wait_health(port, "ok", timeout=240)["model"] == "tiny"


def test_a_checkpoint_that_fails_to_load_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with serve_process("--checkpoint", str(bad)) as (server, _):
        assert server.wait(timeout=240) == 1
        assert "cannot be loaded" in server.stderr.read()


# ---------------------------------------------------------------------------------------------
# uploads


UPLOAD_CASES = [
    ("a.mat", b"MATLAB 5.0 MAT-file" + bytes(200), 422, "expected a MATLAB v5 .mat file"),
    ("a.npz", false_npz_header(), 422, "its header declares shape (1000000000000, 1, 3)"),
    ("a.npz", extreme_npz(), 422, "expected coordinates within ±1e+06"),
    ("a.json", b'{"keypoints": [[' + b"9" * 400 + b", 0, 1]]]}", 422, "a number of 400 digits"),
    ("a.json", b"[" * 100_000 + b"]" * 100_000, 422, "nested at most 32 levels deep"),
    ("a.json", b'{"keypoints": [[5]]}', 422, "frame 0: keypoints: expected a list of 17 rows"),
    ("a.json", b'{"keypoints": [[[1, 2, 1]]], "fps": NaN}', 422, "got NaN"),
    ("a." + "x" * 300, b"data", 415, "a suffix of at most 8 letters and digits"),
    ("a", b"data", 415, "no suffix"),
]


@pytest.mark.parametrize(("name", "data", "status", "reason"), UPLOAD_CASES)
def test_bad_uploads_get_a_4xx_with_the_reason(client, name, data, status, reason) -> None:
    r = client.post("/v1/recognize", files={"file": (name, data)})
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]


def test_mat_bomb_is_real_and_refused_before_it_unpacks(client) -> None:
    """The bomb is a valid MAT file that scipy would read whole (150 MB from 150 KB)."""
    import io
    import tracemalloc

    import scipy.io

    bomb = mat_bomb()
    assert len(bomb) < 200_000
    assert ("bbox", (4_687_500, 4), "double") in scipy.io.whosmat(io.BytesIO(bomb))
    r = client.post("/v1/recognize", files={"file": ("a.mat", bomb)})
    assert r.status_code == 413 and "unpacks to more than" in r.json()["error"], r.text
    # the upload process's loader, here, where its memory can be traced
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="unpacks to more than") as refused:
            load_skeleton_upload(bomb, "a.mat")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413 and peak < 30e6, peak


def test_video_pixel_limit(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """A 7680×7680 video is refused from its header, before a frame is decoded."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    pytest.importorskip("cv2")
    big_video(tmp_path / "big.avi")
    app = create_app(checkpoint, pose_model="yolo11n-pose.yaml", pose_device="cpu", pose_imgsz=64)
    with ready_client(app) as c:
        video = (tmp_path / "big.avi").read_bytes()
        r = c.post("/v1/recognize", files={"file": ("big.avi", video)})
    assert r.status_code == 413, r.text
    assert "at most 2073600 pixels per frame, got 7680x7680" in r.json()["error"]


def test_busy_check_before_the_body_and_parsing_in_the_upload_process(
    checkpoint: Path, monkeypatch
) -> None:
    """With one upload in progress (its body still arriving), the next gets 503 right after its
    headers, without sending its 60 MB; the multipart body is parsed in the upload process,
    never in the service's."""
    import skelgraph.serve.uploads

    parsed_here = []
    monkeypatch.setattr(skelgraph.serve.uploads, "file_field", parsed_here.append)
    app = create_app(checkpoint, max_pending_uploads=1, max_upload_bytes=64 * 2**20)
    with running(app) as address:
        host, port = address.split(":")
        head = (
            b"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 60000000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as first:
            first.sendall(head + b"--x\r\n")
            time.sleep(0.5)  # the first upload is being received
            with socket.create_connection((host, int(port)), timeout=10) as second:
                second.sendall(head)
                answer = b""
                while b"busy" not in answer and (chunk := second.recv(4096)):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"busy" in answer, answer
        import httpx

        ok = httpx.post(f"http://{address}/v1/recognize", files={"file": ("a.json", b"[]")})
        assert ok.status_code == 422 and "expected a JSON object" in ok.json()["error"], ok.text
        assert app.state.service.upload_worker.start().result() != os.getpid()
    assert not parsed_here


def test_an_upload_process_that_dies_is_replaced(checkpoint: Path, tmp_path: Path) -> None:
    """Killed while it runs a long clip, the upload process answers that upload with a 500 and
    the reason, and the next upload is recognised by a new one."""
    app = create_app(checkpoint, max_frames=20_000)
    clip = np.random.default_rng(0).uniform(0, 300, (20_000, 17, 3)).astype(np.float32)
    clip[..., 2] = 0.9
    with ready_client(app) as c:
        uploads = app.state.service.upload_worker
        first = uploads.start().result()
        answers, upload = [], npz(clip, tmp_path)
        sending = threading.Thread(
            target=lambda: answers.append(c.post("/v1/recognize", files={"file": upload}))
        )
        sending.start()
        deadline = time.monotonic() + 60
        while cpu_seconds(first) < 0.5:  # the clip is being recognised
            assert time.monotonic() < deadline and sending.is_alive(), answers
            time.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        sending.join(60)
        assert answers[0].status_code == 500, answers[0].text
        assert "the upload process ended (exit code -9)" in answers[0].json()["error"]
        again = c.post("/v1/recognize", files={"file": npz(clip[:30], tmp_path)})
        assert again.status_code == 200 and again.json()["num_frames"] == 30, again.text
        assert uploads.start().result() != first


def npz(keypoints: np.ndarray, folder: Path) -> tuple[str, bytes]:
    """An upload of ``coco17`` keypoints as ``.npz``."""
    SkeletonClip(keypoints, "coco17").save(folder / "clip.npz")
    return "clip.npz", (folder / "clip.npz").read_bytes()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# other sites


def test_other_origins_and_hosts_are_refused(checkpoint: Path) -> None:
    app = create_app(checkpoint, allowed_origins=["https://allowed.example"])
    with ready_client(app) as c:
        evil = {"origin": "http://evil.example"}
        r = c.post("/v1/recognize", files={"file": ("a.json", b"{}")}, headers=evil)
        assert r.status_code == 403 and "may not use this service" in r.json()["error"]
        with (
            pytest.raises(WebSocketDisconnect) as denied,
            c.websocket_connect("/v1/stream", headers=evil),
        ):
            pass
        assert denied.value.code == 1008  # closed before the handshake: HTTP 403
        # the page the service serves itself, and the allowed origin
        for origin in ("http://127.0.0.1", "https://allowed.example"):
            with c.websocket_connect("/v1/stream", headers={"origin": origin}) as ws:
                assert ws.receive_json()["type"] == "hello"
        # DNS rebinding: a page of rebound.example resolved to 127.0.0.1 is same-origin with it
        rebound = {"host": "rebound.example:8000", "origin": "http://rebound.example:8000"}
        assert c.get("/health", headers=rebound).status_code == 403
        with (
            pytest.raises(WebSocketDisconnect),
            c.websocket_connect("/v1/stream", headers=rebound),
        ):
            pass
        assert c.get("/health").json()["sessions"] == 0


def test_cli_allow_origin(checkpoint: Path) -> None:
    pytest.importorskip("websockets")
    import websockets

    with serve_process("--checkpoint", str(checkpoint), "--allow-origin", "http://app.example") as (
        _,
        port,
    ):
        wait_health(port, "ok", timeout=240)

        async def handshake(origin: str) -> str:
            try:
                async with websockets.connect(
                    f"ws://127.0.0.1:{port}/v1/stream", origin=origin
                ) as ws:
                    return json.loads(await ws.recv())["type"]
            except websockets.InvalidStatus as e:
                return str(e.response.status_code)

        assert asyncio.run(handshake("http://app.example")) == "hello"
        assert asyncio.run(handshake("http://evil.example")) == "403"


def test_help_documents_the_options(capsys) -> None:
    from skelgraph.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--allow-origin", "--max-text-kb", "--max-pixels", "--max-pending-uploads"):
        assert option in text
    assert "warming" in text and "DNS rebinding" in text
