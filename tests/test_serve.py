from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web service needs skelgraph[serve]")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient
from helpers import TINY_INFOGCN2, write_infogcn2_checkpoint
from serving import ready_client, running
from starlette.websockets import WebSocketDisconnect

from skelgraph.clip import SkeletonClip
from skelgraph.io import save_npz
from skelgraph.layouts import get_layout
from skelgraph.models import create
from skelgraph.models.checkpoint import make_meta, save_checkpoint
from skelgraph.preprocess import PreprocessConfig
from skelgraph.serve import create_app
from skelgraph.serve.inputs import InputError, jpeg_size, parse_keypoints

CLASSES = ["baseball_pitch", "jumping_jacks", "squat"]
NUM_FUTURE = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small InfoGCN++ (penn13, 3 classes) as a checkpoint."""
    return write_infogcn2_checkpoint(
        tmp_path_factory.mktemp("serve") / "tiny.pt",
        CLASSES,
        **TINY_INFOGCN2,
        num_future=NUM_FUTURE,
    )


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[TestClient]:
    app = create_app(
        checkpoint,
        max_sessions=2,
        max_upload_bytes=200_000,
        max_message_bytes=20_000,
        max_frames=500,
        max_errors=5,
        max_text_bytes=20_000,
    )
    with ready_client(app) as c:
        yield c


def person(num_frames: int, layout: str = "coco17", seed: int = 0) -> np.ndarray:
    """Keypoints :obj:`(T, V, 3)` of a moving person in pixels."""
    rng = np.random.default_rng(seed)
    V = get_layout(layout).num_joints
    base = rng.uniform(100, 400, (1, V, 2))
    t = np.arange(num_frames)[:, None, None]
    coords = base + 20 * np.sin(t / 5 + np.arange(V)[None, :, None])
    conf = np.full((num_frames, V, 1), 0.9)
    return np.concatenate([coords, conf], axis=-1).astype(np.float32)


def frame_message(kp: np.ndarray, **extra) -> str:
    return json.dumps({"keypoints": kp.tolist(), **extra})


def open_stream(client: TestClient, url: str = "/v1/stream"):
    ws = client.websocket_connect(url)
    session = ws.__enter__()
    hello = session.receive_json()
    assert hello["type"] == "hello", hello
    return ws, session, hello


def assert_closed(session, code: int, text: str) -> None:
    message = session.receive_json()
    assert message["type"] == "error" and text in message["error"], message
    with pytest.raises(WebSocketDisconnect) as info:
        session.receive_json()
    assert info.value.code == code
    assert text in info.value.reason


# ---------------------------------------------------------------------------------------------
# HTTP


def test_health_models_and_page(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["sessions"] == 0 and health["max_sessions"] == 2
    assert health["pose"]["available"] is False and "--pose-model" in health["pose"]["reason"]

    info = client.get("/v1/models").json()
    (model,) = info["models"]
    assert model["classes"] == CLASSES and model["layout"] == "penn13"
    assert model["input_layout"] == "coco17" and model["num_future"] == NUM_FUTURE
    assert info["limits"]["max_upload_bytes"] == 200_000
    assert len(info["layouts"]["coco17"]["joints"]) == 17
    assert [11, 5] in info["layouts"]["coco17"]["bones"] or [5, 11] in info["layouts"]["coco17"][
        "bones"
    ]

    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    # nothing is fetched from elsewhere: no absolute URLs in the page's files
    for name in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text, name


def test_recognize_json_and_npz(client: TestClient, tmp_path: Path) -> None:
    kp = person(24, "penn13")
    clip = {"keypoints": kp.tolist(), "layout": "penn13", "fps": 30}
    r = client.post("/v1/recognize", files={"file": ("clip.json", json.dumps(clip))})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "skeleton" and out["num_frames"] == 24 and out["layout"] == "penn13"
    assert out["label"] in CLASSES and set(out["probabilities"]) == set(CLASSES)
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-4
    assert [f["frame"] for f in out["frames"]] == list(range(24))
    assert out["label"] == out["frames"][-1]["label"]  # reduce "last"
    assert "keypoints" not in out

    save_npz(SkeletonClip(person(10), "coco17", label="squat", fps=25.0), tmp_path / "c.npz")
    with open(tmp_path / "c.npz", "rb") as f:
        r = client.post("/v1/recognize?keypoints=true", files={"file": ("c.npz", f)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["layout"] == "coco17" and out["fps"] == 25.0
    assert np.asarray(out["keypoints"]).shape == (10, 17, 3)
    assert out["bones"] == [list(b) for b in get_layout("coco17").bones]


def test_recognize_penn_action_mat(client: TestClient, penn_action_root: Path) -> None:
    path = penn_action_root / "labels" / "0001.mat"
    r = client.post("/v1/recognize", files={"file": ("0001.mat", path.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.json()["layout"] == "penn13" and r.json()["num_frames"] > 0


def test_upload_too_large(client: TestClient) -> None:
    big = b"0" * 250_000
    r = client.post("/v1/recognize", files={"file": ("big.json", big)})
    assert r.status_code == 413
    assert "at most 200000 bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        boundary = b"--x\r\nContent-Disposition: form-data; name=file; filename=a.json\r\n\r\n"
        yield boundary
        for _ in range(30):
            yield b"0" * 10_000

    r = client.post(
        "/v1/recognize",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413 and "at most 200000 bytes" in r.json()["error"]


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("keypoints.npy", b"\0" * 20_000_000)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("files", "status", "reason"),
    [
        ({"file": ("a.pkl", b"x")}, 415, "pickle files are not accepted"),
        ({"file": ("a.mp4", b"x")}, 415, "without a pose model"),
        ({"file": ("a.json", b"{nope")}, 422, "expected JSON"),
        ({"file": ("a.json", b'{"frames": []}')}, 422, "with 'keypoints'"),
        (
            {"file": ("a.json", json.dumps({"keypoints": [[[1, 2, 3]] * 17]}))},
            422,
            "frame 0: keypoints[0] (nose): expected a confidence in [0, 1], got 3",
        ),
        (
            {
                "file": (
                    "a.json",
                    json.dumps({"keypoints": [[[1, 2, 3, 1]] * 13], "layout": "penn13"}),
                )
            },
            422,
            "expected 3 channels per joint",
        ),
        (
            {"file": ("a.json", json.dumps({"keypoints": person(2).tolist(), "layout": "x"}))},
            400,
            "layout: expected one of",
        ),
        ({"file": ("a.npz", b"not a zip")}, 422, "expected an .npz archive"),
        ({"file": ("a.npz", zip_bomb())}, 413, "unpacks to"),
        ({"other": ("a.json", b"{}")}, 400, "expected a file in form field 'file'"),
    ],
)
def test_upload_errors(client: TestClient, files: dict, status: int, reason: str) -> None:
    r = client.post("/v1/recognize", files=files)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]


def test_upload_too_many_frames_and_not_multipart(client: TestClient, tmp_path: Path) -> None:
    save_npz(SkeletonClip(person(501), "coco17"), tmp_path / "long.npz")
    r = client.post(
        "/v1/recognize", files={"file": ("long.npz", (tmp_path / "long.npz").read_bytes())}
    )
    assert r.status_code == 413 and "at most 500 frames, got 501" in r.json()["error"]
    r = client.post("/v1/recognize", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# WebSocket


def test_stream_predictions(client: TestClient) -> None:
    kp = person(6)
    with client.websocket_connect("/v1/stream") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["classes"] == CLASSES
        assert hello["layout"] == "coco17" and hello["pose"] is False
        assert client.get("/health").json()["sessions"] == 1
        for t in range(6):
            ws.send_text(frame_message(kp[t]))
            reply = ws.receive_json()
            assert reply["type"] == "prediction" and reply["frame"] == t
            assert reply["label"] in CLASSES and reply["person"] is True
            assert reply["score"] == max(reply["probabilities"].values())
            assert abs(sum(reply["probabilities"].values()) - 1) < 1e-4
            assert np.asarray(reply["forecast"]).shape == (NUM_FUTURE, 17, 2)
            np.testing.assert_allclose(reply["keypoints"], kp[t], atol=0.01)
        ws.send_text(json.dumps({"reset": True}))
        assert ws.receive_json() == {"type": "reset", "layout": "coco17"}
        ws.send_text(frame_message(kp[0]))
        assert ws.receive_json()["frame"] == 0
    assert client.get("/health").json()["sessions"] == 0


def test_stream_layouts(client: TestClient) -> None:
    penn = person(3, "penn13")
    with client.websocket_connect("/v1/stream?layout=penn13") as ws:
        assert ws.receive_json()["layout"] == "penn13"
        ws.send_text(frame_message(penn[0]))
        assert ws.receive_json()["layout"] == "penn13"
        ws.send_text(frame_message(person(1)[0], layout="coco17"))  # a switch needs a reset
        error = ws.receive_json()["error"]
        assert "receives 'penn13' keypoints (1 frames so far), got 'coco17'" in error
        ws.send_text(json.dumps({"reset": True, "layout": "coco17"}))
        assert ws.receive_json()["layout"] == "coco17"
        ws.send_text(frame_message(person(1)[0]))
        assert ws.receive_json()["frame"] == 0
    with client.websocket_connect("/v1/stream") as ws:  # the first frame may name its layout
        ws.receive_json()
        ws.send_text(frame_message(penn[0], layout="penn13"))
        assert ws.receive_json()["layout"] == "penn13"
    with client.websocket_connect("/v1/stream?layout=nope") as ws:
        assert_closed(ws, 1008, "query layout: expected one of")


MALFORMED = [
    ("{not json", "message: expected JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"frames": 1}', "expected 'keypoints' or 'reset': true, got keys ['frames']"),
    ('{"keypoints": "x"}', "expected a list of 17 rows [x, y, confidence]"),
    ('{"keypoints": [[1, 2, 0.5]]}', "got 1 rows"),
    (json.dumps({"keypoints": [[1, 2]] * 17}), "keypoints[0] (nose): expected 3 numbers, got 2"),
    (json.dumps({"keypoints": [[1, "2", 1]] * 17}), "expected a number or null, got '2'"),
    (json.dumps({"keypoints": [[1, 2, 1.5]] * 17}), "expected a confidence in [0, 1], got 1.5"),
    (json.dumps({"keypoints": [[None, 2, 0.5]] * 17}), "expected finite coordinates"),
    (json.dumps({"keypoints": [[1, 2, 1]] * 17, "layout": "x"}), "layout: expected one of"),
]


def test_stream_malformed_messages_keep_the_session(client: TestClient) -> None:
    kp = person(2)
    with client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        ws.send_text(frame_message(kp[0]))
        assert ws.receive_json()["frame"] == 0
        for i, (message, reason) in enumerate(MALFORMED):
            ws.send_text(message)
            reply = ws.receive_json()
            assert reply["type"] == "error" and reason in reply["error"], (message, reply)
            if i % 4 == 3:  # a valid frame between; fewer than max_errors=5 in a row
                ws.send_text(frame_message(kp[1]))
                assert ws.receive_json()["type"] == "prediction"
        # missing joints: null coordinates with confidence 0 are accepted
        missing = kp[0].tolist()
        missing[3] = [None, None, 0]
        ws.send_text(json.dumps({"keypoints": missing}))
        reply = ws.receive_json()
        assert reply["type"] == "prediction" and reply["keypoints"][3] == [0, 0, 0]


def test_stream_closes_after_repeated_errors(client: TestClient) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
        for _ in range(4):
            ws.send_text("{}")
            assert ws.receive_json()["type"] == "error"
        ws.send_text("{}")
        assert_closed(ws, 1008, "5 malformed messages in a row")


def test_stream_oversized_message_and_jpeg_without_pose(client: TestClient) -> None:
    with client.websocket_connect("/v1/stream") as other:
        other.receive_json()
        with client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
            ws.send_text(" " * 20_001)
            assert_closed(ws, 1009, "message too big: 20001 bytes, limit 20000")
        with client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
            ws.send_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
            assert_closed(ws, 1003, "without a pose model")
        other.send_text(frame_message(person(1)[0]))  # the other session is unaffected
        assert other.receive_json()["frame"] == 0


def test_too_many_sessions(client: TestClient) -> None:
    kp = person(3)
    with client.websocket_connect("/v1/stream") as a, client.websocket_connect("/v1/stream") as b:
        a.receive_json()
        b.receive_json()
        with client.websocket_connect("/v1/stream") as c:
            assert_closed(c, 1013, "too many sessions: all 2 are in use")
        for t in range(3):  # the open sessions keep working
            a.send_text(frame_message(kp[t]))
            b.send_text(frame_message(kp[t]))
            assert a.receive_json()["frame"] == t
            assert b.receive_json()["frame"] == t
    with client.websocket_connect("/v1/stream") as c:  # slots are freed on disconnect
        assert c.receive_json()["type"] == "hello"


def test_idle_stream_is_closed(checkpoint: Path) -> None:
    with ready_client(create_app(checkpoint, idle_timeout=0.3)) as c:
        with c.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
            assert_closed(ws, 1000, "idle: no message for 0.3 s")
        assert c.get("/health").json()["sessions"] == 0


# ---------------------------------------------------------------------------------------------
# input validation without the app


def test_parse_keypoints_and_jpeg_size() -> None:
    layout = get_layout("penn13")
    rows = [[1.0, 2.0, 0.5]] * 13
    rows[2] = [None, None, 0]
    out = parse_keypoints(rows, layout)
    assert out.shape == (13, 3) and out.dtype == np.float32 and (out[2] == 0).all()
    with pytest.raises(
        InputError, match=r"keypoints\[0\]\[0\] \(head\): expected a number or null, got True"
    ):
        parse_keypoints([[True, 1, 1]] * 13, layout)
    assert parse_keypoints([[1, 2, 3, 1]] * 13, layout, channels=4).shape == (13, 4)

    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".jpg", np.zeros((48, 80, 3), np.uint8))
    assert ok and jpeg_size(encoded.tobytes()) == (80, 48)
    with pytest.raises(InputError, match="expected a JPEG image"):
        jpeg_size(b"\x89PNG....")


def test_jpeg_frames_with_pose_model(checkpoint: Path, monkeypatch, tmp_path: Path) -> None:
    """With an (untrained) YOLO pose model, JPEG frames get predictions; nobody is detected."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    cv2 = pytest.importorskip("cv2")
    app = create_app(checkpoint, pose_model="yolo11n-pose.yaml", pose_device="cpu", pose_imgsz=64)
    _, jpeg = cv2.imencode(".jpg", np.full((64, 96, 3), 128, np.uint8))
    with ready_client(app) as c, c.websocket_connect("/v1/stream?layout=penn13") as ws:
        assert ws.receive_json()["pose"] is True
        ws.send_bytes(jpeg.tobytes())
        reply = ws.receive_json()
        assert reply["type"] == "prediction" and reply["layout"] == "coco17"
        assert reply["label"] in CLASSES and np.asarray(reply["keypoints"]).shape == (17, 3)
        ws.send_bytes(b"\xff\xd8\xff" + bytes(50))
        assert "JPEG" in ws.receive_json()["error"]


# ---------------------------------------------------------------------------------------------
# command line and optional dependencies


def test_core_imports_without_fastapi() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "import skelgraph, skelgraph.cli\n"
        "from skelgraph.cli import main\n"
        "try:\n"
        "    import skelgraph.serve\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "sys.exit(main(['serve', '--checkpoint', 'x.pt']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert 'pip install "skelgraph[serve]"' in result.stdout
    assert "skelgraph[serve]" in result.stderr


def test_cli_serve_help_and_bad_checkpoint(tmp_path: Path) -> None:
    from skelgraph.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    assert main(["serve", "--checkpoint", str(tmp_path / "missing.pt")]) == 1


# ---------------------------------------------------------------------------------------------
# real sockets: uvicorn in a thread, several concurrent streams


@pytest.fixture
def server(checkpoint: Path) -> Iterator[str]:
    pytest.importorskip("websockets")
    with running(create_app(checkpoint, max_sessions=3)) as address:
        yield address


def test_concurrent_streams_over_sockets(server: str) -> None:
    import httpx
    import websockets

    async def stream(index: int, frames: int = 30, fps: float = 15.0) -> list[float]:
        kp = person(frames, seed=index)
        latencies = []
        async with websockets.connect(f"ws://{server}/v1/stream") as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            for t in range(frames):
                sent = time.perf_counter()
                await ws.send(frame_message(kp[t]))
                reply = json.loads(await ws.recv())
                latencies.append(time.perf_counter() - sent)
                assert reply["type"] == "prediction" and reply["frame"] == t, reply
                await asyncio.sleep(max(0.0, 1 / fps - latencies[-1]))
        return latencies

    async def too_many() -> tuple[int, str]:
        await asyncio.sleep(0.5)  # while the three streams run
        async with websockets.connect(f"ws://{server}/v1/stream") as ws:
            message = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code, message["error"]

    async def main() -> tuple[list[list[float]], tuple[int, str]]:
        *latencies, refused = await asyncio.gather(*(stream(i) for i in range(3)), too_many())
        return latencies, refused

    latencies, (code, error) = asyncio.run(main())
    assert all(len(x) == 30 for x in latencies)
    assert code == 1013 and "too many sessions" in error
    assert httpx.get(f"http://{server}/health").json()["sessions"] == 0


def test_pipelined_streams_are_batched_in_order(tmp_path: Path) -> None:
    """Streams that send without waiting for replies (frames, a malformed message, a reset, more
    frames) get every reply in order, and the batched steps of the streams together predict what
    a recogniser of each stream alone predicts, past the attention window."""
    pytest.importorskip("websockets")
    import websockets

    from skelgraph.online import OnlineRecognizer

    model = create("infogcn2", num_classes=len(CLASSES), layout="penn13", attention_window=8,
                   channels=16, depth=2, head_channels=16, decoder_channels=8)  # fmt: skip
    meta = make_meta(model="infogcn2", model_args=model.config, classes=CLASSES,
                     layout="penn13", in_channels=3, window=16,
                     preprocess=PreprocessConfig().to_dict())  # fmt: skip
    path = tmp_path / "windowed.pt"
    save_checkpoint(path, model, meta)
    streams, before, after = 3, 20, 5

    async def stream(address: str, index: int) -> list[dict]:
        kp = person(before + after, seed=index)
        async with websockets.connect(f"ws://{address}/v1/stream") as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            for t in range(before):
                await ws.send(frame_message(kp[t]))
            await ws.send("not json")
            await ws.send(json.dumps({"reset": True}))
            for t in range(before, before + after):
                await ws.send(frame_message(kp[t]))
            return [json.loads(await ws.recv()) for _ in range(before + after + 2)]

    async def main(address: str) -> list[list[dict]]:
        return await asyncio.gather(*(stream(address, i) for i in range(streams)))

    with running(create_app(path, max_sessions=streams)) as address:
        replies = asyncio.run(main(address))
    for index, got in enumerate(replies):
        kinds = [r["type"] for r in got]
        assert kinds == ["prediction"] * before + ["error", "reset"] + ["prediction"] * after
        assert [r["frame"] for r in got if r["type"] == "prediction"] == [
            *range(before),
            *range(after),
        ]
        kp = person(before + after, seed=index)
        alone = OnlineRecognizer.from_checkpoint(path, input_layout="coco17")
        expected = [alone.update(frame) for frame in kp[:before]]
        alone.reset()
        expected += [alone.update(frame) for frame in kp[before:]]
        predictions = [r for r in got if r["type"] == "prediction"]
        for reply, prediction in zip(predictions, expected, strict=True):
            probabilities = [reply["probabilities"][c] for c in CLASSES]
            np.testing.assert_allclose(probabilities, prediction.probabilities, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the web page in headless Chromium (Debian's chromium + playwright; skips without them)

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a synthetic camera picture
    "--use-fake-ui-for-media-stream",  # camera permission granted without a prompt
    "--no-sandbox",  # CI runs as root
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api", reason="needs pip install playwright")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def page_state(page) -> dict:
    return page.evaluate(
        """() => ({
            label: document.getElementById("label").textContent,
            status: document.getElementById("status").textContent,
            error: document.getElementById("error").hidden ? null
                : document.getElementById("error").textContent,
            bars: [...document.querySelectorAll(".bar .fill")].map((e) => e.offsetWidth),
            placeholder: !document.getElementById("placeholder").hidden,
            drawn: (() => {
                const c = document.getElementById("overlay");
                if (!c.width || !c.height) return 0;
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                return n;
            })(),
        })"""
    )


def test_page_replays_a_skeleton_file_with_live_labels(
    chromium, checkpoint: Path, tmp_path: Path
) -> None:
    clip = {"keypoints": person(60, "penn13").round(2).tolist(), "layout": "penn13", "fps": 30}
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(clip))
    with running(create_app(checkpoint)) as address:
        page = chromium.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"http://{address}/")
        page.wait_for_function("document.querySelectorAll('.bar').length === 3")
        page.set_input_files("#skeleton-file", str(path))
        page.wait_for_function(
            "/frame ([2-9]|[1-9][0-9])/.test(document.getElementById('status').textContent)",
            timeout=30_000,
        )
        seen = page_state(page)
        page.wait_for_function(
            "/frame (59)/.test(document.getElementById('status').textContent)", timeout=30_000
        )
        page.screenshot(path=str(tmp_path / "replay.png"))
        final = page_state(page)
    assert seen["label"] in CLASSES and final["label"] in CLASSES
    assert final["error"] is None
    assert all(width > 0 for width in final["bars"]) and not final["placeholder"]
    assert final["drawn"] > 100  # skeleton and forecast drawn on the overlay


def test_page_camera_with_fake_device(chromium, checkpoint: Path, tmp_path: Path) -> None:
    """The fake camera runs; with a pose model (ultralytics installed; an untrained one sees
    nobody) labels arrive marked "no person detected", without one the page says why there is
    no recognition."""
    try:
        import ultralytics  # noqa: F401

        pose = {"pose_model": "yolo11n-pose.yaml", "pose_device": "cpu", "pose_imgsz": 64}
    except ImportError:
        pose = {}
    with running(create_app(checkpoint, **pose)) as address:
        page = chromium.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"http://{address}/")
        page.wait_for_function("document.querySelectorAll('.bar').length === 3")
        page.click("#camera-start")
        page.wait_for_function("document.getElementById('video').videoWidth > 0")
        if pose:
            page.wait_for_function(
                "/frame [1-9]/.test(document.getElementById('status').textContent)",
                timeout=60_000,
            )
            state = page_state(page)
            assert state["label"] in CLASSES
            assert "no person detected" in state["status"]
        else:
            page.wait_for_function("!document.getElementById('error').hidden")
            state = page_state(page)
            assert "pose estimation is unavailable" in state["status"]
            assert "without a pose model" in state["error"]
            assert "Skeleton files work without it" in page.text_content("#pose-note")
        page.screenshot(path=str(tmp_path / "camera.png"))


def test_page_overlays_attention_edges(chromium, checkpoint: Path, tmp_path: Path) -> None:
    """With the toggle on, the stream's replies carry the model's strongest edges and the page
    draws them over the skeleton."""
    clip = {"keypoints": person(40, "penn13").round(2).tolist(), "layout": "penn13", "fps": 30}
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(clip))
    with running(create_app(checkpoint)) as address:
        page = chromium.new_page(viewport={"width": 1100, "height": 700})
        page.goto(f"http://{address}/")
        page.wait_for_function("document.querySelectorAll('.bar').length === 3")
        page.check("#attention-toggle")
        page.set_input_files("#skeleton-file", str(path))
        page.wait_for_function("state.attentionDrawn > 0", timeout=30_000)
        edges = page.evaluate("state.lastPrediction.attention")
    assert 0 < len(edges) <= 6 and all(len(edge) == 5 for edge in edges)
