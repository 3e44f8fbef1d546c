"""Benchmark of the upstream engine (nbs/07c_upstream.ipynb) against llm-katan's echo server on loopback: a 256-token
stream's tokens/s through the connector (the app's chat-stream, and the connector's own /v1) against the same stream
straight from the upstream, the time the connector adds to the first token, and 16 streams at once through it.

    python benchmarks/bench_upstream.py [--tokens 256] [--rounds 15] [--itl-ms 5] [--streams 16]
    python benchmarks/bench_upstream.py --upstream http://127.0.0.1:8000/v1 --model chatglm2-6b --sweep 1,8,32 [--extra '{...}']

The second form measures a running server instead (vLLM on a GPU: benchmarks/gpu_upstream.sh): the total tokens/s of 1, 8
and 32 streams at once, straight from it and through a connector in front of it.

llm-katan (`pip install llm-katan`) writes `--itl-ms` between two chunks of 4 characters, each counted as a token here
(5 ms: 200 tokens/s per stream, faster than a 6B model decodes one stream on a GPU). `--itl-ms 0` measures the
connector's own cost per token, unpaced. It prints figures; it asserts nothing (timings on a shared machine are noisy).

A byte relay in its own process (it parses nothing) is measured beside the connector: the cost of one more process on
the way, alone. The time added to the first token is measured on short streams (about 30 tokens), each way asked twice in a row
and the second measured: every process on its way has just served a request, as a server in use has. The long streams'
first tokens are printed too, but there each process on a way sat idle through the other ways' streams, and on some
virtual machines a process that sat idle answers far slower: on this one llm-katan's own first token rises from about
12 ms right after a request to 20-60 ms after 1.4 s idle, and a connector's /health from about 1 ms to 25-55 ms: the
first touch of each page of memory after such a pause costs about 8 us there, with no page fault in the kernel's counts.
The benchmark prints that cost, measured on the upstream alone."""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.launch import PROJECT  # noqa: E402
from fc_chatglm.testing import start_connector, wait_ready  # noqa: E402

KEY = 'bench'
CHARS = 4  # llm-katan's echo backend streams 4 characters per chunk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start_katan(itl_ms: int) -> tuple[subprocess.Popen, str]:
    "llm-katan's echo server on a free loopback port; its /v1 URL once it answers."
    port = free_port()
    p = subprocess.Popen([sys.executable, '-c', 'from llm_katan.cli import main; main()', '--model', 'echo', '--backend', 'echo',
                          '--host', '127.0.0.1', '--port', str(port), '--disable-dashboard', '--log-level', 'error',
                          '--max-concurrent', '64', '--itl-ms', str(itl_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}/v1'
    for _ in range(300):
        try: httpx.get(url + '/models', headers={'Authorization': f'Bearer {KEY}'}); return p, url
        except httpx.TransportError: time.sleep(0.1)
    p.kill(); raise RuntimeError('llm-katan did not start')


RELAY = """
import asyncio, sys
async def pipe(r, w):
    try:
        while data := await r.read(65536): w.write(data)
    finally: w.close()
async def handle(r, w):
    tr, tw = await asyncio.open_connection('127.0.0.1', int(sys.argv[2]))
    await asyncio.gather(pipe(r, tw), pipe(tr, w), return_exceptions=True)
async def main():
    srv = await asyncio.start_server(handle, '127.0.0.1', int(sys.argv[1]))
    print('ready', flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


def start_relay(url: str) -> tuple[subprocess.Popen, str]:
    "A byte relay in its own process, in front of the upstream at `url` (it parses nothing): the cost of one more hop alone."
    port, target = free_port(), url.rsplit(':', 1)[1].split('/')[0]
    p = subprocess.Popen([sys.executable, '-c', RELAY, str(port), target], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    return p, f'http://127.0.0.1:{port}/v1'


def message(tokens: int) -> str:
    "A message whose echo streams about `tokens` chunks (the echo's header line takes about 30)."
    return 'x' * (CHARS * (tokens - 30))


CLIENT = httpx.Client(headers={'Authorization': f'Bearer {KEY}'}, timeout=60)  # keeps its connections, as the connector's does


def direct(url: str, text: str) -> tuple[float, float, int]:
    "Seconds to the first content chunk and to [DONE], and the chunks, straight from the upstream's SSE."
    body = {'model': 'echo', 'messages': [{'role': 'user', 'content': text}], 'max_tokens': 800, 'stream': True}
    t0, first, n = time.perf_counter(), None, 0
    with CLIENT.stream('POST', url + '/chat/completions', json=body) as r:
        for line in r.iter_lines():
            if line.startswith('data: {') and (json.loads(line[6:])['choices'] or [{}])[0].get('delta', {}).get('content'):
                n += 1; first = first or time.perf_counter() - t0
    return first, time.perf_counter() - t0, n


def app(base: str, text: str) -> tuple[float, float, str]:
    """Seconds to the first content line and to [DONE] of the app's chat-stream, and the reply; on the same kept-alive client as
    the others (the app's HttpClient keeps its connections alive too: a new connection per request would add its own setup)."""
    body = {'message': text, 'settings': {'temperature': 0.4, 'maxResponseTokens': 800}}
    t0, first, reply = time.perf_counter(), None, ''
    with CLIENT.stream('POST', base + '/chat/stream', json=body) as r:
        for line in r.iter_lines():
            line = line.strip()
            if line.startswith('{'): reply = json.loads(line)['content']; first = first or time.perf_counter() - t0
            if line == '[DONE]': return first, time.perf_counter() - t0, reply
    raise RuntimeError('the stream ended without [DONE]')


def katan_idle(url: str, text: str, pause: float = 1.4) -> tuple[float, float]:
    "llm-katan's first token right after another request, and after `pause` seconds idle: what idling costs on this machine."
    def after(seconds: float) -> float:
        direct(url, text); time.sleep(seconds); return direct(url, text)[0]
    return statistics.median(after(0) for _ in range(5)), statistics.median(after(pause) for _ in range(5))


def v1(base: str, text: str) -> tuple[float, float, int]:
    "The same through the connector's own /v1 (server-sent events again)."
    return direct(base + '/v1', text)


def stream_tokens(url: str, model: str, extra: dict, tokens: int) -> int:
    "One streamed chat completion of `tokens` tokens from the OpenAI API at `url`; the completion tokens its usage counts (or its chunks)."
    body = {'model': model, 'messages': [{'role': 'user', 'content': 'Tell me a long story.'}], 'max_tokens': tokens, 'temperature': 0.7,
            'stream': True, 'stream_options': {'include_usage': True}, **extra}
    n, used = 0, None
    with CLIENT.stream('POST', url + '/chat/completions', json=body, timeout=600) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith('data: {'): continue
            event = json.loads(line[6:])
            if event.get('usage'): used = event['usage']['completion_tokens']
            if (event.get('choices') or [{}])[0].get('delta', {}).get('content'): n += 1
    return used or n


def sweep(url: str, base: str, model: str, extra: dict, levels: list[int], tokens: int):
    "Total tokens/s of `levels` streams at once, straight from the upstream at `url` and through the connector at `base`."
    def run(target: str, payload: dict, n: int) -> float:
        counts = []
        threads = [threading.Thread(target=lambda: counts.append(stream_tokens(target, model, payload, tokens))) for _ in range(n)]
        t0 = time.perf_counter()
        for t in threads: t.start()
        for t in threads: t.join()
        return sum(counts) / (time.perf_counter() - t0)
    run(url, extra, 2); run(base + '/v1', {}, 2)  # warm-up
    print(f'{tokens}-token streams, {model}; total tokens/s of all streams together')
    for n in levels:
        d = run(url, extra, n); c = run(base + '/v1', {}, n)  # the connector adds `extra` itself (upstream_extra)
        print(f'{n:3d} at once: straight {d:9.1f} tokens/s, through the connector {c:9.1f} tokens/s, ratio {c / d:.3f}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--tokens', type=int, default=256)
    ap.add_argument('--rounds', type=int, default=15)
    ap.add_argument('--itl-ms', type=int, default=5)
    ap.add_argument('--streams', type=int, default=16)
    ap.add_argument('--upstream', help='measure this running OpenAI API (e.g. vLLM\'s http://127.0.0.1:8000/v1) instead of llm-katan')
    ap.add_argument('--model', default='echo', help='the model it serves')
    ap.add_argument('--sweep', default='1,8,32', help='with --upstream: how many streams at once, in turn')
    ap.add_argument('--extra', default='{}', help='with --upstream: JSON of more parameters for every request (upstream_extra)')
    a = ap.parse_args()
    katan, url = start_katan(a.itl_ms) if not a.upstream else (None, a.upstream)
    extra = json.loads(a.extra)
    folder = Path(tempfile.mkdtemp())
    shutil.copy(PROJECT / 'connector.json', folder / 'connector.json')
    (folder / 'config.json').write_text(json.dumps({'embedding': 'off', 'upstream': url, 'upstream_api_key': KEY, 'upstream_model': a.model,
                                                    'upstream_extra': extra, 'max_queue': 256}))
    conn, base = start_connector(cwd=folder)
    relay = None
    try:
        wait_ready(base, proc=conn)
        if a.upstream: return sweep(url, base, a.model, extra, [int(x) for x in a.sweep.split(',')], a.tokens)
        text, short = message(a.tokens), message(34)
        relay, relayed = start_relay(url)
        ways = {'direct': lambda t: direct(url, t), 'relay': lambda t: direct(relayed, t), 'app': lambda t: app(base, t),
                'v1': lambda t: v1(base, t)}
        for _ in range(3):  # warm-up: connections, imports, caches
            for f in ways.values(): f(text)
        def rounds(t: str, n: int, twice: bool = False) -> dict[str, list]:
            """(first token s, whole s, ...) of each way, `n` rounds; interleaved, so all see the same load, and each first in turn.
            `twice`: each way is asked twice in a row and the second is kept (every process on its way has just served a request)."""
            rows = {w: [] for w in ways}
            for i in range(n):
                for w in list(ways)[i % len(ways):] + list(ways)[:i % len(ways)]:
                    if twice: ways[w](t)
                    rows[w].append(ways[w](t))
            return rows
        long, again = rounds(text, a.rounds), rounds(short, 2 * a.rounds, twice=True)
        idle = katan_idle(url, short)
        tokens = long['direct'][0][2]
        assert all(len(r[2]) >= len(text) for r in long['app']), 'the app stream lost text'
        rate = lambda w: tokens / statistics.median(r[1] for r in long[w])
        ttft = lambda rows, w: 1000 * statistics.median(r[0] for r in rows[w])
        def added(rows, w) -> str:  # paired with the direct request of the same round: the same moment's load
            d = [1000 * (r[0] - x[0]) for r, x in zip(rows[w], rows['direct'])]
            q = statistics.quantiles(d, n=4)
            return f'{statistics.median(d):+6.2f} ms (quartiles {q[0]:+.2f}, {q[2]:+.2f})'
        labels = {'relay': 'a byte relay (no HTTP)', 'app': "the app's chat-stream", 'v1': "the connector's /v1"}
        load = ', load average %.2f %.2f %.2f' % os.getloadavg() if hasattr(os, 'getloadavg') else ''  # not on Windows
        print(f'upstream: llm-katan echo, {a.itl_ms} ms between tokens{load}; medians')
        print(f'{tokens}-token streams, {a.rounds} rounds, the four ways in turn:')
        print(f'  straight from the upstream {rate("direct"):7.1f} tokens/s, first token {ttft(long, "direct"):6.2f} ms')
        for w in ('app', 'v1'):
            print(f'  {labels[w]:26s} {rate(w):7.1f} tokens/s, ratio {rate(w) / rate("direct"):.3f} (target >= 0.95); first token '
                  f'{ttft(long, w):6.2f} ms, added {added(long, w)}')
        print(f'  {labels["relay"]:26s} {rate("relay"):7.1f} tokens/s; first token {ttft(long, "relay"):6.2f} ms, added {added(long, "relay")}')
        print('  (each process on a way sat idle through the other ways\' streams before its own: what that costs here is below)')
        print(f'{again["direct"][0][2]}-token streams, {2 * a.rounds} rounds, each way asked twice in a row, the second measured: '
              'the time added to the first token (target <= 5 ms)')
        print(f'  straight from the upstream first token {ttft(again, "direct"):6.2f} ms')
        for w in ('relay', 'app', 'v1'): print(f'  {labels[w]:26s} first token {ttft(again, w):6.2f} ms, added {added(again, w)}')
        print(f"what sitting idle costs a process here: llm-katan's own first token {1000 * idle[0]:.2f} ms right after a request, "
              f'{1000 * idle[1]:.2f} ms after 1.4 s idle (medians of 5)')
        one = statistics.median(r[1] for r in long['app'])
        times = []
        def run(): times.append(app(base, text)[1])
        threads = [threading.Thread(target=run) for _ in range(a.streams)]
        t0 = time.perf_counter()
        for t in threads: t.start()
        for t in threads: t.join()
        wall = time.perf_counter() - t0
        print(f'{a.streams} streams at once through the connector: all done in {wall:.2f} s; the slowest took {max(times):.2f} s, '
              f'one alone {one:.2f} s, one after another would take {a.streams * one:.2f} s')
    finally:
        conn.kill(); shutil.rmtree(folder, ignore_errors=True)
        for p in (katan, relay):
            if p: p.kill()


if __name__ == '__main__':
    main()
