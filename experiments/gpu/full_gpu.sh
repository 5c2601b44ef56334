#!/usr/bin/env bash
# The full recipe's accelerator variant (gin_configs/experiments/full_gpu.gin): its sft stage
# trained on one lent GPU from pre-tokenized arrays, in two halves (rarejax.carry).
#
#   bash experiments/gpu/full_gpu.sh prepare [--gin_bindings 'SFT_STEPS = N' ...]
#       On this machine (TensorFlow, ../shared/data): the data stage in $WORKDIR
#       (default workdir/full_gpu; reused once complete), the token cache of the sft mixture, and
#       the git-ignored carry folder $CARRY (default gpu_carry/). Checks that the carry and the
#       files that travel with it fit the device tool's 64 MiB, and prints the `run` call.
#   OUT=/some/empty/folder bash experiments/gpu/full_gpu.sh train
#       On the GPU machine (no TensorFlow there): trains sft from $CARRY in $GPU_WORKDIR
#       (default gpu_work/, git-ignored, so a warm machine keeps its checkpoints and the same
#       command resumes), stops by 8 minutes, and writes to $OUT the bf16 export (a release
#       folder: params-K-of-N.safetensors, tokenizer.model, metadata.json), metrics.jsonl and
#       train_report.json (tokens/s, MFU, peak device memory, wall time).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=${CARRY:-gpu_carry}
MAX_TREE_MIB=64  # what the device tool carries: tracked and untracked-not-ignored files + carry

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

case "${1:-}" in
  prepare)
    shift
    WORKDIR=${WORKDIR:-workdir/full_gpu}
    PYTHON=${PYTHON:-.venv/bin/python}
    "$PYTHON" -m rarejax carry prepare --workdir "$WORKDIR" \
        --gin_file experiments/full_gpu.gin --out "$CARRY" "$@"
    git check-ignore -q "$CARRY" || { echo "error: $CARRY is not git-ignored" >&2; exit 1; }
    carry_bytes=$(du -sb "$CARRY" | cut -f1)
    tree_bytes=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    total=$((carry_bytes + tree_bytes))
    echo "carry $(mib "$carry_bytes") MiB + working tree $(mib "$tree_bytes") MiB" \
         "= $(mib "$total") MiB (the device tool carries at most $MAX_TREE_MIB MiB)"
    if (( total > MAX_TREE_MIB * 1048576 )); then
      echo "error: too large to travel; shrink the carry or the tracked files" >&2
      exit 1
    fi
    cat <<CALL
Next, in a session that has a GPU (one call, about 9 minutes; the files come back under files_at):
  run(command="bash experiments/gpu/full_gpu.sh train", carry=["$CARRY"], kind="nvidia-h200", timeout_s=600)
If it stops early (train_report.json: stopped != completed), the same call on the still-warm
machine resumes from gpu_work/.
CALL
    ;;
  train)
    : "${OUT:?set OUT to an empty folder (the device tool sets it)}"
    GPU_WORKDIR=${GPU_WORKDIR:-gpu_work}
    PYTHON=${PYTHON:-python3}
    [[ -f "$CARRY/spec.json" ]] || {
      echo "error: no carry at $CARRY: run 'bash experiments/gpu/full_gpu.sh prepare' first" >&2
      exit 1; }
    export PYTHONPATH="$PWD/$CARRY/pylib${PYTHONPATH:+:$PYTHONPATH}"  # gin-config
    export PYTHONUNBUFFERED=1
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    "$PYTHON" -m rarejax carry train --carry "$CARRY" --workdir "$GPU_WORKDIR/sft" --out "$OUT"
    ;;
  *)
    echo "usage: $0 prepare [--gin_bindings ...] | OUT=DIR $0 train" >&2
    exit 2
    ;;
esac
