"""Cost accounting for edits: UNet passes, forward-equivalents, peak memory.

Counts (in ``EditResult.stats`` and ``FeatureMemory.info``):

* ``forward``: no-grad UNet passes to the output, per sample (a CFG batch of 2 counts 2);
* ``forward_partial``: no-grad passes stopped after the last decoder level the
  energies read (the reference schedule's reference-feature pass);
* ``forward_grad`` / ``forward_grad_partial``: passes with autograd, full / stopped;
* ``backward``: backward passes from the energies to the latent. They only walk
  the graph up to the last feature level the energies read.

``forward_equiv`` weighs them by work, counting a backward as two forwards of the
part it walks: ``forward + forward_grad + f * (forward_partial + forward_grad_partial)
+ 2 * f * backward``, where ``f`` (``partial_fraction``) is the fraction of a full
forward's FLOPs spent before the last feature level, measured once per model and
latent shape with :class:`torch.utils.flop_counter.FlopCounterMode`.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

from .backend import FeatureCall, StopForward, UNetHooks

_FRACTIONS: dict[tuple, float] = {}


class StopAfter(UNetHooks):
    """Ends the forward pass once decoder level ``level`` has run."""

    def __init__(self, level: int) -> None:
        self.level = level

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level >= self.level:
            raise StopForward


class _FlopsAt(UNetHooks):
    def __init__(self, counter: Any, level: int) -> None:
        self.counter, self.level, self.flops = counter, level, None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level == self.level and self.flops is None:
            self.flops = self.counter.get_total_flops()


def known_fraction(backend: Any, z: torch.Tensor, level: int) -> float | None:
    return _FRACTIONS.get((id(backend), tuple(z.shape[1:]), level))


def counted_pass(backend: Any, z: torch.Tensor, level: int, run: Any, hooks: UNetHooks | None) -> Any:
    """``run(hooks)`` (one full UNet pass) under a FLOP counter that records the share spent up
    to decoder ``level``; stores the fraction for :func:`known_fraction` (no extra pass)."""
    from .backend import HookList

    key = (id(backend), tuple(z.shape[1:]), level)
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover
        _FRACTIONS[key] = 1.0
        return run(hooks)
    with FlopCounterMode(display=False) as fc:
        probe = _FlopsAt(fc, level)
        out = run(HookList(hooks, probe))
        total = fc.get_total_flops()
    _FRACTIONS[key] = float(probe.flops) / float(total) if total and probe.flops is not None else 1.0
    return out


def partial_fraction(backend: Any, z: torch.Tensor, cond: Any, level: int) -> float:
    """FLOPs of a forward up to decoder ``level`` (inclusive) / FLOPs of a full forward.

    Measured once per (backend, latent shape, level) on one no-grad pass; 1.0 if
    the FLOP counter is unavailable."""
    key = (id(backend), tuple(z.shape[1:]), level)
    if key not in _FRACTIONS:
        try:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc:
                probe = _FlopsAt(fc, level)
                backend.predict_eps(z[:1], 500, cond, step=-1, branch="cond", hooks=probe)
                total = fc.get_total_flops()
            _FRACTIONS[key] = float(probe.flops) / float(total) if total and probe.flops is not None else 1.0
        except Exception:  # pragma: no cover - accounting must never break an edit
            _FRACTIONS[key] = 1.0
    return _FRACTIONS[key]


def forward_equivalents(stats: dict[str, Any], fraction: float) -> float:
    return (stats.get("forward", 0) + stats.get("forward_grad", 0) + stats.get("forward_memory", 0)
            + fraction * (stats.get("forward_partial", 0) + stats.get("forward_grad_partial", 0)
                          + stats.get("forward_memory_partial", 0))
            + 2 * fraction * stats.get("backward", 0))


# -- peak memory ----------------------------------------------------------------------------------


def reset_peak(device: torch.device | str | None = None) -> bool:
    """Reset the peak-RSS mark (Linux: /proc/self/clear_refs) and CUDA's peak; True if RSS was reset."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last :func:`reset_peak` (VmHWM), else since start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def peak_stats(device: torch.device | str | None = None) -> dict[str, int]:
    out = {"peak_rss_bytes": peak_rss_bytes()}
    if device is not None and torch.device(device).type == "cuda":
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
