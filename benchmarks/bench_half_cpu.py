#!/usr/bin/env python
"""Half precision on a CPU: a prompt and one token through layers of the 6B model, in float32, in
bfloat16 and float16 as PyTorch multiplies them, and with `PromptUpcastLinear` (`03d_speedups`), in one run.

A CPU without the instructions for half-precision matrices (most laptops and desktops: AVX2, no
AVX-512 or AMX) multiplies them through a slow fallback; the loader then swaps in
`PromptUpcastLinear`, which multiplies prompts in float32 a slice of the weight at a time. Each
variant builds the same random ChatGLM2 layers of the 6B's widths (the vocabulary cut to 4,096 so
that the layers, not the output layer, are measured), runs a prompt once to warm up, then times the
prompt and a one-token forward, and prints how far its logits are from float32's. Asserts nothing
about time.

    python benchmarks/bench_half_cpu.py                     # this CPU as it is: 1-1.5 minutes on a shared 2-core CPU
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_half_cpu.py   # as an AVX2 CPU
"""
import argparse, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.quantize import native_half
from fc_chatglm.speedups import prepare

from common import timed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--prompt', type=int, default=256, help='prompt tokens')
    ap.add_argument('--repeat', type=int, default=3, help='timed one-token forwards')
    a = ap.parse_args()
    print(f'torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; '
          f'native bfloat16: {native_half(torch.bfloat16)}, native float16: {native_half(torch.float16)}', flush=True)
    cfg = {**CHATGLM2_6B_CONFIG, 'num_layers': a.layers, 'padded_vocab_size': 4096}
    ids = torch.randint(0, 4096, (1, a.prompt), generator=torch.Generator().manual_seed(0))
    ref = None
    print('| weights, products | prompt | one token | largest logit error |\n|---|---|---|---|')
    for name, dtype, up in [('float32', torch.float32, False), ('bfloat16', torch.bfloat16, False),
                            ('bfloat16, prompts in float32', torch.bfloat16, True), ('float16', torch.float16, False),
                            ('float16, prompts in float32', torch.float16, True)]:
        model = prepare(random_chatglm2(cfg, dtype=dtype), 'cpu', dtype, upcast=up)  # fused, as loaded
        with torch.inference_mode():
            model(ids[:, :16])  # warm-up
            prompt, logits = timed(lambda m=model: m(ids).logits.float())
            one = timed(lambda m=model: [m(ids[:, :1]) for _ in range(a.repeat)])[0] / a.repeat
        ref = logits if ref is None else ref
        print(f'| {name} | {prompt * 1e3:,.0f} ms | {one * 1e3:,.0f} ms | {(logits - ref).abs().max().item():.3g} '
              f'(of {ref.abs().max().item():.3g}) |', flush=True)
        del model


if __name__ == '__main__':
    main()
