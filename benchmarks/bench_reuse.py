#!/usr/bin/env python
"""Time to the first token of a conversation's follow-ups: from the cache the previous reply left,
against the same request from an empty cache, on the same engine, in one run.

The app sends the whole conversation with every message; the engine keeps the last request's
cache and runs only the part of the prompt it does not hold (`04d_decode`). Each round here runs
the new message twice, back to back: first as it comes (the cache holds the previous round), then
again after `engine.decoder.end()` has dropped the cache (the whole prompt runs). Both give the same
greedy reply, which goes into the history of the next round. Prints a table; asserts nothing about
time.

The model is a ChatGLM2 with random weights, mid-sized by default so that the prompt's cost shows
on a CPU, with the demo's tokenizer. Its replies are noise, and noise does not encode back to the
same tokens, so here a follow-up keeps the previous prompt but not the previous reply; a real
model's reply mostly encodes back and is kept too.

    python benchmarks/bench_reuse.py                                         # ~100M parameters, float32, this CPU: 6-8 minutes on a busy 2-core CPU
    python benchmarks/bench_reuse.py --size 6b --device cuda --decode graph  # the 6B shape, random fp16 weights

It also checks that the kept cache changes nothing: in float32 each reply must be the same as from
an empty cache; in any dtype the logits continued from a cache cut back in place (its old positions
left behind) must match those from an empty cache. On a GPU with `--decode graph`, that runs the
recorded step over the cut-back static cache.
"""
import argparse, statistics, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.demo import DEMO_CORPUS, load_demo
from fc_chatglm.speedups import prepare
from fc_chatglm.engine import GLMFormat, TransformersEngine
from fc_chatglm.schemas import ChatRequest

SIZES = {'mid': dict(num_layers=8, hidden_size=1024, ffn_hidden_size=2816, num_attention_heads=16, kv_channels=64),
         '6b': {}}


def kept_cache_error(dec, words, tok, feed=16) -> float:
    """Logits after a prompt and `feed` more tokens, continued from a cache that held another prompt with the same
    beginning (cut back, its old positions left behind), against the same from an empty cache: the largest difference,
    relative to the largest logit. Where old positions leaked into attention, it is of the order of 1."""
    a = tok.encode(' '.join(words[:200]))
    b = a[:len(a) // 2] + tok.encode(' '.join(words[300:340]))
    fed = tok.encode(' '.join(words[400:440]))[:feed]
    with torch.inference_mode():
        dec.start(a, 8, reuse=False); dec.prefill(); dec.end(tokens=[])  # the cache holds `a`
        assert dec.start(b, feed + 1) == len(a) // 2  # cut back to the common beginning
        dev = dec.model.device
        warm = torch.cat([dec.prefill()] + [dec.step(torch.tensor([t], device=dev)).clone() for t in fed])
        dec.end()
    cold = dec.logits_for(b, fed)
    return ((warm - cold).abs().max() / cold.abs().max()).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', choices=list(SIZES), default='mid')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--rounds', type=int, default=6, help='messages in the conversation')
    ap.add_argument('--words', type=int, default=120, help='words per message')
    ap.add_argument('--reply', type=int, default=32, help='new tokens per reply')
    ap.add_argument('--decode', choices=['eager', 'graph', 'compile'], default='eager')
    a = ap.parse_args()
    dev = torch.device(a.device)
    with tempfile.TemporaryDirectory() as d: _, tok = load_demo(Path(d))
    dtype = torch.float16 if dev.type == 'cuda' else torch.float32
    cfg = {**CHATGLM2_6B_CONFIG, **SIZES[a.size], 'padded_vocab_size': tok.vocab_size}
    model = prepare(random_chatglm2(cfg, device=dev, dtype=dtype), dev, dtype, upcast=False)
    engine = TransformersEngine(model, GLMFormat(tok), name=f'random ChatGLM2 ({a.size})', decode=a.decode)
    if a.decode != 'eager': engine.warm_up()  # records or compiles the step, or falls back to eager (logged)
    words = ' '.join(DEMO_CORPUS).split()
    history, rows, same = [], [], 0
    for r in range(a.rounds):
        message = ' '.join(words[(r * a.words + i) % len(words)] for i in range(a.words))
        req = ChatRequest(message=message, history=history, settings={'temperature': 0, 'maxResponseTokens': a.reply})
        warm = engine.generate(req)  # from the cache the previous round left
        engine.decoder.end()  # drop it: the same request from an empty cache
        cold = engine.generate(req)
        same += warm.text == cold.text
        if dtype == torch.float32: assert warm.text == cold.text, 'the kept cache changed the reply'
        rows.append((r + 1, cold.prompt_tokens, warm.reused, cold.first_token_s, warm.first_token_s))
        history += [{'role': 'user', 'content': message}, {'role': 'assistant', 'content': cold.text}]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f'{engine.name}: {params:.0f}M parameters, {dtype}, {dev}, decode {engine.decode}; {a.words} words per message, '
          f'{a.reply} new tokens per reply')
    print(f'{"round":>5} {"prompt":>7} {"cached":>7} {"first token, empty cache":>25} {"from the kept cache":>20} {"ratio":>6}')
    for r, n, kept, cold_s, warm_s in rows:
        print(f'{r:>5} {n:>7} {kept:>7} {cold_s:>23.3f} s {warm_s:>18.3f} s {cold_s / warm_s:>6.1f}')
    print(f'the same reply from the kept cache as from an empty one in {same} of {a.rounds} rounds'
          + ('' if dtype == torch.float32 else f' (in {str(dtype)[6:]}, a prompt run in two parts rounds differently, and a near tie can change a greedy token)'))
    diff = kept_cache_error(engine.decoder, words, tok)
    print(f'logits continuing from a cut-back kept cache against an empty cache: largest difference {diff:.2g} of the largest logit')
    assert diff < (1e-4 if dtype == torch.float32 else 2e-2), 'the kept cache changed the logits'
    later = rows[1:]
    print(f'follow-ups (rounds 2 to {a.rounds}): {sum(r[3] for r in later):.2f} s from empty caches, '
          f'{sum(r[4] for r in later):.2f} s from kept ones; median ratio {statistics.median(r[3] / r[4] for r in later):.1f}')


if __name__ == '__main__':
    main()
