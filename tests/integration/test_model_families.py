"""SD1.x, SD2.x (v-prediction) and SDXL through the same backend and nodes; SD3/Flux
and zero-terminal-SNR schedules refused.

Tiny models with the families' topologies are built in-process from ComfyUI's own
model configs (``comfy.supported_models``: SD15, SD20 as a v-prediction model, SDXL
with its transformer depths 2 and 10 and its ``y`` vector conditioning) with small
channels and explicitly initialised random weights (comfy ops leave them
uninitialised). Everything runs inside ``torch.inference_mode()``, as ComfyUI's
executor runs nodes. These tests back the support table in docs/model-families.md.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration/test_model_families.py``.
"""

from __future__ import annotations

import importlib
import math

import pytest

torch = pytest.importorskip("torch")

from dragon_core.backend import LayerKey, StopForward, UNetHooks  # noqa: E402
from dragon_core.memory import default_feature_levels, default_kv_layers  # noqa: E402

STEPS = 3
LATENT = 16  # 128x128 pixels: 8 pixels per latent cell for every SD family
CTX = 32  # text-token width of the tiny models
POOLED = 16  # SDXL tiny: pooled text embedding width (adm = pooled + 6 x 256 size/crop embeddings)

_COMMON = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
           "in_channels": 4, "out_channels": 4, "model_channels": 32, "context_dim": CTX,
           "use_temporal_resblock": False, "use_temporal_attention": False}
CONFIGS = {
    # SD1.5: 4 levels of 2 res blocks, attention at all but the lowest-resolution level
    "sd15": dict(_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1] * 9 + [0] * 3, use_linear_in_transformer=False, num_heads=8),
    # SD2.x: SD1.5's topology, linear transformer projections, head width instead of head count
    "sd2v": dict(_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1] * 9 + [0] * 3, use_linear_in_transformer=True, num_head_channels=16),
    # SDXL: 3 levels, transformer depth 0 / 2 / 10 (middle 10), vector conditioning y
    "sdxl": dict(_COMMON, adm_in_channels=POOLED + 6 * 256, num_classes="sequential", num_res_blocks=[2, 2, 2],
                 channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_linear_in_transformer=True,
                 num_head_channels=16),
}
# What the documented rules (dragon_core.memory) pick, written out per family
RULE = {
    "sd15": {"levels": 4, "feature_blocks": (6, 9), "kv": None},  # every decoder self-attention
    "sd2v": {"levels": 4, "feature_blocks": (6, 9), "kv": None},
    "sdxl": {"levels": 3, "feature_blocks": (3, 6),
             "kv": {LayerKey("output", b, i) for b in (0, 1, 2) for i in (0, 9)}
             | {LayerKey("output", b, i) for b in (3, 4, 5) for i in (0, 1)}},
}


def _tiny(comfy, family: str, zsnr: bool = False):
    import comfy.model_base as mb
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = dict(CONFIGS[family])
    config = {"sd15": sm.SD15, "sd2v": sm.SD20, "sdxl": sm.SDXL}[family](cfg)
    config.unet_config.update(cfg)  # the config's extra defaults (64-wide heads) would leave no head
    if family == "sd2v":
        model = mb.BaseModel(config, model_type=mb.ModelType.V_PREDICTION)
    else:
        model = config.get_model({})
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():  # comfy ops leave weights uninitialised
        # fan-in scaled (O(1) activations, so the model's output and its self-attention matter), norms at 1
        if p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
        else:
            p.copy_((1.0 if "norm" in name else 0.0) + 0.02 * torch.randn(p.shape, generator=gen))
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    if zsnr:
        ms = type(model.model_sampling)(model.model_config, zsnr=True)
        patcher.add_object_patch("model_sampling", ms)
    return patcher


def _cond(family: str, seed: int = 1, **extra):
    """A CONDITIONING as the family's CLIPTextEncode makes it: SDXL's carries the pooled output
    (CLIPTextEncodeSDXL adds width/height/crop/target sizes)."""
    gen = torch.Generator().manual_seed(seed)
    opts = {"pooled_output": torch.randn(1, POOLED, generator=gen)} if family == "sdxl" else {}
    opts.update(extra)
    return [[torch.randn(1, 77, CTX, generator=gen), opts]]


@pytest.fixture(scope="module")
def pack(dragon_nodes):
    return {n: importlib.import_module(f"dragon_nodes.{n}")
            for n in ("comfy_backend", "memory_nodes", "edit_nodes", "sampler_nodes", "model_info", "convert")}


@pytest.fixture(scope="module")
def models(comfy):
    with torch.inference_mode():
        return {f: _tiny(comfy, f) for f in CONFIGS}


def _image_latent(seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 4, generator=g), size=(LATENT, LATENT),
                                        mode="bilinear")  # smooth, image-like
    return {"samples": z}


# ----------------------------------------------------------------------------------------------
# the layer rule
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(CONFIGS))
def test_layers_follow_the_documented_rule(models, pack, family):
    want = RULE[family]
    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(models[family]) as b:
        assert b.decoder_levels() == want["levels"]
        levels = default_feature_levels(b.decoder_levels())
        assert levels == (want["levels"] - 3, want["levels"] - 2)
        assert tuple(b.feature_block_ids()[lv] for lv in levels) == want["feature_blocks"]
        kv = default_kv_layers(b.decoder_self_attention_layers())
        assert kv == (None if want["kv"] is None else frozenset(want["kv"]))
        decoder = b.decoder_self_attention_layers()
    if family == "sdxl":  # 3 x 10 + 3 x 2 transformer blocks in the decoder
        assert len(decoder) == 36
    else:
        assert [k.block for k in decoder] == list(range(3, 12))


@pytest.mark.parametrize("family", list(CONFIGS))
def test_inversion_node_records_the_rules_layers_and_reports_them(models, pack, family):
    with torch.inference_mode():
        out = pack["memory_nodes"].Inversion.execute(models[family], _image_latent(), _cond(family), STEPS)
    inverted, memory = out.args
    assert inverted["samples"].shape == (1, 4, LATENT, LATENT) and torch.isfinite(inverted["samples"]).all()
    want = RULE[family]
    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(models[family]) as b:
        kv = set(want["kv"]) if want["kv"] is not None else set(b.decoder_self_attention_layers())
    assert set(memory.layers()) == kv
    assert tuple(memory.info["feature_block_ids"].values()) == want["feature_blocks"]
    rows = memory.layer_report()
    assert {r["name"] for r in rows if r["kind"] == "kv"} == {str(k) for k in kv}
    assert all(r["steps"] == STEPS and r["bytes"] == STEPS * r["bytes_per_step"] for r in rows)
    # the features: 1/2 and 1/1 of the latent's resolution for every family
    feats = {r["name"]: r["shape"] for r in rows if r["kind"] == "feature"}
    assert [s[-1] for s in feats.values()] == [LATENT // 2, LATENT]
    assert "MiB/step" in memory.describe()


# ----------------------------------------------------------------------------------------------
# conditioning: SDXL's pooled output / size conditioning through process_conds
# ----------------------------------------------------------------------------------------------
def test_sdxl_vector_conditioning_goes_through_comfyuis_process_conds(models, pack):
    """eps from the backend == the UNet called with ComfyUI's own ``encode_adm`` y."""
    patcher = models["sdxl"]
    model = patcher.model
    cond = _cond("sdxl", width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)
    z = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(3))
    t = 500
    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(patcher) as b:
        eps = b.predict_eps(z, t, cond, step=0)
        s = b.sigma(t)
        x = z * math.sqrt(1 + s * s)
        opts = {k: v for k, v in cond[0][1].items()}
        y = model.encode_adm(**opts)
        sig = torch.tensor([s])
        ts = model.model_sampling.timestep(sig).float()
        out = model.diffusion_model(model.model_sampling.calculate_input(sig, x), ts, context=cond[0][0], y=y)
        want = (x - model.model_sampling.calculate_denoised(sig, out, x)) / s
        assert torch.allclose(eps, want, atol=1e-5, rtol=1e-4), (eps - want).abs().max()
        # the pooled output and the sizes change the prediction: they are not dropped
        other = _cond("sdxl", width=512, height=512)
        assert not torch.allclose(b.predict_eps(z, t, other, step=0), eps, atol=1e-6)
        no_size = [[cond[0][0], {"pooled_output": cond[0][1]["pooled_output"]}]]  # CLIPTextEncode's form
        assert torch.isfinite(b.predict_eps(z, t, no_size, step=0)).all()


# ----------------------------------------------------------------------------------------------
# v-prediction: eps from the denoised output, inversion exact
# ----------------------------------------------------------------------------------------------
def test_v_prediction_eps_and_ddim_inversion_are_exact(models, pack):
    from dragon_core import ddim
    from dragon_core.schedule import alpha_pairs

    patcher = models["sd2v"]
    model = patcher.model
    import comfy.model_sampling

    assert isinstance(model.model_sampling, comfy.model_sampling.V_PREDICTION)
    cond = _cond("sd2v")
    z = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(patcher) as b:
        # eps == sqrt(abar) v + sqrt(1 - abar) z_t, with v the raw UNet output
        t = 700
        ab = float(b.alphas_cumprod[t])
        ts = model.model_sampling.timestep(torch.tensor([b.sigma(t)])).float()
        v = model.diffusion_model(z, ts, context=cond[0][0])  # the model input x / sqrt(1 + sigma^2) is z_t
        want = math.sqrt(ab) * v + math.sqrt(1 - ab) * z
        assert torch.allclose(b.predict_eps(z, t, cond, step=0), want, atol=1e-5, rtol=1e-4)
        # every inversion step is undone exactly by the DDIM sampling step with the same eps
        z0 = _image_latent()["samples"]
        traj = ddim.invert(b, z0, cond, steps=STEPS, spacing="comfy_uniform")
        pairs = alpha_pairs(b.alphas_cumprod, traj.timesteps, "comfy_uniform")
        for s in range(STEPS):
            eps = b.predict_eps(traj.latents[s + 1], int(traj.timesteps[s]), cond, step=s)
            back = ddim.ddim_step(traj.latents[s], eps, *pairs[s])
            assert torch.allclose(back, traj.latents[s + 1], atol=1e-5, rtol=1e-5), (back - traj.latents[s + 1]).abs().max()
        # the reconstruction from the inverted latent is the one ComfyUI's own DDIM sampler makes
        # (how far it lands from z0 is DDIM inversion's approximation, not the backend's: on this
        # random-weight model 3 steps come back to within ~0.5 of a latent of amplitude 2.6)
        rec = ddim.sample(b, traj.z_T, cond, steps=STEPS, spacing="comfy_uniform")
    import nodes as comfy_nodes

    with torch.inference_mode():
        s0 = b.sigma(int(traj.timesteps[0]))
        inverted = {"samples": model.process_latent_out(traj.z_T * math.sqrt(1 + s0 * s0))}
        got = comfy_nodes.KSamplerAdvanced().sample(patcher, "disable", 0, STEPS, 1.0, "ddim", "ddim_uniform", cond,
                                                    cond, inverted, 0, 10000, "disable")[0]["samples"]
    want = model.process_latent_out(rec)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


# ----------------------------------------------------------------------------------------------
# end to end: inversion + move edit + cross-branch attention, gradients
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd2v", "sdxl"])
def test_move_edit_end_to_end(models, pack, family):
    model = models[family]
    pos, neg = _cond(family), _cond(family, seed=9)
    px = LATENT * 8
    mask = torch.zeros(1, px, px)
    mask[0, 40:80, 32:72] = 1.0
    import nodes as comfy_nodes

    with torch.inference_mode():
        inverted, memory = pack["memory_nodes"].Inversion.execute(model, _image_latent(), pos, STEPS).args
        edit = pack["edit_nodes"].MoveEdit.execute(mask, 16, 0, 1.0).args[0]
        moved = pack["sampler_nodes"].GuidedSampler.execute(
            model=model, positive=pos, negative=neg, memory=memory, edit=edit, seed=0, cfg=-1.0, energy_scale=-1.0,
            guidance_end=-1.0, flexibility=0.0, cross_attention=True).args[0]["samples"]
        # cross-branch attention from step 0 (the move's own starts at step 5 of 50) under ComfyUI's sampler,
        # reading another image's memory (the image's own K/V would be near what the plain model computes)
        _, other = pack["memory_nodes"].Inversion.execute(model, _image_latent(seed=7), pos, STEPS).args
        patched = pack["sampler_nodes"].CrossBranchAttentionPatch.execute(model, other, "replace", 0, -1).args[0]
        ks = comfy_nodes.KSamplerAdvanced().sample
        run = {name: ks(m, "disable", 0, STEPS, 1.0, "ddim", "ddim_uniform", neg, neg, inverted, 0, 10000,
                        "disable")[0]["samples"] for name, m in (("plain", model), ("patched", patched))}
    assert moved.shape == (1, 4, LATENT, LATENT) and torch.isfinite(moved).all()
    assert torch.isfinite(run["patched"]).all()
    # the decoder self-attention read the memory's K/V
    assert (run["patched"] - run["plain"]).abs().max() > 1e-3 * run["plain"].abs().max()


@pytest.mark.parametrize("family", ["sd2v", "sdxl"])
def test_gradients_reach_the_latent_through_the_rule_features(models, pack, family):
    class Energy(UNetHooks):
        def __init__(self, level):
            self.level, self.h = level, None

        def decoder_feature(self, call, h):
            if call.level == self.level:
                self.h = h
                raise StopForward

    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(models[family]) as b:
        z = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(5))
        for level in default_feature_levels(b.decoder_levels()):
            hook = Energy(level)
            with torch.inference_mode(False):
                zg = z.clone().requires_grad_(True)
                assert b.predict_eps(zg, 400, _cond(family), step=0, hooks=hook, grad=True) is None
                (hook.h.float() ** 2).mean().backward()
                assert zg.grad is not None and torch.isfinite(zg.grad).all() and zg.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# refused
# ----------------------------------------------------------------------------------------------
def test_zero_terminal_snr_is_refused_clearly(comfy, pack):
    with torch.inference_mode():
        model = _tiny(comfy, "sd2v", zsnr=True)
        with pytest.raises(pack["convert"].InputError, match="zero terminal SNR"):
            pack["memory_nodes"].Inversion.execute(model, _image_latent(), _cond("sd2v"), STEPS)
        with pytest.raises(NotImplementedError, match="zero terminal SNR"):
            pack["comfy_backend"].ComfyBackend(model)


def test_inversion_can_keep_every_sdxl_self_attention(models, pack):
    """attention_per_block=0 lifts the budget: all 36 decoder self-attention layers of SDXL."""
    with torch.inference_mode():
        _, memory = pack["memory_nodes"].Inversion.execute(models["sdxl"], _image_latent(), _cond("sdxl"), 2,
                                                           attention_per_block=0).args
        _, budget = pack["memory_nodes"].Inversion.execute(models["sdxl"], _image_latent(), _cond("sdxl"), 2).args
    assert len(memory.layers()) == 36 and len(budget.layers()) == 12
    assert set(budget.layers()) < set(memory.layers())
    assert memory.nbytes()["features"] == budget.nbytes()["features"]
