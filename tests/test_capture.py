"""Memory captured while generating (dragon_core.capture): the generation is unchanged, the
memory holds each CFG branch's own K/V, and editing it with no edit gives the image back."""

import json
from pathlib import Path

import pytest
import torch
from workflow_spec import load_specs, to_api

from dragon_core import ddim
from dragon_core.capture import CapturedMemory, sample_with_memory
from dragon_core.edits import Drag, Move, Paste
from dragon_core.memory import MemoryPolicy, default_policy, invert_with_memory
from dragon_core.planning import plan_edit
from dragon_core.sampler import edit_image, run_edit
from dragon_core.settings import default_settings

from shapes_prompts import prompt_pair

pytest.importorskip("diffusers")

STEPS = 6
CFG = 3.0


def _noise(seed=3):
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _image(z):
    return (z.clamp(-1, 1) + 1) / 2


def _no_edit(memory, cond, uncond, backend, cfg=CFG, **kw):
    """Drag with every target on its handle: full guidance and cross-branch attention from step 0,
    nothing to move (at the generation's CFG by default); no regional SDE or time travel (the
    paper's settings have both: fresh noise and re-noising change the image by design)."""
    h = torch.tensor([[12.0, 12.0], [20.0, 8.0]])
    settings = default_settings("drag", cfg=cfg, attention_start=0, flexibility=0.0, time_travel=1, **kw)
    return run_edit(backend, memory, plan_edit(Drag(h, h.clone(), (32, 32)), memory, settings), cond, uncond,
                    settings).latent


@pytest.fixture()
def captured(random_backend):
    cond, uncond = prompt_pair()
    return sample_with_memory(random_backend, _noise(), cond, uncond, steps=STEPS, cfg=CFG, spacing="comfy_uniform",
                              policy=default_policy(random_backend, dtype=torch.float32), model_id="m", seed=3)


def test_capture_records_in_the_generations_own_passes(random_backend, captured):
    """The image is ddim.sample's, bit for bit; latents[s] is step s's input; each branch's K/V
    and the cond features are kept for every step; the settings travel with the memory."""
    cond, uncond = prompt_pair()
    z_T = _noise()
    plain = ddim.sample(random_backend, z_T, cond, uncond, steps=STEPS, cfg=CFG, spacing="comfy_uniform")
    traj = captured.trajectory
    assert torch.equal(traj.z_0, plain) and torch.equal(traj.z_T, z_T) and traj.latents.shape[0] == STEPS + 1
    layers = random_backend.decoder_self_attention_layers()
    assert set(captured.kv) == set(captured.uncond_kv.kv) == {(s, k) for s in range(STEPS) for k in layers}
    assert set(captured.features) == {(s, lv) for s in range(STEPS) for lv in (1, 2)}
    assert not captured.uncond_kv.features
    b = captured.nbytes()
    assert b["kv"] == 2 * sum(t.numel() * 4 for t in captured.kv.values()) and b["total"] == sum(
        b[k] for k in ("kv", "features", "trajectory"))
    assert captured.made_with() == {"steps": STEPS, "spacing": "comfy_uniform", "cfg": CFG, "seed": 3,
                                    "model_id": "m"}
    assert captured.info["extra_forward"] == 0 and captured.info["forward"] == 2 * STEPS
    assert "both CFG branches" in captured.describe()
    # step s's K/V are those of UNet(latents[s], t_s), per branch: reading them changes nothing
    from dragon_core.attention import CrossBranchAttention

    s, t = 2, int(traj.timesteps[2])
    hook = CrossBranchAttention(captured, "replace", start=0)
    for c, branch in ((cond, "cond"), (uncond, "uncond")):
        own = random_backend.predict_eps(traj.latents[s], t, c, step=s, branch=branch)
        assert torch.equal(own, random_backend.predict_eps(traj.latents[s], t, c, step=s, branch=branch, hooks=hook))


def test_no_edit_reproduces_the_generated_image(random_backend, captured):
    """Guided sampling with cross-branch attention at every step and nothing to move gives
    the image back to float noise; without the uncond branch's own K/V (cond K/V read by
    both branches, as an inversion's memory is) it does not."""
    cond, uncond = prompt_pair()
    target = _image(captured.trajectory.z_0)
    assert ddim.psnr(_image(_no_edit(captured, cond, uncond, random_backend)), target) >= 60
    cond_only = CapturedMemory(captured.trajectory, captured.kv, captured.features, captured.policy, cfg=CFG)
    worse = ddim.psnr(_image(_no_edit(cond_only, cond, uncond, random_backend, energy_scale=0.0,
                                      attention_mode="replace")), target)
    assert worse < 50, worse


def test_no_edit_on_the_bundled_model_reproduces_where_inversion_does_not(shapes):
    """The bundled model, 20 steps, CFG 3, the default int8 memory: >= 60 dB; the same image's
    inversion, edited the same way, about 30 dB."""
    backend, enc = shapes
    cond, uncond = enc.encode("a red disc and a blue square on a flat grey background"), enc.encode("")
    mem = sample_with_memory(backend, _noise(), cond, uncond, steps=20, cfg=CFG, spacing="comfy_uniform")
    target = _image(mem.trajectory.z_0)
    assert ddim.psnr(_image(_no_edit(mem, cond, uncond, backend)), target) >= 60
    inv = invert_with_memory(backend, mem.trajectory.z_0, cond, steps=20, spacing="comfy_uniform")
    assert ddim.psnr(_image(_no_edit(inv, cond, uncond, backend)), target) < 45


def test_recompute_capture_gives_the_stored_memorys_edit(random_backend):
    """storage 'recompute': only the trajectory and the prompts are kept; each step's passes
    (both branches) are rerun during the edit, giving the fp16 memory's result."""
    cond, uncond = prompt_pair()
    kw = dict(steps=STEPS, cfg=CFG, spacing="comfy_uniform")
    fp16 = sample_with_memory(random_backend, _noise(), cond, uncond, policy=MemoryPolicy(dtype=torch.float16), **kw)
    lazy = sample_with_memory(random_backend, _noise(), cond, uncond,
                              policy=MemoryPolicy(dtype=torch.float16, recompute=True), **kw)
    assert not lazy.kv and not lazy.uncond_kv.kv and lazy.nbytes()["kv"] == 0
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    settings = default_settings("move", cfg=CFG, attention_start=1)
    a = edit_image(random_backend, fp16, Move(m, 6, 4), cond, uncond, settings).latent
    b = edit_image(random_backend, lazy, Move(m, 6, 4), cond, uncond, settings).latent
    assert torch.allclose(a, b, atol=1e-5)
    assert not lazy.kv and not lazy.uncond_kv.kv  # released after the edit


def test_without_cfg_one_pass_per_step_and_no_uncond_memory(random_backend):
    cond, uncond = prompt_pair()
    mem = sample_with_memory(random_backend, _noise(), cond, uncond, steps=STEPS, cfg=1.0, spacing="comfy_uniform")
    assert mem.uncond_kv is None and mem.info["forward"] == STEPS
    key = next(iter(mem.kv))
    # an uncond edit branch reads the cond K/V, as with an inversion's memory
    assert torch.equal(mem.kv_input(*key, torch.device("cpu"), torch.float32, "uncond"),
                       mem.kv_input(*key, torch.device("cpu"), torch.float32))


def test_a_memory_of_another_schedule_is_refused_naming_both(random_backend, captured):
    """A paste whose source was made with other steps: the error names both step counts."""
    cond, _ = prompt_pair()
    other = invert_with_memory(random_backend, captured.trajectory.z_0, cond, steps=4, spacing="comfy_uniform")
    m = torch.zeros(32, 32)
    m[8:16, 8:16] = 1
    with pytest.raises(ValueError, match=f"inverted with 4 steps, the base image with {STEPS}"):
        plan_edit(Paste(other, m, 4, 4), captured, default_settings("paste"))


WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.mark.parametrize("family", ["shapes_demo", "sd15"])
def test_capture_workflows_edit_the_generated_image(family):
    """workflows/dragon_capture_move_*: the Guided Sampler reads the Generate with Memory node's
    memory and the Move editor draws on its decoded image (no inversion); the seed is fixed, so a
    second Run only edits. The demo presets a selection and a move (it runs as shipped); the
    SD1.5 one starts with a Note of its steps and presets nothing to edit."""
    ui = json.loads((WORKFLOWS / f"dragon_capture_move_{family}.json").read_text())
    prompt = to_api(ui, load_specs())
    by_type = {n["class_type"]: (k, n["inputs"]) for k, n in prompt.items()}
    gen_id, gen = by_type["DragonDiff_CaptureSample"]
    [gen_ui] = [n for n in ui["nodes"] if n["type"] == "DragonDiff_CaptureSample"]
    assert "DragonDiff_Inversion" not in by_type and gen_ui["widgets_values"][3] == "fixed"  # the seed's control
    assert by_type["DragonDiff_GuidedSampler"][1]["memory"] == [gen_id, 1]
    decode = prompt[by_type["DragonDiff_MoveEdit"][1]["image"][0]]
    assert decode["class_type"] == "VAEDecode" and decode["inputs"]["samples"] == [gen_id, 0]
    move = by_type["DragonDiff_MoveEdit"][1]
    first = ui["nodes"][0]
    assert first["type"] == "MarkdownNote" and "Run" in first["widgets_values"][0]
    if family == "sd15":
        assert (gen["width"], gen["height"]) == (512, 512) and "CheckpointLoaderSimple" in by_type
        assert move["selection"] == "" and move["dx"] == move["dy"] == 0
    else:
        assert (gen["width"], gen["height"]) == (32, 32) and move["selection"] and (move["dx"], move["dy"]) == (10, -8)


def test_capture_bench_command_scores_both_memories(tmp_path, capsys):
    """``python -m dragon_lab capture-bench``: a generated sample moved with each memory, scored,
    with the inversion's cost (what capture saves) in the JSON."""
    from dragon_lab.cli import main as lab

    out = tmp_path / "capture.json"
    assert lab(["capture-bench", "--n", "1", "--steps", "6", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| captured |" in text and "| inverted |" in text and "inversion saved: 6 UNet passes" in text
    result = json.loads(out.read_text())
    assert result["scored"] == 1 and result["cost"]["invert_forward"] == 6 and result["cost"]["generate_forward"] == 12
    assert set(result["rows"][0]["scores"]) == {"captured", "inverted"}
