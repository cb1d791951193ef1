#!/usr/bin/env bash
# Runs benchmarks/gpu_suite.py on a machine that has torch but maybe not our other dependencies, offline.
#
#   benchmarks/gpu_suite.sh download        # here, with network: fetch the wheels into benchmarks/wheels/
#   benchmarks/gpu_suite.sh [suite args]    # there: install those wheels into benchmarks/.deps and run
#
# The wheels go to a separate --target folder put first on PYTHONPATH; the installed torch is never touched
# (torch, numpy and their CUDA wheels are not in the list). Results: gpu_suite_results.jsonl (one row per line).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
WHEELS="$HERE/wheels"
DEPS="$HERE/.deps"
PACKAGES="diffusers transformers huggingface-hub tokenizers safetensors regex tqdm pyyaml filelock fsspec
packaging requests urllib3 idna certifi charset-normalizer httpx httpcore h11 anyio sniffio hf-xet
typing-extensions importlib-metadata zipp pillow"

if [[ "${1:-}" == "download" ]]; then
    # pin each package to the version installed here, so the GPU run uses the tested versions
    mkdir -p "$WHEELS"
    pins=()
    for p in $PACKAGES; do
        v="$(python -m pip show "$p" 2>/dev/null | awk '/^Version:/ {print $2}' || true)"
        if [[ -n "$v" ]]; then pins+=("$p==$v"); fi
    done
    python -m pip download --no-deps -d "$WHEELS" "${pins[@]}"
    exit 0
fi

if compgen -G "$WHEELS/*.whl" > /dev/null && [[ ! -f "$DEPS/.installed" ]]; then
    # all of them, shadowing any older copies installed on the machine (the target folder comes first)
    python -m pip install --no-deps --no-index --target "$DEPS" "$WHEELS"/*.whl
    touch "$DEPS/.installed"
fi
export PYTHONPATH="$DEPS:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
exec python "$HERE/gpu_suite.py" "$@"
