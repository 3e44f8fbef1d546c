#!/usr/bin/env python
"""The 6B ChatGLM2's recorded decoding step on a GPU, with and without the two changes that shorten it.

Builds a 6B-shaped ChatGLM2 with random fp16 weights, records the one-token step as a CUDA graph
over a static cache (`Decoder(model, 'graph')`, as the engine does) and replays it 100 times, for:
PyTorch's SDPA attention with transformers' eight-step RMSNorm (what transformers alone gives),
`grouped_attention` with that norm, and `grouped_attention` with `FusedRMSNorm` (what fc_chatglm
loads), then the first again, to show the drift of the machine. Prints ms per step and how far each
variant's first logits are from the first's; asserts nothing about time.

    python benchmarks/bench_step.py                 # one GPU, about 30 s
    python benchmarks/bench_step.py --length 1024
"""
import argparse, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch, transformers
from transformers.models.glm.modeling_glm import GlmRMSNorm

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, FusedRMSNorm, fuse_norms, random_chatglm2
from fc_chatglm.decode import Decoder


def set_norms(model, fused: bool):
    "Every RMSNorm as `FusedRMSNorm` (as fc_chatglm loads it), or back as transformers' `GlmRMSNorm`, with the same weights."
    if fused: fuse_norms(model); return
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, FusedRMSNorm):
                norm = GlmRMSNorm(child.weight.shape[0], eps=child.variance_epsilon)
                norm.weight = child.weight
                setattr(parent, name, norm)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--length', type=int, default=4096, help="the static cache's length (the engine's default: 4096)")
    ap.add_argument('--steps', type=int, default=100)
    a = ap.parse_args()
    print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(), flush=True)
    model = random_chatglm2({**CHATGLM2_6B_CONFIG}, device='cuda', dtype=torch.float16)
    prompt, ref = list(range(3, 3 + 569)), None
    for attn, fused in [('sdpa', False), ('fc_grouped', False), ('fc_grouped', True), ('sdpa', False)]:
        set_norms(model, fused)
        dec = Decoder(model, 'graph', length=a.length)
        model.set_attn_implementation(attn)  # after `Decoder`, which switches SDPA to fc_grouped
        with torch.inference_mode():
            dec.start(prompt, a.steps + 40)  # records the step
            nxt = dec.prefill().argmax(-1)
            first = dec.step(nxt).clone()
            for i in range(a.steps + 8):
                if i == 8: torch.cuda.synchronize(); t0 = time.perf_counter()
                nxt = dec.step(nxt).argmax(-1)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / a.steps * 1e3
            dec.end()
        ref = first if ref is None else ref
        print(f'{attn:>10} attention, {"fused" if fused else "8-step"} norms: {ms:.2f} ms/step ({1000 / ms:.0f} steps/s); first '
              f'logits: largest difference from the first variant {(first - ref).abs().max().item():.3g} '
              f'(largest logit {ref.abs().max().item():.3g})', flush=True)
        del dec; torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
