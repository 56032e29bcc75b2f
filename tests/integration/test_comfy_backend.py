"""ComfyBackend (nodes/comfy_backend.py) against the diffusers reference backend,
on the bundled shapes model loaded as a real ComfyUI MODEL (nodes/shapes_comfy.py).

Every check runs the ComfyUI side inside ``torch.inference_mode()``, as ComfyUI's
executor runs nodes, with the model loaded there too, so its weights are
inference tensors as with ComfyUI's stock loaders. The diffusers reference runs
in plain PyTorch.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q tests/integration``.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from autograd_bytes import saved_bytes  # noqa: E402
from dragon_core.backend import Backend, GradUntil, HookList, StopAfter, StopForward, UNetHooks  # noqa: E402

PROMPT = "flat, red square, blue disc"
TIMESTEPS = (1, 250, 500, 999)
EPS_TOL = 1e-4
GRAD_RTOL = 1e-4


# ----------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    """The diffusers backend on the bundled model and its text encoder (plain PyTorch)."""
    from dragon_core.diffusers_backend import load_shapes_backend

    backend, encoder = load_shapes_backend()
    yield backend, encoder
    backend.close()


@pytest.fixture(scope="module")
def conditioning(dragon_nodes):
    with torch.inference_mode():
        return dragon_nodes.shapes_comfy.encode_prompt(PROMPT), dragon_nodes.shapes_comfy.encode_prompt("")


@pytest.fixture(scope="module")
def backend(dragon_nodes, user_model):
    with torch.inference_mode():
        b = dragon_nodes.comfy_backend.ComfyBackend(user_model)
    yield b
    b.close()


def _z(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class Recorder(UNetHooks):
    """Copies of every self-attention input and decoder feature, by call."""

    def __init__(self, stop_level: int | None = None) -> None:
        self.n, self.h, self.stop_level = {}, {}, stop_level

    def self_attention(self, call, n):
        self.n[call] = n.detach().clone()

    def decoder_feature(self, call, h):
        self.h[call] = h.detach().clone()
        if call.level == self.stop_level:
            raise StopForward


class MixKV(UNetHooks):
    """Decoder K/V inputs = n plus a shuffled copy (different for K and V)."""

    def self_attention(self, call, n):
        if call.layer.kind != "output":
            return None
        return torch.cat([n, 0.5 * n.flip(1)], 1), torch.cat([n, n.roll(5, dims=1)], 1)


class FeatureLoss(UNetHooks):
    """A loss on a decoder feature, computed inside the forward (where autograd is on)."""

    def __init__(self, level: int, keep: bool = False) -> None:
        self.level, self.keep, self.loss, self.h = level, keep, None, None

    def decoder_feature(self, call, h):
        if call.level == self.level:
            self.loss = (h.float() * torch.linspace(-1, 1, h.shape[1], device=h.device)[:, None, None]).square().mean()
            if self.keep:
                self.h = h


# ----------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------
def test_backend_structure_matches_diffusers(backend, reference):
    ref, _ = reference
    assert isinstance(backend, Backend)
    assert backend.decoder_self_attention_layers() == ref.decoder_self_attention_layers()
    assert backend.self_attention_layers() == ref.self_attention_layers()
    assert backend.decoder_levels() == ref.decoder_levels() == 4  # the last level is counted, not reported
    assert backend.feature_block_ids() == {0: 2, 1: 4, 2: 6}
    assert backend.alphas_cumprod.dtype == torch.float64 and backend.alphas_cumprod.device.type == "cpu"
    assert torch.allclose(backend.alphas_cumprod, ref.alphas_cumprod, rtol=1e-6, atol=0)


def test_structure_is_read_from_the_model_sd15_topology(comfy, dragon_nodes):
    """Layer keys and feature taps come from the UNet's structure: an SD1.5-topology
    UNet (2 res blocks per level, no attention at the lowest level) gives SD1.5's ids."""
    cfg = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1][::-1], "channel_mult": [1, 2, 2, 2],
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 32,
        "use_temporal_resblock": False, "use_temporal_attention": False,
    }
    with torch.inference_mode():
        model = comfy.supported_models.SD15(cfg).get_model({})
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                   offload_device=torch.device("cpu"))
        with dragon_nodes.comfy_backend.ComfyBackend(patcher) as b:
            keys = [(k.kind, k.block) for k in b.self_attention_layers()]
            assert keys == [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)] + \
                [("output", i) for i in range(3, 12)]
            assert b.feature_block_ids() == {0: 3, 1: 6, 2: 9}
            assert b.decoder_levels() == 4


# ----------------------------------------------------------------------------------
# eps
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", (1, 2))
@pytest.mark.parametrize("branch", ("cond", "uncond"))
def test_eps_matches_diffusers(backend, reference, conditioning, batch, branch):
    ref, encoder = reference
    cond = conditioning[0] if branch == "cond" else conditioning[1]
    ctx = encoder.encode(PROMPT if branch == "cond" else "")
    for t in TIMESTEPS:
        z = _z(batch, t)
        with torch.inference_mode():
            eps = backend.predict_eps(z, t, cond, step=3, branch=branch)
        eps_ref = ref.predict_eps(z, t, ctx, step=3, branch=branch)
        assert eps.shape == z.shape and eps.dtype == z.dtype
        assert eps_ref.abs().max() > 0.1
        assert (eps - eps_ref).abs().max().item() < EPS_TOL, t


def test_fp16_model_with_fp32_core(dragon_nodes, reference, conditioning):
    """fp16 weights (ComfyUI casts them for compute on the CPU): the core's fp32 latents work,
    eps comes back in fp32, gradients flow."""
    ref, encoder = reference
    z = _z(1, 21)
    with torch.inference_mode():
        patcher = dragon_nodes.shapes_comfy.load_shapes_model(dtype=torch.float16)
        assert patcher.model_dtype() == torch.float16
        with dragon_nodes.comfy_backend.ComfyBackend(patcher) as b:
            eps = b.predict_eps(z, 400, conditioning[0], step=0)
            zg = z.clone().requires_grad_(True)
            hook = FeatureLoss(1)
            b.predict_eps(zg, 400, conditioning[0], step=0, hooks=hook, grad=True)
            (g,) = torch.autograd.grad(hook.loss, zg)
    assert eps.dtype == torch.float32
    assert (eps - ref.predict_eps(z, 400, encoder.encode(PROMPT), step=0)).abs().max().item() < EPS_TOL
    assert g.abs().max() > 0


def test_any_prediction_type_via_denoised(dragon_nodes, reference, conditioning, tmp_path):
    """The same weights declared v-prediction: eps = sqrt(abar) v + sqrt(1 - abar) z_t from the raw output."""
    import json
    import math

    from dragon_demo.shapes_model import ASSET_DIR

    cfg = json.loads((ASSET_DIR / "config.json").read_text())
    cfg["schedule"]["prediction_type"] = "v_prediction"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "unet.safetensors").symlink_to(ASSET_DIR / "unet.safetensors")
    ref, encoder = reference
    z = _z(2, 8)
    with torch.inference_mode():
        patcher = dragon_nodes.shapes_comfy.load_shapes_model(tmp_path)
        with dragon_nodes.comfy_backend.ComfyBackend(patcher) as b:
            eps = {t: b.predict_eps(z, t, conditioning[0], step=0) for t in (250, 500, 999)}
    for t, e in eps.items():
        v = ref.predict_eps(z, t, encoder.encode(PROMPT), step=0)  # the raw UNet output
        ab = float(ref.alphas_cumprod[t])
        assert (e - (math.sqrt(ab) * v + math.sqrt(1 - ab) * z)).abs().max().item() < EPS_TOL, t


# ----------------------------------------------------------------------------------
# hooks
# ----------------------------------------------------------------------------------
def test_hooks_see_the_same_layers_and_tensors(backend, reference, conditioning):
    ref, encoder = reference
    z = _z(2, 5)
    rc, rd = Recorder(), Recorder()
    with torch.inference_mode():
        backend.predict_eps(z, 600, conditioning[1], step=7, branch="uncond", hooks=rc)
    ref.predict_eps(z, 600, encoder.encode(""), step=7, branch="uncond", hooks=rd)
    assert set(rc.n) == set(rd.n)  # same AttnCalls: layer keys, step, branch
    assert {(c.step, c.branch) for c in rc.n} == {(7, "uncond")}
    for call, n in rd.n.items():
        assert rc.n[call].shape == n.shape and (rc.n[call] - n).abs().max().item() < 1e-4, call
    assert {c.level for c in rc.h} == {0, 1, 2} and {c.level for c in rd.h} == {0, 1, 2, 3}
    for call, h in rc.h.items():
        assert h.shape == rd.h[call].shape and (h - rd.h[call]).abs().max().item() < 1e-4, call


def test_kv_inputs_from_a_hook_change_the_output_identically(backend, reference, conditioning):
    ref, encoder = reference
    z = _z(2, 9)
    with torch.inference_mode():
        plain = backend.predict_eps(z, 500, conditioning[0], step=0)
        mixed = backend.predict_eps(z, 500, conditioning[0], step=0, hooks=MixKV())
    mixed_ref = ref.predict_eps(z, 500, encoder.encode(PROMPT), step=0, hooks=MixKV())
    assert (mixed - plain).abs().max() > 1e-2
    assert (mixed - mixed_ref).abs().max().item() < EPS_TOL


def test_stop_forward_returns_none_and_skips_the_rest(backend, reference, conditioning):
    ref, encoder = reference
    z = _z(1, 2)
    rc, rd = Recorder(stop_level=1), Recorder(stop_level=1)
    with torch.inference_mode():
        assert backend.predict_eps(z, 300, conditioning[0], step=1, hooks=rc) is None
        assert backend.predict_eps(z, 300, conditioning[0], step=1) is not None  # nothing left behind
    assert ref.predict_eps(z, 300, encoder.encode(PROMPT), step=1, hooks=rd) is None
    assert set(rc.n) == set(rd.n) and set(rc.h) == set(rd.h)
    assert max(c.layer.block for c in rc.n if c.layer.kind == "output") == 3  # output blocks 4, 5 never ran


# ----------------------------------------------------------------------------------
# gradients under inference mode
# ----------------------------------------------------------------------------------
def _reference_grad(ref, encoder, z, level):
    zg = z.clone().requires_grad_(True)
    hook = FeatureLoss(level)
    ref.predict_eps(zg, 500, encoder.encode(PROMPT), step=0, hooks=hook, grad=True)
    return torch.autograd.grad(hook.loss, zg)[0]


def test_naive_gradients_fail_on_these_weights(dragon_nodes, conditioning):
    """Guard: with inference-tensor weights from the loader, a plain gradient pass fails (what the backend fixes).
    A fresh model: the shared one may carry a backend's gradient wrappers while that backend is open."""
    with torch.inference_mode():
        model = dragon_nodes.shapes_comfy.load_shapes_model().model
        with torch.inference_mode(False), torch.enable_grad():
            x = _z(1, 0).requires_grad_(True)
            sigma = model.model_sampling.sigmas[500].reshape(1).clone()
            with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
                out = model.apply_model(x, sigma, c_crossattn=conditioning[0][0][0][None].clone())
                out.square().mean().backward()


@pytest.mark.parametrize("level", (1, 2))
def test_gradient_to_an_inference_tensor_latent_inside_inference_mode(backend, reference, conditioning, level):
    """The hardest case: caller, latent, conditioning and weights all in inference mode; the
    loss is taken inside the forward (a hook), the gradient asked for in inference mode."""
    ref, encoder = reference
    z = _z(1, 13)
    with torch.inference_mode():
        zi = z.clone().requires_grad_(True)
        assert zi.is_inference()
        hook = FeatureLoss(level)
        eps = backend.predict_eps(zi, 500, conditioning[0], step=0, hooks=hook, grad=True)
        (g,) = torch.autograd.grad(hook.loss, zi)
    g_ref = _reference_grad(ref, encoder, z, level)
    assert eps.requires_grad and g_ref.abs().max() > 0
    assert (g - g_ref).abs().max().item() < GRAD_RTOL * g_ref.abs().max().item()


def test_gradient_when_the_caller_leaves_inference_mode(backend, reference, conditioning):
    """What the editing sampler does: a normal leaf, the loss computed after predict_eps returns."""
    ref, encoder = reference
    z = _z(1, 17)
    with torch.inference_mode():
        with torch.inference_mode(False):
            zg = z.clone().requires_grad_(True)
            hook = FeatureLoss(2, keep=True)
            eps = backend.predict_eps(zg, 500, conditioning[0], step=0, hooks=hook, grad=True)
            loss = (hook.h * torch.linspace(-1, 1, hook.h.shape[1])[:, None, None]).square().mean()
            (g,) = torch.autograd.grad(loss, zg)
    g_ref = _reference_grad(ref, encoder, z, 2)
    assert not eps.is_inference()
    assert (g - g_ref).abs().max().item() < GRAD_RTOL * g_ref.abs().max().item()


def test_grad_until_saves_what_a_stopped_pass_saves_and_returns_eps(backend, conditioning):
    """The guided pass's GradUntil under ComfyUI's executor: eps without a graph, equal to a full
    gradient pass's; the feature's gradient to the latent unchanged; autograd saves exactly what a
    pass stopped at that level saves; the caller's inference and grad modes are back afterwards."""
    z, out = _z(1, 23), {}
    with torch.inference_mode():
        for name, extra in (("full", None), ("until", GradUntil(2)), ("stop", StopAfter(2))):
            with torch.inference_mode(False):
                zg, hook, eps = z.clone().requires_grad_(True), FeatureLoss(2), []
                nbytes = saved_bytes(lambda: eps.append(backend.predict_eps(
                    zg, 500, conditioning[0], step=0, hooks=HookList(hook, extra), grad=True)))
                (g,) = torch.autograd.grad(hook.loss, zg)
            out[name] = (eps[0], nbytes, g)
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    (full, full_b, g_full), (until, until_b, g_until), (stop, stop_b, _) = out["full"], out["until"], out["stop"]
    assert stop is None and full.requires_grad and not until.requires_grad
    assert torch.equal(until, full.detach()) and torch.equal(g_until, g_full)
    assert until_b == stop_b < 0.9 * full_b


def test_cfg_batch_reads_each_rows_branch_from_comfyui(backend, conditioning):
    """predict_eps_cfg goes through calc_cond_batch as one batch (memory allows on the CPU): eps
    equal to two passes, hooks called once per layer with each row's branch, in ComfyUI's row order."""
    cond, uncond = conditioning
    z, rec = _z(1, 31), Recorder()
    eps_c, eps_u = backend.predict_eps_cfg(z, 500, cond, uncond, step=2, hooks=rec)
    assert (eps_c - backend.predict_eps(z, 500, cond, step=2)).abs().max() < 1e-5
    assert (eps_u - backend.predict_eps(z, 500, uncond, step=2, branch="uncond")).abs().max() < 1e-5
    branches = {call.branch for call in rec.n}
    assert len(branches) == 1 and sorted(next(iter(branches))) == ["cond", "uncond"]
    assert len(rec.n) == len(backend.self_attention_layers())


def test_gradient_pass_keeps_no_copy_of_the_weights(backend, conditioning):
    """Autograd saves the model's own weight storage for backward (zero-copy aliases), not
    copies: every weight a Linear/Conv saved shares a parameter's data pointer."""
    params = {p.data_ptr(): p for p in backend.patcher.model.parameters() if p.ndim >= 2}
    saved = []

    def pack(t):
        saved.append((t.data_ptr(), tuple(t.shape)))
        return t

    with torch.inference_mode():
        with torch.inference_mode(False), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            zg = _z(1, 5).requires_grad_(True)
            hook = FeatureLoss(2, keep=True)
            backend.predict_eps(zg, 500, conditioning[0], step=0, hooks=hook, grad=True)
        weights_shapes = {tuple(p.shape) for p in params.values()}
        weight_like = [(ptr, shape) for ptr, shape in saved if shape in weights_shapes and len(shape) >= 2]
        assert len(weight_like) > 20
        shared = [ptr in params for ptr, _ in weight_like]
        assert all(shared), f"only {sum(shared)} of {len(shared)} saved weights share the model's storage"
        # and after the pass the modules hold the original parameters again
        assert all(p.is_inference() for p in backend.patcher.model.parameters())


# ----------------------------------------------------------------------------------
# the user's MODEL and the caller's tensors are left alone
# ----------------------------------------------------------------------------------
def _sample(patcher, positive, negative):
    """A 4-step KSampler run (euler) of the patcher, as the KSampler node does it."""
    import comfy.sample

    latent = torch.zeros(1, 3, 32, 32)
    noise = comfy.sample.prepare_noise(latent, 7)
    return comfy.sample.sample(patcher, noise, 4, 2.0, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=7)


def test_user_patcher_and_inputs_are_unchanged(comfy, dragon_nodes, user_model, conditioning):
    cond, uncond = conditioning
    with torch.inference_mode():
        options_before = copy.deepcopy(user_model.model_options)
        uuid_before, wrappers_before = user_model.patches_uuid, dict(user_model.weight_wrapper_patches)
        weights_before = {k: v.clone() for k, v in user_model.model.state_dict().items()}
        samples_before = _sample(user_model, cond, uncond)
        params_before = {k: (p, p.data_ptr()) for k, p in user_model.model.named_parameters()}
        cond_before, z = cond[0][0].clone(), _z(1, 4)
        z_before = z.clone()

        b = dragon_nodes.comfy_backend.ComfyBackend(user_model)
        b.predict_eps(z, 700, cond, step=0, hooks=MixKV())
        zg = z.clone().requires_grad_(True)
        hook = FeatureLoss(1)
        b.predict_eps(zg, 700, cond, step=0, hooks=hook, grad=True)
        torch.autograd.grad(hook.loss, zg)
        # the user's model samples identically while the backend is alive, and the backend still works after
        assert torch.equal(_sample(user_model, cond, uncond), samples_before)
        eps_again = b.predict_eps(z, 700, cond, step=0, hooks=MixKV())
        assert eps_again is not None and torch.isfinite(eps_again).all()
        b.close()

        assert torch.equal(z, z_before) and torch.equal(cond[0][0], cond_before) and cond[0][1] == {}
        assert user_model.model_options == options_before
        assert "patches" not in user_model.model_options["transformer_options"]
        assert user_model.patches_uuid == uuid_before and user_model.weight_wrapper_patches == wrappers_before
        # the very same parameter objects on the same storage (the gradient pass swapped aliases in and back)
        assert all(p is params_before[k][0] and p.data_ptr() == params_before[k][1]
                   for k, p in user_model.model.named_parameters())
        after = user_model.model.state_dict()
        assert set(after) == set(weights_before)
        assert all(torch.equal(after[k], v) for k, v in weights_before.items())
        assert all(not m.__dict__.get("weight_function") for m in user_model.model.modules())
        assert torch.equal(_sample(user_model, cond, uncond), samples_before)


def test_conditioning_it_cannot_honour_is_refused(backend, conditioning):
    cond = conditioning[0]
    with torch.inference_mode():
        with pytest.raises(ValueError, match="one conditioning entry"):
            backend.predict_eps(_z(1, 0), 500, cond + cond, step=0)
        with pytest.raises(ValueError, match="area"):
            backend.predict_eps(_z(1, 0), 500, [[cond[0][0], {"area": (16, 16, 0, 0)}]], step=0)
        with pytest.raises(ValueError, match="timestep range"):
            backend.predict_eps(_z(1, 0), 500, [[cond[0][0], {"start_percent": 0.5}]], step=0)
        with pytest.raises(TypeError, match="CONDITIONING"):
            backend.predict_eps(_z(1, 0), 500, "flat, red square", step=0)


# ----------------------------------------------------------------------------------
# end to end: inversion with memory + a guided Move edit
# ----------------------------------------------------------------------------------
STEPS = 10


def _move_case():
    from dragon_lab.bench import make_case
    from dragon_core.edits import Move
    from dragon_core.settings import default_settings
    from dragon_core.images import array_to_tensor
    from dragon_demo.shapes_model import EDIT_DEFAULTS

    case = make_case("move", 0).edit_case
    mask = torch.from_numpy(case.scene.masks()[case.index].astype("float32"))
    return (case, array_to_tensor(case.scene.render()), Move(mask, case.dx, case.dy, case.scale),
            default_settings("move", EDIT_DEFAULTS))


def _edit(backend, image, edit, settings, cond, uncond):
    from dragon_core.planning import plan_edit
    from dragon_core.sampler import run_edit
    from dragon_core.memory import invert_with_memory

    from dragon_lab.instrument import InstrumentedBackend

    memory = invert_with_memory(backend, image, cond, steps=STEPS, spacing="comfy_uniform")
    counted = InstrumentedBackend(backend, max(memory.policy.feature_levels))  # counts the passes it runs
    # A node must plan and sample outside inference mode: run_edit takes gradients itself
    # (see test_run_edit_inside_inference_mode_keeps_its_guidance).
    with torch.inference_mode(False):
        result = run_edit(counted, memory, plan_edit(edit, memory, settings), cond, uncond, settings)
    result.stats.update(counted.counts)
    return memory, result


@pytest.fixture(scope="module")
def reference_edit(reference):
    ref, encoder = reference
    case, image, edit, settings = _move_case()
    return _edit(ref, image, edit, settings, encoder.encode(case.scene.prompt()), encoder.encode(""))


def test_move_edit_matches_diffusers(dragon_nodes, user_model, reference_edit):
    case, image, edit, settings = _move_case()
    sc = dragon_nodes.shapes_comfy
    with torch.inference_mode():
        cond, uncond = sc.encode_prompt(case.scene.prompt()), sc.encode_prompt("")
        with dragon_nodes.comfy_backend.ComfyBackend(user_model) as b:
            memory, result = _edit(b, image, edit, settings, cond, uncond)
    ref_memory, ref_result = reference_edit
    assert result.stats["guided_steps"] > 0 and result.stats["forward_grad"] == ref_result.stats["forward_grad"]
    assert set(memory.kv) == set(ref_memory.kv) and set(memory.features) == set(ref_memory.features)
    traj_diff = (memory.trajectory.latents - ref_memory.trajectory.latents).abs().max().item()
    edit_diff = (result.latent - ref_result.latent).abs().max().item()
    change = (ref_result.latent - image).abs().max().item()
    print(f"\nmove edit, {STEPS} steps: trajectory max diff {traj_diff:.2e}, edited image max diff {edit_diff:.2e} "
          f"(the edit changes pixels by up to {change:.2f})")
    assert change > 0.5  # the edit did something, so the comparison means something
    assert traj_diff < 1e-3
    assert edit_diff < 1e-3


def test_run_edit_inside_inference_mode_keeps_its_guidance(dragon_nodes, user_model, reference_edit):
    from dragon_core.planning import plan_edit
    from dragon_core.sampler import run_edit

    case, image, edit, settings = _move_case()
    ref_memory, ref_result = reference_edit
    sc = dragon_nodes.shapes_comfy
    with torch.inference_mode():
        cond, uncond = sc.encode_prompt(case.scene.prompt()), sc.encode_prompt("")
        with dragon_nodes.comfy_backend.ComfyBackend(user_model) as b:
            from dragon_core.memory import invert_with_memory

            memory = invert_with_memory(b, image, cond, steps=STEPS, spacing="comfy_uniform")
            result = run_edit(b, memory, plan_edit(edit, memory, settings), cond, uncond, settings)
    assert (result.latent - ref_result.latent).abs().max().item() < 1e-3
