"""Half-precision weights through ComfyUI's backend: tiny SD1.5- and SDXL-topology models built
from ComfyUI's own configs (``test_model_families``) with fp16 or bf16 weights, inversion by the
Inversion node and move/drag edits through ``ComfyBackend``, against the fp32 model's edit.

How the half models are made: ComfyUI picks a UNet's dtype when it builds the model
(``model_config.set_inference_dtype(dtype, manual_cast_dtype)``; on a GPU SD1.5 gets fp16 with no
manual cast, on the CPU it would pick fp32). These tests build the model with the dtype forced, the
fp32 model's weights copied in, so ComfyUI computes in that dtype on the CPU as it does on a GPU.
``fp16 stored, fp32 compute`` is ComfyUI's manual cast (fp16 weights, each op cast to fp32).
Tolerances as in ``tests/test_half_precision.py`` (measured numbers in docs/performance.md).

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration/test_half_precision_comfy.py``.
"""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from dragon_core.memory import FeatureMemory  # noqa: E402
from dragon_core.sampler import edit_image  # noqa: E402
from test_half_precision import TOLERANCE, agreement, edit_for, guided_settings  # noqa: E402
from test_model_families import CONFIGS, LATENT, _cond, _image_latent, _tiny  # noqa: E402

STEPS = 4
FAMILIES = ("sd15", "sdxl")
# name -> (weight dtype, manual cast dtype or None, tolerance row)
DTYPES = {"fp16": (torch.float16, None, "fp16"), "bf16": (torch.bfloat16, None, "bf16"),
          "fp16 stored, fp32 compute": (torch.float16, torch.float32, "fp16")}


@pytest.fixture(scope="module")
def mods(dragon_nodes):
    return {n: importlib.import_module(f"dragon_nodes.{n}") for n in ("comfy_backend", "memory_nodes")}


@pytest.fixture(scope="module")
def fp32_models(comfy):
    with torch.inference_mode():
        return {f: _tiny(comfy, f) for f in FAMILIES}


def half_model(comfy, fp32_patcher, family: str, dtype: torch.dtype, manual_cast: torch.dtype | None):
    """The same tiny model built by ComfyUI with ``dtype`` weights (and ``manual_cast``), fp32 weights copied in."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = dict(CONFIGS[family])
    config = {"sd15": sm.SD15, "sdxl": sm.SDXL}[family](cfg)
    config.unet_config.update(cfg)
    config.set_inference_dtype(dtype, manual_cast)
    model = config.get_model({})
    model.load_state_dict(fp32_patcher.model.state_dict())
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def comfy_edit(mods, patcher, family: str, kind: str, energy_scale: float | None = None) -> torch.Tensor:
    """Inversion node, then the edit through ComfyBackend as the Guided Sampler runs it (every step
    guided, cross-branch attention from step 1); the edited latent (fp32, DDPM space)."""
    pos, neg = _cond(family), _cond(family, seed=9)
    with torch.inference_mode():
        _, memory = mods["memory_nodes"].Inversion.execute(patcher, _image_latent(), pos, STEPS).args
        assert isinstance(memory, FeatureMemory)
        with torch.inference_mode(False), mods["comfy_backend"].ComfyBackend(patcher) as backend:
            assert backend.dtype == patcher.model_dtype()
            return edit_image(backend, memory, edit_for(kind, LATENT), pos, neg,
                              guided_settings(kind, energy_scale=energy_scale)).latent


@pytest.fixture(scope="module")
def fp32_edits(mods, fp32_models):
    return {(f, k): (comfy_edit(mods, fp32_models[f], f, k), comfy_edit(mods, fp32_models[f], f, k, 0.0))
            for f in FAMILIES for k in ("move", "drag")}


@pytest.mark.parametrize("kind", ["move", "drag"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_comfy_edit_matches_fp32(comfy, mods, fp32_models, fp32_edits, family, dtype, kind):
    weights, manual, row = DTYPES[dtype]
    with torch.inference_mode():
        patcher = half_model(comfy, fp32_models[family], family, weights, manual)
    assert next(patcher.model.diffusion_model.parameters()).dtype == weights
    half = comfy_edit(mods, patcher, family, kind)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    full, plain = fp32_edits[(family, kind)]
    db, frac = agreement(half, full, plain)
    min_db, max_frac = TOLERANCE[row]
    assert db >= min_db and frac <= max_frac, (family, dtype, kind, db, frac)
