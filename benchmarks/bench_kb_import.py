"""A folder imported into Fantasy Copilot's knowledge base, as the app imports it: one task per file, all at once,
each sending its file's chunks one after another to `/embedding` (nbs/protocol.md, "Knowledge base"). Every request
must be answered within .NET's 100 s, or the app counts that file as failed.

    python benchmarks/bench_kb_import.py [--files 200] [--chunks 4] [--chars 2000] [--lang en|zh|mixed] [--embedding multilingual]

It prints, per run: requests answered 200 and refused (with the first refusal's words), latency p50 / p99 / max,
the whole import's time, and the connector's peak resident memory during the import. It asserts nothing."""
import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fc_chatglm.testing import peak_during, start_connector  # noqa: E402


def chunks(files: int, per_file: int, chars: int, lang: str) -> list[list[str]]:
    "Each file's chunks, about `chars` characters each, distinct, cut from the evaluation set's passages."
    items = json.loads((HERE/'kb_eval.json').read_text(encoding='utf-8'))['items']
    text = {l: '\n\n'.join(it['passage'] for it in items if it['lang'] == l) for l in ('en', 'zh')}
    out = []
    for f in range(files):
        l = lang if lang != 'mixed' else ('en', 'zh')[f % 2]
        src, docs = text[l], []
        for c in range(per_file):
            start = (f * per_file + c) * 997 % len(src)
            body = (src[start:] + src)[:chars - 40]
            docs.append(f'File {f}, chunk {c}. {body}')
        out.append(docs)
    return out


def post(client: httpx.Client, base: str, text: str) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    r = client.post(base + '/embedding', content=text.encode('utf-8'), headers={'Content-Type': 'text/plain; charset=utf-8'})
    return r.status_code, time.perf_counter() - t0, r.text[:300] if r.status_code != 200 else ''


def import_folder(base: str, docs: list[list[str]]) -> tuple[list[tuple[int, float, str]], float]:
    "Every file's chunks sent as the app sends them; each answer's (status, seconds, refusal), and the total seconds."
    answers, lock, go = [], threading.Lock(), threading.Barrier(len(docs))

    def file(chunks: list[str]):
        with httpx.Client(timeout=600) as client:
            go.wait(120)
            for c in chunks:
                a = post(client, base, c)
                with lock: answers.append(a)
                if a[0] != 200: return  # the app stops a file at its first failure

    threads = [threading.Thread(target=file, args=(d,)) for d in docs]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    return answers, time.perf_counter() - t0


def main(a):
    import platform, torch
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    print(f'{time.strftime("%Y-%m-%d")}, {cpu}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}')
    proc, base = start_connector('--demo', '--device', 'cpu', '--embedding', a.embedding)
    try:
        with httpx.Client(timeout=300) as c: assert post(c, base, 'warm up: the model loads at the first request')[0] == 200
        docs = chunks(a.files, a.chunks, a.chars, a.lang)
        before, peak, (answers, total) = peak_during(lambda: import_folder(base, docs), proc.pid, sampled=True)
        ok = sorted(s for code, s, _ in answers if code == 200)
        refused = [(code, why) for code, _, why in answers if code != 200]
        q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] if ok else float('nan')
        print(f'{a.files} files x {a.chunks} chunks of {a.chars:,} characters ({a.lang}), mode {a.embedding}: '
              f'{len(ok)} answered, {len(refused)} refused; latency p50 {q(.5):.1f} s, p99 {q(.99):.1f} s, '
              f'max {ok[-1] if ok else float("nan"):.1f} s; import {total:.1f} s; '
              f'connector memory {before / 2**20:.0f} MB before, {peak / 2**20:.0f} MB at the peak')
        if refused: print('first refusal:', refused[0])
        print('queue after:', httpx.get(base + '/health').json()['embedding'].get('queue'))
    finally:
        proc.kill(); proc.wait()


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--files', type=int, default=200)
    ap.add_argument('--chunks', type=int, default=4, help='chunks per file, sent one after another')
    ap.add_argument('--chars', type=int, default=2000, help="characters per chunk (the app's are up to about 2,048)")
    ap.add_argument('--lang', default='en', choices=['en', 'zh', 'mixed'])
    ap.add_argument('--embedding', default='multilingual')
    main(ap.parse_args())
