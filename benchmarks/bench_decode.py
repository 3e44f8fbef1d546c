#!/usr/bin/env python
"""The engine's decode loop against transformers' `generate`, on the same model, in one run.

Both decode the same prompt for the same number of new tokens, greedily or (`-sampled`) sampled
as the app asks by default (temperature 0.4, here with topP 0.9), both sides seeded alike. The variants:
- `eager`: both over a dynamic cache, the model's Python code at every step;
- `graph`: the loop's step recorded once and replayed over one static cache (`--decode graph`, the
  GPU default: a CUDA graph; on a CPU the make_fx stand-in of the tests, which shows the Python
  overhead removed but is no product path), against `generate` as the engine ran it by default;
- `compiled`: both compiled over one static cache (`--decode compile`: `generate` gets the static
  cache and transformers' compile config, the loop gets `Decoder(mode='compile')`). Each measurement is a pair
run back to back, several pairs interleaved, so the machine's noise hits both sides alike; the
ratio of the medians is the figure. The loop is the engine's own, `Decoder.reply` (`04d_decode`), with
a `Sampler`; only the text decoding is left out, as `generate` has none. It also checks that both
produce the same tokens and, on CUDA, counts the host-device synchronisations of each call
(`torch.cuda.set_sync_debug_mode`). Prints a table; asserts nothing about time.

    python benchmarks/bench_decode.py                          # the demo model on this machine (CPU)
    python benchmarks/bench_decode.py --variants eager,graph,graph-sampled --pairs 3 --new 128   # 45-65 s on a shared 2-core CPU
    python benchmarks/bench_decode.py --model 6b --device cuda # a 6B-shaped ChatGLM2, random fp16 weights
"""
import argparse, statistics, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch, transformers
from transformers import CompileConfig, StaticCache

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.demo import load_demo
from fc_chatglm.decode import Decoder, capture_cuda_graph, prepare_decoding
from fc_chatglm.sampling import Sampler
from fc_chatglm.speedups import prepare
from fc_chatglm.testing import trace_capture
from fc_chatglm.schemas import GenerationParams, Settings

from common import timed

SAMPLED = Settings(temperature=0.4, topP=0.9)


def with_generate(model, ids, new, sampled, cache=None, compile=None) -> list[int]:
    "Tokens from transformers' `generate`, as the engine called it before the decode loop."
    static = {}
    if cache is not None:
        cache.reset()
        static = {CACHE_ARG: cache, 'compile_config': compile}
    inp = torch.tensor([ids], device=model.device)
    how = dict(do_sample=True, temperature=SAMPLED.temperature, top_p=SAMPLED.top_p, top_k=0) if sampled else dict(do_sample=False)
    torch.manual_seed(0)
    out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=new, eos_token_id=None, pad_token_id=0,
                         **how, **static)
    return out[0, len(ids):].tolist()


def with_loop(decoder, ids, new, sampled) -> list[int]:
    "Tokens from the engine's decode loop (no text decoding, like `with_generate`)."
    sampler = Sampler(GenerationParams.from_settings(SAMPLED if sampled else Settings(temperature=0)))
    torch.manual_seed(0)
    with decoder.reply(ids, sampler, new, reuse=False) as reply:  # every run from an empty cache, as `generate` runs
        return list(reply)


def syncs(fn, dev) -> int | None:
    "How many synchronising CUDA calls `fn` makes (None off CUDA)."
    if dev.type != 'cuda': return None
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            fn()
    finally: torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(w.message) for w in caught)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', choices=['demo', '6b'], default='demo')
    p.add_argument('--device', default='cpu')
    p.add_argument('--prompt', type=int, default=512, help='prompt tokens')
    p.add_argument('--new', type=int, default=256, help='new tokens')
    p.add_argument('--pairs', type=int, default=5, help='interleaved pairs per variant')
    p.add_argument('--variants', help='comma-separated, from eager, graph, compiled, each optionally -sampled '
                   '(default: eager,compiled,compiled-sampled on a CPU, where graph is only the tests\' stand-in; '
                   'graph,graph-sampled,compiled,compiled-sampled,eager on CUDA)')
    a = p.parse_args()
    dev = torch.device(a.device)
    a.variants = a.variants or ('graph,graph-sampled,compiled,compiled-sampled,eager' if dev.type == 'cuda' else 'eager,compiled,compiled-sampled')
    tmp = tempfile.TemporaryDirectory()
    if a.model == 'demo': model = load_demo(Path(tmp.name), device=a.device)[0]
    else: model = prepare(random_chatglm2(CHATGLM2_6B_CONFIG, device=dev, dtype=torch.float16), dev, torch.float16, upcast=False)
    prepare_decoding(model)  # as the engine does: one query token attended by `grouped_attention`, for both sides
    global CACHE_ARG
    CACHE_ARG = Decoder(model).arg  # what this transformers calls the cache argument
    model.generation_config.eos_token_id = None  # a random model would end its replies at random; time full replies
    vocab = model.config.vocab_size
    ids = torch.randint(10, vocab, (a.prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    length = a.prompt + a.new + 8
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, {a.model} model on '
          f'{torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"} ({torch.get_num_threads()} threads), '
          f'{a.prompt}-token prompt + {a.new} new tokens, {a.pairs} pairs')
    rows, made = [], {}  # variants of one kind share one decoder and one static cache: one compile or recording each
    with torch.inference_mode():
        for variant in a.variants.split(','):
            kind, sampled = variant.removesuffix('-sampled'), variant.endswith('-sampled')
            if kind not in made:
                config = CompileConfig() if kind == 'compiled' else None
                if config is not None and dev.type == 'cpu': config._compile_all_devices = True
                mode = {'eager': 'eager', 'graph': 'graph', 'compiled': 'compile'}[kind]
                made[kind] = (Decoder(model, mode, length, capture_cuda_graph if dev.type == 'cuda' else trace_capture),
                              StaticCache(config=model.config, max_cache_len=length) if config else None, config)
            decoder, cache, config = made[kind]
            gen = lambda: with_generate(model, ids, a.new, sampled, cache, config)
            loop = lambda: with_loop(decoder, ids, a.new, sampled)
            t0 = time.perf_counter(); gen(); gen(); loop(); loop()  # warm-up: compiles and records the graphs
            warm = time.perf_counter() - t0
            times, tokens = {'generate': [], 'loop': []}, {}
            for i in range(a.pairs):
                for name, fn in (('generate', gen), ('loop', loop)) if i % 2 == 0 else (('loop', loop), ('generate', gen)):
                    s, tokens[name] = timed(fn, dev)
                    times[name].append(s)
            same = tokens['generate'] == tokens['loop']
            g, l = statistics.median(times['generate']), statistics.median(times['loop'])
            rows.append((variant, a.new / g, a.new / l, g / l, same, warm, syncs(gen, dev), syncs(loop, dev)))
    print('\n| variant | generate tokens/s | loop tokens/s | loop / generate | same tokens | warm-up s | syncs: generate, loop |')
    print('|---|---|---|---|---|---|---|')
    for v, g, l, r, same, warm, sg, sl in rows:
        print(f'| {v} | {g:.1f} | {l:.1f} | {r:.2f} | {same} | {warm:.1f} | {sg}, {sl} |')
    print('\ntokens/s: new tokens over the whole call (prompt included), medians of the pairs.')
    from torch._dynamo.utils import counters
    print(f"compiled graphs: {counters['stats']['unique_graphs']}, graph breaks: {sum(counters['graph_break'].values())}, "
          f"CUDA graph skips: {counters['inductor']['cudagraph_skips']} (on a CPU every compiled graph is skipped)")


if __name__ == '__main__':
    main()
