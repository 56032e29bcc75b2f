"""The nodes' input checks that need no ComfyUI (nodes/convert.py): masks, images and
latents to core tensors, errors that name the node and the input, size checks, and
out-of-memory errors ComfyUI treats as such.

convert.py is loaded from its file under a private name: ``nodes`` is ComfyUI's own
top-level module when the integration suite runs in the same process."""

import pytest
import torch

from dragon_core.regions import RegionError
from pack_modules import node_module


@pytest.fixture(scope="module")
def convert():
    with node_module("convert.py", "dragon_pack_convert") as module:
        yield module


@pytest.mark.parametrize("value, needle", [
    (torch.zeros(2, 8, 8), "a batch of 2 masks"),
    (torch.zeros(1, 1, 8, 8), "expected a (H, W) or (1, H, W) mask"),
    (torch.zeros(8, 0), "expected a (H, W) or (1, H, W) mask"),
    ("mask.png", "expected a MASK, got str"),
    (torch.full((8, 8), float("nan")), "contains NaN or infinite values"),
])
def test_single_mask_errors_name_the_input(convert, value, needle):
    with pytest.raises(convert.InputError) as e:
        convert.single_mask(value, "reference_mask")
    assert str(e.value).startswith("reference_mask") and needle in str(e.value)


def test_single_mask_copies_clamps_and_leaves_inference_mode(convert):
    with torch.inference_mode():
        m = torch.full((1, 4, 4), 1.5)
        out = convert.single_mask(m, "mask")
    assert out.shape == (4, 4) and out.max() == 1.0 and not out.is_inference()
    assert m.max() == 1.5  # the cached input is untouched


def test_images_and_latents_of_one_picture(convert):
    assert convert.image_size(torch.zeros(1, 30, 20, 3), "image") == (30, 20)
    with pytest.raises(convert.InputError, match="image: a batch of 2 images"):
        convert.image_size(torch.zeros(2, 8, 8, 3), "image")
    with pytest.raises(convert.InputError, match=r"image: expected an IMAGE \(B, H, W, C\), got \(8, 8\)"):
        convert.image_size(torch.zeros(8, 8), "image")
    with pytest.raises(convert.InputError, match="video latents are not supported"):
        convert.latent_samples({"samples": torch.zeros(1, 4, 2, 8, 8)}, "latent")
    with pytest.raises(convert.InputError, match="NaN or infinity"):
        convert.latent_samples({"samples": torch.full((1, 4, 8, 8), float("inf"))}, "latent")
    with pytest.raises(convert.InputError, match="expected a LATENT"):
        convert.latent_samples(torch.zeros(1, 4, 8, 8), "latent")


def test_named_errors_put_the_node_then_the_input_first(convert):
    @convert.named_errors("DragonDiffusion Drag", {"handles": "points"})
    def execute(error):
        raise error

    with pytest.raises(convert.InputError) as e:
        execute(RegionError("handles[0] = (40, 1) is outside the 32x32 image"))
    assert str(e.value) == "DragonDiffusion Drag: points: handles[0] = (40, 1) is outside the 32x32 image"
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no traceback from inside the core
    with pytest.raises(convert.InputError) as e:
        execute(convert.InputError("DragonDiffusion Drag: image: a batch of 2 images"))
    assert str(e.value) == "DragonDiffusion Drag: image: a batch of 2 images"  # not prefixed twice
    cause = ValueError("math domain error")
    with pytest.raises(convert.InputError) as e:
        execute(cause)
    assert str(e.value) == "DragonDiffusion Drag: math domain error" and e.value.__cause__ is cause  # kept for the log
    with pytest.raises(KeyError):  # anything else is not an input problem: unchanged
        execute(KeyError("x"))


def test_check_frame_names_the_sizes_and_the_fix(convert):
    convert.check_frame((64, 48), (8, 6), 8, "edit: its mask", "the memory's image")
    convert.check_frame((30, 30), (30, 30), 1, "edit: its mask", "the memory's image")
    with pytest.raises(convert.InputError) as e:
        convert.check_frame((64, 64), (32, 32), 1, "edit: its mask", "the memory's image")
    assert str(e.value) == ("edit: its mask is 64x64 pixels, but the memory's image is 32x32 (its latent is 32x32, 1 "
                            "pixel per cell): make the mask on the image that was inverted")
    with pytest.raises(convert.InputError, match="VAE Encode cropped that image to 512x512"):
        convert.check_frame((515, 519), (64, 64), 8, "edit: its image", "the memory's image")
    with pytest.raises(convert.InputError, match="is 512x504 pixels, .* 512x512 .*: use the image that was inverted$"):
        convert.check_frame((504, 512), (64, 64), 8, "edit: its image", "the memory's image")


def test_out_of_memory_is_recognised_and_stays_an_oom_for_comfyui(convert):
    assert convert.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert convert.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert convert.is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not convert.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not convert.is_out_of_memory(ValueError("out of memory"))
    err = convert.OutOfMemory("DragonDiffusion Guided Sampler: out of memory ...")
    # ComfyUI's executor frees its models on torch.cuda.OutOfMemoryError (the same class as torch.OutOfMemoryError)
    assert isinstance(err, torch.cuda.OutOfMemoryError) and isinstance(err, RuntimeError)
