#!/usr/bin/env bash
# Install freshrec and its whole stack into a virtualenv (default .venv), idempotently.
#
#   bash infra/install.sh [EXTRAS]      EXTRAS: all (default), dev, ingest, features, train, ...
#
# Uses uv (installed with pip when missing) with infra/constraints.txt, the versions tested
# together. Horovod has no wheel: with the train stage it is built from source with Gloo for the
# CPU (about 3 minutes the first time; uv caches the built wheel, so later installs take seconds).
# Bytecode is compiled at install time: MLflow, Prefect and TensorFlow start much faster.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
venv="${FRESHREC_VENV:-.venv}"
py="${FRESHREC_PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
py="$(command -v "$py")"  # absolute: the Horovod step puts the venv's python first on PATH
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

if ! "$py" -m uv --version >/dev/null 2>&1; then
  log "installing uv (fast pip replacement)"
  # a system Python that is "externally managed" (PEP 668) takes uv only as a user package
  "$py" -m pip install --quiet uv 2>/dev/null || "$py" -m pip install --quiet --user uv 2>/dev/null \
    || "$py" -m pip install --quiet --user --break-system-packages uv
fi
uv() { "$py" -m uv "$@"; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  uv venv --quiet --python "$py" "$venv"
fi
log "installing freshrec[$extras] into $venv"
uv pip install --quiet --compile-bytecode -p "$venv" -c infra/constraints.txt -e ".[$extras]" "cmake<4"

case ",$extras," in
  *,all,*|*,dev,*|*,train,*)
    if "$venv/bin/python" -c "import horovod.tensorflow" >/dev/null 2>&1; then
      log "horovod already installed"
    else
      log "building horovod 0.28.1 with TensorFlow + Gloo (first time: ~3 min)"
      PATH="$PWD/$venv/bin:$PATH" HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 \
        HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
        HOROVOD_CPU_OPERATIONS=GLOO \
        uv pip install --quiet -p "$venv" --no-build-isolation -c infra/constraints.txt horovod==0.28.1
    fi
    ;;
esac
log "done: $("$venv/bin/freshrec" --help >/dev/null 2>&1 && echo "freshrec is ready" || echo "installed")"
