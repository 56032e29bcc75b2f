"""Train the shapes-world denoiser (never run in CI or at import).

Reproducible: data, timesteps, noise and prompt dropout of step ``k`` come from
generators seeded with (seed, k), so a run that resumes from its checkpoint
continues exactly where it stopped. Checkpoints are safetensors (model, EMA and
AdamW state) plus a JSON sidecar; no pickle. The loss log is a CSV.

    python -m dragon_lab train --out runs/shapes32 --steps 6000
    python -m dragon_lab export --run runs/shapes32 --out dragon_demo/assets/shapes32
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dragon_core.schedule import alphas_cumprod_from_config
from dragon_demo import shapes_world as sw
from dragon_demo.shapes_model import SCHEDULE, ShapesTextEncoder, build_unet, save_model, scene_tokens

CKPT = "checkpoint.safetensors"
CKPT_META = "checkpoint.json"


def prompt_dropout(tokens: list[list[int]], rng: np.random.Generator, p_all: float, p_bg: float, p_obj: float) -> list[list[int]]:
    """Randomly blank the whole prompt (for CFG), the background word, or single objects."""
    if rng.uniform() < p_all:
        return [[0, 0] for _ in tokens]
    out = [list(t) for t in tokens]
    if rng.uniform() < p_bg:
        out[0] = [0, 0]
    for k in range(1, len(out)):
        if out[k] != [0, 0] and rng.uniform() < p_obj:
            out[k] = [0, 0]
    return out


def make_batch(seed: int, step: int, batch: int, size: int, dropout: tuple[float, float, float]):
    """Images in [-1, 1] (B, 3, H, W) and dropped-out token ids (B, 4, 2) for one step."""
    rng = np.random.default_rng([seed, step])
    scenes = [sw.random_scene(rng, size) for _ in range(batch)]
    x = torch.from_numpy(np.stack([s.render() for s in scenes])).permute(0, 3, 1, 2) * 2 - 1
    toks = torch.tensor([prompt_dropout(scene_tokens(s), rng, *dropout) for s in scenes], dtype=torch.long)
    return x.contiguous(), toks


def _batch_np(args: tuple[int, int, int, int, tuple[float, float, float]]):
    seed, step, batch, size, dropout = args
    x, toks = make_batch(seed, step, batch, size, dropout)
    return x.numpy(), toks.numpy()


def batches(seed: int, start: int, steps: int, batch: int, size: int, dropout: tuple[float, float, float],
            workers: int = 0):
    """The training batches of steps ``start..steps-1``; with ``workers`` > 1 rendered
    ahead in a process pool. Each depends only on (seed, step): identical either way."""
    if workers <= 1:
        for step in range(start, steps):
            yield make_batch(seed, step, batch, size, dropout)
        return
    import multiprocessing as mp

    jobs = ((seed, step, batch, size, dropout) for step in range(start, steps))
    with mp.get_context("fork").Pool(workers) as pool:
        for x, toks in pool.imap(_batch_np, jobs, chunksize=2):
            yield torch.from_numpy(x), torch.from_numpy(toks)


def _lr(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * p))


def _flat_state(unet, enc, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer, params) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in unet.state_dict().items():
        out[f"unet.{k}"] = v.detach().cpu().clone().contiguous()
    for k, v in enc.state_dict().items():
        out[f"text.{k}"] = v.detach().cpu().clone().contiguous()
    for k, v in ema.items():
        out[f"ema.{k}"] = v.detach().cpu().clone().contiguous()
    for i, (_, p) in enumerate(params):
        for name, t in opt.state.get(p, {}).items():
            out[f"opt.{i}.{name}"] = torch.as_tensor(t).detach().cpu().clone().contiguous()
    return out


def _params(unet, enc) -> list[tuple[str, torch.nn.Parameter]]:
    return [(f"unet.{n}", p) for n, p in unet.named_parameters()] + [(f"text.{n}", p) for n, p in enc.named_parameters()]


def train(
    out: str | Path,
    steps: int = 6000,
    batch: int = 64,
    seed: int = 0,
    lr: float = 1e-3,
    lr_floor: float = 5e-5,
    warmup: int = 200,
    ema_decay: float = 0.999,
    ckpt_every: int = 200,
    threads: int | None = None,
    device: str = "cpu",
    bf16: bool = False,
    dropout: tuple[float, float, float] = (0.1, 0.15, 0.05),
    max_minutes: float | None = None,
    workers: int = 0,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) into ``out``; returns a summary dict. Safe to kill at any time.

    ``steps`` is the run's length (it shapes the learning-rate schedule);
    ``stop_at`` and ``max_minutes`` end this call early with a checkpoint, so a
    run can be split across sessions and resumed by calling again.
    """
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    unet = build_unet().to(device)
    enc = ShapesTextEncoder().to(device)
    params = _params(unet, enc)
    opt = torch.optim.AdamW([p for _, p in params], lr=lr, weight_decay=0.0)
    ema = {n: p.detach().clone() for n, p in params}
    start = 0
    if (out / CKPT).is_file() and (out / CKPT_META).is_file():
        state = load_file(str(out / CKPT), device=device)
        unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
        enc.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("text.")})
        ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
        for i, (_, p) in enumerate(params):
            keys = [k for k in state if k.startswith(f"opt.{i}.")]
            if keys:
                # Adam keeps its step counter on the CPU unless capturable
                opt.state[p] = {k.split(".", 2)[2]: (state[k].cpu() if k.endswith(".step") else state[k]) for k in keys}
        start = int(json.loads((out / CKPT_META).read_text())["step"])
        print(f"resumed from step {start}", flush=True)
    alphas = alphas_cumprod_from_config(SCHEDULE).to(torch.float32).to(device)
    log_path = out / "train_log.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "lr", "sec_per_step"])
    nparams = sum(p.numel() for _, p in params)
    print(f"training {nparams/1e6:.2f} M parameters, batch {batch}, steps {start}->{steps}, "
          f"threads {torch.get_num_threads()}, device {device}", flush=True)
    t_start = time.time()
    running, n_run, t_last = 0.0, 0, time.time()
    unet.train()
    enc.train()
    step = start
    end = steps if stop_at is None else min(steps, stop_at)
    data = batches(seed, start, end, batch, sw_size(unet), dropout, workers)
    for step, (x0, toks) in zip(range(start, end), data):
        if max_minutes is not None and time.time() - t_start > 60 * max_minutes:
            if step > start:
                _save_ckpt(out, unet, enc, ema, opt, params, step, save_file)
            break
        x0, toks = x0.to(device), toks.to(device)
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        t = torch.randint(0, len(alphas), (batch,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        ab = alphas[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr, warmup, lr_floor)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            ctx = enc(toks)
            eps = unet(xt, t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            names = [n for n, _ in params]
            torch._foreach_mul_([ema[n] for n in names], d)
            torch._foreach_add_([ema[n] for n in names], [p.detach() for _, p in params], alpha=1 - d)
        running += float(loss.detach())
        n_run += 1
        if (step + 1) % 20 == 0:
            now = time.time()
            writer.writerow([step + 1, f"{running / n_run:.5f}", f"{opt.param_groups[0]['lr']:.6f}", f"{(now - t_last) / n_run:.3f}"])
            log.flush()
            print(f"step {step + 1} loss {running / n_run:.4f} {(now - t_last) / n_run:.2f}s/step", flush=True)
            running, n_run, t_last = 0.0, 0, now
        if (step + 1) % ckpt_every == 0 or step + 1 == end:
            _save_ckpt(out, unet, enc, ema, opt, params, step + 1, save_file)
    else:
        step = end
    log.close()
    return {"step": step, "params": nparams}


def sw_size(unet) -> int:
    return int(unet.config.sample_size)


def _save_ckpt(out: Path, unet, enc, ema, opt, params, step: int, save_file) -> None:
    tmp = out / (CKPT + ".tmp")
    save_file(_flat_state(unet, enc, ema, opt, params), str(tmp))
    os.replace(tmp, out / CKPT)
    (out / CKPT_META).write_text(json.dumps({"step": step}) + "\n")


def export(run: str | Path, out: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the EMA weights of a run as a model folder (fp16 safetensors + config.json)."""
    from safetensors.torch import load_file

    run = Path(run)
    state = load_file(str(run / CKPT))
    step = int(json.loads((run / CKPT_META).read_text())["step"])
    unet, enc = build_unet(), ShapesTextEncoder()
    unet.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("ema.unet.")})
    enc.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("ema.text.")})
    info = {"training": {"steps": step, **(extra or {})}}
    save_model(out, unet, enc, info)
    return info
