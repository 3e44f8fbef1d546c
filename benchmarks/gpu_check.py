#!/usr/bin/env python
"""GPU check of fc_chatglm.chatglm2 on a 6B-shaped ChatGLM2 with random weights.

Builds the model straight on the device, writes it in the published fp16 sharded layout and as the
int4 variant, then for each: load time with `load_chatglm2` and `prepare` (as the loader does), speed of a 512-token prompt plus 256
greedy new tokens with `model.generate`, and peak GPU memory. Prints a table; asserts nothing
about time. `--small --device cpu` runs the same path on a tiny model (for a CPU-only machine).

    python benchmarks/gpu_check.py            # on a GPU, about 3 minutes
    python benchmarks/gpu_check.py --small --device cpu

Measured (torch 2.11, transformers 5.17): decode tokens/s, dynamic cache / static cache (compiled):
H100 fp16 15 / 127, int4 16 / 75; H200 fp16 16 / 163, int4 18 / -. Peak memory fp16 11.8 GB,
int4 4.15 GB. The reloaded fp16 model's logits equal the in-memory model's exactly.
"""
import argparse, gc, os, platform, shutil, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import fc_chatglm from the repo root

import torch
import transformers

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, dequantize_int4, load_chatglm2, random_chatglm2, save_chatglm2, unpack_int4
from fc_chatglm.folder import ModelFolder
from fc_chatglm.speedups import Int4Linear, int4_layers, prepare

SMALL = {**CHATGLM2_6B_CONFIG, 'num_layers': 2, 'hidden_size': 64, 'num_attention_heads': 4, 'kv_channels': 16,
         'ffn_hidden_size': 128, 'padded_vocab_size': 1024, 'seq_length': 2048}
GB = 1024 ** 3


def sync(device: torch.device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def reset_peak(device: torch.device):
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def mem(device: torch.device, peak: bool = False) -> float:
    if device.type != 'cuda': return float('nan')
    return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / GB


def timed(fn, device):
    sync(device); t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def generate(model, ids, new: int, **kw):
    mask = torch.ones_like(ids)
    return model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                          use_cache=True, **kw)


def bench(name: str, folder: Path, args, ids: torch.Tensor, ref_logits: torch.Tensor | None = None,
          prefill_s: float | None = None, **gen_kw) -> dict:
    "Load `folder`, then time prefill and a full greedy generation (`prefill_s` given: warm up on the full length)."
    dev = torch.device(args.device)
    reset_peak(dev)
    def load():
        f = ModelFolder.read(folder)
        m = load_chatglm2(f.config, f.weights, dev, args.dtype, int4_layers=int4_layers if dev.type == 'cuda' else None)
        return prepare(m, dev, args.dtype, upcast=False)
    model, load_s = timed(load, dev)
    row = {'variant': name, 'load_s': load_s, 'weights_GB': mem(dev)}
    ids = ids.to(dev)
    with torch.no_grad():
        if ref_logits is not None:  # same weights as the model built in memory: the logits must agree
            logits = model(ids[:, :64]).logits.float().cpu()
            row['max|dlogit|'] = (logits - ref_logits).abs().max().item()
        # warm-up; a static cache is compiled for its exact length, so it warms up on the measured shapes
        warm_new = 8 if prefill_s is None else args.new_tokens
        _, row['warmup_s'] = timed(lambda: generate(model, ids, warm_new, **gen_kw), dev)
        ttft = prefill_s if prefill_s is not None else timed(lambda: generate(model, ids, 1, **gen_kw), dev)[1]
        out, total = timed(lambda: generate(model, ids, args.new_tokens, **gen_kw), dev)
    new = out.shape[1] - ids.shape[1]
    assert new == args.new_tokens, (new, args.new_tokens)
    row |= {'prefill_s': ttft, 'total_s': total, 'new_tok/s': new / total,
            'decode_tok/s': (new - 1) / max(total - ttft, 1e-9), 'peak_GB': mem(dev, peak=True),
            'int4_layers': sum(isinstance(m, Int4Linear) for m in model.modules())}
    del model, out
    reset_peak(dev)
    return row


def check_int4_kernels(device: torch.device):
    "unpack_int4 and Int4Linear on the device agree with the CPU."
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--small', action='store_true', help='a tiny config instead of 6B (for CPU tests)')
    p.add_argument('--device', default='cuda')
    p.add_argument('--dir', default=None, help='where to write the checkpoints (default: a temp dir, removed after)')
    p.add_argument('--prompt-tokens', type=int, default=512)
    p.add_argument('--new-tokens', type=int, default=256)
    p.add_argument('--shards', type=int, default=7, help='fp16 shards, as published')
    p.add_argument('--no-static', action='store_true', help='skip the fp16 run with a static cache (torch.compile)')
    args = p.parse_args()
    dev = torch.device(args.device)
    args.dtype = torch.float16 if dev.type == 'cuda' else torch.float32
    cfg = SMALL if args.small else CHATGLM2_6B_CONFIG
    gpu = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'cpu'
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, {gpu}, dtype {args.dtype}, '
          f'{"small" if args.small else "6B"} config', flush=True)
    if dev.type == 'cuda': print(f'int4 kernels on device: relative error {check_int4_kernels(dev):.1e}', flush=True)

    root = Path(args.dir or tempfile.mkdtemp(prefix='gpu_check_'))
    try:
        model, build_s = timed(lambda: random_chatglm2(cfg, seed=0, std=0.02, device=dev, dtype=args.dtype), dev)
        n_params = sum(t.numel() for t in model.parameters())
        print(f'built {n_params / 1e9:.2f}B params on {dev} in {build_s:.1f}s', flush=True)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, cfg['padded_vocab_size'] - 300, (1, args.prompt_tokens), generator=g)
        with torch.no_grad(): ref_logits = model(ids[:, :64].to(dev)).logits.float().cpu()
        _, fp16_s = timed(lambda: save_chatglm2(model, root/'fp16', 'sharded', shards=args.shards, dtype=torch.float16), dev)
        _, int4_s = timed(lambda: save_chatglm2(model, root/'int4', 'int4'), dev)
        size = lambda f: sum(x.stat().st_size for x in f.iterdir()) / GB
        print(f'wrote fp16 sharded ({size(root/"fp16"):.2f} GB) in {fp16_s:.1f}s, int4 ({size(root/"int4"):.2f} GB) '
              f'in {int4_s:.1f}s to {root}', flush=True)
        _, flush_s = timed(os.sync, dev)  # let the writes reach the disk before anything is timed
        print(f'flushed to disk in {flush_s:.1f}s', flush=True)
        del model
        rows = []
        runs = [('fp16', root/'fp16', {'ref_logits': ref_logits}), ('int4', root/'int4', {})]
        # last, as torch.compile may take minutes: the eager prefill stands in for the static run's prefill
        if not args.no_static:
            runs += [('fp16 static', root/'fp16', {'cache_implementation': 'static'}),
                     ('int4 static', root/'int4', {'cache_implementation': 'static'})]
        for name, folder, kw in runs:
            if name.endswith(' static'):
                eager = next((r for r in rows if r['variant'] == name.split()[0]), {})
                kw['prefill_s'] = eager.get('prefill_s', 0.0)
            try: rows.append(bench(name, folder, args, ids, **kw))
            except Exception as e:  # one failing variant should not hide the others' numbers
                print(f'{name}: FAILED {type(e).__name__}: {e}'.splitlines()[0][:300], flush=True)
                rows.append({'variant': name})
            print(rows[-1], flush=True)
    finally:
        if args.dir is None: shutil.rmtree(root, ignore_errors=True)

    cols = ['variant', 'load_s', 'weights_GB', 'peak_GB', 'warmup_s', 'prefill_s', 'new_tok/s', 'decode_tok/s', 'int4_layers', 'max|dlogit|']
    fmt = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)
    print(f'\n{args.prompt_tokens}-token prompt + {args.new_tokens} new tokens, greedy, on {gpu}')
    print(' | '.join(f'{c:>12}' for c in cols))
    for r in rows: print(' | '.join(f'{fmt(r.get(c, "-")):>12}' for c in cols))
    if dev.type == 'cuda' and not args.small:
        best = max((r.get('decode_tok/s', 0) for r in rows if r['variant'].startswith('fp16')), default=0)
        int4 = max((r for r in rows if r['variant'].startswith('int4')), key=lambda r: r.get('peak_GB', 99), default={})
        print(f'target fp16 >= 150 tok/s: best fp16 decode {best:.0f} tok/s -> {"met" if best >= 150 else "NOT met"}')
        print(f'target int4 peak < 6 GB: highest int4 peak {int4.get("peak_GB", float("nan")):.2f} GB -> '
              f'{"met" if int4.get("peak_GB", 99) < 6 else "NOT met"}')


if __name__ == '__main__':
    main()
