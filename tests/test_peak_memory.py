"""The Guided Sampler's peak-memory note (nodes/peak_memory.py): CUDA's counter read, never
reset; nothing on the CPU. Loaded from its file under a private name (``nodes`` is ComfyUI's
own top-level module when the integration suite runs in the same process)."""

import pytest
import torch

from pack_modules import node_module


@pytest.fixture(scope="module")
def peak_memory():
    with node_module("peak_memory.py", "dragon_pack_peak_memory") as module:
        yield module


def test_cpu_reports_nothing(peak_memory):
    assert peak_memory.PeakMemory("cpu").describe() is None


def test_cuda_peak_is_this_runs_when_it_rose_else_an_upper_bound(peak_memory, monkeypatch):
    peaks = iter([3 * 2**30, 5 * 2**30, 5 * 2**30, 5 * 2**30])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: (_ for _ in ()).throw(AssertionError))
    assert peak_memory.PeakMemory("cuda:0").describe() == "peak CUDA memory 5.00 GiB"
    assert peak_memory.PeakMemory("cuda:0").describe() == (
        "peak CUDA memory at most 5.00 GiB (an earlier run's peak; this one stayed below it)")
