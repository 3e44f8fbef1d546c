"""Benchmark of the upstream engine (nbs/07b_upstream.ipynb) against llm-katan's echo server on loopback: a 256-token
stream's tokens/s through the connector (the app's chat-stream, and the connector's own /v1) against the same stream
straight from the upstream, the time the connector adds to the first token, and 16 streams at once through it.

    python benchmarks/bench_upstream.py [--tokens 256] [--rounds 15] [--itl-ms 5] [--streams 16]
    python benchmarks/bench_upstream.py --upstream http://127.0.0.1:8000/v1 --model chatglm2-6b --sweep 1,8,32 [--extra '{...}']

The second form measures a running server instead (vLLM on a GPU: benchmarks/gpu_upstream.sh): the total tokens/s of 1, 8
and 32 streams at once, straight from it and through a connector in front of it.

llm-katan (`pip install llm-katan`) writes `--itl-ms` between two chunks of 4 characters, each counted as a token here
(5 ms: 200 tokens/s per stream, faster than a 6B model decodes one stream on a GPU). `--itl-ms 0` measures the
connector's own cost per token, unpaced. It prints figures; it asserts nothing (timings on a shared machine are noisy)."""
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
from fc_chatglm.testing import start_connector  # noqa: E402

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
    try:
        while True:  # the socket may not listen yet when the connector prints its address
            try:
                if httpx.get(base + '/health').json()['status'] == 'ready': break
            except httpx.TransportError: pass
            time.sleep(0.1)
        if a.upstream: return sweep(url, base, a.model, extra, [int(x) for x in a.sweep.split(',')], a.tokens)
        text = message(a.tokens)
        for _ in range(3): direct(url, text); app(base, text); v1(base, text)  # warm-up: connections, imports, caches
        d, c, o = [], [], []
        runs = [(d, lambda: direct(url, text)), (c, lambda: app(base, text)), (o, lambda: v1(base, text))]
        for i in range(a.rounds):  # interleaved, so all three see the same load; in turn first, as a process just woken
            for rows, measure in runs[i % 3:] + runs[:i % 3]: rows.append(measure())  # answers slower on a busy machine
        tokens = d[0][2]
        assert all(len(r[2]) >= len(text) for r in c), 'the app stream lost text'
        rate = lambda rows: tokens / statistics.median(r[1] for r in rows)
        ttft = lambda rows: statistics.median(r[0] for r in rows)
        added = lambda rows: statistics.median(r[0] - x[0] for r, x in zip(rows, d))  # paired: the same moment's load
        quiet = lambda rows: sorted(r[0] - x[0] for r, x in zip(rows, d))[len(d) // 10]  # the 10th percentile: the quieter moments
        load = ', load average %.2f %.2f %.2f' % os.getloadavg() if hasattr(os, 'getloadavg') else ''  # not on Windows
        print(f'upstream: llm-katan echo, {tokens} tokens per stream, {a.itl_ms} ms between tokens; {a.rounds} rounds, medians{load}')
        print(f'straight from the upstream: {rate(d):8.1f} tokens/s, first token {1000 * ttft(d):6.2f} ms')
        print(f"the app's chat-stream:      {rate(c):8.1f} tokens/s, first token {1000 * ttft(c):6.2f} ms  "
              f'ratio {rate(c) / rate(d):.3f} (target >= 0.95), added {1000 * added(c):+.2f} ms (target <= 5; 10th percentile {1000 * quiet(c):+.2f})')
        print(f"the connector's /v1:        {rate(o):8.1f} tokens/s, first token {1000 * ttft(o):6.2f} ms  "
              f'ratio {rate(o) / rate(d):.3f}, added {1000 * added(o):+.2f} ms (10th percentile {1000 * quiet(o):+.2f})')
        one = statistics.median(r[1] for r in c)
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
        if katan: katan.kill()


if __name__ == '__main__':
    main()
