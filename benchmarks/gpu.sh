#!/usr/bin/env bash
# The GPU checks in one run, the most important first, each printing as it goes (about 8 minutes
# on an H100), each through the path the connector runs (`load_engine`, `TransformersEngine`,
# `Decoder.reply`): the int4 kernels against the CPU, then the checkpoint kinds through the engine
# with the step recorded as a CUDA graph (the GPU default) and compiled (load time, tokens/s, peak
# GPU memory, and whether the mode held or fell back to eager); then the recorded step with and without grouped attention, fused norms and fused
# attention; then a conversation's follow-ups from the kept cache, replayed as a CUDA graph (the
# same logits as from an empty cache, time to the first token); then the decode loop against
# transformers' generate on a 6B-shaped ChatGLM2 (speed, same tokens, host-device syncs, CUDA graph
# skips). The timeouts keep the whole under ten minutes.
#
#     bash benchmarks/gpu.sh
#
# Then, where time is left, benchmarks/gpu_serving.sh: what constrained decoding adds on the GPU.
#
# On a machine without network access, put the wheels of what it lacks (pydantic and its parts,
# bitsandbytes; transformers 5.23 or later with its `regex` where it has an older one) in .whl/
# first: they are installed from there.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout 240 python benchmarks/gpu_engine.py --variants "fp16 graph,int4 graph,fp16 compiled,int4 compiled"
timeout 60 python benchmarks/bench_step.py
timeout 60 python benchmarks/bench_reuse.py --size 6b --device cuda --decode graph --rounds 4
timeout 100 python benchmarks/bench_decode.py --model 6b --device cuda --pairs 2 --new 64 --variants graph,graph-sampled
timeout 115 python benchmarks/bench_decode.py --model 6b --device cuda --pairs 3 --variants compiled,compiled-sampled
