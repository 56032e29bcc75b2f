"""The latent stand-in VAE of the differential test's SD-topology model: a fixed map from an
image (B, 3, H, W) in [-1, 1] to a 4-channel latent at 1/8 of its size (8x8 means, plus their
channel mean as the 4th channel). Both sides use it (torch only): the official harness as its
VAE's encoder (in the official 0.18215 scaling, so the latent is exactly this), the project's
side as the latent it inverts. Only the start-latent copy and the masks' latent grid need a
latent space; nothing decodes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FACTOR = 8


def encode(image: torch.Tensor) -> torch.Tensor:
    x = F.avg_pool2d(image, FACTOR)
    return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)
