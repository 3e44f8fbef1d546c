"""Benchmark of the connector on the demo model: streaming speed over HTTP against the same generation
in-process, the time from a cancel to the stream's last byte, and /health latency while four streams run.

    python benchmarks/bench_server.py [--tokens 400] [--rounds 3]

It prints figures; it asserts nothing (timings on a shared machine are noisy: compare the ratios)."""
import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.launch import start_connector  # noqa: E402
from fc_chatglm.load import LoadOptions, load_engine  # noqa: E402
from fc_chatglm.schemas import ChatRequest  # noqa: E402
from fc_chatglm.server import app_stream  # noqa: E402


def body(message: str, tokens: int) -> bytes:
    return ChatRequest(message=message, settings={'temperature': 0, 'maxResponseTokens': tokens}).model_dump_json(by_alias=True).encode()


def in_process(tokens: int, rounds: int) -> tuple[float, float, str]:
    "Best tokens/s of engine.generate, seconds per decode step, and the reply."
    with tempfile.TemporaryDirectory() as d:
        engine = load_engine(LoadOptions(demo=True, demo_dir=Path(d)))
    req = ChatRequest(message='benchmark', settings={'temperature': 0, 'maxResponseTokens': tokens})
    engine.generate(req)  # warm-up
    runs = [engine.generate(req) for _ in range(rounds)]
    best = max(runs, key=lambda o: o.tokens_per_s)
    return best.tokens_per_s, best.seconds / best.tokens, best.text


def over_http(base: str, tokens: int, rounds: int, expected: str) -> float:
    "Best tokens/s of the same generation streamed over HTTP and read as the app reads it."
    app_stream(base, '/chat/stream', body('benchmark', tokens))  # warm-up
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        replies, done = app_stream(base, '/chat/stream', body('benchmark', tokens))
        dt = time.perf_counter() - t0
        assert done and replies[-1] == expected, 'the HTTP reply differs from the in-process one'
        rates.append(tokens / dt)
    return max(rates)


def cancel_latency(base: str, trials: int) -> list[float]:
    "Seconds from sending a cancel to the stream's last byte ([DONE])."
    out = []
    for _ in range(trials):
        mark = {}
        def on_line(reply, sock):
            if 'sent' not in mark and reply.count(' ') + len(reply) > 20:
                mark['sent'] = time.perf_counter()
                threading.Thread(target=httpx.post, args=(base + '/chat/stream/cancel',)).start()
        replies, done = app_stream(base, '/chat/stream', body('cancel me', 3000), on_line)
        out.append(time.perf_counter() - mark['sent'])
        assert done
        time.sleep(0.2)
    return out


def health_under_load(base: str, streams: int, samples: int) -> list[float]:
    "Latencies of GET /health while `streams` long streams run."
    threads = [threading.Thread(target=app_stream, args=(base, '/chat/stream', body(f'stream {i}', 3000))) for i in range(streams)]
    for t in threads: t.start()
    with httpx.Client() as c:
        while c.get(base + '/health').json()['streams'] < streams: time.sleep(0.01)
        lat = []
        for _ in range(samples):
            t0 = time.perf_counter(); c.get(base + '/health'); lat.append(time.perf_counter() - t0)
            time.sleep(0.005)
        c.post(base + '/chat/stream/cancel')
    for t in threads: t.join()
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--tokens', type=int, default=400)
    ap.add_argument('--rounds', type=int, default=3)
    a = ap.parse_args()
    rate_in, step, text = in_process(a.tokens, a.rounds)
    proc, base = start_connector('--demo')
    try:
        while httpx.get(base + '/health').json()['status'] != 'ready': time.sleep(0.1)
        rate_http = over_http(base, a.tokens, a.rounds, text)
        cancels = cancel_latency(base, 5)
        lat = sorted(health_under_load(base, 4, 400))
    finally:
        proc.kill(); proc.wait()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(f'demo model, {a.tokens} new tokens, greedy, best of {a.rounds}')
    print(f'  in-process engine.generate   {rate_in:8.1f} tokens/s   (one decode step: {step * 1000:.2f} ms)')
    print(f'  streamed over HTTP           {rate_http:8.1f} tokens/s')
    print(f'  ratio HTTP / in-process      {rate_http / rate_in:8.3f}        (target >= 0.95)')
    print(f'  cancel -> last byte          median {statistics.median(cancels) * 1000:.1f} ms, max {max(cancels) * 1000:.1f} ms'
          f'   (target <= one step + 20 ms = {step * 1000 + 20:.1f} ms)')
    print(f'  /health with 4 streams       p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lat[-1] * 1000:.2f} ms   (target p99 < 20 ms)')


if __name__ == '__main__':
    main()
