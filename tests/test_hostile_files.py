"""Hostile and careless files and arguments for the loaders and the command line: nothing runs
code, nothing unpacks without bound, every bad input is a one-line error naming what is wrong,
nothing is written before the inputs are checked, and nothing written is lost."""

from __future__ import annotations

import copy
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_INFOGCN2, write_infogcn2_checkpoint
from hostile import extreme_npz, false_npz_header, zip_bomb
from test_data import make_penn_root, random_clip

from skelgraph.cli import main
from skelgraph.clip import SkeletonClip
from skelgraph.data import SkeletonFolder
from skelgraph.io import load_pyskl, save_pyskl
from skelgraph.online import OnlineRecognizer

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, command: str) -> str:
    """The command's stderr, checked to be one line ``skelgraph COMMAND: error: ...``."""
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"skelgraph {command}: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_infogcn2_checkpoint(
        tmp_path_factory.mktemp("files") / "tiny.pt",
        ["a", "b"],
        **TINY_INFOGCN2,
        num_future=2,
    )


@pytest.fixture
def clip_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 100, (12, 13, 2)), np.ones((12, 13, 1))], axis=-1)
    SkeletonClip(kp.astype(np.float32), "penn13", fps=30.0).save(tmp_path / "clip.npz")
    return tmp_path / "clip.npz"


# ---------------------------------------------------------------------------------------------
# pickles: no code runs


class RunsCode:
    """An object whose unpickling calls ``os.system`` (it would create the marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pyskl_pickle_that_runs_code_is_refused(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    annotation = {"keypoint": np.zeros((1, 2, 17, 2)), "label": 0, "frame_dir": "a"}
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump([{**annotation, "total_frames": 2, "x": RunsCode(marker)}], f)
    assert main(["convert", "pyskl", str(tmp_path / "evil.pkl"), str(tmp_path / "out")]) == 1
    err = one_line_error(capsys, "convert")
    assert "refusing to load posix.system" in err and "trust_pickle" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_trust_pickle_loads_other_objects(tmp_path: Path, capsys) -> None:
    import datetime

    clips = [random_clip(i, 6, label=i % 2, source=f"s{i}") for i in range(2)]
    save_pyskl(clips, tmp_path / "ann.pkl")
    with open(tmp_path / "ann.pkl", "rb") as f:
        annotations = pickle.load(f)
    annotations[0]["recorded"] = datetime.date(2020, 1, 1)  # not an array nor builtin
    with open(tmp_path / "dated.pkl", "wb") as f:
        pickle.dump(annotations, f)
    argv = ["convert", "pyskl", str(tmp_path / "dated.pkl"), str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 1
    assert "refusing to load datetime.date" in one_line_error(capsys, "convert")
    assert main([*argv, "--trust-pickle"]) == 0
    assert SkeletonFolder(tmp_path / "out", cache_dir=tmp_path / "cache").num_clips == 2
    with pytest.raises(SystemExit):
        main(["convert", "pyskl", "--help"])
    assert "WARNING: unpickle with no restriction" in " ".join(capsys.readouterr().out.split())


MALFORMED_PYSKL = [
    ({"keypoint": "x"}, "field 'keypoint' expected a numeric array"),
    ({"keypoint": np.zeros((6, 17, 2))}, "field 'keypoint' expected shape (M, T, V, 2 or 3)"),
    ({"keypoint": [[["a"]]]}, "field 'keypoint' expected a numeric array"),
    ({"keypoint": [[1, 2], [3]]}, "field 'keypoint' expected a numeric array"),
    ({"total_frames": "6"}, "field 'total_frames' expected an integer, got '6'"),
    ({"total_frames": None}, "field 'total_frames' expected an integer, got None"),
    ({"label": 1.5}, "clip.label: expected an int class index"),
    ({"label": 10**20}, "label: expected a class index in [0, 100000)"),
    ({"frame_dir": 5}, "field 'frame_dir' expected a str, got 5"),
    ({"img_shape": 5}, "field 'img_shape' expected (height, width), got 5"),
    ({"img_shape": (1e400, 2)}, "field 'img_shape' expected (height, width)"),
    ({"keypoint_score": np.ones((1, 6, 3))}, "field 'keypoint_score' expected shape (1, 6, 17)"),
    ({"keypoint": np.full((1, 6, 17, 2), 1e15)}, "expected coordinates within ±1e+06"),
]


@pytest.mark.parametrize(("change", "reason"), MALFORMED_PYSKL)
def test_malformed_pyskl_fields_are_one_line_errors(
    tmp_path: Path, capsys, change: dict, reason: str
) -> None:
    clips = [random_clip(i, 6, label=0, source=f"s{i}") for i in range(2)]
    save_pyskl(clips, tmp_path / "ann.pkl")
    with open(tmp_path / "ann.pkl", "rb") as f:
        annotations = pickle.load(f)
    annotations[1].update(change)
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump(annotations, f)
    argv = ["convert", "pyskl", str(tmp_path / "bad.pkl"), str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 1
    err = one_line_error(capsys, "convert")
    assert reason in err, err
    assert "annotations[1]" in err or "'s1'" in err, err
    assert not (tmp_path / "out").exists()


def test_malformed_pyskl_containers(tmp_path: Path) -> None:
    for content, reason in [
        ({"split": 5, "annotations": []}, "'split': expected a dict"),
        ({"split": {"a": 5}, "annotations": []}, "'split': expected a dict"),
        ({"annotations": {"a": 1}}, "'annotations': expected a list, got dict"),
        ("text", "expected a list of annotations"),
    ]:
        with open(tmp_path / "c.pkl", "wb") as f:
            pickle.dump(content, f)
        with pytest.raises(ValueError, match=reason):
            load_pyskl(tmp_path / "c.pkl")
    (tmp_path / "c.pkl").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="cannot be unpickled"):
        load_pyskl(tmp_path / "c.pkl")


# ---------------------------------------------------------------------------------------------
# .npz and .mat: sizes checked before anything is unpacked


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (zip_bomb(), "unpacks to more than"),
        (false_npz_header(), "its header declares shape (1000000000000, 1, 3)"),
        (extreme_npz(), "expected coordinates within ±1e+06"),
    ],
)
def test_recognize_refuses_hostile_npz(
    tmp_path: Path, capsys, checkpoint: Path, data: bytes, reason: str
) -> None:
    (tmp_path / "x.npz").write_bytes(data)
    out = tmp_path / "out.jsonl"
    assert main(["recognize", str(tmp_path / "x.npz"), "--checkpoint", str(checkpoint),
                 "--jsonl", str(out), "--quiet"]) == 1  # fmt: skip
    assert reason in one_line_error(capsys, "recognize")
    assert not out.exists()


def test_corrupt_mat_in_a_penn_folder(tmp_path: Path, capsys) -> None:
    root = make_penn_root(tmp_path / "penn", [("squat", True, 8), ("bowl", False, 7)])
    mats = sorted((root / "labels").glob("*.mat"))
    data = mats[1].read_bytes()
    mats[1].write_bytes(data[: len(data) // 2])  # truncated
    assert main(["convert", "penn-action", str(root), str(tmp_path / "out"), "--quiet"]) == 1
    err = one_line_error(capsys, "convert")
    assert str(mats[1]) in err and "corrupt" in err
    assert not (tmp_path / "out").exists()
    mats[1].write_bytes(b"\x89HDF\r\n" + bytes(600))
    assert main(["convert", "penn-action", str(root), str(tmp_path / "out"), "--quiet"]) == 1
    assert "expected a MATLAB v5 .mat file" in one_line_error(capsys, "convert")


# ---------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m["model_args"].update(bogus=1), "unexpected keyword argument 'bogus'"),
        (lambda m: m.pop("window"), "meta lacks ['window']"),
        (lambda m: m["model_args"].update(channels=100000), "far more than its weights"),
        (lambda m: m.update(layout=5), "meta does not describe a model"),
    ],
)
def test_checkpoint_meta_errors(
    tmp_path: Path, capsys, checkpoint: Path, clip_path: Path, change, reason: str
) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state = copy.deepcopy(state)
    change(state["meta"])
    torch.save(state, tmp_path / "bad.pt")
    start = time.monotonic()
    assert main(["recognize", str(clip_path), "--checkpoint", str(tmp_path / "bad.pt")]) == 1
    assert reason in one_line_error(capsys, "recognize")
    assert time.monotonic() - start < 30  # refused, not 30 GB allocated
    assert main(["test", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(tmp_path)]) == 1
    assert reason in one_line_error(capsys, "test")


def test_test_out_on_a_file_is_refused_before_evaluating(
    tmp_path: Path, capsys, checkpoint: Path
) -> None:
    (tmp_path / "report").write_text("keep")
    argv = ["test", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "missing")]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 1
    assert "is a file, expected a folder" in one_line_error(capsys, "test")
    assert (tmp_path / "report").read_text() == "keep"


# ---------------------------------------------------------------------------------------------
# recognize: arguments, outputs, never NaN


def test_recognize_fps_out_of_range(capsys, checkpoint: Path, clip_path: Path) -> None:
    for fps in ("1e9", "0", "nan"):
        assert main(["recognize", str(clip_path), "--checkpoint", str(checkpoint),
                     "--fps", fps]) == 1  # fmt: skip
        assert "--fps: expected a frame rate in (0, 1000]" in one_line_error(capsys, "recognize")


def test_recognize_outputs_never_overwrite_inputs(
    tmp_path: Path, capsys, checkpoint: Path, clip_path: Path
) -> None:
    before = clip_path.read_bytes()
    base = ["recognize", str(clip_path), "--checkpoint", str(checkpoint), "--quiet"]
    assert main([*base, "--jsonl", str(clip_path)]) == 1
    assert "is also SOURCE" in one_line_error(capsys, "recognize")
    assert main([*base, "--out", str(checkpoint)]) == 1
    assert "is also --checkpoint" in one_line_error(capsys, "recognize")
    same = str(tmp_path / "same")
    assert main([*base, "--out", same, "--jsonl", same]) == 1
    assert "is also --" in one_line_error(capsys, "recognize")
    assert clip_path.read_bytes() == before


def test_extreme_coordinates_never_give_nan(checkpoint: Path, tmp_path: Path) -> None:
    recognizer = OnlineRecognizer.from_checkpoint(checkpoint)
    kp = np.ones((13, 3), np.float32)
    kp[:, :2] = 1e15 * (-1.0) ** np.arange(13)[:, None]
    with pytest.raises(ValueError, match="expected coordinates within ±1e\\+06"):
        recognizer.update(kp)
    with pytest.raises(ValueError, match="coordinates within"):
        SkeletonClip(kp[None], "penn13")
    kp[:, :2] = 1e6 * (-1.0) ** np.arange(13)[:, None]  # the largest accepted stays finite
    for _ in range(3):
        prediction = recognizer.update(kp)
        assert np.isfinite(prediction.probabilities).all()
        assert np.isfinite(prediction.forecast).all()


# ---------------------------------------------------------------------------------------------
# convert and skeleton folders: nothing lost


def test_convert_refuses_a_foreign_folder_unless_overwrite(tmp_path: Path, capsys) -> None:
    root = make_penn_root(tmp_path / "penn", [("squat", True, 8)])
    dst = tmp_path / "out"
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet"]) == 0
    (dst / "notes.txt").write_text("mine")
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet"]) == 1
    assert "notes.txt" in one_line_error(capsys, "convert")
    assert (dst / "notes.txt").read_text() == "mine"
    (dst / "notes.txt").unlink()
    (dst / "clips" / "mine.csv").write_text("x")
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet"]) == 1
    assert "clips/mine.csv" in one_line_error(capsys, "convert")
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet", "--overwrite"]) == 0
    assert sorted(p.name for p in (dst / "clips").iterdir()) == ["0001.npz"]


def test_a_killed_convert_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    """A convert killed with SIGKILL mid-way leaves its temporary folder; the next run removes
    it (and leaves a running one's alone)."""
    root = make_penn_root(tmp_path / "penn", [("squat", True, 8)])
    dst = tmp_path / "out"
    code = (
        "import time, sys\n"
        "from skelgraph.data import write_skeleton_folder\n"
        "from skelgraph.data.penn_action import penn_action_files, read_penn_action\n"
        "def slow():\n"
        "    for path in penn_action_files(sys.argv[1]):\n"
        "        yield read_penn_action(path)\n"
        "        print('written', flush=True)\n"
        "        time.sleep(600)\n"
        "write_skeleton_folder(sys.argv[2], slow(), progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(dst)], env=env, stdout=subprocess.PIPE
    )
    try:
        assert killed.stdout.readline().strip() == b"written"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed.stdout.close()
    leftovers = list(tmp_path.glob(".out.*.tmp"))
    assert len(leftovers) == 1 and (leftovers[0] / "clips").is_dir()
    running = tmp_path / f".out.{os.getpid()}-0123456789ab.tmp"  # this process is alive
    running.mkdir()
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.glob(".out.*")) == [running.name]


def test_labels_csv_paths_stay_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    random_clip(0, 6, label=0).save(tmp_path / "outside.npz")
    for path in ("../outside.npz", str(tmp_path / "outside.npz"), "clips/../../outside.npz"):
        (folder / "labels.csv").write_text(f"path,label,split\n{path},a,train\n")
        with pytest.raises(ValueError, match="line 2: path: expected a file inside the folder"):
            SkeletonFolder(folder)
