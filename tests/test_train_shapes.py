"""The trainer is deterministic and resumes exactly (a few tiny steps; no real training)."""

import torch
from safetensors.torch import load_file

from dragon_lab.train_shapes import CKPT, CKPT_META, batches, export, make_batch, train


def test_batches_are_a_function_of_seed_and_step():
    a = list(batches(3, 5, 7, 2, 32, (0.1, 0.1, 0.1), workers=0))
    b = list(batches(3, 5, 7, 2, 32, (0.1, 0.1, 0.1), workers=2))
    assert len(a) == len(b) == 2
    for (xa, ta), (xb, tb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
    x, t = make_batch(3, 5, 2, 32, (0.1, 0.1, 0.1))
    assert torch.equal(x, a[0][0]) and x.shape == (2, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert not torch.equal(x, make_batch(3, 6, 2, 32, (0.1, 0.1, 0.1))[0])


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    """A run stopped after its step-2 checkpoint and resumed equals an uninterrupted run."""
    torch.set_num_threads(1)
    kw = dict(batch=2, seed=2, warmup=2, ckpt_every=2, threads=1)
    train(tmp_path / "a", steps=4, **kw)
    train(tmp_path / "b", steps=4, stop_at=2, **kw)  # a session that ends after step 2
    import json

    assert json.loads((tmp_path / "b" / CKPT_META).read_text())["step"] == 2
    train(tmp_path / "b", steps=4, **kw)  # resume
    sa, sb = load_file(str(tmp_path / "a" / CKPT)), load_file(str(tmp_path / "b" / CKPT))
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k
    info = export(tmp_path / "b", tmp_path / "model")
    assert info["training"]["steps"] == 4
    w = load_file(str(tmp_path / "model" / "unet.safetensors"))
    assert all(v.dtype == torch.float16 for v in w.values())
