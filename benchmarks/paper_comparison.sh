#!/usr/bin/env bash
# The paper's comparison on the embedded model: QDAIF against the baselines at an equal
# number of evaluations, 3 seeds each, then `qdaif compare` into docs/results/.
#   bash benchmarks/paper_comparison.sh [opinions|stories_genre|poetry ...]
# Two Hydra sweeps run side by side with one torch thread each (faster than one sweep
# with two threads on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/paper}
domains=("$@"); [ ${#domains[@]} -gt 0 ] || domains=(opinions stories_genre poetry)

sweep() {  # domain algorithms iterations
  "$PY" -m qdaif run -m "domain=$1" "algorithm=$2" seed=0,1,2 "iterations=$3" batch_size=16 model.threads=1 \
    progress=false "hydra.sweep.dir=$OUT/$1" "hydra.sweep.subdir=\${algorithm.name}_seed\${seed}" >/dev/null
}

for d in "${domains[@]}"; do
  start=$(date +%s)
  if [ "$d" = poetry ]; then
    # >= 200 evaluations: 13 iterations x 16
    sweep poetry qdaif 13 & a=$!; sweep poetry random_search 13 & b=$!; wait $a; wait $b
  else
    # >= 500 evaluations: 32 iterations x 16 = 512
    sweep "$d" qdaif,fixed_few_shot,shuffling_few_shot 32 & a=$!
    sweep "$d" random_search,quality_only 32 & b=$!
    wait $a; wait $b
  fi
  "$PY" -m qdaif compare "$OUT/$d" --out "docs/results/$d"
  echo "$d: $(( $(date +%s) - start )) s"
done
