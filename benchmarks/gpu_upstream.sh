#!/usr/bin/env bash
# vLLM serving ChatGLM2-6B behind the connector, on a GPU machine: the total tokens/s of 1, 8 and 32 streams of 256 tokens
# at once, straight from vLLM and through the connector's /v1 (nbs/scale_out.md).
#
#     MODEL=/models/chatglm2-6b bash benchmarks/gpu_upstream.sh        # TP=2 for two GPUs; PORT=8011 by default
#
# UNTESTED: written on a machine without a GPU; read what it prints. It needs vllm (`pip install vllm`), llm-katan is not
# needed, and a local copy of THUDM/chatglm2-6b (config.json, tokenizer.model, its *.py files and the weights): nothing
# is downloaded. Any folder vLLM loads with a ChatGLM2-shaped model (ChatGLMModel) does, e.g. ChatGLM3-6B.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-}
TP=${TP:-1}
PORT=${PORT:-8011}
NAME=chatglm2-6b
KEY=bench  # the key bench_upstream.py sends
if [ -z "$MODEL" ] || [ ! -f "$MODEL/config.json" ]; then
    echo "Set MODEL to a local folder of THUDM/chatglm2-6b (its config.json, tokenizer, *.py files and weights)." >&2; exit 2
fi
python -c "import vllm; print('vllm', vllm.__version__)" || { echo "vllm is not installed: pip install vllm" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
LOG=$(mktemp /tmp/vllm.XXXXXX.log)
python -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name "$NAME" --trust-remote-code \
    --chat-template benchmarks/chatglm2.jinja --dtype float16 --tensor-parallel-size "$TP" --max-num-seqs 64 \
    --host 127.0.0.1 --port "$PORT" --api-key "$KEY" > "$LOG" 2>&1 &
VLLM=$!
trap 'kill $VLLM 2>/dev/null; wait $VLLM 2>/dev/null' EXIT
echo "vLLM starting (log: $LOG)"
for _ in $(seq 1 900); do
    curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
    kill -0 $VLLM 2> /dev/null || { echo "vLLM exited:" >&2; tail -40 "$LOG" >&2; exit 1; }
    sleep 1
done
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" > /dev/null || { echo "vLLM did not answer in 15 minutes" >&2; exit 1; }
echo "the prompt's first ids (ChatGLM2 wants 64790, 64792: [gMASK] sop):"
curl -s "http://127.0.0.1:$PORT/tokenize" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
     -d "{\"model\": \"$NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"你好\"}], \"add_special_tokens\": true}" | head -c 300; echo
# ignore_eos: every stream writes its 256 tokens, so the totals compare like with like (the connector adds it: upstream_extra)
timeout 1200 python benchmarks/bench_upstream.py --upstream "http://127.0.0.1:$PORT/v1" --model "$NAME" --sweep 1,8,32 \
    --tokens 256 --extra '{"add_special_tokens": true, "ignore_eos": true}'
