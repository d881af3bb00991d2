"""The node's image batch: one memcpy per camera into a reused HWC buffer,
reordered by the model's normalisation; the same model input as stacking
CHW images one by one."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sparsecomp_core.models.model_config import load_model_config
from sparsecomp_core.models.detector import build_detector
from sparsecomp_ros.image_batch import ImageBatcher


def camera_images(rng, count, size=(64, 128)):
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def test_batch_equals_stacked_chw_images_with_unused_cameras_zero():
    rng = np.random.default_rng(0)
    batcher = ImageBatcher(4, (64, 128), torch.device("cpu"))
    images = camera_images(rng, 4)
    images[2] = None
    batch = batcher.build(images)
    assert batch.shape == (1, 4, 3, 64, 128) and batch.dtype == torch.uint8
    for index, image in enumerate(images):
        expected = torch.zeros(3, 64, 128, dtype=torch.uint8) if image is None else torch.from_numpy(image).permute(2, 0, 1)
        assert torch.equal(batch[0, index], expected)


def test_reusing_the_buffer_leaves_no_trace_of_the_previous_frame():
    rng = np.random.default_rng(1)
    batcher = ImageBatcher(3, (64, 128), torch.device("cpu"))
    batcher.build(camera_images(rng, 3))
    second = [None] + camera_images(rng, 2)
    batch = batcher.build(second)
    assert not batch[0, 0].any()                      # the camera used in frame 1 and not in frame 2 is zero
    assert torch.equal(batch[0, 2], torch.from_numpy(second[2]).permute(2, 0, 1))


def test_an_image_of_another_size_is_resized_bilinearly_and_views_of_bgr_messages_work():
    rng = np.random.default_rng(2)
    batcher = ImageBatcher(2, (64, 128), torch.device("cpu"))
    small = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    bgr = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    batch = batcher.build([small, bgr[..., ::-1]])        # a reversed-channel view, as image_to_rgb returns
    expected = F.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None].float(), size=(64, 128),
                             mode="bilinear", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(batch[0, 0], expected)
    assert torch.equal(batch[0, 1], torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1))


def test_the_model_normalises_an_hwc_view_exactly_like_contiguous_images():
    model = build_detector(load_model_config("tiny"))
    rng = np.random.default_rng(3)
    batch = ImageBatcher(7, (128, 256), torch.device("cpu")).build(camera_images(rng, 7, (128, 256)))
    assert not batch.is_contiguous()
    from_view, from_contiguous = model.normalise_images(batch), model.normalise_images(batch.contiguous())
    assert from_view.is_contiguous() and torch.equal(from_view, from_contiguous)
