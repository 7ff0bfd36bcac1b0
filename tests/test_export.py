"""Export to ONNX and torch.export programs, the check against the eager model, and the
onnxruntime backend of the online recogniser, recognize and serve."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_INFOGCN2, write_infogcn2_checkpoint

pytest.importorskip("onnx", reason="ONNX export needs the onnx extra (skelgraph[onnx])")
pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra (skelgraph[onnx])")
pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs skelgraph[onnx]")

import skelgraph.cli.export as export_cli
import skelgraph.cli.recognize as recognize_cli
import skelgraph.cli.serve as serve_cli
from skelgraph.cli import main
from skelgraph.clip import SkeletonClip
from skelgraph.data import example_clips
from skelgraph.export import (
    BACKENDS,
    FORMATS,
    OnnxRuntimeClip,
    OnnxRuntimePlan,
    check_export,
    export_model,
    inference_session,
    onnxruntime_backend,
    read_metadata,
)
from skelgraph.export.runtime import onnx_file
from skelgraph.models import create, load_pretrained
from skelgraph.models.checkpoint import load_checkpoint, make_meta
from skelgraph.online import OnlineRecognizer
from skelgraph.preprocess import PreprocessConfig
from skelgraph.streaming import build_plan

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["bowl", "jump", "squat", "pitch"]


@pytest.fixture(scope="module")
def fast() -> tuple[torch.nn.Module, dict]:
    """The packaged single-stream model (InfoGCN++, attention window 64)."""
    return load_pretrained("penn-action-fast")


@pytest.fixture(scope="module")
def fast_step(fast, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """penn-action-fast's frame step exported once into the tests' cache folder (the one the
    conftest points XDG_CACHE_HOME to, which the recognize test then reads); its file."""
    cache = tmp_path_factory.getbasetemp() / "cache" / "skelgraph" / "onnx"
    return onnx_file(fast[0], frame_step=True, cache_dir=cache)


@pytest.fixture(scope="module")
def stgcn() -> tuple[torch.nn.Module, dict]:
    """A small untrained ST-GCN (penn13, window 8) and its meta: a model that does not stream."""
    torch.manual_seed(0)
    model = create("stgcn", num_classes=4, layout="penn13", channels=[8], strides=[1]).eval()
    meta = make_meta(
        model="stgcn",
        model_args=model.config,
        classes=CLASSES,
        layout="penn13",
        in_channels=3,
        window=8,
        preprocess=PreprocessConfig().to_dict(),
    )
    return model, meta


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, dict]:
    """An untrained small InfoGCN++ checkpoint (penn13, velocity features, attention window 8)
    and its model and meta."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    model_args = {**TINY_INFOGCN2, "features": ["joint", "velocity"], "attention_window": 8}
    write_infogcn2_checkpoint(path, CLASSES, **model_args)
    return (path, *load_checkpoint(path))


def test_packaged_model_exports_with_its_metadata_and_passes_the_check(
    fast, tmp_path: Path, capsys
) -> None:
    """``skelgraph export NAME OUT --check``: penn-action-fast's clip scores at its reduction on
    the shipped example clips, within 1e-4 of the eager model in onnxruntime."""
    out = tmp_path / "fast.onnx"
    assert main(["export", "penn-action-fast", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "joints ['batch', 13, 'time', 3]" in printed and "logits ['batch', 15]" in printed
    assert "15 example clips of penn_action" in printed and printed.rstrip().endswith(
        "ok (tolerance 0.0001)"
    )
    metadata = read_metadata(out)
    model, meta = fast
    assert metadata["kind"] == "clip" and metadata["reduce"] == meta["inference"]["reduce"]
    assert metadata["meta"] == json.loads(json.dumps(meta))  # classes, layout, preprocess, ...
    assert metadata["meta"]["preprocess"]["causal"] is True
    check = check_export(out, model, meta=meta)
    assert check.runtime == "onnxruntime" and check.passed
    assert check.differences["logits"] <= 1e-4
    # batch and time are dynamic: one clip of 5 frames
    x = torch.randn(1, 13, 5, 3)
    (logits,) = inference_session(out).run(None, {"joints": x.numpy()})
    with torch.no_grad():
        expected = model.clip_logits(x, None, meta["inference"]["reduce"])
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("name", "layout", "channels"), [("infogcn2", "ntu25", 4), ("stgcn", "coco17", 3)]
)
def test_offline_models_round_trip_through_onnx(
    name: str, layout: str, channels: int, tmp_path: Path
) -> None:
    """A small model's clip scores in onnxruntime equal the eager model's, on the example clips
    mapped to its layout or, for 3D joints, on synthetic ones, and for any batch and length."""
    torch.manual_seed(0)
    args = TINY_INFOGCN2 if name == "infogcn2" else {"channels": [8, 8], "strides": [1, 2]}
    model = create(name, num_classes=5, layout=layout, in_channels=channels, **args).eval()
    out = tmp_path / f"{name}.onnx"
    metadata = export_model(model, out)
    assert metadata["meta"] is None and metadata["outputs"] == {"logits": ["batch", 5]}
    check = check_export(out, model)
    expected_inputs = "4 synthetic clips" if channels == 4 else "15 example clips"
    assert check.inputs.startswith(expected_inputs) and check.passed, check
    session = inference_session(out)
    V = model.layout.num_joints
    for shape in [(1, V, 2, channels), (3, V, 9, channels)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model.clip_logits(x)
        np.testing.assert_allclose(
            session.run(None, {"joints": x.numpy()})[0], expected.numpy(), atol=1e-4, rtol=0
        )


def test_frame_step_equals_the_model_for_200_frames(fast, fast_step: Path) -> None:
    """The exported frame step, its rings fed back, gives the model's own step for two streams
    of 200 frames (beyond the attention window of 64)."""
    model, meta = fast
    metadata = read_metadata(fast_step)
    assert metadata["kind"] == "frame_step"
    assert metadata["inputs"]["key_0"] == ["batch", 13, 4, 64, 8]
    assert metadata["outputs"]["forecast"] == ["batch", 3, 13, 2]
    check = check_export(fast_step, model, meta=meta, frames=200)
    assert check.inputs.startswith("2 streams of 200 frames") and check.passed, check
    assert set(check.differences) == {"logits", "forecast"}


def test_onnxruntime_plan_steps_streams_like_the_frame_plan(fast, fast_step: Path) -> None:
    """Behind a frame plan's interface, three streams at their own frames (one stepped alone,
    then all together, beyond the window) give the torch frame plan's outputs."""
    model, _ = fast
    runtime = OnnxRuntimePlan(model, inference_session(fast_step))
    plan = build_plan(model)
    x = torch.randn(3, 80, 13, 3).cumsum(1) * 0.05
    ours = [runtime.init_state(1) for _ in range(3)]
    theirs = [plan.init_state(1) for _ in range(3)]
    with torch.inference_mode():
        for t in range(80):
            streams = [0] if t < 10 else [0, 1, 2]  # streams 1 and 2 start 10 frames late
            frames = torch.stack([x[b, t if b == 0 else t - 10] for b in streams])
            got = runtime.step_streams(frames, [ours[b] for b in streams])
            expected = plan.step_streams(frames, [theirs[b] for b in streams])
            for a, b in zip(got[:2], expected[:2], strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        single = runtime.init_state(1)
        logits, forecast, single = runtime.step(x[0, :1], single)
    assert single.frames == 1 and ours[0].frames == 80 and ours[1].frames == 70
    assert logits.shape == (1, 15) and forecast.shape == (1, 3, 13, 2)
    with pytest.raises(ValueError, match=r"expected one-stream states .* \[2, 1\]"):
        runtime.step_streams(x[:2, 0], [runtime.init_state(2), runtime.init_state(1)])
    with pytest.raises(ValueError, match=r"x_t: expected shape \[1, 13, 3\]"):
        runtime.step(x[:2, 0], runtime.init_state(1))


def test_recognize_with_onnxruntime_predicts_as_torch(fast_step: Path, tmp_path: Path) -> None:
    """``skelgraph recognize --backend onnxruntime`` on an example clip: the frame step comes
    from the cache (no second export) and every frame's prediction equals torch's."""
    clip = next(p for p in example_clips("penn_action") if p.stem == "tennis_serve")
    records = {}
    for backend in BACKENDS:
        out = tmp_path / f"{backend}.jsonl"
        argv = ["recognize", str(clip), "--checkpoint", "penn-action-fast", "--quiet"]
        assert main([*argv, "--jsonl", str(out), "--backend", backend]) == 0
        records[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    torch_records, ort_records = records["torch"], records["onnxruntime"]
    assert [r["label"] for r in ort_records] == [r["label"] for r in torch_records]
    probabilities = np.array([r["probabilities"] for r in ort_records])
    expected = np.array([r["probabilities"] for r in torch_records])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4, rtol=0)
    forecast = np.array([r["forecast"] for r in ort_records], dtype=float)
    np.testing.assert_allclose(
        forecast, np.array([r["forecast"] for r in torch_records], dtype=float), atol=1e-2
    )  # pixels: the table rounds them to 0.01
    assert ort_records[-1]["label"] == "tennis_serve"


def test_exported_program_round_trip(tiny, tmp_path: Path) -> None:
    """A torch.export program of the frame step (with the metadata as an extra file) and of
    the clip scores (any length, 2 frames included) equal the eager model."""
    _, model, meta = tiny
    step = tmp_path / "step.pt2"
    metadata = export_model(model, step, meta=meta, format="exported-program", frame_step=True)
    assert read_metadata(step) == json.loads(json.dumps(metadata))
    assert metadata["meta"]["classes"] == CLASSES
    check = check_export(step, model, meta=meta, frames=40)  # window 8
    assert check.runtime == "torch.export" and check.passed, check
    clip = tmp_path / "clip.pt2"
    export_model(model, clip, meta=meta, format="exported-program")
    program = torch.export.load(clip).module()
    for frames in (1, 2, 11):
        x = torch.randn(2, 13, frames, 3)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model.clip_logits(x), atol=1e-5, rtol=0)


def test_recomputing_recognizer_on_onnxruntime(stgcn, tmp_path: Path) -> None:
    """A model that does not stream: the recogniser recomputes its window with the clip scores
    exported to ONNX (no forecast), to torch's probabilities, from a window of one frame on."""
    model, meta = stgcn
    plan = onnxruntime_backend(model, streaming=False, cache_dir=tmp_path)
    assert isinstance(plan, OnnxRuntimeClip) and len(list(tmp_path.glob("*.onnx"))) == 1
    ours = OnlineRecognizer(model, meta, plan=plan)
    theirs = OnlineRecognizer(model, meta)
    frames = np.random.default_rng(0).normal(100, 20, (12, 13, 3)).astype(np.float32)
    frames[..., 2] = 1.0
    for kp in frames:  # beyond the window of 8 frames
        a, b = ours.update(kp), theirs.update(kp)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert a.forecast is None and b.forecast is None


def test_export_is_atomic(stgcn, tmp_path: Path, monkeypatch) -> None:
    """A failing export leaves no file, no temporary file, and an existing file untouched."""
    model, meta = stgcn
    out = tmp_path / "model.pt2"
    out.write_bytes(b"before")

    def failing_save(program, f, **kwargs) -> None:
        f.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.export, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, out, meta=meta, format="exported-program")
    assert out.read_bytes() == b"before" and sorted(tmp_path.iterdir()) == [out]
    out.unlink()
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, out, meta=meta, format="exported-program")
    assert list(tmp_path.iterdir()) == []


def test_export_errors(tiny, stgcn, tmp_path: Path, capsys, monkeypatch) -> None:
    path, model, meta = tiny
    out = tmp_path / "out.onnx"
    with pytest.raises(ValueError, match=r"format: expected one of \('onnx', 'exported-program'\)"):
        export_model(model, out, format="tflite")
    with pytest.raises(SystemExit):
        main(["export", str(path), str(out), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="STGCN does not stream"):
        export_model(stgcn[0], out, frame_step=True)
    growing = create("infogcn2", num_classes=3, layout="penn13", **TINY_INFOGCN2)
    with pytest.raises(ValueError, match="attention_window"):
        export_model(growing, out, frame_step=True)
    euler = create("infogcn2", num_classes=3, ode_solver="euler", attention_window=4,
                   **TINY_INFOGCN2)  # fmt: skip
    with pytest.raises(ValueError, match="rk4 ode_solver, got 'euler'"):
        export_model(euler, out, frame_step=True)
    with pytest.raises(ValueError, match="does not exist"):
        export_model(model, tmp_path / "missing" / "out.onnx")
    assert main(["export", "no-such-model", str(out)]) == 1
    assert "not a pretrained model name" in capsys.readouterr().err
    assert main(["export", str(path), str(path)]) == 1
    assert "is also the checkpoint" in capsys.readouterr().err
    not_ours = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2),)), not_ours)
    with pytest.raises(ValueError, match="found no metadata"):
        read_metadata(not_ours)
    assert list(tmp_path.glob("*.onnx")) == []
    # without onnxruntime: a clear error naming the extra
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime is not installed.*skelgraph\[onnx\]"):
        OnlineRecognizer(model, meta, backend="onnxruntime")
    assert main(["recognize", str(example_clips()[0]), "--checkpoint", str(path),
                 "--backend", "onnxruntime", "--quiet"]) == 1  # fmt: skip
    assert 'pip install "skelgraph[onnx]"' in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend: expected one of"):
        OnlineRecognizer(model, meta, backend="tensorrt")


def test_the_parsers_spell_out_the_library_choices() -> None:
    """The command line lists formats and backends without importing torch."""
    assert export_cli.FORMATS == FORMATS
    assert recognize_cli.BACKENDS == serve_cli.BACKENDS == BACKENDS


def test_service_on_onnxruntime(fast, fast_step: Path) -> None:
    """``create_app(backend="onnxruntime")`` (``skelgraph serve --backend onnxruntime``): two
    streams stepped through the exported frame step (from the cache) and an uploaded clip, with
    the torch recogniser's probabilities."""
    pytest.importorskip("fastapi", reason="the web service needs skelgraph[serve]")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from serving import ready_client

    from skelgraph.serve import create_app

    app = create_app("penn-action-fast", max_sessions=2, backend="onnxruntime")
    clip = next(p for p in example_clips("penn_action") if p.stem == "squat")
    frames = SkeletonClip.load(clip).keypoints[:20]
    with ready_client(app) as client:
        assert isinstance(app.state.service.recognition.plan, OnnxRuntimePlan)
        with (
            client.websocket_connect("/v1/stream?layout=penn13") as a,
            client.websocket_connect("/v1/stream?layout=penn13") as b,
        ):
            assert a.receive_json()["type"] == b.receive_json()["type"] == "hello"
            expected = OnlineRecognizer(*fast)
            for kp in frames:
                a.send_text(json.dumps({"keypoints": np.nan_to_num(kp).tolist()}))
                b.send_text(json.dumps({"keypoints": np.nan_to_num(kp).tolist()}))
                replies = [a.receive_json(), b.receive_json()]
                probabilities = expected.update(np.nan_to_num(kp)).probabilities
                for reply in replies:
                    got = [reply["probabilities"][c] for c in expected.classes]
                    np.testing.assert_allclose(got, probabilities, atol=1e-4)
        with open(clip, "rb") as f:
            upload = client.post("/v1/recognize", files={"file": ("squat.npz", f)}).json()
    keypoints = np.nan_to_num(SkeletonClip.load(clip).keypoints)
    last = OnlineRecognizer(*fast).run(keypoints)[-1].probabilities
    np.testing.assert_allclose(upload["frames"][-1]["probabilities"], last, atol=1e-4)
