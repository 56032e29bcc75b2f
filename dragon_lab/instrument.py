"""Cost instrumentation for edits, by wrapping the backend: UNet passes, forward-equivalents,
the reference method's schedule, time and peak memory.

The product's sampler (:mod:`dragon_core.sampler`) counts nothing; :func:`measured_edit`
runs it on an :class:`InstrumentedBackend` and returns the same result with the cost
in ``stats``:

* ``forward``: no-grad UNet passes to the output, per sample (a CFG batch of 2 counts 2);
* ``forward_partial``: no-grad passes stopped after the last decoder level the
  energies read (the reference schedule's reference-feature pass);
* ``forward_grad`` / ``forward_grad_partial``: passes with autograd, full / stopped;
* ``forward_memory`` / ``forward_memory_partial``: a recompute memory's passes;
* ``backward``: backward passes that reach the latent (they only walk the graph up to
  the last feature level the energies read).

``forward_equiv`` weighs them by work, counting a backward as two forwards of the
part it walks: ``forward + forward_grad + forward_memory + f * (forward_partial +
forward_grad_partial + forward_memory_partial) + 2 * f * backward``, where ``f``
(``partial_fraction``) is the fraction of a full forward's FLOPs spent before the last
feature level, measured on the edit's first full pass without autograd with
:class:`torch.utils.flop_counter.FlopCounterMode`.

``schedule="reference"`` replays the official implementation's evaluation schedule for
the same maths: a CFG batch of 2 on every step, a gradient pass stopped after the last
feature level, and before it a no-grad pass for the reference features (on the
memory's input for the step: the features the inversion recorded).

Peak memory: exact tensor bytes with ``tensor_peak`` (:mod:`dragon_lab.tensor_peak`); peak RSS
resets the process's peak-RSS mark (Linux ``/proc/self/clear_refs``): lab
use only, never inside a ComfyUI node.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable

import torch

from dragon_core.backend import Backend, FeatureCall, HookList, StopAfter, UNetHooks
from dragon_core.edits import Edit
from dragon_core.memory import FeatureMemory, MemoryRecorder
from dragon_core.planning import plan_edit
from dragon_core.sampler import Callback, EditResult, run_edit
from dragon_core.settings import EditSettings

from .tensor_peak import TensorPeak

SCHEDULES = ("efficient", "reference")


class _FlopsAt(UNetHooks):
    def __init__(self, counter: Any, level: int) -> None:
        self.counter, self.level, self.flops = counter, level, None

    def decoder_feature(self, call: FeatureCall, h: torch.Tensor) -> None:
        if call.level == self.level and self.flops is None:
            self.flops = self.counter.get_total_flops()


def _records_memory(hooks: UNetHooks | None) -> bool:
    if isinstance(hooks, HookList):
        return any(_records_memory(h) for h in hooks.hooks)
    return isinstance(hooks, MemoryRecorder)


class InstrumentedBackend:
    """A backend that counts the passes it runs (see the module doc) and measures the FLOP
    share up to decoder ``level`` on its first no-grad full pass. With ``reference_memory`` it
    also runs the reference schedule's no-grad reference pass before every grad pass."""

    def __init__(self, inner: Backend, level: int, reference_memory: FeatureMemory | None = None) -> None:
        self.inner, self.level, self.reference_memory = inner, level, reference_memory
        self.counts: Counter[str] = Counter()
        self.fraction: float | None = None

    def __getattr__(self, name: str) -> Any:  # alphas_cumprod, device, dtype, layers, ...
        return getattr(self.inner, name)

    def predict_eps(self, z_t: torch.Tensor, t: int, cond: Any, *, step: int, branch: str = "cond",
                    hooks: UNetHooks | None = None, grad: bool = False) -> torch.Tensor | None:
        if grad and self.reference_memory is not None:  # the reference schedule's gradient pass:
            self._reference_pass(t, cond, step)  # after a pass for the reference features,
            hooks = HookList(hooks, StopAfter(self.level))  # stopped after the features (eps: a CFG batch)
        if grad:
            z_t.register_hook(lambda g: self.counts.update(backward=1))
        out = self._counted(lambda h: self.inner.predict_eps(z_t, t, cond, step=step, branch=branch, hooks=h,
                                                             grad=grad), hooks, grad)
        kind = "forward_memory" if _records_memory(hooks) else "forward_grad" if grad else "forward"
        self.counts[kind + ("_partial" if out is None else "")] += z_t.shape[0]
        return out

    def predict_eps_cfg(self, z_t: torch.Tensor, t: int, cond: Any, uncond: Any, *, step: int,
                        hooks: UNetHooks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._counted(lambda h: self.inner.predict_eps_cfg(z_t, t, cond, uncond, step=step, hooks=h), hooks,
                            False)
        self.counts["forward"] += 2 * z_t.shape[0]
        return out

    def _reference_pass(self, t: int, cond: Any, step: int) -> None:
        z = self.reference_memory.trajectory.latents[step + 1].to(self.inner.device, torch.float32)
        self.inner.predict_eps(z, t, cond, step=step, branch="cond", hooks=StopAfter(self.level))
        self.counts["forward_partial"] += 1

    def _counted(self, run: Callable[[UNetHooks | None], Any], hooks: UNetHooks | None, grad: bool) -> Any:
        """``run(hooks)``, the pass; while the FLOP share is unknown and the pass has no autograd (a
        guided pass runs its backward inside, which the counter's module hooks refuse), under a FLOP
        counter (no extra pass)."""
        if self.fraction is not None or grad:
            return run(hooks)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            probe = _FlopsAt(fc, self.level)
            out = run(HookList(hooks, probe))
            total = fc.get_total_flops()
        if out is not None:
            self.fraction = float(probe.flops) / float(total) if total and probe.flops is not None else 1.0
        return out

    def forward_equivalents(self) -> float:
        c, f = self.counts, self.fraction or 1.0
        return (c["forward"] + c["forward_grad"] + c["forward_memory"]
                + f * (c["forward_partial"] + c["forward_grad_partial"] + c["forward_memory_partial"])
                + 2 * f * c["backward"])


def schedule_settings(settings: EditSettings, schedule: str) -> EditSettings:
    """The settings that run ``schedule``: the reference one's CFG runs as one batch of 2 on every
    step (its gradient pass stops after the last feature level: :class:`InstrumentedBackend`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return replace(settings, batch_cfg=True) if schedule == "reference" else settings


def measured_edit(backend: Backend, memory: FeatureMemory, edit: Edit, cond: Any, uncond: Any,
                  settings: EditSettings, schedule: str = "efficient", callback: Callback | None = None,
                  tensor_peak: bool = False) -> EditResult:
    """:func:`dragon_core.sampler.edit_image` with its cost in ``stats`` (module doc). With
    ``tensor_peak`` the edit runs under :class:`~dragon_lab.tensor_peak.TensorPeak` and ``stats``
    gain ``peak_tensor_bytes`` (exact; the timings then include its overhead)."""
    settings = schedule_settings(settings, schedule)
    level = max(memory.policy.feature_levels)
    inst = InstrumentedBackend(backend, level, memory if schedule == "reference" else None)
    plan = plan_edit(edit, memory, settings)
    n = memory.steps
    seconds = {"guided": 0.0, "plain": 0.0}
    last = [time.time()]

    def timed(s: int, z: torch.Tensor) -> None:
        now = time.time()
        seconds["guided" if settings.guided(s, n) else "plain"] += now - last[0]
        last[0] = now
        if callback is not None:
            callback(s, z)

    reset_peak(backend.device)
    t0, c0 = time.time(), time.process_time()
    with TensorPeak() if tensor_peak else contextlib.nullcontext() as tracker:
        res = run_edit(inst, memory, plan, cond, uncond, settings, timed)
    stats = dict(res.stats, schedule=schedule)
    if tracker is not None:
        stats["peak_tensor_bytes"] = tracker.peak
    for k in ("forward", "forward_partial", "forward_grad", "forward_grad_partial", "backward",
              "forward_memory", "forward_memory_partial"):
        stats[k] = inst.counts[k]
    stats["seconds"] = round(time.time() - t0, 3)
    stats["cpu_seconds"] = round(time.process_time() - c0, 3)  # this process's CPU time: robust to a shared machine
    stats["seconds_guided"] = round(seconds["guided"], 3)
    stats["seconds_plain"] = round(seconds["plain"], 3)
    stats["partial_fraction"] = round(inst.fraction or 1.0, 4)
    stats["forward_equiv"] = round(inst.forward_equivalents(), 3)
    if "forward" in memory.info:
        stats["inversion_forward"] = memory.info["forward"]
        stats["seconds_inversion"] = memory.info.get("seconds", 0.0)
    stats.update(peak_stats(backend.device))
    return EditResult(res.latent, stats)


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
    try:
        import resource
    except ImportError:  # Windows
        return 0
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def peak_stats(device: torch.device | str | None = None) -> dict[str, int]:
    out = {"peak_rss_bytes": peak_rss_bytes()}
    if device is not None and torch.device(device).type == "cuda":
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
