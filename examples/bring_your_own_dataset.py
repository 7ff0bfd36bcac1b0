"""Runs the README's "Bring your own dataset" section, as it is written there, on generated data.

The data stands in for a multi-view 3D dataset: a 7-joint stick figure (x, y, z, confidence;
y up, metres) performs one of three actions (``wave``, ``clap``, ``kick``), each clip by a person
of its own size, speed and phase, with sensor noise and a few lost joints (confidence 0, NaN
coordinates), and is seen from one of three cameras (0°, 45° and 90° about the vertical axis, each
a little tilted). Views 0 and 1 are the training split, view 2 the test split: a cross-view
protocol. Clips are named ``<action>_v<view>_<n>``.

The script takes the section's Python and shell blocks from ``README.md`` and runs them in a work
folder: the Python block with ``my_clips`` bound to the generated clips, then every shell line
(``skelgraph`` run as ``python -m skelgraph`` with this interpreter). It stops at the first
command that fails. The section's train command makes a quick run, so all of it takes about a
minute on 2 CPU cores.

Usage: ``python examples/bring_your_own_dataset.py [--work-dir DIR] [--readme README.md]``
(default: a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SECTION = "## Bring your own dataset"
ACTIONS = ("wave", "clap", "kick")
VIEWS_DEGREES = (0.0, 45.0, 90.0)
TEST_VIEW = 2
CLIPS_PER_ACTION_AND_VIEW = 8
#: the stick figure at rest, in the README's joint order: pelvis, neck, head, left and right hand,
#: left and right foot
REST = np.array(
    [
        [0.0, 1.0, 0.0],
        [0.0, 1.5, 0.0],
        [0.0, 1.7, 0.0],
        [0.25, 1.0, 0.0],
        [-0.25, 1.0, 0.0],
        [0.12, 0.0, 0.0],
        [-0.12, 0.0, 0.0],
    ]
)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = cos, -sin, sin, cos
    return rotation


def perform(action: str, rng: np.random.Generator) -> np.ndarray:
    """One performance of ``action`` in body coordinates: ``(T, 7, 3)``."""
    frames = int(rng.integers(40, 70))
    cycles = rng.uniform(1.0, 2.5)
    phase = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi * cycles, frames)
    swing = np.sin(phase)
    pose = np.repeat(REST[None], frames, axis=0)
    if action == "wave":  # the right hand up beside the head, swinging sideways
        pose[:, 4] = np.stack([-0.35 + 0.15 * swing, np.full(frames, 1.8), np.zeros(frames)], 1)
    elif action == "clap":  # both hands in front of the chest, meeting and parting
        apart = 0.05 + 0.15 * (1 + swing) / 2
        pose[:, 3] = np.stack([apart, np.full(frames, 1.3), np.full(frames, 0.3)], 1)
        pose[:, 4] = np.stack([-apart, np.full(frames, 1.3), np.full(frames, 0.3)], 1)
    else:  # kick: the right foot forward and up
        lift = (1 + swing) / 2
        pose[:, 6] = np.stack([np.full(frames, -0.12), 0.3 * lift, 0.45 * lift], 1)
    return pose * rng.uniform(0.85, 1.15)  # the person's size


def film(pose: np.ndarray, view: int, rng: np.random.Generator) -> np.ndarray:
    """``pose`` seen by camera ``view``: ``(T, 7, 4)`` keypoints x, y, z, confidence in camera
    coordinates, with noise and a few lost joints."""
    yaw = VIEWS_DEGREES[view] + rng.uniform(-5, 5)
    tilt = rng.uniform(-8, 8)
    rotation = _rotation(0, tilt) @ _rotation(1, yaw)
    coords = pose @ rotation.T + np.array([0.0, -1.0, 3.0])  # the camera 3 m away, 1 m up
    coords += rng.normal(scale=0.01, size=coords.shape)
    confidence = rng.uniform(0.6, 1.0, size=coords.shape[:2])
    lost = rng.random(coords.shape[:2]) < 0.02
    confidence[lost] = 0.0
    coords[lost] = np.nan
    return np.concatenate([coords, confidence[..., None]], axis=-1).astype(np.float32)


def generated_clips(seed: int = 0) -> Iterator[tuple[np.ndarray, str, str, str]]:
    """``(keypoints, name, label, split)`` of every generated clip, as ``my_clips`` in the
    README."""
    rng = np.random.default_rng(seed)
    for action in ACTIONS:
        for view in range(len(VIEWS_DEGREES)):
            for n in range(CLIPS_PER_ACTION_AND_VIEW):
                keypoints = film(perform(action, rng), view, rng)
                split = "test" if view == TEST_VIEW else "train"
                yield keypoints, f"{action}_v{view}_{n}", action, split


def readme_section(readme: Path) -> tuple[str, list[str]]:
    """The section's Python block and its shell command lines."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        raise ValueError(f"{readme}: section {SECTION!r} not found")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    shell = re.findall(r"```bash\n(.*?)```", section, re.S)
    if len(python) != 1 or len(shell) != 1:
        raise ValueError(
            f"{readme}: section {SECTION!r}: expected one python and one bash block, got "
            f"{len(python)} and {len(shell)}"
        )
    commands = [line for line in shell[0].splitlines() if line.strip()]
    return python[0], commands


def run_section(readme: Path, work_dir: Path) -> None:
    """Writes the data with the section's Python block and runs its commands in ``work_dir``."""
    python, commands = readme_section(readme)
    work_dir.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    os.chdir(work_dir)
    try:
        print(
            f"$ python  # the README's Python block, my_clips = {CLIPS_PER_ACTION_AND_VIEW} "
            f"clips x {len(ACTIONS)} actions x {len(VIEWS_DEGREES)} views",
            flush=True,
        )
        exec(compile(python, f"{readme} ({SECTION})", "exec"), {"my_clips": generated_clips()})
    finally:
        os.chdir(here)
    for line in commands:
        argv = shlex.split(line, comments=True)
        if argv[0] != "skelgraph":
            raise ValueError(f"{readme}: {SECTION!r}: expected skelgraph commands, got {line!r}")
        print(f"$ {line}", flush=True)
        subprocess.run([sys.executable, "-m", "skelgraph", *argv[1:]], cwd=work_dir, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, help="where to run (default: a temporary folder)")
    parser.add_argument(
        "--readme",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "README.md",
        help="the README whose section is run (default: the repository's)",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="skelgraph-byod-"))
        )
        try:
            run_section(args.readme, work_dir)
        except subprocess.CalledProcessError as e:
            print(f"failed ({e.returncode}): {shlex.join(e.cmd)}", file=sys.stderr)
            return e.returncode
        for report in sorted(work_dir.glob("eval-*/metrics.json")):
            top1 = json.loads(report.read_text())["top1"]
            print(f"cross-view top-1 of the quick run: {top1:.3f} ({report.parent.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
