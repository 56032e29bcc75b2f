"""The backend contract: how the core talks to a denoiser, and the hooks it gets.

A backend predicts epsilon in DDPM terms for ``(z_t, t, conditioning)`` and
exposes the training schedule (``alphas_cumprod``). While it runs the UNet it
calls the core's :class:`UNetHooks`:

* ``self_attention(call, n)`` at every self-attention (attn1) of a transformer
  block, with ``n`` the block's normalised input (``norm1(x)``, shape (B, N, C)).
  The hook may return ``(k_in, v_in)``: the token sequences that the layer's
  key and value projections read instead of its own, or :class:`ExtraKV`: tokens
  read after its own (a remembered reference appended). The layer's own are
  ``n``, or what another pack's patch made of them where the runtime has such
  patches (ComfyUI's attn1 patches), so appending keeps that pack's change. SD
  attention has no k/v bias, so appending tokens before the projection equals
  appending projected keys/values.
* ``decoder_feature(call, h)`` with ``h`` the output of decoder level
  ``call.level`` (diffusers ``up_blocks[level]``; ComfyUI: ``h`` entering the
  first output block of the next level). With ``grad=True`` ``h`` carries
  autograd back to ``z_t``. A hook may raise :class:`StopForward` once it has all
  the features it needs; the backend then skips the rest of the UNet and
  returns ``None`` instead of eps. A hook may also end autograd recording for the
  rest of a gradient pass (:class:`GradUntil`): a backend runs every pass inside
  its own ``torch.set_grad_enabled(grad)`` block, so the caller's mode comes back
  when the pass ends.

Every call names its layer, the step index and the branch explicitly
(:class:`AttnCall`, :class:`FeatureCall`); nothing is keyed by counting calls.
A pass that runs both CFG branches as one batch (``predict_eps_cfg``) names each
batch row's branch: ``branch`` is then a tuple, one entry per row.
Layer keys follow ComfyUI's naming so records made by one backend mean the same
thing in another: ``LayerKey("output", block_id, transformer_index)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

BRANCHES = ("cond", "uncond")


@dataclass(frozen=True, order=True)
class LayerKey:
    """A transformer block's self-attention: kind ("input", "middle", "output"),
    ComfyUI block id, and transformer index inside that block."""

    kind: str
    block: int
    index: int

    def __str__(self) -> str:
        return f"{self.kind}.{self.block}.{self.index}"


Branch = str | tuple[str, ...]  # "cond" / "uncond", or each batch row's in a CFG batch


@dataclass(frozen=True)
class AttnCall:
    """Where a self-attention hook is called: layer, sampling step index, branch (per row in a
    CFG batch)."""

    layer: LayerKey
    step: int
    branch: Branch


@dataclass(frozen=True)
class FeatureCall:
    """Where a decoder-feature hook is called: decoder level, step index, branch (per row in a
    CFG batch)."""

    level: int
    step: int
    branch: Branch


class StopForward(Exception):
    """Raised by a feature hook to end a forward pass early (gradient-only passes)."""


@dataclass(frozen=True)
class ExtraKV:
    """A self-attention hook's answer: token sequences the key and value projections read after
    the layer's own (shape (B or 1, M, C))."""

    k: torch.Tensor
    v: torch.Tensor

    def after(self, own_k: torch.Tensor, own_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's K/V inputs: its own, then these (batch-expanded, in the own inputs' dtype)."""
        b = own_k.shape[0]
        return (torch.cat([own_k, self.k.to(own_k.dtype).expand(b, -1, -1)], dim=1),
                torch.cat([own_v, self.v.to(own_v.dtype).expand(b, -1, -1)], dim=1))


KVAnswer = tuple[torch.Tensor, torch.Tensor] | ExtraKV  # what a self-attention hook may return


class UNetHooks:
    """Hooks the backend calls during a forward pass. The base class does nothing."""

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> KVAnswer | None:
        return None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        return None


class HookList(UNetHooks):
    """Several hooks in order: every feature hook sees every feature; for
    self-attention the first hook that returns K/V inputs wins."""

    def __init__(self, *hooks: UNetHooks | None) -> None:
        self.hooks = [h for h in hooks if h is not None]

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> KVAnswer | None:
        for h in self.hooks:
            r = h.self_attention(call, n)
            if r is not None:
                return r
        return None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        for hook in self.hooks:
            hook.decoder_feature(call, h)


class StopAfter(UNetHooks):
    """Ends the forward pass once decoder level ``level`` has run (a pass that only needs
    the features up to there: the rest of the decoder keeps no activations)."""

    def __init__(self, level: int) -> None:
        self.level = level

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level >= self.level:
            raise StopForward


class GradUntil(UNetHooks):
    """Ends autograd recording once decoder level ``level`` has run: the rest of a gradient pass
    (the decoder's last levels, which no energy reads) computes eps without keeping activations
    for backward. So one pass gives both the features with their graph and eps, at the memory of
    a pass stopped at ``level``. Thread-local grad mode, restored by the backend after the pass."""

    def __init__(self, level: int) -> None:
        self.level = level

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level >= self.level:
            torch.set_grad_enabled(False)


@runtime_checkable
class Backend(Protocol):
    """What the core needs from a denoiser runtime."""

    alphas_cumprod: torch.Tensor  # (T,) float64, the training schedule
    device: torch.device
    dtype: torch.dtype

    def predict_eps(
        self,
        z_t: torch.Tensor,
        t: int,
        cond: Any,
        *,
        step: int,
        branch: str = "cond",
        hooks: UNetHooks | None = None,
        grad: bool = False,
    ) -> torch.Tensor | None:
        """eps for latents ``z_t`` (B, C, H, W) at DDPM timestep ``t`` under ``cond``.

        ``step`` and ``branch`` are passed to the hooks. With ``grad=False`` the pass
        runs without autograd; with ``grad=True`` gradients flow to ``z_t`` and to
        the features the hooks see. Returns ``None`` if a hook raised StopForward.
        """
        ...

    def predict_eps_cfg(self, z_t: torch.Tensor, t: int, cond: Any, uncond: Any, *, step: int,
                        hooks: UNetHooks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps under ``cond``, eps under ``uncond``) without autograd: both CFG branches, as
        one batch where the backend can (the hooks then see one call whose ``branch`` names
        each row's branch), else as two passes. Hooks must not stop these passes."""
        ...

    def decoder_self_attention_layers(self) -> list[LayerKey]:
        """Every decoder ("output") self-attention layer, in forward order."""
        ...

    def decoder_levels(self) -> int:
        """Number of decoder resolution levels (diffusers ``up_blocks``). ``decoder_feature``
        reports the outputs of at least every level but the last (full-resolution) one,
        whose output is the UNet's final map; the energies never read it."""
        ...


def min_latent_side(backend: Backend) -> int:
    """The smallest latent side this UNet takes: it halves the latent once per level below the top."""
    return 2 ** (backend.decoder_levels() - 1)


def check_latent_size(backend: Backend, hw: tuple[int, int]) -> None:
    """ValueError if the latent is too small for the UNet (its GroupNorms would see one value)."""
    need = min_latent_side(backend)
    if min(hw) < need:
        raise ValueError(f"the latent is {hw[1]}x{hw[0]} cells; this model needs at least {need}x{need} "
                         f"(it halves the latent {need.bit_length() - 1} times): use a larger image")
