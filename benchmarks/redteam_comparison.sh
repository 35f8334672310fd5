#!/usr/bin/env bash
# Redteam: QDAIF against random search at an equal budget on the embedded model, 3 seeds,
# then `qdaif compare` and the transfer check to a stricter instruction into docs/results/redteam/.
#   bash benchmarks/redteam_comparison.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/redteam}
ITER=${ITER:-6}; BATCH=${BATCH:-8}
for seed in 0 1 2; do for alg in qdaif random_search; do
  "$PY" -m qdaif run domain=redteam algorithm=$alg seed=$seed iterations=$ITER batch_size=$BATCH init_evaluations=16 \
    model.threads=1 progress=false "hydra.run.dir=$OUT/${alg}_seed$seed" >/dev/null
done; done
"$PY" -m qdaif compare "$OUT" --out docs/results/redteam
"$PY" benchmarks/redteam_transfer.py "$OUT"/*_seed* --out docs/results/redteam model.threads=1
