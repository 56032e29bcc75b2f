"""Other packs' attention patches and ours on the same MODEL (docs/ip-adapter.md).

A MODEL often reaches our nodes through other packs' model nodes. Two kinds are
modelled here, without their weights:

* an image prompt the way cubiq/ComfyUI_IPAdapter_plus installs one: a clone of the
  MODEL with a cross-attention replace patch on every transformer block
  (``set_model_attn2_replace``, keyed ``(kind, block id)`` as that pack keys SD1.5),
  which adds ``weight * attention(q, image tokens)`` to the attention output while
  ``sigma_end <= sigma <= sigma_start`` (``percent_to_sigma`` of start_at / end_at),
  with the image tokens of the branch that ``cond_or_uncond`` names;
* a self-attention patch (``set_model_attn1_patch``) of another pack.

Our nodes clone the MODEL and append their patches to the clone. Checked: both packs'
patches run during our inversion and edit, in the order the docs state; ours see what
the other pack's attn1 patch produced; the image prompt's term reaches our edit only on
the steps its window names; the negative prompt's passes are labelled uncond; the MODELs
keep their patches and gain none of ours; keys/values another pack's attn1 patch added are
kept ahead of the memory's.

Run: ``COMFYUI_PATH=/path/to/ComfyUI OMP_NUM_THREADS=1 python -m pytest -q
tests/integration/test_patch_composition.py``.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from dragon_core.attention import CrossBranchAttention  # noqa: E402
from dragon_core.backend import AttnCall, UNetHooks  # noqa: E402
from dragon_core.schedule import ddim_timesteps  # noqa: E402
from test_comfy_backend import _move_case, _sample, _z  # noqa: E402

STEPS = 10
START_AT, END_AT = 0.2, 0.4  # the official image-prompt window (steps 10-19 of 50) as the pack's fractions
WEIGHT = 0.1  # the official demo's ip_scale
CFG = 3.0  # above 1: the negative prompt runs its own passes
EXTRA_TOKENS = 3


class EventLog(list):
    """Call records shared by every clone: ``ModelPatcher.clone()`` deep-copies model options,
    and with them every patch object that holds this log."""

    def __deepcopy__(self, memo: dict) -> "EventLog":
        return self


def _block_key(extra_options: dict) -> tuple[str, int, int]:
    kind, block = extra_options["block"]
    return kind, int(block), int(extra_options.get("block_index", 0))


class ImagePrompt:
    """An IP-Adapter-style attn2 replace patch: the block's cross-attention plus ``weight`` times
    attention over a few image tokens inside the sigma window (zero tokens for the uncond branch,
    so only the cond branch gets the term). Records every call: layer, sigma, cond_or_uncond, the
    conditioning uuids of the batch and whether the term was added."""

    def __init__(self, log: EventLog, sigma_start: float, sigma_end: float, weight: float = WEIGHT) -> None:
        self.log, self.sigma_start, self.sigma_end, self.weight = log, sigma_start, sigma_end, weight

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention

        heads = extra_options["n_heads"]
        out = optimized_attention(q, k, v, heads)
        sigma = float(extra_options["sigmas"].reshape(-1)[0])
        branches = tuple(int(c) for c in extra_options["cond_or_uncond"])
        active = self.sigma_end <= sigma <= self.sigma_start
        self.log.append(SimpleNamespace(name="ip_attn2", key=_block_key(extra_options), sigma=sigma,
                                        branches=branches, uuids=tuple(extra_options["uuids"]), active=active))
        if not active:
            return out
        d = q.shape[-1]
        cond = torch.randn(1, 4, d, generator=torch.Generator().manual_seed(d)).to(q.device, q.dtype)
        per = q.shape[0] // len(branches)
        image = torch.cat([(cond if c == 0 else torch.zeros_like(cond)).expand(per, -1, -1) for c in branches])
        return out + self.weight * optimized_attention(q, image, image, heads)


class OtherSelfAttention:
    """Another pack's attn1 patch: scales the query input ``n`` (whoever runs after it sees a
    different tensor) and, with ``extra`` > 0, appends that many tokens to the self-attention
    keys/values, as reference-style packs do. Records its output when ``keep``."""

    def __init__(self, log: EventLog, name: str = "other_attn1", extra: int = 0, keep: bool = False) -> None:
        self.log, self.name, self.extra, self.keep = log, name, extra, keep

    def __call__(self, n: torch.Tensor, context_attn1: torch.Tensor, value_attn1: torch.Tensor,
                 extra_options: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = n * 1.05
        if self.extra:
            context_attn1 = torch.cat([context_attn1, context_attn1[:, :self.extra]], 1)
            value_attn1 = torch.cat([value_attn1, value_attn1[:, :self.extra]], 1)
        self.log.append(SimpleNamespace(name=self.name, key=_block_key(extra_options), kv_tokens=context_attn1.shape[1],
                                        n=n.detach().clone() if self.keep else None))
        return n, context_attn1, value_attn1


class OurRecorder(UNetHooks):
    """Our backend's self-attention hook, recording the ``n`` it is given (returns no K/V)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def self_attention(self, call: AttnCall, n: torch.Tensor) -> None:
        key = (call.layer.kind, call.layer.block, call.layer.index)
        self.log.append(SimpleNamespace(name="dragon_attn1", key=key, n=n.detach().clone()))
        return None


class KVObserver:
    """An attn1 replace patch on one layer: records how many key tokens reach the attention."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention

        self.log.append(SimpleNamespace(name="kv_observer", key=_block_key(extra_options), kv_tokens=k.shape[1]))
        return optimized_attention(q, k, v, extra_options["n_heads"])


def _with_image_prompt(model: Any, layers: list, log: EventLog) -> Any:
    """The MODEL as an IPAdapter node returns it: a clone with the image prompt on every block."""
    patched = model.clone()
    ms = patched.get_model_object("model_sampling")
    ip = ImagePrompt(log, ms.percent_to_sigma(START_AT), ms.percent_to_sigma(END_AT))
    for kind, block, _ in layers:
        patched.set_model_attn2_replace(ip, kind, block)
    return patched


def _patch_state(model: Any) -> dict:
    """Which patch objects a MODEL holds, by kind and key."""
    to = model.model_options["transformer_options"]
    return {"patches": {k: [id(p) for p in v] for k, v in to.get("patches", {}).items()},
            "replace": {k: {b: id(p) for b, p in v.items()} for k, v in to.get("patches_replace", {}).items()}}


def _names(events: list) -> set[str]:
    return {e.name for e in events}


# ----------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pack(dragon_nodes) -> dict:
    return {n: importlib.import_module(f"dragon_nodes.{n}")
            for n in ("comfy_backend", "memory_nodes", "sampler_nodes", "shapes_comfy")}


@pytest.fixture(scope="module")
def layers(pack, user_model) -> list[tuple[str, int, int]]:
    """Every transformer self-attention of the model, as (kind, block id, index)."""
    with torch.inference_mode(), pack["comfy_backend"].ComfyBackend(user_model) as b:
        return [(k.kind, k.block, k.index) for k in b.self_attention_layers()]


@pytest.fixture(scope="module")
def run(pack, user_model, layers) -> SimpleNamespace:
    """The documented wiring through our nodes: the Inversion gets the MODEL with another pack's
    attn1 patch but without the image prompt, the Guided Sampler the same MODEL with the image
    prompt added; and the same edit without the image prompt, for comparison."""
    case, image, edit, _ = _move_case()
    sc, inversion, sampler = pack["shapes_comfy"], pack["memory_nodes"].Inversion, pack["sampler_nodes"].GuidedSampler
    log = EventLog()
    with torch.inference_mode():
        cond, uncond = sc.encode_prompt(case.scene.prompt()), sc.encode_prompt("")
        base = user_model.clone()
        base.set_model_attn1_patch(OtherSelfAttention(log))
        with_ip = _with_image_prompt(base, layers, log)
        before = {"base": _patch_state(base), "with_ip": _patch_state(with_ip)}

        def edit_with(model: Any) -> tuple[torch.Tensor, list]:
            log.clear()
            samples = sampler.execute(model, cond, uncond, memory, edit, 0, CFG, -1.0, -1.0, -1.0, True).args[0]
            return samples["samples"], list(log)

        _, memory = inversion.execute(base, {"samples": image}, cond, STEPS).args
        inversion_events = list(log)
        edited, edit_events = edit_with(with_ip)
        plain, plain_events = edit_with(base)
    ms = user_model.get_model_object("model_sampling")
    step_of = {float(ms.sigmas[int(t)]): s for s, t in enumerate(memory.trajectory.timesteps)}
    return SimpleNamespace(base=base, with_ip=with_ip, before=before, memory=memory, cond=cond, uncond=uncond,
                           inversion_events=inversion_events, edit_events=edit_events, plain_events=plain_events,
                           edited=edited, plain=plain, step_of=step_of)


# ----------------------------------------------------------------------------------
# order inside a transformer block
# ----------------------------------------------------------------------------------
def test_in_each_block_their_attn1_then_ours_then_the_image_prompt(pack, user_model, layers):
    """One pass of our backend: per transformer block the MODEL's attn1 patch runs first, ours
    (appended on our clone) second and gets exactly the ``n`` theirs returned, the attn2 replace
    after both (ComfyUI's BasicTransformerBlock.forward)."""
    log = EventLog()
    with torch.inference_mode():
        model = user_model.clone()
        model.set_model_attn1_patch(OtherSelfAttention(log, keep=True))
        model = _with_image_prompt(model, layers, log)
        with pack["comfy_backend"].ComfyBackend(model) as b:
            b.predict_eps(_z(1, 3), 700, pack["shapes_comfy"].encode_prompt("red square"), step=0,
                          hooks=OurRecorder(log))
    assert [(e.name, e.key) for e in log] == [(name, key) for key in layers
                                              for name in ("other_attn1", "dragon_attn1", "ip_attn2")]
    for theirs, ours in zip(log[0::3], log[1::3]):
        assert torch.equal(ours.n, theirs.n), theirs.key


def test_cross_branch_attention_node_runs_between_patches_applied_before_and_after_it(pack, run):
    """DragonDiff_CrossBranchAttention appends its attn1 patch when it runs: a patch applied to the
    MODEL before the node runs before ours, one applied after it runs after ours. Seen in ComfyUI's
    own sampler: in decoder layers ours doubles the self-attention K/V (concat mode) between them."""
    log = EventLog()
    with torch.inference_mode():
        model = run.base.clone()
        model.set_model_attn1_patch(OtherSelfAttention(log, "before"))
        model = pack["sampler_nodes"].CrossBranchAttentionPatch.execute(model, run.memory, "concat", 0, -1).args[0]
        model.set_model_attn1_patch(OtherSelfAttention(log, "after"))
        _sample(model, run.cond, run.uncond)
    seen = {name: defaultdict(set) for name in ("before", "after")}
    for e in log:
        if e.name in seen:
            seen[e.name][e.key].add(e.kv_tokens)
    before, after = seen["before"], seen["after"]
    assert set(before) == set(after) and any(k[0] == "output" for k in before)
    for key, tokens in before.items():
        (n,) = tokens
        # ours ran between them: in the decoder it appends the memory's n tokens, elsewhere nothing
        assert after[key] == ({2 * n} if key[0] == "output" else {n}), key


# ----------------------------------------------------------------------------------
# through our nodes
# ----------------------------------------------------------------------------------
def test_both_packs_run_during_our_inversion_and_edit(run, layers):
    inv, edit = run.inversion_events, run.edit_events
    assert _names(inv) == {"other_attn1"}  # the Inversion's MODEL has no image prompt (docs: as the official)
    assert {e.key for e in inv} == set(layers) and len(inv) >= STEPS * len(layers)
    assert _names(edit) == {"other_attn1", "ip_attn2"}
    assert {e.key for e in edit if e.name == "ip_attn2"} == set(layers)
    assert {e.key for e in edit if e.name == "other_attn1"} == set(layers)
    # our hooks ran beside theirs: the memory holds every decoder self-attention and its features
    decoder = {k for k in layers if k[0] == "output"}
    assert {(lk.kind, lk.block, lk.index) for _, lk in run.memory.kv} == decoder
    assert run.memory.features


def test_image_prompt_is_active_on_its_window_only(run):
    """start_at 0.2 / end_at 0.4 of a 10-step edit: steps 2 and 3 (t 701, 601), on the
    conditional and the negative prompt's passes alike."""
    ip = [e for e in run.edit_events if e.name == "ip_attn2"]
    assert {run.step_of[e.sigma] for e in ip} == set(range(STEPS))
    assert {run.step_of[e.sigma] for e in ip if e.active} == {2, 3}
    by_step = defaultdict(set)
    for e in ip:
        by_step[run.step_of[e.sigma]].update(e.uuids)
    assert all(len(by_step[s]) == 2 for s in (2, 3))  # both prompts, the negative one included


def test_image_prompt_reaches_our_edit(run):
    """The same edit without the image prompt (its MODEL has the other attn1 patch only) differs."""
    assert _names(run.plain_events) == {"other_attn1"}
    assert torch.isfinite(run.edited).all()
    assert (run.edited - run.plain).abs().max().item() > 1e-3


def test_models_keep_their_patches_and_get_none_of_ours(run, user_model, layers):
    before = run.before
    assert before["base"]["patches"] == {"attn1_patch": [before["base"]["patches"]["attn1_patch"][0]]}
    assert set(before["with_ip"]["replace"]["attn2"]) == {k[:2] for k in layers}
    assert _patch_state(run.base) == before["base"]
    assert _patch_state(run.with_ip) == before["with_ip"]
    assert "patches" not in user_model.model_options["transformer_options"]


def test_official_window_is_start_at_0_2_end_at_0_4(pack, user_model):
    """The pack's window test (sigma_end <= sigma <= sigma_start, percent_to_sigma of start_at and
    end_at) on the Inversion's 50-step grid selects exactly the official steps 10-19."""
    ms = user_model.get_model_object("model_sampling")
    hi, lo = ms.percent_to_sigma(START_AT), ms.percent_to_sigma(END_AT)
    ts = ddim_timesteps(50, spacing=pack["memory_nodes"].SPACING)
    assert [s for s, t in enumerate(ts.tolist()) if lo <= float(ms.sigmas[t]) <= hi] == list(range(10, 20))


# ----------------------------------------------------------------------------------
# composition with other packs: labels and keys/values
# ----------------------------------------------------------------------------------
def test_negative_prompt_passes_are_marked_uncond(run):
    """ComfyUI labels each chunk of a batch (``uuids``: its conditioning) in ``cond_or_uncond``:
    one prompt must always get one label, and the two prompts different ones."""
    labels = defaultdict(set)
    for e in run.edit_events:
        if e.name == "ip_attn2":
            for uuid, branch in zip(e.uuids, e.branches):
                labels[uuid].add(branch)
    assert sorted(tuple(v) for v in labels.values()) == [(0,), (1,)]


def test_kv_added_by_an_earlier_attn1_patch_survive_memory_attention(pack, run, layers):
    log = EventLog()
    kind, block, index = next(k for k in layers if k[0] == "output")
    step = min(s for s, lk in run.memory.kv if (lk.kind, lk.block, lk.index) == (kind, block, index))
    with torch.inference_mode():
        model = run.base.clone()
        model.set_model_attn1_patch(OtherSelfAttention(log, "extends_kv", extra=EXTRA_TOKENS))
        model.set_model_attn1_replace(KVObserver(log), kind, block, index)
        with pack["comfy_backend"].ComfyBackend(model) as b:
            b.predict_eps(_z(1, 4), int(run.memory.trajectory.timesteps[step]), run.cond, step=step,
                          hooks=CrossBranchAttention(run.memory, "concat", start=0))
    given = next(e.kv_tokens for e in log if e.name == "extends_kv" and e.key == (kind, block, index))
    seen = next(e.kv_tokens for e in log if e.name == "kv_observer")
    n_tokens = given - EXTRA_TOKENS
    assert seen == given + n_tokens  # theirs (n + extra) followed by the memory's n tokens
