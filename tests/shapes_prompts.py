"""A fixed prompt pair for the random-weight model's tests (a plain module, like workflow_spec)."""

from __future__ import annotations

import torch


def prompt_pair(prompt: str = "flat, red square") -> tuple[torch.Tensor, torch.Tensor]:
    """(cond for ``prompt``, uncond) from a seeded untrained shapes text encoder: fixed contexts
    for the random-weight model's tests."""
    from dragon_demo.shapes_model import ShapesTextEncoder

    torch.manual_seed(0)
    enc = ShapesTextEncoder().eval()
    return enc.encode(prompt), enc.encode("")
