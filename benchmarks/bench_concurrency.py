"""Many conversations at once: 1, 2, 4, 8 and 16 concurrent streams on the engine that decodes them together
(`max_batch` = the streams) beside the engine that writes one reply at a time (`max_batch` 1), in one run.

    nice -n 19 python benchmarks/bench_concurrency.py [--models demo,wide-bf16,wide-8bit] [--tokens 32] [--streams 1,2,4,8,16]

Each stream is a thread calling the engine's `generate`, as the server's `Worker` runs a request (the engine, without
HTTP: the wire adds the same to both). A token's time is when its row's chooser picks it (a `constrain` wrapper that
only records the time). Per configuration: aggregate new tokens per second (all streams' tokens over the wall time),
each stream's first-token time (p50, worst), and the gaps between a stream's tokens (p50, p99). Then one stream alone,
serial and batched engines interleaved (the one-user ratio), and a long prompt arriving while four streams run:
its first-token time against the same prompt alone, and the running streams' gaps meanwhile.

Models: `demo` (the 2-layer toy), `wide-bf16` (a random ChatGLM2 of the 6B's width, 2 layers, bfloat16, its full
65,024-token vocabulary), `wide-8bit` (the same with 8-bit linear layers, `03c_quantize`). It prints figures; it asserts
nothing (timings on a shared machine are noisy: compare the columns of one run)."""
import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2  # noqa: E402
from fc_chatglm.demo import load_demo  # noqa: E402
from fc_chatglm.engine import GLMFormat, TransformersEngine  # noqa: E402
from fc_chatglm.schemas import ChatRequest  # noqa: E402
from fc_chatglm.speedups import prepare  # noqa: E402

MESSAGES = ['Hi', 'Tell me a story', 'What is the weather like?', '你好', 'Why?', 'Learning to program takes patience',
            'Numbers like 1, 2, 3', 'Let us take a walk in the park']
RUN = itertools.count()  # numbers each message: no kept cache holds a stream's prompt beyond the format's first tokens


class WideFormat(GLMFormat):
    "The demo tokenizer's format for a model with ChatGLM2's 65,024 tokens: an id past the tokenizer's is read modulo its size."
    def decode(self, ids) -> str: return self.tok.decode([i % self.tok.vocab_size for i in ids])


def load(name: str, folder: Path):
    "The model and format called `name`."
    model, tok = load_demo(folder)
    if name == 'demo': return model, GLMFormat(tok)
    cfg = {**CHATGLM2_6B_CONFIG, 'num_layers': 2}
    with torch.inference_mode():
        wide = prepare(random_chatglm2(cfg, seed=0, dtype=torch.bfloat16), 'cpu', torch.bfloat16)
        if name == 'wide-8bit':
            from fc_chatglm.quantize import int8_kernel_refusal, int8_linears
            int8_linears(wide, int8_kernel_refusal() is None)
    return wide, WideFormat(tok)


def timing(times: list):
    "A `constrain` wrapper that records when each token is chosen, and changes nothing."
    def wrap(sampler):
        def choose(logits):
            token = sampler(logits); times.append(time.perf_counter()); return token
        return choose
    return wrap


def run_streams(engine, n: int, tokens: int, prompt_words: int = 0) -> dict:
    "`n` streams at once; their figures."
    times = [[] for _ in range(n)]
    def one(i):
        msg = f'{next(RUN)} ' + MESSAGES[i % len(MESSAGES)] + ' word' * prompt_words
        t0 = time.perf_counter()
        engine.generate(ChatRequest(message=msg, settings={'temperature': 0, 'maxResponseTokens': tokens}), None, lambda s: None, timing(times[i]))
        return t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool: starts = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    made = sum(len(t) for t in times)
    firsts = [t[0] - s for t, s in zip(times, starts) if t]
    gaps = sorted(b - a for t in times for a, b in zip(t, t[1:]))
    q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float('nan')
    return {'streams': n, 'tok/s': made / wall, 'first p50 s': statistics.median(firsts), 'first max s': max(firsts),
            'gap p50 ms': 1000 * q(gaps, 0.5), 'gap p99 ms': 1000 * q(gaps, 0.99), 'tokens': made}


def arrival(engine, tokens: int, prompt_words: int) -> dict:
    "Four streams running, then a long prompt arrives (one no kept cache holds): its first-token time, and the running streams' gaps before and during it."
    times, late = [[] for _ in range(4)], []
    req = lambda m, n: ChatRequest(message=m, settings={'temperature': 0, 'maxResponseTokens': n})
    def one(i): engine.generate(req(f'{next(RUN)} ' + MESSAGES[i], tokens), None, lambda s: None, timing(times[i]))
    with ThreadPoolExecutor(5) as pool:
        running = [pool.submit(one, i) for i in range(4)]
        while min(len(t) for t in times) < 4: time.sleep(0.001)
        t0 = time.perf_counter()
        pool.submit(engine.generate, req('long ' + 'word ' * prompt_words, 4), None, lambda s: None, timing(late)).result()
        for f in running: f.result()
    first = late[0] - t0
    gaps = lambda keep: [b - a for t in times for a, b in zip(t, t[1:]) if keep(a, b)]
    before, during = gaps(lambda a, b: b < t0), gaps(lambda a, b: t0 <= b <= late[0])
    return {'arrival first s': first, 'usual gap ms': 1000 * statistics.median(before) if before else float('nan'),
            'worst gap during ms': 1000 * max(during) if during else float('nan')}


def prompt_alone(engine, prompt_words: int, first: str) -> float:
    "Seconds to the first token of a long prompt on an idle engine (`first`: its first word, so that no kept cache holds it)."
    times = []
    t0 = time.perf_counter()
    engine.generate(ChatRequest(message=first + ' ' + 'word ' * prompt_words, settings={'temperature': 0, 'maxResponseTokens': 1}),
                    None, lambda s: None, timing(times))
    return times[0] - t0


def table(rows: list[dict], cols: list[str]):
    print('| ' + ' | '.join(cols) + ' |'); print('|' + '---|' * len(cols))
    for r in rows: print('| ' + ' | '.join(f'{r[c]:.3g}' if isinstance(r[c], float) else str(r[c]) for c in cols) + ' |')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', default='demo,wide-bf16')
    ap.add_argument('--tokens', type=int, default=32)
    ap.add_argument('--streams', default='1,2,4,8,16')
    ap.add_argument('--single', type=int, default=96, help='tokens of the one-user comparison')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--arrival-words', type=int, default=500, help='the arriving prompt: "word" this many times (about 2 tokens each)')
    a = ap.parse_args()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}')
    counts = [int(s) for s in a.streams.split(',')]
    with tempfile.TemporaryDirectory() as d:
        for name in a.models.split(','):
            model, fmt = load(name, Path(d))
            serial = TransformersEngine(model, fmt, name=name, decode='direct', window=8192, max_batch=1)
            batched = TransformersEngine(model, fmt, name=name, decode='direct', window=8192, max_batch=max(counts + [5]))  # 5: the arrival joins 4 streams
            for e in (serial, batched): run_streams(e, 2, 4)  # warm-up
            print(f'\n## {name}: {a.tokens} new tokens per stream, greedy; serial = max_batch 1, batched = max_batch {batched.max_batch}\n')
            rows = []
            for n in counts:
                s, b = run_streams(serial, n, a.tokens), run_streams(batched, n, a.tokens)
                rows.append({'streams': n, 'serial tok/s': s['tok/s'], 'batched tok/s': b['tok/s'], 'gain': b['tok/s'] / s['tok/s'],
                             'serial first p50/max s': f"{s['first p50 s']:.3g}/{s['first max s']:.3g}",
                             'batched first p50/max s': f"{b['first p50 s']:.3g}/{b['first max s']:.3g}",
                             'serial gap p50/p99 ms': f"{s['gap p50 ms']:.3g}/{s['gap p99 ms']:.3g}",
                             'batched gap p50/p99 ms': f"{b['gap p50 ms']:.3g}/{b['gap p99 ms']:.3g}"})
                print(f'  {n} streams done', file=sys.stderr)
            table(rows, list(rows[0]))
            one = {'serial': [], 'batched': []}
            for _ in range(a.rounds):
                for k, e in (('serial', serial), ('batched', batched)): one[k].append(run_streams(e, 1, a.single)['tok/s'])
            s, b = statistics.median(one['serial']), statistics.median(one['batched'])
            print(f'\none stream, {a.single} tokens, median of {a.rounds} interleaved: serial {s:.4g} tok/s, batched engine {b:.4g} tok/s, '
                  f'ratio batched/serial {b / s:.3f}')
            alone = statistics.median(prompt_alone(batched, a.arrival_words, f'alone{i}') for i in range(3))
            arr = arrival(batched, max(a.tokens, 64), a.arrival_words)
            print(f'a {a.arrival_words}-word prompt (about {len(batched.prompt(ChatRequest(message="long " + "word " * a.arrival_words), 4).ids)} tokens) '
                  f'arriving while 4 streams run (its prompt read in chunks that ride in the batch steps): first token after {arr["arrival first s"]:.3g} s '
                  f'(alone: {alone:.3g} s); the running streams\' usual gap {arr["usual gap ms"]:.3g} ms, worst during the arrival '
                  f'{arr["worst gap during ms"]:.3g} ms')
            del model, serial, batched


if __name__ == '__main__': main()
