"""The bundled shapes UNet (a diffusers config) is exactly representable in ComfyUI.

Against a real ComfyUI checkout (``COMFYUI_PATH``, see ``conftest.py``):

* ``SHAPES_COMFY_UNET_CONFIG`` builds ComfyUI's ``UNetModel`` whose parameters
  are in one-to-one correspondence with the diffusers model through
  ``comfy.utils.unet_to_diffusers`` (no missing, unexpected or unmapped key), and
  ComfyUI's own detector derives the same config from the converted weights.
* ComfyUI's ``apply_model`` (k-diffusion space) gives diffusers' epsilon.
* The DragonDiffusion feature taps: diffusers ``up_blocks[level]`` output is the
  ``h`` that ``set_model_output_block_patch`` sees before ``output_blocks[id]``
  (ids 2, 4, 6 for levels 0, 1, 2), and every self-attention has the
  ComfyUI layer key (kind, block id, transformer index) that the core uses.
* Stock loaders reject the weights until a matching model config is registered
  in ``comfy.supported_models.models``, and accept them after.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration``
with a Python that has ComfyUI's requirements plus diffusers (see the setup
script that made the test venv); skipped otherwise.

The diffusers model is randomly initialised (norm affines perturbed too, so a
swapped or dropped norm would show); nothing is read from the bundled assets.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

# ComfyUI's unet_config for dragon_demo.shapes_model.UNET_CONFIG: exactly what
# comfy.model_detection.detect_unet_config derives from the converted weights,
# plus the attention heads (which the detector cannot see: a model config class
# adds them as unet_extra_config). Note: comfy.supported_models.SD15 would force
# num_heads=8 (its unet_extra_config overrides the dict it is given).
SHAPES_COMFY_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "num_res_blocks": [1, 1, 1, 1],
    "transformer_depth": [0, 1, 1, 0],  # per input res block, in input order
    "transformer_depth_output": [0, 0, 1, 1, 1, 1, 0, 0],  # per output block, REVERSED (last = output_blocks[0])
    "channel_mult": [1, 2, 2, 2],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 32,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

# diffusers up_blocks[level] output == h entering ComfyUI output_blocks[id]
FEATURE_TAP_BLOCK_IDS = {0: 2, 1: 4, 2: 6}

# diffusers transformer block -> ComfyUI (kind, block id, transformer index)
SELF_ATTENTION_LAYERS = {
    "down_blocks.1.attentions.0.transformer_blocks.0": ("input", 3, 0),
    "down_blocks.2.attentions.0.transformer_blocks.0": ("input", 5, 0),
    "mid_block.attentions.0.transformer_blocks.0": ("middle", 0, 0),
    "up_blocks.1.attentions.0.transformer_blocks.0": ("output", 2, 0),
    "up_blocks.1.attentions.1.transformer_blocks.0": ("output", 3, 0),
    "up_blocks.2.attentions.0.transformer_blocks.0": ("output", 4, 0),
    "up_blocks.2.attentions.1.transformer_blocks.0": ("output", 5, 0),
}

EPS_TOL = 1e-5


def _k_space_tol(sigma) -> float:
    """EPS_TOL plus the float32 round-off of eps = (x - (x - eps * sigma)) / sigma at small sigma."""
    return EPS_TOL + 1e-6 / float(sigma)


TIMESTEPS = (1, 250, 500, 999)
BATCH = 2


# ----------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diffusers_unet(comfy):
    pytest.importorskip("diffusers")
    from dragon_demo.shapes_model import build_unet

    torch.manual_seed(1234)
    unet = build_unet().eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "norm" in name:  # GroupNorm/LayerNorm init is (1, 0): make them informative
                p.add_(0.1 * torch.randn_like(p))
    unet.requires_grad_(False)
    return unet


@pytest.fixture(scope="module")
def key_map(comfy):
    return comfy.utils.unet_to_diffusers(SHAPES_COMFY_UNET_CONFIG)


@pytest.fixture(scope="module")
def comfy_state_dict(diffusers_unet, key_map):
    """The diffusers weights under ComfyUI UNetModel keys."""
    return {key_map[k]: v.clone() for k, v in diffusers_unet.state_dict().items()}


@pytest.fixture(scope="module")
def comfy_patcher(comfy, dragon_nodes, comfy_state_dict):
    """ComfyUI BaseModel (EPS, SD's scaled-linear schedule) with the shapes weights, in a ModelPatcher."""
    model_config = dragon_nodes.shapes_comfy.model_config_class()(SHAPES_COMFY_UNET_CONFIG)
    model = model_config.get_model({})
    missing, unexpected = model.diffusion_model.load_state_dict(comfy_state_dict, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    mm = comfy.model_management
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    mm.load_models_gpu([patcher])
    return patcher


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, 32, 32, generator=g)  # k-diffusion space x = z_t / sqrt(abar)
    context = torch.randn(BATCH, 4, 32, generator=g)
    return x, context


def _diffusers_eps(unet, x_k, sigma, t, context):
    z_t = x_k / torch.sqrt(1.0 + sigma**2)
    return unet(z_t, t, encoder_hidden_states=context).sample


def _comfy_eps(model, x_k, sigma, context, transformer_options=None):
    sigmas = sigma.expand(x_k.shape[0])
    denoised = model.apply_model(x_k, sigmas, c_crossattn=context, transformer_options=transformer_options or {})
    return (x_k - denoised) / sigma


def _transformer_options(patcher):
    """A per-call copy of the patcher's transformer_options (patches included), as ComfyUI's samplers pass it."""
    return dict(patcher.model_options.get("transformer_options", {}))


# ----------------------------------------------------------------------------------
# config and key mapping
# ----------------------------------------------------------------------------------
def test_every_diffusers_key_maps_one_to_one(comfy, diffusers_unet, key_map, comfy_patcher):
    dsd = diffusers_unet.state_dict()
    unmapped = sorted(k for k in dsd if k not in key_map)
    assert not unmapped, f"diffusers keys with no ComfyUI key: {unmapped}"
    targets = [key_map[k] for k in dsd]
    assert len(set(targets)) == len(targets), "two diffusers keys map to the same ComfyUI key"
    csd = comfy_patcher.model.diffusion_model.state_dict()
    assert set(targets) == set(csd), (
        f"ComfyUI keys not fed: {sorted(set(csd) - set(targets))}; mapped keys ComfyUI lacks: {sorted(set(targets) - set(csd))}"
    )
    for k, v in dsd.items():
        assert csd[key_map[k]].shape == v.shape, k
        assert torch.equal(csd[key_map[k]], v), k


def test_comfy_detector_derives_the_same_unet_config(comfy, comfy_state_dict):
    detected = comfy.model_detection.detect_unet_config(comfy_state_dict, "")
    assert detected == SHAPES_COMFY_UNET_CONFIG


def test_attention_heads_match_diffusers(comfy, diffusers_unet, comfy_patcher):
    unet = comfy_patcher.model.diffusion_model
    heads = {m.heads for m in unet.modules() if type(m).__name__ == "CrossAttention"}
    assert heads == {1}
    d_heads = {m.heads for n, m in diffusers_unet.named_modules() if n.endswith(("attn1", "attn2"))}
    assert d_heads == {1}


# ----------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("t", TIMESTEPS)
def test_apply_model_eps_matches_diffusers(comfy, diffusers_unet, comfy_patcher, t):
    model = comfy_patcher.model
    x, context = _inputs(t)
    sigma = model.model_sampling.sigmas[t]
    assert int(model.model_sampling.timestep(sigma.reshape(1))) == t
    with torch.inference_mode():
        eps_d = _diffusers_eps(diffusers_unet, x, sigma, t, context)
        z_t = x / torch.sqrt(1.0 + sigma**2)
        eps_direct = model.diffusion_model(z_t, torch.full((BATCH,), float(t)), context=context)
        eps_c = _comfy_eps(model, x, sigma, context, _transformer_options(comfy_patcher))
    assert eps_d.abs().max() > 0.1  # not a degenerate comparison
    assert (eps_direct - eps_d).abs().max().item() < EPS_TOL
    assert (eps_c - eps_d).abs().max().item() < _k_space_tol(sigma)


def test_schedule_matches_diffusers(comfy, comfy_patcher):
    """ComfyUI's default discrete schedule is SD's scaled_linear (0.00085 .. 0.012, 1000 steps)."""
    from dragon_demo.shapes_model import SCHEDULE

    assert SCHEDULE["beta_schedule"] == "scaled_linear" and SCHEDULE["num_train_timesteps"] == 1000
    betas = torch.linspace(SCHEDULE["beta_start"] ** 0.5, SCHEDULE["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    sigmas = comfy_patcher.model.model_sampling.sigmas.double()
    assert torch.allclose(1.0 / (1.0 + sigmas**2), abar, rtol=1e-5, atol=1e-7)


def test_eps_check_is_sensitive_to_head_count(comfy, dragon_nodes, diffusers_unet, comfy_state_dict):
    """Guard for the comparison itself: the same weights with 8 heads (what SD15's config forces) differ."""
    cls = dragon_nodes.shapes_comfy.model_config_class()
    cls8 = type("ShapesEightHeads", (cls,), {"unet_extra_config": {"num_heads": 8, "num_head_channels": -1}})
    model = cls8(SHAPES_COMFY_UNET_CONFIG).get_model({})
    model.diffusion_model.load_state_dict(comfy_state_dict, strict=True)
    x, context = _inputs(7)
    sigma = model.model_sampling.sigmas[500]
    with torch.inference_mode():
        diff = (_comfy_eps(model, x, sigma, context) - _diffusers_eps(diffusers_unet, x, sigma, 500, context)).abs().max()
    assert diff > 100 * EPS_TOL


# ----------------------------------------------------------------------------------
# DragonDiffusion patch points
# ----------------------------------------------------------------------------------
def test_feature_taps_are_output_block_patch_ids(comfy, diffusers_unet, comfy_patcher):
    seen: dict[int, torch.Tensor] = {}

    def output_block_patch(h, hsp, transformer_options):
        kind, block_id = transformer_options["block"]
        assert kind == "output"
        seen[block_id] = h.detach().clone()
        return h, hsp

    patcher = comfy_patcher.clone()
    patcher.set_model_output_block_patch(output_block_patch)

    levels: dict[int, torch.Tensor] = {}
    handles = [
        blk.register_forward_hook(lambda m, i, o, level=level: levels.__setitem__(level, o.detach().clone()))
        for level, blk in enumerate(diffusers_unet.up_blocks)
    ]
    x, context = _inputs(3)
    sigma = patcher.model.model_sampling.sigmas[400]
    try:
        with torch.inference_mode():
            eps_d = _diffusers_eps(diffusers_unet, x, sigma, 400, context)
            eps_c = _comfy_eps(patcher.model, x, sigma, context, _transformer_options(patcher))
    finally:
        for h in handles:
            h.remove()
    assert (eps_c - eps_d).abs().max().item() < _k_space_tol(sigma)  # the no-op patch changes nothing
    assert sorted(seen) == list(range(len(patcher.model.diffusion_model.output_blocks)))

    found = {}
    for level, feat in levels.items():
        ids = [i for i, h in seen.items() if h.shape == feat.shape and torch.allclose(h, feat, atol=1e-5, rtol=0)]
        if ids:
            assert len(ids) == 1, (level, ids)
            found[level] = ids[0]
    assert found == FEATURE_TAP_BLOCK_IDS
    assert levels[1].shape == (BATCH, 64, 16, 16) and levels[2].shape == (BATCH, 64, 32, 32)


def test_self_attention_layer_keys(comfy, diffusers_unet, comfy_patcher):
    comfy_n: dict[tuple[str, int, int], torch.Tensor] = {}
    heads: dict[tuple[str, int, int], tuple[int, int]] = {}

    def attn1_patch(n, context_attn1, value_attn1, extra_options):
        kind, block_id = extra_options["block"]
        key = (kind, block_id, extra_options.get("block_index", 0))
        comfy_n[key] = n.detach().clone()
        heads[key] = (extra_options["n_heads"], extra_options["dim_head"])
        return n, context_attn1, value_attn1

    patcher = comfy_patcher.clone()
    patcher.set_model_attn1_patch(attn1_patch)

    diff_n: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in diffusers_unet.named_modules():
        if name.endswith(".attn1"):
            block = name[: -len(".attn1")]
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs, block=block: diff_n.__setitem__(block, (args[0] if args else kwargs["hidden_states"]).detach().clone()),
                with_kwargs=True,
            ))
    x, context = _inputs(5)
    sigma = patcher.model.model_sampling.sigmas[600]
    try:
        with torch.inference_mode():
            _diffusers_eps(diffusers_unet, x, sigma, 600, context)
            _comfy_eps(patcher.model, x, sigma, context, _transformer_options(patcher))
    finally:
        for h in handles:
            h.remove()

    assert set(diff_n) == set(SELF_ATTENTION_LAYERS)
    assert set(comfy_n) == set(SELF_ATTENTION_LAYERS.values())
    for block, key in SELF_ATTENTION_LAYERS.items():
        assert comfy_n[key].shape == diff_n[block].shape, block
        assert torch.allclose(comfy_n[key], diff_n[block], atol=1e-5, rtol=0), block
        assert heads[key] == (1, diff_n[block].shape[-1]), (block, heads[key])


# ----------------------------------------------------------------------------------
# loaders
# ----------------------------------------------------------------------------------
def test_stock_loader_rejects_unregistered_config(comfy, diffusers_unet, comfy_state_dict):
    assert comfy.model_detection.model_config_from_unet(dict(comfy_state_dict), "") is None
    assert comfy.sd.load_diffusion_model_state_dict(dict(comfy_state_dict)) is None
    assert comfy.sd.load_diffusion_model_state_dict(dict(diffusers_unet.state_dict())) is None


def test_stock_loader_accepts_registered_config(comfy, dragon_nodes, diffusers_unet, comfy_state_dict, monkeypatch):
    cls = dragon_nodes.shapes_comfy.model_config_class()
    monkeypatch.setattr(comfy.supported_models, "models", [cls] + list(comfy.supported_models.models))
    patcher = comfy.sd.load_diffusion_model_state_dict({k: v.clone() for k, v in comfy_state_dict.items()})
    assert patcher is not None
    assert isinstance(patcher.model.model_config, cls)
    assert patcher.model.model_config.unet_config["num_heads"] == 1
    assert patcher.model.latent_format.latent_channels == 3
    comfy.model_management.load_models_gpu([patcher])
    model = patcher.model
    x, context = _inputs(11)
    sigma = model.model_sampling.sigmas[300]
    with torch.inference_mode():
        eps_d = _diffusers_eps(diffusers_unet, x, sigma, 300, context)
        eps_c = _comfy_eps(model, x.to(model.get_dtype()), sigma, context.to(model.get_dtype()))
    assert model.get_dtype() == torch.float32
    assert (eps_c.float() - eps_d).abs().max().item() < _k_space_tol(sigma)
