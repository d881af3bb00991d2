"""Camera fault detection on rendered frames: black, over-exposed, blocked,
frozen, missing, out of sync, bad format; hysteresis; healthy stays healthy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_ros.camera_health import (FAULT_BAD_FORMAT, FAULT_BLACK, FAULT_BLOCKED, FAULT_FROZEN, FAULT_LOW_RATE,
                                          FAULT_NO_FRAME, FAULT_NONE, FAULT_OUT_OF_SYNC, FAULT_OVEREXPOSED,
                                          CameraHealth, HealthThresholds)

PERIOD = 0.1


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[np.ndarray]:
    """20 consecutive rendered front-camera images (128 x 256)."""
    root = tmp_path_factory.mktemp("health")
    generate(root, "v1.0-h", "default7", seed=11, scenes=1, frames=20, image_size=(128, 256), lidar_beams=4,
             lidar_azimuths=64, progress=False)
    paths = sorted((root / "samples" / "CAM_FRONT_WIDE").glob("*.jpg"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def run(health: CameraHealth, images, start: float = 0.0) -> list[dict]:
    statuses = []
    for i, image in enumerate(images):
        stamp = start + i * PERIOD
        health.observe(stamp, image)
        statuses.append(health.assess(stamp + 0.01, stamp))
    return statuses


def test_healthy_frames_are_never_flagged(frames):
    statuses = run(CameraHealth("front"), frames)
    assert all(not s["failed"] for s in statuses)
    assert [s["reason"] for s in statuses[5:]] == [FAULT_NONE] * 15
    assert 0.1 < statuses[-1]["mean_intensity"] < 0.9 and statuses[-1]["textureless_fraction"] < 0.8


@pytest.mark.parametrize("make, fault", [
    (lambda img: np.zeros_like(img) + np.random.default_rng(0).integers(0, 4, img.shape, dtype=np.uint8), FAULT_BLACK),
    (lambda img: np.full_like(img, 255), FAULT_OVEREXPOSED),
    (lambda img: np.clip(np.full_like(img, 128) + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255)
     .astype(np.uint8), FAULT_BLOCKED),        # covered lens: uniform grey with sensor noise
])
def test_bad_content_is_flagged_after_hysteresis_and_clears(frames, make, fault):
    health = CameraHealth("front")
    bad = [make(frames[0]) for _ in range(4)]
    statuses = run(health, frames[:6] + bad + frames[6:])
    assert [s["reason"] for s in statuses[6:10]] == [fault] * 4
    assert [s["failed"] for s in statuses[5:10]] == [False, False, True, True, True]   # fail_after = 2
    recover = HealthThresholds().recover_after
    assert [s["failed"] for s in statuses[10:10 + recover]] == [True] * (recover - 1) + [False]


def test_a_frozen_camera_is_flagged(frames):
    health = CameraHealth("front")
    statuses = run(health, frames[:5] + [frames[5]] * 12)
    frozen_after = HealthThresholds().frozen_frames
    assert statuses[4 + frozen_after]["reason"] == FAULT_NONE      # frames[5] differs from frames[4]; copies follow
    assert statuses[5 + frozen_after]["reason"] == FAULT_FROZEN
    assert statuses[-1]["failed"] and statuses[-1]["unchanged_frames"] == 11


def test_a_single_bad_frame_does_not_flip_the_verdict(frames):
    statuses = run(CameraHealth("front"), frames[:6] + [np.zeros_like(frames[0])] + frames[6:12])
    assert statuses[6]["reason"] == FAULT_BLACK and not any(s["failed"] for s in statuses)


def test_missing_late_and_malformed_images(frames):
    health = CameraHealth("front")
    run(health, frames[:10])
    last = 9 * PERIOD
    assert health.assess(last + 0.03, last)["reason"] == FAULT_NONE           # fresh and in sync
    assert health.assess(last + 0.3, last)["reason"] == FAULT_OUT_OF_SYNC     # a stale image used for the frame
    silent = health.assess(last + 0.8, None)                                 # nothing picked, 0.8 s old
    assert silent["reason"] == FAULT_NO_FRAME and math.isnan(silent["sync_offset_s"])
    late = CameraHealth("late")
    late.observe(1.0, frames[0])
    assert late.assess(1.1, 1.0)["reason"] == FAULT_OUT_OF_SYNC
    broken = CameraHealth("broken")
    broken.observe_bad(1.0, "encoding 'yuv422' not supported")
    status = broken.assess(1.01, 1.0)
    assert status["reason"] == FAULT_BAD_FORMAT and "yuv422" in status["message"]
    never = CameraHealth("never")
    assert never.assess(5.0, None)["reason"] == FAULT_NO_FRAME


def test_a_low_frame_rate_is_flagged(frames):
    health = CameraHealth("slow")
    statuses = []
    for i, image in enumerate(frames[:8]):       # 2.5 Hz
        stamp = i * 0.4
        health.observe(stamp, image)
        statuses.append(health.assess(stamp + 0.01, stamp))
    assert statuses[-1]["reason"] == FAULT_LOW_RATE and statuses[-1]["failed"]


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (64, 128, 3), dtype=np.uint8)


def test_a_healthy_5hz_camera_is_never_low_rate_from_start_or_after_an_outage():
    health = CameraHealth("five_hz", HealthThresholds(min_rate_hz=4.0))
    statuses = {}
    stamps = [i * 0.2 for i in range(15)] + [4.0 + i * 0.2 for i in range(15)]   # 1 s outage at 2.8-4.0 s
    for i, stamp in enumerate(stamps):
        health.observe(stamp, noise(i))
        statuses[stamp] = health.assess(stamp + 0.01, stamp)
    assert all(s["reason"] != FAULT_LOW_RATE for s in statuses.values())
    assert not any(s["failed"] for s in statuses.values())
    assert statuses[stamps[-1]]["rate_hz"] == pytest.approx(5.0)


def test_the_rate_is_the_stream_not_a_dropped_message():
    health = CameraHealth("lossy")
    stamps = [i * 0.1 for i in range(20) if i not in (7, 13)]        # two messages lost on the way
    for i, stamp in enumerate(stamps):
        health.observe(stamp, noise(i))
    assert health.rate_hz(stamps[-1]) == pytest.approx(10.0)


def test_a_camera_sending_only_undecodable_images_is_bad_format_not_no_frame():
    health = CameraHealth("broken")
    statuses = []
    for i in range(6):
        health.observe_bad(i * 0.1, "truncated: 100 bytes for step 384 x height 64")
        statuses.append(health.assess(i * 0.1 + 0.01, None))
    assert [s["reason"] for s in statuses] == [FAULT_BAD_FORMAT] * 6
    assert statuses[-1]["failed"] and "truncated" in statuses[-1]["message"] and statuses[-1]["bad_images"] == 6
    assert statuses[-1]["image_age_s"] == pytest.approx(0.01)


def test_a_recovering_camera_says_so_and_never_failed_ok():
    health = CameraHealth("recovering")
    for i in range(4):
        health.observe(i * 0.1, np.zeros((64, 128, 3), np.uint8))
        health.assess(i * 0.1, i * 0.1)
    health.observe(0.4, noise(1))
    status = health.assess(0.4, 0.4)
    assert status["failed"] and status["reason"] == FAULT_NONE
    assert "recovering" in status["message"] and "ok" not in status["message"]
    assert status["detail"] == ""


def test_a_frame_is_judged_on_its_own_image_and_ages_are_never_negative():
    health = CameraHealth("behind")
    verdicts = [health.observe(i * 0.1, noise(i)) for i in range(5)]
    black = health.observe(0.5, np.zeros((64, 128, 3), np.uint8))       # newer than the frame judged below
    status = health.assess(0.3, 0.3, verdicts[3])                       # a node still working on the 0.3 s frame
    assert status["reason"] == FAULT_NONE and status["image_age_s"] == 0.0
    assert health.assess(0.5, 0.5, black)["reason"] == FAULT_BLACK


def test_a_new_recording_is_judged_afresh_when_time_jumps_back():
    health = CameraHealth("looped")
    for i in range(30):
        health.observe(100.0 + i * 0.1, noise(i))
        health.assess(100.0 + i * 0.1, 100.0 + i * 0.1)
    health.observe(5.0, noise(99))                      # the bag starts over
    status = health.assess(5.0, 5.0)
    assert status["reason"] == FAULT_NONE and status["image_age_s"] == 0.0
    assert health.assess(5.8, None)["reason"] == FAULT_NO_FRAME           # and its silence is seen again


def test_a_bad_image_with_the_previous_one_held_over_it_is_reported_bad_format(frames):
    # The node's frame hold gives the frame the camera's previous image; the fault is the bad one.
    health = CameraHealth("front")
    run(health, frames[:5])
    health.observe_bad(0.5, "truncated: 100 bytes for step 384 x height 64")
    held = health.assess(0.5, 0.4)
    assert held["reason"] == FAULT_BAD_FORMAT and not held["failed"]      # one frame: reported, not failed
    health.observe(0.6, frames[6])
    assert health.assess(0.6, 0.6)["reason"] == FAULT_NONE
    health.observe(0.7, frames[7])
    assert health.assess(0.8, 0.7)["reason"] == FAULT_OUT_OF_SYNC          # a held image over a lost one
