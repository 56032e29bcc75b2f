"""Cross-branch self-attention: the editing branch reads K/V from the feature memory.

In every decoder self-attention of the sample being edited, from ``start`` to
``end`` (step indices), the keys/values come from the memory of the same step:

* ``"replace"`` (move, as in the reference method): only the original's K/V.
* ``"concat"`` (drag, points): the sample's own K/V followed by the original's
  (:class:`ExtraKV`: "own" includes another pack's change to them in ComfyUI).
* ``"masked"`` (appearance, paste): the base image's K/V outside the edit region
  followed by a second memory's K/V inside its object region; the sample's own
  are not used.

Memory K/V are stored pre-projection (``norm1(x)``), so they enter the layer's
own k/v projections: exactly what projecting and remembering K/V would give.
Each call asks the memory for its own branch's K/V: a memory captured while
generating with CFG (``dragon_core.capture``) has both; an inversion has one set.
"""

from __future__ import annotations

import math

import torch

from .backend import AttnCall, ExtraKV, KVAnswer, UNetHooks
from .memory import FeatureMemory
from .regions import MASK_THRESHOLD, to_grid

MODES = ("replace", "concat", "masked")


def token_grid(n_tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of a layer with ``n_tokens`` tokens for a latent of ``latent_hw``."""
    H, W = latent_hw
    f = math.sqrt(H * W / n_tokens)
    h, w = round(H / f), round(W / f)
    if h * w != n_tokens:
        raise ValueError(f"cannot place {n_tokens} tokens on a grid of aspect {H}x{W}")
    return h, w


def attention_active(step: int, start: int, end: int | None) -> bool:
    """Whether cross-branch attention reads the memory on ``step`` (``start``/``end``: step numbers,
    both included, as in the reference code; ``end`` None: to the last step)."""
    return step >= start and (end is None or step <= end)


def _branch_kv(memory: FeatureMemory, call: AttnCall, n: torch.Tensor) -> torch.Tensor | None:
    """The memory's K/V input for ``call``: its branch's, (1, N, C); in a CFG batch each row's
    branch's, stacked (B, N, C)."""
    if isinstance(call.branch, str):
        return memory.kv_input(call.step, call.layer, n.device, n.dtype, call.branch)
    rows = [memory.kv_input(call.step, call.layer, n.device, n.dtype, b) for b in call.branch]
    return None if any(r is None for r in rows) else torch.cat(rows)


class CrossBranchAttention(UNetHooks):
    """Hooks that make decoder self-attention read the memory's K/V of the same step."""

    def __init__(self, memory: FeatureMemory, mode: str = "concat", start: int = 5, end: int | None = None,
                 region: torch.Tensor | None = None, second: FeatureMemory | None = None,
                 second_region: torch.Tensor | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
        if mode == "masked" and (region is None or second is None or second_region is None):
            raise ValueError("masked attention needs region, second memory and second_region")
        self.memory, self.mode, self.start, self.end = memory, mode, int(start), end
        self.region, self.second, self.second_region = region, second, second_region
        self._index_cache: dict[tuple[int, bool], torch.Tensor] = {}
        self.latent_hw = tuple(memory.latent_shape[-2:])

    def active(self, step: int) -> bool:
        return attention_active(step, self.start, self.end)

    def _token_index(self, n_tokens: int, second: bool) -> torch.Tensor:
        """Indices of the tokens inside the region (second memory) or outside it (base)."""
        key = (n_tokens, second)
        if key not in self._index_cache:
            h, w = token_grid(n_tokens, self.latent_hw)
            mask = self.second_region if second else self.region
            inside = to_grid(mask, h, w).reshape(-1) >= MASK_THRESHOLD
            self._index_cache[key] = torch.nonzero(inside if second else ~inside).reshape(-1)
        return self._index_cache[key]

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> KVAnswer | None:
        if call.layer.kind != "output" or not self.active(call.step):
            return None
        ref = _branch_kv(self.memory, call, n)
        if ref is None:
            return None
        b = n.shape[0]
        if self.mode == "replace":
            kv = ref.expand(b, -1, -1)
        elif self.mode == "concat":  # after the layer's own keys/values
            return ExtraKV(ref, ref)
        else:
            assert self.second is not None
            obj = _branch_kv(self.second, call, n)
            if obj is None:
                return None
            base_idx = self._token_index(n.shape[1], False).to(n.device)
            obj_idx = self._token_index(n.shape[1], True).to(n.device)
            kv = torch.cat([ref[:, base_idx], obj[:, obj_idx]], dim=1).expand(b, -1, -1)
            if kv.shape[1] == 0:
                return None
        return kv, kv
