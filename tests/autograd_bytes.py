"""What a gradient pass keeps for backward, measured from outside: autograd's saved tensors."""

from __future__ import annotations

import weakref
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


class _Held:
    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class LiveSaved:
    """While active, ``bytes`` is what autograd holds for backward right now: saved tensors are
    counted when saved and uncounted when autograd frees them (its graph freed after backward)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda held: held.t)

    def _pack(self, t: torch.Tensor) -> _Held:
        # detached: holding an output tensor itself would tie its node to this object in a cycle
        # Python cannot collect, keeping graphs alive that autograd would have freed
        held, n = _Held(t.detach()), t.numel() * t.element_size()
        self.bytes += n
        weakref.finalize(held, self._free, n)
        return held

    def _free(self, n: int) -> None:
        self.bytes -= n

    def __enter__(self) -> "LiveSaved":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
