"""The lab's exact peak-tensor-bytes tracker, and the efficient schedule's peak measured with it."""

import pytest
import torch

from dragon_core.edits import Drag, Move
from dragon_core.memory import invert_with_memory
from dragon_core.settings import default_settings
from dragon_lab.instrument import measured_edit
from dragon_lab.perf import _low_memory, _pair
from dragon_lab.tensor_peak import TensorPeak
from shapes_prompts import prompt_pair

MB = 1_000_000


def test_counts_what_is_allocated_and_uncounts_what_is_freed():
    before = torch.ones(1000, 1000)  # made before: not counted, and neither are its views
    with TensorPeak() as tp:
        a = torch.empty(MB // 4)  # 1 MB
        b = torch.empty(2 * MB // 4)  # 2 MB: 3 MB held
        del a  # 2 MB held
        c = b.view(-1, 2)  # a view: no new storage
        b.add_(1)  # in place: none either
        v = before.t()
        del b  # c still holds b's storage
        assert tp.now == 2 * MB
        d = c.sum()  # 4 bytes
        del c
        assert tp.now == 4
    assert tp.peak == 3 * MB
    del d, v


def test_counts_what_autograd_keeps_and_backward_allocates():
    x = torch.randn(MB // 4, requires_grad=True)  # 1 MB, made before
    with TensorPeak() as tp:
        y = (x * 2).relu()  # x * 2 is freed once relu has its result, which autograd keeps
        assert tp.now == MB
        y.sum().backward()  # the gradient of y, of x * 2, then x.grad (1 MB each, not all at once)
        assert tp.now == 2 * MB  # y and x.grad
        del y
    assert tp.now == MB and 3 * MB <= tp.peak <= 4 * MB + 64


@pytest.fixture()
def memory(random_backend):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    return invert_with_memory(random_backend, image, prompt_pair()[0], steps=5, spacing="comfy_uniform")


@pytest.mark.parametrize("kind", ["move", "drag"])
def test_efficient_peak_is_at_most_the_reference_schedules(random_backend, memory, kind):
    """Exact tensor bytes on the shapes topology (random weights, the SD1.5 layout of blocks): the
    efficient default holds no more at its peak than the reference schedule, and the edit is the
    same; the tracker changes nothing in it."""
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    edit = Move(m, 6, 4) if kind == "move" else Drag(torch.tensor([[12.0, 12.0]]), torch.tensor([[18.0, 14.0]]),
                                                      (32, 32), (m + m.roll(6, 1)).clamp(0, 1))
    cond, uncond = prompt_pair()
    settings = default_settings(kind, cfg=2.0, feature_scale=1.0, attention_start=1)
    ref = measured_edit(random_backend, memory, edit, cond, uncond, settings, "reference", tensor_peak=True)
    eff = measured_edit(random_backend, memory, edit, cond, uncond, settings, tensor_peak=True)
    plain = measured_edit(random_backend, memory, edit, cond, uncond, settings)
    print(kind, ref.stats["peak_tensor_bytes"], eff.stats["peak_tensor_bytes"])
    assert 0 < eff.stats["peak_tensor_bytes"] <= ref.stats["peak_tensor_bytes"]
    assert "peak_tensor_bytes" not in plain.stats
    assert torch.equal(plain.latent, eff.latent)
    assert (ref.latent - eff.latent).abs().max() < 1e-4


def test_perf_rows_carry_the_tensor_peak_and_its_ratio(random_backend, memory):
    """What ``perf --tensor-peak`` runs per edit: both schedules and the recompute memory report it."""
    from dragon_core.memory import default_policy

    cond, uncond = prompt_pair()
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    settings = default_settings("move", cfg=2.0, feature_scale=1.0, attention_start=1)
    ref, eff = _pair(random_backend, memory, Move(m, 6, 4), cond, uncond, settings, tensor_peak=True)
    lean = invert_with_memory(random_backend, torch.zeros(1, 3, 32, 32), prompt_pair()[0], steps=5,
                              spacing="comfy_uniform", policy=default_policy(random_backend, recompute=True))
    low = _low_memory(random_backend, lean, Move(m, 6, 4), cond, uncond, settings, eff, tensor_peak=True)
    assert ref.stats["peak_tensor_bytes"] > 0 and eff.stats["peak_tensor_bytes"] > 0
    assert low["ratio_to_default"]["peak_tensor_bytes"] > 0
