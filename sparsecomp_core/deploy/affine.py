"""Closed-form inverses of 3x3 matrices and 4x4 affine transforms.

The fixed-shape path and its ONNX graph use these instead of ``torch.linalg.inv``:
ONNX has no matrix inverse op (torch's exporter leaves ``linalg_inv`` unimplemented),
and on CUDA ``torch.linalg.inv`` checks for singular input with a host sync, which a
CUDA graph cannot capture. Every matrix the model inverts is a pinhole intrinsics
matrix or a rigid / affine pose (last row 0, 0, 0, 1), so the cofactor formula is
exact up to rounding (test_deploy.py compares against torch.linalg.inv).
"""
from __future__ import annotations

import torch
from torch import Tensor


def inverse_3x3(matrix: Tensor) -> Tensor:
    """Inverse of [..., 3, 3] matrices by the adjugate over the determinant (the caller
    guarantees they are invertible: intrinsics, rotations)."""
    a, b, c = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    d, e, f = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    g, h, i = matrix[..., 2, 0], matrix[..., 2, 1], matrix[..., 2, 2]
    cofactor_a, cofactor_b, cofactor_c = e * i - f * h, f * g - d * i, d * h - e * g
    determinant = a * cofactor_a + b * cofactor_b + c * cofactor_c
    adjugate = torch.stack([
        torch.stack([cofactor_a, c * h - b * i, b * f - c * e], dim=-1),
        torch.stack([cofactor_b, a * i - c * g, c * d - a * f], dim=-1),
        torch.stack([cofactor_c, b * g - a * h, a * e - b * d], dim=-1)], dim=-2)
    return adjugate / determinant[..., None, None]


def affine_inverse(transform: Tensor) -> Tensor:
    """Inverse of [..., 4, 4] affine transforms [A t; 0 1]: [inv(A), -inv(A) t; 0 1]."""
    rotation_inverse = inverse_3x3(transform[..., :3, :3])
    translation = -(rotation_inverse @ transform[..., :3, 3:4])
    top = torch.cat([rotation_inverse, translation], dim=-1)                       # [..., 3, 4]
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)
