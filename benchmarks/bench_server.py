"""Benchmark of the connector on the demo model: streaming speed over HTTP against the same generation
in-process, the time from a cancel to the stream's last byte, and /health latency while four streams run.

    python benchmarks/bench_server.py [--tokens 800] [--rounds 5]   # --tokens 400 --rounds 3: 2-4.5 minutes on a busy 2-core CPU

It prints figures; it asserts nothing (timings on a shared machine are noisy: compare the ratios)."""
import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.testing import app_stream, start_connector, wait_ready  # noqa: E402
from fc_chatglm.load import LoadOptions, load_engine  # noqa: E402
from fc_chatglm.schemas import ChatRequest  # noqa: E402


def body(message: str, tokens: int) -> bytes:
    return ChatRequest(message=message, settings={'temperature': 0, 'maxResponseTokens': tokens}).model_dump_json(by_alias=True).encode()


def speed_pairs(base: str, tokens: int, rounds: int) -> tuple[list[float], list[float], float]:
    """tokens/s of the same greedy generation in-process and over HTTP, interleaved so both see the same
    machine load; and the seconds of one decode step in-process."""
    with tempfile.TemporaryDirectory() as d:
        engine = load_engine(LoadOptions(demo=True, demo_dir=Path(d)))  # the same seed: the server's model
    req = ChatRequest(message='benchmark', settings={'temperature': 0, 'maxResponseTokens': tokens})
    expected = engine.generate(req).text  # warm-up, and the reply the server must send
    app_stream(base, '/chat/stream', body('benchmark', tokens))
    local, remote, steps = [], [], []
    for _ in range(rounds):
        o = engine.generate(req)
        local.append(o.tokens_per_s); steps.append(o.seconds / o.tokens)
        t0 = time.perf_counter()
        replies, done = app_stream(base, '/chat/stream', body('benchmark', tokens))
        remote.append(o.tokens / (time.perf_counter() - t0))
        assert done and replies[-1] == expected, 'the HTTP reply differs from the in-process one'
    return local, remote, statistics.median(steps)


def send_cancel(base: str) -> socket.socket:
    "The app's cancel: a bodiless POST on a new connection, fire and forget."
    host, port = base.removeprefix('http://').split(':')
    s = socket.create_connection((host, int(port)))
    s.sendall(f'POST /chat/stream/cancel HTTP/1.1\r\nHost: {base}\r\nContent-Length: 0\r\n\r\n'.encode())
    return s


def cancel_latency(base: str, trials: int) -> list[float]:
    "Seconds from sending a cancel to the stream's last byte ([DONE])."
    out = []
    for _ in range(trials):
        mark = {}
        def on_line(reply, sock):
            if 'sent' not in mark and len(reply) > 20:
                mark['sent'] = time.perf_counter()
                mark['sock'] = send_cancel(base)
        replies, done = app_stream(base, '/chat/stream', body('cancel me', 1800), on_line)
        out.append(time.perf_counter() - mark['sent'])
        mark['sock'].close()
        assert done and len(replies) < 200
        time.sleep(0.2)
    return out


def health_under_load(base: str, streams: int, samples: int) -> list[float]:
    "Latencies of GET /health while `streams` long streams run."
    threads = [threading.Thread(target=app_stream, args=(base, '/chat/stream', body(f'stream {i}', 1800))) for i in range(streams)]
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
    ap.add_argument('--tokens', type=int, default=800, help="new tokens per reply (800: the app's default maxResponseTokens)")
    ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args()
    proc, base = start_connector('--demo')
    try:
        wait_ready(base, proc=proc)
        local, remote, step = speed_pairs(base, a.tokens, a.rounds)
        cancels = cancel_latency(base, 5)
        lat = sorted(health_under_load(base, 4, 400))
    finally:
        proc.kill(); proc.wait()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    ratios = [r / l for l, r in zip(local, remote)]
    med = statistics.median
    print(f'demo model, {a.tokens} new tokens, greedy, {a.rounds} interleaved pairs (medians)')
    print(f'  in-process engine.generate   {med(local):8.1f} tokens/s   (one decode step: {step * 1000:.2f} ms)')
    print(f'  streamed over HTTP           {med(remote):8.1f} tokens/s   (request sent to [DONE] read, as the app reads)')
    print(f'  ratio HTTP / in-process      {med(ratios):8.3f}        (pairs: {min(ratios):.3f} to {max(ratios):.3f}; target >= 0.95)')
    print(f'  cancel -> last byte          median {statistics.median(cancels) * 1000:.1f} ms, max {max(cancels) * 1000:.1f} ms'
          f'   (target <= one step + 20 ms = {step * 1000 + 20:.1f} ms)')
    print(f'  /health with 4 streams       p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lat[-1] * 1000:.2f} ms   (target p99 < 20 ms)')


if __name__ == '__main__':
    main()
