"""Camera images as vehicles deliver them: every supported sensor_msgs/Image
encoding decoded by image_to_rgb against a reference encoder written here with
numpy (Bayer mosaics, BT.601 YUV 4:2:2, 16-bit scaling), the BadMessage paths,
CompressedImage decoding (CPU, and nvjpeg where a GPU and torchvision exist),
image batches from torch tensors, and the camera-health view."""
from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sensor_msgs.msg import CompressedImage, Image

from sparsecomp_ros import conversions
from sparsecomp_ros.conversions import (CHANNELS, BadMessage, CompressedDecoder, compressed_to_rgb, health_view,
                                        image_to_rgb)
from sparsecomp_ros.image_batch import ImageBatcher

HEIGHT, WIDTH = 48, 64
RED_BLOCK = (slice(8, 24), slice(8, 24))        # a red-dominant region of the scene
BLUE_BLOCK = (slice(24, 40), slice(40, 56))
GPU_DECODING = torch.cuda.is_available() and importlib.util.find_spec("torchvision") is not None


def scene() -> np.ndarray:
    """[48, 64, 3] uint8 RGB: smooth gradients in every channel, a fine texture, a red and a blue block."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rgb = np.stack([40 + 160 * x / (WIDTH - 1), 30 + 180 * y / (HEIGHT - 1), 200 - 150 * x / (WIDTH - 1)], axis=2)
    rgb += (10 * np.sin(x * 0.8) * np.cos(y * 0.6))[..., None]
    rgb[RED_BLOCK] = (220, 40, 30)
    rgb[BLUE_BLOCK] = (30, 50, 220)
    return np.clip(rgb.round(), 0, 255).astype(np.uint8)


def grey_scene() -> np.ndarray:
    return scene()[..., 1]


# --- reference encoders: rows of bytes [H, row bytes] as the encoding lays them out ----------------------
BAYER_COLOURS = {"r": 0, "g": 1, "b": 2}


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """[H, W] uint8: each pixel keeps the channel the pattern (its top-left 2x2 block, row by row) gives it."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, BAYER_COLOURS[pattern[2 * dy + dx]]]
    return mosaic


def yuv422_rows(rgb: np.ndarray, order: str) -> np.ndarray:
    """[H, 2 W] uint8 in BT.601 video range (Y 16..235, U and V 16..240), the chroma of each pixel pair averaged;
    ``order`` "uyvy" or "yuyv" is the byte order of a pair."""
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u = (u[:, 0::2] + u[:, 1::2]) / 2
    v = (v[:, 0::2] + v[:, 1::2]) / 2
    planes = {"y0": y[:, 0::2], "y1": y[:, 1::2], "u": u, "v": v}
    names = ("u", "y0", "v", "y1") if order == "uyvy" else ("y0", "u", "y1", "v")
    pairs = np.stack([planes[name] for name in names], axis=2)          # [H, W / 2, 4]
    return np.clip(pairs.round(), 0, 255).astype(np.uint8).reshape(rgb.shape[0], -1)


def sixteen_bit_rows(values8: np.ndarray, big_endian: bool) -> np.ndarray:
    """[H, 2 x values per row] uint8: 8-bit values widened to 16 bits (v * 257, full scale) in the byte order."""
    wide = values8.astype(np.uint16) * 257
    return wide.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(values8.shape[0], -1)


def reference(encoding: str, big_endian: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rows [H, row bytes] of the encoding, the [H, W, 3] RGB image it should decode to)."""
    rgb = scene()
    grey = np.repeat(grey_scene()[..., None], 3, axis=2)
    alpha = np.full((HEIGHT, WIDTH, 1), 77, np.uint8)
    bgr = rgb[..., ::-1]
    rows8 = {"rgb": rgb, "bgr": bgr, "rgba": np.concatenate([rgb, alpha], 2), "bgra": np.concatenate([bgr, alpha], 2),
             "mono": grey_scene()}
    if encoding.startswith("bayer_"):
        mosaic = bayer_mosaic(rgb, encoding[6:10])
        return (sixteen_bit_rows(mosaic, big_endian) if encoding.endswith("16") else mosaic), rgb
    if encoding in ("yuv422", "uyvy"):
        return yuv422_rows(rgb, "uyvy"), rgb
    if encoding in ("yuv422_yuy2", "yuyv"):
        return yuv422_rows(rgb, "yuyv"), rgb
    base, bits = encoding.rstrip("0123456789"), encoding[len(encoding.rstrip("0123456789")):]
    pixels = rows8[base].reshape(HEIGHT, -1)
    expected = grey if base == "mono" else rgb
    return (sixteen_bit_rows(pixels, big_endian) if bits == "16" else pixels), expected


def image_msg(rows: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False,
              height: int = HEIGHT, width: int = WIDTH) -> Image:
    """An Image of ``rows`` [H, row bytes], each row followed by ``padding`` bytes (step > row bytes)."""
    padded = np.full((rows.shape[0], rows.shape[1] + padding), 0xAB, np.uint8)   # non-zero padding shows leaks
    padded[:, : rows.shape[1]] = rows
    return Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=padded.shape[1],
                 data=padded.tobytes())


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def assert_red_stays_red(decoded: np.ndarray) -> None:
    """A swapped Bayer pattern or chroma order turns the red block blue or green."""
    red = decoded[8 + 2: 24 - 2, 8 + 2: 24 - 2].reshape(-1, 3).astype(int).mean(axis=0)
    blue = decoded[24 + 2: 40 - 2, 40 + 2: 56 - 2].reshape(-1, 3).astype(int).mean(axis=0)
    assert red[0] > red[1] + 100 and red[0] > red[2] + 100, red
    assert blue[2] > blue[0] + 100 and blue[2] > blue[1] + 100, blue


def decode(msg: Image) -> np.ndarray:
    decoded = image_to_rgb(msg, expected_size=(HEIGHT, WIDTH))
    assert decoded.shape == (HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    return decoded


# --- lossless encodings: exact ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding, padding, big_endian", [
    ("rgb8", 0, False), ("bgr8", 4, False), ("rgba8", 0, False), ("bgra8", 8, False), ("mono8", 3, False),
    ("rgb16", 0, False), ("bgr16", 6, True), ("rgba16", 2, False), ("bgra16", 0, True),
    ("mono16", 0, False), ("mono16", 5, True),
])
def test_packed_encodings_decode_exactly(encoding, padding, big_endian):
    rows, expected = reference(encoding, big_endian)
    assert np.array_equal(decode(image_msg(rows, encoding, padding, big_endian)), expected)


def test_sixteen_bit_values_are_scaled_by_their_high_byte_in_either_byte_order():
    values = np.random.default_rng(0).integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    for big_endian in (False, True):
        rows = values.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(HEIGHT, -1)
        decoded = decode(image_msg(rows, "mono16", 2, big_endian))
        assert np.array_equal(decoded, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2))
    # Read in the wrong byte order, the low bytes would come out: the flag matters.
    wrong = decode(image_msg(values.astype("<u2").view(np.uint8).reshape(HEIGHT, -1), "mono16", big_endian=True))
    assert not np.array_equal(wrong[..., 0], (values >> 8).astype(np.uint8))


def test_rgb8_and_other_packed_colour_encodings_are_views_of_the_message_not_copies():
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16"):
        rows, _ = reference(encoding)
        msg = image_msg(rows, encoding, padding=4)
        assert np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8)), encoding


# --- Bayer: demosaiced, pattern proved by the colours -----------------------------------------------------
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")


@pytest.mark.parametrize("encoding, padding, big_endian", [
    ("bayer_rggb8", 0, False), ("bayer_bggr8", 6, False), ("bayer_gbrg8", 0, False), ("bayer_grbg8", 2, False),
    ("bayer_rggb16", 4, False), ("bayer_bggr16", 0, True), ("bayer_gbrg16", 0, False), ("bayer_grbg16", 2, True),
])
def test_bayer_encodings_demosaic_with_the_right_pattern(encoding, padding, big_endian):
    rows, expected = reference(encoding, big_endian)
    msg = image_msg(rows, encoding, padding, big_endian)
    decoded = decode(msg)
    error = mean_abs_error(decoded, expected)
    assert error < 6, error
    assert_red_stays_red(decoded)
    # The same mosaic read with any other pattern is far off: the right one is not right by chance.
    bits = encoding[len("bayer_rggb"):]
    for other in BAYER_PATTERNS:
        if other != encoding[6:10]:
            msg.encoding = f"bayer_{other}{bits}"
            assert mean_abs_error(decode(msg), expected) > 4 * error + 10, other


# --- YUV 4:2:2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding, padding", [("yuv422", 0), ("uyvy", 8), ("yuv422_yuy2", 4), ("yuyv", 0)])
def test_yuv422_encodings_convert_with_bt601_and_the_right_byte_order(encoding, padding):
    rows, expected = reference(encoding)
    msg = image_msg(rows, encoding, padding)
    decoded = decode(msg)
    error = mean_abs_error(decoded, expected)
    assert error < 4, error
    assert_red_stays_red(decoded)
    # UYVY read as YUYV (or the reverse) swaps luma and chroma bytes: far off.
    msg.encoding = "yuv422_yuy2" if encoding in ("yuv422", "uyvy") else "yuv422"
    assert mean_abs_error(decode(msg), expected) > 10 * error + 20


def test_every_supported_encoding_has_a_test_here():
    tested = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb16", "bgr16", "rgba16", "bgra16", "mono16",
              "yuv422", "uyvy", "yuv422_yuy2", "yuyv"} | {f"bayer_{p}{b}" for p in BAYER_PATTERNS for b in (8, 16)}
    assert set(CHANNELS) == tested


# --- bad messages ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("msg, reason", [
    (Image(height=4, width=6, encoding="32FC1", step=24, data=bytes(96)), "encoding '32FC1' not supported"),
    (Image(height=4, width=6, encoding="nv12", step=6, data=bytes(36)), "not supported"),
    (Image(height=0, width=6, encoding="rgb8", step=18, data=b""), "empty"),
    (Image(height=4, width=0, encoding="bayer_rggb8", step=0, data=b""), "empty"),
    (Image(height=4, width=6, encoding="rgb8", step=17, data=bytes(72)), "step 17 < width 6 x 3 channels"),
    (Image(height=4, width=6, encoding="mono16", step=6, data=bytes(48)), "step 6 < width 6 x 1 channels x 2 bytes"),
    (Image(height=4, width=6, encoding="yuv422", step=10, data=bytes(48)), "step 10"),
    (Image(height=4, width=6, encoding="bayer_bggr8", step=6, data=bytes(23)), "truncated: 23 bytes"),
    (Image(height=4, width=6, encoding="rgb16", step=36, data=bytes(143)), "truncated"),
    (Image(height=4, width=5, encoding="yuv422", step=10, data=bytes(40)), "even width"),
    (Image(height=4, width=5, encoding="yuyv", step=10, data=bytes(40)), "even width"),
    (Image(height=5, width=6, encoding="bayer_rggb8", step=6, data=bytes(30)), "even dimensions"),
    (Image(height=4, width=7, encoding="bayer_grbg16", step=14, data=bytes(56)), "even dimensions"),
])
def test_bad_images_raise_bad_message_with_the_reason(msg, reason):
    with pytest.raises(BadMessage, match=reason):
        image_to_rgb(msg)


def test_an_image_of_another_size_than_expected_is_a_bad_message():
    rows, _ = reference("bayer_rggb8")
    with pytest.raises(BadMessage, match="size 48x64, expected 48x80"):
        image_to_rgb(image_msg(rows, "bayer_rggb8"), expected_size=(48, 80))


# --- the cv_bridge seam ----------------------------------------------------------------------------------
class FakeBridge:
    """Stands in for cv_bridge.CvBridge: records what it converts, converts like the fallback or fails."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        self.calls.append((msg.encoding, desired_encoding))
        if self.fail:
            raise RuntimeError("Unsupported conversion")
        return np.full((msg.height, msg.width, 3), 7, np.uint8)


def test_with_cv_bridge_the_opencv_encodings_go_through_it_and_views_stay_views(monkeypatch):
    bridge = FakeBridge()
    monkeypatch.setattr(conversions, "USING_CV_BRIDGE", True)
    monkeypatch.setattr(conversions, "_cv_bridge", bridge)
    for encoding in ("bayer_rggb8", "yuv422", "yuv422_yuy2"):
        rows, _ = reference(encoding)
        assert (decode(image_msg(rows, encoding)) == 7).all()
    rows, expected = reference("bgr8")
    assert np.array_equal(decode(image_msg(rows, "bgr8")), expected)
    assert bridge.calls == [("bayer_rggb8", "rgb8"), ("yuv422", "rgb8"), ("yuv422_yuy2", "rgb8")]
    # Validation runs first, and a cv_bridge failure is a BadMessage, not an exception in the node.
    with pytest.raises(BadMessage, match="even dimensions"):
        image_to_rgb(Image(height=5, width=6, encoding="bayer_rggb8", step=6, data=bytes(30)))
    monkeypatch.setattr(conversions, "_cv_bridge", FakeBridge(fail=True))
    with pytest.raises(BadMessage, match="cv_bridge cannot convert bayer_rggb8: Unsupported conversion"):
        image_to_rgb(image_msg(reference("bayer_rggb8")[0], "bayer_rggb8"))


@pytest.mark.skipif(not conversions.USING_CV_BRIDGE, reason="ROS 2 cv_bridge is not importable here")
def test_real_cv_bridge_and_the_opencv_fallback_agree(monkeypatch):
    messages = {encoding: image_msg(reference(encoding)[0], encoding, padding=4)
                for encoding in sorted(conversions._CV_BRIDGE_ENCODINGS)}
    with_bridge = {encoding: image_to_rgb(msg) for encoding, msg in messages.items()}
    monkeypatch.setattr(conversions, "USING_CV_BRIDGE", False)
    for encoding, msg in messages.items():
        assert mean_abs_error(image_to_rgb(msg), with_bridge[encoding]) < 1, encoding


# --- CompressedImage -------------------------------------------------------------------------------------
def compressed(rgb: np.ndarray, extension: str, **params) -> CompressedImage:
    flags = [cv2.IMWRITE_JPEG_QUALITY, params["quality"]] if "quality" in params else []
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb, flags)
    assert ok
    return CompressedImage(format=extension[1:], data=encoded.tobytes())


def test_jpeg_and_png_decode_on_the_cpu_to_rgb():
    rgb = scene()
    jpeg = compressed_to_rgb(compressed(rgb, ".jpg", quality=95))
    assert jpeg.shape == (HEIGHT, WIDTH, 3) and jpeg.dtype == np.uint8
    assert mean_abs_error(jpeg, rgb) < 5
    assert_red_stays_red(jpeg)
    assert np.array_equal(compressed_to_rgb(compressed(rgb, ".png")), rgb)                       # lossless
    grey = compressed_to_rgb(compressed(grey_scene(), ".png"))                                   # grey PNG
    assert np.array_equal(grey, np.repeat(grey_scene()[..., None], 3, axis=2))


@pytest.mark.parametrize("data", [b"not a jpeg", b"", b"\xff\xd8\xff\xe0" + bytes(100)])
def test_garbage_compressed_data_is_a_bad_message(data):
    with pytest.raises(BadMessage, match="does not decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=data))


def test_compressed_decoder_without_gpu_decoding_returns_numpy_from_the_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)        # as where torchvision is not installed
    rgb = scene()
    for device in ("cpu", "cuda"):
        decoder = CompressedDecoder(torch.device(device))
        assert not decoder.uses_nvjpeg
        decoded = decoder.decode(compressed(rgb, ".jpg", quality=95))
        assert isinstance(decoded, np.ndarray) and mean_abs_error(decoded, rgb) < 5
        assert np.array_equal(decoder.decode(compressed(rgb, ".png")), rgb)
        with pytest.raises(BadMessage):
            decoder.decode(CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"))


@pytest.mark.cuda
@pytest.mark.skipif(not GPU_DECODING, reason="needs CUDA and torchvision (nvjpeg)")
def test_compressed_decoder_decodes_jpeg_on_the_gpu_and_the_batch_takes_it_directly():
    device = torch.device("cuda")
    decoder = CompressedDecoder(device)
    assert decoder.uses_nvjpeg
    rgb = scene()
    jpeg = compressed(rgb, ".jpg", quality=95)
    decoded = decoder.decode(jpeg)
    assert isinstance(decoded, torch.Tensor) and decoded.device.type == "cuda"
    assert decoded.shape == (HEIGHT, WIDTH, 3) and decoded.dtype == torch.uint8
    on_cpu = compressed_to_rgb(jpeg)
    assert mean_abs_error(decoded.cpu().numpy(), on_cpu) < 2 and decoder.cpu_fallbacks == 0
    assert isinstance(decoder.decode(compressed(rgb, ".png")), np.ndarray)         # PNG: the CPU
    with pytest.raises(BadMessage):
        decoder.decode(CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"))
    # Into the batch on the device, at the model size and resized, like the host images.
    batcher = ImageBatcher(3, (HEIGHT, WIDTH), device)
    small = decoder.decode(compressed(rgb[::2, ::2].copy(), ".jpg", quality=95))
    batch = batcher.build([decoded, small, on_cpu])
    assert torch.equal(batch[0, 0], decoded.permute(2, 0, 1))
    assert torch.equal(batch[0, 2].cpu(), torch.from_numpy(on_cpu).permute(2, 0, 1))
    expected = F.interpolate(small.permute(2, 0, 1)[None].float(), size=(HEIGHT, WIDTH), mode="bilinear",
                             align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(batch[0, 1], expected)
    view = health_view(decoded)
    assert isinstance(view, np.ndarray) and np.array_equal(view, decoded.cpu().numpy())


# --- ImageBatcher with tensors ---------------------------------------------------------------------------
def test_image_batcher_takes_tensors_on_its_device_beside_numpy_images():
    rng = np.random.default_rng(4)
    batcher = ImageBatcher(4, (HEIGHT, WIDTH), torch.device("cpu"))
    as_array = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    small_tensor = torch.from_numpy(rng.integers(0, 256, (HEIGHT // 2, WIDTH // 2, 3), dtype=np.uint8))
    chw_view = torch.from_numpy(rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8)).permute(1, 2, 0)
    batch = batcher.build([as_tensor, as_array, small_tensor, chw_view])
    assert batch.shape == (1, 4, 3, HEIGHT, WIDTH) and batch.dtype == torch.uint8
    assert torch.equal(batch[0, 0], as_tensor.permute(2, 0, 1))
    assert torch.equal(batch[0, 1], torch.from_numpy(as_array).permute(2, 0, 1))
    expected = F.interpolate(small_tensor.permute(2, 0, 1)[None].float(), size=(HEIGHT, WIDTH), mode="bilinear",
                             align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(batch[0, 2], expected)
    assert torch.equal(batch[0, 3], chw_view.permute(2, 0, 1))          # a permuted (decode_jpeg-like) view
    batch = batcher.build([None, as_tensor, None, None])                   # nothing left of the last frame
    assert not batch[0, 0].any() and not batch[0, 2:].any()
    assert torch.equal(batch[0, 1], as_tensor.permute(2, 0, 1))


# --- the camera-health view ------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width", [(100, 200), (120, 160), (239, 400), (240, 320), (900, 1600),
                                           (1080, 1920), (2048, 2448)])
def test_health_view_is_a_strided_view_with_a_short_side_of_120_to_239_pixels(height, width):
    image = np.zeros((height, width, 3), np.uint8)
    view = health_view(image)
    assert np.shares_memory(view, image) and view.ndim == 3 and view.dtype == np.uint8
    short = min(view.shape[:2])
    assert short == min(height, width) if min(height, width) < 120 else 120 <= short < 240
    step = view.strides[1] // image.strides[1]                  # one whole step in both directions
    assert view.strides[0] == step * image.strides[0] and view.shape == image[::step, ::step].shape


def test_health_view_of_grey_images_and_tensors_is_numpy():
    image = np.random.default_rng(5).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    expected = image[::7, ::7]
    assert health_view(image).shape == (129, 229, 3)
    assert np.array_equal(health_view(image[..., 0]), expected[..., 0])
    from_tensor = health_view(torch.from_numpy(image))
    assert isinstance(from_tensor, np.ndarray) and np.array_equal(from_tensor, expected)
    assert np.array_equal(health_view(torch.from_numpy(image).permute(2, 0, 1).permute(1, 2, 0)), expected)


@pytest.mark.cuda
def test_health_view_of_a_cuda_tensor_is_subsampled_on_the_gpu():
    image = np.random.default_rng(6).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    view = health_view(torch.from_numpy(image).cuda())
    assert isinstance(view, np.ndarray) and np.array_equal(view, image[::7, ::7])
