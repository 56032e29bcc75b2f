"""The lab's cost instrumentation (a wrapped backend), the reference schedule, and the grad-pass and
batched-CFG options (random-weight model, fast)."""

import pytest
import torch

from dragon_lab.cli import build_parser, format_stats
from dragon_lab.instrument import InstrumentedBackend, measured_edit
from dragon_core.edits import Drag, Move
from dragon_core.sampler import edit_image
from dragon_core.settings import default_settings, with_overrides
from dragon_core.memory import invert_with_memory

from shapes_prompts import prompt_pair

pytest.importorskip("diffusers")

STEPS = 5


@pytest.fixture()
def memory(random_backend):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    return invert_with_memory(random_backend, image, prompt_pair()[0], steps=STEPS, spacing="comfy_uniform")


def _edits():
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    return {"move": Move(m, 6, 4),
            "drag": Drag(torch.tensor([[12.0, 12.0]]), torch.tensor([[18.0, 14.0]]), (32, 32), (m + m.roll(6, 1)).clamp(0, 1))}


@pytest.mark.parametrize("kind", ["move", "drag"])
def test_reference_schedule_gives_the_same_edit_at_its_own_cost(random_backend, memory, kind):
    cond, uncond = prompt_pair()
    settings = default_settings(kind, cfg=2.0, feature_scale=1.0, attention_start=1, time_travel=2,
                                time_travel_window=(0.0, 1.0))
    feats = {k: v.clone() for k, v in memory.features.items()}
    eff = measured_edit(random_backend, memory, _edits()[kind], cond, uncond, settings)
    ref = measured_edit(random_backend, memory, _edits()[kind], cond, uncond, settings, "reference")
    # the same maths: only the CFG batching (and the reference pass's features, equal to the memory's) differ
    assert (eff.latent - ref.latent).abs().max() < 1e-4
    assert set(feats) == set(memory.features) and all(torch.equal(feats[k], memory.features[k]) for k in feats)
    passes = sum(settings.guided(s, STEPS) * settings.repeats(s, STEPS) for s in range(STEPS))
    all_passes = sum(settings.repeats(s, STEPS) for s in range(STEPS))
    renoise = all_passes - STEPS
    assert ref.stats["forward_partial"] == ref.stats["forward_grad_partial"] == passes > 0
    assert ref.stats["forward"] == 2 * all_passes + renoise and ref.stats["forward_grad"] == 0
    assert eff.stats["forward_grad"] == passes and eff.stats["forward_partial"] == 0
    assert eff.stats["forward"] == 2 * all_passes - passes + renoise
    assert eff.stats["backward"] == ref.stats["backward"] == 2 * passes
    f = eff.stats["partial_fraction"]
    assert 0 < f < 1
    assert eff.stats["forward_equiv"] == pytest.approx(2 * all_passes + renoise + 4 * f * passes, abs=1e-2)
    assert ref.stats["forward_equiv"] == pytest.approx(eff.stats["forward_equiv"] + 2 * f * passes, abs=1e-2)


def test_stats_report_time_memory_and_peaks(random_backend, memory):
    cond, uncond = prompt_pair()
    res = measured_edit(random_backend, memory, _edits()["move"], cond, uncond, default_settings("move", cfg=2.0))
    s = res.stats
    assert s["memory_bytes"] == memory.nbytes()["total"] > 0
    assert s["peak_rss_bytes"] > 0 and s["seconds"] >= s["seconds_guided"] > 0 and s["seconds_plain"] >= 0
    assert s["inversion_forward"] == STEPS and memory.info["forward"] == STEPS and memory.info["seconds"] > 0
    text = format_stats(s)
    assert "forward-equivalents" in text and "peak RSS" in text


def test_measuring_wraps_the_backend_and_leaves_the_edit_unchanged(random_backend, memory):
    """The product's sampler counts nothing; the lab's wrapper measures the same edit, bit for bit."""
    cond, uncond = prompt_pair()
    settings = default_settings("drag", cfg=2.0, feature_scale=1.0, attention_start=1, time_travel=2,
                                time_travel_window=(0.0, 1.0))
    plain = edit_image(random_backend, memory, _edits()["drag"], cond, uncond, settings)
    measured = measured_edit(random_backend, memory, _edits()["drag"], cond, uncond, settings)
    assert torch.equal(plain.latent, measured.latent)
    assert set(plain.stats) == {"kind", "steps", "guided_steps", "renoise", "memory_bytes"}
    assert {k: measured.stats[k] for k in plain.stats} == plain.stats
    assert measured.stats["forward_grad"] == plain.stats["guided_steps"] > 0


def test_experiment_options_are_not_product_settings():
    for option in ({"schedule": "reference"}, {"energy_backward": "one"}, {"grad_pass": "partial"}):
        with pytest.raises(TypeError, match=list(option)[0]):
            default_settings("move", **option)


def test_forward_equivalents_weigh_partial_passes_and_backwards():
    inst = InstrumentedBackend(None, level=1)
    inst.counts.update(forward=10, forward_grad=2, forward_partial=3, forward_grad_partial=1, backward=4)
    inst.fraction = 0.5
    assert inst.forward_equivalents() == pytest.approx(10 + 2 + 0.5 * 4 + 2 * 0.5 * 4)


def test_perf_command_parses():
    args = build_parser().parse_args(["perf", "--sd-sizes", "64,96", "--json", "x.json"])
    assert args.sd_sizes == "64,96" and args.threads == 1 and not args.tensor_peak
    assert build_parser().parse_args(["perf", "--tensor-peak"]).tensor_peak
    args = build_parser().parse_args(["edit", "move", "--image", "a.png", "--out", "o", "--stats",
                                      "--schedule", "reference"])
    assert args.stats and args.schedule == "reference"


def test_used_steps_policy_keeps_only_what_the_edit_reads(random_backend):
    from dragon_core.settings import used_steps_policy

    cond, uncond = prompt_pair()
    settings = default_settings("move", cfg=2.0, feature_scale=1.0, attention_start=2, guide_until=0.4,
                                guide_every_until=0.4)
    policy = used_steps_policy(settings, STEPS, (1, 2))
    assert policy.steps == frozenset({2, 3, 4}) and policy.feature_steps == frozenset({0, 1})
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    full = invert_with_memory(random_backend, image, cond, steps=STEPS, spacing="comfy_uniform")
    small = invert_with_memory(random_backend, image, cond, steps=STEPS, spacing="comfy_uniform", policy=policy)
    assert {s for s, _ in small.kv} == {2, 3, 4} and {s for s, _ in small.features} == {0, 1}
    assert small.nbytes()["total"] < full.nbytes()["total"]
    a = edit_image(random_backend, full, _edits()["move"], cond, uncond, settings)
    b = edit_image(random_backend, small, _edits()["move"], cond, uncond, settings)
    assert torch.equal(a.latent, b.latent)


def test_reference_schedule_and_batched_cfg_give_the_same_edit(random_backend, memory):
    """The reference schedule (gradient pass stopped after the features, eps from a CFG batch)
    and batched CFG alone compute the default's edit, to float rounding."""
    cond, uncond = prompt_pair()
    settings = default_settings("drag", cfg=2.0, feature_scale=1.0, attention_start=1)
    eff = measured_edit(random_backend, memory, _edits()["drag"], cond, uncond, settings)
    ref = measured_edit(random_backend, memory, _edits()["drag"], cond, uncond, settings, schedule="reference")
    both = measured_edit(random_backend, memory, _edits()["drag"], cond, uncond, with_overrides(settings, batch_cfg=True))
    assert (eff.latent - ref.latent).abs().max() < 1e-4 and (eff.latent - both.latent).abs().max() < 1e-4
    g = eff.stats["guided_steps"]
    assert ref.stats["forward_grad_partial"] == g and eff.stats["forward_grad"] == g
    # the FLOP share is measured on CFG batches too (this reference schedule runs no other no-grad pass)
    assert ref.stats["partial_fraction"] == pytest.approx(eff.stats["partial_fraction"], abs=1e-3)
    assert ref.stats["partial_fraction"] < 1
    assert ref.stats["forward_equiv"] > eff.stats["forward_equiv"]


def test_guided_pass_frees_its_graph_before_the_last_decoder_level(random_backend, memory):
    """The guidance gradient is taken inside the guided pass once the last feature level (2) has
    run: when the decoder's last level (3) runs to make eps, autograd holds nothing, where at
    level 1 it held the pass's activations."""
    from autograd_bytes import LiveSaved
    from dragon_core.backend import HookList, UNetHooks

    live, seen = LiveSaved(), {1: [], 3: []}

    class Probe(UNetHooks):
        def decoder_feature(self, call, h):
            if call.level in seen:
                seen[call.level].append(live.bytes)

    class Probed:
        def __getattr__(self, name):
            return getattr(random_backend, name)

        def predict_eps(self, z_t, t, cond, *, hooks=None, grad=False, **kw):
            hooks = HookList(Probe(), hooks, Probe()) if grad else hooks
            return random_backend.predict_eps(z_t, t, cond, hooks=hooks, grad=grad, **kw)

    cond, uncond = prompt_pair()
    settings = default_settings("drag", cfg=2.0, feature_scale=1.0, attention_start=1)
    with live:
        res = edit_image(Probed(), memory, _edits()["drag"], cond, uncond, settings)
    assert res.stats["guided_steps"] > 0
    assert len(seen[1]) == 2 * res.stats["guided_steps"] and min(seen[1]) > 0
    assert len(seen[3]) == 2 * res.stats["guided_steps"] and max(seen[3]) == 0


def test_memory_extrapolation_counts_int8_fp16_recompute_and_the_reference(memory):
    from dragon_lab.perf import extrapolate_memory

    m = extrapolate_memory(memory, 50)
    kv_numel = sum(t.numel() for t in memory.kv.values()) / STEPS
    feat_numel = sum(t.numel() for t in memory.features.values()) / STEPS
    traj = memory.trajectory.latents[0].numel() * 4 * 51
    assert m["fp16_all_steps"] == pytest.approx(2 * (kv_numel + feat_numel) * 50 + traj)
    assert m["default_all_steps"] < 0.55 * m["fp16_all_steps"]  # int8 plus per-channel scales
    assert m["reference_impl"] == pytest.approx(4 * kv_numel * 50 + traj / 2)  # K and V, fp16; fp16 latents
    assert m["recompute"] == pytest.approx(traj + 2 * (kv_numel + feat_numel))
    assert m["used_steps"] < m["default_all_steps"]


@pytest.mark.parametrize("kind", ["move", "drag"])
def test_efficient_peak_tensor_bytes_are_at_most_the_reference_schedules(random_backend, memory, kind):
    """Exact tensor bytes (dragon_lab.tensor_peak) on the shapes topology (random weights, the SD1.5
    layout of blocks): the efficient default holds no more at its peak than the reference schedule,
    and the edit is the same; the tracker changes nothing in it."""
    cond, uncond = prompt_pair()
    edit = _edits()[kind]
    settings = default_settings(kind, cfg=2.0, feature_scale=1.0, attention_start=1)
    ref = measured_edit(random_backend, memory, edit, cond, uncond, settings, "reference", tensor_peak=True)
    eff = measured_edit(random_backend, memory, edit, cond, uncond, settings, tensor_peak=True)
    plain = measured_edit(random_backend, memory, edit, cond, uncond, settings)
    assert 0 < eff.stats["peak_tensor_bytes"] <= ref.stats["peak_tensor_bytes"]
    assert "peak_tensor_bytes" not in plain.stats
    assert torch.equal(plain.latent, eff.latent)
    assert (ref.latent - eff.latent).abs().max() < 1e-4


def test_perf_rows_carry_the_tensor_peak_and_its_ratio(random_backend, memory):
    """What ``perf --tensor-peak`` runs per edit: both schedules and the recompute memory report it."""
    from dragon_core.memory import default_policy
    from dragon_lab.perf import _low_memory, _pair

    cond, uncond = prompt_pair()
    edit = _edits()["move"]
    settings = default_settings("move", cfg=2.0, feature_scale=1.0, attention_start=1)
    ref, eff = _pair(random_backend, memory, edit, cond, uncond, settings, tensor_peak=True)
    lean = invert_with_memory(random_backend, torch.zeros(1, 3, 32, 32), prompt_pair()[0], steps=STEPS,
                              spacing="comfy_uniform", policy=default_policy(random_backend, recompute=True))
    low = _low_memory(random_backend, lean, edit, cond, uncond, settings, eff, tensor_peak=True)
    assert ref.stats["peak_tensor_bytes"] > 0 and eff.stats["peak_tensor_bytes"] > 0
    assert low["ratio_to_default"]["peak_tensor_bytes"] > 0
