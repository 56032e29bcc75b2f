#!/usr/bin/env bash
# Build the venv the optional official-code suite (tests/official/) runs the official
# DragonDiffusion implementation in. It is NOT the project's venv: the official code needs
# diffusers 0.18 (its fork imports diffusers.models.cross_attention); the project keeps 0.42.
#
#   OFFICIAL_DRAGON_PATH=/work/official-dragon VENV=/work/official-venv bash .ci/setup_official_env.sh
#
# The checkout comes from the search tool's fetch (github:MC-E/DragonDiffusion), cloned outside
# this repository and never committed (commit f9b5bdf was used):
#   git clone /work/.mirror/MC-E+DragonDiffusion/repo /work/official-dragon
#   git -C /work/official-dragon checkout f9b5bdf
# Nothing in the checkout is edited: tests/official/official_harness.py patches it from outside.
# Network use: pip only. torch is pinned exactly (a CPU wheel from the local disk index).
set -euo pipefail

OFFICIAL_DRAGON_PATH="${OFFICIAL_DRAGON_PATH:-/work/official-dragon}"
VENV="${VENV:-/work/official-venv}"
export OMP_NUM_THREADS=1

if [ ! -f "$OFFICIAL_DRAGON_PATH/src/models/Sampler.py" ]; then
  echo "OFFICIAL_DRAGON_PATH=$OFFICIAL_DRAGON_PATH is not a DragonDiffusion checkout (no src/models/Sampler.py)" >&2
  exit 1
fi

python3 -m venv "$VENV"
PY="$VENV/bin/python"

# Pin torch so that nothing (diffusers, ...) upgrades it.
CONSTRAINTS="$VENV/torch-constraints.txt"
printf 'torch==2.13.0\n' > "$CONSTRAINTS"

"$PY" -m pip install -c "$CONSTRAINTS" "torch==2.13.0"
"$PY" -m pip install -c "$CONSTRAINTS" "diffusers==0.18.0" "huggingface_hub>=0.25,<0.26" einops safetensors \
  opencv-python-headless tqdm pillow numpy

# Checks: torch not upgraded; the diffusers 0.18-era module the official fork imports is there.
"$PY" - <<PYEOF
import torch, diffusers
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert diffusers.__version__ == "0.18.0", diffusers.__version__
import diffusers.models.cross_attention  # noqa: F401  (the official fork needs it)
print("torch", torch.__version__, "diffusers", diffusers.__version__, "python", "$PY")
PYEOF
