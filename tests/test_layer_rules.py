"""The structural layer rules of dragon_core.memory, without a model: what they pick for
SD1.x/SD2.x, SDXL and the shapes model's decoders (docs/model-families.md, "Layer selection")."""

import pytest

from dragon_core.backend import LayerKey
from dragon_core.memory import default_feature_levels, default_kv_layers


def _decoder(depths_per_block: dict[int, int]) -> list[LayerKey]:
    return [LayerKey("output", b, i) for b, d in depths_per_block.items() for i in range(d)]


def test_feature_levels_are_the_two_before_the_full_resolution_level():
    assert default_feature_levels(4) == (1, 2)  # SD1.x/2.x, shapes: up_blocks[1], [2] (ComfyUI blocks 6, 9)
    assert default_feature_levels(3) == (0, 1)  # SDXL: ComfyUI blocks 3, 6
    assert default_feature_levels(5) == (2, 3)
    with pytest.raises(ValueError, match="at least 3 levels"):
        default_feature_levels(2)


def test_sd15_keeps_every_decoder_self_attention():
    assert default_kv_layers(_decoder({b: 1 for b in range(3, 12)})) is None


def test_sdxl_keeps_first_and_last_of_deep_blocks():
    layers = _decoder({0: 10, 1: 10, 2: 10, 3: 2, 4: 2, 5: 2})
    kept = default_kv_layers(layers)
    assert kept == {LayerKey("output", b, i) for b in (0, 1, 2) for i in (0, 9)} | \
        {LayerKey("output", b, i) for b in (3, 4, 5) for i in (0, 1)}
    assert default_kv_layers(layers, max_per_block=None) is None
    assert {k.index for k in default_kv_layers(layers, max_per_block=3) if k.block == 0} == {0, 4, 9}  # round(4.5)
    assert {k.index for k in default_kv_layers(layers, max_per_block=1) if k.block == 0} == {9}
    with pytest.raises(ValueError):
        default_kv_layers(layers, max_per_block=0)
