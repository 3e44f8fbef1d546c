#!/usr/bin/env bash
# The serving checks on a GPU, after benchmarks/gpu.sh (each under its own timeout, the whole under five
# minutes): what constrained decoding (tools, response_format) adds to each token of a 6B-width ChatGLM2 in
# float16, the chooser alone and whole replies through `Engine.generate`.
#
#     bash benchmarks/gpu_serving.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 150 python benchmarks/bench_structured.py --device cuda --only 6b-width --repeats 3
