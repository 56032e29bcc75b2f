"""Half-precision weights (fp16, bf16): the energy gradient's loss scaling, and move/drag edits on
tiny random-weight SD1.5- and SDXL-topology diffusers UNets that match the fp32 edit.

ComfyUI loads fp16 weights on GPUs; here the same maths runs on the CPU (torch computes fp16 and
bf16 there, 2-5x slower than fp32). The energies and their gradients are fp32; the UNet's
backward runs in the weights' dtype with the energy gradient scaled into fp16's range
(``dragon_core.sampler.energy_grad``). The ComfyUI backend's half-precision path is
``tests/integration/test_half_precision_comfy.py``.

Tolerances (measured with these models, steps and seeds; docs/performance.md): the half edit's
latent against the fp32 edit's, PSNR over the fp32 latent's range, fp16 55-58 dB and bf16 34-40 dB;
the mean difference as a fraction of the mean change the guidance makes (the fp32 edit against the
same run with energy scale 0), fp16 0.010-0.014 and bf16 0.09-0.13.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dragon_core import energies as en
from dragon_core.ddim import psnr
from dragon_core.edits import Drag, Move
from dragon_core.memory import invert_with_memory
from dragon_core.sampler import edit_image, energy_grad
from dragon_core.settings import default_settings, with_overrides

pytest.importorskip("diffusers")

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# SD1.5: 4 levels, cross-attention on the top three, one transformer block each (channels cut down)
SD15_TINY = dict(sample_size=16, block_out_channels=(32, 64, 64, 64), layers_per_block=2,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
# SDXL: 3 levels, no attention at the top one, several transformer blocks per level (10 -> 3 here for
# time), linear projections. SDXL's pooled/size conditioning goes through ComfyUI: not in this backend.
SDXL_TINY = dict(sample_size=8, block_out_channels=(32, 64, 128), layers_per_block=2,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 3), use_linear_projection=True,
                 cross_attention_dim=32, attention_head_dim=(2, 4, 8), norm_num_groups=32)
# latent side per family: SD1.5's lowest level is then 2x2 (at 8 it is 1x1 with two channels per
# GroupNorm group, a degenerate random-weight case where any rounding flips the output)
FAMILIES = {"sd15": (SD15_TINY, 16), "sdxl": (SDXL_TINY, 8)}
STEPS = 3
# the measured agreement with fp32 (module doc), with a margin: (min PSNR dB, max mean diff / mean effect)
TOLERANCE = {"fp16": (45.0, 0.05), "bf16": (28.0, 0.25)}


# -- energy_grad: loss scaling, in isolation ------------------------------------------------------------------
def _leaves(feats):
    return [f.detach().to(torch.float32, copy=True).requires_grad_(True) for f in feats]


def test_fp16_energy_gradient_is_scaled_out_of_underflow():
    """A gradient of 3e-9 per value: zero through a plain fp16 backward, exact with the scaling."""
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    h = z.half() * 3
    leaves = _leaves([h])
    e = 1e-9 * leaves[0].sum()
    dz = energy_grad(e, [h], leaves, z, retain=True)
    assert dz.dtype == torch.float32 and torch.allclose(dz, torch.full_like(z, 3e-9), rtol=1e-3)
    (naive,) = torch.autograd.grad(1e-9 * h.float().sum(), z)  # what the sampler did before
    assert naive.abs().max() == 0


def test_fp16_overflow_in_the_backward_is_retried_at_a_smaller_scale():
    z = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    h = (z.half() * 2.0**-10) * 2.0**17  # the backward multiplies by 2^17: inf at scale 1 in fp16
    leaves = _leaves([h])
    dz = energy_grad(leaves[0].sum(), [h], leaves, z, retain=False)
    assert torch.equal(dz, torch.full_like(z, 2.0**7))


def test_a_gradient_that_stays_infinite_is_named():
    z = torch.rand(1, 4, 8, 8).add(0.5).requires_grad_(True)
    h = z.half() * torch.tensor(float("inf"), dtype=torch.float16)
    leaves = _leaves([h])
    with pytest.raises(FloatingPointError, match="float16.*bf16 or fp32"):
        energy_grad(leaves[0].sum(), [h], leaves, z, retain=False)


def test_fp32_energy_gradient_is_plain_autograd():
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    feats = [z * 3 + z**2, z.sin()]
    leaves = _leaves(feats)
    dz = energy_grad((leaves[0] * leaves[1]).mean() + leaves[1].pow(3).sum(), feats, leaves, z, retain=True)
    (want,) = torch.autograd.grad((feats[0] * feats[1]).mean() + feats[1].pow(3).sum(), z)
    assert torch.equal(dz, want)


@pytest.mark.parametrize("dtype", list(HALF))
def test_energies_of_half_features_are_fp32(dtype):
    """Large half-precision features (channel sums of squares far beyond fp16's 65504): the energies
    are the fp32 energies of the same values, in fp32."""
    g = torch.Generator().manual_seed(3)
    cur = [(torch.randn(320, 8, 8, generator=g) * 300).to(HALF[dtype]) for _ in range(2)]
    ref = [(c.float() + torch.randn(320, 8, 8, generator=g) * 30).to(HALF[dtype]) for c in cur]
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2:5, 2:5] = True
    patches = torch.tensor([[[3, 3], [3, 4]]])

    def both(feats, refs):
        return (en.move_energy(feats, refs, refs, m.roll(1, 1), m, None, 4.0, 6.0, 0.2, 0.8)
                + en.drag_energy(feats, refs, patches, patches + 1, ~m, 4.0, 6.0, 0.2)
                + en.appearance_energy(feats, refs, refs, m, m, 3.5, 5.0))

    got = both(cur, ref)
    want = both([c.float() for c in cur], [r.float() for r in ref])
    assert all(e.dtype == torch.float32 and torch.isfinite(e) for e in got)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


# -- whole edits on tiny UNets -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unets():
    from diffusers import UNet2DConditionModel

    out = {}
    for family, (cfg, _) in FAMILIES.items():
        torch.manual_seed(0)
        out[family] = UNet2DConditionModel(**cfg).eval()
    return out


def _inputs(lat: int):
    g = torch.Generator().manual_seed(2)
    z0 = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 4, generator=g), size=(lat, lat), mode="bilinear")
    return z0, torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)


def edit_for(kind: str, lat: int):
    """A square moved right by 1/8 of the side, or one point dragged by (8, 4) pixels inside the
    square grown by 4 pixels, on a ``lat``-cell latent's image."""
    px = lat * 8
    mask = torch.zeros(px, px)
    a, b = px * 5 // 16, px * 10 // 16
    mask[a:b, a - px // 16:b - px // 16] = 1
    if kind == "move":
        return Move(mask, px / 8, 0.0)
    c = px / 2
    region = (torch.nn.functional.max_pool2d(mask[None], 9, 1, 4)[0] > 0).float()
    return Drag(torch.tensor([[c - 4, c - 4]]), torch.tensor([[c + 4, c]]), (px, px), region)


def guided_settings(kind: str, **kw):
    """The paper's settings, every step guided, cross-branch attention from step 1."""
    return default_settings(kind, attention_start=1, guide_until=1.0, guide_every_until=1.0, **kw)


def run_edit_in(unet, family: str, kind: str, dtype: torch.dtype, energy_scale: float | None = None,
                weight_factor: float = 1.0) -> torch.Tensor:
    """Invert and edit with ``unet``'s weights in ``dtype`` (a copy: the fixture stays fp32); the latent.
    ``weight_factor`` multiplies every energy weight and divides the energy scale (the same guidance)."""
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    lat = FAMILIES[family][1]
    z0, cond, uncond = _inputs(lat)
    settings = guided_settings(kind, energy_scale=energy_scale)
    if weight_factor != 1.0:
        s = settings
        settings = with_overrides(s, w_edit=s.w_edit * weight_factor, w_content=s.w_content * weight_factor,
                                  w_contrast=s.w_contrast * weight_factor, w_inpaint=s.w_inpaint * weight_factor,
                                  energy_scale=s.energy_scale / weight_factor)
    with DiffusersBackend(copy.deepcopy(unet), scaled_linear_alphas_cumprod(), "cpu", dtype) as backend:
        memory = invert_with_memory(backend, z0, cond, steps=STEPS, spacing="leading")
        return edit_image(backend, memory, edit_for(kind, lat), cond, uncond, settings).latent


@pytest.fixture(scope="module")
def fp32_edits(unets):
    """{(family, kind): (the fp32 edit, the same run without the energy)}."""
    return {(f, k): (run_edit_in(unets[f], f, k, torch.float32), run_edit_in(unets[f], f, k, torch.float32, 0.0))
            for f in FAMILIES for k in ("move", "drag")}


def agreement(half: torch.Tensor, full: torch.Tensor, plain: torch.Tensor) -> tuple[float, float]:
    """(PSNR of ``half`` vs ``full`` over ``full``'s range, mean |difference| / mean |full - plain|)."""
    rng = float(full.max() - full.min())
    return psnr(half, full, rng), float((half - full).abs().mean() / (full - plain).abs().mean())


@pytest.mark.parametrize("kind", ["move", "drag"])
@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_half_precision_edit_matches_fp32(unets, fp32_edits, family, dtype, kind):
    half = run_edit_in(unets[family], family, kind, HALF[dtype])
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    full, plain = fp32_edits[(family, kind)]
    db, frac = agreement(half, full, plain)
    min_db, max_frac = TOLERANCE[dtype]
    assert db >= min_db and frac <= max_frac, (family, dtype, kind, db, frac)


def test_fp16_edit_does_not_depend_on_the_energys_magnitude(unets, fp32_edits):
    """Energy weights 1e-6 times smaller and the scale 1e6 times larger: the same guidance in exact
    maths. In fp16 the small energy's feature gradients flush to zero without the scaling (measured
    before it: the difference was 1.0x the guidance's whole effect; with it 0.003x)."""
    normal = run_edit_in(unets["sdxl"], "sdxl", "move", torch.float16)
    tiny = run_edit_in(unets["sdxl"], "sdxl", "move", torch.float16, weight_factor=1e-6)
    plain = fp32_edits[("sdxl", "move")][1]
    assert (tiny - normal).abs().mean() < 0.02 * (normal - plain).abs().mean()
