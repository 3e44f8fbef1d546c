#!/usr/bin/env python
"""What constrained decoding (nbs/07a2_structured.ipynb) adds to each token, on the CPU (or a GPU: `--device cuda`).

Two models: the demo (a 605-token vocabulary) and a ChatGLM2 of the 6B width (4,096 wide, a 65,024-token
output, 2 layers, random weights) with a ChatGLM2-sized SentencePiece tokenizer (the demo's pieces, then
CJK characters and words appended to 64,794 pieces). For each:

1. the chooser alone: `Guided` (llguidance's mask, the mask applied, the request's `Sampler`, the token read
   back and the grammar advanced) against the `Sampler` alone, on the same random logits;
2. whole replies through `Engine.generate`: the decoding time per token (first token excluded) without a
   grammar, with `response_format` json_object, and with a JSON schema, each reply `--tokens` long at most.

Unconstrained requests take the engine's path as it is (`constrain` None): the first row of 2. is that
path. Asserts nothing about time.

    nice -n 19 python benchmarks/bench_structured.py              # both models, about 2 minutes
    nice -n 19 python benchmarks/bench_structured.py --only demo
    nice -n 19 python benchmarks/bench_structured.py --chooser-only  # 1. alone, about 30 s
    python benchmarks/bench_structured.py --device cuda --only 6b-width  # on a GPU, float16 (benchmarks/gpu_serving.sh)
"""
import argparse, json, statistics, struct, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.demo import build_demo, load_demo
from fc_chatglm.engine import GLMFormat, TransformersEngine
from fc_chatglm.sampling import Sampler
from fc_chatglm.schemas import ChatRequest, GenerationParams, Settings
from fc_chatglm.structured import Grammar, json_grammar, ll_tokenizer
from fc_chatglm.tokenizer import ChatGLMTokenizer

SCHEMA = {'type': 'object', 'properties': {'name': {'type': 'string'}, 'age': {'type': 'integer'},
                                           'tags': {'type': 'array', 'items': {'type': 'string'}}},
          'required': ['name', 'age', 'tags'], 'additionalProperties': False}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n: return bytes(out)


def _piece(text: str, score: float) -> bytes:
    "One `pieces` entry of SentencePiece's ModelProto (field 1: piece, field 2: score), ready to append."
    inner = b'\x0a' + _varint(len(b := text.encode())) + b + b'\x15' + struct.pack('<f', score)
    return b'\x0a' + _varint(len(inner)) + inner


def glm2_sized_tokenizer(folder: Path, pieces: int = 64_794) -> ChatGLMTokenizer:
    "The demo's SentencePiece model with pieces appended (a repeated protobuf field may be appended) up to ChatGLM2's 64,794."
    build_demo(folder/'demo')
    base = ChatGLMTokenizer(folder/'demo'/'tokenizer.model')
    have = {base.sp.id_to_piece(i) for i in range(base.n_sp)}
    words = sorted({w for f in sorted(Path(torch.__file__).parent.rglob('*.py'))[:3000]
                    for w in __import__('re').findall(r'[A-Za-z]{2,12}', f.read_text(errors='ignore'))})
    cjk = [chr(c) for c in range(0x4E00, 0x9FA6)]
    extra = [p for p in dict.fromkeys(cjk + ['\u2581' + w for w in words] + words + [a + b for a in cjk[:300] for b in cjk[:300]])
             if p not in have][:pieces - base.n_sp]
    path = folder/'tokenizer.model'
    path.write_bytes((folder/'demo'/'tokenizer.model').read_bytes() + b''.join(_piece(p, -20.0 - i * 1e-4) for i, p in enumerate(extra)))
    return ChatGLMTokenizer(path)


def chooser_us(width: int, llt, steps: int = 300, device: str = 'cpu') -> tuple[float, float]:
    "Median microseconds per token of the `Sampler` alone and of `Guided` around it, on random logits, over `steps` constrained tokens."
    p = GenerationParams.from_settings(Settings(temperature=1, max_response_tokens=4096))
    torch.manual_seed(0)
    rows = [(torch.randn(1, width) * 3).to(device) for _ in range(16)]
    plain, guided, sampler = [], [], Sampler(p)
    for k in range(steps):
        t0 = time.perf_counter(); sampler(rows[k % 16]).item(); plain.append(time.perf_counter() - t0)
    chooser = None
    for k in range(steps):
        if chooser is None or chooser.matcher.is_stopped(): chooser = Grammar(json_grammar(SCHEMA), llt)(Sampler(p))
        t0 = time.perf_counter(); chooser(rows[k % 16]).item(); guided.append(time.perf_counter() - t0)
    return statistics.median(plain) * 1e6, statistics.median(guided) * 1e6


def per_token_ms(engine, constrain, tokens: int, repeats: int) -> tuple[float, int]:
    "Median decoding ms per token after the first, and the tokens of the last reply."
    times, n = [], 0
    for seed in range(repeats):
        torch.manual_seed(seed)
        req = ChatRequest(message='Who are you? Answer in JSON.', settings={'temperature': 1, 'maxResponseTokens': tokens})
        out = engine.generate(req, constrain=constrain() if constrain else None)
        if out.tokens > 1: times.append((out.seconds - out.first_token_s) / (out.tokens - 1) * 1e3); n = out.tokens
    return statistics.median(times), n


def bench(name: str, model, tok: ChatGLMTokenizer, tokens: int, repeats: int, generate: bool = True, device: str = 'cpu'):
    engine = TransformersEngine(model, GLMFormat(tok), name)
    t0 = time.perf_counter(); llt = ll_tokenizer(engine.fmt); built = time.perf_counter() - t0
    width = model.config.vocab_size
    plain_us, guided_us = chooser_us(width, llt, device=device)
    print(f'\n{name}: vocabulary {tok.vocab_size:,} ids, logits {width:,} wide; llguidance tokenizer built in {built * 1e3:.0f} ms')
    print(f'  chooser per token: Sampler {plain_us:.0f} us, Guided {guided_us:.0f} us: +{guided_us - plain_us:.0f} us')
    if not generate: return
    engine.generate(ChatRequest(message='warm up', settings={'temperature': 0, 'maxResponseTokens': 4}))
    for label, constrain in [('none', None), ('json_object', lambda: Grammar(json_grammar(), llt)),
                             ('json_schema', lambda: Grammar(json_grammar(SCHEMA), llt))]:
        ms, n = per_token_ms(engine, constrain, tokens, repeats)
        print(f'  generate, {label:11s}: {ms:7.2f} ms per token (last reply {n} tokens)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', choices=['demo', '6b-width'], help='one model')
    ap.add_argument('--tokens', type=int, default=64, help='max tokens per reply')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--chooser-only', action='store_true', help='only the chooser (1.), without whole replies')
    ap.add_argument('--device', default='cpu', help="where the 6B-width model runs: 'cpu' (float32) or 'cuda' (float16)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    gpu = f', {torch.cuda.get_device_name()}' if a.device.startswith('cuda') else ''
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}{gpu}')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.only in (None, 'demo'):
            model, tok = load_demo(tmp/'d')
            bench('demo', model, tok, a.tokens, a.repeats, not a.chooser_only)
        if a.only in (None, '6b-width'):
            tok = glm2_sized_tokenizer(tmp/'g')
            dtype = torch.float32 if a.device == 'cpu' else torch.float16
            model = random_chatglm2({**CHATGLM2_6B_CONFIG, 'num_layers': 2}, dtype=dtype).eval().to(a.device)
            bench(f'ChatGLM2 6B width, 2 layers, {str(dtype)[6:]}, {a.device}', model, tok, a.tokens, a.repeats, not a.chooser_only, a.device)


if __name__ == '__main__':
    main()
