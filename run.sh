#!/usr/bin/env bash
# aimu_ray's one entry point for people and CI.
#   ./run.sh demo    set the machine up if needed, then run the main job (examples/serve_demo.py)
#   ./run.sh test    set the machine up if needed, then run the whole offline test suite
#   ./run.sh bench   set the machine up if needed, then run every benchmark in benchmarks/
#   ./run.sh setup   only set up: a .venv with torch (CPU), aimu_ray[all,test,bench] and llama-cpp-python
set -euo pipefail
cd "$(dirname "$0")"

VENV=${AIMU_RAY_VENV:-.venv}
PY="$VENV/bin/python"
STAMP="$VENV/.aimu_ray-installed"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # a local Ray must not turn token auth on (ENVIRONMENT.md)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

setup() {
    local want
    want=$(sha1sum pyproject.toml | cut -c1-40)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        return
    fi
    echo "==> setting up $VENV (first time ~5 min: llama-cpp-python compiles)" >&2
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    # torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
    "$PY" -m pip install -q "${AIMU_RAY_TORCH:-torch==2.13.0}"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$PY" -m pip install -q -e ".[all,test,bench]"
    echo "$want" > "$STAMP"
}

run_tests() {
    set +e
    "$PY" -m pytest -q -p no:cacheprovider "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: failing, an empty run is not a green run" >&2
        return 1
    fi
    return "$rc"
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    demo)  setup; exec "$PY" examples/serve_demo.py "$@" ;;
    test)  setup; run_tests "$@" ;;
    bench) setup; for script in benchmarks/*.py; do echo "==> $script"; "$PY" "$script"; done ;;
    *)     sed -n '2,6p' "$0"; exit 2 ;;
esac
