"""Backend for a diffusers ``UNet2DConditionModel`` (diffusers imported lazily).

Self-attention hooks run in a custom attention processor installed on every
``attn1`` of every transformer block; decoder features come from forward hooks
on ``up_blocks``. Both read the active call's step, branch and hooks from the
backend, set for the duration of one :meth:`DiffusersBackend.predict_eps`.

The backend installs its processors on the UNet it is given and restores the
previous ones in :meth:`close` (also a context manager), so a caller's model is
left as it was, except for its device and dtype: a UNet not already on ``device``
in ``dtype`` is moved and cast in place (``nn.Module.to``) and stays so.

Dtypes: the weights run in ``dtype`` (fp32, fp16 or bf16); latents, conditioning and
eps cross the interface in the caller's dtype (the core's fp32), cast at the UNet's
edges. Decoder features reach the hooks in ``dtype``; the sampler computes the
energies and their gradients in fp32 (``dragon_core.sampler.energy_grad``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .backend import AttnCall, Branch, ExtraKV, FeatureCall, LayerKey, StopForward, UNetHooks


class _Active:
    """The call in flight: step index, branch, hooks."""

    def __init__(self) -> None:
        self.step = -1
        self.branch: Branch = "cond"
        self.hooks: UNetHooks | None = None


class _HookedSelfAttention:
    """An attention processor for attn1 that lets the hooks supply K/V inputs."""

    def __init__(self, active: _Active, key: LayerKey) -> None:
        self.active, self.key = active, key

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise NotImplementedError("hooked self-attention expects plain (B, N, C) self-attention")
        n = hidden_states
        k_in = v_in = n
        hooks = self.active.hooks
        if hooks is not None:
            r = hooks.self_attention(AttnCall(self.key, self.active.step, self.active.branch), n)
            if r is not None:
                k_in, v_in = r.after(n, n) if isinstance(r, ExtraKV) else r
        b, heads = n.shape[0], attn.heads
        q = attn.to_q(n)
        k = attn.to_k(k_in.to(n.dtype))
        v = attn.to_v(v_in.to(n.dtype))
        d = q.shape[-1] // heads
        q = q.view(b, -1, heads, d).transpose(1, 2)
        k = k.view(b, -1, heads, d).transpose(1, 2)
        v = v.view(b, -1, heads, d).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(b, -1, heads * d).to(q.dtype)
        o = attn.to_out[1](attn.to_out[0](o))
        if attn.residual_connection:
            o = o + hidden_states
        return o / attn.rescale_output_factor


def _layers_per_block(unet: Any) -> list[int]:
    lpb = unet.config.layers_per_block
    n = len(unet.down_blocks)
    return list(lpb) if isinstance(lpb, (list, tuple)) else [int(lpb)] * n


class DiffusersBackend:
    """The core's backend over a diffusers UNet2DConditionModel and an abar schedule."""

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        p0, dev = next(unet.parameters()), torch.device(device)
        same_device = p0.device.type == dev.type and dev.index in (None, p0.device.index)
        if not same_device or p0.dtype != dtype:
            unet = unet.to(device=device, dtype=dtype)
        self.unet = unet.eval()
        # gradients are only ever taken w.r.t. latents: freeze weights, restore on close()
        self._saved_requires_grad = [(p, p.requires_grad) for p in self.unet.parameters()]
        for p in self.unet.parameters():
            p.requires_grad_(False)
        self.alphas_cumprod = alphas_cumprod.to(torch.float64).cpu()
        self.device, self.dtype = torch.device(device), dtype
        self._active = _Active()
        self._layers: dict[LayerKey, Any] = {}
        self._saved_processors = dict(self.unet.attn_processors)
        processors = {}
        for name in self._saved_processors:
            key = self._layer_key(name)
            if key is not None and name.endswith("attn1.processor"):
                self._layers[key] = name
                processors[name] = _HookedSelfAttention(self._active, key)
            else:
                processors[name] = self._saved_processors[name]
        self.unet.set_attn_processor(processors)
        self._handles = [blk.register_forward_hook(self._feature_hook(i)) for i, blk in enumerate(self.unet.up_blocks)]

    # -- layer naming ------------------------------------------------------------
    def _layer_key(self, name: str) -> LayerKey | None:
        """diffusers processor name -> ComfyUI-style LayerKey (None for non-transformer attention)."""
        parts = name.split(".")
        if "transformer_blocks" not in parts:
            return None
        k = int(parts[parts.index("transformer_blocks") + 1])
        j = int(parts[parts.index("attentions") + 1])
        lpb = _layers_per_block(self.unet)
        if parts[0] == "down_blocks":
            i = int(parts[1])
            return LayerKey("input", 1 + sum(lpb[m] + 1 for m in range(i)) + j, k)
        if parts[0] == "mid_block":
            return LayerKey("middle", 0, k)
        if parts[0] == "up_blocks":
            i = int(parts[1])
            rev = list(reversed(lpb))
            return LayerKey("output", sum(rev[m] + 1 for m in range(i)) + j, k)
        return None

    def decoder_self_attention_layers(self) -> list[LayerKey]:
        return sorted(k for k in self._layers if k.kind == "output")

    def self_attention_layers(self) -> list[LayerKey]:
        """Every hooked self-attention layer (input, middle, output)."""
        order = {"input": 0, "middle": 1, "output": 2}
        return sorted(self._layers, key=lambda k: (order[k.kind], k.block, k.index))

    def decoder_levels(self) -> int:
        return len(self.unet.up_blocks)

    def _feature_hook(self, level: int):
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            hooks = self._active.hooks
            if hooks is not None:
                hooks.decoder_feature(FeatureCall(level, self._active.step, self._active.branch), output)
        return hook

    # -- prediction ------------------------------------------------------------------
    def predict_eps(self, z_t: torch.Tensor, t: int, cond: torch.Tensor, *, step: int, branch: Branch = "cond",
                    hooks: UNetHooks | None = None, grad: bool = False) -> torch.Tensor | None:
        if z_t.ndim != 4:
            raise ValueError(f"z_t must be (B, C, H, W), got shape {tuple(z_t.shape)}")
        ctx = cond.to(self.device, self.dtype)
        if ctx.shape[0] == 1 and z_t.shape[0] > 1:
            ctx = ctx.expand(z_t.shape[0], -1, -1)
        tt = torch.full((z_t.shape[0],), int(t), device=self.device, dtype=torch.long)
        a = self._active
        a.step, a.branch, a.hooks = int(step), branch, hooks
        try:
            with torch.set_grad_enabled(grad):
                out = self.unet(z_t.to(self.device, self.dtype), tt, encoder_hidden_states=ctx).sample
        except StopForward:
            return None
        finally:
            a.step, a.branch, a.hooks = -1, "cond", None
        return out.to(z_t.dtype)

    def predict_eps_cfg(self, z_t: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor, *, step: int,
                        hooks: UNetHooks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both CFG branches as one batch (rows: ``z_t`` under ``cond``, then under ``uncond``);
        two passes when the two contexts differ in shape."""
        if cond.shape != uncond.shape:
            return (self.predict_eps(z_t, t, cond, step=step, branch="cond", hooks=hooks),
                    self.predict_eps(z_t, t, uncond, step=step, branch="uncond", hooks=hooks))
        b = z_t.shape[0]
        ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
        eps = self.predict_eps(torch.cat([z_t, z_t]), t, ctx, step=step, branch=("cond",) * b + ("uncond",) * b,
                               hooks=hooks)
        return eps[:b], eps[b:]

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Restore the UNet's original attention processors and remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.unet.set_attn_processor(self._saved_processors)
        for p, flag in self._saved_requires_grad:
            p.requires_grad_(flag)

    def __enter__(self) -> "DiffusersBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_shapes_backend(model_dir: Any = None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A shapes-vocabulary model as (backend, text encoder).

    ``model_dir`` is the bundled model by default; it may also be another folder
    in the same format, or a diffusers UNet folder (``save_pretrained`` output:
    config.json + diffusion_pytorch_model.safetensors) whose cross-attention
    width matches the shapes text encoder, which then comes from the bundled model.
    """
    import json
    from pathlib import Path

    from .schedule import alphas_cumprod_from_config
    from dragon_demo.shapes_model import ASSET_DIR, SCHEDULE, load_config, load_text_encoder, load_unet

    model_dir = Path(model_dir or ASSET_DIR)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json there")
    raw = json.loads(cfg_path.read_text())
    if raw.get("_class_name") == "UNet2DConditionModel":
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(model_dir), use_safetensors=True, torch_dtype=dtype)
        enc = load_text_encoder(ASSET_DIR, dtype)
        if unet.config.cross_attention_dim != enc.norm.normalized_shape[0]:
            raise ValueError(f"--model {model_dir}: cross_attention_dim {unet.config.cross_attention_dim} does not "
                             f"match the shapes text encoder ({enc.norm.normalized_shape[0]})")
        schedule = SCHEDULE
    else:
        cfg = load_config(model_dir)
        unet, enc, schedule = load_unet(model_dir, dtype), load_text_encoder(model_dir, dtype), cfg["schedule"]
    backend = DiffusersBackend(unet, alphas_cumprod_from_config(schedule), device, dtype)
    return backend, enc.to(device)
