"""Peak bytes of the tensors a piece of code allocates, on any device: CUDA's peak-allocated
counter for the CPU, exact where peak RSS is not.

Peak RSS includes the allocator's free lists and the process's other memory, and resolves
tens of MiB at best; comparing two schedules' peaks of about 6 GiB needs better. While active,
:class:`TensorPeak` sees every tensor an op returns (a ``TorchDispatchMode``, so autograd's
backward ops too), counts its storage once when it first appears, and uncounts it when the
storage is freed (a finalizer on the storage object, which PyTorch keeps alive exactly as long
as the storage). Outputs that share an input's storage (views, in-place ops) allocate nothing
and are not counted; tensors made before it started (weights, the inversion's memory) are not
counted either, so ``peak`` is what the code allocates on top of them. Lab use only: it slows
each op by a few microseconds of Python.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorPeak(TorchDispatchMode):
    """``with TensorPeak() as tp: ...`` then ``tp.peak`` (bytes), ``tp.now`` (still held)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.peak = 0
        self._live: dict[int, int] = {}  # id of a counted storage object -> its bytes

    def _free(self, key: int) -> None:
        self.now -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._live or key in inputs:
                continue
            self._live[key] = storage.nbytes()
            self.now += self._live[key]
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, key)
        return out
