"""The service under attack (``benchmarks/serve_attack.py``, bounded): 8 well-behaved 30 fps
streams while other clients send hostile messages and uploads and try from other sites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the web service needs skelgraph[serve]")
pytest.importorskip("websockets", reason="the benchmark's clients need websockets")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "serve_attack.py"


def run(tmp_path: Path, *options: str) -> dict:
    """The benchmark for 10 s with ``options``; its JSON results."""
    out = tmp_path / f"attack{len(list(tmp_path.iterdir()))}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(SCRIPT), "--duration", "10", "--out", str(out), *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), done.stdout + done.stderr
    return json.loads(out.read_text())


@pytest.mark.slow
def test_good_streams_are_served_while_others_attack(tmp_path: Path) -> None:
    """Every good frame is answered, without an error; every attack is refused as it should
    be; every session and upload slot is free afterwards. (How fast the good streams are
    answered is the benchmark's measurement, not a test's: it depends on the machine.)"""
    record = run(tmp_path)
    summary, got = record["summary"], Counter(record["attackers_got"])
    assert summary["replies"] == summary["frames_sent"] > 0, record
    assert summary["errors"] == summary["missing"] == 0, record["first_errors"]
    assert summary["sessions_after"] == summary["uploads_after"] == 0, summary
    assert got["stream reply error"] >= 10 and got["flood refused 1013"] >= 1, got
    assert got["stream closed 1009"] >= 1 and got["stream closed 1003"] >= 1, got
    assert got["silent stream closed 1000"] == 1, got
    assert got["upload 413"] >= 2 and got["upload 422"] >= 4 and got["upload 415"] >= 1, got
    # of ten 60 MB uploads at once, those past the pending limit are refused before their body
    # is read (503, or the connection closed while the client was still sending)
    assert got["upload 503"] + got["upload closed early"] >= 8, got
    assert got["foreign origin 403"] >= 1 and "foreign origin accepted" not in got, got
    assert got["rebound host 403"] >= 1, got
    assert not any(key.startswith("upload 5") and key != "upload 503" for key in got), got
    assert set(record["summary"]["cpu_s"]) >= {"server", "attackers"}, summary


@pytest.mark.slow
def test_a_long_clip_upload_is_answered_while_streams_run(tmp_path: Path) -> None:
    """A clip of the most frames the service takes is recognised (in the upload process) while
    the good streams are answered, every one of them."""
    record = run(tmp_path, "--attacks", "clips")
    summary, got = record["summary"], Counter(record["attackers_got"])
    assert summary["replies"] == summary["frames_sent"] > 0, record
    assert summary["errors"] == summary["missing"] == 0, record["first_errors"]
    assert got == {"long clip 200": 1}, got
    assert summary["cpu_s"]["server_upload_process"] > 0, summary
