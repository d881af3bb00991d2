"""The model's image batch from decoded camera images, with one copy per camera.

The node receives each camera as an [H, W, 3] uint8 view of its message.
``ImageBatcher`` keeps one host buffer [V, H, W, 3] (page-locked when the model
runs on CUDA, so the transfer is one asynchronous copy), copies each usable
camera into it with a plain memcpy, zeroes the others, and hands the model a
[1, V, 3, H, W] view of it on the device. The HWC -> CHW reordering is left to
the model's normalisation, which reads every pixel anyway. No torch CPU
kernels run here: their thread pool, spinning between frames, cost the node
more CPU than its own work (docs/performance.md). An image whose size is not
the model input's is resized on the device. No ROS imports.
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

    def build(self, images: list[np.ndarray | None]) -> torch.Tensor:
        """[1, V, 3, H, W] uint8 on the device from V images [h, w, 3] uint8 (None = not
        used: zeros). On the CPU the result shares memory with this batcher: it is valid
        until the next ``build``."""
        if self._copied is not None:
            self._copied.synchronize()          # the previous frame's copy has left the buffer
        to_resize = []
        for index, image in enumerate(images):
            if image is None:
                self.host_array[index] = 0
            elif image.shape[:2] == self.image_size:
                np.copyto(self.host_array[index], image[..., :3])
            else:
                self.host_array[index] = 0
                to_resize.append(index)
        batch = self.host.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record()
        for index in to_resize:
            batch[index] = self.resized(images[index])
        return batch.permute(0, 3, 1, 2)[None]

    def resized(self, image: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 on the device: ``image`` [h, w, 3] resized bilinearly to the model input."""
        tensor = torch.from_numpy(np.ascontiguousarray(image[..., :3])).to(self.device).permute(2, 0, 1)[None]
        tensor = F.interpolate(tensor.float(), size=self.image_size, mode="bilinear", align_corners=False)
        return tensor[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
