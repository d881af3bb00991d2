"""The model's image batch from decoded camera images, with one copy per camera.

The node receives each camera as an [H, W, 3] uint8 view of its message, or,
for a JPEG decoded on the GPU (conversions.CompressedDecoder), as an
[H, W, 3] uint8 torch tensor already on the model's device.
``ImageBatcher`` keeps one host buffer [V, H, W, 3] (page-locked when the model
runs on CUDA, so the transfer is one asynchronous copy), copies each usable
host camera image into it with a plain memcpy, zeroes the others, and hands the
model a [1, V, 3, H, W] view of it on the device; images already on the device
are copied into that device batch directly, never through the host. The
HWC -> CHW reordering is left to the model's normalisation, which reads every
pixel anyway. No torch CPU kernels run here: their thread pool, spinning
between frames, cost the node more CPU than its own work
(docs/performance.md); a CPU tensor is therefore copied as a numpy array. An
image whose size is not the model input's is resized on the device. No ROS
imports.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class ImageBatcher:
    def __init__(self, num_cameras: int, image_size: tuple[int, int], device: torch.device):
        self.device = device
        self.image_size = tuple(image_size)
        pin = device.type == "cuda"
        self.host = torch.zeros(num_cameras, *self.image_size, 3, dtype=torch.uint8, pin_memory=pin)
        self.host_array = self.host.numpy()
        self._copied: torch.cuda.Event | None = None

    def build(self, images: list[np.ndarray | torch.Tensor | None]) -> torch.Tensor:
        """[1, V, 3, H, W] uint8 on the device from V images [h, w, 3] uint8 (None = not
        used: zeros). An image is a numpy array (or a CPU tensor), copied through the
        host buffer, or a tensor on a GPU, copied on the device. On the CPU the result
        shares memory with this batcher: it is valid until the next ``build``."""
        if self._copied is not None:
            self._copied.synchronize()          # the previous frame's copy has left the buffer
        on_device = []                          # placed into the device batch after the transfer
        for index, image in enumerate(images):
            if isinstance(image, torch.Tensor) and image.device.type == "cpu":
                image = image.detach().numpy()  # a memcpy below, not a torch CPU kernel
            if image is None:
                self.host_array[index] = 0
            elif isinstance(image, np.ndarray) and image.shape[:2] == self.image_size:
                np.copyto(self.host_array[index], image[..., :3])
            else:
                self.host_array[index] = 0
                on_device.append((index, image))
        batch = self.host.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record()
        for index, image in on_device:
            batch[index] = self.device_image(image)
        return batch.permute(0, 3, 1, 2)[None]

    def device_image(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[H, W, 3] uint8 on the device: ``image`` [h, w, 3] uint8 (numpy or a tensor on
        any device) moved there and, if its size is not the model input's, resized bilinearly."""
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image[..., :3]))
        image = image[..., :3].to(self.device)
        if tuple(image.shape[:2]) == self.image_size:
            return image
        chw = image.permute(2, 0, 1)[None].float()
        chw = F.interpolate(chw, size=self.image_size, mode="bilinear", align_corners=False)
        return chw[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
