#!/usr/bin/env python
"""GPU check of the whole engine path on a 6B-shaped ChatGLM2 with random weights.

Writes the model in the published fp16 sharded layout and as int4 (with a locally trained tokenizer),
then loads each variant with `load_engine` exactly as `python -m fc_chatglm` does (fp16 and int4,
each with the step recorded as a CUDA graph (`--decode graph`, the GPU default), compiled
(`--decode compile`) and eager (`--decode eager`), and fp16 quantized while loading with
bitsandbytes 8bit/4bit when it is installed) and times `TransformersEngine.generate` on a ~512-token prompt with 256 new tokens: load time, first token,
tokens/s, peak GPU memory. It also times bare decode steps of the model (`Decoder.reply` greedy over a
dynamic cache, no sampler, no text), to show how much of a step is the model and how much is the rest
of the engine. On CUDA it first checks that the int4 kernels on the device agree with the CPU.
Prints a table; asserts nothing about time.

    python benchmarks/gpu_engine.py                 # on a GPU, about 3 minutes
    python benchmarks/gpu_engine.py --small --device cpu --variants "fp16 eager,int4 eager"   # the same path on a tiny model, 15-30 s on 2 cores
"""
import argparse, shutil, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch, transformers

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2, save_chatglm2
from fc_chatglm.chatglm2 import dequantize_int4, unpack_int4
from fc_chatglm.quantize import Int4Linear
from fc_chatglm.demo import DEMO_CORPUS
from fc_chatglm.decode import Decoder
from fc_chatglm.load import LoadOptions, load_engine
from fc_chatglm.schemas import TextRequest
from fc_chatglm.testing import tiny_chatglm2
from fc_chatglm.tokenizer import train_sentencepiece

from common import memory_gb, print_table, reset_peak, sync

SMALL = tiny_chatglm2(vocab_size=1024, window=2048)


def cuda(dev): return dev.startswith('cuda')


def check_int4_kernels(device: str) -> float:
    "`unpack_int4` and `Int4Linear` on `device` against the CPU: the largest relative error of the layer's output."
    allbytes = torch.arange(256, dtype=torch.int16).to(torch.uint8).view(torch.int8)[None]
    assert torch.equal(unpack_int4(allbytes.to(device)).cpu(), unpack_int4(allbytes)), 'unpack_int4 differs on device'
    g = torch.Generator().manual_seed(0)
    packed = torch.randint(-128, 128, (256, 512), dtype=torch.int8, generator=g)
    scale = (torch.rand(256, generator=g) / 50).half()
    x = torch.randn(4, 1024, generator=g)
    want = x.double() @ dequantize_int4(packed, scale, torch.float64).T
    got = Int4Linear(packed.to(device), scale.to(device))(x.to(device, torch.float16)).double().cpu()
    err = ((got - want).abs().max() / want.abs().max()).item()
    assert err < 1e-2, f'Int4Linear on {device} is off by {err:.2e} (relative)'
    return err


def bare_steps(model, dev, n=32) -> float:
    "Seconds per greedy decode step of the bare model over a dynamic cache (the decode loop alone: no sampler, no text)."
    with Decoder(model).reply(torch.randint(3, 600, (64,)).tolist(), lambda logits: logits.argmax(-1), n + 5) as reply:
        for i, _ in enumerate(reply):
            if i == 4: sync(dev); t0 = time.perf_counter()  # the first tokens warm up
        sync(dev)
    return (time.perf_counter() - t0) / n


def run(name, folder, dev, prompt, new, **opts) -> dict:
    reset_peak(dev)
    t0 = time.perf_counter()
    try: engine = load_engine(LoadOptions(model=folder, device=dev, **opts))
    except Exception as e: return {'variant': name, 'error': f'{type(e).__name__}: {e}'.splitlines()[0][:160]}
    row = {'variant': name, 'decode': engine.decode, 'load_s': time.perf_counter() - t0, 'weights_GB': memory_gb(dev)}
    req = TextRequest(message=prompt, settings={'temperature': 0, 'maxResponseTokens': new})
    engine.generate(TextRequest(message=prompt, settings={'temperature': 0, 'maxResponseTokens': 4}))  # warm-up
    engine.decoder.end()  # let the warm-up's cache go: the measured prompt runs whole
    out = engine.generate(req)
    row |= {'prompt_tok': out.prompt_tokens, 'new_tok': out.tokens, 'first_s': out.first_token_s,
            'tok/s': out.tokens_per_s, 'peak_GB': memory_gb(dev, peak=True), 'step_ms_bare': bare_steps(engine.model, dev) * 1000}
    del engine; reset_peak(dev)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--small', action='store_true')
    p.add_argument('--device', default='cuda')
    p.add_argument('--new-tokens', type=int, default=256, help='new tokens per reply (bitsandbytes variants: 64)')
    p.add_argument('--variants', default=None, help='comma-separated variant names to run (default: all)')
    a = p.parse_args()
    dev, cfg = a.device, SMALL if a.small else CHATGLM2_6B_CONFIG
    name = torch.cuda.get_device_name() if cuda(dev) else 'cpu'
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, {name}', flush=True)
    if cuda(dev): print(f'int4 kernels on the device: relative error {check_int4_kernels(dev):.1e}', flush=True)
    root = Path(tempfile.mkdtemp(prefix='gpu_engine_'))
    try:
        dtype = torch.float16 if cuda(dev) else torch.float32
        model = random_chatglm2(cfg, seed=0, device=dev, dtype=dtype)
        t0 = time.perf_counter()
        save_chatglm2(model, root/'fp16', 'sharded', shards=7, dtype=torch.float16)
        save_chatglm2(model, root/'int4', 'int4')
        del model; reset_peak(dev)
        for f in ('fp16', 'int4'): train_sentencepiece(root/f/'tokenizer.model', DEMO_CORPUS, vocab_size=600)
        print(f'wrote fp16 and int4 checkpoints in {time.perf_counter() - t0:.1f}s', flush=True)
        prompt = ('今天天气很好，我们一起去公园散步吧。' * 40)[:600]
        plan = [(f'{kind} {mode}', kind, a.new_tokens, {'decode': 'compile' if mode == 'compiled' else mode})
                for mode in ('graph', 'compiled', 'eager') for kind in ('fp16', 'int4')]
        if cuda(dev): plan += [(f'fp16 -> bnb {q}', 'fp16', 64, {'quantize': q}) for q in ('4bit', '8bit')]
        if a.variants: plan = [v for v in plan if v[0] in a.variants.split(',')]
        rows = []
        for variant, folder, new, opts in plan:
            rows.append(run(variant, root/folder, dev, prompt, new, **opts))
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cols = ['variant', 'decode', 'load_s', 'weights_GB', 'peak_GB', 'prompt_tok', 'new_tok', 'first_s', 'tok/s', 'step_ms_bare']
    print(f'\nengine.generate, greedy, {a.new_tokens} new tokens, on {name}')
    print_table(rows, cols)


if __name__ == '__main__':
    main()
