"""What a gradient pass keeps for backward, measured from outside: autograd's saved tensors."""

from __future__ import annotations

from typing import Callable

import torch


def saved_bytes(run: Callable[[], object]) -> int:
    """Bytes autograd saves for backward while ``run()`` runs (the activations a gradient pass keeps)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total[0]
