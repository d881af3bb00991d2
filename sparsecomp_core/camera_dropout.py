"""Camera fault simulation for training (SPEC section 2)."""
from __future__ import annotations

import torch
from torch import Tensor


class RandCamMask:
    """With probability ``p_missing`` a sample gets faults: ``n`` cameras,
    ``n`` uniform in [n_min, n_max], chosen at random, have their pixels set to
    zero. The caller keeps the full images as the teacher's input.

    Call with images [B, V, 3, H, W]; returns (masked images [B, V, 3, H, W],
    cam_mask [B, V] bool, True = failed).
    """

    def __init__(self, p_missing: float = 0.6, n_min: int = 1, n_max: int = 2,
                 generator: torch.Generator | None = None):
        if not 0.0 <= p_missing <= 1.0:
            raise ValueError(f"p_missing must be in [0, 1], got {p_missing}")
        if not 0 <= n_min <= n_max:
            raise ValueError(f"need 0 <= n_min <= n_max, got {n_min}, {n_max}")
        self.p_missing, self.n_min, self.n_max = p_missing, n_min, n_max
        self.generator = generator

    def sample_mask(self, batch_size: int, num_cameras: int) -> Tensor:
        """cam_mask [B, V] bool drawn as described above."""
        if self.n_max > num_cameras:
            raise ValueError(f"n_max={self.n_max} exceeds the {num_cameras} cameras")
        gen = self.generator
        has_fault = torch.rand(batch_size, generator=gen) < self.p_missing
        counts = torch.randint(self.n_min, self.n_max + 1, (batch_size,), generator=gen)
        counts = torch.where(has_fault, counts, torch.zeros_like(counts))
        # The `counts[b]` cameras with the lowest random keys fail.
        ranks = torch.rand(batch_size, num_cameras, generator=gen).argsort(dim=1).argsort(dim=1)
        return ranks < counts[:, None]

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.dim() != 5:
            raise ValueError(f"images must be [B, V, 3, H, W], got {tuple(images.shape)}")
        cam_mask = self.sample_mask(images.shape[0], images.shape[1]).to(images.device)
        return apply_cam_mask(images, cam_mask), cam_mask


def apply_cam_mask(images: Tensor, cam_mask: Tensor) -> Tensor:
    """images [B, V, ...] with the failed cameras' pixels set to zero."""
    keep = (~cam_mask).to(images.dtype).view(*cam_mask.shape, *([1] * (images.dim() - 2)))
    return images * keep
