#!/usr/bin/env python
"""The connector against llama.cpp on a CPU, side by side: the same random ChatGLM2 weights, threads, prompt and length.

What it does, each step skipped when its result is already in the cache folder
(`~/.cache/fc_chatglm`, or `--cache`):

1. builds llama.cpp (`llama-bench`, `llama-quantize`, `llama-simple`) from PyPI's `llama-cpp-python`
   source distribution (`benchmarks/llamacpp.py`; prints the build time);
2. writes random ChatGLM2 checkpoints with the package (`random_chatglm2`, `save_chatglm2`, float32
   weights, the demo's tokenizer): the 6B's width (hidden 4096, ffn 13696, 32 heads, 2 key-value
   groups, vocabulary 65024) with 2 and 4 layers, and the demo model (`build_demo`);
3. converts each with llama.cpp's own converter to F32, F16 and BF16 GGUF files, and quantizes
   the F32 file to Q8_0 and Q4_0 with llama-quantize; for the connector's `int4` mode, the same weights in
   chatglm2-6b-int4's format (`int4_checkpoint`);
4. checks that both engines give the same greedy tokens for one prompt (connector float32 against
   llama.cpp's F32 through llama-simple, on the demo and the 2-layer model);
5. runs both engines interleaved (connector, then llama.cpp, for each model and precision, `--repeats`
   rounds), with the same threads, a prompt of `--prompt` tokens and `--new` new tokens, batch 1,
   greedy. The connector's modes are its dtypes against llama.cpp's F32, F16 and BF16, `int8`
   (`--quantize 8bit`: 8-bit weights, the rest bfloat16 where native) against Q8_0, `int8-dynamic`
   (`--quantize 8bit-dynamic`: the same weights on fbgemm with 8-bit activations; only when named
   in `--precisions`) against Q8_0 too, and `int4` (the
   int4 checkpoint on torch's CPU int4 kernel, the rest bfloat16) against Q4_0. The connector runs in
   a child process per run: `load_engine` (device cpu, the mode, decode auto = eager on a CPU), one warm-up generation, then one timed `engine.generate` over a
   text prompt continued as it is; the prompt speed is prompt tokens / `Outcome.first_token_s`, the
   new-token speed (new tokens - 1) / (`Outcome.seconds` - `first_token_s`). The end-of-reply token
   is ignored so that every run makes all its tokens. llama.cpp runs `llama-bench -p P -n N -t T -r 1
   -o json` (one warm-up run of its own; its new tokens start from an empty cache, the connector's after
   the prompt: the same work give or take attention over 128 more positions). Peak memory: the
   connector child's own peak RSS (loading included) and its RSS once loaded; llama.cpp's from
   `/usr/bin/time -v` where there is one, else psutil polling;
6. prints each configuration's fastest run (`--stat best`, the default: on a shared machine other work only
   ever slows a run down, so the fastest of the rounds is the one closest to what the code does; `--stat
   median` prints medians), the ratios per precision in the issue's table form (#19), the fixed cost
   per new token on the demo model, each engine's time per token split into a part per layer and
   a fixed part from the 2- and 4-layer runs, and the full ChatGLM2-6B estimate (28 layers) from
   that fit: time per token = fixed + per layer x layers, memory likewise.

It is a benchmark, not a test: it asserts nothing about time. Disk: about 30 GB in the cache folder.
Memory: about 9 GB at most (the connector's 4-layer float32 run: the model and one shard). Time,
measured on a 2-core machine shared with four other jobs (everything at nice 19): the llama.cpp build
23 minutes (7 minutes of CPU), the two checkpoints 3 minutes each, conversions and quantizations
about 6 minutes; then `--quick` 8 minutes, and about 20 minutes per full round (128 new tokens), so
about 2 hours for the default 6 rounds there; a quiet machine is faster. Figures are printed after
every round, so a run stopped early still reports. `benchmarks/profile_cpu_step.py` shows where the
connector's time goes; `nbs/cpu.md` has both scripts' output and what it suggests.

    python benchmarks/bench_cpu_vs_llamacpp.py                   # everything, 6 interleaved rounds
    python benchmarks/bench_cpu_vs_llamacpp.py --quick           # 1 round, 32 new tokens
    python benchmarks/bench_cpu_vs_llamacpp.py --repeats 3 --threads 4 --json results.json
    python benchmarks/bench_cpu_vs_llamacpp.py --quick --layers 2 --precisions int8 int4 --no-check  # the quantized modes only
    python benchmarks/bench_cpu_vs_llamacpp.py --quick --isa avx2 --precisions float32 int8 int8-dynamic --quants  # as an AVX2 desktop
    python benchmarks/bench_cpu_vs_llamacpp.py --report results.json --stat median  # a saved run's figures again, another way

`--isa avx2` (or `avx512`) runs the connector as a CPU with that instruction set (torch's
`ATEN_CPU_CAPABILITY`, oneDNN's `ONEDNN_MAX_CPU_ISA`, fbgemm's `FBGEMM_ENABLE_INSTRUCTIONS`, set for
its child processes) and llama.cpp built for it (`llamacpp.py build --isa avx2`: no AVX-512, no AMX),
so one machine gives the figures of a smaller one; the CPU's model and flags and torch's capability
are printed first. The memory and cores stay the machine's own, so the figures are an emulation,
not a measurement of such a desktop. With two layer counts, a table splits each engine's time per
token into a part per layer and a fixed part (the output layer, the sampler, the loop), the way a
28-layer model feels them.

Tested with llama-cpp-python 0.3.36 (llama.cpp 0c1e570), torch 2.13.0, numpy 2.4.6, sentencepiece 0.2.3,
transformers 5.24.0, psutil 7.2.2; gcc 12, cmake 3.25. None of these is a requirement of the package.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # import fc_chatglm from the repo root
sys.path.insert(0, str(HERE))
import llamacpp

PRECISIONS = [('float32', 'F32'), ('float16', 'F16'), ('bfloat16', 'BF16'), ('int8', 'Q8_0'), ('int8-dynamic', 'Q8_0'),
              ('int4', 'Q4_0')]  # the connector's mode, llama.cpp's type
MODES = {'int8': dict(dtype='auto', quantize='8bit'),  # 8-bit weights (`03c_quantize`), the rest bfloat16 where native
         'int8-dynamic': dict(dtype='auto', quantize='8bit-dynamic'),  # the same weights on fbgemm, 8-bit activations (`DynamicInt8Linear`)
         'int4': dict(dtype='bfloat16')}  # the int4 checkpoint (`int4_checkpoint`) on the CPU int4 kernel, the rest bfloat16
QUANTS = ['Q8_0', 'Q4_0']  # llama.cpp only
FULL_LAYERS = 28  # ChatGLM2-6B
ISA_ENV = {  # --isa: what the connector's processes are told, so that a bigger x86 machine runs as a smaller one
    'native': {},
    'avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'FBGEMM_ENABLE_INSTRUCTIONS': 'AVX2'},
    'avx512': {'ATEN_CPU_CAPABILITY': 'avx512', 'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16', 'FBGEMM_ENABLE_INSTRUCTIONS': 'AVX512_E1'}}
ISA_NEEDS = {'native': (), 'avx2': ('avx2', 'fma', 'f16c'), 'avx512': ('avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16')}
SHOWN_FLAGS = ('avx2', 'fma', 'f16c', 'avx_vnni', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_int8', 'amx_bf16')


def cpu_info() -> tuple[str, set[str] | None]:
    "The CPU's model name and its flags (from /proc/cpuinfo on Linux; elsewhere the platform's name and None)."
    import platform
    try: text = Path('/proc/cpuinfo').read_text()
    except OSError: return platform.processor() or platform.machine(), None
    field = lambda k: next((l.split(':', 1)[1].strip() for l in text.splitlines() if l.startswith(k)), '')
    return field('model name') or platform.machine(), set(field('flags').split())


def use_isa(isa: str) -> str:
    "Set the environment for `isa` (children inherit it; call before importing torch); return a line saying what runs."
    name, flags = cpu_info()
    missing = [f for f in ISA_NEEDS[isa] if flags is not None and f not in flags]
    if missing: raise SystemExit(f'--isa {isa} needs {", ".join(missing)}, which this CPU ({name}) lacks: use --isa native')
    os.environ.update(ISA_ENV[isa])
    has = ' '.join(f for f in SHOWN_FLAGS if f in flags) if flags is not None else 'unknown (no /proc/cpuinfo)'
    env = ' '.join(f'{k}={v}' for k, v in ISA_ENV[isa].items()) or 'none'
    return f'CPU: {name}; flags: {has}; --isa {isa} (environment: {env})'


# ---- the connector, in a child process (`--child`): prints one JSON line

def prompt_text(count_ids, n: int) -> str:
    "A text from the demo corpus that `count_ids` turns into `n` prompt tokens (or the fewest above `n`)."
    from fc_chatglm.demo import DEMO_CORPUS
    corpus = DEMO_CORPUS.replace('\n', ' ') * (1 + n // 50)
    lo, hi = 1, len(corpus)
    while lo < hi:  # the shortest prefix with at least n tokens
        mid = (lo + hi) // 2
        if count_ids(corpus[:mid]) >= n: hi = mid
        else: lo = mid + 1
    for k in range(lo, max(lo - 8, 0), -1):  # a prefix ending on a space may merge otherwise
        if count_ids(corpus[:k]) == n: return corpus[:k]
    return corpus[:lo]


def child(a):
    import torch
    torch.set_num_threads(a.threads)
    from fc_chatglm.load import LoadOptions, load_engine
    from fc_chatglm.schemas import TextRequest
    from fc_chatglm.testing import peak_rss
    import psutil
    t0 = time.perf_counter()
    engine = load_engine(LoadOptions(model=Path(a.child), device='cpu', decode=a.decode, **MODES.get(a.dtype, dict(dtype=a.dtype))))
    load_s, loaded = time.perf_counter() - t0, psutil.Process().memory_info().rss
    engine.text_as = 'raw'  # the text is the prompt, continued as it is
    engine.fmt.eos_ids = set()  # random weights: make every run produce all its tokens
    text = prompt_text(lambda s: len(engine.fmt.text_ids(s)), a.prompt)
    ask = lambda n: TextRequest(message=text, settings={'temperature': 0, 'maxResponseTokens': n})
    engine.generate(ask(2))  # warm-up: the prompt's shapes once
    engine.decoder.end(None)  # forget the cache, or the next request would reuse the prompt's
    out = engine.generate(ask(a.new))
    assert out.reused == 0 and out.tokens == a.new, (out.reused, out.tokens)
    res = dict(prompt_tokens=out.prompt_tokens, new_tokens=out.tokens, load_s=load_s,
               prompt_tok_s=out.prompt_tokens / out.first_token_s,
               gen_tok_s=(out.tokens - 1) / (out.seconds - out.first_token_s), loaded_rss=loaded, peak_rss=peak_rss())
    if a.ids:  # greedy ids of the prompt and `a.ids` new tokens (fed back through the decoder's step)
        fed, step = [], engine.decoder.step
        engine.decoder.step = lambda t: (fed.append(int(t.reshape(-1)[0])), step(t))[1]
        engine.decoder.end(None)
        engine.generate(ask(a.ids + 1))
        res |= dict(prompt_ids=engine.fmt.text_ids(text), ids=fed[:a.ids], text=text)
    print('RESULT ' + json.dumps(res), flush=True)


def connector(folder: Path, dtype: str, a, ids: int = 0) -> dict:
    env = {**os.environ, 'OMP_NUM_THREADS': str(a.threads), 'PYTHONPATH': str(HERE.parent)}
    cmd = [sys.executable, str(Path(__file__).resolve()), '--child', str(folder), '--dtype', dtype, '--prompt', str(a.prompt),
           '--new', str(a.new), '--threads', str(a.threads), '--decode', a.decode, '--ids', str(ids)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, errors='replace')
    line = next((l for l in r.stdout.splitlines() if l.startswith('RESULT ')), None)
    if r.returncode or line is None: raise RuntimeError(f'connector run failed ({r.returncode}): {folder.name} {dtype}\n{r.stdout[-2000:]}{r.stderr[-3000:]}')
    return json.loads(line[7:])


# ---- llama.cpp

def measured(cmd: list[str]) -> tuple[str, str, int]:
    "Run `cmd`; return its stdout, stderr and peak RSS in bytes (GNU time where there is one, else sampled)."
    if Path('/usr/bin/time').exists():
        r = subprocess.run(['/usr/bin/time', '-v', *cmd], capture_output=True, text=True, errors='replace')
        m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', r.stderr)
        if r.returncode: raise RuntimeError(f'{Path(cmd[0]).name} failed ({r.returncode}):\n{r.stderr[-3000:]}')
        return r.stdout, r.stderr, int(m.group(1)) * 1024 if m else 0
    from fc_chatglm.testing import peak_during
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors='replace')
    _, peak, (out, err) = peak_during(p.communicate, p.pid, sampled=True)  # the kernel's own peak is gone once it exits
    if p.returncode: raise RuntimeError(f'{Path(cmd[0]).name} failed ({p.returncode}):\n{err[-3000:]}')
    return out, err, peak


def llama(gguf: Path, a, extra: tuple[str, ...] = ()) -> dict:
    out, _, peak = measured([str(llamacpp.exe('llama-bench', isa=a.isa)), '-m', str(gguf), '-p', str(a.prompt), '-n', str(a.new),
                             '-t', str(a.threads), '-r', '1', '-o', 'json', *extra])
    rows = json.loads(out)
    pp = next(r for r in rows if r['n_prompt'] and not r['n_gen'])
    tg = next(r for r in rows if r['n_gen'] and not r['n_prompt'])
    return dict(prompt_tok_s=pp['avg_ts'], gen_tok_s=tg['avg_ts'], peak_rss=peak)


NO_REPACK = ('--repack', '0')

def llama_options(models, a) -> tuple[dict, list[str]]:
    """The extra llama-bench options each GGUF type needs on this machine, and notes: a short run of each; one that crashes runs
    again with `--repack 0` (no extra buffer types). On a CPU with AMX that the machine does not let programs use (a virtual
    machine), ggml's AMX kernels for Q8_0 and Q4_0 die in `ggml_backend_amx_mul_mat` (ldtilecfg); `--repack 0` leaves them
    out, and the CPU repacking of Q4_0 with them, so the quantized figures are then lower than llama.cpp's best."""
    options, notes = {}, []
    for t in sorted({t for m in models.values() for t in m['gguf']}):
        path = next(m['gguf'][t] for m in models.values() if t in m['gguf'])
        quick = argparse.Namespace(**{**vars(a), 'prompt': 8, 'new': 2})
        try: llama(path, quick); options[t] = ()
        except RuntimeError as e:
            llama(path, quick, NO_REPACK)  # raises if this fails too
            options[t] = NO_REPACK
            notes.append(f'{t}: llama-bench crashed ({str(e).splitlines()[0]} probably the AMX kernels), so {t} runs with --repack 0; '
                         '`python benchmarks/llamacpp.py build --force --no-amx` builds without them')
            print('  ' + notes[-1], flush=True)
    return options, notes


def llama_simple(gguf: Path, prompt: str, n: int, isa: str = 'native') -> bytes:
    "llama-simple's greedy run over `prompt` (text; special tokens are parsed) with `n` new tokens: what it prints, the prompt's pieces then the new ones."
    r = subprocess.run([str(llamacpp.exe('llama-simple', isa=isa)), '-m', str(gguf), '-n', str(n), prompt], capture_output=True)
    if r.returncode: raise RuntimeError(f'llama-simple failed ({r.returncode}):\n{r.stderr[-3000:].decode(errors="replace")}')
    return r.stdout.rstrip(b'\n')


def pieces_bytes(tok, ids: list[int]) -> bytes:
    "The bytes llama.cpp prints for these token ids: a byte token as its byte, '▁' as a space, specials by name."
    out = b''
    for p in tok.convert_ids_to_tokens(ids):
        m = re.fullmatch(r'<0x([0-9A-Fa-f]{2})>', p)
        out += bytes([int(m.group(1), 16)]) if m else p.replace('▁', ' ').encode()
    return out


# ---- the models

def in_child(folder: Path, flag: str, arg: Path) -> Path:
    """`folder`, written once by this script run again as a child (`flag arg`): a child inherits its parent's peak resident
    memory on Linux, so the parent, whose connector runs report that peak, builds no model itself."""
    if not (folder/'config.json').exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), flag, str(arg)], check=True,
                       env={**os.environ, 'PYTHONPATH': str(HERE.parent)})
        print(f'  wrote {folder.name} in {time.perf_counter() - t0:.0f} s', flush=True)
    return folder


def save_with_tokenizer(model, folder: Path, tokenizer: Path, **kw) -> None:
    "`save_chatglm2` into `folder`, with the tokenizer, through a part folder: a run stopped halfway leaves no config.json."
    from fc_chatglm.chatglm2 import save_chatglm2
    save_chatglm2(model, folder/'part', **kw)
    shutil.copy(tokenizer, folder/'part'/'tokenizer.model')
    for f in (folder/'part').iterdir(): f.replace(folder/f.name)
    (folder/'part').rmdir()


def checkpoint(cache: Path, layers: int) -> Path:
    "The random float32 ChatGLM2 checkpoint of the 6B's width with `layers` layers and the demo's tokenizer, written once."
    folder = cache/f'chatglm2-6b-width-{layers}-layers'
    demo_folder(cache)  # its tokenizer goes with the checkpoint
    return in_child(folder, '--write-float', folder)


def write_float(folder: Path) -> None:
    "Write the checkpoint `checkpoint` names `folder` (its layer count in the name); run in a child process (`--write-float`)."
    import torch
    from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
    layers = int(folder.name.split('-')[-2])  # chatglm2-6b-width-<layers>-layers
    model = random_chatglm2({**CHATGLM2_6B_CONFIG, 'num_layers': layers}, seed=0, dtype=torch.float32)
    save_with_tokenizer(model, folder, folder.parent/'demo'/'tokenizer.model', layout='safetensors', shards=2, dtype=torch.float32)


def write_int4(src: Path) -> None:
    "Write `src`'s weights in chatglm2-6b-int4's format next to it (`<src>-int4`); run in a child process (`--write-int4`)."
    import torch
    from fc_chatglm.chatglm2 import load_chatglm2
    from fc_chatglm.folder import ModelFolder
    f = ModelFolder.read(src)
    save_with_tokenizer(load_chatglm2(f.config, f.weights, dtype=torch.float32), src.parent/f'{src.name}-int4', src/'tokenizer.model',
                        layout='int4')


def int4_checkpoint(cache: Path, layers: int) -> Path:
    "The same random weights as `checkpoint` in chatglm2-6b-int4's format (packed nibbles, one scale per row), written once."
    src = checkpoint(cache, layers)
    return in_child(cache/f'{src.name}-int4', '--write-int4', src)


def demo_folder(cache: Path) -> Path:
    "The demo model's checkpoint and tokenizer (`build_demo`), written once."
    from fc_chatglm.demo import build_demo
    demo = cache/'demo'
    if not (demo/'DEMO.md').exists(): build_demo(demo)
    return demo


def prepare(cache: Path, layers: list[int], isa: str = 'native') -> dict[str, dict]:
    "Checkpoints and GGUF files for the demo and each 6B-width layer count: {name: {'folder', 'layers', 'types', 'gguf': {type: path}}}."
    models = {'demo': dict(folder=demo_folder(cache), layers=None, types=['F32'])}
    types = list(dict.fromkeys(['F32'] + [t for _, t in PRECISIONS] + QUANTS))  # quantized from F32
    for n in layers:
        models[f'{n} layers'] = dict(folder=checkpoint(cache, n), layers=n, types=types)
        if 'int4' in dict(PRECISIONS): models[f'{n} layers']['int4'] = int4_checkpoint(cache, n)
    for m in models.values(): m['gguf'] = {t: m['folder']/f'ggml-{t}.gguf' for t in m['types']}
    for quant, name, m in [(q, n, m) for q in (False, True) for n, m in models.items()]:  # conversions first, then llama-quantize
        for t, path in m['gguf'].items():
            if (t in QUANTS) != quant: continue
            if not path.exists():
                s = llamacpp.quantize(m['folder']/'ggml-F32.gguf', path, t, isa=isa) if t in QUANTS else \
                    llamacpp.convert(m['folder'], path, t.lower())
                print(f'  {name}: {path.name} in {s:.0f} s', flush=True)
    return models


# ---- the report

STAT = ['best']  # --stat: 'best' (the fastest run) or 'median'

def med(runs: list[dict], key: str) -> float:
    "The runs' typical `key`: the fastest run's (the largest rate, the least memory) under `--stat best`, else the median."
    if STAT[0] == 'median': return statistics.median(r[key] for r in runs)
    return max(r[key] for r in runs) if key.endswith('_s') else min(r[key] for r in runs)
GB = 1e9

def estimate(t2: float, t4: float, n2: int, n4: int, n: int = FULL_LAYERS) -> tuple[float, float, float]:
    "Fixed and per-layer parts of a linear fit through (n2, t2) and (n4, t4), and its value at n layers."
    per = (t4 - t2) / (n4 - n2)
    fixed = t2 - per * n2
    return fixed, per, fixed + per * n


def report(models, res, a, elapsed):
    C, L = res['connector'], res['llama']
    stat = 'the fastest' if STAT[0] == 'best' else 'medians'
    print(f'\n## Results: {stat} of {a.repeats} interleaved run(s); {a.threads} threads, batch 1, greedy, '
          f'{a.prompt}-token prompt, {a.new} new tokens')
    for name, m in models.items():
        if m['layers'] is None: continue
        print(f'\n### 6B width, {name}\n')
        print('| precision | prompt tok/s, connector / llama.cpp | new tokens tok/s, connector / llama.cpp | peak memory GB, connector (loaded) / llama.cpp |')
        print('|---|---|---|---|')
        for dt, t in PRECISIONS:
            c, l = C[name, dt], L[name, t]
            cp, lp, cg, lg = med(c, 'prompt_tok_s'), med(l, 'prompt_tok_s'), med(c, 'gen_tok_s'), med(l, 'gen_tok_s')
            print(f'| {dt} | {cp:,.0f} / {lp:,.0f} ({cp / lp:.2f}) | {cg:.1f} / {lg:.1f} ({cg / lg:.2f}) | '
                  f'{max(r["peak_rss"] for r in c) / GB:.1f} ({med(c, "loaded_rss") / GB:.1f}) / {max(r["peak_rss"] for r in l) / GB:.1f} |')
        if not QUANTS: continue
        q = [L[name, t] for t in QUANTS]
        pp = ' / '.join(f"{med(r, 'prompt_tok_s'):,.0f}" for r in q)
        tg = ' / '.join(f"{med(r, 'gen_tok_s'):.1f}" for r in q)
        mem = ' / '.join(f"{max(x['peak_rss'] for x in r) / GB:.1f}" for r in q)
        print(f"| llama.cpp {' / '.join(QUANTS)} | {pp} | {tg} | {mem} |")
    if 'demo' in models:
        c, l = C['demo', 'float32'], L['demo', 'F32']
        print(f'\nDemo model (hidden 64, 2 layers): time per new token '
              f'{1e3 / med(c, "gen_tok_s"):.2f} ms in the connector (float32) against {1e3 / med(l, "gen_tok_s"):.3f} ms in llama.cpp (F32): '
              f'the fixed cost of a step; prompt {med(c, "prompt_tok_s"):,.0f} against {med(l, "prompt_tok_s"):,.0f} tok/s.')
    sizes = sorted((m['layers'], n) for n, m in models.items() if m['layers'])
    if len(sizes) >= 2: split_table(res, sizes)
    if len(sizes) >= 2:
        (n2, k2), (n4, k4) = sizes[0], sizes[-1]
        print(f'\n### ChatGLM2-6B ({FULL_LAYERS} layers), estimated from the {n2}- and {n4}-layer runs '
              f'(time per token = fixed + per layer x layers; memory likewise)\n')
        print('The fixed part holds the output layer (65024 x 4096 weights, more than a layer\'s 204 M) and the per-token overhead.\n')
        print('The connector\'s peak holds one of the two checkpoint shards, which grow with the layers, so its fitted peak overstates '
              'the real model\'s (seven shards); the figure in brackets is the memory once loaded.\n')
        print('| engine, precision | prompt tok/s | new tokens tok/s | ms per new token: fixed + per layer | peak memory GB (loaded) |')
        print('|---|---|---|---|---|')
        rows = [(f'connector {dt}', C[k2, dt], C[k4, dt]) for dt, _ in PRECISIONS] + \
               [(f'llama.cpp {t}', L[k2, t], L[k4, t]) for t in dict.fromkeys([t for _, t in PRECISIONS] + QUANTS)]
        for label, r2, r4 in rows:
            _, ppl, pp = estimate(1 / med(r2, 'prompt_tok_s'), 1 / med(r4, 'prompt_tok_s'), n2, n4)
            fixed, per, tg = estimate(1 / med(r2, 'gen_tok_s'), 1 / med(r4, 'gen_tok_s'), n2, n4)
            _, _, mem = estimate(max(r['peak_rss'] for r in r2), max(r['peak_rss'] for r in r4), n2, n4)
            loaded = f" ({estimate(med(r2, 'loaded_rss'), med(r4, 'loaded_rss'), n2, n4)[2] / GB:.1f})" if 'loaded_rss' in r2[0] else ''
            noise = 'n/a (more layers ran no slower: noise)'
            print(f'| {label} | {f"{1 / pp:,.0f}" if ppl > 0 else noise} | {f"{1 / tg:.2f}" if per > 0 else noise} | '
                  f'{fixed * 1e3:.0f} + {per * 1e3:.1f} | {mem / GB:.1f}{loaded} |')
    for note in res.get('llama_notes', []): print(f'\nllama.cpp {note}.')
    check = res.get('check')
    if check: print('\nGreedy tokens: ' + '; '.join(check))
    print(f'\nThe benchmark took {elapsed / 60:.1f} min (build and files: {res["prep_s"] / 60:.1f} min, runs: {res["run_s"] / 60:.1f} min).')


def split_table(res, sizes):
    "Per layer and fixed cost of a new token and of a prompt token, connector against llama.cpp, from the two layer counts."
    C, L = res['connector'], res['llama']
    (n2, k2), (n4, k4) = sizes[0], sizes[-1]
    print(f'\n### Per layer and fixed, from the {n2}- and {n4}-layer runs (ms; in brackets llama.cpp\'s time / the connector\'s: '
          f'its speed as a fraction of llama.cpp\'s)\n')
    print('| connector / llama.cpp | new token: per layer | new token: fixed | prompt token: per layer | prompt token: fixed |')
    print('|---|---|---|---|---|')
    fit = lambda r2, r4, k: estimate(1e3 / med(r2, k), 1e3 / med(r4, k), n2, n4)[:2]
    for dt, t in PRECISIONS:
        cells = []
        for k in ('gen_tok_s', 'prompt_tok_s'):
            (cf, cp), (lf, lp) = fit(C[k2, dt], C[k4, dt], k), fit(L[k2, t], L[k4, t], k)
            ratio = lambda l, c: f'{l / c:.2f}' if c > 0 and l > 0 else 'n/a'
            cells += [f'{cp:.2f} / {lp:.2f} ({ratio(lp, cp)})', f'{cf:.1f} / {lf:.1f} ({ratio(lf, cf)})']
        print(f'| {dt} / {t} | ' + ' | '.join(cells) + ' |')


def report_saved(a):
    "Print the report of a run that `--json` saved: its rounds, models and modes as they were."
    saved = json.loads(a.report.read_text())
    res = {k: {tuple(kk.rsplit(' ', 1)): v for kk, v in saved[k].items()} if k in ('connector', 'llama') else saved[k] for k in saved}
    names = dict.fromkeys(n for n, _ in res['connector'])
    models = {n: {'layers': None if n == 'demo' else int(n.split()[0])} for n in names}
    PRECISIONS[:] = [p for p in PRECISIONS if any(dt == p[0] for n, dt in res['connector'] if n != 'demo')]
    QUANTS[:] = [t for t in QUANTS if any(tt == t for _, tt in res['llama'])]
    rounds = min(len(v) for v in res['connector'].values())
    a.threads, a.prompt = saved.get('threads', a.threads), next(iter(res['connector'].values()))[0]['prompt_tokens']
    a.new, a.repeats = next(iter(res['connector'].values()))[0]['new_tokens'], rounds
    report(models, res, a, res['prep_s'] + res['run_s'])


def greedy_check(models, a, n: int = 16) -> list[str]:
    "Whether llama-simple (F32) prints the pieces of the connector's float32 greedy tokens, prompt and `n` new tokens, on the demo and the smallest 6B-width model."
    from fc_chatglm.tokenizer import ChatGLMTokenizer
    notes, smallest = [], min((m['layers'] for m in models.values() if m['layers']), default=None)
    for name, m in models.items():
        if m['layers'] not in (None, smallest): continue
        c = connector(m['folder'], 'float32', argparse.Namespace(**{**vars(a), 'new': 4}), ids=n)
        tok = ChatGLMTokenizer.from_folder(m['folder'])
        want = pieces_bytes(tok, c['prompt_ids'] + c['ids'])
        prompt = pieces_bytes(tok, c['prompt_ids'])
        got = llama_simple(m['gguf']['F32'], '[gMASK]sop' + c['text'], n, a.isa)
        if got == want: verdict = f'same prompt and {n} new tokens'
        elif not got.startswith(prompt): verdict = f'DIFFERENT PROMPT PIECES: llama.cpp tokenized the text otherwise ({got[:60]!r} against {prompt[:60]!r})'
        else:
            same = next((i for i in range(1, n + 1) if not got.startswith(pieces_bytes(tok, c['prompt_ids'] + c['ids'][:i]))), n + 1) - 1
            verdict = f'same prompt, the first {same} of {n} new tokens the same (connector {want[len(prompt):][:50]!r}, llama.cpp {got[len(prompt):][:50]!r})'
        notes.append(f'{name}: {verdict}')
        print('  greedy check, ' + notes[-1], flush=True)
    return notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=6, help='interleaved rounds; the medians are printed')
    ap.add_argument('--quick', action='store_true', help='1 round and 32 new tokens (unless given)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--prompt', type=int, default=128, help='prompt tokens')
    ap.add_argument('--new', type=int, default=None, help='new tokens (default 128; --quick: 32)')
    ap.add_argument('--layers', type=int, nargs='+', default=[2, 4], help='6B-width layer counts (two for the full-model fit)')
    ap.add_argument('--precisions', nargs='+', default=[d for d, _ in PRECISIONS if d != 'int8-dynamic'], choices=[d for d, _ in PRECISIONS],
                    help='connector modes to run: dtypes, int8 (--quantize 8bit) and int4 (the int4 checkpoint), each against its llama.cpp type')
    ap.add_argument('--decode', default='auto', help="the connector's decode mode")
    ap.add_argument('--isa', default='native', choices=list(ISA_ENV),
                    help='run as a CPU with this instruction set: the connector through torch\'s, oneDNN\'s and fbgemm\'s environment '
                         'variables, llama.cpp built for it (its own build folder)')
    ap.add_argument('--no-check', action='store_true', help='skip the greedy-token comparison')
    ap.add_argument('--quants', nargs='*', default=QUANTS, choices=QUANTS, help="llama.cpp's quantized types, made and run whatever the modes")
    ap.add_argument('--cache', type=Path, default=llamacpp.CACHE/'bench', help='checkpoints and GGUF files')
    ap.add_argument('--json', type=Path, help='also write every run to this file')
    # the connector's child process
    ap.add_argument('--child', help=argparse.SUPPRESS); ap.add_argument('--dtype', help=argparse.SUPPRESS)
    ap.add_argument('--ids', type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument('--write-int4', type=Path, help=argparse.SUPPRESS)
    ap.add_argument('--write-float', type=Path, help=argparse.SUPPRESS)
    ap.add_argument('--stat', default='best', choices=['best', 'median'],
                    help='the figure printed per configuration: its fastest run (other work on the machine only slows a run) or the median')
    ap.add_argument('--report', type=Path, help='print the figures of a run saved with --json again (with this --stat), running nothing')
    a = ap.parse_args()
    STAT[0] = a.stat
    if a.report: return report_saved(a)
    if a.new is None: a.new = 32 if a.quick else 128
    if a.child: return child(a)
    if a.write_int4: return write_int4(a.write_int4)
    if a.write_float: return write_float(a.write_float)
    if a.quick and a.repeats == 6: a.repeats = 1
    PRECISIONS[:] = [p for p in PRECISIONS if p[0] in a.precisions]
    QUANTS[:] = list(dict.fromkeys([*a.quants, *(t for _, t in PRECISIONS if t.startswith('Q'))]))  # the pairs' types always
    t_start = time.perf_counter()
    cpu = use_isa(a.isa)  # before torch is imported
    import torch
    load = f', load average {os.getloadavg()[0]:.1f}' if hasattr(os, 'getloadavg') else ''
    print(f'CPU benchmark: connector (torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}) against llama.cpp '
          f'(llama-cpp-python {llamacpp.VERSION}); {os.cpu_count()} CPUs{load}\n{cpu}', flush=True)
    b = llamacpp.build(isa=a.isa)
    print(f'llama.cpp build: {b:.0f} s ({"cached" if time.perf_counter() - t_start < b else "built now"}; {llamacpp.bin_dir(isa=a.isa)}; '
          f'cmake options {" ".join(llamacpp.ISA[a.isa]) or "GGML_NATIVE=ON"})', flush=True)
    a.cache.mkdir(parents=True, exist_ok=True)
    models = prepare(a.cache, a.layers, a.isa)
    res = {'connector': {}, 'llama': {}, 'prep_s': time.perf_counter() - t_start}
    if not a.no_check:
        try: res['check'] = greedy_check(models, a)
        except Exception as e: res['check'] = [f'not checked: {type(e).__name__}: {str(e)[:300]}']
    options, res['llama_notes'] = llama_options(models, a)
    t_runs = time.perf_counter()
    for r in range(a.repeats):
        for name, m in models.items():
            ran = {}  # llama.cpp's runs of this round: a type two modes compare with (Q8_0) runs once
            for dt, t in PRECISIONS if m['layers'] else [('float32', 'F32')]:
                c = connector(m.get(dt, m['folder']), dt, a); res['connector'].setdefault((name, dt), []).append(c)
                if t not in ran: ran[t] = l = llama(m['gguf'][t], a, options[t]); res['llama'].setdefault((name, t), []).append(l)
                l = ran[t]
                print(f'  round {r + 1}/{a.repeats} {name} {dt}: connector {c["prompt_tok_s"]:,.1f} / {c["gen_tok_s"]:.2f} tok/s '
                      f'(load {c["load_s"]:.1f} s, peak {c["peak_rss"] / GB:.2f} GB); llama.cpp {t} {l["prompt_tok_s"]:,.1f} / '
                      f'{l["gen_tok_s"]:.2f} tok/s (peak {l["peak_rss"] / GB:.2f} GB)', flush=True)
            for t in [t for t in QUANTS if t not in dict(PRECISIONS).values()] if m['layers'] else []:
                l = llama(m['gguf'][t], a, options[t]); res['llama'].setdefault((name, t), []).append(l)
                print(f'  round {r + 1}/{a.repeats} {name}: llama.cpp {t} {l["prompt_tok_s"]:,.1f} / {l["gen_tok_s"]:.2f} tok/s', flush=True)
        res['run_s'] = time.perf_counter() - t_runs
        if r + 1 < a.repeats:  # so that a run cut short still leaves figures
            print(f'\n# after round {r + 1} of {a.repeats}', flush=True)
            report(models, res, argparse.Namespace(**{**vars(a), 'repeats': r + 1}), time.perf_counter() - t_start)
            print(flush=True)
    report(models, res, a, time.perf_counter() - t_start)
    if a.json:
        a.json.write_text(json.dumps({k: {' '.join(kk): v for kk, v in res[k].items()} if isinstance(res[k], dict) else res[k]
                                      for k in res}, indent=1, default=str))


if __name__ == '__main__':
    main()
