"""The differential test against the official DragonDiffusion code (optional).

Runs only when ``OFFICIAL_DRAGON_PATH`` names a checkout of MC-E/DragonDiffusion and
``OFFICIAL_DRAGON_PYTHON`` (or ``VENV``, its bin/python) names the Python of the official
code's own venv (diffusers 0.18; ``.ci/setup_official_env.sh`` builds it). Otherwise every
test here is skipped with the reason. See docs/official-agreement.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def _official() -> tuple[Path, Path]:
    raw = os.environ.get("OFFICIAL_DRAGON_PATH", "").strip()
    if not raw:
        pytest.skip("OFFICIAL_DRAGON_PATH is not set: point it at a checkout of MC-E/DragonDiffusion (and "
                    "OFFICIAL_DRAGON_PYTHON at its venv's python, see .ci/setup_official_env.sh) to run the "
                    "differential test against the official code")
    path = Path(raw).expanduser().resolve()
    if not (path / "src" / "models" / "Sampler.py").is_file():
        pytest.skip(f"OFFICIAL_DRAGON_PATH={raw!r} is not a DragonDiffusion checkout (no src/models/Sampler.py)")
    py = os.environ.get("OFFICIAL_DRAGON_PYTHON", "").strip()
    if not py and os.environ.get("VENV", "").strip():
        py = str(Path(os.environ["VENV"]) / "bin" / "python")
    if not py:
        pytest.skip("OFFICIAL_DRAGON_PYTHON (or VENV) is not set: the official code runs in its own venv with "
                    "diffusers 0.18 (bash .ci/setup_official_env.sh)")
    probe = subprocess.run([py, "-c", "import diffusers; print(diffusers.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip().startswith("0.18"):
        pytest.skip(f"{py} has no diffusers 0.18 (got {probe.stdout.strip() or probe.stderr.strip()[-200:]!r}): "
                    f"build the official venv with .ci/setup_official_env.sh")
    return path, Path(py)


@pytest.fixture(scope="session")
def official_env() -> tuple[Path, Path]:
    return _official()


class OfficialRunner:
    """Runs batches of cases through the official harness (one subprocess per batch)."""

    def __init__(self, path: Path, python: Path, root: Path) -> None:
        self.path, self.python, self.root = path, python, root
        self.batches = 0

    def run(self, cases, encoder, model: dict) -> dict[str, tuple[np.ndarray, dict]]:
        from official_cases import job_case, prompt_table

        self.batches += 1
        job_dir = self.root / f"job{self.batches}"
        job_dir.mkdir(parents=True)
        prompts, emb = prompt_table(cases, encoder)
        np.savez(job_dir / "prompts.npz", prompts=json.dumps(prompts), emb=emb)
        job = {"official": str(self.path), "model": model, "embeddings": str(job_dir / "prompts.npz"),
               "out": str(job_dir / "out"), "cases": [job_case(c, job_dir) for c in cases]}
        (job_dir / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(self.python), str(HERE / "official_harness.py"), str(job_dir / "job.json")],
                              capture_output=True, text=True, env=env, cwd=str(job_dir))
        if proc.returncode != 0:
            raise RuntimeError(f"the official harness failed:\n{proc.stderr[-4000:]}")
        out = job_dir / "out"
        return {c.name: (np.load(out / f"{c.name}.npy"), json.loads((out / f"{c.name}.json").read_text()))
                for c in cases}


@pytest.fixture(scope="session")
def official(official_env, tmp_path_factory) -> OfficialRunner:
    path, python = official_env
    return OfficialRunner(path, python, tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="session")
def shapes_model_spec() -> dict:
    """The bundled shapes model for the harness: its UNet config and weights, pixel space."""
    from dragon_demo.shapes_model import ASSET_DIR, load_config

    return {"unet_config": load_config(ASSET_DIR)["unet"], "unet_weights": str(Path(ASSET_DIR) / "unet.safetensors"),
            "vae": "pixel", "vae_factor": 1}
