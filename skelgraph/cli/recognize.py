"""``skelgraph recognize``: online action recognition on a video, webcam, stream or skeleton clip.

::

    skelgraph recognize SOURCE [--checkpoint penn-action] [--jsonl FILE|-] [--out FILE.mp4]
        [--input-layout NAME] [--pose-model yolo11x-pose.pt] [--device cpu] [--conf C]
        [--imgsz N] [--smoothing A] [--fps F] [--max-frames N] [--every K] [--quiet]
        [--backend torch|onnxruntime]

``SOURCE`` is a skeleton clip (``.npz``, see :func:`skelgraph.io.save_npz`), a webcam index (all
digits, e.g. ``0``), a stream URL (``rtsp://``, ``rtmp://``, ``http(s)://``, ...) or a video
file. Videos go through the pose model frame by frame (one tracked person, ``coco17``); every
frame's keypoints are fed to an :class:`~skelgraph.online.OnlineRecognizer`, which predicts the
action so far (and the coming poses, for forecasting models) from the frames seen up to then.
A streaming model (InfoGCN++) advances frame by frame; an offline model (e.g. ST-GCN, 2s-AGCN,
InfoGCN) classifies whole windows, so every frame it is run on the window of the last
``window`` frames of its checkpoint, and the table says so.
``--backend onnxruntime`` runs the model's frame step exported to ONNX (once, then cached) in
onnxruntime instead of torch (``pip install "skelgraph[onnx]"``).

The checkpoint is a path or the name of a pretrained model shipped with the package (default
``penn-action``: a skeleton clip needs no download and no OpenCV). Outputs:

* stdout: a table with every ``--every``-th frame (time, action, probability, runner-up) and the
  final prediction, the one of the last frame;
* ``--jsonl FILE``: one JSON object per frame (:meth:`Prediction.to_dict` plus ``time`` in
  seconds, :obj:`None` when the frame rate is unknown); ``--jsonl -`` writes them to stdout
  instead of the table;
* ``--out FILE.mp4``: the frames with the skeleton, the probability bars of the current action
  and the forecast skeleton (a skeleton clip is drawn on a blank canvas sized from its extent).

Files are written atomically; Ctrl-C stops after the current frame and finishes the outputs (a
second Ctrl-C stops at once, still finishing them).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from skelgraph.layouts import Layout, check_mappable, get_layout
from skelgraph.utils import progress_bar

if TYPE_CHECKING:
    from skelgraph.online import OnlineRecognizer, Prediction
    from skelgraph.pose import PoseEstimator
    from skelgraph.render import Canvas, OverlayWriter
    from skelgraph.video import VideoReader

#: frame rate of the overlay video when the source reports none
FALLBACK_FPS = 30.0
#: probability bars in the overlay video
TOP_K = 5
#: what SOURCE may be, for error messages
EXPECTED_SOURCE = "a video file, a webcam index, a stream URL or a skeleton .npz"
#: the highest --fps: resampling a clip to more would make millions of frames of one second
MAX_FPS = 1000.0
#: :data:`skelgraph.export.BACKENDS`, spelled out: the parser is built without importing torch
BACKENDS = ("torch", "onnxruntime")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recognize",
        help="recognise actions online in a video, webcam, stream or skeleton clip",
        description="Recognise the action frame by frame (online, causal) in a skeleton clip "
        "(.npz), a video file, a webcam (index) or a stream URL; prints a table of predictions "
        "and optionally writes per-frame JSON lines and an overlay video.",
    )
    parser.add_argument("source", metavar="SOURCE", help=EXPECTED_SOURCE)
    parser.add_argument(
        "--checkpoint",
        default="penn-action",
        metavar="PATH|NAME",
        help="checkpoint file or pretrained model name (default: penn-action)",
    )
    parser.add_argument(
        "--jsonl", metavar="FILE|-", help="write one JSON object per frame ('-': stdout)"
    )
    parser.add_argument("--out", type=Path, metavar="FILE.mp4", help="write an overlay video")
    parser.add_argument(
        "--input-layout",
        metavar="NAME",
        help="layout of the keypoints (default: the .npz clip's; coco17 for videos)",
    )
    parser.add_argument(
        "--pose-model",
        default="yolo11x-pose.pt",
        help="YOLO pose model for videos: name, path or .yaml (default: yolo11x-pose.pt)",
    )
    parser.add_argument(
        "--device", help="device, e.g. cpu, cuda:0 (default: cuda when available, else cpu)"
    )
    parser.add_argument("--conf", type=float, help="minimum person box confidence (videos)")
    parser.add_argument("--imgsz", type=int, help="pose inference image size (default: model's)")
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        help="exponential smoothing of the probabilities over frames, in [0, 1) (default: 0)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        help=f"resample the source to this frame rate (e.g. the model's), at most {MAX_FPS:g}",
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument(
        "--every", type=int, default=10, metavar="K", help="table row every K frames (default: 10)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what runs the model: torch or onnxruntime (exported to ONNX once, cached; needs "
        'pip install "skelgraph[onnx]") (default: torch)',
    )
    parser.set_defaults(run=run)


# ------------------------------------------------------------------------------------------------
# sources


@dataclass
class Source:
    """Keypoints to recognise, with the images they come from.

    Attributes:
        name (str): The source as given, for messages.
        layout (Layout): Layout of the keypoints.
        channels (int): Channels :obj:`C` of the keypoints, confidence last.
        fps (float or None): Frame rate of :attr:`frames` (after resampling), when known.
        length (int or None): Number of frames, when known (approximate for videos).
        frames (Iterator): ``(image, keypoints)`` per frame: the BGR video frame (:obj:`None`
            for a skeleton clip) and keypoints :obj:`(V, C)`.
        keypoints (numpy.ndarray or None): All keypoints :obj:`(T, V, C)` of a skeleton clip.
        close (Callable): Releases the video reader's capture.
    """

    name: str
    layout: Layout
    channels: int
    fps: float | None
    length: int | None
    frames: Iterator[tuple[np.ndarray | None, np.ndarray]]
    keypoints: np.ndarray | None = None
    close: Callable[[], None] = lambda: None


def clip_source(path: Path, *, input_layout: str | None, fps: float | None) -> Source:
    """A skeleton clip, resampled to :obj:`fps` when given; :obj:`input_layout` relabels its
    joints (same joint count)."""
    from skelgraph.clip import SkeletonClip
    from skelgraph.pose.base import resample_fps

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {EXPECTED_SOURCE})")
    clip = SkeletonClip.load(path)
    layout = clip.layout
    if input_layout is not None:
        layout = get_layout(input_layout)
        if layout.num_joints != clip.num_joints:
            raise ValueError(
                f"{path}: --input-layout {layout.name!r} expects {layout.num_joints} joints, "
                f"the clip has {clip.num_joints} (layout {clip.layout.name!r})"
            )
    keypoints, clip_fps = clip.keypoints, clip.fps
    if fps is not None:
        if clip_fps is None:
            raise ValueError(f"{path}: cannot resample to {fps} fps: the clip has no fps")
        keypoints, clip_fps = resample_fps(keypoints, clip_fps, fps), fps
    return Source(
        name=str(path),
        layout=layout,
        channels=clip.num_channels,
        fps=clip_fps,
        length=len(keypoints),
        frames=((None, kp) for kp in keypoints),
        keypoints=keypoints,
    )


def video_source(args: argparse.Namespace) -> tuple[Source, VideoReader]:
    """A video, webcam (all digits) or stream and its reader; the source's :attr:`Source.frames`
    are left empty until the pose model is loaded (see :func:`with_poses`)."""
    from skelgraph.pose.base import resampled_length
    from skelgraph.video import VideoReader

    input_layout = get_layout(args.input_layout or "coco17")
    if input_layout.name != "coco17":
        raise ValueError(
            f"--input-layout: the pose model gives coco17 keypoints for videos, got "
            f"{input_layout.name!r}"
        )
    try:
        reader = VideoReader(int(args.source) if args.source.isdigit() else args.source)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{e} (expected {EXPECTED_SOURCE})") from None
    fps, length = reader.fps, reader.frame_count or None
    if args.fps is not None:
        if fps is None:
            reader.close()
            raise ValueError(
                f"{args.source}: cannot resample to {args.fps} fps: the source reports no "
                "frame rate"
            )
        length = None if length is None else resampled_length(length, fps, args.fps)
        fps = args.fps
    source = Source(args.source, input_layout, 3, fps, length, iter(()), close=reader.close)
    return source, reader


def with_poses(
    images: Iterable[np.ndarray], estimator: PoseEstimator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image, keypoints)`` of every image, the keypoints from :obj:`estimator`."""
    pending: deque[np.ndarray] = deque()

    def tap() -> Iterator[np.ndarray]:
        for image in images:
            pending.append(image)
            yield image

    for keypoints in estimator.stream(tap()):
        yield pending.popleft(), keypoints


def pose_estimator(args: argparse.Namespace) -> PoseEstimator:
    """The YOLO pose model of ``--pose-model``.

    Raises:
        ImportError: Without ultralytics.
        ValueError: When the model cannot be loaded (the message names it and the cause).
    """
    from skelgraph.pose import UltralyticsPoseEstimator

    try:
        return UltralyticsPoseEstimator(
            args.pose_model, device=args.device, conf=args.conf, imgsz=args.imgsz
        )
    except ImportError:
        raise
    except Exception as e:
        raise ValueError(f"--pose-model {args.pose_model}: {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------------------------
# recogniser


def load_recognizer(args: argparse.Namespace, source: Source) -> OnlineRecognizer:
    """The recogniser of ``--checkpoint`` for the source's keypoints.

    Raises:
        ValueError: When the keypoints' channels differ from the model's, or the source layout
            cannot be mapped to the model's (:func:`~skelgraph.layouts.check_mappable`).
    """
    from skelgraph.online import OnlineRecognizer
    from skelgraph.utils import resolve_device

    device = resolve_device(args.device)
    # first in the model's own layout, so that the source can be checked against it (and its
    # plan made once, for the recogniser below)
    recognizer = OnlineRecognizer.from_checkpoint(
        args.checkpoint, device=device, backend=args.backend
    )
    channels = int(recognizer.meta["in_channels"])
    if source.channels != channels:
        raise ValueError(
            f"{source.name}: keypoints: expected {channels} channels (coordinates + confidence) "
            f"for checkpoint {args.checkpoint}, got {source.channels}"
        )
    try:
        check_mappable(source.layout, recognizer.layout, target="the model's layout")
    except ValueError as e:
        raise ValueError(
            f"{source.name}: {e}; pass --input-layout if the clip's layout is mislabelled"
        ) from None
    return OnlineRecognizer(
        recognizer.model,
        recognizer.meta,
        input_layout=source.layout,
        smoothing=args.smoothing,
        device=device,
        plan=recognizer.plan,
    )


# ------------------------------------------------------------------------------------------------
# outputs


def runner_up(prediction: Prediction, classes: list[str]) -> int | None:
    """The index of the most probable class (by the frame's probabilities, never smoothed)
    other than the predicted label; :obj:`None` for a single class."""
    probs = np.array(prediction.probabilities, dtype=np.float64)
    if probs.size < 2:
        return None
    probs[classes.index(prediction.label)] = -np.inf
    return int(np.argmax(probs))


def json_record(prediction: Prediction, fps: float | None) -> dict[str, Any]:
    """:meth:`Prediction.to_dict` with ``time`` (seconds, :obj:`None` when the frame rate is
    unknown) and :obj:`None` for non-finite forecast coordinates (strict JSON)."""
    record = prediction.to_dict()
    forecast = prediction.forecast
    if forecast is not None and not np.isfinite(forecast).all():
        values = forecast.astype(object)
        values[~np.isfinite(forecast)] = None
        record["forecast"] = values.tolist()
    record["time"] = None if fps is None else prediction.frame / fps
    return record


class Table:
    """The human-readable output: a row every :obj:`every` frames and the final prediction."""

    def __init__(self, classes: list[str], every: int, fps: float | None, file: IO[str]) -> None:
        self.classes, self.every, self.fps, self.file = classes, every, fps, file
        self.width = min(max([len(c) for c in classes] + [9]), 28)

    def _write(self, line: str) -> None:
        tqdm.write(line, file=self.file)
        self.file.flush()

    def _time(self, frame: int) -> str:
        return "-" if self.fps is None else f"{frame / self.fps:.2f}s"

    def header(self) -> None:
        w = self.width
        self._write(
            f"{'frame':>7} {'time':>8}  {'action':<{w}} {'prob':>5}  {'runner-up':<{w}} prob"
        )

    def row(self, prediction: Prediction) -> None:
        if prediction.frame % self.every:
            return
        w, second = self.width, runner_up(prediction, self.classes)
        other = "" if second is None else self.classes[second]
        other_p = "" if second is None else f"{prediction.probabilities[second]:.2f}"
        self._write(
            f"{prediction.frame:>7} {self._time(prediction.frame):>8}  {prediction.label:<{w}} "
            f"{prediction.score:>5.2f}  {other:<{w}} {other_p}"
        )

    def final(self, prediction: Prediction) -> None:
        second = runner_up(prediction, self.classes)
        line = (
            f"final: {prediction.label} ({prediction.score:.2f}) at frame {prediction.frame} "
            f"({self._time(prediction.frame)})"
        )
        if second is not None:
            line += f", runner-up {self.classes[second]} ({prediction.probabilities[second]:.2f})"
        self._write(line)


class Overlay:
    """Draws every prediction on its frame (or on a blank canvas) into an
    :class:`~skelgraph.render.OverlayWriter`."""

    def __init__(self, writer: OverlayWriter, source: Source, classes: list[str]) -> None:
        from skelgraph.render import Canvas, probability_panel_height

        self.writer, self.layout, self.classes = writer, source.layout, classes
        self.top_k = min(TOP_K, len(classes))
        self.canvas: Canvas | None = None
        if source.keypoints is not None:
            # room above the skeleton for the probability panel
            plain = Canvas.from_keypoints(source.keypoints)
            header = probability_panel_height((plain.height, plain.width), self.top_k) + 8
            self.canvas = Canvas.from_keypoints(source.keypoints, header=header)

    def write(
        self, image: np.ndarray | None, keypoints: np.ndarray, prediction: Prediction
    ) -> None:
        from skelgraph.render import draw_overlay

        forecast = prediction.forecast
        if self.canvas is not None:
            image, keypoints = self.canvas.blank(), self.canvas.transform(keypoints)
            if forecast is not None:
                forecast = self.canvas.transform(forecast)
        elif image is not None:
            image = image.copy()
        else:
            raise ValueError("overlay: expected a video frame or a skeleton clip canvas")
        draw_overlay(
            image,
            keypoints,
            self.layout,
            self.classes,
            prediction.probabilities,
            forecast,
            top_k=self.top_k,
            title=f"{prediction.label} {prediction.score:.0%}",
        )
        self.writer.write(image)


@contextmanager
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """Within the block, a first Ctrl-C (SIGINT) only sets the returned flag, so that the loop
    ends after the current frame; a second one raises :class:`KeyboardInterrupt`."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------------------
# the command


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("skelgraph recognize: interrupted", file=sys.stderr)
        return 130
    except (ImportError, OSError, ValueError, TypeError) as e:
        print(f"skelgraph recognize: error: {e}", file=sys.stderr)
        return 1


def _check_args(args: argparse.Namespace) -> None:
    if args.every < 1:
        raise ValueError(f"--every: expected an integer >= 1, got {args.every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames: expected an integer >= 1, got {args.max_frames}")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        raise ValueError(f"--fps: expected a frame rate in (0, {MAX_FPS:g}], got {args.fps}")
    outputs = {"--out": args.out, "--jsonl": None if args.jsonl in (None, "-") else args.jsonl}
    inputs = {"SOURCE": args.source, "--checkpoint": args.checkpoint}
    for option, output in outputs.items():
        if output is None:
            continue
        if not Path(output).parent.is_dir():
            raise FileNotFoundError(
                f"{option} {output}: folder {Path(output).parent} does not exist"
            )
        for other, path in [*inputs.items(), *outputs.items()]:
            if other != option and path is not None and _same_file(output, path):
                raise ValueError(f"{option} {output}: is also {other}; choose another file")


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (existing or not)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    reader = None
    if Path(args.source).suffix.lower() == ".npz":
        source = clip_source(Path(args.source), input_layout=args.input_layout, fps=args.fps)
    else:
        source, reader = video_source(args)
    try:
        recognizer = load_recognizer(args, source)
        if reader is not None:
            from skelgraph.pose.base import retime

            images: Iterable[np.ndarray] = reader
            if args.fps is not None and reader.fps is not None:
                images = retime(reader, reader.fps, args.fps)
            source.frames = with_poses(images, pose_estimator(args))
        return _recognize(args, source, recognizer)
    finally:
        source.close()


def _recognize(args: argparse.Namespace, source: Source, recognizer: OnlineRecognizer) -> int:
    from skelgraph.utils import atomic_write

    classes = list(recognizer.classes)
    table_file = sys.stderr if args.jsonl == "-" else sys.stdout
    table = Table(classes, args.every, source.fps, table_file)
    length = source.length
    if args.max_frames is not None:
        length = min(length or args.max_frames, args.max_frames)
    print(
        f"{source.name}: {source.layout.name} keypoints"
        + (f", {source.length} frames" if source.length is not None else "")
        + (f" at {source.fps:g} fps" if source.fps is not None else "")
        + f"; model {recognizer.meta['model']} ({recognizer.layout.name}, {len(classes)} classes)"
        + f" from {args.checkpoint}",
        file=table_file,
    )
    if not recognizer.streaming:
        print(
            f"model {recognizer.meta['model']} is an offline model: it classifies whole windows, "
            f"not frame by frame; every row is its prediction for the window of the last "
            f"{recognizer.window} frames (all frames so far at the start), recomputed at each "
            f"frame",
            file=table_file,
        )
    last: Prediction | None = None
    with ExitStack() as outputs:
        jsonl: IO[str] | None = None
        if args.jsonl == "-":
            jsonl = sys.stdout
        elif args.jsonl is not None:
            jsonl = outputs.enter_context(atomic_write(args.jsonl, "w"))
        overlay = None
        if args.out is not None:
            from skelgraph.render import OverlayWriter

            writer = outputs.enter_context(OverlayWriter(args.out, source.fps or FALLBACK_FPS))
            overlay = Overlay(writer, source, classes)
        if args.jsonl != "-":
            table.header()
        bar = outputs.enter_context(
            progress_bar(
                total=length, desc="recognize", unit="frame", leave=False, disable=args.quiet
            )
        )
        with stop_on_sigint() as stopped:
            try:
                for image, keypoints in source.frames:
                    prediction = recognizer.update(keypoints)
                    if jsonl is not None:
                        record = json_record(prediction, source.fps)
                        jsonl.write(json.dumps(record, allow_nan=False) + "\n")
                        jsonl.flush()
                    if overlay is not None:
                        overlay.write(image, keypoints, prediction)
                    if args.jsonl != "-":
                        table.row(prediction)
                    last = prediction
                    bar.update()
                    if stopped() or prediction.frame + 1 == args.max_frames:
                        break
            except KeyboardInterrupt:
                pass
        if last is None:
            raise ValueError(f"{source.name}: expected at least one frame, got none")
        if stopped():
            print(f"stopped after {last.frame + 1} frames", file=sys.stderr)
    table.final(last)
    return 0
