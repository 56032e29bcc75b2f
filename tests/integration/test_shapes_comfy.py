"""The bundled shapes model as a real ComfyUI MODEL (nodes/shapes_comfy.py).

Loaded inside ``torch.inference_mode()``, as a node runs under ComfyUI's
executor, so the weights are inference tensors as with the stock loaders.
Numerical equivalence with diffusers is checked through the backend in
``test_comfy_backend.py``; here: config, heads, latent format, schedule, dtype,
conditioning, and clear refusals.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def conditioning(dragon_nodes):
    with torch.inference_mode():
        return dragon_nodes.shapes_comfy.encode_prompt("flat, red square, blue disc"), \
            dragon_nodes.shapes_comfy.encode_prompt("")


def test_shapes_model_loads_as_a_comfyui_model(comfy, dragon_nodes, user_model, conditioning):
    from test_comfy_unet_equivalence import SHAPES_COMFY_UNET_CONFIG

    from dragon_core.schedule import alphas_cumprod_from_config
    from dragon_demo.shapes_model import load_config

    sc = dragon_nodes.shapes_comfy
    model = user_model.model
    assert isinstance(user_model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model_config, sc.model_config_class())
    derived = sc.comfy_unet_config(load_config()["unet"])
    assert {k: v for k, v in derived.items() if k not in ("num_heads", "num_head_channels")} == SHAPES_COMFY_UNET_CONFIG
    assert model.model_config.unet_config["num_heads"] == 1
    assert {m.heads for m in model.diffusion_model.modules() if type(m).__name__ == "CrossAttention"} == {1}
    assert model.latent_format.latent_channels == 3
    assert model.model_type == comfy.model_base.ModelType.EPS
    assert model.get_dtype() == torch.float32  # ComfyUI's choice on the CPU
    # loaded inside inference mode, like ComfyUI's loaders: the case the gradient fix is for
    assert all(p.is_inference() for p in model.parameters())
    abar = 1.0 / (1.0 + model.model_sampling.sigmas.double() ** 2)
    assert torch.allclose(abar, alphas_cumprod_from_config(load_config()["schedule"]), rtol=1e-6, atol=0)
    cond, uncond = conditioning
    assert len(cond) == 1 and cond[0][1] == {} and tuple(cond[0][0].shape) == (1, 4, 32)
    with pytest.raises(ValueError, match="unknown word"):
        sc.encode_prompt("red dragon")


def test_loader_refuses_a_config_comfyui_cannot_represent(dragon_nodes):
    from dragon_demo.shapes_model import UNET_CONFIG

    with pytest.raises(ValueError, match="norm_num_groups"):
        dragon_nodes.shapes_comfy.comfy_unet_config(dict(UNET_CONFIG, norm_num_groups=16))
    with pytest.raises(ValueError, match="scaled_linear"):
        dragon_nodes.shapes_comfy.comfy_sampling_settings({"beta_schedule": "squaredcos_cap_v2"})


def test_weights_that_do_not_fit_the_config_are_refused(dragon_nodes):
    from safetensors.torch import load_file

    from dragon_demo.shapes_model import ASSET_DIR

    sc = dragon_nodes.shapes_comfy
    cfg = sc.model_config().unet_config
    sd = load_file(str(ASSET_DIR / "unet.safetensors"))
    with pytest.raises(ValueError, match="not in the diffusers layout"):
        sc.convert_unet_weights(dict(sd, **{"extra.weight": torch.zeros(1)}), cfg)
    with pytest.raises(ValueError, match="do not match config.json"):
        sc.convert_unet_weights(sd, dict(cfg, context_dim=64))
