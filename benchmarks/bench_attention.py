"""A long prompt's attention on a CPU: `direct.attend` (each key-value group's heads as matrix products, a block of
positions at a time) against PyTorch's `scaled_dot_product_attention` (what `attend` used before), alone at the 6B's
shape (32 heads, 2 key-value groups of 128) and inside a whole prompt of a random 6B-width ChatGLM2 (2 layers,
bfloat16, `DirectStep`), in one run.

    python benchmarks/bench_attention.py [--lengths 500,1000,2000] [--repeats 3]

Prints milliseconds (the fastest of the repeats) and the ratio; asserts only that both give the same numbers to
float32's rounding."""
import argparse, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fc_chatglm.direct as direct  # noqa: E402
from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2  # noqa: E402
from fc_chatglm.speedups import prepare  # noqa: E402

NEW = direct.attend


def sdpa(q, keys, values, scaling):
    "The prompt's attention through SDPA, causal, with a mask when positions come before the new ones (one token as `attend`)."
    n, H, D = q.shape; before = keys.shape[1] - n
    if n == 1: return NEW(q, keys, values, scaling)
    mask = None if before == 0 else torch.ones(n, before + n, dtype=torch.bool).tril(before)
    out = F.scaled_dot_product_attention(q.float().transpose(0, 1), keys, values, attn_mask=mask, is_causal=before == 0,
                                         scale=scaling, enable_gqa=True)
    return out.transpose(0, 1).reshape(n, H * D)


def fastest(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--lengths', default='500,1000,2000')
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    lengths = [int(x) for x in a.lengths.split(',')]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}\n')
    g = torch.Generator().manual_seed(0)
    print('| positions | attention, SDPA ms | attention, attend ms | ratio | prompt, SDPA ms | prompt, attend ms | ratio |')
    print('|---|---|---|---|---|---|---|')
    with torch.inference_mode():
        model = prepare(random_chatglm2({**CHATGLM2_6B_CONFIG, 'num_layers': 2, 'padded_vocab_size': 4096}, seed=0, dtype=torch.bfloat16),
                        'cpu', torch.bfloat16)
        for n in lengths:
            q = torch.randn(n, 32, 128, generator=g).bfloat16(); k, v = torch.randn(2, n, 128, generator=g), torch.randn(2, n, 128, generator=g)
            assert (NEW(q, k, v, 0.088) - sdpa(q, k, v, 0.088)).abs().max() < 1e-5
            att = [fastest(lambda: f(q, k, v, 0.088), a.repeats) for f in (sdpa, NEW)]
            ids = torch.randint(0, 4096, (1, n), generator=g)
            def prompt(f):
                direct.attend = f
                try:
                    step = direct.DirectStep(model)
                    return fastest(lambda: (step.reset(), step(ids)), a.repeats)
                finally: direct.attend = NEW
            whole = [prompt(f) for f in (sdpa, NEW)]
            print(f'| {n} | {att[0]:.1f} | {att[1]:.1f} | {att[0] / att[1]:.2f} | {whole[0]:.0f} | {whole[1]:.0f} | {whole[0] / whole[1]:.2f} |', flush=True)


if __name__ == '__main__': main()
