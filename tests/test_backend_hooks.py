"""The diffusers backend's hooks: explicit keys, K/V injection, feature taps, gradients."""

from collections import Counter

import pytest
import torch

from dragon_core.backend import (AttnCall, Backend, FeatureCall, GradUntil, HookList, LayerKey, StopAfter, StopForward,
                                  UNetHooks)
from autograd_bytes import saved_bytes
from shapes_prompts import prompt_pair

pytest.importorskip("diffusers")


def _ctx():
    return prompt_pair("flat, green square")[0]


def _z(seed: int, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).requires_grad_(requires_grad)


class Recorder(UNetHooks):
    def __init__(self):
        self.attn: list[tuple[AttnCall, tuple]] = []
        self.feat: dict[FeatureCall, torch.Tensor] = {}

    def self_attention(self, call, n):
        self.attn.append((call, tuple(n.shape)))
        return None

    def decoder_feature(self, call, h):
        self.feat[call] = h


def test_backend_satisfies_the_protocol(random_backend):
    assert isinstance(random_backend, Backend)
    assert random_backend.alphas_cumprod.dtype == torch.float64


def test_layer_keys_follow_comfyui_block_ids(random_backend):
    # SD1.5-like topology with one res block per level: decoder attention at
    # output blocks 2..5 (levels 2 and 1), encoder at input blocks 3 and 5.
    assert random_backend.decoder_self_attention_layers() == [LayerKey("output", b, 0) for b in (2, 3, 4, 5)]
    assert [str(k) for k in random_backend.self_attention_layers()] == [
        "input.3.0", "input.5.0", "middle.0.0", "output.2.0", "output.3.0", "output.4.0", "output.5.0"]
    assert random_backend.decoder_levels() == 4


def test_hooks_get_explicit_step_branch_and_layer(random_backend):
    rec = Recorder()
    z = torch.randn(2, 3, 32, 32)
    random_backend.predict_eps(z, 501, _ctx(), step=7, branch="uncond", hooks=rec)
    layers = Counter(c.layer for c, _ in rec.attn)
    assert set(layers) == set(random_backend.self_attention_layers()) and set(layers.values()) == {1}
    assert {(c.step, c.branch) for c, _ in rec.attn} == {(7, "uncond")}
    tokens = {str(c.layer): s for c, s in rec.attn}
    assert tokens["output.2.0"] == (2, 64, 64) and tokens["output.4.0"] == (2, 256, 64)
    shapes = {c.level: tuple(h.shape) for c, h in rec.feat.items()}
    assert shapes == {0: (2, 64, 8, 8), 1: (2, 64, 16, 16), 2: (2, 64, 32, 32), 3: (2, 32, 32, 32)}
    assert {(c.step, c.branch) for c in rec.feat} == {(7, "uncond")}


def test_no_hooks_equals_plain_diffusers(random_backend):
    z = _z(12)
    ctx = _ctx()
    ours = random_backend.predict_eps(z, 300, ctx, step=0, hooks=Recorder())
    with torch.no_grad():
        plain = random_backend.unet(z, torch.tensor([300]), encoder_hidden_states=ctx).sample
    assert torch.allclose(ours, plain, atol=1e-5)


class Duplicate(UNetHooks):
    """K/V inputs = n twice: softmax over duplicated keys gives the same attention."""

    def self_attention(self, call, n):
        if call.layer.kind == "output":
            both = torch.cat([n, n], dim=1)
            return both, both
        return None


class Foreign(UNetHooks):
    """K/V read from another image's tokens: the output must change."""

    def __init__(self, other):
        self.other = other

    def self_attention(self, call, n):
        if call.layer.kind == "output":
            return self.other[call.layer], self.other[call.layer]
        return None


class Store(UNetHooks):
    def __init__(self):
        self.n = {}

    def self_attention(self, call, n):
        self.n[call.layer] = n.detach().clone()


def test_kv_injection_reaches_the_attention(random_backend):
    z, ctx = _z(10), _ctx()
    base = random_backend.predict_eps(z, 400, ctx, step=0)
    dup = random_backend.predict_eps(z, 400, ctx, step=0, hooks=Duplicate())
    assert torch.allclose(base, dup, atol=1e-5)
    store = Store()
    random_backend.predict_eps(_z(11), 400, ctx, step=0, hooks=store)
    foreign = random_backend.predict_eps(z, 400, ctx, step=0, hooks=Foreign(store.n))
    assert (foreign - base).abs().max() > 1e-3


def test_feature_gradients_reach_the_latent_and_stop_forward(random_backend):
    class Energy(UNetHooks):
        def decoder_feature(self, call, h):
            if call.level == 1:
                self.h = h
                raise StopForward

    z = _z(13, requires_grad=True)
    hook = Energy()
    out = random_backend.predict_eps(z, 500, _ctx(), step=0, hooks=hook, grad=True)
    assert out is None
    (g,) = torch.autograd.grad(hook.h.pow(2).mean(), z)
    assert g.abs().sum() > 0
    assert all(p.grad is None for p in random_backend.unet.parameters())
    # without grad=True the features carry no graph
    hook2 = Energy()
    random_backend.predict_eps(z.detach(), 500, _ctx(), step=0, hooks=hook2)
    assert not hook2.h.requires_grad


def test_grad_until_gives_eps_and_features_at_the_memory_of_a_stopped_pass(random_backend):
    """One gradient pass with GradUntil(level) returns eps (no graph) and the features with their
    graph, and saves exactly what a pass stopped after ``level`` saves; the gradient to the latent
    is the full pass's; the caller's grad mode is back after the pass."""
    level, z = 2, _z(21)
    runs = {}

    def run(name, *extra):
        rec, zg = Recorder(), z.clone().requires_grad_(True)
        out = []
        nbytes = saved_bytes(lambda: out.append(random_backend.predict_eps(zg, 500, _ctx(), step=0,
                                                                            hooks=HookList(rec, *extra), grad=True)))
        h = next(v for c, v in rec.feat.items() if c.level == level)
        (g,) = torch.autograd.grad(h.pow(2).mean(), zg)
        runs[name] = (out[0], nbytes, g)

    run("full")
    run("until", GradUntil(level))
    run("stop", StopAfter(level))
    assert torch.is_grad_enabled()
    (full, full_b, g_full), (until, until_b, g_until), (stop, stop_b, _) = runs["full"], runs["until"], runs["stop"]
    assert stop is None and full.requires_grad and not until.requires_grad
    assert torch.equal(until, full.detach())
    assert until_b == stop_b < 0.9 * full_b  # random shapes-topology UNet: 0.81
    assert torch.equal(g_until, g_full)
    with torch.no_grad():
        random_backend.predict_eps(z, 500, _ctx(), step=0, hooks=GradUntil(0), grad=True)
        assert not torch.is_grad_enabled()  # the caller's mode, whatever it was


def test_cfg_batch_equals_two_passes_and_names_each_rows_branch(random_backend):
    """predict_eps_cfg runs cond and uncond as one batch: the same eps as two passes (float
    rounding), one hook call per layer whose branch names each row."""
    cond, uncond = prompt_pair("flat, green square")
    z, rec = _z(31), Recorder()
    eps_c, eps_u = random_backend.predict_eps_cfg(z, 500, cond, uncond, step=3, hooks=rec)
    assert (eps_c - random_backend.predict_eps(z, 500, cond, step=3)).abs().max() < 1e-5
    assert (eps_u - random_backend.predict_eps(z, 500, uncond, step=3, branch="uncond")).abs().max() < 1e-5
    assert len(rec.attn) == len(random_backend.self_attention_layers())
    assert {c.branch for c, _ in rec.attn} == {("cond", "uncond")} and all(shape[0] == 2 for _, shape in rec.attn)


def test_hook_list_order():
    class A(UNetHooks):
        def self_attention(self, call, n):
            return ("a", "a")

    class B(UNetHooks):
        def self_attention(self, call, n):
            return ("b", "b")

    rec = Recorder()
    call = AttnCall(LayerKey("output", 2, 0), 0, "cond")
    assert HookList(None, rec, A(), B()).self_attention(call, torch.zeros(1, 2, 3)) == ("a", "a")
    assert len(rec.attn) == 1
    HookList(rec).decoder_feature(FeatureCall(1, 0, "cond"), torch.zeros(1))
    assert len(rec.feat) == 1


def test_close_restores_the_callers_model(random_unet):
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    before = {k: type(v) for k, v in random_unet.attn_processors.items()}
    random_unet.conv_in.weight.requires_grad_(True)
    with DiffusersBackend(random_unet, scaled_linear_alphas_cumprod()) as be:
        assert not random_unet.conv_in.weight.requires_grad
        assert any(type(v).__name__ == "_HookedSelfAttention" for v in random_unet.attn_processors.values())
        del be
    assert {k: type(v) for k, v in random_unet.attn_processors.items()} == before
    assert random_unet.conv_in.weight.requires_grad
    assert all(len(b._forward_hooks) == 0 for b in random_unet.up_blocks)
    random_unet.conv_in.weight.requires_grad_(False)


def test_bad_latent_shape_is_refused(random_backend):
    with pytest.raises(ValueError, match="z_t"):
        random_backend.predict_eps(torch.zeros(3, 32, 32), 10, _ctx(), step=0)
