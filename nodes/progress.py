"""Per-step progress for the nodes' own sampling loops: :func:`progress_callback`.

ComfyUI is imported when a callback is made: this module imports without it.
"""

from __future__ import annotations

from typing import Callable

import torch


def progress_callback(total: int) -> Callable[[int, torch.Tensor], None]:
    """A per-step callback ``(step, z)``: ComfyUI's progress bar and its interrupt check."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def step(s: int, z: torch.Tensor) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update(1)

    return step
