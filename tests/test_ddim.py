"""Schedule, DDIM sampling and inversion, checked against diffusers' schedulers."""

import math

import pytest
import torch

from dragon_core import ddim
from dragon_core.schedule import (
    alpha_pairs,
    alphas_cumprod_from_config,
    ddim_timesteps,
    final_alpha,
    scaled_linear_alphas_cumprod,
)
from dragon_demo.shapes_model import SCHEDULE
from shapes_prompts import prompt_pair

diffusers = pytest.importorskip("diffusers")


def _scheduler(cls=diffusers.DDIMScheduler, **kw):
    return cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
               set_alpha_to_one=False, steps_offset=1, **kw)


def test_scaled_linear_matches_diffusers():
    ours = scaled_linear_alphas_cumprod()
    theirs = _scheduler().alphas_cumprod.double()
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.equal(alphas_cumprod_from_config(SCHEDULE), ours)
    with pytest.raises(ValueError, match="scaled_linear"):
        alphas_cumprod_from_config({"beta_schedule": "cosine"})


@pytest.mark.parametrize("n", [1, 10, 20, 50, 100, 999])
def test_leading_timesteps_match_diffusers(n):
    s = _scheduler()
    s.set_timesteps(n)
    assert ddim_timesteps(n).tolist() == s.timesteps.tolist()


def test_comfy_uniform_grid_and_final_alpha():
    ab = scaled_linear_alphas_cumprod()
    # ComfyUI's ddim_uniform takes sigmas at indices 1, 1 + 1000//n, ... and ends at sigma 0
    assert ddim_timesteps(50, spacing="comfy_uniform").tolist() == list(range(981, 0, -20))
    assert final_alpha(ab, "comfy_uniform") == 1.0
    assert final_alpha(ab, "leading") == pytest.approx(float(ab[0]))
    pairs = alpha_pairs(ab, ddim_timesteps(10), "leading")
    assert pairs[-1][1] == pytest.approx(float(ab[0])) and pairs[0][0] == pytest.approx(float(ab[901]))


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, "10"])
def test_bad_step_counts_are_refused(bad):
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(bad)


def test_unknown_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(10, spacing="trailing")


def _ctx():
    return prompt_pair("gradient, red disc")


def test_cfg_sampling_matches_diffusers_ddim(random_backend):
    cond, uncond = _ctx()
    z_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = ddim.sample(random_backend, z_T, cond, uncond, steps=10, cfg=3.0)
    s = _scheduler()
    s.set_timesteps(10)
    z = z_T.clone()
    unet = random_backend.unet
    with torch.no_grad():
        for t in s.timesteps:
            c = unet(z, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
            u = unet(z, t, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
            z = s.step(u + 3.0 * (c - u), t, z).prev_sample
    assert (ours - z).abs().max() < 1e-4


@pytest.mark.parametrize("spacing,alpha_one", [("leading", False), ("comfy_uniform", True)])
def test_inversion_matches_diffusers_inverse_scheduler(random_backend, spacing, alpha_one):
    cond, _ = _ctx()
    z0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    traj = ddim.invert(random_backend, z0, cond, steps=10, spacing=spacing)
    assert traj.latents.shape == (11, 1, 3, 32, 32)
    assert torch.equal(traj.z_0, z0)
    inv = diffusers.DDIMInverseScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         clip_sample=False, set_alpha_to_one=alpha_one, steps_offset=1)
    inv.set_timesteps(10)
    z = z0.clone()
    expected = [z]
    with torch.no_grad():
        for t in inv.timesteps:
            e = random_backend.unet(z, t, encoder_hidden_states=cond).sample
            z = inv.step(e, t, z).prev_sample
            expected.append(z)
    assert inv.timesteps.tolist() == traj.timesteps.flip(0).tolist()
    for got, want in zip(traj.latents.flip(0), expected):
        assert (got - want).abs().max() < 1e-4


def test_sampling_is_deterministic_and_eta_is_seeded(random_backend):
    cond, uncond = _ctx()
    z_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    a = ddim.sample(random_backend, z_T, cond, uncond, steps=5, cfg=2.0)
    b = ddim.sample(random_backend, z_T, cond, uncond, steps=5, cfg=2.0)
    assert torch.equal(a, b)
    e1 = ddim.sample(random_backend, z_T, cond, None, steps=5, eta=1.0, generator=torch.Generator().manual_seed(7))
    e2 = ddim.sample(random_backend, z_T, cond, None, steps=5, eta=1.0, generator=torch.Generator().manual_seed(7))
    e3 = ddim.sample(random_backend, z_T, cond, None, steps=5, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(e1, e2) and not torch.allclose(e1, e3)


def test_ddim_step_inverts_its_inversion_step():
    z = torch.randn(1, 3, 8, 8)
    eps = torch.randn(1, 3, 8, 8)
    up = ddim.ddim_inversion_step(z, eps, 0.9, 0.3)
    assert torch.allclose(ddim.ddim_step(up, eps, 0.3, 0.9), z, atol=1e-5)
    with pytest.raises(ValueError, match="noise"):
        ddim.ddim_step(z, eps, 0.3, 0.9, eta=0.5)


def test_psnr():
    a = torch.zeros(3, 4, 4)
    assert ddim.psnr(a, a) == math.inf
    assert ddim.psnr(a, a + 0.1) == pytest.approx(20.0)


def test_callbacks_see_every_step(random_backend):
    cond, _ = _ctx()
    seen = []
    traj = ddim.invert(random_backend, torch.zeros(1, 3, 32, 32), cond, steps=4, callback=lambda s, z: seen.append(s))
    ddim.sample(random_backend, traj.z_T, cond, steps=4, callback=lambda s, z: seen.append(s))
    assert seen == [0, 1, 2, 3, 0, 1, 2, 3]
