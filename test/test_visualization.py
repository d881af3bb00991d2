"""The debug picture a person looks at: boxes land where they are, in their
class colour; failed cameras are shaded in the BEV and marked on their
thumbnails with the reason; ground truth is told apart from detections;
thumbnails follow the rig; odd inputs (no cloud, no images, nothing
detected, another rig) still draw."""
from __future__ import annotations

import numpy as np
import pytest

from sparsecomp_core.rig import load_rig
from sparsecomp_ros.camera_health import FAULT_BLACK, FAULT_FROZEN, FAULT_NO_FRAME
from sparsecomp_ros.visualization import (CLASS_COLOURS, FAILED_RGB, bev_image, debug_layout, debug_picture,
                                          status_text)

CAR, TRUCK = 0, 1


@pytest.fixture(scope="module")
def rig():
    return load_rig("default7")


def box(x: float, y: float, yaw: float = 0.0, length: float = 4.5, width: float = 2.0, vx: float = 0.0,
        vy: float = 0.0) -> list[float]:
    return [x, y, 0.8, length, width, 1.6, yaw, vx, vy, 0.0]


def detections(boxes: list, labels: list, ids: list | None = None) -> dict:
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 10)
    return {"boxes": boxes, "labels": np.array(labels, dtype=np.int64), "scores": np.full(len(boxes), 0.9),
            "ids": np.arange(len(boxes)) if ids is None else np.array(ids)}


NONE = detections([], [])


def healthy(rig) -> list[dict]:
    return [{"name": name, "failed": False, "reason": 0, "message": ""} for name in rig.camera_names]


def with_failure(rig, camera: str, reason: int, message: str) -> list[dict]:
    statuses = healthy(rig)
    statuses[rig.camera_names.index(camera)].update(failed=True, reason=reason, message=message)
    return statuses


def window(picture: np.ndarray, pixel, radius: int = 2) -> np.ndarray:
    col, row = int(round(pixel[0])), int(round(pixel[1]))
    return picture[row - radius:row + radius + 1, col - radius:col + radius + 1].reshape(-1, 3).astype(int)


def has_colour(pixels: np.ndarray, colour, tolerance: int = 12) -> bool:
    return bool((np.abs(pixels - np.array(colour)).max(1) <= tolerance).any())


def region(picture: np.ndarray, rect) -> np.ndarray:
    left, top, right, bottom = rect
    return picture[top:bottom, left:right].reshape(-1, 3).astype(int)


def test_mapping_forward_is_up_and_left_is_left(rig):
    bev = debug_layout(rig).bev
    ego, ahead, left = bev.to_pixel(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    assert ahead[1] < ego[1] and ahead[0] == pytest.approx(ego[0])
    assert left[0] < ego[0] and left[1] == pytest.approx(ego[1])
    assert ego[1] - ahead[1] == pytest.approx(10 * bev.px_per_m)


def test_detection_is_drawn_at_its_position_in_its_class_colour(rig):
    det = detections([box(20.0, -10.0)], [TRUCK])
    picture = debug_picture(det, None, rig, {}, healthy(rig))
    empty = debug_picture(NONE, None, rig, {}, healthy(rig))
    bev = debug_layout(rig).bev
    left_edge = bev.to_pixel(np.array([20.0, -9.0]))       # the box's left side (y = -10 + width / 2)
    mirrored = bev.to_pixel(np.array([20.0, 9.0]))
    assert has_colour(window(picture, left_edge), CLASS_COLOURS[TRUCK])
    assert not has_colour(window(empty, left_edge), CLASS_COLOURS[TRUCK])
    assert not has_colour(window(picture, mirrored), CLASS_COLOURS[TRUCK])
    # the inside is tinted with the class colour (truck: blue)
    inside = window(picture, bev.to_pixel(np.array([19.0, -10.5])), 1).mean(0)
    assert inside[2] > inside[0] + 10


def test_heading_line_points_to_the_front(rig):
    bev = debug_layout(rig).bev
    forward = debug_picture(detections([box(20.0, 10.0, length=8.0, width=3.0)], [CAR]), None, rig, {}, healthy(rig))
    backward = debug_picture(detections([box(20.0, 10.0, yaw=np.pi, length=8.0, width=3.0)], [CAR]), None, rig, {},
                             healthy(rig))
    front_half = bev.to_pixel(np.array([22.0, 10.0]))
    assert has_colour(window(forward, front_half, 1), CLASS_COLOURS[CAR], 20)
    assert not has_colour(window(backward, front_half, 1), CLASS_COLOURS[CAR], 20)


def test_velocity_arrow_and_id_are_drawn(rig):
    bev = debug_layout(rig).bev
    still = debug_picture(detections([box(10.0, 20.0)], [CAR], [7]), None, rig, {}, healthy(rig))
    moving = debug_picture(detections([box(10.0, 20.0, vx=8.0)], [CAR], [7]), None, rig, {}, healthy(rig))
    ahead = bev.to_pixel(np.array([15.5, 20.0]))           # beyond the box's front, on the 1 s arrow
    assert (window(moving, ahead, 1) > 200).all(1).any()
    assert not (window(still, ahead, 1) > 200).all(1).any()
    assert (np.abs(still.astype(int) - debug_picture(detections([box(10.0, 20.0)], [CAR], [123]), None, rig, {},
                                                     healthy(rig)).astype(int)).sum() > 0)   # the id is written


def test_failed_camera_fov_is_shaded(rig):
    ok = debug_picture(NONE, None, rig, {}, healthy(rig))
    failed = debug_picture(NONE, None, rig, {}, with_failure(rig, "CAM_REAR", FAULT_BLACK, "100% of pixels dark"))
    bev = debug_layout(rig).bev
    behind, ahead = bev.to_pixel(np.array([[-25.0, 3.0], [25.0, 3.0]]))
    shaded, plain = window(failed, behind).mean(0), window(ok, behind).mean(0)
    assert shaded[0] > plain[0] + 15 and shaded[0] > shaded[1] + 15      # reddish where the rear camera looks
    assert (window(failed, ahead) == window(ok, ahead)).all()              # unchanged where it does not


def test_fov_follows_cam2ego_when_given(rig):
    cam2ego = rig.calibration().cam2ego[0].numpy().copy()
    rear = rig.camera_names.index("CAM_REAR")
    # optical axis (column 2) along +y: the rear camera now looks left
    cam2ego[rear, :3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    statuses = with_failure(rig, "CAM_REAR", FAULT_BLACK, "")
    turned = debug_picture(NONE, None, rig, {}, statuses, cam2ego=cam2ego)
    ok = debug_picture(NONE, None, rig, {}, healthy(rig))
    bev = debug_layout(rig).bev
    left, behind = bev.to_pixel(np.array([[3.0, 25.0], [-25.0, 3.0]]))
    assert window(turned, left).mean(0)[0] > window(ok, left).mean(0)[0] + 15
    assert (window(turned, behind) == window(ok, behind)).all()


def test_failed_thumbnail_is_framed_red_greyed_and_says_why(rig):
    green = np.zeros((128, 256, 3), dtype=np.uint8)
    green[..., 1] = 200
    images = {name: green for name in rig.camera_names}
    ok = debug_picture(NONE, None, rig, images, healthy(rig))
    failed = debug_picture(NONE, None, rig, images,
                           with_failure(rig, "CAM_FRONT_LEFT", FAULT_FROZEN, "unchanged for 9 images"))
    thumb = debug_layout(rig).thumbs["CAM_FRONT_LEFT"]
    left, top, right, bottom = thumb.frame
    frame_pixels = np.concatenate([failed[top, left:right], failed[top:bottom, left]]).astype(int)
    assert (np.abs(frame_pixels - np.array(FAILED_RGB)).max(1) <= 3).mean() > 0.8
    assert not (np.abs(ok[top, left:right].astype(int) - np.array(FAILED_RGB)).max(1) <= 3).any()
    # greyed: the healthy thumbnail is green, the failed one is not (outside the cross and the text band)
    l, t, r, b = thumb.image
    probe = (l + (r - l) // 2, t + 6)
    assert ok[probe[1], probe[0], 1] > 150 and ok[probe[1], probe[0], 0] < 60
    grey = failed[probe[1], probe[0]].astype(int)
    assert grey.max() - grey.min() < 10
    # the reason is written in the band: red text there, none on the healthy one
    band_failed, band_ok = region(failed, thumb.reason), region(ok, thumb.reason)
    assert (np.abs(band_failed - np.array(FAILED_RGB)).max(1) <= 40).sum() > 30
    assert not (np.abs(band_ok - np.array(FAILED_RGB)).max(1) <= 40).any()


def test_missing_image_is_a_placeholder(rig):
    image = np.full((128, 256, 3), 200, dtype=np.uint8)
    shown = debug_picture(NONE, None, rig, {"CAM_REAR_LEFT": image}, healthy(rig))
    missing = debug_picture(NONE, None, rig, {"CAM_REAR_LEFT": None}, healthy(rig))
    pixels = region(missing, debug_layout(rig).thumbs["CAM_REAR_LEFT"].image)
    assert len(np.unique(pixels, axis=0)) > 3               # hatched, with text
    assert (np.abs(region(shown, debug_layout(rig).thumbs["CAM_REAR_LEFT"].image) - 200) <= 2).mean() > 0.9
    assert pixels.mean() < 100


def test_ground_truth_is_told_apart_from_detections_and_misses_stand_out(rig):
    bev = debug_layout(rig).bev
    truth = {"boxes": np.array([box(25.0, 10.0, length=6.0, width=3.0)]), "labels": np.array([CAR])}
    edge = bev.to_pixel(np.array([[28.0, 10.0], [25.0, 11.5], [22.0, 10.0], [25.0, 8.5]]))  # mid-edges
    only_truth = debug_picture(NONE, None, rig, {}, healthy(rig), truth)
    only_det = debug_picture(detections(truth["boxes"], [CAR]), None, rig, {}, healthy(rig))
    truth_pixels = np.concatenate([window(only_truth, p, 2) for p in edge])
    det_pixels = np.concatenate([window(only_det, p, 2) for p in edge])
    white = (truth_pixels > 200).all(1)
    assert white.any() and not has_colour(truth_pixels, CLASS_COLOURS[CAR])
    assert has_colour(det_pixels, CLASS_COLOURS[CAR]) and not (det_pixels > 200).all(1).any()
    # dashed: along an edge not every pixel is drawn
    (left, row), (right, _) = bev.to_pixel(np.array([[28.0, 11.0], [28.0, 9.0]])).round().astype(int)
    rows = only_truth[row - 1:row + 2, left:right]
    lit = (rows > 200).all(2).any(0)
    assert lit.any() and not lit.all()
    # a detected ground-truth box is drawn dimmer than a missed one
    hit = debug_picture(detections([box(25.5, 10.0)], [CAR]), None, rig, {}, healthy(rig), truth)
    bright = lambda picture: sum(int((window(picture, p, 2) > 225).all(1).sum()) for p in edge)  # noqa: E731
    assert bright(only_truth) > bright(hit)
    # a detection of another class does not count as a hit
    other = debug_picture(detections([box(25.5, 10.0)], [TRUCK]), None, rig, {}, healthy(rig), truth)
    assert bright(other) == bright(only_truth)


def test_status_text():
    assert status_text({"name": "C", "failed": True, "reason": FAULT_NO_FRAME, "message": "last image 0.80 s old"}) \
        [0] == "failed: no frame, last image 0.80 s old"
    assert status_text({"name": "C", "failed": True, "reason": FAULT_BLACK, "message": ""})[0] == "failed: black"
    assert status_text({"name": "C", "failed": True, "reason": 0, "message": ""})[0] == "failed: recovering"
    assert status_text({"name": "C", "failed": False, "reason": FAULT_FROZEN, "message": "x"})[0] \
        == "suspect: frozen, x"
    assert status_text({"name": "C", "failed": False, "reason": 0, "message": ""})[0] == "ok"


@pytest.mark.parametrize("rig_name, top, left, right, bottom", [
    ("default7", {"CAM_FRONT_WIDE", "CAM_FRONT_TELE"}, {"CAM_FRONT_LEFT", "CAM_REAR_LEFT"},
     {"CAM_FRONT_RIGHT", "CAM_REAR_RIGHT"}, {"CAM_REAR"}),
    ("nuscenes6", {"CAM_FRONT"}, {"CAM_FRONT_LEFT", "CAM_BACK_LEFT"}, {"CAM_FRONT_RIGHT", "CAM_BACK_RIGHT"},
     {"CAM_BACK"})])
def test_thumbnails_follow_the_rig(rig_name, top, left, right, bottom):
    layout = debug_layout(load_rig(rig_name))
    sides = {side: {t.name for t in layout.thumbs.values() if t.side == side}
             for side in ("top", "left", "right", "bottom")}
    assert sides == {"top": top, "left": left, "right": right, "bottom": bottom}
    bev = layout.bev.box
    frames = [t.frame for t in layout.thumbs.values()]
    overlap = lambda a, b: a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]  # noqa: E731
    for i, a in enumerate(frames):
        assert 0 <= a[0] and a[2] <= layout.legend[0] and layout.header[3] <= a[1] and a[3] <= layout.size[1]
        assert not overlap(a, bev)
        assert not any(overlap(a, b) for b in frames[i + 1:])
    thumbs = layout.thumbs
    front_left = "CAM_FRONT_LEFT"
    rear_left = "CAM_REAR_LEFT" if rig_name == "default7" else "CAM_BACK_LEFT"
    assert thumbs[front_left].frame[1] < thumbs[rear_left].frame[1]        # front above rear on the left side
    if rig_name == "default7":
        assert thumbs["CAM_FRONT_WIDE"].frame[0] < thumbs["CAM_FRONT_TELE"].frame[0]   # same heading: rig order


def test_draws_with_nothing_to_show():
    rig = load_rig("nuscenes6")
    picture = debug_picture(NONE, None, rig, {name: None for name in rig.camera_names}, [])
    assert picture.shape == (900, 1280, 3) and picture.dtype == np.uint8
    picture = debug_picture({"boxes": np.zeros((0, 10)), "labels": np.zeros(0)}, np.zeros((0, 4)), rig, {}, [],
                            {"boxes": np.zeros((0, 10)), "labels": np.zeros(0)}, bev_range_m=30.0,
                            frame_index=0, time_s=0.0, size=(960, 700))
    assert picture.shape == (700, 960, 3)


def test_draws_a_busy_frame_with_points_on_both_rigs():
    rng = np.random.default_rng(0)
    cloud = np.c_[rng.uniform(-40, 60, (3000, 2)) * [1, 0.8], rng.uniform(-0.2, 2.0, 3000), rng.uniform(0, 1, 3000)]
    cloud[0] = np.nan
    boxes = [box(x, y, yaw, vx=3.0) for x, y, yaw in rng.uniform([-30, -30, -3], [50, 30, 3], (30, 3))]
    det = detections(boxes, rng.integers(0, 8, 30))
    for name in ("default7", "nuscenes6"):
        rig = load_rig(name)
        images = {c: rng.integers(0, 255, (rig.image_height, rig.image_width, 3), dtype=np.uint8)
                  for c in rig.camera_names}
        statuses = with_failure(rig, rig.camera_names[1], FAULT_NO_FRAME, "no image")
        picture = debug_picture(det, cloud, rig, images, statuses, {"boxes": det["boxes"][:20],
                                                                     "labels": det["labels"][:20]})
        assert picture.shape == (900, 1280, 3)
        points = region(picture, debug_layout(rig).bev.box)
        assert (points.max(1) > 150).sum() > 1000            # LiDAR points and boxes are in the BEV


def test_bev_image_still_draws_the_top_view():
    image = bev_image(detections([box(10.0, 0.0)], [CAR]), np.array([[5.0, 5.0, 1.0, 0.5]]), resolution=0.25,
                      ground_truth=np.array([box(-10.0, 0.0)]))
    assert image.shape == (410, 358, 3)
    row, col = (62.4 - 10.0) / 0.25, 44.8 / 0.25
    assert has_colour(image[int(row) - 10:int(row) + 10, int(col) - 6:int(col) + 7].reshape(-1, 3).astype(int),
                      CLASS_COLOURS[CAR])
    row = (62.4 + 10.0 + 2.25) / 0.25                         # rear edge of the ground-truth box
    assert (image[int(row) - 1:int(row) + 2, int(col) - 4:int(col) + 5] > 200).all(2).any()
