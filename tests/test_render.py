from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import PENN13_POSE

from skelgraph.layouts import get_layout

cv2 = pytest.importorskip("cv2")

from skelgraph.render import (  # noqa: E402
    BAR_COLOUR,
    FORECAST_COLOUR,
    SKELETON_COLOUR,
    Canvas,
    OverlayWriter,
    draw_forecast,
    draw_overlay,
    draw_probabilities,
    draw_skeleton,
    probability_panel_height,
)

PENN = get_layout("penn13")


def standing(cx: float = 100.0, cy: float = 100.0, conf: float = 1.0) -> np.ndarray:
    """A penn13 pose (13, 3) about 140 pixels tall around (cx, cy)."""
    centre = np.array([cx, cy], np.float32)
    return np.concatenate([PENN13_POSE + centre, np.full((13, 1), conf, np.float32)], axis=1)


def midpoint(kp: np.ndarray, a: str, b: str) -> tuple[int, int]:
    """(row, column) of the middle of the bone between joints a and b."""
    x, y = (kp[PENN.index(a), :2] + kp[PENN.index(b), :2]) / 2
    return round(y), round(x)


def bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous (first, last) rows of a boolean image where any pixel is set."""
    rows = np.flatnonzero(mask.any(axis=1))
    splits = np.flatnonzero(np.diff(rows) > 1)
    starts = np.r_[rows[0], rows[splits + 1]]
    ends = np.r_[rows[splits], rows[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


# ------------------------------------------------------------------------------------------------
# drawing


def test_draw_skeleton_bones_joints_and_threshold() -> None:
    kp = standing()
    kp[PENN.index("left_wrist"), 2] = 0.1  # below the threshold: joint and its bone not drawn
    kp[PENN.index("right_ankle")] = [np.nan, np.nan, 0.0]  # missing joint
    image = np.zeros((200, 200, 3), np.uint8)
    assert draw_skeleton(image, kp, "penn13", threshold=0.2, thickness=3) is image
    assert tuple(image[midpoint(kp, "left_shoulder", "left_elbow")]) == SKELETON_COLOUR
    assert tuple(image[midpoint(kp, "right_hip", "right_knee")]) == SKELETON_COLOUR
    head = kp[PENN.index("head")]
    assert tuple(image[round(head[1]), round(head[0])]) == SKELETON_COLOUR
    wrist = kp[PENN.index("left_wrist")]
    assert not image[round(wrist[1]) + 2, round(wrist[0])].any()
    assert not image[midpoint(kp, "left_elbow", "left_wrist")].any()
    assert not image[175:, 110:].any()  # the right shank (knee to missing ankle) is not drawn
    # only the skeleton colour, anti-aliased onto black
    pixels = image.reshape(-1, 3).astype(float)
    alpha = pixels[:, 1:2] / SKELETON_COLOUR[1]
    np.testing.assert_allclose(pixels, alpha * SKELETON_COLOUR, atol=2)


def test_draw_skeleton_3d_and_errors() -> None:
    kp = standing()
    kp3d = np.concatenate([kp[:, :2], np.full((13, 1), 5.0), kp[:, 2:]], axis=1)
    a, b = np.zeros((200, 200, 3), np.uint8), np.zeros((200, 200, 3), np.uint8)
    np.testing.assert_array_equal(draw_skeleton(a, kp3d, PENN), draw_skeleton(b, kp, PENN))
    with pytest.raises(ValueError, match=r"expected shape \(13, C >= 3\).*'penn13', got \(17, 3\)"):
        draw_skeleton(a, np.zeros((17, 3)), PENN)
    with pytest.raises(ValueError, match=r"image: expected a BGR array of shape \(H, W, 3\)"):
        draw_skeleton(np.zeros((20, 20)), kp, PENN)
    with pytest.raises(ValueError, match="image: expected dtype uint8, got float32"):
        draw_skeleton(np.zeros((20, 20, 3), np.float32), kp, PENN)
    far = standing(cx=1e12, cy=-1e12)  # off the image: nothing drawn, no OpenCV overflow
    image = np.zeros((50, 50, 3), np.uint8)
    assert not draw_skeleton(image, far, PENN).any()


def test_draw_forecast_fades_with_steps() -> None:
    kp = standing(cx=60)
    forecast = np.stack([kp[:, :2] + [40 * (n + 1), 0] for n in range(3)])  # (3, 13, 2)
    image = np.zeros((200, 260, 3), np.uint8)
    visible = np.ones(13, dtype=bool)
    visible[PENN.index("head")] = False
    assert draw_forecast(image, forecast, PENN, visible=visible, max_alpha=0.9) is image
    colours = []
    for n in range(3):
        colour = image[midpoint(forecast[n], "left_hip", "left_knee")].astype(int)
        expected = np.rint(np.array(FORECAST_COLOUR) * 0.9 * (3 - n) / 3)
        np.testing.assert_allclose(colour, expected, atol=2)
        colours.append(colour.sum())
    assert colours[0] > colours[1] > colours[2] > 0
    head = forecast[0, PENN.index("head")]
    assert not image[round(head[1]), round(head[0])].any()  # invisible joint not drawn
    with pytest.raises(ValueError, match=r"forecast: expected shape \(N, 13, D >= 2\)"):
        draw_forecast(image, forecast[0], PENN)
    with pytest.raises(ValueError, match=r"visible: expected shape \(13,\)"):
        draw_forecast(image, forecast, PENN, visible=np.ones(3, bool))
    # 3D forecasts: x, y are the first two channels; steps off the image are skipped
    deep = np.concatenate([forecast, np.ones((3, 13, 1))], axis=2)
    np.testing.assert_array_equal(
        draw_forecast(np.zeros_like(image), deep, PENN, visible=visible, max_alpha=0.9), image
    )
    assert not draw_forecast(np.zeros_like(image), forecast - 1000, PENN).any()


def test_draw_probabilities_bars_are_proportional() -> None:
    classes = ["walk", "run", "jump", "sit"]
    probs = np.array([0.1, 0.6, 0.0, 0.3])
    image = np.zeros((240, 320, 3), np.uint8)
    assert draw_probabilities(image, classes, probs, top_k=3, width=100) is image
    top = (image == SKELETON_COLOUR).all(axis=-1)
    others = (image == BAR_COLOUR).all(axis=-1)
    # the top class (run, 60%) in the first bar, then sit (30%), then walk (10%)
    assert top.sum(axis=1).max() == 60
    lengths = [others[a : b + 1].sum(axis=1).max() for a, b in bands(others)]
    assert lengths == [30, 10]
    assert bands(top)[0][1] < bands(others)[0][0]
    # the panel: text in white, background darkened
    height = probability_panel_height(image.shape, 3)
    assert (image[8 : 8 + height, 8:20] == 255).any()
    assert not image[8 + height + 1 :].any()
    titled = draw_probabilities(np.zeros_like(image), classes, probs, top_k=3, width=100, title="x")
    assert not np.array_equal(titled, image)  # another title ...
    np.testing.assert_array_equal(titled[40:], image[40:])  # ... the same bars
    with pytest.raises(ValueError, match=r"probabilities: expected shape \(4,\) for 4 classes"):
        draw_probabilities(image, classes, probs[:3])
    with pytest.raises(ValueError, match="top_k: expected an integer >= 1, got 0"):
        draw_probabilities(image, classes, probs, top_k=0)


def test_draw_overlay_composes_everything() -> None:
    kp = standing(cx=150, cy=130)
    forecast = (kp[None, :, :2] + [[[10.0, 0.0]], [[20.0, 0.0]]]).astype(np.float32)
    image = np.full((240, 320, 3), 90, np.uint8)
    draw_overlay(image, kp, PENN, ["a", "b"], np.array([0.2, 0.8]), forecast)
    assert tuple(image[midpoint(kp, "left_hip", "left_knee")]) == SKELETON_COLOUR
    assert (image == SKELETON_COLOUR).all(axis=-1)[:60].any()  # the top bar
    shifted = midpoint(forecast[1], "right_hip", "right_knee")
    assert image[shifted][2] > 90 and image[shifted][0] < 90  # forecast orange blended in


# ------------------------------------------------------------------------------------------------
# canvas


def test_canvas_from_pixel_and_normalised_keypoints() -> None:
    clip = np.stack(
        [standing(cx=300 + 20 * t, cy=200) for t in range(5)]
    )  # x 265..415+, y 140..280
    canvas = Canvas.from_keypoints(clip, margin=10, min_size=100)
    assert canvas.scale == 1.0
    xy = canvas.transform(clip)
    np.testing.assert_allclose(xy[..., :2].min(axis=(0, 1)), [10, 10])
    assert canvas.width % 2 == 0 and canvas.height % 2 == 0
    assert canvas.width >= xy[..., 0].max() + 10 and canvas.height >= xy[..., 1].max() + 10
    np.testing.assert_array_equal(xy[..., 2], clip[..., 2])  # confidence kept
    assert canvas.blank().shape == (canvas.height, canvas.width, 3)
    # normalised coordinates (extent ~1) are scaled up; header adds room above
    small = clip.copy()
    small[..., :2] = (clip[..., :2] - 200) / 140
    scaled = Canvas.from_keypoints(small, margin=10, header=50, min_size=320)
    assert scaled.scale == pytest.approx(320 / np.ptp(small[..., :2], axis=(0, 1)).max())
    assert scaled.transform(small)[..., 1].min() == pytest.approx(60, abs=1e-3)
    # joints with confidence 0 do not count; no joint at all gives a default canvas
    hidden = clip.copy()
    hidden[0, 0] = [1e6, 1e6, 0.0]
    assert Canvas.from_keypoints(hidden, margin=10, min_size=100) == canvas
    empty = Canvas.from_keypoints(np.zeros((3, 13, 3)), margin=0, min_size=320)
    assert (empty.width, empty.height) == (320, 320)
    with pytest.raises(ValueError, match=r"expected shape \(T, V, C >= 3\)"):
        Canvas.from_keypoints(np.zeros((13, 3)))


# ------------------------------------------------------------------------------------------------
# video writer


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_overlay_writer_is_atomic(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    with OverlayWriter(path, 12.5) as writer:
        for i in range(6):
            writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
            assert not path.exists()
            assert len(list(tmp_path.iterdir())) == 1  # the temporary file, hidden
    assert writer.frames == 6 and list(tmp_path.iterdir()) == [path]
    frames = read_frames(path)
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    assert abs(int(frames[5].mean()) - 200) < 8
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == 12.5


def test_overlay_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        OverlayWriter(tmp_path / "missing" / "out.mp4", 25)
    with pytest.raises(ValueError, match="fps: expected a positive frame rate"):
        OverlayWriter(tmp_path / "out.mp4", 0)
    # an exception in the block keeps the existing file and removes the temporary one
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"old")
    with pytest.raises(RuntimeError), OverlayWriter(existing, 25) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        raise RuntimeError
    assert existing.read_bytes() == b"old" and list(tmp_path.iterdir()) == [existing]
    writer = OverlayWriter(tmp_path / "mixed.mp4", 25)
    writer.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame 1: expected \(16, 16, 3\) uint8"):
        writer.write(np.zeros((8, 8, 3), np.uint8))
    writer.discard()
    with pytest.raises(ValueError, match="expected at least one frame, got none"):
        OverlayWriter(tmp_path / "empty.mp4", 25).close()
    assert list(tmp_path.iterdir()) == [existing]


def test_overlay_writer_codec_that_cannot_open(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    writer = OverlayWriter(path, 25, fourcc="ZZZZ")
    with pytest.raises(ValueError, match=r"out\.mp4: OpenCV cannot write a \.mp4 video with codec"):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="four-character code"):
        OverlayWriter(path, 25, fourcc="mp4")
