#!/usr/bin/env bash
# vLLM on a GPU, both ways qdaif uses it, on a short opinions run:
#   (a) model=vllm              vLLM in-process
#   (b) vllm serve + model=openai   vLLM's OpenAI server, judged through /completions
# For each it prints evaluations/s (the run's evaluations over its wall time), the
# scoring mode the HTTP backend chose, and the peak GPU memory in use during the run.
#
# Usage (on a machine with a CUDA GPU, in the repository, after scripts/setup.sh):
#   pip install 'qdaif[vllm]'            # or .venv/bin/pip install -e '.[vllm]'
#   bash benchmarks/gpu_check.sh MODEL [ITERATIONS] [BATCH]
# MODEL: a Hugging Face folder or hub id of a small instruct model the machine has
# (e.g. a local copy of SmolLM2-360M-Instruct), or "embedded" for the embedded SmolLM2
# (converted once to a safetensors folder under ~/.cache/qdaif).
# Outputs go to runs/gpu_check/<date_time>/ (the two run directories and server.log).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:?usage: bash benchmarks/gpu_check.sh MODEL [ITERATIONS] [BATCH]}"
ITERS="${2:-10}"
BATCH="${3:-32}"
PORT="${PORT:-8011}"
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python)}"

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this needs a machine with a CUDA GPU" >&2; exit 2; }
"$PY" -c "import vllm" 2>/dev/null || { echo "gpu_check: vLLM is not installed: pip install 'qdaif[vllm]'" >&2; exit 2; }

OUT="runs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)"
mkdir -p "$OUT"
if [[ "$MODEL" == embedded ]]; then
    MODEL_DIR="$("$PY" -c 'from qdaif.lm._embedded import embedded_model_dir; print(embedded_model_dir())')"
else
    MODEL_DIR="$MODEL"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed 's/^/gpu_check: GPU /'

# Samples the GPU memory in use every 0.5 s into FILE until killed.
sample_memory() { while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >>"$1"; sleep 0.5; done; }
peak() { sort -n "$1" | tail -n1; }

# Prints evaluations/s of the run in DIR, from its last metrics row.
rate() {
    "$PY" - "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl") if l.strip()]
m = rows[-1]
print(f"{m['evaluations']} evaluations in {m['elapsed_seconds']:.1f} s = "
      f"{m['evaluations'] / m['elapsed_seconds']:.2f} evaluations/s; qd_score {m['qd_score']:.2f}")
EOF
}

run_qdaif() {  # DIR, then model overrides
    local dir="$1"; shift
    "$PY" -m qdaif run domain=opinions iterations="$ITERS" batch_size="$BATCH" seed=0 progress=false \
        hydra.run.dir="$dir" "$@"
}

echo "gpu_check: (a) model=vllm in process, $ITERS iterations x $BATCH"
sample_memory "$OUT/mem_a.txt" & SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
run_qdaif "$OUT/vllm" model=vllm model.name="$MODEL_DIR" model.gpu_memory_utilization=0.6
kill $SAMPLER
echo "gpu_check: (a) $(rate "$OUT/vllm"); peak GPU memory $(peak "$OUT/mem_a.txt") MiB"

echo "gpu_check: (b) vllm serve + model=openai"
"$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name qdaif-check \
    --host 127.0.0.1 --port "$PORT" --max-logprobs 20 --gpu-memory-utilization 0.6 --seed 0 \
    >"$OUT/server.log" 2>&1 & SERVER=$!
trap 'kill $SAMPLER $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 $SERVER 2>/dev/null || { echo "gpu_check: vllm serve exited; see $OUT/server.log" >&2; tail -n 20 "$OUT/server.log" >&2; exit 1; }
    sleep 1
done
sample_memory "$OUT/mem_b.txt" & SAMPLER=$!
run_qdaif "$OUT/openai" model=openai model.base_url="http://127.0.0.1:$PORT/v1" model.name=qdaif-check \
    model.max_concurrency=64
kill $SAMPLER
echo "gpu_check: (b) $(rate "$OUT/openai"); peak GPU memory $(peak "$OUT/mem_b.txt") MiB (server)"
"$PY" - "http://127.0.0.1:$PORT/v1" <<'EOF' | sed 's/^/gpu_check: (b) /'
import sys
from qdaif.lm._base import ScoreRequest
from qdaif.lm._openai import OpenAILM
lm = OpenAILM(base_url=sys.argv[1], name="qdaif-check")
out = lm.score([ScoreRequest("Is the sky blue? Answer:", "", (" Yes", " No"))])
print(f"scoring mode chosen by auto: {lm.scoring}; log p(Yes), log p(No) = {out[0]}")
EOF
kill $SERVER; wait $SERVER 2>/dev/null || true
echo "gpu_check: done; runs in $OUT"
