#!/usr/bin/env bash
# One-step setup on a fresh machine: CPU torch first (a bare `torch` requirement
# would pull a multi-GB CUDA build), then the project with all its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --disable-pip-version-check -q "torch==2.13.0"
python3 -m pip install --disable-pip-version-check -q -e ".[engine,dist,serve,dev]"
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
echo "setup done: try 'tetris --help'"
