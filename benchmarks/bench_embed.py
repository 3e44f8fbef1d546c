"""Benchmark of the embedding endpoint on the bundled all-MiniLM-L6-v2: time per request over HTTP against
the same embedding in-process, for a short chunk and for a long text (embedded whole, in windows, against a
plain truncating encode), and how a streaming chat reply and embeddings slow each other.

    python benchmarks/bench_embed.py [--rounds 20]   # --rounds 5: 30-45 s on a busy 2-core CPU

It prints figures; it asserts nothing (timings on a shared machine are noisy: compare the ratios)."""
import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.embed import load_embedder  # noqa: E402
from fc_chatglm.testing import app_stream, start_connector, wait_ready  # noqa: E402

from common import median_ms as ms  # noqa: E402

SHORT = ('The knowledge base splits each document into chunks and stores one vector per chunk; a question '
         'is embedded the same way and compared with every chunk. ') * 2  # about 60 tokens, a typical chunk
LONG = SHORT * 14  # about 780 tokens: four windows of MiniLM


def post(client: httpx.Client, base: str, text: str) -> float:
    t0 = time.perf_counter()
    r = client.post(base + '/embedding', content=text.encode(), headers={'Content-Type': 'text/plain; charset=utf-8'})
    assert r.status_code == 200, r.text
    return time.perf_counter() - t0



def main(rounds: int):
    emb = load_embedder(device='cpu')
    proc, base = start_connector('--demo', '--device', 'cpu', '--embedding', 'minilm')  # the same model as in-process
    try:
        with httpx.Client(timeout=120) as client:
            post(client, base, SHORT)  # loads the model on the server
            wait_ready(base, proc=proc)
            print(f'{emb.name}: {emb.dimensions} dimensions, windows of {emb.size} tokens; '
                  f'long text: {len(emb.model.tokenizer(LONG, add_special_tokens=False, verbose=False)["input_ids"])} tokens')
            for name, text in (('short', SHORT), ('long', LONG)):
                local, remote = [], []
                for _ in range(rounds):  # interleaved, so both see the same machine load
                    t0 = time.perf_counter(); emb.embed(text); local.append(time.perf_counter() - t0)
                    remote.append(post(client, base, text))
                print(f'{name:5}: in-process {ms(local)}, HTTP {ms(remote)}, ratio {statistics.median(remote) / statistics.median(local):.2f}')
            trunc = []
            for _ in range(rounds):
                t0 = time.perf_counter(); emb.model.encode([LONG]); trunc.append(time.perf_counter() - t0)
            print(f'long, truncated to one window (what a plain encode does): {ms(trunc)}')

            stream_body = b'{"message": "benchmark", "settings": {"temperature": 0, "maxResponseTokens": 400}}'
            t0 = time.perf_counter(); app_stream(base, '/chat/stream', stream_body, timeout=120)
            alone = time.perf_counter() - t0
            during, stop = [], threading.Event()
            def embed_loop():
                with httpx.Client(timeout=120) as c:
                    while not stop.is_set(): during.append(post(c, base, SHORT))
            t = threading.Thread(target=embed_loop); t.start()
            t0 = time.perf_counter(); app_stream(base, '/chat/stream', stream_body, timeout=120)
            beside = time.perf_counter() - t0
            stop.set(); t.join()
            print(f'a 400-token stream: {alone:.2f} s alone, {beside:.2f} s while embeddings ran back to back '
                  f'({len(during)} embeddings, {ms(during)} each)')
    finally:
        proc.kill(); proc.wait()


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=20)
    main(p.parse_args().rounds)
