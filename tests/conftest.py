"""Shared fixtures: a random-weight shapes-topology backend (fast, for maths and
plumbing) and the bundled trained shapes model (for quality checks)."""

from __future__ import annotations

import os

import pytest
import torch

# DRAGON_TEST_THREADS, else OMP_NUM_THREADS (so `OMP_NUM_THREADS=1 pytest` really runs on one
# thread: on a shared 2-core machine two threads made small ops ~100x slower), else 2.
torch.set_num_threads(int(os.environ.get("DRAGON_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or "2"))


@pytest.fixture(scope="session")
def random_unet():
    """A shapes-config diffusers UNet with seeded random weights (nothing trained)."""
    from dragon_demo.shapes_model import build_unet

    torch.manual_seed(1234)
    return build_unet().eval()


@pytest.fixture()
def random_backend(random_unet):
    from dragon_core.diffusers_backend import DiffusersBackend
    from dragon_core.schedule import scaled_linear_alphas_cumprod

    with DiffusersBackend(random_unet, scaled_linear_alphas_cumprod()) as backend:
        yield backend


@pytest.fixture(scope="session")
def shapes():
    """The bundled trained model as (backend, text encoder)."""
    from dragon_core.diffusers_backend import load_shapes_backend

    backend, encoder = load_shapes_backend()
    yield backend, encoder
    backend.close()
