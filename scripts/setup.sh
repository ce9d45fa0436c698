#!/usr/bin/env bash
# Create .venv and install the engine with everything the demo and the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: the 2.13.0 CPU wheel; anything unpinned pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[deep,test,dask]"
# The CMake build test needs cmake; where the system has none, the PyPI package provides it.
command -v cmake >/dev/null || .venv/bin/python -m pip install -q cmake
