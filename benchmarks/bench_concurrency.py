"""Many conversations at once: 1, 2, 4, 8 and 16 concurrent streams on the engine that decodes them together
(`max_batch` 16) beside the engine that writes one reply at a time (`max_batch` 1), in one run, three ways: the
engine called directly, the app's streaming chat route of a real connector process, and its OpenAI `/v1` chat streams.

    nice -n 19 python benchmarks/bench_concurrency.py --quick        # demo and wide-bf16, 8 tokens a stream: a few minutes on 2 cores
    nice -n 19 python benchmarks/bench_concurrency.py [--models demo,wide-bf16,wide-8bit] [--paths engine,app,v1]
        [--tokens 32] [--streams 1,2,4,8,16] [--cache DIR]
    nice -n 19 python benchmarks/bench_concurrency.py --models wide-bf16 --paths engine --streams 1 --tokens 8 \
        --arrival-tokens 300,1000 --arrival-rounds 3 --chunk-costs            # where a newcomer's first token goes

Paths. `engine`: each stream is a thread calling the engine's `generate`, as the server's `Worker` runs a request; a
token's time is when its row's chooser picks it (a `constrain` wrapper that only records the time). `app`: each stream
is a POST to a connector's `/chat/stream`, read line by line as the app reads it (`app_stream`); `v1`: each stream is a
`/v1/chat/completions` request with `stream: true`, read chunk by chunk. Over HTTP a token's time is when its line or
chunk arrives, and a stream's first token is timed from the request's first byte. The engine counts the tokens chosen
and `/v1` its usage chunk; the app's lines carry no count, so an app stream counts its budget, which the random wide
models always spend (their `/v1` counts are checked; the demo may end a reply early, and its table says so). Two connector processes run per
model, started as the app starts one: `--max-batch 1` (serial) and `--max-batch 16` (batched).

Per configuration: aggregate new tokens per second (all streams' tokens over the wall time), each stream's
first-token time (p50, p99) and the gaps between a stream's tokens (p50, p99). Then, on the engine: one stream alone,
serial and batched engines interleaved (the one-user ratio), and a long prompt (about 1,000 tokens) arriving while
four streams run, with where its first-token time goes (see `arrival`; `--arrival-tokens` takes several lengths and
`--arrival-rounds` repeats them); with `--chunk-costs`, what chunks of prompt cost alone and beside four decoding rows.

Models: `demo` (the 2-layer toy; the connector's `--demo` is the same model), `wide-bf16` (a random ChatGLM2 of the
6B's width, 2 layers, bfloat16, its full 65,024-token vocabulary, written once as a checkpoint folder that the
engine and the connectors load alike), `wide-8bit` (the same folder loaded with `--quantize 8bit`). The checkpoint's
tokenizer is the demo's with pieces appended to ChatGLM2's 64,794 (`bench_structured.glm2_sized_tokenizer`), so every
token is text; the output rows of the ids that end a reply or decode to nothing are scaled down a thousandfold, so
that every stream writes its whole budget (a random model would otherwise stop at an end token now and then).

It prints figures; it asserts nothing but the token counts (timings on a shared machine are noisy: compare the
columns of one run)."""
import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent)); sys.path.insert(0, str(HERE))
from fc_chatglm.engine import TransformersEngine  # noqa: E402
from fc_chatglm.load import LoadOptions, load_engine  # noqa: E402
from fc_chatglm.schemas import ChatRequest  # noqa: E402
from fc_chatglm.testing import app_stream, start_connector, wait_ready  # noqa: E402
from common import quantile  # noqa: E402

MESSAGES = ['Hi', 'Tell me a story', 'What is the weather like?', '你好', 'Why?', 'Learning to program takes patience',
            'Numbers like 1, 2, 3', 'Let us take a walk in the park']
RUN = itertools.count()  # numbers each message: no kept cache holds a stream's prompt beyond the format's first tokens
SERIAL, BATCHED = 1, 16  # max_batch of the two engines and connectors


def wide_folder(cache: Path) -> Path:
    "The random 6B-width, 2-layer ChatGLM2 checkpoint (bfloat16) with a ChatGLM2-sized tokenizer, written once under `cache`."
    folder = cache/'chatglm2-6b-width-2-layers'
    if (folder/'tokenizer.model').is_file(): return folder
    from bench_structured import glm2_sized_tokenizer
    from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2, save_chatglm2
    tok = glm2_sized_tokenizer(cache/'tokenizer')
    with torch.inference_mode():
        model = random_chatglm2({**CHATGLM2_6B_CONFIG, 'num_layers': 2}, seed=0, dtype=torch.bfloat16)
        quiet = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, *range(tok.n_sp, model.config.vocab_size)]
        model.lm_head.weight[[i for i in quiet if i is not None and i >= 0]] *= 1e-3  # ends and non-text ids: never the largest logit
        save_chatglm2(model, cache/'part', 'safetensors', shards=1, dtype=torch.bfloat16)
    shutil.copy(tok.model_file, cache/'part'/'tokenizer.model')
    (cache/'part').replace(folder)
    return folder


def model_options(name: str, cache: Path) -> tuple[LoadOptions, list[str]]:
    "How the engine loads model `name`, and the connector's options that load the same."
    if name == 'demo': return LoadOptions(demo=True, demo_dir=cache/'demo', device='cpu', decode='direct'), ['--demo', '--device', 'cpu']
    folder = wide_folder(cache)
    quant = {'wide-8bit': '8bit'}.get(name)
    args = ['--model', str(folder), '--device', 'cpu', '--dtype', 'bfloat16', '--decode', 'direct'] + (['--quantize', quant] if quant else [])
    return LoadOptions(model=folder, device='cpu', dtype='bfloat16', quantize=quant, decode='direct'), args


def timing(times: list):
    "A `constrain` wrapper that records when each token is chosen, and changes nothing."
    def wrap(sampler):
        def choose(logits):
            token = sampler(logits); times.append(time.perf_counter()); return token
        return choose
    return wrap


def message(i: int, words: int = 0) -> str: return f'{next(RUN)} ' + MESSAGES[i % len(MESSAGES)] + ' word' * words


def engine_stream(engine, i: int, tokens: int) -> tuple[float, list[float], int]:
    "One stream through the engine: its start, its tokens' times, its token count."
    times, t0 = [], time.perf_counter()
    engine.generate(ChatRequest(message=message(i), settings={'temperature': 0, 'maxResponseTokens': tokens}), None, lambda s: None, timing(times))
    return t0, times, len(times)


def app_http_stream(base: str, i: int, tokens: int) -> tuple[float, list[float], int]:
    "One stream through the app's route: its start, each line's time (a line per token that adds text), and its budget, `tokens` (the app's lines carry no count)."
    times, t0 = [], time.perf_counter()
    body = json.dumps({'message': message(i), 'history': [], 'settings': {'temperature': 0, 'maxResponseTokens': tokens}}).encode()
    _, done = app_stream(base, '/chat/stream', body, on_line=lambda reply, sock: times.append(time.perf_counter()), timeout=600)
    assert done, 'the stream ended without [DONE]'
    return t0, times, tokens


MODELS = {}  # base URL -> the model its /v1/models lists


def v1_model(base: str) -> str:
    if base not in MODELS: MODELS[base] = httpx.get(base + '/v1/models').json()['data'][0]['id']
    return MODELS[base]


def v1_stream(base: str, i: int, tokens: int) -> tuple[float, list[float], int]:
    "One `/v1` chat stream: its start, each content chunk's time, and its completion tokens (the usage chunk)."
    times, used, t0 = [], None, time.perf_counter()
    body = {'model': v1_model(base), 'messages': [{'role': 'user', 'content': message(i)}], 'stream': True, 'temperature': 0,
            'max_tokens': tokens, 'stream_options': {'include_usage': True}}
    with httpx.stream('POST', base + '/v1/chat/completions', json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith('data: ') or line == 'data: [DONE]': continue
            chunk = json.loads(line[6:])
            if chunk.get('usage'): used = chunk['usage']['completion_tokens']
            if any(c['delta'].get('content') for c in chunk.get('choices', [])): times.append(time.perf_counter())
    return t0, times, used if used is not None else len(times)


def run_streams(stream, n: int, tokens: int) -> dict:
    "`n` streams at once, each `stream(i, tokens)`; their figures."
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool: out = list(pool.map(lambda i: stream(i, tokens), range(n)))
    wall = time.perf_counter() - t0
    made = sum(c for _, _, c in out)
    firsts = sorted(t[0] - s for s, t, _ in out if t)
    gaps = sorted(b - a for _, t, _ in out for a, b in zip(t, t[1:]))
    return {'tok/s': made / wall, 'tokens': made, 'first p50': quantile(firsts, 0.5), 'first p99': quantile(firsts, 0.99),
            'gap p50': 1000 * quantile(gaps, 0.5), 'gap p99': 1000 * quantile(gaps, 0.99)}


def table(rows: list[dict], cols: list[str]):
    print('| ' + ' | '.join(cols) + ' |'); print('|' + '---|' * len(cols))
    for r in rows: print('| ' + ' | '.join(f'{r[c]:.3g}' if isinstance(r[c], float) else str(r[c]) for c in cols) + ' |')


class StepLog:
    "The batch's steps, timed: (start, end, each row's ids) for every step of `engine`'s batcher while installed."
    def __init__(self, engine):
        self.rows, self.steps = engine.batcher.rows, []
        self.step = self.rows.step
        def timed(caches, ids):
            t0 = time.perf_counter(); out = self.step(caches, ids)
            self.steps.append((t0, time.perf_counter(), [len(x) for x in ids])); return out
        self.rows.step = timed
    def close(self): self.rows.step = self.step


def words_for(engine, tokens: int) -> int:
    "How many times the word 'word' makes about `tokens` prompt tokens in `engine`'s tokenizer."
    return max(1, round(tokens * 100 / len(engine.fmt.tok.encode('word ' * 100, prefix=False))))


def prompt_alone(engine, words: int) -> float:
    "Seconds to the first token of a long prompt on the idle engine, none of it held by a kept cache: the arrival's prompt time."
    times, t0 = [], time.perf_counter()
    engine.generate(ChatRequest(message=f'alone {next(RUN)} ' + 'word ' * words, settings={'temperature': 0, 'maxResponseTokens': 1}),
                    None, lambda s: None, timing(times))
    return times[0] - t0


def arrival(engine, words: int, running: int = 4, tokens: int = 96) -> dict:
    """`running` streams decoding, then a long prompt arrives (none of it in a kept cache). Its first token's time,
    against its prompt time alone (`prompt_alone`, the median of two, taken just before), in the running streams' usual
    step: the steps over prompt time, the chunk steps that read it (each also a step of the running streams, who
    are owed it), and what is left (the wait for the step under way, reading in chunks instead of at once, the last
    chunk's sample); and the running streams' worst gap meanwhile against their usual gap."""
    alone = statistics.median(prompt_alone(engine, words) for _ in range(2))
    times, late, log = [[] for _ in range(running)], [], StepLog(engine)
    req = lambda m, n: ChatRequest(message=m, settings={'temperature': 0, 'maxResponseTokens': n})
    def one(i): engine.generate(req(message(i), tokens), None, lambda s: None, timing(times[i]))
    try:
        with ThreadPoolExecutor(running + 1) as pool:
            streams = [pool.submit(one, i) for i in range(running)]
            while min(len(t) for t in times) < 6: time.sleep(0.001)
            t0 = time.perf_counter()
            pool.submit(engine.generate, req(f'long {next(RUN)} ' + 'word ' * words, 4), None, lambda s: None, timing(late)).result()
            for f in streams: f.result()
    finally: log.close()
    first = late[0] - t0
    plain = [b - a for a, b, n in log.steps if len(n) == running and max(n) == 1 and b < t0]  # steps of the running rows alone
    step = statistics.median(plain)
    chunks = [(a, b, max(n)) for a, b, n in log.steps if max(n) > 1 and a >= t0]
    gaps = lambda keep: [b - a for t in times for a, b in zip(t, t[1:]) if keep(a, b)]
    before, during = gaps(lambda a, b: b < t0), gaps(lambda a, b: t0 <= b <= late[0])
    after = gaps(lambda a, b: a >= late[0])[:len(during)]  # as many gaps without an arrival: how much the machine alone varies them
    usual = statistics.median(before)
    return {'prompt tokens': sum(n for *_, n in chunks), 'alone s': alone, 'first s': first, 'step ms': 1000 * step,
            'over alone steps': (first - alone) / step, 'chunks': len(chunks),
            'left steps': (first - alone - len(chunks) * step) / step,
            'wait ms': 1000 * (chunks[0][0] - t0) if chunks else float('nan'),
            'chunk steps': [round((b - a) / step, 2) for a, b, _ in chunks], 'chunk tokens': [n for *_, n in chunks],
            'usual gap ms': 1000 * usual, 'worst gap ratio': max(during) / usual if during else float('nan'),
            'worst gap after ratio': max(after) / usual if after else float('nan')}


def chunk_costs(engine, sizes=(64, 128, 192, 256, 512), running: int = 4, repeats: int = 5) -> list[dict]:
    """What a chunk of prompt costs: `n` prompt tokens read alone, and beside `running` decoding rows in one batch
    step, in plain steps of those rows (the fastest of `repeats`); and the first token's delay that chunking adds."""
    rows, V = engine.batcher.rows, 1000
    best = lambda f: min(timed(f) for _ in range(repeats))
    def timed(f): t = time.perf_counter(); f(); return time.perf_counter() - t
    with torch.inference_mode():
        dec = []
        for i in range(running):
            c = rows.new(); rows.prefill(c, [i + 5] * 40); dec.append(c)
        one = lambda: [torch.tensor([7]) for _ in dec]
        def step(extra=None, ids=None):
            rows.step(dec + ([extra] if extra else []), one() + ([ids] if extra else []))
            for c in dec: c.crop(-1)
        plain = best(step)
        out = []
        for n in sizes:
            j = rows.new(); rows.prefill(j, [9] * 20); ids = torch.arange(10, 10 + n)
            def alone(): rows.step([j], [ids]); j.crop(-n)
            def beside(): step(j, ids); j.crop(-n)
            a, b = best(alone), best(beside)
            out.append({'chunk tokens': n, 'alone steps': a / plain, 'beside steps': b / plain, 'beside - alone': (b - a) / plain,
                        'ms a token beside': 1000 * (b - plain) / n})
    print(f'\nchunk costs ({running} decoding rows; a plain step {1000 * plain:.3g} ms; fastest of {repeats}):\n')
    table(out, list(out[0]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', default='demo,wide-bf16')
    ap.add_argument('--paths', default='engine,app,v1', help='engine (generate in this process), app (/chat/stream), v1 (/v1 chat streams)')
    ap.add_argument('--tokens', type=int, default=32, help='new tokens per stream')
    ap.add_argument('--streams', default='1,2,4,8,16')
    ap.add_argument('--single', type=int, default=96, help='tokens of the one-user comparison')
    ap.add_argument('--rounds', type=int, default=3, help='rounds of the one-user comparison')
    ap.add_argument('--arrival-tokens', default='1000', help='the arriving prompt\'s length, about; several: 300,1000')
    ap.add_argument('--arrival-rounds', type=int, default=1, help='arrivals of each length, one after another')
    ap.add_argument('--chunk-costs', action='store_true', help='also time chunks of prompt alone and beside four decoding rows')
    ap.add_argument('--quick', action='store_true', help='demo and wide-bf16, 8 tokens a stream, one round: a few minutes on 2 cores')
    ap.add_argument('--cache', type=Path, help='keep the checkpoint written for the wide models here (default: a temporary folder)')
    a = ap.parse_args()
    if a.quick: a.tokens, a.single, a.rounds = 8, 32, 1
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}')
    counts, paths = [int(s) for s in a.streams.split(',')], a.paths.split(',')
    with tempfile.TemporaryDirectory() as tmp:
        cache = a.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for name in a.models.split(','):
            opts, args = model_options(name, cache)
            loaded = load_engine(opts)
            engines = {k: TransformersEngine(loaded.model, loaded.fmt, name=name, decode='direct', window=loaded.window, max_batch=m)
                       for k, m in (('serial', SERIAL), ('batched', BATCHED))}
            del loaded
            procs, bases = [], {}
            try:
                if {'app', 'v1'} & set(paths):
                    for k, m in (('serial', SERIAL), ('batched', BATCHED)):
                        p, bases[k] = start_connector(*args, '--embedding', 'off', '--max-batch', str(m), timeout=600)
                        procs.append(p); wait_ready(bases[k], timeout=600, proc=p)
                stream = {'engine': lambda k: lambda i, n: engine_stream(engines[k], i, n),
                          'app': lambda k: lambda i, n: app_http_stream(bases[k], i, n),
                          'v1': lambda k: lambda i, n: v1_stream(bases[k], i, n)}
                for path in paths:
                    for k in ('serial', 'batched'): run_streams(stream[path](k), 2, 4)  # warm-up
                rows, short = {p: [] for p in paths}, {}
                for n in counts:
                    for path in paths:
                        s, b = (run_streams(stream[path](k), n, a.tokens) for k in ('serial', 'batched'))
                        if path != 'app': assert s['tokens'] == b['tokens'] == n * a.tokens or name == 'demo', (path, n, s, b)
                        short[path] = short.get(path, 0) + 2 * n * a.tokens - s['tokens'] - b['tokens']
                        rows[path].append({'streams': n, 'serial tok/s': s['tok/s'], 'batched tok/s': b['tok/s'], 'gain': b['tok/s'] / s['tok/s'],
                                           'serial first p50/p99 s': f"{s['first p50']:.3g}/{s['first p99']:.3g}",
                                           'batched first p50/p99 s': f"{b['first p50']:.3g}/{b['first p99']:.3g}",
                                           'serial gap p50/p99 ms': f"{s['gap p50']:.3g}/{s['gap p99']:.3g}",
                                           'batched gap p50/p99 ms': f"{b['gap p50']:.3g}/{b['gap p99']:.3g}"})
                    print(f'  {name}: {n} streams done', file=sys.stderr, flush=True)
            finally:
                for p in procs: p.kill(); p.wait()
            for path in paths:
                print(f'\n## {name}, {path}: {a.tokens} new tokens per stream, greedy; serial = max_batch {SERIAL}, batched = max_batch {BATCHED}\n')
                table(rows[path], list(rows[path][0]))
                if short.get(path): print(f'\n({short[path]} tokens fewer than the budgets: replies that ended early)')
            if 'engine' in paths:
                one = {'serial': [], 'batched': []}
                for _ in range(a.rounds):
                    for k in one: one[k].append(run_streams(stream['engine'](k), 1, a.single)['tok/s'])
                s, b = statistics.median(one['serial']), statistics.median(one['batched'])
                print(f'\none stream, {a.single} tokens, median of {a.rounds} interleaved: serial {s:.4g} tok/s, batched engine {b:.4g} tok/s, '
                      f'ratio batched/serial {b / s:.3f}')
                if a.chunk_costs: chunk_costs(engines['batched'])
                for tokens in [int(t) for t in a.arrival_tokens.split(',')] * a.arrival_rounds:
                    r = arrival(engines['batched'], words_for(engines['batched'], tokens))
                    print(f"a {r['prompt tokens']}-token prompt arriving while 4 streams run: first token after {r['first s']:.3g} s, "
                          f"alone {r['alone s']:.3g} s; the usual step {r['step ms']:.3g} ms, so {r['over alone steps']:.1f} steps over its prompt time: "
                          f"{r['chunks']} chunk steps (each also a step of the running streams) and {r['left steps']:.2f} steps besides "
                          f"(the wait for the step under way {r['wait ms']:.3g} ms). Chunks (tokens): {r['chunk tokens']}; their steps in usual "
                          f"steps: {r['chunk steps']}. Running streams: usual gap {r['usual gap ms']:.3g} ms, worst during the arrival "
                          f"{r['worst gap ratio']:.2f}x their usual gap (as many gaps after it, no arrival: worst {r['worst gap after ratio']:.2f}x)")
            del engines


if __name__ == '__main__': main()
