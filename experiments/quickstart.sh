#!/usr/bin/env bash
# The main job on a fresh machine: installs the project venv (idempotent), then runs the
# quickstart pipeline (data → cpt → sft → rers → trajectory_sft → rl → eval) in
# ./workdir/quickstart, resuming an interrupted stage and skipping completed ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup_env.sh
# glibc malloc: one arena, no mmap, no trimming, so XLA:CPU's per-step temporary buffers stay
# mapped instead of page-faulting in again every step (sft steps 2.13 -> 1.49 s measured side by
# side; experiments/benchmarks/README.md, "The allocator setting"). Set before Python starts.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000}"
exec .venv/bin/python -m rarejax.main --workdir "${WORKDIR:-workdir/quickstart}" \
    --gin_file experiments/quickstart.gin "$@"
