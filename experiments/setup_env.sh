#!/usr/bin/env bash
# Creates (or refreshes) a project venv with extras installed; idempotent.
#   bash experiments/setup_env.sh                                  # .venv with '.[all]'
#   VENV=.venv-pheval EXTRAS=pheval,test bash experiments/setup_env.sh
# (PhEval gets its own venv: pheval 0.7 pins pyarrow < 20, which the data extra's
# tensorflow-datasets stack does not want, and its runner needs no TensorFlow.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-all}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp=$VENV/.rarejax-setup-stamp
want="$(sha256sum setup.py | cut -d' ' -f1) $EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
