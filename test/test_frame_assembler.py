"""Frames are assembled around the reference even when cameras are missing."""
from __future__ import annotations

import pytest

from sparsecomp_ros.frame_assembler import FrameAssembler

CAMERAS = ["A", "B", "C"]
MS = 1_000_000


def feed(assembler, t_ns, cameras=CAMERAS, jitter=None):
    for camera in cameras:
        stamp = t_ns + (jitter or {}).get(camera, 0)
        assembler.add_image(camera, stamp, f"{camera}@{stamp}")


def test_nearest_image_within_the_slop_is_taken():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    feed(assembler, 0)
    feed(assembler, 100 * MS, jitter={"A": 12 * MS, "B": -8 * MS})
    frame = assembler.assemble(100 * MS, "cloud")
    assert frame.images["A"] == (112 * MS, f"A@{112 * MS}") and frame.images["B"] == (92 * MS, f"B@{92 * MS}")
    assert frame.images["C"] == (100 * MS, f"C@{100 * MS}") and frame.missing == [] and frame.reference == "cloud"


def test_a_dead_camera_is_missing_and_never_blocks_the_frame():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    for step in range(10):
        t = step * 100 * MS
        feed(assembler, t, cameras=CAMERAS if step < 4 else ["A", "C"])     # B dies after 0.3 s
        frame = assembler.assemble(t)
        assert frame.missing == ([] if step < 4 else ["B"])
        assert frame.images["A"] is not None
    assert frame.nearest_ns["B"] == 300 * MS                               # its last image, far outside the slop


def test_a_late_camera_is_missing_until_its_image_is_within_the_slop():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    feed(assembler, 100 * MS, jitter={"C": -45 * MS})
    frame = assembler.assemble(100 * MS)
    assert frame.missing == ["C"] and frame.nearest_ns["C"] == 55 * MS


def test_settled_means_no_nearer_image_can_still_come():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    assert not assembler.settled("A", 0)                                   # nothing yet
    for step in range(1, 3):                                               # A fires 10 ms before each sweep
        assembler.add_image("A", step * 100 * MS - 10 * MS, "a")
    assert assembler.period_ns("A") == 100 * MS
    assert assembler.settled("A", 200 * MS)             # 10 ms before: the next one, 100 ms later, is farther
    assert not assembler.settled("A", 260 * MS)         # 70 ms after the last: the next one may be nearer
    assembler.add_image("B", 205 * MS, "b")
    assert assembler.settled("B", 200 * MS)             # one at/after the reference is already there


def test_time_going_backwards_clears_the_caches():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    feed(assembler, 5_000 * MS)
    assembler.assemble(5_000 * MS)
    feed(assembler, 0, cameras=["A"])
    frame = assembler.assemble(0)
    assert frame.missing == ["B", "C"] and frame.images["A"] == (0, "A@0")


def test_the_caches_are_bounded():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS, cache_size=6)
    for step in range(30):
        feed(assembler, step * 100 * MS)
    frame = assembler.assemble(2_900 * MS)
    assert frame.missing == [] and assembler.assemble(3_000 * MS).images["A"] is None   # nothing newer
    assert assembler.assemble(3_100 * MS).nearest_ns["A"] == 2_900 * MS
    old = FrameAssembler(CAMERAS, slop_ns=30 * MS, cache_size=6)
    for step in range(30):
        feed(old, step * 100 * MS)
    assert old.assemble(2_300 * MS).missing == CAMERAS                     # 6 newest kept: 2.4..2.9 s
    assert old.assemble(2_400 * MS).images["B"] == (2_400 * MS, f"B@{2_400 * MS}")
    with pytest.raises(KeyError):
        assembler.add_image("Z", 0, None)


def test_a_lost_frame_is_held_from_the_cameras_previous_one_and_a_dead_camera_only_once():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS, hold_ns=120 * MS)
    for step in range(10):
        t = step * 100 * MS
        lost = {4: ["B"], 7: ["C"], 8: ["C"], 9: ["C"]}.get(step, [])         # B loses one frame; C dies at 0.7 s
        feed(assembler, t, cameras=[c for c in CAMERAS if c not in lost])
        frame = assembler.assemble(t)
        if step == 4:
            assert frame.images["B"] == (300 * MS, f"B@{300 * MS}") and frame.held == ["B"] and frame.missing == []
        elif step == 7:
            assert frame.images["C"] == (600 * MS, f"C@{600 * MS}") and frame.held == ["C"]
        elif step >= 8:                                                    # 0.2 s old: past the hold
            assert frame.images["C"] is None and frame.missing == ["C"] and frame.held == []
        else:
            assert frame.held == [] and frame.missing == []
        assert frame.images["A"] == (t, f"A@{t}")


def test_without_a_hold_a_lost_frame_is_missing():
    assembler = FrameAssembler(CAMERAS, slop_ns=30 * MS)
    feed(assembler, 0)
    feed(assembler, 100 * MS, cameras=["A", "C"])
    frame = assembler.assemble(100 * MS)
    assert frame.missing == ["B"] and frame.held == [] and frame.images["B"] is None
    with pytest.raises(ValueError, match="hold_ns"):
        FrameAssembler(CAMERAS, hold_ns=-1)
