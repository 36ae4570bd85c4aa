#!/usr/bin/env bash
# The converged es→en comparison (issue 22): softmax against the InfoNCE head, trained with early
# stopping on validation BLEU, for word-level, BPE 8k and BPE 32k vocabularies, one after the
# other on one pinned core. Hours per run: rerun this script to resume where it stopped (each run
# checkpoints every curve point under $RUNS/<vocab>/). The reports land in benchmarks/results/.
#   nohup bash benchmarks/translation_converged.sh > ~/contloss-runs/converged.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-$HOME/contloss-runs}
CPU=${CPU:-1}
mkdir -p "$RUNS"
for vocab in word bpe-8k bpe-32k; do
  name="translation_converged_${vocab//-/}"
  taskset -c "$CPU" env OMP_NUM_THREADS=1 "$PY" benchmarks/translation.py --name "$name" --vocab "$vocab" \
    --runs softmax@converge infonce-random@converge --eval-every 300 --curve-sentences 500 \
    --test-sentences 1000 --patience 4 --max-budget 21600 --out "$RUNS/$vocab" --jsonl "$RUNS/$name.jsonl"
done
