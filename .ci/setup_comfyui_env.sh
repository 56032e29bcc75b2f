#!/usr/bin/env bash
# Reproduce the ComfyUI integration-test venv from a ComfyUI checkout.
#
#   COMFYUI_PATH=/work/comfyui VENV=/work/comfy-venv bash /work/comfyui_setup.sh
#
# The checkout itself comes from the search tool's fetch (github:Comfy-Org/ComfyUI),
# cloned to $COMFYUI_PATH (commit a125cd84b054a57729b5eecab930ca9408719832 was used):
#   git clone --no-checkout /work/.mirror/Comfy-Org+ComfyUI/repo /work/comfyui
#   cd /work/comfyui && git checkout master   # tokenizer.json blob is missing from the
#                                             # snapshot; every other file checks out.
# Network use: pip only. torch/torchvision come from the local disk index.
set -euo pipefail

COMFYUI_PATH="${COMFYUI_PATH:-/work/comfyui}"
VENV="${VENV:-/work/comfy-venv}"
export OMP_NUM_THREADS=1

python3 -m venv "$VENV"
PY="$VENV/bin/python"

# Pin torch so that nothing (kornia, spandrel, diffusers, ...) upgrades it.
CONSTRAINTS="$VENV/torch-constraints.txt"
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$CONSTRAINTS"

"$PY" -m pip install -c "$CONSTRAINTS" "torch==2.14.1" "torchvision==0.29.1"

# ComfyUI's requirements without torch / torchvision / torchaudio.
REQS="$VENV/comfyui-requirements-notorch.txt"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~;])' "$COMFYUI_PATH/requirements.txt" > "$REQS"
"$PY" -m pip install -c "$CONSTRAINTS" -r "$REQS" requests

# Test tooling and the DragonDiffusion side.
"$PY" -m pip install -c "$CONSTRAINTS" diffusers safetensors pytest numpy pillow einops hypothesis

# The browser test of the editor (tests/integration/test_browser_editor.py): Playwright's Python
# package drives Debian's chromium; Playwright's own browser download is never used
# (`playwright install` is not run). Node.js runs the editor's geometry tests (make test-web).
"$PY" -m pip install -c "$CONSTRAINTS" playwright
if ! command -v chromium >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium nodejs
  else
    echo "install chromium and nodejs (e.g. sudo apt-get install chromium nodejs) for the browser tests" >&2
  fi
fi

# Checks: torch not upgraded; ComfyUI's model management imports in --cpu mode.
"$PY" - <<EOF
import sys, torch, torchvision
assert torch.__version__.split("+")[0] == "2.14.1", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.29.1", torchvision.__version__
sys.path.insert(0, "$COMFYUI_PATH")
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.model_management as mm
print("torch", torch.__version__, "torchvision", torchvision.__version__, "device", mm.get_torch_device())
EOF

# Check: Playwright starts the system chromium headless.
if command -v chromium >/dev/null 2>&1; then
  "$PY" - <<EOF
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="$(command -v chromium)", args=["--no-sandbox"])
    print("chromium", b.version, "via playwright")
    b.close()
EOF
fi
