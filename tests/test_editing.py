"""Feature memory, cross-branch attention and the guided sampler (random-weight model
for plumbing and invariants; the bundled model for one quality check)."""

import numpy as np
import pytest
import torch

from dragon_core import ddim
from dragon_core.attention import CrossBranchAttention, token_grid
from dragon_core.edits import Appearance, Drag, Move, Paste, Points
from dragon_core.planning import plan_edit
from dragon_core.sampler import edit_image
from dragon_core.settings import default_settings, with_overrides
from dragon_core.memory import MemoryPolicy, invert_with_memory
from dragon_core.regions import RegionError

from shapes_prompts import prompt_pair

pytest.importorskip("diffusers")

STEPS = 6


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 32, generator=g) * 2 - 1


def _mask():
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    return m


@pytest.fixture()
def memory(random_backend):
    cond, _ = prompt_pair()
    return invert_with_memory(random_backend, _image(), cond, steps=STEPS, spacing="comfy_uniform")


def test_memory_is_recorded_in_the_inversion_pass(random_backend, memory):
    cond, _ = prompt_pair()
    plain = ddim.invert(random_backend, _image(), cond, steps=STEPS, spacing="comfy_uniform")
    assert torch.equal(plain.latents, memory.trajectory.latents)
    layers = random_backend.decoder_self_attention_layers()
    assert memory.layers() == layers
    assert set(memory.kv) == {(s, k) for s in range(STEPS) for k in layers}
    assert set(memory.features) == {(s, lvl) for s in range(STEPS) for lvl in (1, 2)}
    assert all(t.dtype == torch.int8 and t.device.type == "cpu" for t in memory.kv.values())
    assert set(memory.scales) == set(memory.kv) | set(memory.features)
    b = memory.nbytes()
    assert b["total"] == b["kv"] + b["features"] + b["trajectory"]
    # per step: K/V inputs 2x64x64 + 2x256x64 int8 values plus a 4-byte scale per channel (64) and
    # layer; features 64x16x16 + 64x32x32 int8 plus 64 scales per level
    assert b["kv"] == STEPS * (2 * 64 * 64 + 2 * 256 * 64 + 4 * 64 * 4)
    assert b["features"] == STEPS * (64 * 16 * 16 + 64 * 32 * 32 + 2 * 64 * 4)
    report = {r["name"]: r for r in memory.layer_report()}
    assert sum(r["bytes"] for r in report.values()) == b["kv"] + b["features"]
    assert "MiB" in memory.describe()


def test_memory_keeps_only_what_the_policy_asks(random_backend):
    cond, _ = prompt_pair()
    layers = random_backend.decoder_self_attention_layers()[:1]
    mem = invert_with_memory(random_backend, _image(), cond, steps=STEPS, spacing="comfy_uniform",
                             policy=MemoryPolicy(steps=frozenset({0, 2}), kv_layers=frozenset(layers),
                                                 feature_levels=(1,), dtype=torch.float32))
    assert set(mem.kv) == {(0, layers[0]), (2, layers[0])}
    assert set(mem.features) == {(0, 1), (2, 1)}
    assert mem.kv[(0, layers[0])].dtype == torch.float32


def test_int8_memory_is_half_of_fp16_and_close_to_it(random_backend, memory):
    """Per-channel int8: every value within half a quantisation step of the fp16 memory's, half
    its bytes (plus the scales), and the same edit to within a small fraction of what the edit changes."""
    from dragon_core.memory import dequantize, quantize

    cond, uncond = prompt_pair()
    fp16 = invert_with_memory(random_backend, _image(), cond, steps=STEPS, spacing="comfy_uniform",
                              policy=MemoryPolicy(dtype=torch.float16))
    assert fp16.nbytes()["kv"] == 2 * sum(t.numel() for t in memory.kv.values())
    assert memory.nbytes()["kv"] < 0.52 * fp16.nbytes()["kv"]
    for key, t in fp16.kv.items():
        got = memory.kv_input(key[0], key[1], torch.device("cpu"), torch.float32)
        step = t.float().abs().amax(dim=1, keepdim=True) / 127
        assert ((got - t.float()).abs() <= step * 0.5 + 2e-3 * t.float().abs()).all()
    for (s, lvl), t in fp16.features.items():
        got = memory.feature(s, lvl, torch.device("cpu"), torch.float32)
        step = t.float().abs().amax(dim=(2, 3), keepdim=True) / 127
        assert ((got - t.float()).abs() <= step * 0.5 + 2e-3 * t.float().abs()).all()
    x = torch.randn(1, 10, 4) * torch.tensor([1.0, 100.0, 0.01, 0.0])  # channels of very different ranges
    q, scale = quantize(x, (1,))
    assert q.dtype == torch.int8 and scale.shape == (1, 1, 4)
    back = dequantize(q, scale, "cpu", torch.float32)
    assert ((back - x).abs() <= x.abs().amax(dim=1, keepdim=True) / 254 + 1e-12).all()
    edit = Move(_mask(), 6, 4)
    settings = default_settings("move", cfg=2.0, attention_start=1)
    a = edit_image(random_backend, fp16, edit, cond, uncond, settings).latent
    b = edit_image(random_backend, memory, edit, cond, uncond, settings).latent
    plain = edit_image(random_backend, fp16, edit, cond, uncond,
                       default_settings("move", cfg=2.0, energy_scale=0.0, attention=False)).latent
    assert (a - b).abs().mean() < 0.05 * (a - plain).abs().mean()


def test_replace_attention_with_own_memory_changes_nothing(random_backend, memory):
    """At the inversion's own latent and step, reading K/V from the memory equals self-attention."""
    cond, _ = prompt_pair()
    s = 3
    z = memory.trajectory.latents[s + 1]
    t = int(memory.trajectory.timesteps[s])
    plain = random_backend.predict_eps(z, t, cond, step=s)
    for mode in ("replace", "concat"):
        hooked = random_backend.predict_eps(z, t, cond, step=s, hooks=CrossBranchAttention(memory, mode, start=0))
        assert torch.allclose(plain, hooked, atol=2e-3), mode  # fp16 memory
    other = random_backend.predict_eps(_image(5), t, cond, step=s)
    swapped = random_backend.predict_eps(_image(5), t, cond, step=s,
                                         hooks=CrossBranchAttention(memory, "replace", start=0))
    assert (other - swapped).abs().max() > 1e-3
    # before the start step the hook stays out of the way
    late = random_backend.predict_eps(_image(5), t, cond, step=s,
                                      hooks=CrossBranchAttention(memory, "replace", start=s + 1))
    assert torch.equal(other, late)


def test_masked_attention_selects_tokens_by_region(memory):
    m = _mask()
    hook = CrossBranchAttention(memory, "masked", start=0, region=m, second=memory, second_region=m)
    assert token_grid(256, (32, 32)) == (16, 16)
    inside = hook._token_index(256, True)
    outside = hook._token_index(256, False)
    assert inside.numel() == 16 and outside.numel() == 240
    with pytest.raises(ValueError, match="masked attention needs"):
        CrossBranchAttention(memory, "masked")


def test_edit_validation_names_the_input():
    with pytest.raises(RegionError, match="mask is empty"):
        Move(torch.zeros(32, 32), 3, 0)
    with pytest.raises(RegionError, match="would leave the image entirely"):
        Move(_mask(), 30, 0)
    assert Move(_mask(), 20, 0).transform().dx == 20  # part of it past the frame: cropped, not refused
    with pytest.raises(ValueError, match="no change"):
        Move(_mask(), 0, 0)
    with pytest.raises(ValueError, match="scale must be"):
        Move(_mask(), 0, 0, scale=0)
    with pytest.raises(RegionError, match="targets"):
        Drag(torch.tensor([[1.0, 1.0]]), torch.tensor([[40.0, 1.0]]), (32, 32))
    with pytest.raises(RegionError, match="pair up"):
        Drag(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[4.0, 1.0]]), (32, 32))


def test_edit_refuses_a_mask_of_another_size(random_backend, memory):
    with pytest.raises(RegionError, match="must be the one that was inverted"):
        plan_edit(Move(torch.nn.functional.pad(_mask(), (0, 4, 0, 4)), 3, 0), memory, default_settings("move"))


@pytest.mark.parametrize("kind", ["move", "drag", "points", "appearance", "paste"])
def test_every_edit_runs_deterministically_without_touching_its_inputs(random_backend, memory, kind):
    cond, uncond = prompt_pair()
    mask = _mask()
    other = invert_with_memory(random_backend, _image(9), cond, steps=STEPS, spacing="comfy_uniform")
    edits = {
        "move": lambda: Move(mask, 6, 4),
        "drag": lambda: Drag(torch.tensor([[10.0, 10.0]]), torch.tensor([[20.0, 14.0]]), (32, 32), mask),
        "points": lambda: Points(torch.tensor([[10.0, 10.0], [4.0, 4.0]]), torch.tensor([[12.0, 11.0], [5.0, 6.0]]),
                                 (32, 32)),
        "appearance": lambda: Appearance(mask, other, mask),
        "paste": lambda: Paste(other, mask, 8, 8),
    }
    edit = edits[kind]()
    before = {k: v.clone() for k, v in memory.kv.items()}
    traj_before = memory.trajectory.latents.clone()
    mask_before = mask.clone()
    settings = default_settings(kind, cfg=2.0, flexibility=0.3, time_travel=2,
                                time_travel_window=(0.0, 1.0), flexibility_window=(0.0, 1.0))
    a = edit_image(random_backend, memory, edit, cond, uncond, settings)
    b = edit_image(random_backend, memory, edit, cond, uncond, settings)
    assert torch.equal(a.latent, b.latent)
    assert torch.isfinite(a.latent).all() and a.latent.shape == (1, 3, 32, 32)
    passes = sum(settings.guided(s, STEPS) * settings.repeats(s, STEPS) for s in range(STEPS))
    assert a.stats["guided_steps"] == passes > 0
    assert a.stats["renoise"] > 0
    assert torch.equal(mask, mask_before) and torch.equal(memory.trajectory.latents, traj_before)
    assert all(torch.equal(before[k], memory.kv[k]) for k in before)
    c = edit_image(random_backend, memory, edit, cond, uncond, default_settings(kind, cfg=2.0, seed=1,
                   flexibility=0.3, flexibility_window=(0.0, 1.0)))
    assert not torch.equal(a.latent, c.latent)  # the seed drives the regional noise


@pytest.mark.parametrize("kind", ["move", "drag", "appearance", "paste"])
def test_recompute_memory_gives_the_same_edit_for_a_few_mib(random_backend, memory, kind):
    """The low-memory mode keeps the latents only and reruns each step's inversion pass:
    the same K/V and features, so the same edited latent, for one extra pass per step."""
    cond, uncond = prompt_pair()
    mask = _mask()
    lean = invert_with_memory(random_backend, _image(), cond, steps=STEPS, spacing="comfy_uniform",
                              policy=MemoryPolicy(recompute=True))
    assert not lean.kv and not lean.features and lean.layers() == memory.layers()
    assert lean.nbytes()["total"] == lean.nbytes()["trajectory"] < memory.nbytes()["total"] / 5
    assert torch.equal(lean.trajectory.latents, memory.trajectory.latents)
    other = invert_with_memory(random_backend, _image(9), cond, steps=STEPS, spacing="comfy_uniform")
    other_lean = invert_with_memory(random_backend, _image(9), cond, steps=STEPS, spacing="comfy_uniform",
                                    policy=MemoryPolicy(recompute=True))
    edits = {
        "move": lambda m, o: Move(mask, 6, 4),
        "drag": lambda m, o: Drag(torch.tensor([[10.0, 10.0]]), torch.tensor([[20.0, 14.0]]), (32, 32), mask),
        "appearance": lambda m, o: Appearance(mask, o, mask),
        "paste": lambda m, o: Paste(o, mask, 8, 8),
    }
    settings = default_settings(kind, cfg=2.0, attention_start=1)
    from dragon_lab.instrument import measured_edit  # counts the passes, memory passes apart

    full = measured_edit(random_backend, memory, edits[kind](memory, other), cond, uncond, settings)
    low = measured_edit(random_backend, lean, edits[kind](lean, other_lean), cond, uncond, settings)
    assert (full.latent - low.latent).abs().max().item() < 1e-5
    assert full.stats["forward_memory"] == full.stats["forward_memory_partial"] == 0
    n_mem = 2 if kind in ("appearance", "paste") else 1
    attn_steps = [s for s in range(STEPS) if s >= settings.attention_start
                  and (settings.attention_end is None or s <= settings.attention_end)]
    feat_only = [s for s in range(STEPS) if settings.guided(s, STEPS) and s not in attn_steps]
    assert low.stats["forward_memory"] == n_mem * len(attn_steps)
    assert low.stats["forward_memory_partial"] == n_mem * len(feat_only)
    assert low.stats["forward_equiv"] > full.stats["forward_equiv"]
    assert len(lean.kv) <= len(memory.layers())  # one step held at a time
    with pytest.raises(RuntimeError, match="not prepared"):
        lean.kv_input(STEPS + 3, memory.layers()[0], torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("kind", ["move", "drag", "points", "appearance", "paste"])
def test_guided_steps_follow_the_reference_schedule(kind):
    """The paper's settings run the official demo's schedule at its 50 steps (Sampler.edit): guidance
    on every step before 10 and even steps to 30, regional SDE on 10 < i < 20, 3 time-travel passes
    on even 20 < i < 30; cross-branch attention from step 5 (appearance, paste: steps 0-35)."""
    from dragon_core.settings import attention_steps

    s = default_settings(kind)
    assert [i for i in range(50) if s.guided(i, 50)] == list(range(10)) + list(range(10, 30, 2))
    assert {i: s.repeats(i, 50) for i in range(50) if s.repeats(i, 50) > 1} == {22: 3, 24: 3, 26: 3, 28: 3}
    assert [i for i in range(50) if s.flexible(i, 50)] == list(range(11, 20))
    assert s.flexibility == (0.2 if kind == "points" else 0.4)
    assert s.copy_start == (kind != "points")  # the landmark mode copies no latent patches
    assert attention_steps(s, 50) == (list(range(36)) if kind in ("appearance", "paste") else list(range(5, 50)))
    assert not any(default_settings(kind, energy_scale=0).guided(i, 50) for i in range(50))
    assert not any(default_settings(kind, energy_scale=0).repeats(i, 50) > 1 for i in range(50))


def test_the_paper_preset_ignores_the_model_overrides():
    """preset "paper": PAPER_DEFAULTS whatever the model's calibrated overrides; "model" (the
    default): the overrides on top; explicit values on top of either."""
    from dataclasses import replace

    from dragon_core.settings import PAPER_DEFAULTS, EditSettings
    from dragon_demo.shapes_model import EDIT_DEFAULTS

    for kind in PAPER_DEFAULTS:
        paper = EditSettings(**PAPER_DEFAULTS[kind])
        assert default_settings(kind, EDIT_DEFAULTS, preset="paper") == paper == default_settings(kind, preset="paper")
        model = default_settings(kind, EDIT_DEFAULTS)
        assert model == default_settings(kind, EDIT_DEFAULTS, preset="model") != paper
        assert model == replace(paper, **EDIT_DEFAULTS[kind])
        assert default_settings(kind, preset="model") == paper  # a model without overrides: the paper's
        for preset in ("model", "paper"):
            assert default_settings(kind, EDIT_DEFAULTS, preset=preset, cfg=7.5, energy_scale=None).cfg == 7.5
    with pytest.raises(ValueError, match=r"preset must be one of \('model', 'paper'\), got 'official'"):
        default_settings("move", EDIT_DEFAULTS, preset="official")


def test_move_edit_moves_the_object_on_the_shapes_model(shapes):
    """A quality smoke test: the bundled model moves a disc most of the way to its target."""
    from dragon_lab import edit_cases as ec
    from dragon_lab import shapes_eval as ev
    from dragon_core.images import array_to_tensor
    from dragon_demo.shapes_model import load_config

    backend, enc = shapes
    case = ec.random_edit_case(1001, "move")
    cond, uncond = enc.encode(case.scene.prompt()), enc.encode("")
    mem = invert_with_memory(backend, array_to_tensor(case.scene.render()), cond, steps=50,
                             spacing=load_config()["sampling"]["spacing"])
    mask = torch.from_numpy(case.scene.masks()[case.index].astype(np.float32))
    settings = default_settings("move", load_config().get("edit_defaults"))
    out = edit_image(backend, mem, Move(mask, case.dx, case.dy), cond, uncond, settings).latent
    img = ((out.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()
    colour = case.scene.objects[case.index].colour
    found = [o for o in ev.palette_objects(img) if o.colour == colour]
    tm = case.target.masks()[case.index]
    ty, tx = np.nonzero(tm)
    best = min(np.hypot(o.centroid[0] - tx.mean() - 0.5, o.centroid[1] - ty.mean() - 0.5) for o in found)
    assert best < 2.0, best


def test_background_lock_keeps_the_outside_exactly(random_backend, memory):
    """With the lock on for every step, everything outside the grown edit region is the
    inverted image itself; without it, the outside drifts."""
    cond, uncond = prompt_pair()
    edit = Move(_mask(), 6, 4)
    locked = edit_image(random_backend, memory, edit, cond, uncond,
                        default_settings("move", background_lock=1.0, lock_margin=0.1)).latent
    free = edit_image(random_backend, memory, edit, cond, uncond, default_settings("move")).latent
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[8 - 3 : 20 + 3, 8 - 3 : 22 + 3] = False  # old box 8..16, new box 12..20 x 14..22, grown by 3 px
    z0 = memory.trajectory.z_0[0]
    assert torch.equal(locked[0][:, outside], z0[:, outside])
    assert not torch.allclose(free[0][:, outside], z0[:, outside], atol=1e-3)


@pytest.mark.parametrize("kind", ["move", "paste"])
def test_copy_until_follows_the_moved_source_inversion(random_backend, memory, kind):
    """With copy_until, the destination region is the source's inversion moved into
    place after every step of the window, and free afterwards."""
    cond, uncond = prompt_pair()
    src = memory if kind == "move" else invert_with_memory(random_backend, _image(9), cond, steps=STEPS,
                                                            spacing="comfy_uniform")
    edit = Move(_mask(), 8, 8) if kind == "move" else Paste(src, _mask(), 8, 8)
    seen = {}
    settings = default_settings(kind, copy_until=0.5, feature_scale=1.0)
    edit_image(random_backend, memory, edit, cond, uncond, settings, callback=lambda s, z: seen.update({s: z.clone()}))
    dest = torch.zeros(32, 32, dtype=torch.bool)
    dest[16:24, 16:24] = True  # the 8x8 box moved by (8, 8)
    for s in range(STEPS):
        want = src.trajectory.latents[s + 1][0][:, 8:16, 8:16]
        same = torch.equal(seen[s][0][:, dest].reshape(3, 8, 8), want)
        assert same == (s < 0.5 * STEPS), s


def test_points_without_a_mask_edit_inside_their_grown_box(random_backend, memory):
    """point_region: the points' box grown by a fraction of the side becomes the editable
    region, so the background lock keeps everything outside it exactly."""
    from dragon_core.regions import points_box

    box = points_box(torch.tensor([[10.0, 10.0], [14.0, 12.0]]), (32, 32), 0.1)
    ys, xs = torch.nonzero(box, as_tuple=True)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (6, 18, 6, 16)  # 10..14 / 10..12 grown by 3.2 px
    cond, uncond = prompt_pair()
    edit = Points(torch.tensor([[10.0, 10.0]]), torch.tensor([[14.0, 12.0]]), (32, 32))
    out = edit_image(random_backend, memory, edit, cond, uncond,
                     default_settings("points", point_region=0.1, background_lock=1.0, lock_margin=0.1)).latent
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[6 - 4: 16 + 5, 6 - 4: 18 + 5] = False  # the box grown by the lock margin (3 or 4 cells)
    assert torch.equal(out[0][:, outside], memory.trajectory.z_0[0][:, outside])


def test_reference_interior_matches_the_reference_without_its_boundary(random_backend, memory):
    """reference_interior: the appearance energy reads the reference object's mean feature
    over its mask eroded by one cell, so it differs from the whole-mask energy; with a mask
    too thin to erode it falls back to the whole mask."""
    cond, _ = prompt_pair()
    other = invert_with_memory(random_backend, _image(9), cond, steps=STEPS, spacing="comfy_uniform")
    cur = [other.feature(2, lvl, torch.device("cpu"), torch.float32)[0] for lvl in (1, 2)]
    grid = cur[1].shape[-2:]
    cur = [torch.nn.functional.interpolate(c[None], size=grid)[0] for c in cur]

    def edit_energy(mask, interior):
        plan = plan_edit(Appearance(_mask(), other, mask), memory,
                         default_settings("appearance", reference_interior=interior, feature_scale=1.0))
        return plan.energy(cur, 2)[0].item()

    assert edit_energy(_mask(), True) != edit_energy(_mask(), False)
    thin = torch.zeros(32, 32)
    thin[10, 4:20] = 1  # one row: nothing survives erosion
    assert edit_energy(thin, True) == edit_energy(thin, False)


def test_appearance_start_moves_the_region_mean_to_the_references(memory, random_backend):
    """appearance_start: inside the mask the start latent's per-channel mean moves that fraction of the
    way to the reference object's (its inverted latent under its mask); outside it is z_T unchanged."""
    cond, _ = prompt_pair()
    other = invert_with_memory(random_backend, _image(9), cond, steps=STEPS, spacing="comfy_uniform")
    ref_mask = torch.zeros(32, 32)
    ref_mask[16:28, 4:12] = 1
    z_T, r_T = memory.trajectory.z_T, other.trajectory.z_T
    lat = _mask().bool()  # pixel-space model: latent grid = image grid
    rlat = ref_mask.bool()

    def region_mean(z, m):
        return z[0][:, m].mean(dim=1)

    for frac in (0.0, 0.5, 1.0):
        plan = plan_edit(Appearance(_mask(), other, ref_mask), memory,
                         default_settings("appearance", appearance_start=frac))
        start = plan.start_latent
        assert torch.equal(start[0][:, ~lat], z_T[0][:, ~lat])
        want = region_mean(z_T, lat) + frac * (region_mean(r_T, rlat) - region_mean(z_T, lat))
        assert torch.allclose(region_mean(start, lat), want, atol=1e-5)
    assert not torch.equal(plan.start_latent, z_T)


def test_a_latent_too_small_for_the_unet_is_refused_by_name(random_backend):
    """1-2 pixel images used to reach a raw GroupNorm error; the UNet halves the latent 3 times."""
    from dragon_core.backend import min_latent_side

    cond, _ = prompt_pair()
    assert min_latent_side(random_backend) == 2 ** (random_backend.decoder_levels() - 1) == 8
    with pytest.raises(ValueError, match=r"the latent is 2x2 cells; this model needs at least 8x8"):
        invert_with_memory(random_backend, torch.zeros(1, 3, 2, 2), cond, steps=2, spacing="comfy_uniform")


def test_settings_warn_only_far_above_the_default_energy():
    from dragon_core.settings import ENERGY_WARN_FACTOR, describe, setting_warnings

    base = default_settings("move")
    assert setting_warnings(with_overrides(base, energy_scale=base.energy_scale * ENERGY_WARN_FACTOR), base, 50) == []
    (line,) = setting_warnings(with_overrides(base, energy_scale=base.energy_scale * 10), base, 50)
    assert line.startswith("energy_scale 400 is 10x this edit's default (40)")
    assert describe(base, 50, "paper") == ("preset paper: cfg 4, energy_scale 40, guidance_end 0.6, flexibility 0.4, "
                                           "time_travel 3, cross_attention on (steps 5-49)")
    assert describe(base, 50, "model").startswith("preset model: cfg 4, ")


def test_attention_that_never_runs_is_reported_not_claimed():
    """Move's cross-branch attention starts at step 5 (the reference code's): a 4-step run would
    log 'cross_attention on' while it never reads the memory; it says so and warns instead."""
    from dragon_core.settings import attention_steps, describe, setting_warnings

    base = default_settings("move")
    assert attention_steps(base, 4) == [] and attention_steps(base, 7) == [5, 6]
    assert describe(base, 4, "model").endswith("cross_attention on but never active")
    (line,) = setting_warnings(base, base, 4)
    assert line.startswith("steps 4: cross-branch attention starts at step 5, so it never reads the memory")
    assert setting_warnings(base, base, 7) == []
    assert setting_warnings(with_overrides(base, attention=False), base, 4) == []  # off on purpose: nothing to say
    assert describe(with_overrides(base, attention=False), 4, "model").endswith("cross_attention off")
    # the memory policy keeps K/V for exactly the steps the attention reads
    assert attention_steps(default_settings("paste"), 50) == list(range(36))


def test_vacated_noise_replaces_only_where_the_object_leaves(memory):
    """Shrinking an object: the start latent gets fresh seeded noise in the source cells the
    object leaves (the inversion's noise there still encodes the object) and stays the
    inversion's everywhere else; off by default (the paper's start latent)."""
    m = torch.zeros(32, 32)
    m[8:24, 8:24] = 1  # 16x16 object, shrunk to half about its centre: a ring of 4 cells per side leaves
    edit = Move(m, 0, 0, 0.5)
    settings = default_settings("move", copy_start=False)
    z_T = memory.trajectory.z_T
    assert torch.equal(plan_edit(edit, memory, settings).start_latent, z_T)
    fresh = with_overrides(settings, vacated_noise=True)
    start = plan_edit(edit, memory, fresh).start_latent
    changed = (start != z_T).any(dim=1)[0]
    ring = m.bool().clone()
    ring[12:20, 12:20] = False
    assert torch.equal(changed, ring)
    assert torch.equal(plan_edit(edit, memory, fresh).start_latent, start)  # seeded: the same again
    assert not torch.equal(plan_edit(edit, memory, with_overrides(fresh, seed=1)).start_latent, start)
    assert abs(float(start[0, :, ring].std()) - 1) < 0.15  # unit noise, the last timestep's marginal
    # a stream of its own: not the numbers the sampler's regional-SDE noise draws first from the same seed
    sde_first = torch.randn(z_T.shape, generator=torch.Generator().manual_seed(fresh.seed))
    assert not torch.allclose(start[0, :, ring], sde_first[0, :, ring])


def test_a_reference_made_with_another_step_spacing_is_refused(random_backend, memory):
    """'leading' and 'comfy_uniform' share the step grid but not the last step: same_run says so."""
    cond, _ = prompt_pair()
    other = invert_with_memory(random_backend, _image(1), cond, steps=STEPS, spacing="leading")
    assert torch.equal(other.trajectory.timesteps, memory.trajectory.timesteps)
    with pytest.raises(ValueError, match=r"source was made with 'leading' step spacing, the base image with "
                                         r"'comfy_uniform': use the same sampling schedule"):
        plan_edit(Paste(other, _mask(), 4, 4), memory, default_settings("paste"))
