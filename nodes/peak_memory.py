"""The peak accelerator memory of one node run, for its console line.

CUDA keeps one peak-allocated counter per device for the whole process; resetting it would
change what other code reads, so nothing is reset: the peak after the run is this run's own
when it rose during the run, else the run stayed below the process's earlier peak (an upper
bound). Devices without such a counter (CPU, MPS) report nothing.
"""

from __future__ import annotations

import torch


class PeakMemory:
    """Reads CUDA's peak allocated bytes at construction and in :meth:`describe`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.before = self._peak()

    def _peak(self) -> int | None:
        if self.device.type != "cuda" or not torch.cuda.is_available():
            return None
        return int(torch.cuda.max_memory_allocated(self.device))

    def describe(self) -> str | None:
        """"peak CUDA memory X GiB" (this run's), "... at most X GiB" (below an earlier peak), or None."""
        after = self._peak()
        if after is None or self.before is None:
            return None
        if after > self.before:
            return f"peak CUDA memory {after / 2**30:.2f} GiB"
        return f"peak CUDA memory at most {after / 2**30:.2f} GiB (an earlier run's peak; this one stayed below it)"
