"""DragonDiff_CaptureSample in a real ComfyUI: generate and keep the memory, then edit it.

Checked: the generated LATENT is KSampler's (ddim, ddim_uniform, same seed, steps and
cfg); the Guided Sampler with no edit (a drag whose targets are its handles, full
guidance, at the generation's cfg) gives it back at >= 60 dB, on the bundled model and
on a tiny random SD1.5-topology model; the memory keeps its settings and a paste whose
source memory has other steps is refused naming both; the user's MODEL and inputs are left
as they were; bad sizes are refused naming the input.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration/test_capture_nodes.py``.
"""

from __future__ import annotations

import copy
import importlib

import pytest

torch = pytest.importorskip("torch")

from dragon_core import ddim  # noqa: E402

STEPS = 10
CFG = 3.0
POINTS = "12,12,12,12; 20,8,20,8"  # every target on its handle: nothing to move


@pytest.fixture(scope="module")
def pack(dragon_nodes):
    return {n: importlib.import_module(f"dragon_nodes.{n}")
            for n in ("capture_nodes", "memory_nodes", "edit_nodes", "sampler_nodes", "shapes_comfy", "convert")}


def _generate(pack, model, pos, neg, size, **kw):
    args = dict(width=size, height=size, seed=5, steps=STEPS, cfg=CFG)
    args.update(kw)
    with torch.inference_mode():
        return pack["capture_nodes"].CaptureSample.execute(model, pos, neg, **args).args


def _no_edit(pack, model, pos, neg, memory, size, cfg=CFG, **kw):
    """The Guided Sampler on a drag with every target on its handle (defaults: full guidance)."""
    with torch.inference_mode():
        edit = pack["edit_nodes"].DragEdit.execute(torch.zeros(1, size, size, 3), POINTS).args[0]
        args = dict(seed=0, cfg=cfg, energy_scale=-1.0, guidance_end=1.0, flexibility=0.0, cross_attention=True)
        args.update(kw)
        return pack["sampler_nodes"].GuidedSampler.execute(model=model, positive=pos, negative=neg, memory=memory,
                                                           edit=edit, **args).args[0]["samples"]


def _psnr(a, b):
    return ddim.psnr(a, b, data_range=float(b.max() - b.min()))


@pytest.fixture(scope="module")
def shapes_run(pack, user_model):
    sc = pack["shapes_comfy"]
    pos, neg = sc.encode_prompt("flat, yellow triangle, blue disc"), sc.encode_prompt("")
    before = copy.copy(user_model.model_options), {k: v.clone() for k, v in user_model.model.state_dict().items()}
    latent, memory = _generate(pack, user_model, pos, neg, 32)
    return user_model, pos, neg, latent, memory, before


def test_capture_gives_ksamplers_image_and_leaves_the_model_alone(comfy, shapes_run):
    import nodes as comfy_nodes

    model, pos, neg, latent, memory, (options, weights) = shapes_run
    with torch.inference_mode():
        ks = comfy_nodes.common_ksampler(model, 5, STEPS, CFG, "ddim", "ddim_uniform", pos, neg,
                                         {"samples": torch.zeros(1, 4, 32, 32)})[0]["samples"]
    assert latent["samples"].shape == ks.shape == (1, 3, 32, 32)
    assert (latent["samples"] - ks).abs().max() < 2e-3, (latent["samples"] - ks).abs().max()
    assert memory.made_with()["steps"] == STEPS and memory.cfg == CFG and memory.seed == 5
    assert memory.uncond_kv is not None and memory.trajectory.latents.shape[0] == STEPS + 1
    assert model.model_options == options  # no patch left on the user's MODEL, weights untouched
    assert all(torch.equal(v, weights[k]) for k, v in model.model.state_dict().items())


def test_no_edit_reproduces_the_generated_image_on_the_bundled_model(pack, shapes_run):
    model, pos, neg, latent, memory, _ = shapes_run
    got = _no_edit(pack, model, pos, neg, memory, 32)
    assert _psnr(got, latent["samples"]) >= 60
    # the shapes model's drag default runs at cfg 1: the unconditional K/V then go unused, and
    # the picture differs from the cfg-3 generation inside the drag's region only
    assert _psnr(_no_edit(pack, model, pos, neg, memory, 32, cfg=-1.0), latent["samples"]) < 60


def test_no_edit_reproduces_on_a_tiny_sd15_model(comfy, pack):
    from test_model_families import LATENT, _cond, _tiny

    with torch.inference_mode():
        model = _tiny(comfy, "sd15")
    pos, neg = _cond("sd15"), _cond("sd15", seed=9)
    size = LATENT * 8
    latent, memory = _generate(pack, model, pos, neg, size, steps=5, cfg=4.0)
    assert latent["samples"].shape == (1, 4, LATENT, LATENT)
    # the paper's drag settings (energy 80, every step guided here), at the generation's cfg
    got = _no_edit(pack, model, pos, neg, memory, size, cfg=4.0)
    assert _psnr(got, latent["samples"]) >= 60, _psnr(got, latent["samples"])


def test_a_source_memory_with_other_steps_is_refused_naming_both(pack, shapes_run):
    model, pos, neg, latent, memory, _ = shapes_run
    convert = pack["convert"]
    with torch.inference_mode():
        _, other = pack["memory_nodes"].Inversion.execute(model, latent, pos, 4).args
        m = torch.zeros(1, 32, 32)
        m[0, 8:16, 8:16] = 1
        edit = pack["edit_nodes"].PasteEdit.execute(source_memory=other, mask=m, dx=4, dy=4, scale=1.0).args[0]
        with pytest.raises(convert.InputError, match=f"with 4 steps, the memory with {STEPS}"):
            pack["sampler_nodes"].GuidedSampler.execute(
                model=model, positive=pos, negative=neg, memory=memory, edit=edit, seed=0, cfg=CFG,
                energy_scale=-1.0, guidance_end=-1.0, flexibility=-1.0, cross_attention=True)


def test_recompute_storage_gives_the_fp16_edit(pack, shapes_run):
    model, pos, neg, _, _, _ = shapes_run
    got = {}
    for storage in ("fp16", "recompute"):
        _, memory = _generate(pack, model, pos, neg, 32, storage=storage)
        got[storage] = _no_edit(pack, model, pos, neg, memory, 32, energy_scale=-1.0, cfg=-1.0)
    assert (got["fp16"] - got["recompute"]).abs().max() < 1e-4


@pytest.mark.parametrize("size, match", [(36, "not a multiple of 8"), (32, "needs at least 64x64")])
def test_bad_sizes_are_refused_naming_the_input(comfy, pack, size, match):
    from test_model_families import _cond, _tiny

    with torch.inference_mode():
        model = _tiny(comfy, "sd15")
    with pytest.raises(pack["convert"].InputError, match=f"Generate with Memory: width/height: .*{match}"):
        _generate(pack, model, _cond("sd15"), _cond("sd15", seed=9), size)


def test_cross_branch_attention_node_gives_each_cfg_row_its_branchs_kv(comfy, pack, shapes_run, monkeypatch):
    """KSampler regenerating with the Cross-Branch Attention node on a captured memory (replace
    mode, from step 0, fp16 storage): the negative prompt's rows of ComfyUI's CFG batch read the
    captured negative-prompt K/V, so the generation comes back; reading the positive prompt's
    K/V in every row (what the patch did before) does not."""
    import nodes as comfy_nodes

    model, pos, neg, _, _, _ = shapes_run
    latent, memory = _generate(pack, model, pos, neg, 32, storage="fp16")
    sn = pack["sampler_nodes"]

    def regenerate():
        with torch.inference_mode():
            patched = sn.CrossBranchAttentionPatch.execute(model, memory, "replace", 0, -1).args[0]
            return comfy_nodes.common_ksampler(patched, 5, STEPS, CFG, "ddim", "ddim_uniform", pos, neg,
                                               {"samples": torch.zeros(1, 3, 32, 32)})[0]["samples"]

    per_row = _psnr(regenerate(), latent["samples"])
    monkeypatch.setattr(sn, "row_branches", lambda options, rows: "cond")
    cond_only = _psnr(regenerate(), latent["samples"])
    print(f"per-row branch {per_row:.1f} dB, cond K/V in every row {cond_only:.1f} dB")
    assert per_row >= 50 and per_row > cond_only + 10, (per_row, cond_only)
