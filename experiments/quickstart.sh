#!/usr/bin/env bash
# The main job on a fresh machine: installs the project venv (idempotent), then runs the
# quickstart pipeline (data → cpt → sft → eval) in ./workdir/quickstart, resuming if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup_env.sh
exec .venv/bin/python -m rarejax.main --workdir "${WORKDIR:-workdir/quickstart}" \
    --gin_file experiments/quickstart.gin "$@"
