#!/usr/bin/env python
"""One recorded decoding step of a ChatGLM2, with and without the changes that shorten it, in one run.

Builds a ChatGLM2 with random weights as transformers' modules alone give it, records the
one-token step over a static cache (`Decoder(model, 'graph')`, as the engine does) and replays it,
then makes one change at a time to the same model and measures again:

1. PyTorch's SDPA attention, transformers' eight-step RMSNorm and attention module;
2. `grouped_attention` (`04c_graphs`) for the one query token;
3. and `FusedRMSNorm` (`03d_speedups`);
4. and `FusedGlmAttention` with `InterleavedRotary`: one q/k/v product, the rotation in place
   (what `prepare` gives a loaded ChatGLM2, so what the engine runs);
5. the last again, to show the drift of the machine.

On a GPU the step is a CUDA graph over the 6B shape in fp16. On a CPU it is the tests' stand-in
(`trace_capture`, the step recorded by make_fx and replayed op by op), which removes the Python of
transformers' modules as a CUDA graph does but still pays for every operation, over a smaller
model in float32 (8 layers of width 1,024, a 4,096-token vocabulary). There the figure to read is
the number of operations per step: on a shared 2-core CPU the times moved by 20% between runs of
the same variant, more than the changes measured here. Prints ms per step, the operations per step (on a GPU: the kernels and
copies the profiler sees in one unrecorded step; on a CPU: the computing operations recorded), and
how far each variant's first logits are from the first's; asserts nothing about time.

    python benchmarks/bench_step.py                         # one GPU, the 6B shape, about 40 s
    python benchmarks/bench_step.py --length 1024
    python benchmarks/bench_step.py --device cpu            # the smaller model, about 1 minute
"""
import argparse, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch, transformers

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.decode import Decoder, prepare_decoding
from fc_chatglm.speedups import fuse_attention, fuse_norms
from fc_chatglm.testing import computing_ops

from common import sync


SMALL = dict(num_layers=8, hidden_size=1024, ffn_hidden_size=2816, num_attention_heads=16, kv_channels=64, padded_vocab_size=4096)


def counting_capture(counts: list):
    "`trace_capture` that also appends the recorded step's computing operations (views left out) to `counts`."
    from torch.fx.experimental.proxy_tensor import make_fx
    def capture(step, ids):
        step(ids)
        graph = make_fx(lambda ids: step(ids))(ids)
        counts.append(len(computing_ops(graph.graph)))
        return lambda new: graph(new)
    return capture


def cuda_kernels(dec, token) -> str:
    "How many GPU operations (kernels, copies) one step of `dec` launches, counted by the profiler on an unrecorded step."
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            dec._eager_step(token.view(1, 1)); torch.cuda.synchronize()
        return f', {sum(e.device_type == torch.autograd.DeviceType.CUDA for e in prof.events())} GPU operations'
    except Exception as e: return f', GPU operations not counted ({type(e).__name__}: {e})'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--length', type=int, default=4096, help="the static cache's length (the engine's default: 4096)")
    ap.add_argument('--steps', type=int, help='timed steps (default: 100 on a GPU, 30 on a CPU)')
    a = ap.parse_args()
    dev = torch.device(a.device)
    gpu = dev.type == 'cuda'
    steps = a.steps or (100 if gpu else 30)
    print('torch', torch.__version__, 'transformers', transformers.__version__,
          torch.cuda.get_device_name(dev) if gpu else f'CPU, {torch.get_num_threads()} threads', flush=True)
    dtype = torch.float16 if gpu else torch.float32
    cfg = {**CHATGLM2_6B_CONFIG, **({} if gpu else SMALL)}
    model = random_chatglm2(cfg, device=dev, dtype=dtype)  # transformers' modules as they are
    prompt, ref, counts = list(range(3, 3 + 569)), None, []
    changes = [('SDPA, transformers\' norms and attention', None), ('grouped attention', None),
               ('and fused norms', fuse_norms), ('and fused q/k/v with rotation in place', fuse_attention),
               ('the same again', None)]
    for i, (name, change) in enumerate(changes):
        if change: change(model)
        if i == 0: model.set_attn_implementation('sdpa')  # PyTorch's SDPA, as transformers gives it
        if i == 1: prepare_decoding(model)  # SDPA -> `grouped_attention`, as the engine does
        dec = Decoder(model, 'graph', length=a.length, capture=None if gpu else counting_capture(counts))
        with torch.inference_mode():
            dec.start(prompt, steps + 40)  # records the step
            nxt = dec.prefill().argmax(-1)
            first = dec.step(nxt).clone()
            for j in range(steps + 8):
                if j == 8: sync(dev); t0 = time.perf_counter()
                nxt = dec.step(nxt).argmax(-1)
            sync(dev)
            ms = (time.perf_counter() - t0) / steps * 1e3
            ops = cuda_kernels(dec, nxt) if gpu else f', {counts[-1]} operations'
            dec.end()
        ref = first if ref is None else ref
        print(f'{i + 1}. {name}: {ms:.2f} ms/step ({1000 / ms:.0f} steps/s{ops}); first logits: largest difference from '
              f'the first variant {(first - ref).abs().max().item():.3g} (largest logit {ref.abs().max().item():.3g})', flush=True)
        del dec
        if gpu: torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
