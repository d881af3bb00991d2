"""The newest-frame mailbox and the processing-load verdict."""
from __future__ import annotations

import pytest

from sparsecomp_ros.frame_scheduler import ERROR, OK, WARN, FrameRequest, LatestFrameMailbox, LoadMonitor


def test_the_mailbox_keeps_the_newest_request_and_counts_the_ones_it_replaced():
    mailbox = LatestFrameMailbox()
    assert mailbox.take() is None
    assert mailbox.offer(FrameRequest(1, 0.0)) is None
    replaced = mailbox.offer(FrameRequest(2, 0.1))
    assert replaced.reference_ns == 1 and mailbox.skipped == 1
    mailbox.offer(FrameRequest(3, 0.2))
    assert mailbox.take().reference_ns == 3 and mailbox.pending is None and mailbox.skipped == 2


@pytest.mark.parametrize("processing_s, level", [(0.05, OK), (0.15, WARN), (0.3, ERROR)])
def test_the_load_level_compares_processing_time_with_the_sensor_period(processing_s, level):
    monitor = LoadMonitor(window=10, warn_ratio=1.0, error_ratio=2.0)
    assert monitor.status()["level"] == OK and monitor.status()["message"] == "measuring"
    for step in range(12):
        monitor.reference_offered(step * 0.1)         # references arrive at 10 Hz
        monitor.frame_processed(processing_s)
    status = monitor.status()
    assert status["level"] == level and status["load_ratio"] == pytest.approx(processing_s / 0.1)
    assert status["sensor_period_ms"] == pytest.approx(100.0)
    assert ("overloaded" in status["message"]) == (level != OK)


def test_a_slowed_replay_is_judged_by_arrivals_not_stamps():
    """A bag replayed at 0.25x: references arrive every 0.4 s; 0.2 s per frame keeps up."""
    monitor = LoadMonitor()
    for step in range(10):
        monitor.reference_offered(step * 0.4)
        monitor.frame_processed(0.2)
    assert monitor.status()["level"] == OK


def test_skipped_frames_are_counted_in_the_window():
    monitor = LoadMonitor(window=5)
    for _ in range(3):
        monitor.frame_skipped()
    monitor.frame_processed(0.1)
    assert monitor.status()["skipped_in_window"] == 3 and monitor.status()["offered_in_window"] == 4
    with pytest.raises(ValueError):
        LoadMonitor(warn_ratio=2.0, error_ratio=1.0)
