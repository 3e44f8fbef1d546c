"""The knowledge base as Fantasy Copilot searches it: for each embedding mode, on the bilingual evaluation set
(benchmarks/kb_eval.json, 20 English and 20 Chinese questions, each with its passage), the share of questions whose
passage is found (ranked first among all passages AND scoring at least the app's minimum relevance, 0.7 by default)
and the share of unrelated question/passage pairs scoring at least that, per language; the same on long chunks (each
passage followed by the next one of its language, 1,000-2,000 characters, found if the best chunk holds the passage).

    python benchmarks/bench_kb.py [--threshold 0.7] [--modes minilm hybrid FOLDER ...] [--device cpu]   # about 4 minutes on a busy 2-core CPU

Targets for the default mode: found >= 90% in each language, unrelated <= 5%. It prints figures and the time each
mode took; it asserts nothing (the same targets are checked in nbs/06a_embed.ipynb)."""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fc_chatglm.embed import BUNDLED, HYBRID, load_embedding, retrieval  # noqa: E402


def eval_set(path: Path = HERE/'kb_eval.json'):
    "Questions, passages, long chunks, which chunk holds which passage, and the rows of each language."
    items = json.loads(path.read_text(encoding='utf-8'))['items']
    by_lang = {}
    for i, it in enumerate(items): by_lang.setdefault(it['lang'], []).append(i)
    nxt = {i: rows[(k + 1) % len(rows)] for rows in by_lang.values() for k, i in enumerate(rows)}
    passages = [it['passage'] for it in items]
    longs = [passages[c] + '\n\n' + passages[nxt[c]] for c in range(len(items))]
    holds = torch.eye(len(items), dtype=torch.bool)
    holds_long = holds.clone()
    for c in range(len(items)): holds_long[nxt[c], c] = True
    return [it['question'] for it in items], passages, longs, holds, holds_long, by_lang


def main(threshold: float, modes: list[str], device: str):
    questions, passages, longs, holds, holds_long, by_lang = eval_set()
    print(f'{len(questions)} questions ({", ".join(f"{len(r)} {l}" for l, r in by_lang.items())}), '
          f'passages of {min(map(len, passages))}-{max(map(len, passages))} characters, long chunks of '
          f'{min(map(len, longs))}-{max(map(len, longs))}; threshold {threshold}\n')
    print(f'| mode | language | found | unrelated >= {threshold} | found, long chunks | unrelated, long chunks |')
    print('|---|---|---|---|---|---|')
    timings = []
    for mode in modes:
        t0 = time.perf_counter()
        emb = load_embedding(mode, device)
        t1 = time.perf_counter()
        q, p, l = (torch.tensor([emb.embed(t) for t in texts]) for texts in (questions, passages, longs))
        t2 = time.perf_counter()
        cos = lambda a, b: torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T  # as the app
        s, sl = cos(q, p), cos(q, l)
        for lang, rows in by_lang.items():
            f, u = retrieval(s[rows], holds[rows], threshold)
            fl, ul = retrieval(sl[rows], holds_long[rows], threshold)
            print(f'| {mode} | {lang} | {f:.0%} | {u:.1%} | {fl:.0%} | {ul:.1%} |')
        label = emb.name if emb.name.startswith(mode) else f'{mode}: {emb.name}'
        timings.append(f'{label}, {len(q[0])} dimensions; load {t1 - t0:.1f} s, '
                       f'{len(questions) + len(passages) + len(longs)} texts embedded in {t2 - t1:.1f} s')
    print('\n' + '\n'.join(timings))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threshold', type=float, default=0.7, help="the app's minimum relevance (default 0.7)")
    ap.add_argument('--modes', nargs='+', default=[BUNDLED, HYBRID], help='embedding modes or model folders')
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    t0 = time.perf_counter()
    main(a.threshold, a.modes, a.device)
    print(f'total {time.perf_counter() - t0:.0f} s')
