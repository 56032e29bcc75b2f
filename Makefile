# Two commands on a fresh machine (only Python needed): `make demo`, `make test`.
# Both create .venv and install the pinned dev requirements first (torch 2.13.0 CPU).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-web test-comfyui clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dragon_lab demo --out demo_out

test: $(STAMP) test-web
	$(BIN)/python -m pytest -q

# The browser editor's geometry and points format (web/editor_geometry.js), with Node's own test
# runner: no npm packages. Skipped, saying so, on a machine without Node.js.
test-web:
	@if command -v node >/dev/null 2>&1; then node --test tests/web/*.test.mjs; \
	else echo "SKIPPED tests/web (browser editor geometry): Node.js 18+ ('node') is not installed"; fi

# Integration tests against a real ComfyUI: COMFYUI_PATH=checkout, COMFYUI_PYTHON=its venv's python
# (make one with .ci/setup_comfyui_env.sh).
test-comfyui:
	COMFYUI_PATH=$(COMFYUI_PATH) $(COMFYUI_PYTHON) -m pytest -q tests/integration

clean:
	rm -rf $(VENV) demo_out .pytest_cache
