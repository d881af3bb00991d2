"""Frames are assembled around the reference even when cameras are missing."""
from __future__ import annotations

import pytest

from sparsecomp_ros.frame_assembler import FrameAssembler

CAMERAS = ["A", "B", "C"]


def feed(assembler, t_us, cameras=CAMERAS, jitter=None):
    for camera in cameras:
        stamp = t_us + (jitter or {}).get(camera, 0)
        assembler.add_image(camera, stamp, f"{camera}@{stamp}")


def test_nearest_image_within_the_slop_is_taken():
    assembler = FrameAssembler(CAMERAS, slop_us=30_000)
    feed(assembler, 0)
    feed(assembler, 100_000, jitter={"A": 12_000, "B": -8_000})
    frame = assembler.assemble(100_000, "cloud")
    assert frame.images["A"] == (112_000, "A@112000") and frame.images["B"] == (92_000, "B@92000")
    assert frame.images["C"] == (100_000, "C@100000") and frame.missing == [] and frame.reference == "cloud"


def test_a_dead_camera_is_missing_and_never_blocks_the_frame():
    assembler = FrameAssembler(CAMERAS, slop_us=30_000)
    for step in range(10):
        t = step * 100_000
        feed(assembler, t, cameras=CAMERAS if step < 4 else ["A", "C"])     # B dies after 0.3 s
        frame = assembler.assemble(t)
        assert frame.missing == ([] if step < 4 else ["B"])
        assert frame.images["A"] is not None


def test_a_late_camera_is_missing_until_its_image_is_within_the_slop():
    assembler = FrameAssembler(CAMERAS, slop_us=30_000)
    feed(assembler, 100_000, jitter={"C": -45_000})
    assert assembler.assemble(100_000).missing == ["C"]


def test_time_going_backwards_clears_the_buffers():
    assembler = FrameAssembler(CAMERAS, slop_us=30_000)
    feed(assembler, 5_000_000)
    assembler.assemble(5_000_000)
    feed(assembler, 0, cameras=["A"])
    frame = assembler.assemble(0)
    assert frame.missing == ["B", "C"] and frame.images["A"] == (0, "A@0")


def test_old_images_are_dropped_from_the_buffers():
    assembler = FrameAssembler(CAMERAS, slop_us=30_000, buffer_us=500_000)
    for step in range(30):
        feed(assembler, step * 100_000)
    assert all(len(buffer) <= 6 for buffer in assembler._buffers.values())
    with pytest.raises(KeyError):
        assembler.add_image("Z", 0, None)
