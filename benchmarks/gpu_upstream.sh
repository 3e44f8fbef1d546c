#!/usr/bin/env bash
# vLLM serving ChatGLM2-6B behind the connector, on a GPU machine: the total tokens/s of 1, 8 and 32 streams of 256 tokens
# at once, straight from vLLM and through the connector's /v1 (nbs/scale_out.md).
#
#     MODEL=/models/chatglm2-6b bash benchmarks/gpu_upstream.sh        # TP=2 for two GPUs; PORT=8011 by default
#
# UNTESTED with vLLM: written on a machine without a GPU or vllm, where its checks (bash -n, shellcheck) pass and it stops at
# once, exit 2, with a sentence naming what is missing; vLLM's flags are those of its OpenAI server (the module
# vllm.entrypoints.openai.api_server, which `vllm serve` runs). Read what it prints. It needs vllm (`pip install vllm`), llm-katan is not
# needed, and a local copy of THUDM/chatglm2-6b (config.json, tokenizer.model, its *.py files and the weights): nothing
# is downloaded. Any folder vLLM loads with a ChatGLM2-shaped model (ChatGLMModel) does, e.g. ChatGLM3-6B.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
fail() { echo "gpu_upstream.sh: $*" >&2; exit 2; }
MODEL=${MODEL:-}
TP=${TP:-1}
PORT=${PORT:-8011}
NAME=chatglm2-6b
KEY=bench  # the key bench_upstream.py sends
# everything it needs, checked before vLLM starts (loading the model takes minutes)
command -v python > /dev/null || fail "python is not on PATH."
VLLM_VERSION=$(python -c "import vllm; print(vllm.__version__)" 2> /dev/null) \
    || fail "vllm is not installed for $(command -v python): install it (pip install vllm, on Linux with CUDA), then run this again."
echo "vllm $VLLM_VERSION"
python -c "import fc_chatglm, httpx" 2> /dev/null || fail "fc_chatglm's requirements are missing: pip install -e . in $(pwd)."
command -v curl > /dev/null || fail "curl is not installed."
GPUS=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU') || GPUS=0
[ "$GPUS" -gt 0 ] || fail "no NVIDIA GPU is visible (nvidia-smi -L lists none): vLLM needs one."
if ! [[ "$TP" =~ ^[1-9][0-9]*$ ]] || [ "$TP" -gt "$GPUS" ]; then fail "TP=$TP: give a number of GPUs from 1 to the $GPUS this machine has."; fi
if [ -z "$MODEL" ] || [ ! -f "$MODEL/config.json" ]; then
    fail "set MODEL to a local folder of THUDM/chatglm2-6b (its config.json, tokenizer, *.py files and weights)."
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
LOG=$(mktemp /tmp/vllm.XXXXXX.log)
python -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name "$NAME" --trust-remote-code \
    --chat-template deploy/chatglm2.jinja --dtype float16 --tensor-parallel-size "$TP" --max-num-seqs 64 \
    --host 127.0.0.1 --port "$PORT" --api-key "$KEY" > "$LOG" 2>&1 &
VLLM=$!
trap 'kill "$VLLM" 2> /dev/null; wait "$VLLM" 2> /dev/null' EXIT
echo "vLLM starting (log: $LOG)"
for _ in $(seq 1 900); do
    curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
    kill -0 "$VLLM" 2> /dev/null || { echo "vLLM exited:" >&2; tail -40 "$LOG" >&2; exit 1; }
    sleep 1
done
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" > /dev/null || { echo "vLLM did not answer in 15 minutes" >&2; exit 1; }
echo "the prompt's first ids (ChatGLM2 wants 64790, 64792: [gMASK] sop):"
curl -s "http://127.0.0.1:$PORT/tokenize" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
     -d "{\"model\": \"$NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"你好\"}], \"add_special_tokens\": true}" | head -c 300; echo
# ignore_eos: every stream writes its 256 tokens, so the totals compare like with like (the connector adds it: upstream_extra)
timeout 1200 python benchmarks/bench_upstream.py --upstream "http://127.0.0.1:$PORT/v1" --model "$NAME" --sweep 1,8,32 \
    --tokens 256 --extra '{"add_special_tokens": true, "ignore_eos": true}'
