"""The prompt vocabulary, the bundled model's files, and its quality (acceptance checks)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dragon_lab import shapes_eval as ev
from dragon_demo import shapes_world as sw
from dragon_demo.shapes_model import (
    ASSET_DIR,
    CONTEXT_TOKENS,
    UNET_CONFIG,
    ShapesTextEncoder,
    load_config,
    parse_prompt,
    scene_tokens,
    tokenize,
)

pytest.importorskip("diffusers")


def test_parse_prompt_accepts_the_vocabulary_and_synonyms():
    assert parse_prompt("gradient, red disc, blue square") == ("gradient", [("red", "disc"), ("blue", "square")])
    assert parse_prompt("A purple circle on a plain background") == ("flat", [("magenta", "disc")])
    assert parse_prompt("") == (None, [])
    assert parse_prompt("texture") == ("texture", [])


@pytest.mark.parametrize("bad,match", [
    ("red banana", "unknown word 'banana'.*Vocabulary"),
    ("red", "not followed by a shape"),
    ("disc", "needs a colour"),
    ("red blue disc", "not followed by a shape"),
    ("red disc, blue disc, green disc, cyan disc", "at most 3"),
])
def test_parse_prompt_errors_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt(bad)


def test_tokens_of_a_prompt_equal_the_scenes_tokens():
    for seed in range(20):
        s = sw.random_scene(seed)
        assert tokenize(s.prompt())[0].tolist() == scene_tokens(s)
    t = tokenize(["", "flat, red disc"])
    assert t.shape == (2, CONTEXT_TOKENS, 2) and t[0].abs().sum() == 0


def test_text_encoder_shape_and_input_check():
    enc = ShapesTextEncoder()
    assert enc.encode(["flat", "gradient, red disc"]).shape == (2, CONTEXT_TOKENS, 32)
    with pytest.raises(ValueError, match="tokens must have shape"):
        enc(torch.zeros(1, 3, 2, dtype=torch.long))


def test_bundled_model_files_are_fp16_safetensors_and_match_the_config():
    cfg = load_config()
    assert cfg["unet"] == json.loads(json.dumps(UNET_CONFIG))
    assert cfg["schedule"]["prediction_type"] == "epsilon" and cfg["resolution"] == 32
    assert cfg["sampling"]["spacing"] in ("leading", "comfy_uniform")
    for name in ("unet.safetensors", "text_encoder.safetensors"):
        w = load_file(str(ASSET_DIR / name))
        assert w and all(v.dtype == torch.float16 for v in w.values())
    size = (ASSET_DIR / "unet.safetensors").stat().st_size
    assert 1e6 < size < 10e6
    assert (ASSET_DIR / "MODEL_CARD.md").is_file() and (ASSET_DIR / "samples.png").is_file()


def test_samples_are_recognisable_shapes_scenes(shapes):
    """Acceptance: most samples hold a palette-coloured object of plausible size on a
    background that is not noise (colour segmentation; see dragon_lab.shapes_eval).
    Measured on 64 samples (model-report): objects 100%, not noise 83%."""
    from dragon_lab.model_report import held_out_scenes, prompt_colour_rate, sample_scenes

    backend, enc = shapes
    cfg = load_config()["sampling"]
    scenes = held_out_scenes(16)
    imgs = sample_scenes(backend, enc, scenes, 50, cfg["cfg"], cfg["spacing"])
    r = ev.sample_report(imgs)
    assert r["object_rate"] >= 0.8, r
    assert r["recognisable_rate"] >= 0.6, r
    assert prompt_colour_rate(imgs, scenes) >= 0.7
    # and the metric itself separates scenes from noise
    assert ev.sample_report(np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32))[
        "recognisable_rate"] == 0


def test_inversion_reconstructs_held_out_scenes(shapes):
    """Acceptance: DDIM inversion + sampling (50 steps, no CFG) >= 30 dB; 20-scene mean is in model_report.json."""
    from dragon_lab.model_report import held_out_scenes, reconstruction_psnr

    backend, enc = shapes
    spacing = load_config()["sampling"]["spacing"]
    psnrs = reconstruction_psnr(backend, enc, held_out_scenes(3, offset=10_000), 50, spacing)
    assert min(psnrs) >= 30.0, psnrs


def test_untrained_model_does_not_reconstruct(random_backend):
    """Control: the PSNR bound above is not met by chance."""
    from dragon_lab.model_report import held_out_scenes, reconstruction_psnr

    enc = ShapesTextEncoder()
    assert max(reconstruction_psnr(random_backend, enc, held_out_scenes(1), 20, "comfy_uniform")) < 25


def test_palette_segmentation_finds_real_objects():
    found = total = 0
    for seed in range(40):
        s = sw.random_scene(seed)
        cols = {o.colour for o in ev.palette_objects(s.render())}
        for o, m in zip(s.objects, s.masks()):
            if m.sum() >= ev.MIN_OBJECT_AREA:
                total += 1
                found += o.colour in cols
    assert found / total > 0.97
    assert ev.background_roughness(sw.random_scene(0).render()) < ev.CLEAN_LIMIT


def test_bundled_config_carries_the_code_defaults():
    """config.json's sampling and edit defaults equal the constants an export writes."""
    from dragon_demo.shapes_model import EDIT_DEFAULTS, SAMPLING

    cfg = load_config()
    assert cfg["sampling"] == SAMPLING
    assert cfg["edit_defaults"] == json.loads(json.dumps(EDIT_DEFAULTS))
    from dragon_core.settings import default_settings

    for kind, values in EDIT_DEFAULTS.items():
        s = default_settings(kind, cfg["edit_defaults"])
        assert all(getattr(s, k) == v for k, v in values.items())
