#!/usr/bin/env python
"""Memory of ChatGLM2 with 8-bit weights on a CPU (`--quantize 8bit`, `nbs/03c_quantize.ipynb`): peak while loading and once loaded.

Loads the random ChatGLM2 checkpoints of the 6B's width that `bench_cpu_vs_llamacpp.py` writes (float32 safetensors in
two shards, 2 and 4 layers, in `~/.cache/fc_chatglm/bench`; written here if missing) with `load_engine(device='cpu',
quantize='8bit')`, each in a fresh process, and prints its peak resident memory while loading (`peak_during`: Linux's VmHWM
counted from just before loading; elsewhere sampled every 10 ms while loading), its resident memory once loaded,
the largest shard, and one generated token as proof the model runs. Then the fit per layer, and the full ChatGLM2-6B
(28 layers) from it: loaded memory, and the peak as that plus one published shard (the seven fp16 shards of
ChatGLM2-6B are at most 1.98 GB).

    python benchmarks/bench_int8_load.py                 # 2 and 4 layers, about 3 minutes on 2 busy cores
    python benchmarks/bench_int8_load.py --layers 2 4 --dtype float32

It asserts nothing: it prints figures.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
FULL_LAYERS, PUBLISHED_SHARD = 28, 1.98e9
GB = 1e9


def child(folder: Path, dtype: str) -> None:
    import torch
    from fc_chatglm.load import LoadOptions, load_engine
    from fc_chatglm.schemas import TextRequest
    from fc_chatglm.testing import peak_during
    import psutil
    t0 = time.perf_counter()  # the peak counts from here, not from importing torch (where the system allows: Linux)
    before, peak, engine = peak_during(lambda: load_engine(LoadOptions(model=folder, device='cpu', dtype=dtype, quantize='8bit')))
    load_s, loaded = time.perf_counter() - t0, psutil.Process().memory_info().rss
    size = sum(t.numel() * t.element_size() for t in [*engine.model.parameters(), *engine.model.buffers()])
    out = engine.generate(TextRequest(message='Hello', settings={'temperature': 0, 'maxResponseTokens': 1}))
    print('RESULT ' + json.dumps(dict(before=before, peak=peak, loaded=loaded, size=size, load_s=load_s, tokens=out.tokens,
                                      dtype=str(engine.model.dtype))), flush=True)


def run(folder: Path, dtype: str) -> dict:
    r = subprocess.run([sys.executable, __file__, '--child', str(folder), '--dtype', dtype], capture_output=True, text=True,
                       env={**os.environ, 'PYTHONPATH': str(HERE.parent)}, errors='replace')
    line = next((l for l in r.stdout.splitlines() if l.startswith('RESULT ')), None)
    if r.returncode or line is None: raise RuntimeError(f'{folder.name} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}')
    return json.loads(line[7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--layers', type=int, nargs='+', default=[2, 4])
    ap.add_argument('--dtype', default='auto', help='the dtype of the parts that stay in floating point (auto: bfloat16 where native)')
    ap.add_argument('--child', type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a.child, a.dtype)
    import llamacpp
    from bench_cpu_vs_llamacpp import checkpoint
    load = f', load average {os.getloadavg()[0]:.1f}' if hasattr(os, 'getloadavg') else ''
    print(f'8-bit loading on a CPU ({os.cpu_count()} CPUs{load})\n')
    print('| layers | shard GB | peak while loading GB | loaded GB | model tensors GB | peak - loaded GB | load s |')
    print('|---|---|---|---|---|---|---|')
    res = {}
    for n in a.layers:
        folder = checkpoint(llamacpp.CACHE/'bench', n)
        shard = max(f.stat().st_size for f in folder.glob('*.safetensors'))
        r = res[n] = run(folder, a.dtype) | dict(shard=shard)
        print(f"| {n} | {shard / GB:.2f} | {(r['peak'] - r['before']) / GB:.2f} | {(r['loaded'] - r['before']) / GB:.2f} | "
              f"{r['size'] / GB:.2f} | {(r['peak'] - r['loaded']) / GB:.2f} | {r['load_s']:.0f} |", flush=True)
    if len(res) >= 2:
        (n2, r2), (n4, r4) = sorted(res.items())[0], sorted(res.items())[-1]
        fit = lambda k: (lambda per: (r2[k] - r2['before'] - per * n2, per))(((r4[k] - r4['before']) - (r2[k] - r2['before'])) / (n4 - n2))
        fixed, per = fit('loaded')
        tensors = r2['size'] + (r4['size'] - r2['size']) / (n4 - n2) * (FULL_LAYERS - n2)
        full = max(fixed + per * FULL_LAYERS, tensors)
        print(f'\nLoaded: {fixed / GB:.2f} GB + {per / GB:.3f} GB per layer resident, {tensors / GB:.2f} GB of tensors for ChatGLM2-6B '
              f'({FULL_LAYERS} layers): {full / GB:.2f} GB loaded (the larger of the two), at most {(full + PUBLISHED_SHARD) / GB:.2f} GB '
              f"while loading (plus one published shard of {PUBLISHED_SHARD / GB:.2f} GB). dtype of the floating-point parts: {r4['dtype']}.")


if __name__ == '__main__':
    main()
